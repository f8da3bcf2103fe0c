//! SLA clocks and reminders. Clocks are started and stopped by MessageStored (a customer
//! writes; staff answer); follow-up reminders are created by ContactUpdated (a care status
//! with a rule) and pushed back by every message sent to the customer. Both are fired by a
//! scheduler that every replica runs. A replica claims due clocks with a lease
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so replicas never claim the same row), publishes
//! SlaBreached with an id derived from the wait, then records the breach; a replica that
//! dies between the two leaves a lease that expires, and the replica that takes over
//! publishes the same event id, which the bus and consumers drop.

use std::{str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, NaiveDate, Utc};
use futures::FutureExt;
use giao_bus::{
    ConsumerSpec, Delivery, EventBus, HandlerOutcome,
    envelope::{self, EventPublisher},
};
use giao_proto::{
    common::{Direction, SenderKind},
    events::{ContactUpdated, MessageStored, ReminderDue, SlaBreached, envelope::Payload},
};
use giao_storage::Database;
use tokio_util::sync::CancellationToken;

use crate::{
    error::Error,
    router::Router,
    sla::{BusinessHours, Calendar, DEFAULT_TIME_ZONE, parse_time},
    store::{
        self,
        sla::{DueClock, SlaPolicyRow},
    },
};

/// Durable consumers shared by every replica.
const SLA_CONSUMER: &str = "assignment-sla";
const FOLLOW_UP_CONSUMER: &str = "assignment-follow-up";
/// Clocks claimed per scheduler pass.
const CLAIM_BATCH: i64 = 100;
/// How long the log of timer fires keeps a fire, and how often it is pruned.
const FIRES_KEPT_DAYS: i64 = 30;
const FIRES_PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// The calendar of a stored policy (a bad stored value falls back to the default).
pub fn calendar_of(policy: &SlaPolicyRow) -> Calendar {
    let time_zone = chrono_tz::Tz::from_str(if policy.time_zone.is_empty() {
        DEFAULT_TIME_ZONE
    } else {
        &policy.time_zone
    })
    .unwrap_or(chrono_tz::Asia::Ho_Chi_Minh);
    let hours = match (parse_time(&policy.opens_at), parse_time(&policy.closes_at)) {
        (Some(opens_at), Some(closes_at)) => Some(BusinessHours {
            weekdays: policy
                .weekdays
                .split(',')
                .filter_map(|day| day.parse().ok())
                .collect(),
            opens_at,
            closes_at,
        }),
        _ => None,
    };
    Calendar {
        time_zone,
        hours,
        holidays: policy
            .holidays
            .split(',')
            .filter_map(|day| NaiveDate::parse_from_str(day, "%Y-%m-%d").ok())
            .collect(),
    }
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

#[derive(Clone)]
pub struct Timers {
    database: Database,
    publisher: EventPublisher,
    /// Re-assigns conversations whose owner has not answered in time.
    router: Router,
    /// This replica's name in leases.
    replica: String,
    tick: Duration,
    lease: Duration,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Timers {
    pub fn new(
        database: Database,
        publisher: EventPublisher,
        router: Router,
        tick: Duration,
        lease: Duration,
    ) -> Self {
        Self {
            database,
            publisher,
            router,
            replica: uuid::Uuid::now_v7().to_string(),
            tick,
            lease,
        }
    }

    /// Starts or stops the conversation's clock for one stored message. Idempotent: a
    /// redelivered message finds the clock already in the state it leads to.
    pub async fn message_stored(
        &self,
        tenant_id: &str,
        stored: &MessageStored,
    ) -> Result<(), Error> {
        let Some(sent_at) = stored.sent_at.as_ref().and_then(|at| {
            DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
        }) else {
            return Ok(());
        };
        let direction = Direction::try_from(stored.direction).unwrap_or(Direction::Unspecified);
        let sender = SenderKind::try_from(stored.sender_kind).unwrap_or(SenderKind::Unspecified);
        match direction {
            Direction::Inbound => {
                store::routing::customer_wrote(
                    &self.database,
                    tenant_id,
                    &stored.conversation_id,
                    micros(sent_at),
                )
                .await?;
                let policy =
                    store::sla::policy_for(&self.database, tenant_id, &stored.channel_account_id)
                        .await?;
                let reassign_at = policy
                    .as_ref()
                    .filter(|policy| policy.reassign_after_secs > 0)
                    .map(|policy| micros(sent_at) + policy.reassign_after_secs * 1_000_000);
                let (first, next) = match &policy {
                    Some(policy) => {
                        let calendar = calendar_of(policy);
                        let due = |secs: i64| {
                            (secs > 0).then(|| {
                                micros(calendar.due_at(sent_at, chrono::Duration::seconds(secs)))
                            })
                        };
                        (
                            due(policy.first_response_secs),
                            due(policy.next_response_secs),
                        )
                    }
                    None => (None, None),
                };
                store::sla::customer_wrote(
                    &self.database,
                    tenant_id,
                    &stored.conversation_id,
                    &stored.channel_account_id,
                    &stored.owner_user_id,
                    &stored.team_id,
                    micros(sent_at),
                    first,
                    next,
                    reassign_at,
                )
                .await
            }
            // Automation (auto-replies, broadcasts) never counts as a human response.
            Direction::Outbound if sender != SenderKind::Automation => {
                store::reminders::push_follow_ups(
                    &self.database,
                    tenant_id,
                    &stored.conversation_id,
                    micros(sent_at),
                )
                .await?;
                store::sla::staff_replied(
                    &self.database,
                    tenant_id,
                    &stored.conversation_id,
                    &stored.channel_account_id,
                    micros(sent_at),
                )
                .await
            }
            _ => Ok(()),
        }
    }

    /// A contact's care status changed: earlier follow-ups go, and each rule for the new
    /// status reminds the owner of each of the contact's open conversations after its quiet
    /// period. Ids derive from the event, so a redelivery creates nothing twice.
    pub async fn contact_updated(
        &self,
        tenant_id: &str,
        event_id: &str,
        updated: &ContactUpdated,
    ) -> Result<(), Error> {
        if !updated
            .changed_fields
            .iter()
            .any(|field| field == "care_status")
        {
            return Ok(());
        }
        store::reminders::drop_follow_ups(&self.database, tenant_id, &updated.contact_id).await?;
        let rules =
            store::reminders::rules_for(&self.database, tenant_id, &updated.care_status).await?;
        if rules.is_empty() {
            return Ok(());
        }
        let conversations =
            store::reminders::owned_conversations(&self.database, tenant_id, &updated.contact_id)
                .await?;
        let now = micros(Utc::now());
        for rule in &rules {
            for (conversation_id, owner) in &conversations {
                store::reminders::create(
                    &self.database,
                    tenant_id,
                    &store::reminders::NewReminder {
                        reminder_id: format!("fu-{event_id}-{}-{conversation_id}", rule.rule_id),
                        user_id: owner.clone(),
                        conversation_id: conversation_id.clone(),
                        contact_id: updated.contact_id.clone(),
                        text: rule.text.clone(),
                        due_at_us: now + rule.quiet_secs * 1_000_000,
                        source: format!("follow_up:{}", rule.rule_id),
                        quiet_secs: rule.quiet_secs,
                        created_by: "follow-up".into(),
                        idempotency_key: String::new(),
                    },
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Claims and fires due reminders; returns how many this replica fired.
    pub async fn fire_due_reminders(&self) -> Result<usize, Error> {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(30));
        let claimed = store::reminders::claim_due(
            &self.database,
            &self.replica,
            micros(now),
            micros(now + lease),
            CLAIM_BATCH,
        )
        .await?;
        let mut fired = 0;
        for reminder in claimed {
            let event_id = format!(
                "reminder-due-{}-{}",
                reminder.reminder_id, reminder.due_at_us
            );
            self.record_fire(&reminder.tenant_id, &event_id).await;
            let published = self
                .publisher
                .publish(
                    &reminder.tenant_id,
                    event_id,
                    Payload::ReminderDue(ReminderDue {
                        reminder_id: reminder.reminder_id.clone(),
                        user_id: reminder.user_id.clone(),
                        conversation_id: reminder.conversation_id.clone(),
                        contact_id: reminder.contact_id.clone(),
                        text: reminder.text.clone(),
                        due_at: Some(timestamp(reminder.due_at_us)),
                    }),
                )
                .await;
            if let Err(error) = published {
                // Left claimed: the lease runs out and a replica fires it again.
                tracing::warn!(reminder_id = %reminder.reminder_id, %error, "cannot fire a reminder yet");
                continue;
            }
            if store::reminders::mark_fired(
                &self.database,
                &reminder,
                &self.replica,
                micros(Utc::now()),
            )
            .await?
            {
                fired += 1;
            }
        }
        Ok(fired)
    }

    /// Claims clocks whose owner has not answered in time and re-assigns them, once per
    /// wait; returns how many moved.
    pub async fn fire_reassignments(&self) -> Result<usize, Error> {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(30));
        let claimed = store::sla::claim_reassign(
            &self.database,
            &self.replica,
            micros(now),
            micros(now + lease),
            CLAIM_BATCH,
        )
        .await?;
        let mut moved = 0;
        for clock in claimed {
            match self
                .router
                .reassign_unanswered(&clock.tenant_id, &clock.conversation_id)
                .await
            {
                Ok(done) => {
                    moved += usize::from(done);
                    store::sla::reassigned(&self.database, &clock, &self.replica).await?;
                }
                // Left claimed: the lease runs out and a replica tries again.
                Err(status) => {
                    tracing::warn!(conversation_id = %clock.conversation_id, %status, "cannot re-assign yet");
                }
            }
        }
        Ok(moved)
    }

    /// Claims and fires what is due; returns how many breaches this replica recorded.
    pub async fn fire_due(&self) -> Result<usize, Error> {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(30));
        let claimed = store::sla::claim_due(
            &self.database,
            &self.replica,
            micros(now),
            micros(now + lease),
            CLAIM_BATCH,
        )
        .await?;
        let mut fired = 0;
        for clock in claimed {
            match self.fire(&clock).await {
                Ok(true) => fired += 1,
                Ok(false) => {}
                // Left claimed: the lease runs out and a replica fires it again.
                Err(error) => {
                    tracing::warn!(conversation_id = %clock.conversation_id, %error, "cannot fire an sla breach yet");
                }
            }
        }
        Ok(fired)
    }

    async fn fire(&self, clock: &DueClock) -> Result<bool, Error> {
        let escalated_to =
            match store::routing::supervisor_of(&self.database, &clock.tenant_id, &clock.team_id)
                .await?
            {
                Some(supervisor) => supervisor,
                None => store::sla::policy_for(
                    &self.database,
                    &clock.tenant_id,
                    &clock.channel_account_id,
                )
                .await?
                .map(|policy| policy.escalate_to_user_id)
                .unwrap_or_default(),
            };
        let breached_at = micros(Utc::now());
        let event_id = format!(
            "sla-breached-{}-{}-{}",
            clock.conversation_id, clock.kind, clock.waiting_since_us
        );
        self.record_fire(&clock.tenant_id, &event_id).await;
        self.publisher
            .publish(
                &clock.tenant_id,
                event_id,
                Payload::SlaBreached(SlaBreached {
                    conversation_id: clock.conversation_id.clone(),
                    owner_user_id: clock.owner_user_id.clone(),
                    team_id: clock.team_id.clone(),
                    policy_id: clock.channel_account_id.clone(),
                    kind: clock.kind.clone(),
                    due_at: Some(timestamp(clock.due_at_us)),
                    breached_at: Some(timestamp(breached_at)),
                    escalated_to_user_id: escalated_to,
                }),
            )
            .await?;
        store::sla::mark_breached(&self.database, clock, &self.replica, breached_at).await
    }

    /// Notes a fire in the log. The log is for diagnosis only: when it cannot be written
    /// the timer still fires, or the rest of the claimed batch would wait for the lease.
    async fn record_fire(&self, tenant_id: &str, event_id: &str) {
        if let Err(error) =
            store::record_fire(&self.database, tenant_id, event_id, &self.replica).await
        {
            tracing::warn!(%event_id, %error, "cannot record a timer fire");
        }
    }

    /// Fires due clocks every tick until `shutdown`.
    pub async fn run_scheduler(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut pruned_at: Option<std::time::Instant> = None;
        loop {
            // The fire log only has to outlive any lease by far: a month is kept, pruned
            // hourly by every replica (the deletes are idempotent).
            if pruned_at.is_none_or(|at| at.elapsed() >= FIRES_PRUNE_EVERY) {
                let before = Utc::now() - chrono::Duration::days(FIRES_KEPT_DAYS);
                match store::prune_fires(&self.database, micros(before)).await {
                    Ok(_) => pruned_at = Some(std::time::Instant::now()),
                    Err(error) => tracing::warn!(%error, "cannot prune the timer fire log"),
                }
            }
            // A pass never outlives its claims: past the lease another replica may take them
            // over, and a stuck call (a database or bus that stopped answering) must not stop
            // the scheduler for good.
            let passes = [
                ("sla scheduler pass", self.fire_due().boxed()),
                ("reminder scheduler pass", self.fire_due_reminders().boxed()),
                ("re-assignment pass", self.fire_reassignments().boxed()),
            ];
            for (pass, run) in passes {
                match tokio::time::timeout(self.lease, run).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "{pass} failed"),
                    Err(_) => tracing::warn!(
                        lease_secs = self.lease.as_secs(),
                        "{pass} did not finish within the lease"
                    ),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.tick) => {}
            }
        }
    }

    /// Consumes MessageStored, alone or in `MessagesStored` batches (clocks, follow-up
    /// pushes), and ContactUpdated (follow-ups) until `shutdown`.
    pub async fn consume(
        self,
        bus: Arc<dyn EventBus>,
        ack_wait: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let spec = ConsumerSpec {
            durable_name: SLA_CONSUMER.into(),
            filter_subjects: vec![envelope::subject_filter("message_stored")],
            ack_wait,
            max_deliver: None,
            inactive_threshold: None,
        };
        let follow_ups = ConsumerSpec {
            durable_name: FOLLOW_UP_CONSUMER.into(),
            filter_subjects: vec![envelope::subject_filter("contact_updated")],
            ack_wait,
            max_deliver: None,
            inactive_threshold: None,
        };
        let timers = self.clone();
        let contacts = giao_bus::run_consumer(
            bus.clone(),
            follow_ups,
            shutdown.clone(),
            move |delivery: &Delivery| {
                let timers = timers.clone();
                let decoded = envelope::decode(delivery);
                async move {
                    let Ok((envelope, _span)) = decoded else {
                        return HandlerOutcome::Poison("undecodable event".into());
                    };
                    let Some(Payload::ContactUpdated(updated)) = envelope.payload else {
                        return HandlerOutcome::Poison("not a contact_updated event".into());
                    };
                    match timers
                        .contact_updated(&envelope.tenant_id, &envelope.event_id, &updated)
                        .await
                    {
                        Ok(()) => HandlerOutcome::Done,
                        Err(error) => HandlerOutcome::Retry(error.to_string()),
                    }
                }
            },
        );
        let messages = giao_bus::run_consumer(bus, spec, shutdown, move |delivery: &Delivery| {
            let timers = self.clone();
            let decoded = envelope::decode(delivery);
            async move {
                let Ok((envelope, _span)) = decoded else {
                    return HandlerOutcome::Poison("undecodable event".into());
                };
                // A batch's entries in order; a failure redelivers the whole batch, and the
                // entries already applied find their clocks in the state they lead to.
                for event in envelope::events_of(envelope) {
                    let Some(Payload::MessageStored(stored)) = event.payload else {
                        return HandlerOutcome::Poison("not a message_stored event".into());
                    };
                    if let Err(error) = timers.message_stored(&event.tenant_id, &stored).await {
                        return HandlerOutcome::Retry(error.to_string());
                    }
                }
                HandlerOutcome::Done
            }
        });
        let (contacts, messages) = tokio::join!(contacts, messages);
        contacts?;
        messages?;
        Ok(())
    }
}
