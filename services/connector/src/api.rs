//! The connector's gRPC surface: channel accounts (credentials are write-only) and the
//! simulator channel.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use giao_authz::{Permission, principal};
use giao_bus::envelope::EventPublisher;
use giao_proto::{
    common::{ChannelKind, ChannelUser, PageResponse},
    connector::{
        AccountStatusRequest, AccountStatusResponse, BeginOaConnectRequest, BeginOaConnectResponse,
        ChannelAccount, CompleteOaConnectRequest, CreateAccountRequest, DisableAccountRequest,
        GetAccountRequest, ListAccountsRequest, ListAccountsResponse, ListSessionsRequest,
        ListSessionsResponse, QrLoginEvent, SendMessageRequest, SendMessageResponse, Session,
        SimulateInboundRequest, SimulateInboundResponse, StartQrLoginRequest, StartQrLoginResponse,
        UpdateAccountRequest, WatchQrLoginRequest, connector_service_server::ConnectorService,
    },
    events::{self, AccountStatus, envelope::Payload},
};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, codegen::BoxStream};

use crate::{
    credentials::Sealer,
    error::Error,
    personal::{PersonalRuntime, qr::QrTarget},
    simulator::Simulator,
    store::OauthState,
    store::{Account, AccountStore, LeaseStore, NewAccount, SealedCredentials},
    zalo::{OaCredentials, outbound::OaRuntime},
};

const MAX_TEXT_CHARS: usize = 8_000;
const MAX_NAME_CHARS: usize = 200;
const MAX_CREDENTIALS_BYTES: usize = 64 * 1024;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

#[derive(Debug, Clone)]
pub struct Api {
    accounts: AccountStore,
    simulator: Simulator,
    sealer: Sealer,
    publisher: EventPublisher,
    leases: LeaseStore,
    oa: OaRuntime,
    personal: PersonalRuntime,
}

fn micros_to_timestamp(micros: i64) -> Option<prost_types::Timestamp> {
    (micros > 0).then(|| prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    })
}

/// What callers see of an account: never its credentials.
fn to_proto(account: Account) -> ChannelAccount {
    ChannelAccount {
        channel_account_id: account.id,
        kind: account.kind,
        display_name: account.display_name,
        external_id: account.external_id,
        status: account.status,
        status_reason: account.status_reason,
        status_since: micros_to_timestamp(account.status_since),
        disabled: account.disabled,
        created_at: micros_to_timestamp(account.created_at),
        send_rate_per_minute: account.send_rate_per_minute,
        team_id: account.team_id,
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "missing display_name: required".into(),
        ));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(Error::InvalidArgument(format!(
            "invalid display_name: {chars} characters, at most {MAX_NAME_CHARS}"
        )));
    }
    Ok(())
}

/// Checks `credentials_json` for `kind`; returns the OA id when the kind carries one.
fn check_credentials(kind: ChannelKind, json: &str) -> Result<String, Error> {
    if json.len() > MAX_CREDENTIALS_BYTES {
        return Err(Error::InvalidArgument(format!(
            "invalid credentials_json: over {MAX_CREDENTIALS_BYTES} bytes"
        )));
    }
    match kind {
        ChannelKind::ZaloOa => OaCredentials::parse(json)
            .map(|credentials| credentials.oa_id)
            .map_err(Error::InvalidArgument),
        ChannelKind::ZaloPersonal if !json.is_empty() => crate::personal::parse_credentials(json)
            .map(|_| String::new())
            .map_err(Error::InvalidArgument),
        _ if json.is_empty() => Ok(String::new()),
        _ => serde_json::from_str::<serde_json::Value>(json)
            .map(|_| String::new())
            .map_err(|error| Error::InvalidArgument(crate::zalo::json_error(&error))),
    }
}

impl Api {
    pub fn new(
        accounts: AccountStore,
        simulator: Simulator,
        sealer: Sealer,
        publisher: EventPublisher,
        leases: LeaseStore,
        oa: OaRuntime,
        personal: PersonalRuntime,
    ) -> Self {
        Self {
            accounts,
            simulator,
            sealer,
            publisher,
            leases,
            oa,
            personal,
        }
    }

