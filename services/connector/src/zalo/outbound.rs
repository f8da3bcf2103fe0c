//! Outbound: consumes OutboundRequested, paces per account, sends through the OA API and
//! publishes DeliveryUpdated. An `outbound_messages` row is written before the send, so a
//! redelivered request never sends twice; the delivery is acked only after the outcome row
//! and its event are durable. Also owns the OA tokens: refreshed before expiry, the new
//! single-use refresh token stored in the same statement as the new access token.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use giao_bus::{
    ConsumerSpec, Delivery, EventBus, HandlerOutcome,
    envelope::{self, EventPublisher},
};
use giao_proto::{
    common::{ChannelKind, DeliveryStatus},
    events::{self, AccountStatus, envelope::Payload},
};
use giao_storage::Database;
use tokio_util::sync::CancellationToken;

use super::{
    OaCredentials,
    client::{Answer, CallError, OaClient, RateLimit, UploadKind, UserProfile, ZaloOaConfig},
    errors::{Retry, classify, refresh_token_refused},
    http::HttpError,
    media::{self, ObjectError, Objects, Plan},
    profiles::{Cached, Profiles},
    throttle::{Gate, Throttle},
};
use crate::{
    api::publish_status,
    credentials::{SealError, Sealer},
    store::{AccountStore, SealedCredentials},
};

#[derive(Debug, thiserror::Error)]
pub enum OaError {
    #[error("the account has no usable credentials")]
    NoCredentials,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("another replica is refreshing the OA token")]
    RefreshBusy,
    /// Sealed by a replica already on a newer key: retried once this one knows the key.
    #[error("{0}")]
    KeyUnavailable(String),
}

/// One account's send pacing, shared by every replica through the account's row: GCRA, a
/// token bucket kept as one timestamp, the theoretical arrival time (TAT). `rate` sends a
/// minute, bursts of a tenth of that (at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pace {
    /// Microseconds between sends at the steady rate (T).
    interval_us: i64,
    /// How far ahead of now the TAT may run with a send still going at once (B·T).
    burst_us: i64,
}

impl Pace {
    fn per_minute(rate: u32) -> Self {
        let interval_us = 60_000_000 / i64::from(rate.max(1));
        // B·T = (rate / 10) · (60 s / rate) = 6 s whatever the rate; a burst of at least
        // one send makes it at least T.
        Self {
            interval_us,
            burst_us: interval_us.max(6_000_000),
        }
    }

    /// The furthest ahead of now a send may take its slot: the burst plus the longest wait
    /// in place. A slot further out is not taken at all.
    fn horizon(self, max_wait: Duration) -> i64 {
        let max_wait = i64::try_from(max_wait.as_micros()).unwrap_or(i64::MAX);
        self.burst_us.saturating_add(max_wait)
    }

    /// How long a send that took the slot ending at `tat` at `now` waits before it goes.
    fn wait(self, tat: i64, now: i64) -> Duration {
        Duration::from_micros(u64::try_from(tat - self.burst_us - now).unwrap_or(0))
    }
}

#[derive(Debug, Clone)]
pub struct OaRuntime {
    accounts: AccountStore,
    sealer: Sealer,
    client: OaClient,
    config: ZaloOaConfig,
    publisher: EventPublisher,
    ledger: Ledger,
    /// The longest a send waits in place for its pacing slot; longer, it is retried later.
    pacing_wait: Duration,
    /// Sends of `zalo_personal` accounts, when that adapter runs.
    personal: Option<crate::personal::PersonalRuntime>,
    objects: Objects,
    throttle: Arc<Mutex<Throttle>>,
    profiles: Profiles,
}

/// Near the rate limit a send waits in place at most this long; longer, it is retried later.
const MAX_IN_PLACE_WAIT: Duration = Duration::from_secs(5);

/// How long a refresh claim holds. Far longer than any refresh call (connect, TLS and answer
/// each bounded by the request timeout), so the claim never runs out while its holder may
/// still be handed Zalo's answer and another replica presents the spent token. Every path
/// that ends a refresh releases the claim; only a crashed holder's claim waits this out.
const REFRESH_CLAIM_TTL: Duration = Duration::from_secs(300);

/// The longest a replica waits for another's refresh before retrying later.
const MAX_REFRESH_WAIT: Duration = Duration::from_secs(5);

/// What a live send needs after Zalo answered (or its call timed out) to record the
/// outcome: a database write, with room for a busy database and clock skew between replicas.
const SENDING_SETTLE_US: i64 = 15_000_000;

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

impl OaRuntime {
    pub fn new(
        accounts: AccountStore,
        sealer: Sealer,
        config: ZaloOaConfig,
        publisher: EventPublisher,
        objects: Objects,
    ) -> Self {
        let ledger = Ledger::new(accounts.database().clone(), publisher.clone());
        let window = Duration::from_millis(config.rate_limit_pause_ms.max(1));
        Self {
            accounts,
            sealer,
            client: OaClient::new(&config),
            config,
            publisher,
            ledger,
            pacing_wait: MAX_IN_PLACE_WAIT,
            personal: None,
            objects,
            throttle: Arc::new(Mutex::new(Throttle::new(window))),
            profiles: Profiles::default(),
        }
    }

    /// Hands `zalo_personal` requests to that adapter's queue.
    pub fn with_personal(mut self, personal: crate::personal::PersonalRuntime) -> Self {
        self.personal = Some(personal);
        self
    }

    fn gate(&self, app: &str) -> Gate {
        self.throttle
            .lock()
            .map(|throttle| throttle.gate(app, Instant::now()))
            .unwrap_or(Gate::Go)
    }

