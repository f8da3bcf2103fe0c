//! The gRPC surface. Ownership (Assign, Transfer, BulkReassign, GetOwnershipHistory),
//! OffboardStaff, SetAvailability and routing settings (SetRoutingPolicy,
//! ListRoutingPolicies, SetCapacity, SyncRoster), SetSlaPolicy, ListUnattended, reminders
//! (CreateReminder, ListReminders), SetFollowUpRule and shifts (SetShift, ListShifts).
//!
//! Ownership RPCs act on message-store with the caller's own `authorization` metadata, so
//! message-store applies the caller's visibility (an invisible or other tenant's conversation
//! is NotFound) and permission, and the owner there is updated before the RPC returns.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use chrono::Utc;
use futures::StreamExt;
use giao_authz::{Permission, Principal, principal};
use giao_bus::envelope::EventPublisher;
use giao_platform::grpc::TraceInterceptor;
use giao_proto::{
    assignment::{
        AssignRequest, AssignResponse, Availability, BulkReassignRequest, BulkReassignResponse,
        CreateReminderRequest, FollowUpRule, GetOwnershipHistoryRequest,
        GetOwnershipHistoryResponse, ListRemindersRequest, ListRemindersResponse,
        ListRoutingPoliciesRequest, ListRoutingPoliciesResponse, ListShiftsRequest,
        ListShiftsResponse, ListUnattendedRequest, ListUnattendedResponse, OffboardStaffRequest,
        OffboardStaffResponse, OwnershipChange as PbChange, Reminder, RoutingPolicy, RoutingRule,
        RoutingStrategy, SetAvailabilityRequest, SetAvailabilityResponse, SetCapacityRequest,
        SetCapacityResponse, SetFollowUpRuleRequest, SetRoutingPolicyRequest, SetShiftRequest,
        SetSlaPolicyRequest, Shift, ShiftChange, SlaPolicy, SlaState, SyncRosterRequest,
        SyncRosterResponse, TransferRequest, UnattendedConversation,
        assignment_service_server::AssignmentService, offboard_staff_request::Successor,
    },
    auth::{
        GetUserRequest, SetUserStatusRequest, User, UserStatus,
        auth_service_client::AuthServiceClient,
    },
    common::{PageRequest, PageResponse},
    events::{ConversationAssigned, StaffOffboarded, envelope::Payload},
    messagestore::{
        Conversation, ConversationStatus, ExportHistoryRequest, GetConversationRequest,
        ListConversationsRequest, SetConversationOwnerRequest, export_chunk::Chunk,
        export_history_request::Selector, message_store_service_client::MessageStoreServiceClient,
    },
};
use giao_storage::Database;
use tonic::{
    Request, Response, Status,
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::Channel,
};
use uuid::Uuid;

use crate::{
    error::Error,
    router::Router,
    routing::{self, Rule, Strategy},
    store::{
        self, OwnershipChange,
        routing::Load,
        shifts::ShiftsHandedOver,
        sla::{Scope, SlaPolicyRow},
    },
};

/// Most conversations one BulkReassign moves; matches message-store's batch limit.
const MAX_BULK: usize = 500;
/// Longest reason or note kept in the history.
const MAX_REASON_CHARS: usize = 2_000;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

#[derive(Clone)]
pub struct Api {
    database: Database,
    publisher: EventPublisher,
    message_store: Option<Channel>,
    auth: Option<Channel>,
    router: Router,
    /// Serialises handovers on SQLite (one process); PostgreSQL uses an advisory lock.
    handovers: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Held while a handover runs, so that a second call (a client retrying after a timeout)
/// waits for the first instead of moving the same batches beside it; on another replica it
/// is refused (Aborted) while the first runs.
#[allow(dead_code)]
enum HandoverLock {
    /// This process's turn and a transaction holding `pg_try_advisory_xact_lock`: released
    /// when it ends, or when a crashed replica's connection drops.
    Postgres(
        tokio::sync::OwnedMutexGuard<()>,
        sqlx::Transaction<'static, sqlx::Postgres>,
    ),
    Local(tokio::sync::OwnedMutexGuard<()>),
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

type Credential = Option<MetadataValue<Ascii>>;
type AuthClient = AuthServiceClient<InterceptedService<Channel, TraceInterceptor>>;
type StoreClient = MessageStoreServiceClient<InterceptedService<Channel, TraceInterceptor>>;

/// A request to another service that carries the caller's own credential.
fn forwarded<T>(credential: &Credential, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = credential {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
    }
    request
}

fn required(field: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(Error::InvalidArgument(format!("missing {field}")));
    }
    Ok(())
}

fn bounded(field: &str, value: &str) -> Result<(), Error> {
    if value.chars().count() > MAX_REASON_CHARS {
        return Err(Error::InvalidArgument(format!(
            "invalid {field}: at most {MAX_REASON_CHARS} characters"
        )));
    }
    Ok(())
}

fn non_empty(value: &str) -> Option<String> {
    Some(value.to_string()).filter(|value| !value.is_empty())
}

impl Api {
    pub fn new(
        database: Database,
        publisher: EventPublisher,
        message_store: Option<Channel>,
        auth: Option<Channel>,
        router: Router,
    ) -> Self {
        Self {
            database,
            publisher,
            message_store,
            auth,
            router,
            handovers: std::sync::Arc::default(),
        }
    }

