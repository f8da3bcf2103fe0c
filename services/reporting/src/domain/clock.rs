//! The response clock of one conversation and what each event adds to the aggregates.
//!
//! The rules are the ones written in docs/reporting.md:
//! - the clock starts at the first customer message that nobody has answered yet; more
//!   customer messages in the same burst do not move it;
//! - it stops at the first *human* reply (staff through giao, or the account owner on the
//!   phone); automation and system messages never stop it;
//! - a transfer while the customer waits splits the wait: the previous owner's share ends
//!   at the transfer (counted for them as transferred while waiting), the new owner's share
//!   starts there and is what their response time measures;
//! - the first wait of a conversation is its first response; every wait (the first
//!   included) is a response.
//!
//! [`fold`] is pure: the store loads the state, folds one event, writes the state back and
//! applies the returned operations in the same transaction.

use giao_proto::{
    common::{Direction, SenderKind},
    events::{self, envelope::Payload},
};

use super::{
    sketch,
    time::{Schedule, from_timestamp, hour_of},
};

/// The per-conversation state reporting keeps between events.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct ConversationState {
    pub conversation_id: String,
    pub channel_account_id: String,
    pub contact_id: String,
    pub lead_source: String,
    pub owner_user_id: String,
    pub team_id: String,
    pub opened_at: Option<i64>,
    pub closed_at: Option<i64>,
    /// The first customer message not answered yet (the customer's own view of the wait).
    pub customer_waiting_since: Option<i64>,
    /// Where the current owner's share of the wait started.
    pub segment_started_at: Option<i64>,
    /// 1 while the open wait is the conversation's first.
    pub segment_first: i64,
    /// 1 once an SLA breach was reported during the open wait: its answer does not meet it.
    pub segment_breached: i64,
    /// Wall-clock first response time of the conversation, once answered.
    pub first_response_micros: Option<i64>,
    pub messages_in: i64,
    pub messages_out: i64,
    pub last_message_at: Option<i64>,
}

impl ConversationState {
    pub fn new(conversation_id: &str) -> Self {
        Self {
            conversation_id: conversation_id.to_string(),
            segment_first: 1,
            ..Self::default()
        }
    }

    fn dims(&self) -> Dims {
        Dims {
            user_id: self.owner_user_id.clone(),
            team_id: self.team_id.clone(),
            channel_account_id: self.channel_account_id.clone(),
            lead_source: self.lead_source.clone(),
        }
    }

    fn fill_missing(&mut self, account: &str, contact: &str, lead_source: &str) {
        for (field, value) in [
            (&mut self.channel_account_id, account),
            (&mut self.contact_id, contact),
            (&mut self.lead_source, lead_source),
        ] {
            if field.is_empty() && !value.is_empty() {
                *field = value.to_string();
            }
        }
    }
}

/// The dimensions of an aggregate row; empty strings stand for "none" (an unassigned
/// conversation, an unknown lead source).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dims {
    pub user_id: String,
    pub team_id: String,
    pub channel_account_id: String,
    pub lead_source: String,
}

/// Per-hour counters (columns of the `hourly` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    MessagesIn,
    MessagesOut,
    ConversationsOpened,
    ConversationsAssigned,
    ConversationsClosed,
    FirstResponses,
    Responses,
    SlaMet,
    SlaBreached,
    NewContacts,
    Conversions,
    TransferredWaiting,
    FlaggedMessages,
}

impl Counter {
    pub const ALL: [Counter; 13] = [
        Counter::MessagesIn,
        Counter::MessagesOut,
        Counter::ConversationsOpened,
        Counter::ConversationsAssigned,
        Counter::ConversationsClosed,
        Counter::FirstResponses,
        Counter::Responses,
        Counter::SlaMet,
        Counter::SlaBreached,
        Counter::NewContacts,
        Counter::Conversions,
        Counter::TransferredWaiting,
        Counter::FlaggedMessages,
    ];

    pub fn column(self) -> &'static str {
        match self {
            Counter::MessagesIn => "messages_in",
            Counter::MessagesOut => "messages_out",
            Counter::ConversationsOpened => "conversations_opened",
            Counter::ConversationsAssigned => "conversations_assigned",
            Counter::ConversationsClosed => "conversations_closed",
            Counter::FirstResponses => "first_responses",
            Counter::Responses => "responses",
            Counter::SlaMet => "sla_met",
            Counter::SlaBreached => "sla_breached",
            Counter::NewContacts => "new_contacts",
            Counter::Conversions => "conversions",
            Counter::TransferredWaiting => "transferred_waiting",
            Counter::FlaggedMessages => "flagged_messages",
        }
    }
}

