//! Report rules away from gRPC and SQL: the response clock ([`clock`]), the mergeable
//! duration histogram ([`sketch`]), times and business hours ([`time`]), and here the
//! validation of a report's scope and who may see which rows.

pub mod clock;
pub mod sketch;
pub mod time;

use giao_authz::{Principal, Role};
use giao_platform::error::invalid_field;
use giao_proto::reporting::ReportScope;

use crate::error::Error;

/// The longest range one report may cover.
pub const MAX_RANGE_DAYS: i64 = 400;

/// A validated report scope.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Inclusive start, rounded down to its hour (reports have hour resolution).
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
    pub zone: chrono_tz::Tz,
    pub business_hours_only: bool,
}

impl Scope {
    /// Checks a request's scope; an empty time zone means the tenant's.
    pub fn parse(scope: Option<&ReportScope>, tenant_zone: chrono_tz::Tz) -> Result<Self, Error> {
        let scope =
            scope.ok_or_else(|| Error::InvalidArgument("missing scope: required".into()))?;
        let range = scope
            .range
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("missing scope.range: required".into()))?;
        let bound = |value: Option<&prost_types::Timestamp>, field: &str| {
            let value = value
                .ok_or_else(|| Error::InvalidArgument(format!("missing {field}: required")))?;
            time::from_timestamp(value).ok_or_else(|| {
                Error::InvalidArgument(invalid_field(
                    field,
                    &format!("{}s", value.seconds),
                    "expected a valid timestamp",
                ))
            })
        };
        let start = bound(range.start.as_ref(), "scope.range.start")?;
        let end = bound(range.end.as_ref(), "scope.range.end")?;
        if end <= start {
            return Err(Error::InvalidArgument(
                "invalid scope.range: end must be after start".into(),
            ));
        }
        if end - start > MAX_RANGE_DAYS * 24 * time::MICROS_PER_HOUR {
            return Err(Error::InvalidArgument(format!(
                "invalid scope.range: at most {MAX_RANGE_DAYS} days"
            )));
        }
        let zone = if scope.time_zone.is_empty() {
            tenant_zone
        } else {
            time::parse_zone(&scope.time_zone).ok_or_else(|| {
                Error::InvalidArgument(invalid_field(
                    "scope.time_zone",
                    &scope.time_zone,
                    "expected an IANA time zone such as Asia/Ho_Chi_Minh",
                ))
            })?
        };
        Ok(Self {
            start: time::hour_of(start),
            end,
            zone,
            business_hours_only: scope.business_hours_only,
        })
    }

    /// The moment "unanswered" is measured at: the end of the range, or now if sooner.
    pub fn cutoff(&self, now: i64) -> i64 {
        self.end.min(now)
    }
}

/// Which aggregate rows a caller may read: agents their own, supervisors their teams' (and
/// their own), admins, auditors and internal services the whole tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    Own(String),
    Teams {
        user_id: String,
        team_ids: Vec<String>,
    },
}

impl Visibility {
    pub fn of(principal: &Principal) -> Self {
        match principal.role {
            Role::Admin | Role::Auditor | Role::Service => Visibility::All,
            Role::Supervisor => Visibility::Teams {
                user_id: principal.user_id.clone(),
                team_ids: principal.team_ids.clone(),
            },
            Role::Agent => Visibility::Own(principal.user_id.clone()),
        }
    }

    /// Whether a user seen in `teams` may be reported on.
    pub fn can_see_user(&self, user_id: &str, teams: &[String]) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Own(own) => own == user_id,
            Visibility::Teams {
                user_id: own,
                team_ids,
            } => own == user_id || teams.iter().any(|team| team_ids.contains(team)),
        }
    }

    pub fn can_see_team(&self, team_id: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Own(_) => false,
            Visibility::Teams { team_ids, .. } => team_ids.iter().any(|team| team == team_id),
        }
    }
}

/// Checks an id-like request field: printable, at most 128 bytes.
pub fn check_id(field: &str, value: &str) -> Result<(), Error> {
    if value.len() > 128 || value.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(invalid_field(
            field,
            value,
            "expected an id of at most 128 printable bytes",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use giao_proto::common::TimeRange;

    fn scope(start: i64, end: i64, zone: &str) -> ReportScope {
        ReportScope {
            range: Some(TimeRange {
                start: Some(prost_types::Timestamp {
                    seconds: start,
                    nanos: 0,
                }),
                end: Some(prost_types::Timestamp {
                    seconds: end,
                    nanos: 0,
                }),
            }),
            time_zone: zone.into(),
            business_hours_only: false,
        }
    }

    #[test]
    fn scopes_name_what_is_wrong() {
        let utc = chrono_tz::UTC;
        let error = |s: ReportScope| {
            Scope::parse(Some(&s), utc)
                .expect_err("refused")
                .to_string()
        };
        assert!(error(scope(100, 50, "")).contains("scope.range"));
        assert!(error(scope(0, 500 * 86_400, "")).contains("at most 400 days"));
        assert!(error(scope(0, 60, "Mars/Base")).contains("scope.time_zone"));
        assert!(
            Scope::parse(None, utc)
                .expect_err("refused")
                .to_string()
                .contains("missing scope")
        );
        let parsed = Scope::parse(Some(&scope(3_700, 7_300, "Asia/Ho_Chi_Minh")), utc).expect("ok");
        assert_eq!(parsed.start, 3_600 * 1_000_000);
        assert_eq!(parsed.zone, chrono_tz::Asia::Ho_Chi_Minh);
    }

    #[test]
    fn supervisors_see_their_teams_and_agents_themselves() {
        let supervisor = Visibility::Teams {
            user_id: "sue".into(),
            team_ids: vec!["north".into()],
        };
        assert!(supervisor.can_see_user("ann", &["north".into()]));
        assert!(!supervisor.can_see_user("bob", &["south".into()]));
        assert!(supervisor.can_see_team("north"));
        let agent = Visibility::Own("ann".into());
        assert!(agent.can_see_user("ann", &[]));
        assert!(!agent.can_see_user("bob", &["north".into()]));
        assert!(!agent.can_see_team("north"));
    }
}
