//! SLA clocks as plain functions: when a response is due, counting only business hours in
//! the tenant's time zone and skipping holidays.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The time zone of a tenant that names none.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Ho_Chi_Minh";
/// Longest a business-hours walk looks ahead before giving up (a schedule with no open day).
const MAX_DAYS: i64 = 370;

/// When the company answers customers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessHours {
    /// ISO weekdays 1 (Monday) to 7 (Sunday).
    pub weekdays: Vec<u32>,
    pub opens_at: NaiveTime,
    pub closes_at: NaiveTime,
}

/// An SLA policy's clock settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    pub time_zone: Tz,
    /// `None`: around the clock.
    pub hours: Option<BusinessHours>,
    pub holidays: Vec<NaiveDate>,
}

impl Calendar {
    pub fn around_the_clock() -> Self {
        Self {
            time_zone: chrono_tz::Asia::Ho_Chi_Minh,
            hours: None,
            holidays: Vec::new(),
        }
    }

    /// When `target` of business time after `start` has passed.
    pub fn due_at(&self, start: DateTime<Utc>, target: Duration) -> DateTime<Utc> {
        let Some(hours) = &self.hours else {
            if self.holidays.is_empty() {
                return start + target;
            }
            // Around the clock except on holidays: whole days are the business periods.
            return self.walk(start, target, |_| Some((NaiveTime::MIN, None::<NaiveTime>)));
        };
        self.walk(start, target, |date| {
            hours
                .weekdays
                .contains(&date.weekday().number_from_monday())
                .then_some((hours.opens_at, Some(hours.closes_at)))
        })
    }

    /// Consumes `remaining` through each day's open period (`None` close: midnight).
    fn walk(
        &self,
        start: DateTime<Utc>,
        target: Duration,
        period: impl Fn(NaiveDate) -> Option<(NaiveTime, Option<NaiveTime>)>,
    ) -> DateTime<Utc> {
        let tz = self.time_zone;
        let mut remaining = target;
        let mut cursor = start;
        let mut date = start.with_timezone(&tz).date_naive();
        for _ in 0..MAX_DAYS {
            if !self.holidays.contains(&date)
                && let Some((opens, closes)) = period(date)
            {
                let open = local(tz, date, opens);
                let close = match closes {
                    Some(closes) => local(tz, date, closes),
                    None => local(tz, date + Duration::days(1), NaiveTime::MIN),
                };
                let from = cursor.max(open);
                if from < close {
                    let available = close - from;
                    if remaining <= available {
                        return from + remaining;
                    }
                    remaining -= available;
                }
            }
            date += Duration::days(1);
            cursor = cursor.max(local(tz, date, NaiveTime::MIN));
        }
        // No business time within a year: the schedule is empty, measure plainly.
        start + target
    }
}

/// A local wall-clock time as UTC; a time skipped by a DST change moves forward an hour.
fn local(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let naive = date.and_time(time);
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
        })
        .map(|at| at.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
}

/// Parses `HH:MM`.
pub fn parse_time(value: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(value, "%H:%M").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vn(date: &str, time: &str) -> DateTime<Utc> {
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("date");
        local(
            chrono_tz::Asia::Ho_Chi_Minh,
            date,
            parse_time(time).expect("time"),
        )
    }

    fn office() -> Calendar {
        Calendar {
            time_zone: chrono_tz::Asia::Ho_Chi_Minh,
            hours: Some(BusinessHours {
                weekdays: vec![1, 2, 3, 4, 5],
                opens_at: parse_time("08:00").expect("time"),
                closes_at: parse_time("17:00").expect("time"),
            }),
            holidays: Vec::new(),
        }
    }

    #[test]
    fn around_the_clock_is_plain_addition() {
        let start = vn("2026-11-20", "23:30");
        assert_eq!(
            Calendar::around_the_clock().due_at(start, Duration::hours(1)),
            vn("2026-11-21", "00:30")
        );
    }

    #[test]
    fn friday_evening_carries_over_the_weekend() {
        // 2026-11-20 is a Friday: one hour left today, one more on Monday.
        let due = office().due_at(vn("2026-11-20", "16:00"), Duration::hours(2));
        assert_eq!(due, vn("2026-11-23", "09:00"));
    }

    #[test]
    fn a_message_at_night_starts_counting_at_opening() {
        let due = office().due_at(vn("2026-11-17", "22:00"), Duration::minutes(30));
        assert_eq!(due, vn("2026-11-18", "08:30"));
    }

    #[test]
    fn holidays_are_skipped() {
        let mut calendar = office();
        calendar.holidays = vec![NaiveDate::from_ymd_opt(2026, 11, 23).expect("date")];
        let due = calendar.due_at(vn("2026-11-20", "16:30"), Duration::hours(1));
        assert_eq!(due, vn("2026-11-24", "08:30"));
    }

    #[test]
    fn an_empty_schedule_does_not_loop_forever() {
        let mut calendar = office();
        calendar.hours = Some(BusinessHours {
            weekdays: Vec::new(),
            opens_at: parse_time("08:00").expect("time"),
            closes_at: parse_time("17:00").expect("time"),
        });
        let start = vn("2026-11-20", "16:30");
        assert_eq!(
            calendar.due_at(start, Duration::hours(1)),
            start + Duration::hours(1)
        );
    }
}