/// Distributions kept as histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    FirstResponse,
    FirstResponseBusiness,
    Response,
    ResponseBusiness,
}

impl SampleKind {
    pub fn name(self) -> &'static str {
        match self {
            SampleKind::FirstResponse => "frt",
            SampleKind::FirstResponseBusiness => "frt_bh",
            SampleKind::Response => "rt",
            SampleKind::ResponseBusiness => "rt_bh",
        }
    }
}

/// Conversation-level facts behind the figures: the drill-down lists them and the
/// conversation counts are `COUNT(DISTINCT conversation_id)` over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// A customer message arrived.
    MessageIn,
    /// A message (human or automation) went out.
    MessageOut,
    /// The agent sent at least one human message: the conversation counts as handled.
    Handled,
    Opened,
    Assigned,
    Closed,
    FirstResponse,
    Response,
    SlaMet,
    SlaBreached,
    Conversion,
    TransferredWaiting,
    Flagged,
}

impl Fact {
    pub const ALL: [Fact; 13] = [
        Fact::MessageIn,
        Fact::MessageOut,
        Fact::Handled,
        Fact::Opened,
        Fact::Assigned,
        Fact::Closed,
        Fact::FirstResponse,
        Fact::Response,
        Fact::SlaMet,
        Fact::SlaBreached,
        Fact::Conversion,
        Fact::TransferredWaiting,
        Fact::Flagged,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fact::MessageIn => "messages_in",
            Fact::MessageOut => "messages_out",
            Fact::Handled => "handled",
            Fact::Opened => "opened",
            Fact::Assigned => "assigned",
            Fact::Closed => "closed",
            Fact::FirstResponse => "first_response",
            Fact::Response => "response",
            Fact::SlaMet => "sla_met",
            Fact::SlaBreached => "sla_breached",
            Fact::Conversion => "conversions",
            Fact::TransferredWaiting => "transferred_waiting",
            Fact::Flagged => "flagged",
        }
    }

    pub fn named(name: &str) -> Option<Fact> {
        Fact::ALL.into_iter().find(|fact| fact.name() == name)
    }
}

/// One change to the aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Count {
        hour: i64,
        dims: Dims,
        counter: Counter,
    },
    Sample {
        hour: i64,
        dims: Dims,
        kind: SampleKind,
        bucket: i64,
    },
    Fact {
        hour: i64,
        dims: Dims,
        fact: Fact,
        conversation_id: String,
    },
    /// A wait starts for `dims.user_id`.
    OpenWait {
        conversation_id: String,
        started_at: i64,
        /// The customer's first unanswered message: `started_at` unless a transfer cut
        /// the wait (long silences are measured from here).
        customer_since: i64,
        dims: Dims,
        first: bool,
    },
    /// The wait that started at `started_at` ends.
    CloseWait {
        conversation_id: String,
        started_at: i64,
        ended_at: i64,
        outcome: &'static str,
    },
    /// A staff member seen in a team (for visibility and "unknown agent").
    KnownUser { user_id: String, team_id: String },
}

/// Settings the fold needs.
#[derive(Debug, Clone)]
pub struct FoldSettings {
    pub schedule: Schedule,
}

fn is_human(sender: i32) -> bool {
    matches!(
        SenderKind::try_from(sender),
        Ok(SenderKind::Staff | SenderKind::AccountOwner)
    )
}

fn count(ops: &mut Vec<Op>, hour: i64, dims: &Dims, counter: Counter) {
    ops.push(Op::Count {
        hour,
        dims: dims.clone(),
        counter,
    });
}

fn fact(ops: &mut Vec<Op>, hour: i64, dims: &Dims, fact: Fact, conversation_id: &str) {
    ops.push(Op::Fact {
        hour,
        dims: dims.clone(),
        fact,
        conversation_id: conversation_id.to_string(),
    });
}

fn known_user(ops: &mut Vec<Op>, user_id: &str, team_id: &str) {
    if !user_id.is_empty() {
        ops.push(Op::KnownUser {
            user_id: user_id.to_string(),
            team_id: team_id.to_string(),
        });
    }
}