    async fn load(&self, tenant_id: &str, id: &str) -> Result<Account, Error> {
        if id.is_empty() {
            return Err(Error::InvalidArgument(
                "missing channel_account_id: required".into(),
            ));
        }
        self.accounts
            .get(tenant_id, id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "channel account",
                id: id.to_string(),
            })
    }

    /// Moves an account to `status` and publishes AccountStatusChanged when it changed.
    pub async fn change_status(
        &self,
        tenant_id: &str,
        id: &str,
        status: AccountStatus,
        reason: &str,
    ) -> Result<(), Error> {
        let disable = status == AccountStatus::Disabled;
        if let Some(previous) = self
            .accounts
            .set_status(tenant_id, id, status as i32, reason, disable)
            .await?
        {
            publish_status(&self.publisher, tenant_id, id, previous, status, reason).await?;
        }
        Ok(())
    }
}

/// Publishes a status change with an id derived from the transition, so a retry dedupes.
pub async fn publish_status(
    publisher: &EventPublisher,
    tenant_id: &str,
    id: &str,
    previous: i32,
    status: AccountStatus,
    reason: &str,
) -> Result<(), Error> {
    let now = Utc::now();
    publisher
        .publish(
            tenant_id,
            format!(
                "account-status-{id}-{}-{}",
                status as i32,
                now.timestamp_micros()
            ),
            Payload::AccountStatusChanged(events::AccountStatusChanged {
                channel_account_id: id.to_string(),
                status: status as i32,
                previous_status: previous,
                reason: reason.to_string(),
                at: Some(prost_types::Timestamp {
                    seconds: now.timestamp(),
                    nanos: now.timestamp_subsec_nanos() as i32,
                }),
            }),
        )
        .await?;
    Ok(())
}

/// Records a change of an account's credentials in the tenant's audit chain (never the
/// credentials themselves). The event id is derived from the change, so a retry dedupes.
pub(crate) async fn audit_credentials(
    publisher: &EventPublisher,
    tenant_id: &str,
    actor: &str,
    account_id: &str,
    action: &str,
) -> Result<(), Error> {
    let now = Utc::now();
    publisher
        .publish(
            tenant_id,
            format!("{action}-{account_id}-{}", now.timestamp_micros()),
            Payload::AuditRequested(events::AuditRequested {
                actor: actor.to_string(),
                action: action.to_string(),
                target: account_id.to_string(),
                details_json: "{}".into(),
                at: Some(prost_types::Timestamp {
                    seconds: now.timestamp(),
                    nanos: now.timestamp_subsec_nanos() as i32,
                }),
            }),
        )
        .await?;
    Ok(())
}

