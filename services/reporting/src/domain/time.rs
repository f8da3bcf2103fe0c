//! Times of the reports: microseconds since the epoch (how every table stores them), UTC hour
//! buckets, IANA time zones and business hours.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

pub const MICROS_PER_HOUR: i64 = 3_600_000_000;
pub const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// The start of the UTC hour holding `micros`.
pub fn hour_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR
}

/// The start of the UTC day holding `micros`: the key of the daily roll-ups.
pub fn day_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY
}

pub fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

pub fn from_timestamp(at: &prost_types::Timestamp) -> Option<i64> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?).map(micros)
}

pub fn to_timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// An IANA zone name, or `None` when it is not one.
pub fn parse_zone(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// When staff are expected to answer, in the tenant's time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusinessHours {
    /// ISO weekdays that are working days (1 = Monday … 7 = Sunday).
    pub days: Vec<u32>,
    /// Local opening time, `HH:MM`.
    pub opens: String,
    /// Local closing time, `HH:MM` (after `opens`).
    pub closes: String,
}

impl Default for BusinessHours {
    fn default() -> Self {
        Self {
            days: vec![1, 2, 3, 4, 5, 6],
            opens: "08:00".into(),
            closes: "17:30".into(),
        }
    }
}

/// Business hours checked once at start, ready to measure with.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub zone: Tz,
    days: [bool; 7],
    opens: NaiveTime,
    closes: NaiveTime,
}

impl Schedule {
    pub fn new(zone: Tz, hours: &BusinessHours) -> Result<Self, String> {
        let parse = |field: &str, value: &str| {
            NaiveTime::parse_from_str(value, "%H:%M")
                .map_err(|_| format!("invalid business_hours.{field} \"{value}\": expected HH:MM"))
        };
        let opens = parse("opens", &hours.opens)?;
        let closes = parse("closes", &hours.closes)?;
        if closes <= opens {
            return Err("invalid business_hours.closes: must be after business_hours.opens".into());
        }
        let mut days = [false; 7];
        for day in &hours.days {
            if !(1..=7).contains(day) {
                return Err(format!(
                    "invalid business_hours.days {day}: expected 1 (Monday) to 7 (Sunday)"
                ));
            }
            days[(*day - 1) as usize] = true;
        }
        Ok(Self {
            zone,
            days,
            opens,
            closes,
        })
    }

    /// The same opening hours in another zone (a tenant's own).
    pub fn in_zone(&self, zone: Tz) -> Self {
        Self {
            zone,
            ..self.clone()
        }
    }

    fn is_working(&self, weekday: Weekday) -> bool {
        self.days[weekday.num_days_from_monday() as usize]
    }

    /// The part of `[from, to)` (microseconds) that falls inside business hours.
    pub fn business_micros(&self, from: i64, to: i64) -> i64 {
        if to <= from {
            return 0;
        }
        let (start, end) = (from_micros(from), from_micros(to));
        let mut day = start.with_timezone(&self.zone).date_naive();
        let last = end.with_timezone(&self.zone).date_naive();
        let mut total = 0i64;
        while day <= last {
            if self.is_working(day.weekday()) {
                let local = |time: NaiveTime| {
                    self.zone
                        .from_local_datetime(&day.and_time(time))
                        .earliest()
                        .map(|at| at.with_timezone(&Utc))
                };
                if let (Some(open), Some(close)) = (local(self.opens), local(self.closes)) {
                    let overlap_start = open.max(start);
                    let overlap_end = close.min(end);
                    if overlap_end > overlap_start {
                        total += micros(overlap_end) - micros(overlap_start);
                    }
                }
            }
            day += Duration::days(1);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        micros(
            DateTime::parse_from_rfc3339(text)
                .expect("valid time")
                .with_timezone(&Utc),
        )
    }

    #[test]
    fn business_time_skips_nights_and_sundays() {
        let schedule = Schedule::new(
            parse_zone("Asia/Ho_Chi_Minh").expect("zone"),
            &BusinessHours::default(),
        )
        .expect("valid hours");
        // Saturday 17:00 → Monday 08:10 local: 30 minutes on Saturday, 10 on Monday.
        let minutes = schedule.business_micros(
            at("2026-01-10T17:00:00+07:00"),
            at("2026-01-12T08:10:00+07:00"),
        ) / 60_000_000;
        assert_eq!(minutes, 40);
        // Inside one working morning it is the wall-clock time.
        assert_eq!(
            schedule.business_micros(
                at("2026-01-12T09:00:00+07:00"),
                at("2026-01-12T09:05:00+07:00")
            ),
            5 * 60_000_000
        );
        assert_eq!(schedule.business_micros(10, 5), 0);
    }

    #[test]
    fn bad_hours_and_zones_are_refused() {
        let zone = parse_zone("UTC").expect("zone");
        let hours = BusinessHours {
            closes: "07:00".into(),
            ..BusinessHours::default()
        };
        assert!(Schedule::new(zone, &hours).is_err());
        let hours = BusinessHours {
            days: vec![8],
            ..BusinessHours::default()
        };
        assert!(Schedule::new(zone, &hours).is_err());
        assert!(parse_zone("Mars/Olympus").is_none());
        assert_eq!(hour_of(MICROS_PER_HOUR + 5), MICROS_PER_HOUR);
        assert_eq!(hour_of(-1), -MICROS_PER_HOUR);
    }
}