/// The conversation an event is about, when it is about one.
pub fn conversation_of(payload: &Payload) -> Option<&str> {
    match payload {
        Payload::MessageStored(event) => Some(&event.conversation_id),
        Payload::ConversationOpened(event) => Some(&event.conversation_id),
        Payload::ConversationAssigned(event) => Some(&event.conversation_id),
        Payload::ConversationClosed(event) => Some(&event.conversation_id),
        Payload::SlaBreached(event) => Some(&event.conversation_id),
        _ => None,
    }
    .filter(|id| !id.is_empty())
    .map(String::as_str)
}

/// Folds one conversation event at `at` (microseconds: the message's sent time, the
/// opening time, or the envelope's time for assignments and closes) into `state`.
pub fn fold(
    state: &mut ConversationState,
    payload: &Payload,
    at: i64,
    settings: &FoldSettings,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let hour = hour_of(at);
    match payload {
        Payload::MessageStored(message) => {
            state.fill_missing(
                &message.channel_account_id,
                &message.contact_id,
                &message.lead_source,
            );
            // The owner moves only with ConversationAssigned, so a transfer is never missed;
            // the message's owner fills in a conversation first seen through its messages.
            if state.owner_user_id.is_empty() && !message.owner_user_id.is_empty() {
                state.owner_user_id = message.owner_user_id.clone();
                state.team_id = message.team_id.clone();
            }
            if state.team_id.is_empty() && !message.team_id.is_empty() {
                state.team_id = message.team_id.clone();
            }
            state.last_message_at = Some(state.last_message_at.map_or(at, |last| last.max(at)));
            let owner = state.dims();
            known_user(&mut ops, &owner.user_id, &owner.team_id);
            let inbound = Direction::try_from(message.direction) == Ok(Direction::Inbound);
            if inbound {
                state.messages_in += 1;
                count(&mut ops, hour, &owner, Counter::MessagesIn);
                fact(
                    &mut ops,
                    hour,
                    &owner,
                    Fact::MessageIn,
                    &state.conversation_id,
                );
                if state.segment_started_at.is_none() {
                    state.customer_waiting_since = Some(at);
                    state.segment_started_at = Some(at);
                    ops.push(Op::OpenWait {
                        conversation_id: state.conversation_id.clone(),
                        started_at: at,
                        customer_since: at,
                        dims: owner,
                        first: state.segment_first == 1,
                    });
                }
                return ops;
            }
            state.messages_out += 1;
            let human = is_human(message.sender_kind);
            // Messages out count for whoever sent them; automation and phone messages
            // without a giao user count for the owner.
            let mut sender = owner.clone();
            if human && !message.sender_user_id.is_empty() {
                sender.user_id = message.sender_user_id.clone();
                known_user(&mut ops, &sender.user_id, &sender.team_id);
            }
            count(&mut ops, hour, &sender, Counter::MessagesOut);
            fact(
                &mut ops,
                hour,
                &sender,
                Fact::MessageOut,
                &state.conversation_id,
            );
            if !human {
                return ops;
            }
            fact(
                &mut ops,
                hour,
                &sender,
                Fact::Handled,
                &state.conversation_id,
            );
            let Some(started) = state.segment_started_at else {
                return ops;
            };
            // The wait is charged to the owner whose share it is; an unowned conversation's
            // wait to whoever answered.
            let charged = if owner.user_id.is_empty() {
                sender.clone()
            } else {
                owner.clone()
            };
            let waited = (at - started).max(0);
            let business = settings.schedule.business_micros(started, at.max(started));
            let mut sample = |kind: SampleKind, micros: i64| {
                ops.push(Op::Sample {
                    hour,
                    dims: charged.clone(),
                    kind,
                    bucket: sketch::bucket_of(micros),
                });
            };
            sample(SampleKind::Response, waited);
            sample(SampleKind::ResponseBusiness, business);
            let first = state.segment_first == 1;
            if first {
                sample(SampleKind::FirstResponse, waited);
                sample(SampleKind::FirstResponseBusiness, business);
            }
            count(&mut ops, hour, &charged, Counter::Responses);
            fact(
                &mut ops,
                hour,
                &charged,
                Fact::Response,
                &state.conversation_id,
            );
            if first {
                count(&mut ops, hour, &charged, Counter::FirstResponses);
                fact(
                    &mut ops,
                    hour,
                    &charged,
                    Fact::FirstResponse,
                    &state.conversation_id,
                );
                if let Some(since) = state.customer_waiting_since {
                    state.first_response_micros = Some((at - since).max(0));
                }
            }
            if state.segment_breached == 0 {
                count(&mut ops, hour, &charged, Counter::SlaMet);
                fact(
                    &mut ops,
                    hour,
                    &charged,
                    Fact::SlaMet,
                    &state.conversation_id,
                );
            }
            ops.push(Op::CloseWait {
                conversation_id: state.conversation_id.clone(),
                started_at: started,
                ended_at: at,
                outcome: "replied",
            });
            state.segment_breached = 0;
            state.segment_started_at = None;
            state.customer_waiting_since = None;
            state.segment_first = 0;
        }
        Payload::ConversationOpened(opened) => {
            state.fill_missing(
                &opened.channel_account_id,
                &opened.contact_id,
                &opened.lead_source,
            );
            if state.opened_at.is_none() {
                state.opened_at = Some(at);
                let dims = state.dims();
                count(&mut ops, hour, &dims, Counter::ConversationsOpened);
                fact(&mut ops, hour, &dims, Fact::Opened, &state.conversation_id);
            }
        }
        Payload::ConversationAssigned(assigned) => {
            if assigned.owner_user_id == state.owner_user_id
                && (assigned.team_id.is_empty() || assigned.team_id == state.team_id)
            {
                return ops;
            }
            let previous = state.dims();
            state.owner_user_id = assigned.owner_user_id.clone();
            if !assigned.team_id.is_empty() {
                state.team_id = assigned.team_id.clone();
            }
            let next = state.dims();
            known_user(&mut ops, &next.user_id, &next.team_id);
            count(&mut ops, hour, &next, Counter::ConversationsAssigned);
            fact(
                &mut ops,
                hour,
                &next,
                Fact::Assigned,
                &state.conversation_id,
            );
            if let Some(started) = state.segment_started_at {
                let cut = at.max(started);
                ops.push(Op::CloseWait {
                    conversation_id: state.conversation_id.clone(),
                    started_at: started,
                    ended_at: cut,
                    outcome: "transferred",
                });
                if !previous.user_id.is_empty() {
                    count(&mut ops, hour, &previous, Counter::TransferredWaiting);
                    fact(
                        &mut ops,
                        hour,
                        &previous,
                        Fact::TransferredWaiting,
                        &state.conversation_id,
                    );
                }
                // Same instant as the cut: the new share must not collide with the old row.
                let start = if cut == started { cut + 1 } else { cut };
                state.segment_started_at = Some(start);
                ops.push(Op::OpenWait {
                    conversation_id: state.conversation_id.clone(),
                    started_at: start,
                    customer_since: state.customer_waiting_since.unwrap_or(started),
                    dims: next,
                    first: state.segment_first == 1,
                });
            }
        }
        Payload::ConversationClosed(_) => {
            state.closed_at = Some(at);
            let dims = state.dims();
            count(&mut ops, hour, &dims, Counter::ConversationsClosed);
            fact(&mut ops, hour, &dims, Fact::Closed, &state.conversation_id);
            if let Some(started) = state.segment_started_at.take() {
                ops.push(Op::CloseWait {
                    conversation_id: state.conversation_id.clone(),
                    started_at: started,
                    ended_at: at.max(started),
                    outcome: "closed",
                });
                state.customer_waiting_since = None;
                state.segment_breached = 0;
            }
        }
        Payload::SlaBreached(breach) => {
            if state.segment_started_at.is_some() {
                state.segment_breached = 1;
            }
            let mut dims = state.dims();
            if !breach.owner_user_id.is_empty() {
                dims.user_id = breach.owner_user_id.clone();
            }
            if !breach.team_id.is_empty() {
                dims.team_id = breach.team_id.clone();
            }
            // Assignment names a policy by its channel account: it stands in for a
            // conversation reporting has not seen yet, so SlaCompliance splits it right.
            if dims.channel_account_id.is_empty() {
                dims.channel_account_id = breach.policy_id.clone();
            }
            known_user(&mut ops, &dims.user_id, &dims.team_id);
            count(&mut ops, hour, &dims, Counter::SlaBreached);
            fact(
                &mut ops,
                hour,
                &dims,
                Fact::SlaBreached,
                &state.conversation_id,
            );
        }
        _ => {}
    }
    ops
}

