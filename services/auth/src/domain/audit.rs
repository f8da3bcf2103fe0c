//! The tamper-evident audit chain: each record's hash covers its fields and the hash of the
//! record before it, so changing, removing or reordering any record breaks every later link.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

/// `prev_hash` of a tenant's first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A record to append; seq and hashes are assigned under the tenant's chain lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details_json: String,
    pub at: DateTime<Utc>,
    /// The bus event this record came from; appending the same event twice appends once.
    pub event_id: Option<String>,
}

impl NewAudit {
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            details_json: details.to_string(),
            at: Utc::now(),
            event_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub tenant_id: String,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details_json: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Times are kept to the microsecond (what both databases store), so the hash computed at
/// append time matches the one recomputed from the stored row.
pub fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// SHA-256 (hex) over the canonical encoding: each field as `<byte length>:<bytes>` followed
/// by `;`, in the order tenant, seq, at (RFC 3339, microseconds, `Z`), actor, action, target,
/// details_json, prev_hash. The length prefixes make the encoding unambiguous whatever the
/// fields contain.
#[allow(clippy::too_many_arguments)]
pub fn record_hash(
    tenant_id: &str,
    seq: i64,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    target: &str,
    details_json: &str,
    prev_hash: &str,
) -> String {
    let seq = seq.to_string();
    let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut hasher = Sha256::new();
    for field in [
        tenant_id,
        seq.as_str(),
        at.as_str(),
        actor,
        action,
        target,
        details_json,
        prev_hash,
    ] {
        hasher.update(field.len().to_string().as_bytes());
        hasher.update(b":");
        hasher.update(field.as_bytes());
        hasher.update(b";");
    }
    hex::encode(hasher.finalize())
}

impl AuditRecord {
    pub fn expected_hash(&self) -> String {
        record_hash(
            &self.tenant_id,
            self.seq,
            self.at,
            &self.actor,
            &self.action,
            &self.target,
            &self.details_json,
            &self.prev_hash,
        )
    }
}

/// Walks records in seq order, carrying the previous hash; the first record that does not
/// link or whose hash does not match its fields.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
        }
    }
}

impl ChainVerifier {
    /// `Err(seq)` of the first broken record (a gap reports the missing seq).
    pub fn check(&mut self, record: &AuditRecord) -> Result<(), i64> {
        if record.seq != self.expected_seq {
            return Err(self.expected_seq);
        }
        if record.prev_hash != self.prev_hash || record.hash != record.expected_hash() {
            return Err(record.seq);
        }
        self.expected_seq += 1;
        self.prev_hash = record.hash.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let mut record = AuditRecord {
                    tenant_id: "acme".into(),
                    seq,
                    at,
                    actor: "u1".into(),
                    action: "auth.login".into(),
                    target: "u1".into(),
                    details_json: "{}".into(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                record.hash = record.expected_hash();
                prev = record.hash.clone();
                record
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let mut verifier = ChainVerifier::default();
        for record in chain(5) {
            verifier.check(&record).expect("links");
        }
    }

    #[test]
    fn a_changed_field_breaks_that_record() {
        let mut records = chain(5);
        records[2].details_json = r#"{"role":"admin"}"#.into();
        let mut verifier = ChainVerifier::default();
        let broken = records
            .iter()
            .find_map(|record| verifier.check(record).err());
        assert_eq!(broken, Some(3));
    }

    #[test]
    fn a_removed_record_is_found() {
        let mut records = chain(5);
        records.remove(1);
        let mut verifier = ChainVerifier::default();
        let broken = records
            .iter()
            .find_map(|record| verifier.check(record).err());
        assert_eq!(broken, Some(2));
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let at = Utc::now();
        assert_ne!(
            record_hash("t", 1, at, "ab", "c", "", "{}", GENESIS_HASH),
            record_hash("t", 1, at, "a", "bc", "", "{}", GENESIS_HASH)
        );
    }
}
