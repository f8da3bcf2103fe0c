//! Opaque cursors. A cursor is the position (time, id) of the last item of a page, so the
//! next page starts strictly after it whatever was inserted meanwhile.

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Position {
    pub fn encode(&self) -> String {
        hex::encode(format!("v1|{}|{}", self.at.timestamp_micros(), self.id))
    }

    /// `None` for a cursor this service did not produce.
    pub fn decode(cursor: &str) -> Option<Self> {
        let raw = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
        let mut parts = raw.split('|');
        let (Some("v1"), Some(micros), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some(Self {
            at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: id.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let position = Position {
            at: DateTime::from_timestamp_micros(1_763_000_000_123_456).expect("time"),
            id: Uuid::now_v7(),
        };
        assert_eq!(Position::decode(&position.encode()), Some(position));
        assert_eq!(Position::decode("zz"), None);
        assert_eq!(Position::decode(&hex::encode("v2|1|x")), None);
        assert_eq!(Position::decode(""), None);
    }
}