    /// Learns from an answer's rate-limit headers; true when the app is now paused.
    fn observe(&self, app: &str, rate: Option<RateLimit>) -> bool {
        let Some(rate) = rate else { return false };
        self.throttle
            .lock()
            .map(|mut throttle| throttle.observe(app, rate, Instant::now()))
            .unwrap_or(false)
    }

    fn limited(&self, app: &str) {
        if let Ok(mut throttle) = self.throttle.lock() {
            throttle.limited(app, Instant::now());
        }
    }

    /// The account is rate limited until the pause ends; then, unless something else
    /// changed its status meanwhile, it is connected again even if nothing is waiting to go.
    async fn pause_account(&self, tenant: &str, account: &str, pause: Duration) {
        // Already shown (and a resume already due): every paused retry would spawn another.
        if let Ok(Some(current)) = self.accounts.get(tenant, account).await
            && current.status == AccountStatus::RateLimited as i32
        {
            return;
        }
        let reason = format!(
            "Zalo rate limit reached; sending resumes in about {} s",
            pause.as_secs().max(1)
        );
        self.set_status(tenant, account, AccountStatus::RateLimited, &reason)
            .await;
        let runtime = self.clone();
        let (tenant, account) = (tenant.to_string(), account.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            if runtime.gate_for_account(&tenant, &account).await {
                runtime.resume(&tenant, &account).await;
            }
        });
    }

    /// Whether the account's app may send again.
    async fn gate_for_account(&self, tenant: &str, account: &str) -> bool {
        match self.credentials(tenant, account).await {
            Ok(credentials) => !matches!(self.gate(&credentials.app_id), Gate::Paused(_)),
            Err(_) => false,
        }
    }

    async fn resume(&self, tenant: &str, account: &str) {
        if let Ok(Some(current)) = self.accounts.get(tenant, account).await
            && current.status == AccountStatus::RateLimited as i32
        {
            self.set_status(tenant, account, AccountStatus::Connected, "")
                .await;
        }
    }

    /// The customer's Zalo profile, from the cache or the API within `profile_timeout_ms`;
    /// `None` when it cannot be had now (the event goes out with the id alone).
    pub async fn profile(&self, tenant: &str, account: &str, user_id: &str) -> Option<UserProfile> {
        match self.profiles.get(tenant, account, user_id, Instant::now()) {
            Cached::Found(profile) => return Some(profile),
            Cached::Missed => return None,
            Cached::Unknown => {}
        }
        let budget = Duration::from_millis(self.config.profile_timeout_ms.max(1));
        let fetched = tokio::time::timeout(budget, async {
            // Never refresh here: a refresh cut off by the timeout after Zalo rotated the
            // single-use refresh token would lose the account. An expired token skips.
            let credentials = self.credentials(tenant, account).await.ok()?;
            if credentials.access_token.is_empty()
                || credentials.access_expires_at <= Utc::now().timestamp()
            {
                return None;
            }
            let (token, app) = (credentials.access_token, credentials.app_id);
            if matches!(self.gate(&app), Gate::Paused(_)) {
                return None;
            }
            match self.client.user_detail(&token, user_id).await {
                Ok(Answer { value, rate }) => {
                    self.observe(&app, rate);
                    Some(value)
                }
                Err(CallError::Zalo { code: -32, .. }) => {
                    self.limited(&app);
                    None
                }
                Err(error) => {
                    tracing::info!(account = %account, %error, "customer profile not fetched");
                    None
                }
            }
        })
        .await
        .ok()
        .flatten()
        .filter(|profile| !profile.display_name.is_empty());
        self.profiles
            .put(tenant, account, user_id, fetched.clone(), Instant::now());
        fetched
    }

    pub fn client(&self) -> &OaClient {
        &self.client
    }

    pub fn config(&self) -> &ZaloOaConfig {
        &self.config
    }

    async fn credentials(&self, tenant: &str, account: &str) -> Result<OaCredentials, OaError> {
        let sealed = self
            .accounts
            .credentials(tenant, account)
            .await?
            .ok_or(OaError::NoCredentials)?;
        self.open(tenant, account, &sealed)
    }

    fn open(
        &self,
        tenant: &str,
        account: &str,
        sealed: &SealedCredentials,
    ) -> Result<OaCredentials, OaError> {
        let plain = self
            .sealer
            .open(tenant, account, &sealed.key_id, &sealed.sealed)
            .map_err(|error| match error {
                SealError::UnknownKey(_) => OaError::KeyUnavailable(error.to_string()),
                SealError::Corrupt => OaError::NoCredentials,
            })?;
        serde_json::from_slice(&plain).map_err(|_| OaError::NoCredentials)
    }

    pub async fn store_credentials(
        &self,
        tenant: &str,
        account: &str,
        credentials: &OaCredentials,
    ) -> Result<(), OaError> {
        let plain = serde_json::to_vec(credentials).map_err(|_| OaError::NoCredentials)?;
        let (key_id, sealed) = self.sealer.seal(tenant, account, &plain);
        self.accounts
            .set_credentials(tenant, account, &SealedCredentials { key_id, sealed })
            .await?;
        Ok(())
    }

    /// A valid access token, refreshed first when it expires within `refresh_before_secs`
    /// (or at once with `force`). The rotated refresh token is stored before the new access
    /// token is used: the old one is already spent at Zalo.
    ///
    /// Any replica may need a refresh at the same moment (the session holder's refresher,
    /// another replica's send), and Zalo's refresh token is single use: whoever presented it
    /// second would lose the account. So a refresh first claims the account's row for the
    /// credentials version it read; the others wait for that version to move and use the
    /// token it stored.
    pub async fn access_token(
        &self,
        tenant: &str,
        account: &str,
        force: bool,
    ) -> Result<String, OaError> {
        let deadline = Instant::now() + self.refresh_wait();
        // The version at which this call decided a refresh was needed.
        let mut due_at: Option<i64> = None;
        loop {
            let (sealed, version) = self
                .accounts
                .versioned_credentials(tenant, account)
                .await?
                .ok_or(OaError::NoCredentials)?;
            let credentials = self.open(tenant, account, &sealed)?;
            let now = Utc::now().timestamp();
            let usable =
                !credentials.access_token.is_empty() && credentials.access_expires_at > now;
            match due_at {
                None if !force
                    && usable
                    && credentials.access_expires_at - self.config.refresh_before_secs > now =>
                {
                    return Ok(credentials.access_token);
                }
                None => due_at = Some(version),
                // Written since: another replica refreshed (or the OA was connected again).
                Some(seen) if seen != version && usable => return Ok(credentials.access_token),
                Some(seen) if seen != version => due_at = Some(version),
                Some(_) => {}
            }
            if credentials.refresh_token.is_empty() {
                return Err(OaError::NoCredentials);
            }
            let claim = hex::encode(rand::random::<[u8; 12]>());
            if self
                .accounts
                .claim_refresh(tenant, account, version, &claim, REFRESH_CLAIM_TTL)
                .await?
            {
                match self
                    .refresh_claimed(tenant, account, credentials, version, &claim)
                    .await?
                {
                    Some(token) => return Ok(token),
                    // Something else wrote the credentials meanwhile: read them again.
                    None => continue,
                }
            }
            if self
                .accounts
                .refresh_refused(tenant, account, version)
                .await?
            {
                // The refresh token is spent: only a new connect helps.
                return Err(OaError::NoCredentials);
            }
            if Instant::now() > deadline {
                // Retried later (the message is redelivered), not held here for the whole
                // claim: a crashed holder's claim only runs out after REFRESH_CLAIM_TTL.
                return Err(OaError::RefreshBusy);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How long a replica waits for another's refresh before it gives up for now: about one
    /// refresh call, at most a few seconds, so a send waiting here plus its own call stays
    /// well within the bus's ack wait.
    fn refresh_wait(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms.max(1)).min(MAX_REFRESH_WAIT)
    }

    /// Refreshes under a claim on `version`. `None`: the credentials changed meanwhile.
    async fn refresh_claimed(
        &self,
        tenant: &str,
        account: &str,
        mut credentials: OaCredentials,
        version: i64,
        claim: &str,
    ) -> Result<Option<String>, OaError> {
        let refreshed = self
            .client
            .refresh(
                &credentials.app_id,
                &credentials.app_secret,
                &credentials.refresh_token,
            )
            .await;
        let tokens = match refreshed {
            Ok(tokens) => tokens,
            Err(CallError::Zalo { code, .. }) if refresh_token_refused(code) => {
                // Kept as refused, so the replicas waiting for this refresh do not present
                // the spent token again; a new connect clears it.
                self.accounts.refuse_refresh(tenant, account, claim).await?;
                tracing::warn!(account = %account, code, "OA refresh refused: needs a new connect");
                self.set_status(
                    tenant,
                    account,
                    AccountStatus::NeedsLogin,
                    "the OA must be connected again",
                )
                .await;
                return Err(OaError::NoCredentials);
            }
            Err(error) => {
                // No answer, or one about something else than the token (a rate limit, a
                // system error): the next try finds out whether it still works.
                if let CallError::Zalo { code: -32, .. } = error {
                    self.limited(&credentials.app_id);
                }
                self.accounts
                    .release_refresh(tenant, account, claim)
                    .await?;
                return Err(error.into());
            }
        };
        credentials.access_token = tokens.access_token;
        credentials.refresh_token = tokens.refresh_token;
        credentials.access_expires_at = Utc::now().timestamp() + tokens.expires_in;
        let plain = serde_json::to_vec(&credentials).map_err(|_| OaError::NoCredentials)?;
        let (key_id, sealed) = self.sealer.seal(tenant, account, &plain);
        let stored = self
            .accounts
            .finish_refresh(
                tenant,
                account,
                version,
                &SealedCredentials { key_id, sealed },
            )
            .await?;
        if !stored {
            // A new connect replaced the credentials while Zalo answered; theirs stand.
            tracing::info!(account = %account, "OA credentials replaced during a refresh");
            return Ok(None);
        }
        tracing::info!(account = %account, "OA access token refreshed");
        // Zalo accepted the refresh token: whatever said otherwise (a replica that presented
        // a spent token) is over. A rate limit is not about the token and stays.
        if let Ok(Some(current)) = self.accounts.get(tenant, account).await
            && current.status != AccountStatus::Connected as i32
            && current.status != AccountStatus::RateLimited as i32
        {
            self.set_status(tenant, account, AccountStatus::Connected, "")
                .await;
        }
        Ok(Some(credentials.access_token))
    }

    async fn set_status(&self, tenant: &str, account: &str, status: AccountStatus, reason: &str) {
        match self
            .accounts
            .set_status(tenant, account, status as i32, reason, false)
            .await
        {
            Ok(Some(previous)) => {
                if let Err(error) =
                    publish_status(&self.publisher, tenant, account, previous, status, reason).await
                {
                    tracing::warn!(%error, "account status change not published");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "account status not stored"),
        }
    }

    /// Consumes OutboundRequested until `stop`; a request is delivered at most
    /// `max_deliver` times.
    pub async fn consume(
        mut self,
        bus: Arc<dyn EventBus>,
        ack_wait: Duration,
        max_deliver: u32,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let max_deliver = max_deliver.max(1);
        // A send still waiting for its slot when the ack wait ends would be handed to another
        // replica meanwhile; half leaves the other half for the call itself.
        self.pacing_wait = MAX_IN_PLACE_WAIT.min(ack_wait / 2);
        let spec = ConsumerSpec {
            durable_name: "connector-outbound".into(),
            filter_subjects: vec![envelope::subject_filter("outbound_requested")],
            ack_wait,
            max_deliver: Some(max_deliver),
            inactive_threshold: None,
        };
        giao_bus::run_consumer(bus, spec, stop, move |delivery: &Delivery| {
            let runtime = self.clone();
            let decoded = envelope::decode(delivery);
            let last = delivery.delivered_count >= max_deliver;
            let attempts = delivery.delivered_count;
            async move {
                match decoded {
                    Ok((envelope, _span)) => runtime.handle(envelope, last, attempts).await,
                    Err(error) => HandlerOutcome::Poison(format!("undecodable event: {error}")),
                }
            }
        })
        .await?;
        Ok(())
    }

    async fn handle(
        &self,
        envelope: events::Envelope,
        last: bool,
        attempts: u32,
    ) -> HandlerOutcome {
        let tenant = envelope.tenant_id;
        let Some(Payload::OutboundRequested(request)) = envelope.payload else {
            return HandlerOutcome::Done;
        };
        let outcome = match self.send_once(&tenant, &request).await {
            Ok(outcome) => outcome,
            Err(error) => HandlerOutcome::Retry(error.to_string()),
        };
        match outcome {
            // The bus will not deliver it again: settle it as failed rather than leave the
            // message pending forever.
            HandlerOutcome::Retry(reason) if last => {
                self.give_up(&tenant, &request, attempts, &reason).await
            }
            outcome => outcome,
        }
    }

    /// Ends a request whose last delivery failed transiently as failed, with why.
    async fn give_up(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
        attempts: u32,
        last_error: &str,
    ) -> HandlerOutcome {
        let reason = format!("not sent after {attempts} attempts: {last_error}");
        let settled = async {
            let account = self
                .accounts
                .get(tenant, &request.channel_account_id)
                .await?;
            // Personal accounts settle their own queue entries.
            if account.is_some_and(|a| a.kind == ChannelKind::ZaloPersonal as i32) {
                return Ok::<_, OaError>(false);
            }
            let record = self.record(tenant, request).await?;
            if record.state != "pending" {
                return Ok(false);
            }
            self.finish(
                tenant,
                &request.message_id,
                "failed",
                "",
                "retries",
                &reason,
            )
            .await?;
            self.publish_failed(tenant, request, "retries", &reason)
                .await?;
            Ok(true)
        }
        .await;
        match settled {
            Ok(true) => {
                tracing::warn!(message = %request.message_id, attempts, "outbound message given up");
                HandlerOutcome::Done
            }
            Ok(false) => HandlerOutcome::Retry(last_error.to_string()),
            Err(error) => HandlerOutcome::Retry(format!("{last_error}; not settled: {error}")),
        }
    }

    /// A reply on a `simulator` account: nothing leaves giao, so it is sent at once with a
    /// simulated message id; a reply asking something (a `?`) gets the scripted customer's
    /// answer, so a demo conversation goes on.
    async fn send_simulated(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
    ) -> Result<HandlerOutcome, OaError> {
        let record = self.record(tenant, request).await?;
        let external_id = match record.state.as_str() {
            "sent" => record.external_message_id,
            "failed" => return self.republish_failed(tenant, request, &record).await,
            _ => {
                let external_id = format!("sim-out-{}", request.message_id);
                self.finish(tenant, &request.message_id, "sent", &external_id, "", "")
                    .await?;
                external_id
            }
        };
        self.publish_sent(tenant, request, &external_id).await?;
        let text = request
            .content
            .as_ref()
            .map(|content| content.text.as_str())
            .unwrap_or_default();
        if text.contains('?') && !request.external_thread_id.is_empty() {
            let simulator =
                crate::simulator::Simulator::new(self.accounts.clone(), self.publisher.clone());
            // Derived from the reply, so a redelivery answers once.
            let answer_id = format!("sim-answer-{}", request.message_id);
            if let Err(error) = simulator
                .answer(
                    tenant,
                    &request.channel_account_id,
                    &request.external_thread_id,
                    answer_id,
                )
                .await
            {
                return Ok(HandlerOutcome::Retry(format!(
                    "scripted answer not published: {error}"
                )));
            }
        }
        Ok(HandlerOutcome::Done)
    }

    async fn send_once(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
    ) -> Result<HandlerOutcome, OaError> {
        let account_id = &request.channel_account_id;
        let Some(account) = self.accounts.get(tenant, account_id).await? else {
            return Ok(HandlerOutcome::Poison(format!(
                "unknown account {account_id}"
            )));
        };
        if account.kind == ChannelKind::ZaloPersonal as i32
            && let Some(personal) = &self.personal
        {
            // Queued for the replica that holds the account's session, which paces it.
            return Ok(personal.enqueue(tenant, request, account.disabled).await);
        }
        if account.kind == ChannelKind::Simulator as i32 {
            return self.send_simulated(tenant, request).await;
        }
        if account.kind != ChannelKind::ZaloOa as i32 {
            // Other kinds have their own senders.
            return Ok(HandlerOutcome::Done);
        }
        let record = self.record(tenant, request).await?;
        match record.state.as_str() {
            "sent" => {
                self.publish_sent(tenant, request, &record.external_message_id)
                    .await?;
                return Ok(HandlerOutcome::Done);
            }
            "failed" => return self.republish_failed(tenant, request, &record).await,
            "sending" if now_micros() - record.updated_at < self.sending_grace_us() => {
                // Another delivery claimed it moments ago and may still be waiting for
                // Zalo's answer (this one came because the ack wait ran out meanwhile): it
                // settles the message itself, or, if it died, a later look finds the claim
                // stale.
                return Ok(HandlerOutcome::Retry(
                    "another delivery of the message is sending it".into(),
                ));
            }
            "sending" => {
                // A previous attempt may have reached Zalo: never risk a second copy.
                let reason = "not sent again: an earlier attempt's outcome is unknown";
                self.finish(tenant, &request.message_id, "failed", "", "unknown", reason)
                    .await?;
                self.publish_failed(tenant, request, "unknown", reason)
                    .await?;
                return Ok(HandlerOutcome::Done);
            }
            _ => {}
        }
        if account.disabled {
            let reason = "the channel account is disabled";
            self.finish(
                tenant,
                &request.message_id,
                "failed",
                "",
                "disabled",
                reason,
            )
            .await?;
            self.publish_failed(tenant, request, "disabled", reason)
                .await?;
            return Ok(HandlerOutcome::Done);
        }
        let per_minute = match account.send_rate_per_minute {
            0 => self.config.default_send_rate_per_minute,
            n => n,
        };
        // The slot is taken in the database, so the rate holds for the account whichever
        // replicas pull its messages.
        let pace = Pace::per_minute(per_minute);
        let Some((slot, now)) = self
            .accounts
            .take_send_slot(
                tenant,
                account_id,
                pace.interval_us,
                pace.horizon(self.pacing_wait),
            )
            .await?
        else {
            // Further out than a wait in place may last: nothing was taken, so no capacity
            // is held for a message that is not being sent now.
            return Ok(HandlerOutcome::Retry(
                "pacing under the account's send rate".into(),
            ));
        };
        let wait = pace.wait(slot, now);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let content = request.content.clone().unwrap_or_default();
        let plan = match media::plan(&content) {
            Ok(plan) => plan,
            Err(reason) => return self.refuse(tenant, request, "unsupported", &reason).await,
        };
        // The bytes are read once; each attempt uploads them again (an upload is not a
        // message, so repeating it is harmless, and -100 means the old upload expired).
        let upload = match &plan {
            Plan::Upload {
                kind, attachment, ..
            } => {
                let max = match kind {
                    UploadKind::Image => media::MAX_IMAGE_BYTES,
                    UploadKind::File => media::MAX_FILE_BYTES,
                };
                let data = match self
                    .objects
                    .read(tenant, &attachment.storage_key, max)
                    .await
                {
                    Ok(data) => data,
                    Err(ObjectError::Missing(reason)) => {
                        return self.refuse(tenant, request, "attachment", &reason).await;
                    }
                    Err(error @ ObjectError::Unavailable(_)) => {
                        return Ok(HandlerOutcome::Retry(error.to_string()));
                    }
                };
                let name = match media::check(*kind, attachment, &data) {
                    Ok(name) => name,
                    Err(reason) => {
                        return self.refuse(tenant, request, "attachment", &reason).await;
                    }
                };
                Some((*kind, name, attachment.mime_type.clone(), data))
            }
            _ => None,
        };
        let mut refreshed = false;
        let mut reuploaded = false;
        loop {
            let token = match self.access_token(tenant, account_id, refreshed).await {
                Ok(token) => token,
                Err(OaError::NoCredentials) => {
                    let reason = "the OA is not connected (token invalid): reconnect it";
                    return self.refuse(tenant, request, "token", reason).await;
                }
                Err(error) => return Err(error),
            };
            let app = self.credentials(tenant, account_id).await?.app_id;
            match self.gate(&app) {
                Gate::Go => {}
                Gate::Wait(wait) if wait <= MAX_IN_PLACE_WAIT => tokio::time::sleep(wait).await,
                Gate::Wait(_) => {
                    return Ok(HandlerOutcome::Retry(
                        "pacing under Zalo's rate limit".into(),
                    ));
                }
                Gate::Paused(pause) => {
                    self.mark(tenant, &request.message_id, "pending").await?;
                    self.pause_account(tenant, account_id, pause).await;
                    return Ok(HandlerOutcome::Retry(
                        "paused: Zalo's rate limit was reached".into(),
                    ));
                }
            }
            let uploaded = match &upload {
                None => None,
                Some((kind, name, mime_type, data)) => {
                    match self
                        .client
                        .upload(&token, *kind, name, mime_type, data)
                        .await
                    {
                        Ok(Answer { value, rate }) => {
                            self.observe(&app, rate);
                            Some(value)
                        }
                        Err(error) => {
                            // Nothing was sent: every failure of an upload is safe to retry.
                            match self
                                .after_error(tenant, request, &app, error, &mut refreshed, false)
                                .await?
                            {
                                Next::Again => continue,
                                Next::Outcome(outcome) => return Ok(outcome),
                            }
                        }
                    }
                }
            };
            let message = media::message(&plan, uploaded.as_deref(), &request.quote_external_id);
            if !self
                .ledger
                .claim_sending(tenant, &request.message_id)
                .await?
            {
                // Another delivery of this request is sending it: one that a replica pulled
                // while this one waited for its slot past the ack wait. Never a second copy;
                // the next look finds how that send ended.
                return Ok(HandlerOutcome::Retry(
                    "another delivery of the message is sending it".into(),
                ));
            }
            let result = self
                .client
                .send_cs(&token, &request.external_thread_id, message)
                .await;
            match result {
                Ok(Answer {
                    value: external_id,
                    rate,
                }) => {
                    self.finish(tenant, &request.message_id, "sent", &external_id, "", "")
                        .await?;
                    self.publish_sent(tenant, request, &external_id).await?;
                    if self.observe(&app, rate) {
                        // That was the last request of the window: say so now.
                        self.pause_account(tenant, account_id, self.window()).await;
                        return Ok(HandlerOutcome::Done);
                    }
                    // A send went through: a rate limit or token problem is over.
                    let current = self.accounts.get(tenant, account_id).await?;
                    if current.is_some_and(|a| a.status != AccountStatus::Connected as i32) {
                        self.set_status(tenant, account_id, AccountStatus::Connected, "")
                            .await;
                    }
                    return Ok(HandlerOutcome::Done);
                }
                Err(CallError::Zalo { code: -100, .. }) if !reuploaded => {
                    // The upload expired before the send: upload again at once.
                    self.mark(tenant, &request.message_id, "pending").await?;
                    reuploaded = true;
                    continue;
                }
                Err(error) => {
                    match self
                        .after_error(tenant, request, &app, error, &mut refreshed, true)
                        .await?
                    {
                        Next::Again => continue,
                        Next::Outcome(outcome) => return Ok(outcome),
                    }
                }
            }
        }
    }

    /// How long a `sending` claim may belong to a live send: the call's own timeout plus
    /// time to record its answer. Older, its holder died mid-call.
    fn sending_grace_us(&self) -> i64 {
        let timeout_us =
            i64::try_from(self.config.request_timeout_ms.saturating_mul(1_000)).unwrap_or(i64::MAX);
        timeout_us.saturating_add(SENDING_SETTLE_US)
    }

    fn window(&self) -> Duration {
        self.throttle
            .lock()
            .map(|throttle| throttle.window())
            .unwrap_or(Duration::from_secs(60))
    }

    /// A redelivery of a message that already failed: its outcome is published again.
    async fn republish_failed(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
        record: &OutboundRecord,
    ) -> Result<HandlerOutcome, OaError> {
        self.publish_failed(
            tenant,
            request,
            &record.failure_code,
            &record.failure_reason,
        )
        .await?;
        Ok(HandlerOutcome::Done)
    }

    /// Ends a message as failed with a reason for the sender; it is not retried.
    async fn refuse(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
        code: &str,
        reason: &str,
    ) -> Result<HandlerOutcome, OaError> {
        self.finish(tenant, &request.message_id, "failed", "", code, reason)
            .await?;
        self.publish_failed(tenant, request, code, reason).await?;
        Ok(HandlerOutcome::Done)
    }

    /// What follows a failed upload or send. `sending` is true when the call was the send
    /// itself: then an answer-less failure may have delivered the message.
    async fn after_error(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
        app: &str,
        error: CallError,
        refreshed: &mut bool,
        sending: bool,
    ) -> Result<Next, OaError> {
        let account_id = &request.channel_account_id;
        match error {
            CallError::Zalo { code, .. } => {
                let outcome = classify(code);
                if code == -32 {
                    self.limited(app);
                    self.mark(tenant, &request.message_id, "pending").await?;
                    self.pause_account(tenant, account_id, self.window()).await;
                    return Ok(Next::Outcome(HandlerOutcome::Retry(format!(
                        "Zalo error {code}"
                    ))));
                }
                if let Some(status) = outcome.account_status {
                    self.set_status(tenant, account_id, status, outcome.reason)
                        .await;
                }
                match outcome.retry {
                    Retry::RefreshToken if !*refreshed => {
                        self.mark(tenant, &request.message_id, "pending").await?;
                        *refreshed = true;
                        Ok(Next::Again)
                    }
                    Retry::Backoff | Retry::Reupload => {
                        // Zalo refused it: certainly not sent, safe to try again.
                        self.mark(tenant, &request.message_id, "pending").await?;
                        Ok(Next::Outcome(HandlerOutcome::Retry(format!(
                            "Zalo error {code}"
                        ))))
                    }
                    _ => {
                        let code = code.to_string();
                        Ok(Next::Outcome(
                            self.refuse(tenant, request, &code, outcome.reason).await?,
                        ))
                    }
                }
            }
            CallError::Http(HttpError::Connect(error)) => {
                self.mark(tenant, &request.message_id, "pending").await?;
                Ok(Next::Outcome(HandlerOutcome::Retry(format!(
                    "cannot reach Zalo: {error}"
                ))))
            }
            CallError::Unexpected { status } if status >= 500 => {
                // A 5xx answer: Zalo did not take the message.
                self.mark(tenant, &request.message_id, "pending").await?;
                Ok(Next::Outcome(HandlerOutcome::Retry(format!(
                    "Zalo answered HTTP {status}"
                ))))
            }
            error if !sending => {
                // An upload without a clear answer reached no customer: try again later.
                self.mark(tenant, &request.message_id, "pending").await?;
                Ok(Next::Outcome(HandlerOutcome::Retry(format!(
                    "upload failed: {error}"
                ))))
            }
            error => {
                // No clear answer: it may have been sent. Tell the sender, do not resend.
                let reason = format!("outcome unknown, not resent: {error}");
                Ok(Next::Outcome(
                    self.refuse(tenant, request, "unknown", &reason).await?,
                ))
            }
        }
    }

    async fn publish_sent(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
        external_id: &str,
    ) -> Result<(), OaError> {
        self.publish_delivery(tenant, request, DeliveryStatus::Sent, external_id, "", "")
            .await
    }

    async fn publish_failed(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
        code: &str,
        reason: &str,
    ) -> Result<(), OaError> {
        self.publish_delivery(tenant, request, DeliveryStatus::Failed, "", code, reason)
            .await
    }

    async fn publish_delivery(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
        status: DeliveryStatus,
        external_id: &str,
        code: &str,
        reason: &str,
    ) -> Result<(), OaError> {
        self.ledger
            .publish_delivery(tenant, request, status, external_id, code, reason)
            .await
            .map_err(|error| OaError::Call(CallError::Http(HttpError::Request(error.to_string()))))
    }

    async fn record(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
    ) -> Result<OutboundRecord, sqlx::Error> {
        self.ledger.record(tenant, request, None).await
    }

    async fn mark(&self, tenant: &str, message_id: &str, state: &str) -> Result<(), sqlx::Error> {
        self.ledger.mark(tenant, message_id, state).await
    }

    async fn finish(
        &self,
        tenant: &str,
        message_id: &str,
        state: &str,
        external_id: &str,
        code: &str,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        self.ledger
            .finish(tenant, message_id, state, external_id, code, reason)
            .await
    }
}

/// The `outbound_messages` rows and the DeliveryUpdated events every outbound path shares:
/// a row is written before a send and marked `sending` just before the call, so a
/// redelivered request is never sent twice, whichever channel kind sends it.
#[derive(Debug, Clone)]
pub struct Ledger {
    database: Database,
    publisher: EventPublisher,
}

impl Ledger {
    pub fn new(database: Database, publisher: EventPublisher) -> Self {
        Self {
            database,
            publisher,
        }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Publishes the delivery outcome with an id derived from the message and status, so a
    /// republished outcome dedupes.
    pub async fn publish_delivery(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
        status: DeliveryStatus,
        external_id: &str,
        code: &str,
        reason: &str,
    ) -> Result<(), giao_bus::BusError> {
        let now = Utc::now();
        self.publisher
            .publish(
                tenant,
                format!("delivery-{}-{}", request.message_id, status.as_str_name()),
                Payload::DeliveryUpdated(events::DeliveryUpdated {
                    message_id: request.message_id.clone(),
                    channel_account_id: request.channel_account_id.clone(),
                    external_message_id: external_id.to_string(),
                    status: status as i32,
                    failure_reason: reason.to_string(),
                    failure_code: code.to_string(),
                    retryable: false,
                    at: Some(prost_types::Timestamp {
                        seconds: now.timestamp(),
                        nanos: now.timestamp_subsec_nanos() as i32,
                    }),
                }),
            )
            .await?;
        Ok(())
    }

    /// The message's outbound row, created `pending` on first sight; `queued` (the encoded
    /// request) makes it a queue entry that the account's session holder sends.
    pub async fn record(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
        queued: Option<&[u8]>,
    ) -> Result<OutboundRecord, sqlx::Error> {
        let insert = "INSERT INTO outbound_messages (tenant_id, message_id, channel_account_id, \
                      state, updated_at, request, created_at) \
                      VALUES ($1, $2, $3, 'pending', $4, $5, $4) ON CONFLICT DO NOTHING";
        let select = "SELECT state, external_message_id, failure_code, failure_reason, updated_at \
                      FROM outbound_messages WHERE tenant_id = $1 AND message_id = $2";
        let row: (String, String, String, String, i64) = match &self.database {
            Database::Postgres(pool) => {
                sqlx::query(insert)
                    .bind(tenant)
                    .bind(&request.message_id)
                    .bind(&request.channel_account_id)
                    .bind(now_micros())
                    .bind(queued)
                    .execute(pool)
                    .await?;
                sqlx::query_as(select)
                    .bind(tenant)
                    .bind(&request.message_id)
                    .fetch_one(pool)
                    .await?
            }
            Database::Sqlite(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(insert.replace('$', "?")))
                    .bind(tenant)
                    .bind(&request.message_id)
                    .bind(&request.channel_account_id)
                    .bind(now_micros())
                    .bind(queued)
                    .execute(pool)
                    .await?;
                sqlx::query_as(sqlx::AssertSqlSafe(select.replace('$', "?")))
                    .bind(tenant)
                    .bind(&request.message_id)
                    .fetch_one(pool)
                    .await?
            }
        };
        let (state, external_message_id, failure_code, failure_reason, updated_at) = row;
        Ok(OutboundRecord {
            state,
            external_message_id,
            failure_code,
            failure_reason,
            updated_at,
        })
    }

    /// Moves a pending message to `sending` just before its call; false when it is not
    /// pending any more (another delivery of it got there first), so only one call is made.
    pub async fn claim_sending(&self, tenant: &str, message_id: &str) -> Result<bool, sqlx::Error> {
        let outcome = Outcome {
            state: "sending",
            external_id: "",
            code: "",
            reason: "",
        };
        let moved = self
            .update(tenant, message_id, &outcome, Some("pending"))
            .await?;
        Ok(moved == 1)
    }

    pub async fn mark(
        &self,
        tenant: &str,
        message_id: &str,
        state: &str,
    ) -> Result<(), sqlx::Error> {
        self.finish(tenant, message_id, state, "", "", "").await
    }

    pub async fn finish(
        &self,
        tenant: &str,
        message_id: &str,
        state: &str,
        external_id: &str,
        code: &str,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        let outcome = Outcome {
            state,
            external_id,
            code,
            reason,
        };
        self.update(tenant, message_id, &outcome, None).await?;
        Ok(())
    }

    /// Writes the row's state (only while it is in state `from`, when given): rows changed.
    async fn update(
        &self,
        tenant: &str,
        message_id: &str,
        outcome: &Outcome<'_>,
        from: Option<&str>,
    ) -> Result<u64, sqlx::Error> {
        let sql = "UPDATE outbound_messages SET state = $3, external_message_id = $4, \
                   failure_code = $5, failure_reason = $6, updated_at = $7 \
                   WHERE tenant_id = $1 AND message_id = $2 AND ($8 = '' OR state = $8)";
        let from = from.unwrap_or_default();
        let changed = crate::store::on_pool!(&self.database, sql, |q| q
            .bind(tenant)
            .bind(message_id)
            .bind(outcome.state)
            .bind(outcome.external_id)
            .bind(outcome.code)
            .bind(outcome.reason)
            .bind(now_micros())
            .bind(from))?;
        Ok(changed)
    }
}

/// What an outbound row is set to.
struct Outcome<'a> {
    state: &'a str,
    external_id: &'a str,
    code: &'a str,
    reason: &'a str,
}

/// After a failed call: go round the loop again, or settle the delivery.
enum Next {
    Again,
    Outcome(HandlerOutcome),
}

/// An outbound row as stored.
#[derive(Debug)]
pub struct OutboundRecord {
    pub state: String,
    pub external_message_id: String,
    pub failure_code: String,
    pub failure_reason: String,
    /// When the state was last written (microseconds since the epoch, the writer's clock).
    pub updated_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `AccountStore::take_send_slot` does in SQL: the slot a send at `now` takes
    /// after `tat` if it is within the horizon, and its wait.
    fn take(pace: Pace, tat: &mut i64, now: i64, max_wait: Duration) -> Option<Duration> {
        let slot = (*tat).max(now) + pace.interval_us;
        if slot - now > pace.horizon(max_wait) {
            return None;
        }
        *tat = slot;
        Some(pace.wait(slot, now))
    }

    const SECOND: i64 = 1_000_000;

    /// Sends at `now` until one has to wait: how many went at once, and that one's wait.
    fn burst(pace: Pace, tat: &mut i64, now: i64) -> (usize, Option<Duration>) {
        let mut immediate = 0;
        loop {
            match take(pace, tat, now, MAX_IN_PLACE_WAIT) {
                Some(Duration::ZERO) => immediate += 1,
                wait => return (immediate, wait),
            }
        }
    }

    #[test]
    fn pace_allows_a_burst_then_paces() {
        // 60/min: a burst of 6, then one a second.
        let pace = Pace::per_minute(60);
        assert_eq!(pace.interval_us, SECOND);
        let (mut tat, now) = (0, 1_000 * SECOND);
        assert_eq!(
            burst(pace, &mut tat, now),
            (6, Some(Duration::from_secs(1)))
        );
        assert_eq!(
            take(pace, &mut tat, now, MAX_IN_PLACE_WAIT),
            Some(Duration::from_secs(2))
        );
        // Half a second later the next slot is half a second nearer.
        assert_eq!(
            take(pace, &mut tat, now + SECOND / 2, MAX_IN_PLACE_WAIT),
            Some(Duration::from_millis(2_500))
        );
        // After a quiet minute the whole burst is back, and no more than it.
        assert_eq!(
            burst(pace, &mut tat, now + 60 * SECOND),
            (6, Some(Duration::from_secs(1)))
        );
    }

    #[test]
    fn pace_takes_no_slot_beyond_the_wait_in_place() {
        // 30/min: a burst of 3, a slot every 2 s; waits of up to 3 s are taken.
        let pace = Pace::per_minute(30);
        let max_wait = Duration::from_secs(3);
        let (mut tat, now) = (0, 1_000 * SECOND);
        for _ in 0..3 {
            assert_eq!(take(pace, &mut tat, now, max_wait), Some(Duration::ZERO));
        }
        assert_eq!(
            take(pace, &mut tat, now, max_wait),
            Some(Duration::from_secs(2))
        );
        let taken = tat;
        // The next would wait 4 s: refused, and refusing again and again holds nothing.
        for _ in 0..10 {
            assert_eq!(take(pace, &mut tat, now, max_wait), None);
        }
        assert_eq!(tat, taken);
        // Once time has moved on it gets the very next slot.
        assert_eq!(
            take(pace, &mut tat, now + SECOND, max_wait),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn pace_bursts_are_a_tenth_of_the_rate_and_at_least_one() {
        for (rate, burst) in [(600, 60), (60, 6), (30, 3), (10, 1), (5, 1), (1, 1)] {
            let pace = Pace::per_minute(rate);
            let (mut tat, now) = (0, 1_000 * SECOND);
            let mut immediate = 0;
            while take(pace, &mut tat, now, Duration::ZERO) == Some(Duration::ZERO) {
                immediate += 1;
            }
            assert_eq!(immediate, burst, "{rate}/min");
        }
        // A rate of 0 (unset) never divides by zero: one a minute.
        assert_eq!(Pace::per_minute(0), Pace::per_minute(1));
    }
}