#[tonic::async_trait]
impl ConnectorService for Api {
    #[tracing::instrument(skip_all)]
    async fn create_account(
        &self,
        request: Request<CreateAccountRequest>,
    ) -> Result<Response<ChannelAccount>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_MANAGE)?;
        let request = request.into_inner();
        let kind = match ChannelKind::try_from(request.kind) {
            Ok(
                kind @ (ChannelKind::ZaloOa | ChannelKind::ZaloPersonal | ChannelKind::Simulator),
            ) => kind,
            _ => {
                return Err(Error::InvalidArgument(
                    "invalid kind: one of zalo_oa, zalo_personal, simulator".into(),
                )
                .into());
            }
        };
        check_name(&request.display_name)?;
        if kind == ChannelKind::ZaloOa && request.credentials_json.is_empty() {
            return Err(Error::InvalidArgument(
                "missing credentials_json: a zalo_oa account needs app_id, app_secret and oa_secret_key"
                    .into(),
            )
            .into());
        }
        let external_id = check_credentials(kind, &request.credentials_json)?;
        let has_token = kind == ChannelKind::ZaloOa
            && OaCredentials::parse(&request.credentials_json)
                .map(|credentials| !credentials.refresh_token.is_empty())
                .unwrap_or(false);
        let (status, reason) = match kind {
            ChannelKind::Simulator => (AccountStatus::Connected, ""),
            _ if has_token => (AccountStatus::Connected, ""),
            // Saved cookies: the session holder's listener logs in and reports the outcome.
            ChannelKind::ZaloPersonal if !request.credentials_json.is_empty() => {
                (AccountStatus::Disconnected, "connecting")
            }
            ChannelKind::ZaloOa => (AccountStatus::NeedsLogin, "connect the OA (OAuth)"),
            _ => (AccountStatus::NeedsLogin, "log in by QR code"),
        };
        let id = format!("acc-{}", uuid::Uuid::now_v7());
        let has_credentials = !request.credentials_json.is_empty();
        let credentials = (!request.credentials_json.is_empty()).then(|| {
            let (key_id, sealed) =
                self.sealer
                    .seal(&caller.tenant_id, &id, request.credentials_json.as_bytes());
            SealedCredentials { key_id, sealed }
        });
        let (account, created) = self
            .accounts
            .create(&NewAccount {
                account: Account {
                    id,
                    tenant_id: caller.tenant_id.clone(),
                    kind: kind as i32,
                    display_name: request.display_name.trim().to_string(),
                    status: status as i32,
                    external_id,
                    team_id: request.team_id,
                    status_reason: reason.to_string(),
                    ..Default::default()
                },
                credentials,
                idempotency_key: Some(request.idempotency_key).filter(|key| !key.is_empty()),
            })
            .await
            .map_err(Error::from)?;
        if created {
            publish_status(
                &self.publisher,
                &caller.tenant_id,
                &account.id,
                AccountStatus::Unspecified as i32,
                status,
                reason,
            )
            .await?;
            tracing::info!(account = %account.id, kind = ?kind, "channel account created");
            if has_credentials {
                audit_credentials(
                    &self.publisher,
                    &caller.tenant_id,
                    &caller.user_id,
                    &account.id,
                    "account.credentials_set",
                )
                .await?;
            }
        }
        Ok(Response::new(to_proto(account)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_account(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<Response<ChannelAccount>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_READ)?;
        let account = self
            .load(&caller.tenant_id, &request.get_ref().channel_account_id)
            .await?;
        Ok(Response::new(to_proto(account)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_READ)?;
        let request = request.into_inner();
        let page = request.page.unwrap_or_default();
        let size = match page.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // The cursor is the last id of the previous page: ids sort in creation order.
        let accounts = self
            .accounts
            .list_page(
                &caller.tenant_id,
                request.kind,
                request.status,
                &page.cursor,
                size + 1,
            )
            .await
            .map_err(Error::from)?;
        let more = accounts.len() > size as usize;
        let accounts: Vec<ChannelAccount> = accounts
            .into_iter()
            .take(size as usize)
            .map(to_proto)
            .collect();
        let next_cursor = if more {
            accounts
                .last()
                .map(|account| account.channel_account_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListAccountsResponse {
            accounts,
            page: Some(PageResponse { next_cursor }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_account(
        &self,
        request: Request<UpdateAccountRequest>,
    ) -> Result<Response<ChannelAccount>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_MANAGE)?;
        let request = request.into_inner();
        let mut account = self
            .load(&caller.tenant_id, &request.channel_account_id)
            .await?;
        if request.update_mask.is_empty() {
            return Err(Error::InvalidArgument(
                "missing update_mask: name the fields to change".into(),
            )
            .into());
        }
        let mut credentials = None;
        for field in &request.update_mask {
            match field.as_str() {
                "display_name" => {
                    check_name(&request.display_name)?;
                    account.display_name = request.display_name.trim().to_string();
                }
                "team_id" => account.team_id = request.team_id.clone(),
                "send_rate_per_minute" => {
                    if request.send_rate_per_minute > 10_000 {
                        return Err(Error::InvalidArgument(
                            "invalid send_rate_per_minute: at most 10000".into(),
                        )
                        .into());
                    }
                    account.send_rate_per_minute = request.send_rate_per_minute;
                }
                "credentials_json" => {
                    let kind = ChannelKind::try_from(account.kind).unwrap_or_default();
                    let external_id = check_credentials(kind, &request.credentials_json)?;
                    if !external_id.is_empty() {
                        account.external_id = external_id;
                    }
                    let (key_id, sealed) = self.sealer.seal(
                        &caller.tenant_id,
                        &account.id,
                        request.credentials_json.as_bytes(),
                    );
                    credentials = Some(SealedCredentials { key_id, sealed });
                }
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "invalid update_mask: unknown field {other}"
                    ))
                    .into());
                }
            }
        }
        self.accounts.update(&account).await.map_err(Error::from)?;
        if let Some(credentials) = credentials {
            self.accounts
                .set_credentials(&caller.tenant_id, &account.id, &credentials)
                .await
                .map_err(Error::from)?;
            tracing::info!(account = %account.id, "channel account credentials replaced");
            if account.kind == ChannelKind::ZaloPersonal as i32 && !account.disabled {
                // New cookies: the listener (re)starts with them, whatever stopped it.
                self.personal.stop_account(&caller.tenant_id, &account.id);
                self.personal.retry_soon(&caller.tenant_id, &account.id);
                self.change_status(
                    &caller.tenant_id,
                    &account.id,
                    AccountStatus::Disconnected,
                    "connecting with the new credentials",
                )
                .await?;
            }
            audit_credentials(
                &self.publisher,
                &caller.tenant_id,
                &caller.user_id,
                &account.id,
                "account.credentials_replaced",
            )
            .await?;
        }
        let account = self.load(&caller.tenant_id, &account.id).await?;
        Ok(Response::new(to_proto(account)))
    }

    #[tracing::instrument(skip_all)]
    async fn disable_account(
        &self,
        request: Request<DisableAccountRequest>,
    ) -> Result<Response<ChannelAccount>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_MANAGE)?;
        let request = request.into_inner();
        self.load(&caller.tenant_id, &request.channel_account_id)
            .await?;
        let reason = if request.reason.trim().is_empty() {
            "disabled by an admin"
        } else {
            request.reason.trim()
        };
        self.change_status(
            &caller.tenant_id,
            &request.channel_account_id,
            AccountStatus::Disabled,
            reason,
        )
        .await?;
        // Here at once; in another replica when its lease runtime sees the account disabled.
        self.personal
            .stop_account(&caller.tenant_id, &request.channel_account_id);
        let account = self
            .load(&caller.tenant_id, &request.channel_account_id)
            .await?;
        Ok(Response::new(to_proto(account)))
    }

    #[tracing::instrument(skip_all)]
    async fn account_status(
        &self,
        request: Request<AccountStatusRequest>,
    ) -> Result<Response<AccountStatusResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_READ)?;
        let account = self
            .load(&caller.tenant_id, &request.get_ref().channel_account_id)
            .await?;
        let now = Utc::now().timestamp_micros();
        let session_owner = self
            .leases
            .for_tenant(&caller.tenant_id, now)
            .await
            .map_err(Error::from)?
            .into_iter()
            .find(|lease| lease.account_id == account.id)
            .map(|lease| lease.owner)
            .unwrap_or_default();
        Ok(Response::new(AccountStatusResponse {
            status: account.status,
            reason: account.status_reason,
            since: micros_to_timestamp(account.status_since),
            session_owner,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn begin_oa_connect(
        &self,
        request: Request<BeginOaConnectRequest>,
    ) -> Result<Response<BeginOaConnectResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_MANAGE)?;
        let request = request.into_inner();
        check_name(&request.display_name)?;
        if !(request.redirect_uri.starts_with("https://")
            || request.redirect_uri.starts_with("http://"))
        {
            return Err(Error::InvalidArgument(
                "invalid redirect_uri: an http(s) URL registered with the Zalo app".into(),
            )
            .into());
        }
        let app = self.oa.config();
        if app.app_id.is_empty() || app.app_secret.is_empty() {
            return Err(Error::Unavailable(
                "the Zalo app is not configured (zalo_oa.app_id, zalo_oa.app_secret)".into(),
            )
            .into());
        }
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>());
        // Zalo's codes live 10 minutes; the pending connect lives as long.
        let expires_at = Utc::now().timestamp_micros() + 600 * 1_000_000;
        self.accounts
            .save_oauth_state(
                &caller.tenant_id,
                &state,
                &OauthState {
                    code_verifier: verifier,
                    display_name: request.display_name.trim().to_string(),
                    team_id: request.team_id,
                    redirect_uri: request.redirect_uri.clone(),
                    expires_at,
                },
            )
            .await
            .map_err(Error::from)?;
        let authorize_url =
            self.oa
                .client()
                .authorize_url(&app.app_id, &request.redirect_uri, &state, &challenge);
        Ok(Response::new(BeginOaConnectResponse {
            authorize_url,
            state,
            expires_at: micros_to_timestamp(expires_at),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn complete_oa_connect(
        &self,
        request: Request<CompleteOaConnectRequest>,
    ) -> Result<Response<ChannelAccount>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_MANAGE)?;
        let request = request.into_inner();
        for (field, value) in [("code", &request.code), ("state", &request.state)] {
            if value.is_empty() {
                return Err(Error::InvalidArgument(format!("missing {field}: required")).into());
            }
        }
        let pending = self
            .accounts
            .take_oauth_state(&caller.tenant_id, &request.state)
            .await
            .map_err(Error::from)?
            .filter(|pending| pending.expires_at > Utc::now().timestamp_micros())
            .ok_or_else(|| {
                Error::InvalidArgument(
                    "invalid state: unknown, used or expired; begin the connect again".into(),
                )
            })?;
        let app = self.oa.config();
        let tokens = self
            .oa
            .client()
            .exchange_code(
                &app.app_id,
                &app.app_secret,
                &request.code,
                &pending.code_verifier,
            )
            .await
            .map_err(|error| match error {
                crate::zalo::client::CallError::Zalo { code, .. } => {
                    Error::InvalidArgument(format!(
                        "invalid code: Zalo refused it (error {code}); begin the connect again"
                    ))
                }
                other => Error::Unavailable(format!("cannot reach Zalo: {other}")),
            })?;
        let credentials = OaCredentials {
            app_id: app.app_id.clone(),
            app_secret: app.app_secret.clone(),
            oa_secret_key: app.oa_secret_key.clone(),
            oa_id: request.oa_id.clone(),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            access_expires_at: Utc::now().timestamp() + tokens.expires_in,
        };
        let plain = serde_json::to_vec(&credentials)
            .map_err(|error| Error::InvalidArgument(error.to_string()))?;
        // The same OA connected again (after needs_login, a revoked permission…) keeps its
        // account: a second one would split its customers' conversations in two.
        if !request.oa_id.is_empty()
            && let Some(existing) = self
                .accounts
                .find_oa(&caller.tenant_id, &request.oa_id)
                .await
                .map_err(Error::from)?
        {
            let (key_id, sealed) = self.sealer.seal(&caller.tenant_id, &existing.id, &plain);
            self.accounts
                .set_credentials(
                    &caller.tenant_id,
                    &existing.id,
                    &SealedCredentials { key_id, sealed },
                )
                .await
                .map_err(Error::from)?;
            // A disabled account stays disabled: enabling it is a separate decision.
            self.change_status(
                &caller.tenant_id,
                &existing.id,
                AccountStatus::Connected,
                "",
            )
            .await?;
            tracing::info!(account = %existing.id, "OA connected again");
            audit_credentials(
                &self.publisher,
                &caller.tenant_id,
                &caller.user_id,
                &existing.id,
                "account.oa_reconnected",
            )
            .await?;
            let account = self.load(&caller.tenant_id, &existing.id).await?;
            return Ok(Response::new(to_proto(account)));
        }
        let id = format!("acc-{}", uuid::Uuid::now_v7());
        let (key_id, sealed) = self.sealer.seal(&caller.tenant_id, &id, &plain);
        let (account, _) = self
            .accounts
            .create(&NewAccount {
                account: Account {
                    id,
                    tenant_id: caller.tenant_id.clone(),
                    kind: ChannelKind::ZaloOa as i32,
                    display_name: pending.display_name,
                    status: AccountStatus::Connected as i32,
                    external_id: request.oa_id,
                    team_id: pending.team_id,
                    ..Default::default()
                },
                credentials: Some(SealedCredentials { key_id, sealed }),
                // The state is single use, so it also makes the connect idempotent.
                idempotency_key: Some(format!("oauth-{}", request.state)),
            })
            .await
            .map_err(Error::from)?;
        publish_status(
            &self.publisher,
            &caller.tenant_id,
            &account.id,
            AccountStatus::Unspecified as i32,
            AccountStatus::Connected,
            "",
        )
        .await?;
        tracing::info!(account = %account.id, "OA connected");
        audit_credentials(
            &self.publisher,
            &caller.tenant_id,
            &caller.user_id,
            &account.id,
            "account.oa_connected",
        )
        .await?;
        Ok(Response::new(to_proto(account)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_READ)?;
        let now = Utc::now().timestamp_micros();
        let sessions = self
            .leases
            .for_tenant(&caller.tenant_id, now)
            .await
            .map_err(Error::from)?
            .into_iter()
            .map(|lease| Session {
                channel_account_id: lease.account_id,
                owner_replica: lease.owner,
                fencing_token: lease.token.max(0) as u64,
                lease_expires_at: micros_to_timestamp(lease.expires_at),
            })
            .collect();
        Ok(Response::new(ListSessionsResponse {
            sessions,
            page: Some(PageResponse::default()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn start_qr_login(
        &self,
        request: Request<StartQrLoginRequest>,
    ) -> Result<Response<StartQrLoginResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_MANAGE)?;
        let request = request.into_inner();
        let target = if request.channel_account_id.is_empty() {
            check_name(&request.display_name)?;
            QrTarget::New {
                display_name: request.display_name.trim().to_string(),
                team_id: request.team_id,
            }
        } else {
            let account = self
                .load(&caller.tenant_id, &request.channel_account_id)
                .await?;
            if account.kind != ChannelKind::ZaloPersonal as i32 {
                return Err(Error::InvalidArgument(
                    "invalid channel_account_id: not a zalo_personal account".into(),
                )
                .into());
            }
            if account.disabled {
                return Err(Error::FailedPrecondition(
                    "the account is disabled: a QR login would not be used".into(),
                )
                .into());
            }
            QrTarget::Account(account)
        };
        let started = self
            .personal
            .start_qr(&caller.tenant_id, &caller.user_id, target)
            .await?;
        Ok(Response::new(StartQrLoginResponse {
            login_id: started.login_id,
            qr_png: started.png,
            expires_at: micros_to_timestamp(started.expires_at),
            qr_png_base64: started.png_base64,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn watch_qr_login(
        &self,
        request: Request<WatchQrLoginRequest>,
    ) -> Result<Response<BoxStream<QrLoginEvent>>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_MANAGE)?;
        let login_id = request.into_inner().login_id;
        if login_id.is_empty() {
            return Err(Error::InvalidArgument("missing login_id: required".into()).into());
        }
        let login = self
            .personal
            .qr_login(&caller.tenant_id, &login_id)
            .ok_or_else(|| Error::NotFound {
                what: "QR login (logins live in the replica that started them, for a few minutes)",
                id: login_id.clone(),
            })?;
        let mut changed = login.subscribe();
        let stream = async_stream_of(move |sender| async move {
            let mut seen = 0usize;
            loop {
                for state in login.since(seen) {
                    seen += 1;
                    let last = crate::personal::qr::is_final(state.state);
                    if sender.send(Ok(state)).await.is_err() || last {
                        return;
                    }
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    /// Refused on purpose: every outbound message is recorded by message-store
    /// (RecordOutbound) before the connector sends it, so history, delivery status and
    /// reports can never miss a message. A direct "send now" would bypass that record.
    #[tracing::instrument(skip_all)]
    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_WRITE)?;
        Err(Error::FailedPrecondition(
            "messages are sent through message-store's RecordOutbound, which records them \
             first; the connector sends what it records"
                .into(),
        )
        .into())
    }

    #[tracing::instrument(skip_all)]
    async fn simulate_inbound(
        &self,
        request: Request<SimulateInboundRequest>,
    ) -> Result<Response<SimulateInboundResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::SIMULATOR_DRIVE)?;
        let request = request.into_inner();
        if request.channel_account_id.is_empty() {
            return Err(
                Error::InvalidArgument("missing channel_account_id: required".into()).into(),
            );
        }
        let customer: ChannelUser = request
            .customer
            .filter(|customer| !customer.external_user_id.is_empty())
            .ok_or_else(|| {
                Error::InvalidArgument("missing customer.external_user_id: required".into())
            })?;
        let content = request
            .content
            .ok_or_else(|| Error::InvalidArgument("missing content: required".into()))?;
        let chars = content.text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(Error::InvalidArgument(format!(
                "invalid content.text: {chars} characters, at most {MAX_TEXT_CHARS}"
            ))
            .into());
        }
        let external_id = Some(request.external_message_id).filter(|id| !id.is_empty());
        let simulated = self
            .simulator
            .inbound(
                &caller.tenant_id,
                &request.channel_account_id,
                customer,
                content,
                external_id,
            )
            .await?;
        Ok(Response::new(SimulateInboundResponse {
            external_message_id: simulated.external_message_id,
            event_id: simulated.event_id,
        }))
    }
}

/// A stream fed by `produce` through a small channel; it ends when `produce` returns.
fn async_stream_of<T, F, Fut>(produce: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    tokio::spawn(produce(sender));
    Box::pin(tokio_stream_from(receiver))
}

fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<Result<T, Status>>,
) -> impl futures::Stream<Item = Result<T, Status>> + Send + 'static {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}