    async fn lock_handover(&self, tenant_id: &str, user_id: &str) -> Result<HandoverLock, Status> {
        // Waiting happens here, holding no database connection: handovers are rare, and a
        // retried call must not starve the running one of connections.
        let local = self.handovers.clone().lock_owned().await;
        match &self.database {
            Database::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(Error::from)?;
                let locked: bool = sqlx::query_scalar(
                    "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 7104))",
                )
                .bind(format!("handover:{tenant_id}:{user_id}"))
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::from)?;
                if !locked {
                    return Err(Status::aborted(format!(
                        "the handover of user_id \"{user_id}\" is running on another replica: \
                         call again later"
                    )));
                }
                Ok(HandoverLock::Postgres(local, tx))
            }
            Database::Sqlite(_) => Ok(HandoverLock::Local(local)),
        }
    }

    fn auth_client(&self) -> Result<AuthClient, Error> {
        let channel = self.auth.clone().ok_or(Error::NotConfigured(
            "auth_service.endpoint is not configured",
        ))?;
        Ok(AuthServiceClient::with_interceptor(
            channel,
            TraceInterceptor::default(),
        ))
    }

    fn store_client(&self) -> Result<StoreClient, Error> {
        let channel = self.message_store.clone().ok_or(Error::NotConfigured(
            "message_store.endpoint is not configured",
        ))?;
        Ok(MessageStoreServiceClient::with_interceptor(
            channel,
            TraceInterceptor::default(),
        ))
    }

    /// The conversation as the caller sees it; NotFound when the caller may not see it.
    async fn visible_conversation(
        &self,
        credential: &Credential,
        conversation_id: &str,
    ) -> Result<Conversation, Status> {
        let mut client = self.store_client()?;
        Ok(client
            .get_conversation(forwarded(
                credential,
                GetConversationRequest {
                    conversation_id: conversation_id.to_string(),
                },
            ))
            .await?
            .into_inner())
    }

    /// Moves `conversation_ids` to `to_user_id`: checks every one is visible first (nothing
    /// moves when one is not), updates message-store, then records history and publishes
    /// ConversationAssigned. Conversations already owned by `to_user_id` are left alone, which
    /// makes a retried call change nothing.
    async fn move_conversations(
        &self,
        caller: &Principal,
        credential: &Credential,
        conversation_ids: &[String],
        to_user_id: &str,
        reason: &str,
    ) -> Result<Vec<OwnershipChange>, Status> {
        let mut current = Vec::with_capacity(conversation_ids.len());
        for conversation_id in conversation_ids {
            current.push(
                self.visible_conversation(credential, conversation_id)
                    .await?,
            );
        }
        self.move_known(caller, credential, &current, to_user_id, reason)
            .await
    }

    /// Moves conversations the caller has already been shown (see `move_conversations`):
    /// sets the owner in message-store first and then records the history and routing's
    /// view, so a refused move never appears in the history; its events are published before
    /// it returns. (A handover records first instead: see `prepare_handover_batch`.)
    async fn move_known(
        &self,
        caller: &Principal,
        credential: &Credential,
        current: &[Conversation],
        to_user_id: &str,
        reason: &str,
    ) -> Result<Vec<OwnershipChange>, Status> {
        let moving: Vec<&Conversation> = current
            .iter()
            .filter(|c| c.owner_user_id != to_user_id)
            .collect();
        let (changes, loads) = changes_of(caller, &moving, to_user_id, reason);
        if changes.is_empty() {
            return Ok(changes);
        }
        self.set_owners(credential, &moving, to_user_id, reason, false)
            .await?;
        store::record_changes(&self.database, &caller.tenant_id, &changes).await?;
        store::routing::record_owners(&self.database, &caller.tenant_id, &loads).await?;
        // The previous owners may have room for a queued conversation now.
        self.router.wake();
        let mut publishing = Publishing::new(self.publisher.clone(), &caller.tenant_id);
        for (change, conversation) in changes.iter().zip(&moving) {
            // The history row names the event: a re-publish is a duplicate.
            publishing
                .publish(
                    format!("assigned-{}", change.id),
                    assigned(caller, conversation, to_user_id, reason),
                )
                .await;
        }
        publishing.finish().await;
        Ok(changes)
    }

    /// Sets the owner of `moving` in message-store, keeping each conversation's team (the
    /// owner and team are set together); with `with_contacts` their customers too.
    async fn set_owners(
        &self,
        credential: &Credential,
        moving: &[&Conversation],
        to_user_id: &str,
        reason: &str,
        with_contacts: bool,
    ) -> Result<(), Status> {
        let mut by_team: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for conversation in moving {
            by_team
                .entry(conversation.team_id.as_str())
                .or_default()
                .push(conversation.conversation_id.clone());
        }
        let mut client = self.store_client()?;
        for (team_id, ids) in by_team {
            client
                .set_conversation_owner(forwarded(
                    credential,
                    SetConversationOwnerRequest {
                        conversation_ids: ids,
                        owner_user_id: to_user_id.to_string(),
                        team_id: team_id.to_string(),
                        reason: reason.to_string(),
                        with_contacts,
                    },
                ))
                .await?;
        }
        Ok(())
    }

    /// Lists the leaver's next page (after `cursor`; the first page when it is empty),
    /// decides who takes each conversation and records it all before anything moves (see
    /// [`Self::plan_handover_batch`] and [`Self::record_planned_batch`]).
    async fn prepare_handover_batch(
        &self,
        handover: &Handover<'_>,
        planner: &mut Option<TeamPlanner>,
        recorded: &mut HashSet<String>,
        cursor: String,
    ) -> Result<HandoverBatch, Status> {
        let planned = self
            .plan_handover_batch(handover, planner, recorded, cursor)
            .await?;
        self.record_planned_batch(handover, planned).await
    }

    /// Lists the leaver's next page (after `cursor`; the first page when it is empty) and
    /// decides who takes each conversation. `recorded` holds the conversations this run
    /// has planned: one listed again (new activity moved it past the cursor) moves again
    /// but is not in the history twice.
    async fn plan_handover_batch(
        &self,
        handover: &Handover<'_>,
        planner: &mut Option<TeamPlanner>,
        recorded: &mut HashSet<String>,
        cursor: String,
    ) -> Result<PlannedBatch, Status> {
        let Handover {
            caller,
            credential,
            leaver,
            reason,
            heirs,
            ..
        } = *handover;
        let mut timings = Timings::default();
        let step = Instant::now();
        let page = self
            .store_client()?
            .list_conversations(forwarded(
                credential,
                ListConversationsRequest {
                    owner_user_id: leaver.to_string(),
                    page: Some(PageRequest {
                        page_size: MAX_BULK as u32,
                        cursor,
                    }),
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        let next_cursor = page.page.unwrap_or_default().next_cursor;
        let conversations = page.conversations;
        let listed = conversations.len();
        timings.add(Step::List, step);
        let step = Instant::now();
        let groups = match (planner, heirs) {
            (Some(planner), _) => {
                let ids: Vec<String> = conversations
                    .iter()
                    .map(|c| c.conversation_id.clone())
                    .collect();
                let promised = store::handover_targets(
                    &self.database,
                    &caller.tenant_id,
                    leaver,
                    reason,
                    &ids,
                )
                .await?;
                planner.plan(conversations, &promised)
            }
            (None, Heirs::Successor(successor)) => {
                vec![(successor.user_id.clone(), conversations)]
            }
            (None, Heirs::Team(_)) => Vec::new(),
        };
        let mut changes = Vec::new();
        let mut loads = Vec::new();
        let groups: Vec<(String, Vec<Conversation>)> = groups
            .into_iter()
            .map(|(recipient, group)| {
                let moving: Vec<Conversation> = group
                    .into_iter()
                    .filter(|c| c.owner_user_id != recipient)
                    .collect();
                let (group_changes, group_loads) = changes_of(
                    caller,
                    &moving.iter().collect::<Vec<_>>(),
                    &recipient,
                    reason,
                );
                changes.extend(group_changes);
                loads.extend(group_loads);
                (recipient, moving)
            })
            .collect();
        changes.retain(|change| recorded.insert(change.conversation_id.clone()));
        timings.add(Step::Plan, step);
        Ok(PlannedBatch {
            batch: HandoverBatch {
                groups,
                listed,
                moving: loads.len(),
                next_cursor,
                timings,
            },
            changes,
            loads,
        })
    }

    /// Records a planned page before anything of it moves: the history, routing's view of
    /// owner and customer, the job's progress. A crash after this loses nothing: the
    /// resumed job moves the same conversations to the same people. Pages are disjoint, so
    /// several may be recorded at once.
    async fn record_planned_batch(
        &self,
        handover: &Handover<'_>,
        planned: PlannedBatch,
    ) -> Result<HandoverBatch, Status> {
        let PlannedBatch {
            mut batch,
            changes,
            loads,
        } = planned;
        let step = Instant::now();
        store::record_handover_batch(
            &self.database,
            &handover.caller.tenant_id,
            handover.leaver,
            &changes,
            &loads,
            handover.fresh,
        )
        .await?;
        batch.timings.add(Step::Record, step);
        Ok(batch)
    }

    /// Moves a recorded handover batch in message-store, customers included; how long it
    /// took.
    async fn move_handover_batch(
        &self,
        credential: &Credential,
        reason: &str,
        batch: &HandoverBatch,
    ) -> Result<Duration, Status> {
        let step = Instant::now();
        for (recipient, moving) in &batch.groups {
            if moving.is_empty() {
                continue;
            }
            let moving: Vec<&Conversation> = moving.iter().collect();
            self.set_owners(credential, &moving, recipient, reason, true)
                .await?;
        }
        Ok(step.elapsed())
    }

    /// [`Self::move_handover_batch`], giving the batch back with the time it took.
    async fn move_listed_batch(
        &self,
        credential: &Credential,
        reason: &str,
        batch: HandoverBatch,
    ) -> Result<(HandoverBatch, Duration), Status> {
        let moved = self.move_handover_batch(credential, reason, &batch).await?;
        Ok((batch, moved))
    }

    /// Hands a moved batch's events to the publisher.
    async fn publish_handover_batch(
        &self,
        caller: &Principal,
        reason: &str,
        batch: &HandoverBatch,
        publishing: &mut Publishing,
    ) {
        self.router.wake();
        for (recipient, moving) in &batch.groups {
            for conversation in moving {
                publishing
                    .handover_event(assigned(caller, conversation, recipient, reason))
                    .await;
            }
        }
    }

    /// Exports everything the leaver owns and records the export's id and digest.
    async fn export_book(
        &self,
        credential: &Credential,
        tenant: &str,
        user_id: &str,
        reason: &str,
    ) -> Result<(String, String), Status> {
        let mut stream = self
            .store_client()?
            .export_history(forwarded(
                credential,
                ExportHistoryRequest {
                    selector: Some(Selector::OwnerUserId(user_id.to_string())),
                    purpose: reason.to_string(),
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        let mut manifest = None;
        while let Some(chunk) = stream.message().await? {
            if let Some(Chunk::Manifest(found)) = chunk.chunk {
                manifest = Some(found);
            }
        }
        let manifest = manifest
            .ok_or_else(|| Status::unavailable("message-store export ended without a manifest"))?;
        store::record_export(
            &self.database,
            tenant,
            user_id,
            &manifest.export_id,
            &manifest.sha256,
        )
        .await?;
        Ok((manifest.export_id, manifest.sha256))
    }

    /// Ends the leaver's sessions in auth (the caller's credential makes it their act in
    /// auth's audit log) and records it.
    async fn deactivate_leaver(
        &self,
        credential: &Credential,
        tenant: &str,
        user_id: &str,
        heirs: &Heirs,
    ) -> Result<(), Status> {
        let outcome = self
            .auth_client()?
            .set_user_status(forwarded(
                credential,
                SetUserStatusRequest {
                    user_id: user_id.to_string(),
                    status: UserStatus::Offboarded as i32,
                    reason: match heirs {
                        Heirs::Successor(successor) => {
                            format!("handover to {}", successor.user_id)
                        }
                        Heirs::Team(_) => "handover across the team".into(),
                    },
                },
            ))
            .await;
        match outcome {
            Ok(_) => {}
            // Already offboarded (e.g. by an earlier, interrupted call).
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {}
            Err(status) => return Err(status),
        }
        store::mark_deactivated(&self.database, tenant, user_id).await?;
        Ok(())
    }

    async fn assign_one(
        &self,
        caller: Principal,
        credential: Credential,
        conversation_id: &str,
        to_user_id: &str,
        reason: &str,
    ) -> Result<AssignResponse, Status> {
        let before = self
            .visible_conversation(&credential, conversation_id)
            .await?;
        self.move_conversations(
            &caller,
            &credential,
            &[conversation_id.to_string()],
            to_user_id,
            reason,
        )
        .await?;
        Ok(AssignResponse {
            conversation_id: conversation_id.to_string(),
            owner_user_id: to_user_id.to_string(),
            previous_owner_user_id: before.owner_user_id,
        })
    }

    /// Hands the leaver's shifts over under the tenant's routing lock (as SetShift checks
    /// overlaps), so a shift set meanwhile cannot make the heir work two at once.
    async fn hand_over_shifts(
        &self,
        tenant_id: &str,
        leaver: &str,
        heir: &str,
    ) -> Result<ShiftsHandedOver, Error> {
        self.router
            .locked(
                tenant_id,
                store::shifts::hand_over(&self.database, tenant_id, leaver, heir),
            )
            .await
    }

    /// Validates an OffboardStaff request against auth (and, across a team, the roster)
    /// before anything moves.
    async fn offboarding_parties(
        &self,
        caller: &Principal,
        credential: &Credential,
        request: &OffboardStaffRequest,
    ) -> Result<(User, Heirs), Status> {
        required("user_id", &request.user_id)?;
        let successor_id = match &request.successor {
            Some(Successor::SuccessorUserId(id)) if !id.trim().is_empty() => Some(id.clone()),
            Some(Successor::RedistributeAcrossTeam(true)) => None,
            _ => {
                return Err(Error::InvalidArgument(
                    "missing successor: set successor_user_id or redistribute_across_team".into(),
                )
                .into());
            }
        };
        if request.user_id == caller.user_id {
            return Err(Error::InvalidArgument(
                "invalid user_id: you cannot offboard yourself".into(),
            )
            .into());
        }
        if successor_id.as_deref() == Some(request.user_id.as_str()) {
            return Err(Error::InvalidArgument(
                "invalid successor_user_id: the leaver cannot succeed themselves".into(),
            )
            .into());
        }
        let mut auth = self.auth_client()?;
        let leaver = lookup_user(&mut auth, credential, "user_id", &request.user_id).await?;
        let Some(successor_id) = successor_id else {
            if leaver.team_ids.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "invalid redistribute_across_team: user_id \"{}\" belongs to no team; \
                     name a successor_user_id",
                    leaver.user_id
                )));
            }
            let finished =
                store::offboarding_job(&self.database, &caller.tenant_id, &leaver.user_id)
                    .await?
                    .is_some_and(|job| job.completed);
            let teams = leaver.team_ids.clone();
            if finished {
                // A finished handover answers its report, whoever has left the team since.
                return Ok((leaver, Heirs::Team(teams)));
            }
            // Teammates come from the roster mirror: refreshed first when this tenant has a
            // service key, so that a teammate added a minute ago counts.
            if let Some(key) = self.router.credential(&caller.tenant_id)
                && let Err(status) = self.router.sync_roster(&caller.tenant_id, &key).await
            {
                tracing::warn!(%status, "cannot refresh the roster before a team handover");
            }
            // Checked now so that a team with nobody left refuses before anything moves.
            TeamPlanner::load(
                &self.database,
                &caller.tenant_id,
                &leaver.user_id,
                &leaver.team_ids,
            )
            .await?;
            return Ok((leaver, Heirs::Team(teams)));
        };
        let successor =
            lookup_user(&mut auth, credential, "successor_user_id", &successor_id).await?;
        if successor.status != UserStatus::Active as i32 {
            return Err(Status::failed_precondition(format!(
                "invalid successor_user_id \"{successor_id}\": the user is not active"
            )));
        }
        Ok((leaver, Heirs::Successor(successor)))
    }

    /// Runs (or resumes) the leaver's handover: export, deactivation, then the move. Each
    /// step records its progress, so a call after a crash continues where the last stopped.
    async fn offboard(
        &self,
        caller: &Principal,
        credential: &Credential,
        leaver: &User,
        heirs: &Heirs,
    ) -> Result<OffboardStaffResponse, Status> {
        let tenant = caller.tenant_id.as_str();
        let user_id = leaver.user_id.as_str();
        // One run per leaver at a time; a waiting call then finds the job done or resumes it.
        let _lock = self.lock_handover(tenant, user_id).await?;
        let begun = Instant::now();
        let mut job = store::start_offboarding(
            &self.database,
            tenant,
            user_id,
            heirs.job_key(),
            &caller.user_id,
        )
        .await?;
        if job.successor_user_id != heirs.job_key() {
            let field = match heirs {
                Heirs::Successor(_) => "successor_user_id",
                Heirs::Team(_) => "redistribute_across_team",
            };
            let heir = if job.successor_user_id.is_empty() {
                "their team".to_string()
            } else {
                job.successor_user_id.clone()
            };
            return Err(Status::failed_precondition(format!(
                "invalid {field}: {user_id} is already being handed over to {heir}"
            )));
        }
        if job.completed {
            return Ok(report(&job));
        }
        // A run that finds the leaver already deactivated resumes one that may have died
        // between a move and its events.
        let resumed = job.deactivated;
        let mut publishing = Publishing::for_handover(self.publisher.clone(), tenant, &job.id);
        let mut timings = Timings::default();
        let reason = format!("offboarding {user_id}");
        let mut planner = match heirs {
            Heirs::Successor(_) => None,
            Heirs::Team(team_ids) => {
                Some(TeamPlanner::load(&self.database, tenant, user_id, team_ids).await?)
            }
        };
        // The book is listed and recorded page by page while the export runs, but nothing
        // moves in message-store before the export is recorded: its selector is "owned by
        // the leaver", so a conversation moved earlier would be missing from it, and a
        // crash then would leave an export that no later call could complete. Recording
        // first is safe: a resumed job lists what is still the leaver's and moves it to the
        // same people.
        let handover = Handover {
            caller,
            credential,
            leaver: user_id,
            reason: &reason,
            heirs,
            // The count commits with the history it counts (see `record_handover_batch`).
            fresh: job.conversations_moved == 0,
        };
        let mut recorded = HashSet::new();
        // Three stages: pages are listed and planned one after another (the cursor and the
        // team planner are sequential), recorded a few at once, then moved a few at once.
        let (planned, mut to_record) =
            tokio::sync::mpsc::channel::<PlannedBatch>(RECORDS_IN_FLIGHT);
        let (ready, mut waiting) = tokio::sync::mpsc::channel::<HandoverBatch>(PREPARED_AHEAD);
        let listing = async {
            let mut cursor = String::new();
            loop {
                let page = self
                    .plan_handover_batch(&handover, &mut planner, &mut recorded, cursor)
                    .await?;
                cursor = page.batch.next_cursor.clone();
                // A closed queue means a later stage failed; its error is the answer.
                if planned.send(page).await.is_err() || cursor.is_empty() {
                    break;
                }
            }
            drop(planned);
            Ok::<_, Status>(())
        };
        // Each later stage runs a few pages at once and hands them on in listing order.
        let recording = async {
            let mut records = futures::stream::poll_fn(|cx| to_record.poll_recv(cx))
                .map(|page| self.record_planned_batch(&handover, page))
                .buffered(RECORDS_IN_FLIGHT);
            while let Some(batch) = records.next().await {
                // A closed queue means the moves failed; their error is the answer.
                if ready.send(batch?).await.is_err() {
                    break;
                }
            }
            drop(ready);
            Ok::<_, Status>(())
        };
        let moving = async {
            if job.export_id.is_empty() {
                let step = Instant::now();
                let (export_id, sha256) = self
                    .export_book(credential, tenant, user_id, &reason)
                    .await?;
                job.export_id = export_id;
                job.export_sha256 = sha256;
                timings.add(Step::Export, step);
            }
            if !job.deactivated {
                let step = Instant::now();
                self.deactivate_leaver(credential, tenant, user_id, heirs)
                    .await?;
                job.deactivated = true;
                timings.add(Step::Deactivate, step);
            }
            // Nothing is routed to the leaver any more, even before auth's UserDeactivated
            // arrives (routing only hands work to active users of the mirror).
            store::routing::deactivate_user(&self.database, tenant, user_id).await?;
            // Pages move a few at a time (disjoint conversations; message-store takes the
            // customers' locks in id order), in listing order, each one's events handed to
            // the publisher once it has moved.
            let mut moves = futures::stream::poll_fn(|cx| waiting.poll_recv(cx))
                .map(|batch| self.move_listed_batch(credential, &reason, batch))
                .buffered(MOVES_IN_FLIGHT);
            while let Some(moved) = moves.next().await {
                let (batch, moved) = moved?;
                timings.absorb(&batch.timings);
                timings.set_owner += moved;
                self.publish_handover_batch(caller, &reason, &batch, &mut publishing)
                    .await;
            }
            Ok::<_, Status>(())
        };
        tokio::try_join!(listing, recording, moving)?;
        // When the listing ends, first pages are taken until none is left, so a
        // conversation whose new activity moved it ahead of the cursor is handed over too.
        loop {
            let batch = self
                .prepare_handover_batch(&handover, &mut planner, &mut recorded, String::new())
                .await?;
            timings.absorb(&batch.timings);
            if batch.listed == 0 {
                break;
            }
            timings.set_owner += self
                .move_handover_batch(credential, &reason, &batch)
                .await?;
            self.publish_handover_batch(caller, &reason, &batch, &mut publishing)
                .await;
            if batch.moving == 0 {
                // Listed but nothing to move: never loop on it.
                break;
            }
        }
        if resumed {
            // An interrupted run may have moved a batch and died before its events were
            // out: publish the handover's other moves again under the same ids (the bus
            // drops those it already has).
            for (conversation_id, owner, team_id, actor) in
                store::handover_moves(&self.database, tenant, user_id, &reason).await?
            {
                if publishing.published.contains(&conversation_id) {
                    continue;
                }
                publishing
                    .handover_event(Payload::ConversationAssigned(ConversationAssigned {
                        conversation_id,
                        owner_user_id: owner,
                        previous_owner_user_id: user_id.to_string(),
                        team_id,
                        reason: reason.clone(),
                        actor,
                    }))
                    .await;
            }
        }
        let step = Instant::now();
        // Counted from the history rather than summed per batch, so a batch whose count was
        // lost to a crash is still in the report; counted while the last events are
        // acknowledged, as neither needs the other.
        let ((), conversations_moved, contacts_moved) = tokio::try_join!(
            async {
                publishing.finish().await;
                Ok(())
            },
            store::count_moves_from(&self.database, tenant, user_id, &reason),
            store::count_contacts_moved_from(&self.database, tenant, user_id, &reason),
        )?;
        job.conversations_moved = conversations_moved;
        job.contacts_moved = contacts_moved;
        // Pending reminders and shifts go to the successor; across a team, a reminder goes
        // to whoever now has its conversation (or customer), and shifts and other reminders
        // to the team's deputy. The two moves and their count are not one transaction: a
        // crash between them under-counts the report, never the move.
        let (reminders, shifts) = match (heirs, &planner) {
            (Heirs::Successor(successor), _) => (
                store::reminders::move_pending(&self.database, tenant, user_id, &successor.user_id)
                    .await?,
                self.hand_over_shifts(tenant, user_id, &successor.user_id)
                    .await?,
            ),
            (Heirs::Team(team_ids), Some(planner)) => {
                let mut supervisors = Vec::new();
                for team_id in team_ids {
                    supervisors.extend(
                        store::routing::supervisor_of(&self.database, tenant, team_id).await?,
                    );
                }
                let deputy = planner.deputy(&supervisors);
                (
                    store::reminders::move_pending_to_owners(
                        &self.database,
                        tenant,
                        user_id,
                        &deputy,
                    )
                    .await?,
                    self.hand_over_shifts(tenant, user_id, &deputy).await?,
                )
            }
            (Heirs::Team(_), None) => (0, ShiftsHandedOver::default()),
        };
        let reminders = i64::try_from(reminders).unwrap_or(i64::MAX);
        let moved_shifts = i64::try_from(shifts.moved).unwrap_or(i64::MAX);
        // Kept is what is left with the leaver, not a sum: a resumed run finds the same ones.
        let kept_shifts = i64::try_from(shifts.kept).unwrap_or(i64::MAX);
        store::add_moved_extras(
            &self.database,
            tenant,
            user_id,
            reminders,
            moved_shifts,
            kept_shifts,
        )
        .await?;
        job.reminders_moved += reminders;
        job.shifts_moved += moved_shifts;
        job.shifts_kept = kept_shifts;
        // The handover is in the tenant's audit chain before the job counts as done, so a
        // failed publish is retried by the next call rather than lost.
        let now = Utc::now();
        self.publisher
            .publish(
                tenant,
                format!("handover-{}", job.id),
                Payload::AuditRequested(giao_proto::events::AuditRequested {
                    actor: caller.user_id.clone(),
                    action: "staff.handover".into(),
                    target: user_id.to_string(),
                    details_json: serde_json::json!({
                        "successor_user_id": job.successor_user_id,
                        "redistribute_across_team": matches!(heirs, Heirs::Team(_)),
                        "conversations_moved": job.conversations_moved,
                        "contacts_moved": job.contacts_moved,
                        "shifts_moved": job.shifts_moved,
                        "shifts_kept": job.shifts_kept,
                        "export_id": job.export_id,
                        "export_sha256": job.export_sha256,
                    })
                    .to_string(),
                    at: Some(prost_types::Timestamp {
                        seconds: now.timestamp(),
                        nanos: now.timestamp_subsec_nanos() as i32,
                    }),
                }),
            )
            .await
            .map_err(|error| Status::unavailable(format!("cannot record the handover: {error}")))?;
        store::complete_offboarding(
            &self.database,
            tenant,
            user_id,
            job.conversations_moved,
            job.contacts_moved,
        )
        .await?;
        job.completed = true;
        let payload = Payload::StaffOffboarded(StaffOffboarded {
            user_id: user_id.to_string(),
            successor_user_id: job.successor_user_id.clone(),
            conversations_moved: u64::try_from(job.conversations_moved).unwrap_or(0),
            contacts_moved: u64::try_from(job.contacts_moved).unwrap_or(0),
            reminders_moved: u64::try_from(job.reminders_moved).unwrap_or(0),
            shifts_moved: u64::try_from(job.shifts_moved).unwrap_or(0),
            export_id: job.export_id.clone(),
            actor_user_id: caller.user_id.clone(),
        });
        if let Err(error) = self
            .publisher
            .publish(tenant, format!("offboarded-{}", job.id), payload)
            .await
        {
            tracing::warn!(offboarding_id = %job.id, %error, "cannot publish staff offboarded");
        }
        timings.add(Step::Extras, step);
        timings.absorb(&publishing.timings);
        tracing::info!(
            offboarding_id = %job.id,
            conversations = job.conversations_moved,
            seconds = begun.elapsed().as_secs_f64(),
            export = timings.export.as_secs_f64(),
            deactivate = timings.deactivate.as_secs_f64(),
            list = timings.list.as_secs_f64(),
            plan = timings.plan.as_secs_f64(),
            record = timings.record.as_secs_f64(),
            set_owner = timings.set_owner.as_secs_f64(),
            publish_wait = timings.publish.as_secs_f64(),
            finish = timings.extras.as_secs_f64(),
            "handover complete"
        );
        Ok(report(&job))
    }
}

/// A user of the caller's tenant; auth answers NotFound for unknown users and for users of
/// other tenants alike, and the error names the request field.
async fn lookup_user(
    auth: &mut AuthClient,
    credential: &Credential,
    field: &str,
    user_id: &str,
) -> Result<User, Status> {
    match auth
        .get_user(forwarded(
            credential,
            GetUserRequest {
                user_id: user_id.to_string(),
            },
        ))
        .await
    {
        Ok(user) => Ok(user.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => Err(Status::not_found(format!(
            "{field} \"{user_id}\" not found in this tenant"
        ))),
        Err(status) => Err(status),
    }
}

fn report(job: &store::OffboardingJob) -> OffboardStaffResponse {
    OffboardStaffResponse {
        offboarding_id: job.id.clone(),
        conversations_moved: u64::try_from(job.conversations_moved).unwrap_or(0),
        reminders_moved: u64::try_from(job.reminders_moved).unwrap_or(0),
        shifts_moved: u64::try_from(job.shifts_moved).unwrap_or(0),
        shifts_kept: u64::try_from(job.shifts_kept).unwrap_or(0),
        contacts_moved: u64::try_from(job.contacts_moved).unwrap_or(0),
        export_id: job.export_id.clone(),
        export_sha256: job.export_sha256.clone(),
    }
}

/// The history rows and routing records of moving `moving` to `to_user_id`.
fn changes_of(
    caller: &Principal,
    moving: &[&Conversation],
    to_user_id: &str,
    reason: &str,
) -> (Vec<OwnershipChange>, Vec<Load>) {
    let at = Utc::now();
    let changes = moving
        .iter()
        .map(|conversation| OwnershipChange {
            id: Uuid::now_v7(),
            conversation_id: conversation.conversation_id.clone(),
            owner_user_id: non_empty(to_user_id),
            previous_owner: non_empty(&conversation.owner_user_id),
            actor: caller.user_id.clone(),
            reason: reason.to_string(),
            at,
        })
        .collect();
    // Routing counts open conversations per owner and remembers each customer's owner; a
    // conversation given out by hand leaves the queue.
    let loads = moving
        .iter()
        .map(|conversation| Load {
            tenant_id: caller.tenant_id.clone(),
            conversation_id: conversation.conversation_id.clone(),
            contact_id: conversation.contact_id.clone(),
            channel_account_id: conversation.channel_account_id.clone(),
            owner_user_id: non_empty(to_user_id),
            team_id: conversation.team_id.clone(),
            applied: true,
            reason: reason.to_string(),
            previous_owner_user_id: non_empty(&conversation.owner_user_id),
        })
        .collect();
    (changes, loads)
}

/// The ConversationAssigned event of moving `conversation` to `to_user_id`.
fn assigned(
    caller: &Principal,
    conversation: &Conversation,
    to_user_id: &str,
    reason: &str,
) -> Payload {
    Payload::ConversationAssigned(ConversationAssigned {
        conversation_id: conversation.conversation_id.clone(),
        owner_user_id: to_user_id.to_string(),
        previous_owner_user_id: conversation.owner_user_id.clone(),
        team_id: conversation.team_id.clone(),
        reason: reason.to_string(),
        actor: caller.user_id.clone(),
    })
}

/// Who hands over to whom, on whose behalf: what every page of a handover shares.
#[derive(Clone, Copy)]
struct Handover<'a> {
    caller: &'a Principal,
    credential: &'a Credential,
    leaver: &'a str,
    reason: &'a str,
    heirs: &'a Heirs,
    /// No earlier run of this job recorded anything: see `store::record_handover_batch`.
    fresh: bool,
}

/// A page of a handover, recorded and ready to move.
struct HandoverBatch {
    /// Per recipient, the conversations moving to them.
    groups: Vec<(String, Vec<Conversation>)>,
    /// How many conversations the page listed, and how many of them move.
    listed: usize,
    moving: usize,
    /// Where the listing continues; empty after the last page.
    next_cursor: String,
    timings: Timings,
}

/// Most publishes waiting for the bus's acknowledgement at once.
const PUBLISH_IN_FLIGHT: usize = 1_024;

/// Pages of a handover moving in message-store at once.
const MOVES_IN_FLIGHT: usize = 2;

/// Pages of a handover being recorded at once.
const RECORDS_IN_FLIGHT: usize = 2;

/// A listed page with its decisions, not yet recorded.
struct PlannedBatch {
    batch: HandoverBatch,
    /// The history rows to append (without those this run already recorded).
    changes: Vec<OwnershipChange>,
    /// Routing's view of each moving conversation.
    loads: Vec<Load>,
}

/// Pages a handover lists and records ahead of its moves (while the export runs): enough
/// for a book of 200,000, and a bound on what a larger one holds in memory.
const PREPARED_AHEAD: usize = 400;

/// One step of a handover, timed for its closing log line.
#[derive(Debug, Clone, Copy)]
enum Step {
    Export,
    Deactivate,
    List,
    Plan,
    Record,
    Publish,
    Extras,
}

/// Where a handover's time went.
#[derive(Debug, Default)]
struct Timings {
    export: Duration,
    deactivate: Duration,
    list: Duration,
    plan: Duration,
    record: Duration,
    set_owner: Duration,
    publish: Duration,
    extras: Duration,
}

impl Timings {
    fn absorb(&mut self, other: &Timings) {
        self.export += other.export;
        self.deactivate += other.deactivate;
        self.list += other.list;
        self.plan += other.plan;
        self.record += other.record;
        self.set_owner += other.set_owner;
        self.publish += other.publish;
        self.extras += other.extras;
    }

    fn add(&mut self, step: Step, begun: Instant) {
        let slot = match step {
            Step::Export => &mut self.export,
            Step::Deactivate => &mut self.deactivate,
            Step::List => &mut self.list,
            Step::Plan => &mut self.plan,
            Step::Record => &mut self.record,
            Step::Publish => &mut self.publish,
            Step::Extras => &mut self.extras,
        };
        *slot += begun.elapsed();
    }
}

/// Publishes events with many acknowledgements awaited at once: each publish waits for
/// the bus's ack, and a handover's hundred thousand must not wait one by one. A failed
/// publish is logged, not returned: the owner has already moved.
struct Publishing {
    publisher: EventPublisher,
    tenant_id: String,
    in_flight: tokio::task::JoinSet<()>,
    /// A handover's id: its events are `handover-<job>-<conversation>`, so publishing one
    /// again (a resumed job) is a duplicate the bus drops.
    job_id: String,
    /// The conversations this run has published for the handover.
    published: HashSet<String>,
    timings: Timings,
}

impl Publishing {
    fn new(publisher: EventPublisher, tenant_id: &str) -> Self {
        Self {
            publisher,
            tenant_id: tenant_id.to_string(),
            in_flight: tokio::task::JoinSet::new(),
            job_id: String::new(),
            published: HashSet::new(),
            timings: Timings::default(),
        }
    }

    fn for_handover(publisher: EventPublisher, tenant_id: &str, job_id: &str) -> Self {
        Self {
            job_id: job_id.to_string(),
            ..Self::new(publisher, tenant_id)
        }
    }

    async fn publish(&mut self, event_id: String, payload: Payload) {
        let begun = Instant::now();
        while self.in_flight.len() >= PUBLISH_IN_FLIGHT {
            self.in_flight.join_next().await;
        }
        self.timings.add(Step::Publish, begun);
        let publisher = self.publisher.clone();
        let tenant_id = self.tenant_id.clone();
        self.in_flight.spawn(async move {
            if let Err(error) = publisher
                .publish(&tenant_id, event_id.clone(), payload)
                .await
            {
                tracing::warn!(%event_id, %error, "cannot publish an event");
            }
        });
    }

    /// A handover's ConversationAssigned, named after the job and the conversation.
    async fn handover_event(&mut self, payload: Payload) {
        let conversation_id = match &payload {
            Payload::ConversationAssigned(assigned) => assigned.conversation_id.clone(),
            _ => String::new(),
        };
        let event_id = format!("handover-{}-{conversation_id}", self.job_id);
        self.published.insert(conversation_id);
        self.publish(event_id, payload).await;
    }

    /// Waits for every acknowledgement.
    async fn finish(&mut self) {
        let begun = Instant::now();
        while self.in_flight.join_next().await.is_some() {}
        self.timings.add(Step::Publish, begun);
    }
}

/// Who takes over a leaver's work.
#[derive(Debug, Clone)]
enum Heirs {
    /// One successor takes everything.
    Successor(User),
    /// The leaver's teams share it (`redistribute_across_team`).
    Team(Vec<String>),
}

impl Heirs {
    /// The job's `successor_user_id`: empty for a handover across the team.
    fn job_key(&self) -> &str {
        match self {
            Heirs::Successor(user) => &user.user_id,
            Heirs::Team(_) => "",
        }
    }
}

/// A teammate who may receive part of a leaver's work.
#[derive(Debug, Clone)]
struct Teammate {
    user_id: String,
    team_ids: Vec<String>,
    open: i64,
    max_open: Option<i64>,
}

/// Shares a leaver's conversations across their teams: each conversation goes to a member
/// of its own team when that is one of the leaver's, else of any of the leaver's teams, by
/// the team's routing strategy (least open without one), to someone below capacity while
/// anyone is, and a customer's conversations all go to the same person.
#[derive(Debug)]
struct TeamPlanner {
    team_ids: Vec<String>,
    members: Vec<Teammate>,
    /// Per team: strategy and default capacity (0: none).
    policies: HashMap<String, (Strategy, i64)>,
    /// Round-robin position per pool.
    last: HashMap<String, String>,
    /// Who already took a customer in this handover.
    by_contact: HashMap<String, String>,
}

impl TeamPlanner {
    /// The leaver's active teammates (agents and supervisors, from the roster mirror) and
    /// their teams' policies; an error naming the field when nobody is left to take over.
    async fn load(
        database: &Database,
        tenant_id: &str,
        leaver: &str,
        team_ids: &[String],
    ) -> Result<Self, Status> {
        let members: Vec<Teammate> = store::routing::agents(database, tenant_id)
            .await?
            .into_iter()
            .filter(|agent| agent.user_id != leaver)
            .filter(|agent| agent.team_ids.iter().any(|team| team_ids.contains(team)))
            .map(|agent| Teammate {
                user_id: agent.user_id,
                team_ids: agent.team_ids,
                open: agent.open,
                max_open: agent.max_open,
            })
            .collect();
        if members.is_empty() {
            return Err(Status::failed_precondition(format!(
                "invalid redistribute_across_team: team {} of user_id \"{leaver}\" has no other \
                 active agent or supervisor; name a successor_user_id",
                team_ids.join(", ")
            )));
        }
        let mut policies = HashMap::new();
        for team_id in team_ids {
            if let Some(policy) = store::routing::team_policy(database, tenant_id, team_id).await? {
                policies.insert(
                    team_id.clone(),
                    (policy.strategy, policy.max_open_per_agent),
                );
            }
        }
        Ok(Self {
            team_ids: team_ids.to_vec(),
            members,
            policies,
            last: HashMap::new(),
            by_contact: HashMap::new(),
        })
    }

    /// Splits a batch by recipient, keeping earlier choices: those recorded by an
    /// interrupted run of the same handover (`promised`) and this run's per customer.
    fn plan(
        &mut self,
        page: Vec<Conversation>,
        promised: &HashMap<String, String>,
    ) -> Vec<(String, Vec<Conversation>)> {
        let mut groups: Vec<(String, Vec<Conversation>)> = Vec::new();
        for conversation in page {
            let recipient = match promised.get(&conversation.conversation_id) {
                Some(owner) => owner.clone(),
                None => match self.by_contact.get(&conversation.contact_id) {
                    Some(owner) => owner.clone(),
                    None => self.choose(&conversation.team_id),
                },
            };
            if !conversation.contact_id.is_empty() {
                self.by_contact
                    .insert(conversation.contact_id.clone(), recipient.clone());
            }
            if conversation.status != ConversationStatus::Closed as i32
                && let Some(member) = self.members.iter_mut().find(|m| m.user_id == recipient)
            {
                member.open += 1;
            }
            match groups.iter_mut().find(|(owner, _)| *owner == recipient) {
                Some((_, group)) => group.push(conversation),
                None => groups.push((recipient, vec![conversation])),
            }
        }
        groups
    }

    /// The teammate for a conversation of `team_id`.
    fn choose(&mut self, team_id: &str) -> String {
        let own_team = self.team_ids.iter().any(|team| team == team_id)
            && self
                .members
                .iter()
                .any(|m| m.team_ids.iter().any(|t| t == team_id));
        // The pool: the conversation's team, else all of the leaver's teams (whose policy
        // is the first team's that has one).
        let pool_key = if own_team { team_id } else { "" };
        let (strategy, capacity) = if own_team {
            self.policies.get(team_id).copied()
        } else {
            self.team_ids
                .iter()
                .find_map(|team| self.policies.get(team).copied())
        }
        .unwrap_or((Strategy::LeastOpen, 0));
        let in_pool =
            |member: &&Teammate| !own_team || member.team_ids.iter().any(|team| team == team_id);
        let has_room = |member: &&Teammate| {
            let limit = member.max_open.unwrap_or(capacity);
            limit <= 0 || member.open < limit
        };
        let mut pool: Vec<&Teammate> = self
            .members
            .iter()
            .filter(in_pool)
            .filter(has_room)
            .collect();
        if pool.is_empty() {
            // Everyone is at capacity: the work still needs an owner.
            pool = self.members.iter().filter(in_pool).collect();
        }
        pool.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        let last = self.last.get(pool_key).cloned().unwrap_or_default();
        let chosen = match strategy {
            Strategy::RoundRobin => pool
                .iter()
                .find(|member| member.user_id > last)
                .or_else(|| pool.first()),
            Strategy::LeastOpen => pool.iter().min_by_key(|member| member.open),
        }
        .map(|member| member.user_id.clone())
        .unwrap_or_default();
        self.last.insert(pool_key.to_string(), chosen.clone());
        chosen
    }

    /// Who takes what belongs to no conversation (shifts, free-standing reminders): the
    /// first active supervisor of the leaver's teams, else the least loaded teammate.
    fn deputy(&self, supervisors: &[String]) -> String {
        supervisors
            .iter()
            .find(|user| self.members.iter().any(|m| &&m.user_id == user))
            .cloned()
            .or_else(|| {
                self.members
                    .iter()
                    .min_by(|a, b| a.open.cmp(&b.open).then(a.user_id.cmp(&b.user_id)))
                    .map(|member| member.user_id.clone())
            })
            .unwrap_or_default()
    }
}

/// Longest id (user, team, channel account, tag, lead source) a policy may name.
const MAX_ID_CHARS: usize = 200;
const MAX_RULES: usize = 50;
/// Highest capacity one agent may be given.
const MAX_CAPACITY: u32 = 10_000;

fn short(field: &str, value: &str) -> Result<(), Error> {
    if value.chars().count() > MAX_ID_CHARS {
        return Err(Error::InvalidArgument(format!(
            "invalid {field}: at most {MAX_ID_CHARS} characters"
        )));
    }
    Ok(())
}

/// A validated policy from the request; the message names the offending field.
fn policy_from(policy: RoutingPolicy) -> Result<routing::Policy, Error> {
    short("policy.channel_account_id", &policy.channel_account_id)?;
    short("policy.team_id", &policy.team_id)?;
    let time_zone = time_zone_of("policy.time_zone", &policy.time_zone)?;
    let strategy = match RoutingStrategy::try_from(policy.strategy) {
        Ok(RoutingStrategy::RoundRobin) => Strategy::RoundRobin,
        Ok(RoutingStrategy::LeastOpen) => Strategy::LeastOpen,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "invalid policy.strategy {}: ROUND_ROBIN or LEAST_OPEN",
                policy.strategy
            )));
        }
    };
    if policy.max_open_per_agent > MAX_CAPACITY {
        return Err(Error::InvalidArgument(format!(
            "invalid policy.max_open_per_agent: at most {MAX_CAPACITY}"
        )));
    }
    if policy.rules.len() > MAX_RULES {
        return Err(Error::InvalidArgument(format!(
            "invalid policy.rules: at most {MAX_RULES}"
        )));
    }
    let mut rules = Vec::with_capacity(policy.rules.len());
    for (index, rule) in policy.rules.into_iter().enumerate() {
        for (name, value) in [
            ("lead_source", &rule.lead_source),
            ("tag", &rule.tag),
            ("team_id", &rule.team_id),
            ("user_id", &rule.user_id),
        ] {
            short(&format!("policy.rules[{index}].{name}"), value)?;
        }
        if rule.lead_source.is_empty() && rule.tag.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "invalid policy.rules[{index}]: set lead_source or tag"
            )));
        }
        if rule.team_id.is_empty() && rule.user_id.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "invalid policy.rules[{index}]: set team_id or user_id"
            )));
        }
        rules.push(Rule {
            lead_source: rule.lead_source,
            tag: rule.tag,
            team_id: rule.team_id,
            user_id: rule.user_id,
        });
    }
    Ok(routing::Policy {
        channel_account_id: policy.channel_account_id,
        team_id: policy.team_id,
        strategy,
        sticky_owner: policy.sticky_owner,
        max_open_per_agent: i64::from(policy.max_open_per_agent),
        rules,
        last_user_id: String::new(),
        time_zone,
        on_shift_change: match ShiftChange::try_from(policy.on_shift_change) {
            Ok(ShiftChange::MoveToIncoming) => routing::ShiftChange::MoveToIncoming,
            _ => routing::ShiftChange::StayWithOwner,
        },
    })
}

