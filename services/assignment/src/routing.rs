//! Routing decisions as plain data: who takes a new conversation under a policy, given the
//! roster's state. No I/O here; the router loads the inputs under the tenant's lock and
//! stores the outcome.

use chrono::{Datelike, NaiveDateTime, NaiveTime, Timelike};
use serde::{Deserialize, Serialize};

/// How a pool of agents shares new conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The next eligible agent (by user id) after the one who got the previous conversation.
    RoundRobin,
    /// The eligible agent with the fewest open conversations (ties: lowest user id).
    LeastOpen,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastOpen => "least_open",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "round_robin" => Some(Strategy::RoundRobin),
            "least_open" => Some(Strategy::LeastOpen),
            _ => None,
        }
    }
}

/// A rule's conditions (all given ones must hold) and where it sends the conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(default)]
    pub lead_source: String,
    #[serde(default)]
    pub tag: String,
    #[serde(default)]
    pub team_id: String,
    #[serde(default)]
    pub user_id: String,
}

impl Rule {
    fn matches(&self, arrival: &Arrival<'_>) -> bool {
        (self.lead_source.is_empty() || self.lead_source == arrival.lead_source)
            && (self.tag.is_empty() || arrival.tags.contains(&self.tag))
    }
}

/// A channel account's (or the tenant's default) routing policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Empty for the tenant's default.
    pub channel_account_id: String,
    /// The pool's team; empty: every agent of the tenant.
    pub team_id: String,
    pub strategy: Strategy,
    pub sticky_owner: bool,
    /// Each agent's capacity unless they have their own; 0: no limit.
    pub max_open_per_agent: i64,
    pub rules: Vec<Rule>,
    /// Round-robin position: who got the last conversation from the pool.
    pub last_user_id: String,
    /// IANA zone of the account's shifts.
    pub time_zone: String,
    pub on_shift_change: ShiftChange,
}

/// What a shift change does to the account's open conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShiftChange {
    StayWithOwner,
    MoveToIncoming,
}

impl ShiftChange {
    pub fn as_str(self) -> &'static str {
        match self {
            ShiftChange::StayWithOwner => "stay_with_owner",
            ShiftChange::MoveToIncoming => "move_to_incoming",
        }
    }

    pub fn parse(value: &str) -> Self {
        match value {
            "move_to_incoming" => ShiftChange::MoveToIncoming,
            _ => ShiftChange::StayWithOwner,
        }
    }
}

/// One shift: on these ISO weekdays from `starts_at` to `ends_at` (local time); an end at
/// or before the start runs past midnight into the next day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftWindow {
    pub weekdays: Vec<u32>,
    pub starts_at: NaiveTime,
    pub ends_at: NaiveTime,
}

impl ShiftWindow {
    /// Whether `local` (wall-clock time in the shift's zone) falls in the shift.
    pub fn covers(&self, local: NaiveDateTime) -> bool {
        let day = local.weekday().number_from_monday();
        let previous = if day == 1 { 7 } else { day - 1 };
        let time = local.time();
        if self.starts_at < self.ends_at {
            self.weekdays.contains(&day) && time >= self.starts_at && time < self.ends_at
        } else {
            (self.weekdays.contains(&day) && time >= self.starts_at)
                || (self.weekdays.contains(&previous) && time < self.ends_at)
        }
    }

    /// The minutes of the week (Monday 00:00 is 0) the shift covers, as half-open spans; a
    /// Sunday shift running past midnight wraps into Monday.
    fn spans(&self) -> Vec<(u32, u32)> {
        const DAY: u32 = 24 * 60;
        const WEEK: u32 = 7 * DAY;
        let minutes = |time: NaiveTime| time.hour() * 60 + time.minute();
        let (start, end) = (minutes(self.starts_at), minutes(self.ends_at));
        let length = if start < end {
            end - start
        } else {
            DAY - start + end
        };
        let mut spans = Vec::new();
        for day in &self.weekdays {
            let from = (day - 1) * DAY + start;
            let to = from + length;
            if to <= WEEK {
                spans.push((from, to));
            } else {
                spans.push((from, WEEK));
                spans.push((0, to - WEEK));
            }
        }
        spans
    }

