//! Background routing: every new conversation (ConversationOpened) goes to an agent by its
//! channel account's policy or waits in the queue, which is handed out oldest first as
//! capacity frees. The roster is mirrored from auth (periodically, on SyncRoster, and
//! UserDeactivated at once). Shift changes are detected by the drain and applied by the
//! account's policy; a channel account lost with open conversations alerts its supervisors.
//! ConversationClosed frees the owner's capacity.
//!
//! Decisions for one tenant are serialised (a PostgreSQL advisory lock, so replicas never
//! both give the last free slot away; one process on SQLite): the choice is first reserved in
//! `conversation_load`, then written to message-store with the tenant's service key. A
//! reservation not yet written (a replica died, message-store was down) is applied by the
//! next drain on any replica, so a routed conversation is never lost between the two.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use giao_bus::{
    ConsumerSpec, Delivery, EventBus, HandlerOutcome,
    envelope::{self, EventPublisher},
};
use giao_platform::grpc::TraceInterceptor;
use giao_proto::{
    auth::{ListUsersRequest, UserStatus, auth_service_client::AuthServiceClient},
    common::{PageRequest, Role},
    events::{
        AccountStatus, AccountStatusChanged, ConversationAssigned, ConversationOpened,
        envelope::Payload,
    },
    messagestore::{
        GetContactRequest, GetConversationRequest, SetConversationOwnerRequest,
        message_store_service_client::MessageStoreServiceClient,
    },
};
use giao_storage::Database;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    error::Error,
    routing::{self, Agent, Arrival, Policy, ShiftChange, Why},
    store::{
        self, OwnershipChange,
        routing::{Load, Queued, RosterUser},
        shifts::ShiftRow,
    },
};

/// Who is on shift for `account` at `now` in the policy's zone; `None` when no shift names
/// the account (then shifts do not restrict it).
pub fn on_shift(
    shifts: &[ShiftRow],
    account: &str,
    time_zone: &str,
    now: DateTime<Utc>,
) -> Option<BTreeSet<String>> {
    let zone = chrono_tz::Tz::from_str(time_zone).unwrap_or(chrono_tz::Asia::Ho_Chi_Minh);
    let local = now.with_timezone(&zone).naive_local();
    let mut named = false;
    let mut on = BTreeSet::new();
    for shift in shifts {
        if !shift.accounts().iter().any(|a| a == account) {
            continue;
        }
        named = true;
        let Some(window) = shift.window() else {
            continue;
        };
        if window.covers(local) {
            on.insert(shift.user_id.clone());
        }
    }
    named.then_some(on)
}

/// The agents as eligible for `account` now: off shift means unavailable there.
fn for_account(
    agents: &[Agent],
    shifts: &[ShiftRow],
    policy: &Policy,
    account: &str,
    now: DateTime<Utc>,
) -> Vec<Agent> {
    let on = on_shift(shifts, account, &policy.time_zone, now);
    agents
        .iter()
        .map(|agent| Agent {
            available: agent.available && on.as_ref().is_none_or(|on| on.contains(&agent.user_id)),
            ..agent.clone()
        })
        .collect()
}

/// Durable consumers shared by every assignment replica.
const ROUTING_CONSUMER: &str = "assignment-routing";
const ROSTER_CONSUMER: &str = "assignment-roster";
const ACCOUNTS_CONSUMER: &str = "assignment-accounts";
const CLOSED_CONSUMER: &str = "assignment-closed";
/// Queued conversations considered per tenant and drain.
const DRAIN_BATCH: i64 = 200;

/// What the router needs from the service's configuration.
#[derive(Clone, Default)]
pub struct RouterSettings {
    /// Per-tenant service keys, then the one key of a single-tenant deployment.
    pub tenant_api_keys: BTreeMap<String, String>,
    pub api_key: Option<String>,
    pub drain_interval: Duration,
    pub roster_sync_interval: Duration,
    pub ack_wait: Duration,
    /// Deliveries of ConversationOpened handled at once.
    pub parallelism: u32,
}