/// The time an event happened, in microseconds: the payload's own time when it has one,
/// the envelope's otherwise.
pub fn event_time(envelope: &events::Envelope) -> Option<i64> {
    let own = match envelope.payload.as_ref()? {
        Payload::MessageStored(event) => event.sent_at.as_ref(),
        Payload::ConversationOpened(event) => event.opened_at.as_ref(),
        Payload::SlaBreached(event) => event.breached_at.as_ref(),
        Payload::AccountStatusChanged(event) => event.at.as_ref(),
        _ => None,
    };
    own.and_then(from_timestamp)
        .or_else(|| envelope.occurred_at.as_ref().and_then(from_timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::{BusinessHours, parse_zone};

    const MINUTE: i64 = 60_000_000;

    fn settings() -> FoldSettings {
        FoldSettings {
            schedule: Schedule::new(parse_zone("UTC").expect("zone"), &BusinessHours::default())
                .expect("hours"),
        }
    }

    fn message(direction: Direction, sender: SenderKind, user: &str) -> Payload {
        Payload::MessageStored(events::MessageStored {
            conversation_id: "c1".into(),
            channel_account_id: "oa".into(),
            direction: direction as i32,
            sender_kind: sender as i32,
            sender_user_id: user.into(),
            owner_user_id: "ann".into(),
            ..Default::default()
        })
    }

    fn samples(ops: &[Op], kind: SampleKind) -> Vec<(String, i64)> {
        ops.iter()
            .filter_map(|op| match op {
                Op::Sample {
                    dims,
                    kind: k,
                    bucket,
                    ..
                } if *k == kind => Some((dims.user_id.clone(), *bucket)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_burst_starts_the_clock_at_its_first_message_and_automation_does_not_stop_it() {
        let settings = settings();
        let mut state = ConversationState::new("c1");
        let customer = message(Direction::Inbound, SenderKind::Customer, "");
        fold(&mut state, &customer, 0, &settings);
        fold(&mut state, &customer, MINUTE, &settings);
        let bot = fold(
            &mut state,
            &message(Direction::Outbound, SenderKind::Automation, ""),
            2 * MINUTE,
            &settings,
        );
        assert!(samples(&bot, SampleKind::Response).is_empty());
        let reply = fold(
            &mut state,
            &message(Direction::Outbound, SenderKind::Staff, "ann"),
            5 * MINUTE,
            &settings,
        );
        assert_eq!(
            samples(&reply, SampleKind::FirstResponse),
            vec![("ann".to_string(), sketch::bucket_of(5 * MINUTE))]
        );
        assert_eq!(state.first_response_micros, Some(5 * MINUTE));
        // The next wait is a response, not a first response.
        fold(&mut state, &customer, 10 * MINUTE, &settings);
        let second = fold(
            &mut state,
            &message(Direction::Outbound, SenderKind::AccountOwner, ""),
            12 * MINUTE,
            &settings,
        );
        assert!(samples(&second, SampleKind::FirstResponse).is_empty());
        assert_eq!(
            samples(&second, SampleKind::Response),
            vec![("ann".to_string(), sketch::bucket_of(2 * MINUTE))]
        );
    }

    #[test]
    fn a_transfer_splits_the_wait_between_owners() {
        let settings = settings();
        let mut state = ConversationState::new("c1");
        fold(
            &mut state,
            &message(Direction::Inbound, SenderKind::Customer, ""),
            0,
            &settings,
        );
        let transfer = fold(
            &mut state,
            &Payload::ConversationAssigned(events::ConversationAssigned {
                conversation_id: "c1".into(),
                owner_user_id: "bob".into(),
                previous_owner_user_id: "ann".into(),
                ..Default::default()
            }),
            4 * MINUTE,
            &settings,
        );
        // Ann's share ends at the transfer: counted for her, without a response sample.
        assert!(transfer.contains(&Op::Count {
            hour: 0,
            dims: Dims {
                user_id: "ann".into(),
                channel_account_id: "oa".into(),
                ..Dims::default()
            },
            counter: Counter::TransferredWaiting,
        }));
        assert!(samples(&transfer, SampleKind::Response).is_empty());
        assert!(transfer.contains(&Op::OpenWait {
            conversation_id: "c1".into(),
            started_at: 4 * MINUTE,
            customer_since: 0,
            dims: Dims {
                user_id: "bob".into(),
                channel_account_id: "oa".into(),
                ..Dims::default()
            },
            first: true,
        }));
        let reply = fold(
            &mut state,
            &message(Direction::Outbound, SenderKind::Staff, "bob"),
            7 * MINUTE,
            &settings,
        );
        assert_eq!(
            samples(&reply, SampleKind::FirstResponse),
            vec![("bob".to_string(), sketch::bucket_of(3 * MINUTE))]
        );
        // The customer still waited seven minutes in all.
        assert_eq!(state.first_response_micros, Some(7 * MINUTE));
    }
}