    /// The first moment of the week both shifts cover, as (ISO weekday, local time).
    pub fn overlap(&self, other: &ShiftWindow) -> Option<(u32, NaiveTime)> {
        let theirs = other.spans();
        let first = self
            .spans()
            .into_iter()
            .flat_map(|(from, to)| {
                theirs.iter().filter_map(move |&(other_from, other_to)| {
                    let start = from.max(other_from);
                    (start < to.min(other_to)).then_some(start)
                })
            })
            .min()?;
        let time = NaiveTime::from_hms_opt((first % (24 * 60)) / 60, first % 60, 0)?;
        Some((first / (24 * 60) + 1, time))
    }
}

/// An agent as routing sees them at the moment of the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub user_id: String,
    pub team_ids: Vec<String>,
    /// Active in auth and `online`.
    pub available: bool,
    /// Open conversations they own now.
    pub open: i64,
    /// Their own capacity, overriding the policy's.
    pub max_open: Option<i64>,
}

impl Agent {
    fn has_room(&self, policy: &Policy) -> bool {
        let limit = self.max_open.unwrap_or(policy.max_open_per_agent);
        limit <= 0 || self.open < limit
    }
}

/// What routing knows about the arriving conversation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Arrival<'a> {
    pub lead_source: &'a str,
    pub tags: &'a [String],
    /// Who owned this customer's most recent other conversation.
    pub previous_owner: Option<&'a str>,
}

/// Why an agent was chosen (kept as the reason in the ownership history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    StickyOwner,
    Rule,
    Pool,
}