/// Cheap to clone; shared by the API (which wakes it) and the background tasks.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    database: Database,
    publisher: EventPublisher,
    message_store: Option<Channel>,
    auth: Option<Channel>,
    settings: RouterSettings,
    /// SQLite is one process: a local lock serialises a tenant's decisions.
    local_lock: Mutex<()>,
    wake: Notify,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

fn bearer(key: &str) -> Option<MetadataValue<Ascii>> {
    format!("Bearer {key}").parse().ok()
}

fn with_credential<T>(credential: &MetadataValue<Ascii>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", credential.clone());
    request
}

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Admin) => "admin",
        Ok(Role::Supervisor) => "supervisor",
        Ok(Role::Agent) => "agent",
        Ok(Role::Auditor) => "auditor",
        Ok(Role::Service) => "service",
        _ => "unknown",
    }
}

impl Router {
    pub fn new(
        database: Database,
        publisher: EventPublisher,
        message_store: Option<Channel>,
        auth: Option<Channel>,
        settings: RouterSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                database,
                publisher,
                message_store,
                auth,
                settings,
                local_lock: Mutex::new(()),
                wake: Notify::new(),
            }),
        }
    }

    /// Asks for a drain now: capacity may have freed (availability, capacity, a move).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The service credential for background work in `tenant_id`.
    pub fn credential(&self, tenant_id: &str) -> Option<MetadataValue<Ascii>> {
        let settings = &self.inner.settings;
        settings
            .tenant_api_keys
            .get(tenant_id)
            .or(settings.api_key.as_ref())
            .and_then(|key| bearer(key))
    }

    fn store_client(
        &self,
    ) -> Result<
        MessageStoreServiceClient<
            tonic::service::interceptor::InterceptedService<Channel, TraceInterceptor>,
        >,
        Error,
    > {
        let channel = self
            .inner
            .message_store
            .clone()
            .ok_or(Error::NotConfigured(
                "message_store.endpoint is not configured",
            ))?;
        Ok(MessageStoreServiceClient::with_interceptor(
            channel,
            TraceInterceptor::default(),
        ))
    }

    /// Runs `work` holding the tenant's routing lock.
    pub(crate) async fn locked<T>(
        &self,
        tenant_id: &str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match &self.inner.database {
            Database::Postgres(pool) => {
                // A transaction-scoped advisory lock: released by commit, by rollback, and by
                // the server when a crashed replica's connection drops.
                let mut lock = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7103))")
                    .bind(format!("routing:{tenant_id}"))
                    .execute(&mut *lock)
                    .await?;
                let outcome = work.await;
                lock.commit().await?;
                outcome
            }
            Database::Sqlite(_) => {
                let _guard = self.inner.local_lock.lock().await;
                work.await
            }
        }
    }

    /// Routes one new conversation. Idempotent: a conversation already seen is only
    /// finished (its reservation applied), never routed twice.
    pub async fn conversation_opened(
        &self,
        tenant_id: &str,
        opened: &ConversationOpened,
    ) -> Result<(), Status> {
        let database = &self.inner.database;
        if let Some(load) =
            store::routing::load(database, tenant_id, &opened.conversation_id).await?
        {
            if !load.applied {
                self.apply(&load).await?;
            }
            return Ok(());
        }
        let Some(credential) = self.credential(tenant_id) else {
            tracing::debug!(
                tenant_id,
                "no service key for this tenant: new conversations are not routed"
            );
            return Ok(());
        };
        let mut client = self.store_client()?;
        let conversation = client
            .get_conversation(with_credential(
                &credential,
                GetConversationRequest {
                    conversation_id: opened.conversation_id.clone(),
                },
            ))
            .await?
            .into_inner();
        let mut load = Load {
            tenant_id: tenant_id.to_string(),
            conversation_id: conversation.conversation_id.clone(),
            contact_id: conversation.contact_id.clone(),
            channel_account_id: conversation.channel_account_id.clone(),
            owner_user_id: None,
            team_id: conversation.team_id.clone(),
            applied: true,
            reason: String::new(),
            previous_owner_user_id: None,
        };
        if !conversation.owner_user_id.is_empty() {
            // Someone assigned it before routing got to it.
            load.owner_user_id = Some(conversation.owner_user_id.clone());
            store::routing::put_load(database, &load).await?;
            return Ok(());
        }
        let (lead_source, tags) = if conversation.contact_id.is_empty() {
            (String::new(), Vec::new())
        } else {
            let contact = client
                .get_contact(with_credential(
                    &credential,
                    GetContactRequest {
                        contact_id: conversation.contact_id.clone(),
                    },
                ))
                .await?
                .into_inner();
            (contact.lead_source, contact.tags)
        };
        let queued = Queued {
            conversation_id: load.conversation_id.clone(),
            channel_account_id: load.channel_account_id.clone(),
            contact_id: load.contact_id.clone(),
            lead_source,
            tags,
            enqueued_at_us: opened
                .opened_at
                .as_ref()
                .map(|at| at.seconds * 1_000_000 + i64::from(at.nanos / 1_000))
                .unwrap_or_else(|| Utc::now().timestamp_micros()),
        };
        let reserved = self
            .locked(tenant_id, async {
                let Some(mut policy) =
                    store::routing::policy_for(database, tenant_id, &load.channel_account_id)
                        .await?
                else {
                    // Not routed: tracked for capacity and sticky owners only.
                    store::routing::put_load(database, &load).await?;
                    return Ok(None);
                };
                let agents = store::routing::agents(database, tenant_id).await?;
                let shifts = store::shifts::of_tenant(database, tenant_id).await?;
                let agents = for_account(
                    &agents,
                    &shifts,
                    &policy,
                    &queued.channel_account_id,
                    Utc::now(),
                );
                let reserved = self
                    .reserve(tenant_id, &mut policy, &agents, &queued)
                    .await?;
                if reserved.is_none() {
                    store::routing::put_load(database, &load).await?;
                    store::routing::enqueue(database, tenant_id, &queued).await?;
                }
                Ok(reserved)
            })
            .await?;
        if let Some(load) = reserved {
            self.apply(&load).await?;
        }
        Ok(())
    }

    /// Under the tenant's lock: chooses an agent and records the reservation (and the
    /// round-robin position); `None` when nobody can take it now.
    async fn reserve(
        &self,
        tenant_id: &str,
        policy: &mut Policy,
        agents: &[routing::Agent],
        queued: &Queued,
    ) -> Result<Option<Load>, Error> {
        let database = &self.inner.database;
        let previous = store::routing::previous_owner(
            database,
            tenant_id,
            &queued.contact_id,
            &queued.conversation_id,
        )
        .await?;
        let arrival = Arrival {
            lead_source: &queued.lead_source,
            tags: &queued.tags,
            previous_owner: previous.as_deref(),
        };
        let Some(decision) = routing::choose(policy, agents, &arrival) else {
            return Ok(None);
        };
        let load = Load {
            tenant_id: tenant_id.to_string(),
            conversation_id: queued.conversation_id.clone(),
            contact_id: queued.contact_id.clone(),
            channel_account_id: queued.channel_account_id.clone(),
            owner_user_id: Some(decision.user_id.clone()),
            team_id: decision.team_id.clone(),
            applied: false,
            reason: decision.why.reason(policy.strategy),
            previous_owner_user_id: None,
        };
        store::routing::put_load(database, &load).await?;
        store::routing::dequeue(database, tenant_id, &queued.conversation_id).await?;
        if decision.why == Why::Pool {
            store::routing::set_last_user(
                database,
                tenant_id,
                &policy.channel_account_id,
                &decision.user_id,
            )
            .await?;
            policy.last_user_id = decision.user_id;
        }
        Ok(Some(load))
    }

    /// Writes a reservation to message-store, records the history and announces it.
    async fn apply(&self, load: &Load) -> Result<(), Status> {
        let Some(owner) = load.owner_user_id.clone() else {
            return Ok(());
        };
        let credential = self
            .credential(&load.tenant_id)
            .ok_or(Error::NotConfigured(
                "no service key for this tenant (routing.tenant_api_keys or message_store.api_key)",
            ))?;
        self.store_client()?
            .set_conversation_owner(with_credential(
                &credential,
                SetConversationOwnerRequest {
                    conversation_ids: vec![load.conversation_id.clone()],
                    owner_user_id: owner.clone(),
                    team_id: load.team_id.clone(),
                    reason: load.reason.clone(),
                    with_contacts: false,
                },
            ))
            .await?;
        let change = OwnershipChange {
            id: Uuid::now_v7(),
            conversation_id: load.conversation_id.clone(),
            owner_user_id: Some(owner.clone()),
            previous_owner: load.previous_owner_user_id.clone(),
            actor: "routing".into(),
            reason: load.reason.clone(),
            at: Utc::now(),
        };
        // Deduplicated on (conversation, from, to, reason): applying twice records once.
        store::record_changes_once(&self.inner.database, &load.tenant_id, &[change]).await?;
        let payload = Payload::ConversationAssigned(ConversationAssigned {
            conversation_id: load.conversation_id.clone(),
            owner_user_id: owner.clone(),
            previous_owner_user_id: load.previous_owner_user_id.clone().unwrap_or_default(),
            team_id: load.team_id.clone(),
            reason: load.reason.clone(),
            actor: "routing".into(),
        });
        let event_id = format!(
            "routed-{}-{owner}-{}",
            load.conversation_id,
            load.previous_owner_user_id.as_deref().unwrap_or("")
        );
        if let Err(error) = self
            .inner
            .publisher
            .publish(&load.tenant_id, event_id, payload)
            .await
        {
            tracing::warn!(conversation_id = %load.conversation_id, %error, "cannot publish conversation assigned");
        }
        store::routing::mark_applied(
            &self.inner.database,
            &load.tenant_id,
            &load.conversation_id,
            &owner,
        )
        .await?;
        Ok(())
    }

    /// Applies pending reservations, then hands queued conversations out, oldest first, to
    /// whoever has room now.
    pub async fn drain(&self) -> Result<usize, Error> {
        let database = &self.inner.database;
        for load in store::routing::unapplied(database, DRAIN_BATCH).await? {
            if let Err(status) = self.apply(&load).await {
                tracing::warn!(conversation_id = %load.conversation_id, %status, "cannot apply a routing decision yet");
            }
        }
        for tenant_id in store::shifts::tenants(database).await? {
            let moved = self.shift_changes(&tenant_id).await?;
            for load in moved {
                if let Err(status) = self.apply(&load).await {
                    tracing::warn!(conversation_id = %load.conversation_id, %status, "cannot apply a shift change yet");
                }
            }
        }
        let mut handed_out = 0;
        for tenant_id in store::routing::queued_tenants(database).await? {
            let reserved = self
                .locked(&tenant_id, async {
                    let mut agents = store::routing::agents(database, &tenant_id).await?;
                    let shifts = store::shifts::of_tenant(database, &tenant_id).await?;
                    let now = Utc::now();
                    // Accounts share the tenant's default policy: one copy per policy keeps
                    // the round robin turning within a drain.
                    let mut policy_of_account: HashMap<String, Option<String>> = HashMap::new();
                    let mut policies: HashMap<String, Policy> = HashMap::new();
                    let mut reserved = Vec::new();
                    for queued in
                        store::routing::oldest_queued(database, &tenant_id, DRAIN_BATCH).await?
                    {
                        if !policy_of_account.contains_key(&queued.channel_account_id) {
                            let policy = store::routing::policy_for(
                                database,
                                &tenant_id,
                                &queued.channel_account_id,
                            )
                            .await?;
                            let key = policy.as_ref().map(|p| p.channel_account_id.clone());
                            if let Some(policy) = policy {
                                policies
                                    .entry(policy.channel_account_id.clone())
                                    .or_insert(policy);
                            }
                            policy_of_account.insert(queued.channel_account_id.clone(), key);
                        }
                        let Some(Some(key)) = policy_of_account.get(&queued.channel_account_id)
                        else {
                            continue;
                        };
                        let Some(policy) = policies.get_mut(key) else {
                            continue;
                        };
                        let eligible =
                            for_account(&agents, &shifts, policy, &queued.channel_account_id, now);
                        if let Some(load) =
                            self.reserve(&tenant_id, policy, &eligible, &queued).await?
                        {
                            if let Some(agent) = agents
                                .iter_mut()
                                .find(|agent| Some(&agent.user_id) == load.owner_user_id.as_ref())
                            {
                                agent.open += 1;
                            }
                            reserved.push(load);
                        }
                    }
                    Ok(reserved)
                })
                .await?;
            handed_out += reserved.len();
            for load in reserved {
                if let Err(status) = self.apply(&load).await {
                    tracing::warn!(conversation_id = %load.conversation_id, %status, "cannot apply a routing decision yet");
                }
            }
        }
        Ok(handed_out)
    }

    /// Under the tenant's lock: for each account whose on-shift set changed since last
    /// looked at, and whose policy moves work to the incoming shift, reserves each open
    /// conversation of an owner now off shift for someone on shift with room (by the
    /// policy's strategy). Nobody with room: it stays with its owner.
    async fn shift_changes(&self, tenant_id: &str) -> Result<Vec<Load>, Error> {
        let database = &self.inner.database;
        self.locked(tenant_id, async {
            let shifts = store::shifts::of_tenant(database, tenant_id).await?;
            let accounts: BTreeSet<String> =
                shifts.iter().flat_map(|shift| shift.accounts()).collect();
            let now = Utc::now();
            let mut moved = Vec::new();
            for account in accounts {
                let policy = store::routing::policy_for(database, tenant_id, &account).await?;
                let zone = policy
                    .as_ref()
                    .map(|policy| policy.time_zone.clone())
                    .unwrap_or_default();
                let on = on_shift(&shifts, &account, &zone, now).unwrap_or_default();
                let mut joined = String::from(",");
                for user in &on {
                    joined.push_str(user);
                    joined.push(',');
                }
                let before =
                    store::shifts::swap_on_shift(database, tenant_id, &account, &joined).await?;
                let Some(mut policy) = policy else {
                    continue;
                };
                if before.is_none()
                    || before.as_deref() == Some(joined.as_str())
                    || policy.on_shift_change != ShiftChange::MoveToIncoming
                {
                    continue;
                }
                // The customer's previous owner and the rules do not apply: the point is to
                // leave the outgoing shift.
                policy.sticky_owner = false;
                policy.rules.clear();
                let mut agents: Vec<Agent> = store::routing::agents(database, tenant_id)
                    .await?
                    .into_iter()
                    .map(|agent| Agent {
                        available: agent.available && on.contains(&agent.user_id),
                        ..agent
                    })
                    .collect();
                for load in store::routing::open_on_account(database, tenant_id, &account).await? {
                    let Some(owner) = load.owner_user_id.clone() else {
                        continue;
                    };
                    if on.contains(&owner) {
                        continue;
                    }
                    let Some(decision) = routing::choose(&policy, &agents, &Arrival::default())
                    else {
                        break;
                    };
                    let reserved = Load {
                        owner_user_id: Some(decision.user_id.clone()),
                        team_id: if decision.team_id.is_empty() {
                            load.team_id.clone()
                        } else {
                            decision.team_id.clone()
                        },
                        applied: false,
                        reason: "routing: shift change".into(),
                        previous_owner_user_id: Some(owner),
                        ..load
                    };
                    store::routing::put_load(database, &reserved).await?;
                    store::routing::set_last_user(
                        database,
                        tenant_id,
                        &policy.channel_account_id,
                        &decision.user_id,
                    )
                    .await?;
                    policy.last_user_id = decision.user_id.clone();
                    if let Some(agent) = agents.iter_mut().find(|a| a.user_id == decision.user_id) {
                        agent.open += 1;
                    }
                    moved.push(reserved);
                }
            }
            Ok(moved)
        })
        .await
    }

    /// The owner has not answered a waiting customer in time: the conversation goes to
    /// another eligible agent by the account's policy (without sticky owner or rules, and
    /// never back to the same owner). Returns whether it moved; nobody eligible: it stays.
    pub async fn reassign_unanswered(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<bool, Status> {
        let database = &self.inner.database;
        let reserved = self
            .locked(tenant_id, async {
                let Some(load) = store::routing::load(database, tenant_id, conversation_id).await?
                else {
                    return Ok(None);
                };
                let Some(current) = load.owner_user_id.clone().filter(|_| load.applied) else {
                    return Ok(None);
                };
                let Some(mut policy) =
                    store::routing::policy_for(database, tenant_id, &load.channel_account_id)
                        .await?
                else {
                    return Ok(None);
                };
                policy.sticky_owner = false;
                policy.rules.clear();
                let agents = store::routing::agents(database, tenant_id).await?;
                let shifts = store::shifts::of_tenant(database, tenant_id).await?;
                let mut eligible = for_account(
                    &agents,
                    &shifts,
                    &policy,
                    &load.channel_account_id,
                    Utc::now(),
                );
                for agent in &mut eligible {
                    if agent.user_id == current {
                        agent.available = false;
                    }
                }
                let Some(decision) = routing::choose(&policy, &eligible, &Arrival::default())
                else {
                    return Ok(None);
                };
                let reserved = Load {
                    owner_user_id: Some(decision.user_id.clone()),
                    team_id: if decision.team_id.is_empty() {
                        load.team_id.clone()
                    } else {
                        decision.team_id.clone()
                    },
                    applied: false,
                    reason: "routing: no reply in time".into(),
                    previous_owner_user_id: Some(current),
                    ..load
                };
                store::routing::put_load(database, &reserved).await?;
                store::routing::set_last_user(
                    database,
                    tenant_id,
                    &policy.channel_account_id,
                    &decision.user_id,
                )
                .await?;
                Ok(Some(reserved))
            })
            .await?;
        match reserved {
            Some(load) => {
                self.apply(&load).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// A channel account that stops working while it has open conversations raises an
    /// alert to the supervisors of those conversations' teams (the admins when there are
    /// none): a reminder due at once, so it arrives as ReminderDue and stays in their
    /// reminders. Ids derive from the event: a redelivery alerts nobody twice.
    pub async fn account_status_changed(
        &self,
        tenant_id: &str,
        event_id: &str,
        changed: &AccountStatusChanged,
    ) -> Result<usize, Error> {
        let status = AccountStatus::try_from(changed.status).unwrap_or(AccountStatus::Unspecified);
        // (words, whether a person must act): a kicked or logged-out account captures nothing
        // until someone logs it in again, so it alerts even with no open conversation; the
        // transient states alert only when customers are waiting.
        let (word, needs_person) = match status {
            AccountStatus::Disconnected => ("mất kết nối", false),
            AccountStatus::RateLimited => ("bị Zalo giới hạn gửi tin", false),
            AccountStatus::NeedsLogin => ("cần đăng nhập lại", true),
            AccountStatus::Kicked => ("bị đăng xuất", true),
            AccountStatus::Disabled => ("bị vô hiệu hoá", false),
            _ => return Ok(0),
        };
        let database = &self.inner.database;
        let open =
            store::routing::open_count_on_account(database, tenant_id, &changed.channel_account_id)
                .await?;
        if open == 0 && !needs_person {
            return Ok(0);
        }
        let recipients = store::routing::supervisors_of_account(
            database,
            tenant_id,
            &changed.channel_account_id,
        )
        .await?;
        let text = if open == 0 {
            format!(
                "Tài khoản {} {word}: đăng nhập lại để tiếp tục lưu tin nhắn",
                changed.channel_account_id
            )
        } else {
            format!(
                "Tài khoản {} {word} khi còn {open} hội thoại đang mở",
                changed.channel_account_id
            )
        };
        let now = Utc::now().timestamp_micros();
        for user_id in &recipients {
            store::reminders::create(
                database,
                tenant_id,
                &store::reminders::NewReminder {
                    reminder_id: format!("alert-{event_id}-{user_id}"),
                    user_id: user_id.clone(),
                    conversation_id: String::new(),
                    contact_id: String::new(),
                    text: text.clone(),
                    due_at_us: now,
                    source: "alert:account_status".into(),
                    quiet_secs: 0,
                    created_by: "alert".into(),
                    idempotency_key: String::new(),
                },
            )
            .await?;
        }
        Ok(recipients.len())
    }

    /// Mirrors the tenant's users from auth; users auth no longer lists become inactive.
    pub async fn sync_roster(
        &self,
        tenant_id: &str,
        credential: &MetadataValue<Ascii>,
    ) -> Result<(u32, u32), Status> {
        let channel = self.inner.auth.clone().ok_or(Error::NotConfigured(
            "auth_service.endpoint is not configured",
        ))?;
        let mut auth = AuthServiceClient::with_interceptor(channel, TraceInterceptor::default());
        let started = Utc::now().timestamp_micros();
        let (mut users, mut active) = (0u32, 0u32);
        let mut cursor = String::new();
        loop {
            let page = auth
                .list_users(with_credential(
                    credential,
                    ListUsersRequest {
                        page: Some(PageRequest {
                            page_size: 500,
                            cursor: cursor.clone(),
                        }),
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner();
            let roster: Vec<RosterUser> = page
                .users
                .into_iter()
                .filter(|user| user.tenant_id.is_empty() || user.tenant_id == tenant_id)
                .map(|user| RosterUser {
                    active: user.status == UserStatus::Active as i32,
                    role: role_name(user.role).to_string(),
                    user_id: user.user_id,
                    team_ids: user.team_ids,
                    display_name: user.display_name,
                })
                .collect();
            users += u32::try_from(roster.len()).unwrap_or(u32::MAX);
            active +=
                u32::try_from(roster.iter().filter(|user| user.active).count()).unwrap_or(u32::MAX);
            store::routing::upsert_roster(&self.inner.database, tenant_id, &roster, started)
                .await?;
            cursor = page.page.unwrap_or_default().next_cursor;
            if cursor.is_empty() {
                break;
            }
        }
        store::routing::deactivate_unsynced(&self.inner.database, tenant_id, started).await?;
        self.wake();
        Ok((users, active))
    }

    /// Drains on every wake and at least every `drain_interval`, until `shutdown`.
    pub async fn run_drain(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            if let Err(error) = self.drain().await {
                tracing::warn!(%error, "routing drain failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.settings.drain_interval) => {}
            }
        }
    }

    /// Re-mirrors the roster of every routed tenant that has a service key.
    pub async fn run_roster_sync(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            match store::routing::routed_tenants(&self.inner.database).await {
                Ok(tenants) => {
                    for tenant_id in tenants {
                        let Some(credential) = self.credential(&tenant_id) else {
                            continue;
                        };
                        if let Err(status) = self.sync_roster(&tenant_id, &credential).await {
                            tracing::warn!(%tenant_id, %status, "cannot mirror the roster");
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot list routed tenants"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.inner.settings.roster_sync_interval) => {}
            }
        }
    }

    /// Consumes ConversationOpened and UserDeactivated until `shutdown`.
    pub async fn consume(
        self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let spec = |name: &str, event_type: &str| ConsumerSpec {
            durable_name: name.into(),
            filter_subjects: vec![envelope::subject_filter(event_type)],
            ack_wait: self.inner.settings.ack_wait,
            max_deliver: None,
            inactive_threshold: None,
        };
        // Several pullers on the shared durable consumer: each waits on message-store for
        // most of a decision, so they overlap; the tenant lock keeps decisions exact.
        let mut routing = Vec::new();
        for _ in 0..self.inner.settings.parallelism.max(1) {
            let router = self.clone();
            routing.push(giao_bus::run_consumer(
                bus.clone(),
                spec(ROUTING_CONSUMER, "conversation_opened"),
                shutdown.clone(),
                move |delivery: &Delivery| {
                    let router = router.clone();
                    let decoded = envelope::decode(delivery);
                    async move {
                        let (envelope, span) = match decoded {
                            Ok(decoded) => decoded,
                            Err(error) => {
                                return HandlerOutcome::Poison(format!(
                                    "undecodable event: {error}"
                                ));
                            }
                        };
                        let Some(Payload::ConversationOpened(opened)) = envelope.payload else {
                            return HandlerOutcome::Poison(
                                "not a conversation_opened event".into(),
                            );
                        };
                        match router
                            .conversation_opened(&envelope.tenant_id, &opened)
                            .instrument(span)
                            .await
                        {
                            Ok(()) => HandlerOutcome::Done,
                            // The key cannot see it (another tenant's key, or a deleted
                            // conversation): retrying will not help.
                            Err(status)
                                if matches!(
                                    status.code(),
                                    Code::NotFound | Code::PermissionDenied | Code::InvalidArgument
                                ) =>
                            {
                                HandlerOutcome::Poison(format!(
                                    "cannot route: {}",
                                    status.message()
                                ))
                            }
                            Err(status) => HandlerOutcome::Retry(status.message().to_string()),
                        }
                    }
                },
            ));
        }
        let opened = futures::future::join_all(routing);
        let router = self.clone();
        let deactivated = giao_bus::run_consumer(
            bus.clone(),
            spec(ROSTER_CONSUMER, "user_deactivated"),
            shutdown.clone(),
            move |delivery: &Delivery| {
                let router = router.clone();
                let decoded = envelope::decode(delivery);
                async move {
                    let Ok((envelope, _span)) = decoded else {
                        return HandlerOutcome::Poison("undecodable event".into());
                    };
                    let Some(Payload::UserDeactivated(user)) = envelope.payload else {
                        return HandlerOutcome::Poison("not a user_deactivated event".into());
                    };
                    // A role change also ends sessions; the next sync mirrors the new role.
                    if user.reason == "role_changed" {
                        return HandlerOutcome::Done;
                    }
                    match store::routing::deactivate_user(
                        &router.inner.database,
                        &envelope.tenant_id,
                        &user.user_id,
                    )
                    .await
                    {
                        Ok(()) => HandlerOutcome::Done,
                        Err(error) => HandlerOutcome::Retry(error.to_string()),
                    }
                }
            },
        );
        let router = self.clone();
        let closed = giao_bus::run_consumer(
            bus.clone(),
            spec(CLOSED_CONSUMER, "conversation_closed"),
            shutdown.clone(),
            move |delivery: &Delivery| {
                let router = router.clone();
                let decoded = envelope::decode(delivery);
                async move {
                    let Ok((envelope, _span)) = decoded else {
                        return HandlerOutcome::Poison("undecodable event".into());
                    };
                    let Some(Payload::ConversationClosed(closed)) = envelope.payload else {
                        return HandlerOutcome::Poison("not a conversation_closed event".into());
                    };
                    let at = envelope
                        .occurred_at
                        .and_then(|at| {
                            DateTime::from_timestamp(
                                at.seconds,
                                u32::try_from(at.nanos).unwrap_or(0),
                            )
                        })
                        .unwrap_or_else(Utc::now);
                    match store::routing::closed(
                        &router.inner.database,
                        &envelope.tenant_id,
                        &closed.conversation_id,
                        at.timestamp_micros(),
                    )
                    .await
                    {
                        // Its owner may have room for a queued conversation now.
                        Ok(true) => {
                            router.wake();
                            HandlerOutcome::Done
                        }
                        Ok(false) => HandlerOutcome::Done,
                        Err(error) => HandlerOutcome::Retry(error.to_string()),
                    }
                }
            },
        );
        let router = self.clone();
        let accounts = giao_bus::run_consumer(
            bus,
            spec(ACCOUNTS_CONSUMER, "account_status_changed"),
            shutdown,
            move |delivery: &Delivery| {
                let router = router.clone();
                let decoded = envelope::decode(delivery);
                async move {
                    let Ok((envelope, _span)) = decoded else {
                        return HandlerOutcome::Poison("undecodable event".into());
                    };
                    let Some(Payload::AccountStatusChanged(changed)) = envelope.payload else {
                        return HandlerOutcome::Poison(
                            "not an account_status_changed event".into(),
                        );
                    };
                    match router
                        .account_status_changed(&envelope.tenant_id, &envelope.event_id, &changed)
                        .await
                    {
                        Ok(_) => HandlerOutcome::Done,
                        Err(error) => HandlerOutcome::Retry(error.to_string()),
                    }
                }
            },
        );
        let (opened, deactivated, accounts, closed) =
            tokio::join!(opened, deactivated, accounts, closed);
        closed?;
        for outcome in opened {
            outcome?;
        }
        deactivated?;
        accounts?;
        Ok(())
    }
}