fn policy_to_pb(policy: routing::Policy) -> RoutingPolicy {
    RoutingPolicy {
        channel_account_id: policy.channel_account_id,
        team_id: policy.team_id,
        strategy: match policy.strategy {
            Strategy::RoundRobin => RoutingStrategy::RoundRobin as i32,
            Strategy::LeastOpen => RoutingStrategy::LeastOpen as i32,
        },
        sticky_owner: policy.sticky_owner,
        max_open_per_agent: u32::try_from(policy.max_open_per_agent).unwrap_or(0),
        rules: policy
            .rules
            .into_iter()
            .map(|rule| RoutingRule {
                lead_source: rule.lead_source,
                tag: rule.tag,
                team_id: rule.team_id,
                user_id: rule.user_id,
            })
            .collect(),
        time_zone: policy.time_zone,
        on_shift_change: match policy.on_shift_change {
            routing::ShiftChange::MoveToIncoming => ShiftChange::MoveToIncoming as i32,
            routing::ShiftChange::StayWithOwner => ShiftChange::StayWithOwner as i32,
        },
    }
}

/// An IANA time zone, the default when empty; the error names `field`.
fn time_zone_of(field: &str, value: &str) -> Result<String, Error> {
    let zone = if value.is_empty() {
        crate::sla::DEFAULT_TIME_ZONE
    } else {
        value
    };
    if <chrono_tz::Tz as std::str::FromStr>::from_str(zone).is_err() {
        return Err(Error::InvalidArgument(format!(
            "invalid {field} \"{value}\": an IANA zone such as Asia/Ho_Chi_Minh"
        )));
    }
    Ok(zone.to_string())
}