impl Why {
    pub fn reason(self, strategy: Strategy) -> String {
        match self {
            Why::StickyOwner => "routing: sticky owner".into(),
            Why::Rule => "routing: rule".into(),
            Why::Pool => format!("routing: {}", strategy.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub user_id: String,
    /// The conversation's team after routing (the pool's), empty when the pool has none.
    pub team_id: String,
    pub why: Why,
}

/// Who takes the conversation, or `None` when nobody can now (it waits in the queue).
///
/// A returning customer's previous owner gets it back when available, even at capacity: the
/// customer already knows them. Otherwise the first matching rule may name an agent (who
/// must have room) or a team; then the pool's strategy picks among available agents with
/// room.
pub fn choose(policy: &Policy, agents: &[Agent], arrival: &Arrival<'_>) -> Option<Decision> {
    let rule = policy.rules.iter().find(|rule| rule.matches(arrival));
    let team_id = rule
        .map(|rule| rule.team_id.as_str())
        .filter(|team| !team.is_empty())
        .unwrap_or(&policy.team_id)
        .to_string();
    if policy.sticky_owner
        && let Some(previous) = arrival.previous_owner
        && agents
            .iter()
            .any(|agent| agent.user_id == previous && agent.available)
    {
        return Some(Decision {
            user_id: previous.to_string(),
            team_id,
            why: Why::StickyOwner,
        });
    }
    if let Some(rule) = rule
        && !rule.user_id.is_empty()
        && agents
            .iter()
            .any(|agent| agent.user_id == rule.user_id && agent.available && agent.has_room(policy))
    {
        return Some(Decision {
            user_id: rule.user_id.clone(),
            team_id,
            why: Why::Rule,
        });
    }
    let mut pool: Vec<&Agent> = agents
        .iter()
        .filter(|agent| agent.available && agent.has_room(policy))
        .filter(|agent| team_id.is_empty() || agent.team_ids.contains(&team_id))
        .collect();
    pool.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    let chosen = match policy.strategy {
        Strategy::RoundRobin => pool
            .iter()
            .find(|agent| agent.user_id > policy.last_user_id)
            .or_else(|| pool.first()),
        Strategy::LeastOpen => pool.iter().min_by_key(|agent| agent.open),
    }?;
    Some(Decision {
        user_id: chosen.user_id.clone(),
        team_id,
        why: Why::Pool,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(user_id: &str, team: &str, open: i64) -> Agent {
        Agent {
            user_id: user_id.into(),
            team_ids: vec![team.into()],
            available: true,
            open,
            max_open: None,
        }
    }

    fn policy(strategy: Strategy) -> Policy {
        Policy {
            channel_account_id: String::new(),
            team_id: "sales".into(),
            strategy,
            sticky_owner: false,
            max_open_per_agent: 2,
            rules: Vec::new(),
            last_user_id: String::new(),
            time_zone: String::new(),
            on_shift_change: ShiftChange::StayWithOwner,
        }
    }

    fn at(day: &str, time: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(&format!("{day} {time}"), "%Y-%m-%d %H:%M")
            .expect("date time")
    }

    fn hm(value: &str) -> NaiveTime {
        NaiveTime::parse_from_str(value, "%H:%M").expect("time")
    }

    #[test]
    fn shifts_cover_their_days_and_run_past_midnight() {
        // 2026-11-23 is a Monday.
        let day = ShiftWindow {
            weekdays: vec![1, 2, 3, 4, 5],
            starts_at: hm("08:00"),
            ends_at: hm("17:00"),
        };
        assert!(day.covers(at("2026-11-23", "08:00")));
        assert!(!day.covers(at("2026-11-23", "17:00")));
        assert!(!day.covers(at("2026-11-22", "10:00")), "Sunday");
        let night = ShiftWindow {
            weekdays: vec![7],
            starts_at: hm("22:00"),
            ends_at: hm("06:00"),
        };
        assert!(night.covers(at("2026-11-22", "23:00")), "Sunday night");
        assert!(
            night.covers(at("2026-11-23", "05:59")),
            "into Monday morning"
        );
        assert!(!night.covers(at("2026-11-23", "23:00")), "not Monday night");
    }

    fn window(weekdays: &[u32], starts_at: &str, ends_at: &str) -> ShiftWindow {
        ShiftWindow {
            weekdays: weekdays.to_vec(),
            starts_at: hm(starts_at),
            ends_at: hm(ends_at),
        }
    }

    #[test]
    fn shifts_overlap_on_common_days_and_across_midnight() {
        let day = window(&[1, 2, 3, 4, 5], "08:00", "17:00");
        assert_eq!(
            day.overlap(&window(&[3], "16:00", "20:00")),
            Some((3, hm("16:00")))
        );
        assert_eq!(
            day.overlap(&window(&[1, 2], "17:00", "22:00")),
            None,
            "back to back"
        );
        assert_eq!(
            day.overlap(&window(&[6, 7], "08:00", "17:00")),
            None,
            "the weekend"
        );
        // Friday night into Saturday morning meets a Saturday morning shift.
        let friday_night = window(&[5], "22:00", "06:00");
        assert_eq!(
            friday_night.overlap(&window(&[6], "05:00", "09:00")),
            Some((6, hm("05:00")))
        );
        assert_eq!(friday_night.overlap(&window(&[6], "06:00", "09:00")), None);
        // Sunday night wraps into Monday's early shift.
        assert_eq!(
            window(&[7], "23:00", "07:00").overlap(&window(&[1], "06:30", "12:00")),
            Some((1, hm("06:30")))
        );
        // Equal start and end is a whole day.
        assert_eq!(
            window(&[2], "09:00", "09:00").overlap(&window(&[3], "08:00", "08:30")),
            Some((3, hm("08:00")))
        );
        assert_eq!(
            window(&[4], "20:00", "02:00").overlap(&window(&[4], "01:00", "03:00")),
            None,
            "the night shift's early hours are on Friday"
        );
    }

    fn pick(policy: &Policy, agents: &[Agent], arrival: &Arrival<'_>) -> Option<String> {
        choose(policy, agents, arrival).map(|decision| decision.user_id)
    }

    #[test]
    fn round_robin_takes_the_next_after_the_last_and_wraps() {
        let agents = [agent("a", "sales", 0), agent("b", "sales", 0)];
        let mut policy = policy(Strategy::RoundRobin);
        assert_eq!(
            pick(&policy, &agents, &Arrival::default()).expect("someone is chosen"),
            "a"
        );
        policy.last_user_id = "a".into();
        assert_eq!(
            pick(&policy, &agents, &Arrival::default()).expect("someone is chosen"),
            "b"
        );
        policy.last_user_id = "b".into();
        assert_eq!(
            pick(&policy, &agents, &Arrival::default()).expect("someone is chosen"),
            "a"
        );
    }

    #[test]
    fn least_open_skips_full_unavailable_and_other_teams() {
        let mut away = agent("a", "sales", 0);
        away.available = false;
        let agents = [
            away,
            agent("b", "sales", 2),
            agent("c", "sales", 1),
            agent("d", "support", 0),
        ];
        let policy = policy(Strategy::LeastOpen);
        assert_eq!(
            pick(&policy, &agents, &Arrival::default()).expect("someone is chosen"),
            "c"
        );
        let full = [agent("b", "sales", 2)];
        assert_eq!(pick(&policy, &full, &Arrival::default()), None);
    }

    #[test]
    fn own_capacity_overrides_the_policy() {
        let mut big = agent("b", "sales", 5);
        big.max_open = Some(10);
        let policy = policy(Strategy::LeastOpen);
        assert_eq!(
            pick(&policy, &[big], &Arrival::default()).expect("someone is chosen"),
            "b"
        );
    }

    #[test]
    fn sticky_owner_wins_when_available_even_when_full() {
        let agents = [agent("a", "sales", 0), agent("b", "sales", 2)];
        let mut policy = policy(Strategy::LeastOpen);
        policy.sticky_owner = true;
        let arrival = Arrival {
            previous_owner: Some("b"),
            ..Default::default()
        };
        let decision = choose(&policy, &agents, &arrival).expect("someone is chosen");
        assert_eq!(
            (decision.user_id.as_str(), decision.why),
            ("b", Why::StickyOwner)
        );
        let gone = [agent("a", "sales", 0)];
        assert_eq!(
            pick(&policy, &gone, &arrival).expect("someone is chosen"),
            "a"
        );
    }

    #[test]
    fn rules_by_lead_source_and_tag_pick_a_team_or_an_agent() {
        let agents = [
            agent("a", "sales", 0),
            agent("v", "vip", 1),
            agent("w", "vip", 0),
        ];
        let mut policy = policy(Strategy::LeastOpen);
        policy.rules = vec![
            Rule {
                tag: "vip".into(),
                team_id: "vip".into(),
                ..Default::default()
            },
            Rule {
                lead_source: "facebook".into(),
                user_id: "v".into(),
                ..Default::default()
            },
        ];
        let tags = vec!["vip".to_string()];
        let vip = Arrival {
            tags: &tags,
            ..Default::default()
        };
        let decision = choose(&policy, &agents, &vip).expect("someone is chosen");
        assert_eq!(
            (decision.user_id.as_str(), decision.team_id.as_str()),
            ("w", "vip")
        );
        let facebook = Arrival {
            lead_source: "facebook",
            ..Default::default()
        };
        let decision = choose(&policy, &agents, &facebook).expect("someone is chosen");
        assert_eq!((decision.user_id.as_str(), decision.why), ("v", Why::Rule));
        assert_eq!(
            pick(&policy, &agents, &Arrival::default()).expect("someone is chosen"),
            "a"
        );
    }
}