/// Longest target one SLA policy may set (30 days).
const MAX_SLA_SECS: u32 = 30 * 24 * 3_600;
const MAX_HOLIDAYS: usize = 400;

/// A validated SLA policy; the message names the offending field.
fn sla_policy_from(policy: SlaPolicy) -> Result<SlaPolicyRow, Error> {
    short("policy.channel_account_id", &policy.channel_account_id)?;
    short("policy.escalate_to_user_id", &policy.escalate_to_user_id)?;
    // The fields are unsigned, so a negative target cannot arrive; the range names both ends.
    for (field, secs, zero) in [
        (
            "policy.first_response_secs",
            policy.first_response_secs,
            "no target",
        ),
        (
            "policy.next_response_secs",
            policy.next_response_secs,
            "no target",
        ),
        (
            "policy.reassign_after_secs",
            policy.reassign_after_secs,
            "never",
        ),
    ] {
        if secs > MAX_SLA_SECS {
            return Err(Error::InvalidArgument(format!(
                "invalid {field}: {secs} is out of range, 0 ({zero}) to {MAX_SLA_SECS} seconds \
                 (30 days)"
            )));
        }
    }
    if policy.first_response_secs == 0
        && policy.next_response_secs == 0
        && policy.reassign_after_secs == 0
    {
        return Err(Error::InvalidArgument(
            "missing policy.first_response_secs, policy.next_response_secs or \
             policy.reassign_after_secs"
                .into(),
        ));
    }
    let time_zone = if policy.time_zone.is_empty() {
        crate::sla::DEFAULT_TIME_ZONE.to_string()
    } else {
        policy.time_zone.clone()
    };
    if <chrono_tz::Tz as std::str::FromStr>::from_str(&time_zone).is_err() {
        return Err(Error::InvalidArgument(format!(
            "invalid policy.time_zone \"{}\": an IANA zone such as Asia/Ho_Chi_Minh",
            policy.time_zone
        )));
    }
    let (weekdays, opens_at, closes_at) = match &policy.business_hours {
        None => (String::new(), String::new(), String::new()),
        Some(hours) => {
            if hours.weekdays.is_empty() || hours.weekdays.iter().any(|day| !(1..=7).contains(day))
            {
                return Err(Error::InvalidArgument(
                    "invalid policy.business_hours.weekdays: 1 (Monday) to 7 (Sunday)".into(),
                ));
            }
            let opens = crate::sla::parse_time(&hours.opens_at).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "invalid policy.business_hours.opens_at \"{}\": HH:MM",
                    hours.opens_at
                ))
            })?;
            let closes = crate::sla::parse_time(&hours.closes_at).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "invalid policy.business_hours.closes_at \"{}\": HH:MM",
                    hours.closes_at
                ))
            })?;
            if closes <= opens {
                return Err(Error::InvalidArgument(
                    "invalid policy.business_hours.closes_at: after opens_at".into(),
                ));
            }
            let mut days = hours.weekdays.clone();
            days.sort_unstable();
            days.dedup();
            let days: Vec<String> = days.iter().map(u32::to_string).collect();
            (
                days.join(","),
                hours.opens_at.clone(),
                hours.closes_at.clone(),
            )
        }
    };
    if policy.holidays.len() > MAX_HOLIDAYS {
        return Err(Error::InvalidArgument(format!(
            "invalid policy.holidays: at most {MAX_HOLIDAYS}"
        )));
    }
    for (index, day) in policy.holidays.iter().enumerate() {
        if chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_err() {
            return Err(Error::InvalidArgument(format!(
                "invalid policy.holidays[{index}] \"{day}\": YYYY-MM-DD"
            )));
        }
    }
    Ok(SlaPolicyRow {
        channel_account_id: policy.channel_account_id,
        first_response_secs: i64::from(policy.first_response_secs),
        next_response_secs: i64::from(policy.next_response_secs),
        weekdays,
        opens_at,
        closes_at,
        holidays: policy.holidays.join(","),
        time_zone,
        escalate_to_user_id: policy.escalate_to_user_id,
        reassign_after_secs: i64::from(policy.reassign_after_secs),
    })
}

fn timestamp_of(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

/// Breached once due (fired or not yet); at risk in the last quarter of the target.
fn sla_state(
    waiting_since_us: i64,
    due_at_us: Option<i64>,
    breached: bool,
    now_us: i64,
) -> SlaState {
    let Some(due) = due_at_us else {
        return SlaState::Unspecified;
    };
    if breached || now_us >= due {
        return SlaState::Breached;
    }
    if (due - now_us) * 4 <= due - waiting_since_us {
        return SlaState::AtRisk;
    }
    SlaState::Ok
}

/// Longest a reminder may wait (about five years).
const MAX_REMINDER_AHEAD_SECS: i64 = 5 * 366 * 24 * 3_600;

fn reminder_to_pb(row: store::reminders::ReminderRow) -> Reminder {
    Reminder {
        reminder_id: row.reminder_id,
        user_id: row.user_id,
        conversation_id: row.conversation_id,
        contact_id: row.contact_id,
        text: row.text,
        due_at: Some(timestamp_of(row.due_at_us)),
        done: row.fired_at_us.is_some(),
        source: row.source,
    }
}

const MAX_SHIFT_ACCOUNTS: usize = 100;

/// A validated shift; the message names the offending field.
fn shift_from(shift: Shift) -> Result<store::shifts::ShiftRow, Error> {
    required("shift.user_id", &shift.user_id)?;
    short("shift.user_id", &shift.user_id)?;
    short("shift.shift_id", &shift.shift_id)?;
    if shift.channel_account_ids.is_empty() || shift.channel_account_ids.len() > MAX_SHIFT_ACCOUNTS
    {
        return Err(Error::InvalidArgument(format!(
            "invalid shift.channel_account_ids: 1 to {MAX_SHIFT_ACCOUNTS}"
        )));
    }
    for (index, account) in shift.channel_account_ids.iter().enumerate() {
        required(&format!("shift.channel_account_ids[{index}]"), account)?;
        short(&format!("shift.channel_account_ids[{index}]"), account)?;
        if account.contains(',') {
            return Err(Error::InvalidArgument(format!(
                "invalid shift.channel_account_ids[{index}]: no commas"
            )));
        }
    }
    if shift.weekdays.is_empty() || shift.weekdays.iter().any(|day| !(1..=7).contains(day)) {
        return Err(Error::InvalidArgument(
            "invalid shift.weekdays: 1 (Monday) to 7 (Sunday)".into(),
        ));
    }
    for (field, value) in [
        ("shift.starts_at", &shift.starts_at),
        ("shift.ends_at", &shift.ends_at),
    ] {
        if crate::sla::parse_time(value).is_none() {
            return Err(Error::InvalidArgument(format!(
                "invalid {field} \"{value}\": HH:MM"
            )));
        }
    }
    let mut days = shift.weekdays.clone();
    days.sort_unstable();
    days.dedup();
    let mut accounts = String::from(",");
    for account in &shift.channel_account_ids {
        accounts.push_str(account);
        accounts.push(',');
    }
    Ok(store::shifts::ShiftRow {
        shift_id: if shift.shift_id.is_empty() {
            Uuid::now_v7().to_string()
        } else {
            shift.shift_id
        },
        user_id: shift.user_id,
        channel_account_ids: accounts,
        weekdays: days
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        starts_at: shift.starts_at,
        ends_at: shift.ends_at,
    })
}

fn shift_to_pb(row: store::shifts::ShiftRow) -> Shift {
    Shift {
        channel_account_ids: row.accounts(),
        weekdays: row.days(),
        shift_id: row.shift_id,
        user_id: row.user_id,
        starts_at: row.starts_at,
        ends_at: row.ends_at,
    }
}

fn credential<T>(request: &Request<T>) -> Credential {
    request.metadata().get("authorization").cloned()
}

#[tonic::async_trait]
impl AssignmentService for Api {
    #[tracing::instrument(skip_all)]
    async fn assign(
        &self,
        request: Request<AssignRequest>,
    ) -> Result<Response<AssignResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_MANAGE)?;
        let credential = credential(&request);
        let request = request.into_inner();
        required("conversation_id", &request.conversation_id)?;
        required("owner_user_id", &request.owner_user_id)?;
        bounded("reason", &request.reason)?;
        let response = self
            .assign_one(
                caller,
                credential,
                &request.conversation_id,
                &request.owner_user_id,
                &request.reason,
            )
            .await?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn transfer(
        &self,
        request: Request<TransferRequest>,
    ) -> Result<Response<AssignResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_MANAGE)?;
        let credential = credential(&request);
        let request = request.into_inner();
        required("conversation_id", &request.conversation_id)?;
        required("to_user_id", &request.to_user_id)?;
        required("note", &request.note)?;
        bounded("note", &request.note)?;
        let response = self
            .assign_one(
                caller,
                credential,
                &request.conversation_id,
                &request.to_user_id,
                &request.note,
            )
            .await?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn bulk_reassign(
        &self,
        request: Request<BulkReassignRequest>,
    ) -> Result<Response<BulkReassignResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_MANAGE)?;
        let credential = credential(&request);
        let request = request.into_inner();
        if request.conversation_ids.is_empty() {
            return Err(
                Error::InvalidArgument("missing conversation_ids: at least one".into()).into(),
            );
        }
        if request.conversation_ids.len() > MAX_BULK {
            return Err(Error::InvalidArgument(format!(
                "invalid conversation_ids: at most {MAX_BULK} at once"
            ))
            .into());
        }
        for (index, id) in request.conversation_ids.iter().enumerate() {
            required(&format!("conversation_ids[{index}]"), id)?;
        }
        required("to_user_id", &request.to_user_id)?;
        bounded("reason", &request.reason)?;
        let mut ids = request.conversation_ids.clone();
        ids.sort();
        ids.dedup();
        let changes = self
            .move_conversations(
                &caller,
                &credential,
                &ids,
                &request.to_user_id,
                &request.reason,
            )
            .await?;
        Ok(Response::new(BulkReassignResponse {
            moved: u32::try_from(changes.len()).unwrap_or(u32::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn offboard_staff(
        &self,
        request: Request<OffboardStaffRequest>,
    ) -> Result<Response<OffboardStaffResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_MANAGE)?;
        let credential = credential(&request);
        let request = request.into_inner();
        let (leaver, heirs) = self
            .offboarding_parties(&caller, &credential, &request)
            .await?;
        // The handover runs in its own task: a caller that hangs up (or times out) does not
        // cut it off between two steps; a second call then finds it finished or resumes it.
        let api = self.clone();
        let report =
            tokio::spawn(async move { api.offboard(&caller, &credential, &leaver, &heirs).await })
                .await
                .map_err(|_| Status::internal("the handover task failed"))??;
        Ok(Response::new(report))
    }

    #[tracing::instrument(skip_all)]
    async fn set_availability(
        &self,
        request: Request<SetAvailabilityRequest>,
    ) -> Result<Response<SetAvailabilityResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        // Empty means "me"; setting someone else's is a manager's act.
        let user_id = if request.user_id.is_empty() {
            caller.user_id.clone()
        } else {
            request.user_id.clone()
        };
        if user_id != caller.user_id {
            caller.require(Permission::ASSIGNMENT_MANAGE)?;
        }
        let name = match Availability::try_from(request.availability) {
            Ok(Availability::Online) => "online",
            Ok(Availability::Away) => "away",
            Ok(Availability::Offline) => "offline",
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "invalid availability {}: online, away or offline",
                    request.availability
                ))
                .into());
            }
        };
        store::set_availability(
            &self.database,
            &caller.tenant_id,
            &user_id,
            name,
            &caller.user_id,
        )
        .await?;
        // Coming online may be what the queue was waiting for.
        self.router.wake();
        Ok(Response::new(SetAvailabilityResponse {
            availability: request.availability,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_ownership_history(
        &self,
        request: Request<GetOwnershipHistoryRequest>,
    ) -> Result<Response<GetOwnershipHistoryResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_READ)?;
        let credential = credential(&request);
        let request = request.into_inner();
        required("conversation_id", &request.conversation_id)?;
        // Visibility is message-store's: the history of a conversation the caller cannot
        // see is NotFound as well.
        self.visible_conversation(&credential, &request.conversation_id)
            .await?;
        let page = request.page.unwrap_or_default();
        let size = match page.page_size {
            0 => DEFAULT_PAGE,
            size => size.min(MAX_PAGE),
        };
        let offset: i64 = if page.cursor.is_empty() {
            0
        } else {
            page.cursor
                .parse()
                .ok()
                .filter(|offset: &i64| *offset >= 0)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("invalid page.cursor \"{}\"", page.cursor))
                })?
        };
        let mut rows = store::ownership_history(
            &self.database,
            &caller.tenant_id,
            &request.conversation_id,
            offset,
            i64::from(size) + 1,
        )
        .await?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_cursor = if more {
            (offset + i64::from(size)).to_string()
        } else {
            String::new()
        };
        Ok(Response::new(GetOwnershipHistoryResponse {
            changes: rows
                .into_iter()
                .map(|change| PbChange {
                    owner_user_id: change.owner_user_id.unwrap_or_default(),
                    previous_owner_user_id: change.previous_owner.unwrap_or_default(),
                    actor: change.actor,
                    reason: change.reason,
                    at: Some(prost_types::Timestamp {
                        seconds: change.at.timestamp(),
                        nanos: i32::try_from(change.at.timestamp_subsec_nanos()).unwrap_or(0),
                    }),
                })
                .collect(),
            page: Some(PageResponse { next_cursor }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_routing_policy(
        &self,
        request: Request<SetRoutingPolicyRequest>,
    ) -> Result<Response<RoutingPolicy>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_MANAGE)?;
        let policy = request
            .into_inner()
            .policy
            .ok_or_else(|| Error::InvalidArgument("missing policy".into()))?;
        let policy = policy_from(policy)?;
        // A supervisor routes within their own teams; the tenant's whole workforce is an
        // admin's to route.
        if caller.role != giao_authz::Role::Admin {
            let teams = std::iter::once(&policy.team_id)
                .chain(policy.rules.iter().map(|rule| &rule.team_id))
                .filter(|team| !team.is_empty());
            let mut named = false;
            for team in teams {
                named = true;
                if !caller.team_ids.contains(team) {
                    return Err(Status::permission_denied(format!(
                        "team {team} is not one of your teams"
                    )));
                }
            }
            if !named || policy.team_id.is_empty() {
                return Err(Status::permission_denied(
                    "only an admin may route to every agent of the tenant: set policy.team_id",
                ));
            }
        }
        store::routing::put_policy(&self.database, &caller.tenant_id, &policy).await?;
        self.router.wake();
        Ok(Response::new(policy_to_pb(policy)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_routing_policies(
        &self,
        request: Request<ListRoutingPoliciesRequest>,
    ) -> Result<Response<ListRoutingPoliciesResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_READ)?;
        let page = request.into_inner().page.unwrap_or_default();
        let size = match page.page_size {
            0 => DEFAULT_PAGE,
            size => size.min(MAX_PAGE),
        };
        // The default policy's account id is empty, so cursors carry a prefix.
        let after = if page.cursor.is_empty() {
            None
        } else {
            Some(page.cursor.strip_prefix("a:").ok_or_else(|| {
                Error::InvalidArgument(format!("invalid page.cursor \"{}\"", page.cursor))
            })?)
        };
        let mut policies = store::routing::list_policies(
            &self.database,
            &caller.tenant_id,
            after,
            i64::from(size) + 1,
        )
        .await?;
        let more = policies.len() > size as usize;
        policies.truncate(size as usize);
        let next_cursor = match policies.last() {
            Some(last) if more => format!("a:{}", last.channel_account_id),
            _ => String::new(),
        };
        Ok(Response::new(ListRoutingPoliciesResponse {
            policies: policies.into_iter().map(policy_to_pb).collect(),
            page: Some(PageResponse { next_cursor }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_capacity(
        &self,
        request: Request<SetCapacityRequest>,
    ) -> Result<Response<SetCapacityResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_MANAGE)?;
        let request = request.into_inner();
        required("user_id", &request.user_id)?;
        short("user_id", &request.user_id)?;
        if request.max_open > MAX_CAPACITY {
            return Err(Error::InvalidArgument(format!(
                "invalid max_open: at most {MAX_CAPACITY}"
            ))
            .into());
        }
        store::routing::set_capacity(
            &self.database,
            &caller.tenant_id,
            &request.user_id,
            i64::from(request.max_open),
        )
        .await?;
        self.router.wake();
        Ok(Response::new(SetCapacityResponse {
            max_open: request.max_open,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn sync_roster(
        &self,
        request: Request<SyncRosterRequest>,
    ) -> Result<Response<SyncRosterResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_MANAGE)?;
        // The tenant's service key lists users: managers trigger a sync without holding
        // users.manage themselves.
        let credential = self.router.credential(&caller.tenant_id).ok_or_else(|| {
            Status::failed_precondition(
                "no service key for this tenant: set routing.tenant_api_keys",
            )
        })?;
        let (users, active) = self
            .router
            .sync_roster(&caller.tenant_id, &credential)
            .await?;
        Ok(Response::new(SyncRosterResponse { users, active }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_sla_policy(
        &self,
        request: Request<SetSlaPolicyRequest>,
    ) -> Result<Response<SlaPolicy>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_MANAGE)?;
        let policy = request
            .into_inner()
            .policy
            .ok_or_else(|| Error::InvalidArgument("missing policy".into()))?;
        let row = sla_policy_from(policy.clone())?;
        // Response targets are the company's promise to every customer: an admin's call.
        if caller.role != giao_authz::Role::Admin {
            return Err(Status::permission_denied("only an admin sets SLA policies"));
        }
        store::sla::put_policy(&self.database, &caller.tenant_id, &row).await?;
        Ok(Response::new(SlaPolicy {
            time_zone: row.time_zone,
            ..policy
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_unattended(
        &self,
        request: Request<ListUnattendedRequest>,
    ) -> Result<Response<ListUnattendedResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_READ)?;
        let request = request.into_inner();
        short("team_id", &request.team_id)?;
        // The same visibility as message-store's: agents their own, supervisors their own
        // and their teams', everyone else the tenant.
        let scope = match caller.role {
            giao_authz::Role::Agent => Scope::Own(caller.user_id.clone()),
            giao_authz::Role::Supervisor => Scope::Teams {
                user_id: caller.user_id.clone(),
                team_ids: caller.team_ids.clone(),
            },
            _ => Scope::Tenant,
        };
        let (size, after) = keyset_page(request.page.unwrap_or_default())?;
        let mut rows = store::sla::unattended(
            &self.database,
            &caller.tenant_id,
            &scope,
            &request.team_id,
            after,
            i64::from(size) + 1,
        )
        .await?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_cursor = match rows.last() {
            Some(last) if more => format!("{}:{}", last.waiting_since_us, last.conversation_id),
            _ => String::new(),
        };
        let now = Utc::now().timestamp_micros();
        Ok(Response::new(ListUnattendedResponse {
            conversations: rows
                .into_iter()
                .map(|row| UnattendedConversation {
                    sla_state: sla_state(
                        row.waiting_since_us,
                        row.due_at_us,
                        row.breached_at_us.is_some(),
                        now,
                    ) as i32,
                    sla_due_at: row.due_at_us.map(timestamp_of),
                    waiting_since: Some(timestamp_of(row.waiting_since_us)),
                    conversation_id: row.conversation_id,
                    owner_user_id: row.owner_user_id,
                })
                .collect(),
            page: Some(PageResponse { next_cursor }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_reminder(
        &self,
        request: Request<CreateReminderRequest>,
    ) -> Result<Response<Reminder>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_WRITE)?;
        let credential = credential(&request);
        let request = request.into_inner();
        let reminder = request
            .reminder
            .ok_or_else(|| Error::InvalidArgument("missing reminder".into()))?;
        required("reminder.text", &reminder.text)?;
        bounded("reminder.text", &reminder.text)?;
        short("reminder.conversation_id", &reminder.conversation_id)?;
        short("reminder.contact_id", &reminder.contact_id)?;
        short("idempotency_key", &request.idempotency_key)?;
        let due = reminder
            .due_at
            .ok_or_else(|| Error::InvalidArgument("missing reminder.due_at".into()))?;
        let now = Utc::now().timestamp();
        if due.seconds > now + MAX_REMINDER_AHEAD_SECS || due.nanos < 0 {
            return Err(Error::InvalidArgument(
                "invalid reminder.due_at: within five years".into(),
            )
            .into());
        }
        // Empty means "me"; reminding someone else is a manager's act.
        let user_id = if reminder.user_id.is_empty() {
            caller.user_id.clone()
        } else {
            short("reminder.user_id", &reminder.user_id)?;
            reminder.user_id.clone()
        };
        if user_id != caller.user_id {
            caller.require(Permission::ASSIGNMENT_MANAGE)?;
        }
        // A reminder about a conversation the caller cannot see is NotFound, as the
        // conversation is; its contact is taken from the conversation.
        let mut contact_id = reminder.contact_id.clone();
        if !reminder.conversation_id.is_empty() {
            let conversation = self
                .visible_conversation(&credential, &reminder.conversation_id)
                .await?;
            contact_id = conversation.contact_id;
        }
        let stored = store::reminders::create(
            &self.database,
            &caller.tenant_id,
            &store::reminders::NewReminder {
                reminder_id: Uuid::now_v7().to_string(),
                user_id,
                conversation_id: reminder.conversation_id,
                contact_id,
                text: reminder.text,
                due_at_us: due.seconds * 1_000_000 + i64::from(due.nanos / 1_000),
                source: "manual".into(),
                quiet_secs: 0,
                created_by: caller.user_id.clone(),
                idempotency_key: request.idempotency_key,
            },
        )
        .await?
        .ok_or_else(|| Status::internal("the reminder was not stored"))?;
        Ok(Response::new(reminder_to_pb(stored)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_reminders(
        &self,
        request: Request<ListRemindersRequest>,
    ) -> Result<Response<ListRemindersResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_READ)?;
        let request = request.into_inner();
        short("user_id", &request.user_id)?;
        let user_id = if request.user_id.is_empty() {
            caller.user_id.clone()
        } else {
            request.user_id.clone()
        };
        // Someone else's reminders are for those who manage assignments (and auditors).
        if user_id != caller.user_id
            && !(caller.has(Permission::ASSIGNMENT_MANAGE)
                || caller.role == giao_authz::Role::Auditor)
        {
            return Err(Status::permission_denied(
                "permission assignment.manage required to list another user's reminders",
            ));
        }
        let (size, after) = keyset_page(request.page.unwrap_or_default())?;
        let mut rows = store::reminders::list(
            &self.database,
            &caller.tenant_id,
            &user_id,
            after,
            i64::from(size) + 1,
        )
        .await?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_cursor = match rows.last() {
            Some(last) if more => format!("{}:{}", last.due_at_us, last.reminder_id),
            _ => String::new(),
        };
        Ok(Response::new(ListRemindersResponse {
            reminders: rows.into_iter().map(reminder_to_pb).collect(),
            page: Some(PageResponse { next_cursor }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_follow_up_rule(
        &self,
        request: Request<SetFollowUpRuleRequest>,
    ) -> Result<Response<FollowUpRule>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_MANAGE)?;
        let rule = request
            .into_inner()
            .rule
            .ok_or_else(|| Error::InvalidArgument("missing rule".into()))?;
        required("rule.rule_id", &rule.rule_id)?;
        short("rule.rule_id", &rule.rule_id)?;
        required("rule.care_status", &rule.care_status)?;
        short("rule.care_status", &rule.care_status)?;
        required("rule.text", &rule.text)?;
        bounded("rule.text", &rule.text)?;
        if rule.quiet_secs == 0 || rule.quiet_secs > MAX_SLA_SECS * 12 {
            return Err(Error::InvalidArgument(format!(
                "invalid rule.quiet_secs: 1 to {}",
                MAX_SLA_SECS * 12
            ))
            .into());
        }
        store::reminders::put_rule(
            &self.database,
            &caller.tenant_id,
            &store::reminders::FollowUpRuleRow {
                rule_id: rule.rule_id.clone(),
                care_status: rule.care_status.clone(),
                quiet_secs: i64::from(rule.quiet_secs),
                text: rule.text.clone(),
            },
        )
        .await?;
        Ok(Response::new(rule))
    }

    #[tracing::instrument(skip_all)]
    async fn set_shift(
        &self,
        request: Request<SetShiftRequest>,
    ) -> Result<Response<Shift>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_MANAGE)?;
        let shift = request
            .into_inner()
            .shift
            .ok_or_else(|| Error::InvalidArgument("missing shift".into()))?;
        let row = shift_from(shift)?;
        let tenant = caller.tenant_id.as_str();
        // Checked and stored under the tenant's routing lock, so two overlapping shifts set
        // at once cannot both pass.
        self.router
            .locked(tenant, async {
                let theirs = store::shifts::of_user(&self.database, tenant, &row.user_id).await?;
                if let Some((conflict, day, at)) = row.first_overlap(&theirs) {
                    return Err(Error::InvalidArgument(format!(
                        "invalid shift.starts_at: {} to {} on weekdays {} overlaps shift \"{}\" \
                         of the same user ({} to {} on weekdays {}) on weekday {day} at {}",
                        row.starts_at,
                        row.ends_at,
                        row.weekdays,
                        conflict.shift_id,
                        conflict.starts_at,
                        conflict.ends_at,
                        conflict.weekdays,
                        at.format("%H:%M"),
                    )));
                }
                store::shifts::put(&self.database, tenant, &row).await
            })
            .await?;
        // A changed shift may change who is on shift now: that is a shift change.
        self.router.wake();
        Ok(Response::new(shift_to_pb(row)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_shifts(
        &self,
        request: Request<ListShiftsRequest>,
    ) -> Result<Response<ListShiftsResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_READ)?;
        let request = request.into_inner();
        short("user_id", &request.user_id)?;
        // Agents see their own shifts; the rota is for those who manage it (and auditors).
        let user_id = if caller.role == giao_authz::Role::Agent {
            if !request.user_id.is_empty() && request.user_id != caller.user_id {
                return Err(Status::permission_denied(
                    "permission assignment.manage required to list another user's shifts",
                ));
            }
            caller.user_id.clone()
        } else {
            request.user_id.clone()
        };
        let page = request.page.unwrap_or_default();
        let size = match page.page_size {
            0 => DEFAULT_PAGE,
            size => size.min(MAX_PAGE),
        };
        let mut rows = store::shifts::list(
            &self.database,
            &caller.tenant_id,
            &user_id,
            &page.cursor,
            i64::from(size) + 1,
        )
        .await?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_cursor = match rows.last() {
            Some(last) if more => last.shift_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListShiftsResponse {
            shifts: rows.into_iter().map(shift_to_pb).collect(),
            page: Some(PageResponse { next_cursor }),
        }))
    }
}

/// Page size and the `<micros>:<id>` position of a keyset-paged list.
fn keyset_page(
    page: giao_proto::common::PageRequest,
) -> Result<(u32, Option<(i64, String)>), Error> {
    let size = match page.page_size {
        0 => DEFAULT_PAGE,
        size => size.min(MAX_PAGE),
    };
    if page.cursor.is_empty() {
        return Ok((size, None));
    }
    let parsed = page
        .cursor
        .split_once(':')
        .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())));
    let after = parsed.ok_or_else(|| {
        Error::InvalidArgument(format!("invalid page.cursor \"{}\"", page.cursor))
    })?;
    Ok((size, Some(after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teammate(user_id: &str, teams: &[&str], open: i64, max_open: Option<i64>) -> Teammate {
        Teammate {
            user_id: user_id.into(),
            team_ids: teams.iter().map(|team| team.to_string()).collect(),
            open,
            max_open,
        }
    }

    fn conversation(id: &str, contact: &str, team: &str) -> Conversation {
        Conversation {
            conversation_id: id.into(),
            contact_id: contact.into(),
            team_id: team.into(),
            owner_user_id: "leaver".into(),
            status: ConversationStatus::Open as i32,
            ..Default::default()
        }
    }

    fn planner(members: Vec<Teammate>) -> TeamPlanner {
        TeamPlanner {
            team_ids: vec!["sales".into(), "support".into()],
            members,
            policies: HashMap::new(),
            last: HashMap::new(),
            by_contact: HashMap::new(),
        }
    }

    fn owners(groups: &[(String, Vec<Conversation>)]) -> BTreeMap<String, String> {
        groups
            .iter()
            .flat_map(|(owner, group)| {
                group
                    .iter()
                    .map(move |c| (c.conversation_id.clone(), owner.clone()))
            })
            .collect()
    }

    #[test]
    fn a_team_handover_spreads_by_load_capacity_team_and_customer() {
        let mut plan = planner(vec![
            teammate("a", &["sales"], 0, None),
            teammate("b", &["sales"], 0, Some(1)),
            teammate("c", &["support"], 5, None),
        ]);
        let page = vec![
            conversation("1", "k1", "sales"),
            conversation("2", "k1", "sales"),
            conversation("3", "k2", "sales"),
            conversation("4", "k3", "sales"),
            conversation("5", "k4", "support"),
            conversation("6", "k5", ""),
        ];
        let promised = HashMap::from([("4".to_string(), "c".to_string())]);
        let owners = owners(&plan.plan(page, &promised));
        // The customer's two conversations stay together with the least loaded.
        assert_eq!(owners["1"], "a");
        assert_eq!(owners["2"], "a");
        // b has room for one.
        assert_eq!(owners["3"], "b");
        // An interrupted run's choice is kept.
        assert_eq!(owners["4"], "c");
        // A support conversation stays in support.
        assert_eq!(owners["5"], "c");
        // No team of the leaver's: anyone of them; b is full, a has 2, c has 7.
        assert_eq!(owners["6"], "a");
    }

    #[test]
    fn round_robin_turns_and_full_teams_still_take_the_work() {
        let mut plan = planner(vec![
            teammate("a", &["sales"], 3, Some(1)),
            teammate("b", &["sales"], 3, Some(1)),
        ]);
        plan.policies
            .insert("sales".into(), (Strategy::RoundRobin, 0));
        let page = (1..=4)
            .map(|n| conversation(&n.to_string(), &format!("k{n}"), "sales"))
            .collect();
        let owners = owners(&plan.plan(page, &HashMap::new()));
        let sequence: Vec<&str> = (1..=4).map(|n| owners[&n.to_string()].as_str()).collect();
        assert_eq!(sequence, ["a", "b", "a", "b"]);
        assert_eq!(plan.deputy(&["b".into()]), "b");
        assert_eq!(plan.deputy(&["outsider".into()]), "a");
    }
}
