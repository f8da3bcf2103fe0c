//! Contacts: the company's record of a customer. Codes are per tenant, human readable
//! (`KH000123`) and never reused; phones are E.164; the care status follows the tenant's
//! pipeline.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use giao_proto::messagestore::{CarePipeline, CareStage};
use uuid::Uuid;

use super::phone;

/// Longest tag, lead source, care status key, custom field key or value, in characters.
pub const MAX_LABEL_CHARS: usize = 64;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_TAGS: usize = 50;
pub const MAX_PHONES: usize = 10;
pub const MAX_CUSTOM_FIELDS: usize = 50;
pub const MAX_CUSTOM_VALUE_CHARS: usize = 1_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub channel_account_id: String,
    pub external_user_id: String,
    pub display_name: String,
    pub avatar_url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContactRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub customer_code: String,
    pub display_name: String,
    pub care_status: String,
    pub lead_source: String,
    pub custom_fields: BTreeMap<String, String>,
    pub owner_user_id: Option<String>,
    pub merged_into: Option<Uuid>,
    pub phones: Vec<String>,
    pub tags: Vec<String>,
    pub identities: Vec<Identity>,
    /// Contacts merged into this one.
    pub merged_contact_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `KH` and at least six digits.
pub fn customer_code(number: i64) -> String {
    format!("KH{number:06}")
}

/// The pipeline a tenant starts with.
pub fn default_pipeline() -> CarePipeline {
    let stage = |key: &str, label: &str, terminal: bool, won: bool| CareStage {
        key: key.into(),
        label: label.into(),
        terminal,
        won,
    };
    CarePipeline {
        stages: vec![
            stage("new", "Mới", false, false),
            stage("contacted", "Đã liên hệ", false, false),
            stage("interested", "Quan tâm", false, false),
            stage("quoted", "Đã báo giá", false, false),
            stage("won", "Đã chốt", true, true),
            stage("lost", "Không mua", true, false),
        ],
    }
}

/// Checks a pipeline a tenant wants to use; the message names the offending stage.
pub fn validate_pipeline(pipeline: &CarePipeline) -> Result<(), String> {
    if pipeline.stages.is_empty() {
        return Err("invalid pipeline.stages: at least one stage".into());
    }
    if pipeline.stages.len() > 30 {
        return Err("invalid pipeline.stages: at most 30 stages".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, stage) in pipeline.stages.iter().enumerate() {
        let field = format!("pipeline.stages[{index}].key");
        label(&field, &stage.key)?;
        if !seen.insert(stage.key.as_str()) {
            return Err(format!("invalid {field}: \"{}\" appears twice", stage.key));
        }
    }
    Ok(())
}

/// A tag, lead source or status key: trimmed, 1 to 64 characters, no control characters.
pub fn label(field: &str, value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(format!("missing {field}: required"));
    }
    let chars = trimmed.chars().count();
    if chars > MAX_LABEL_CHARS {
        return Err(format!(
            "invalid {field}: {chars} characters, at most {MAX_LABEL_CHARS}"
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(format!("invalid {field}: control characters"));
    }
    Ok(trimmed.to_string())
}

/// Normalises a list of phones, naming the offending entry.
pub fn phones(field: &str, raw: &[String]) -> Result<Vec<String>, String> {
    if raw.len() > MAX_PHONES {
        return Err(format!("invalid {field}: at most {MAX_PHONES} phones"));
    }
    let mut normalized = Vec::with_capacity(raw.len());
    for (index, value) in raw.iter().enumerate() {
        let phone =
            phone::normalize(value).map_err(|error| format!("{field}[{index}]: {error}"))?;
        if !normalized.contains(&phone) {
            normalized.push(phone);
        }
    }
    Ok(normalized)
}

/// Validates custom fields, naming the offending key.
pub fn custom_fields(
    raw: &std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    if raw.len() > MAX_CUSTOM_FIELDS {
        return Err(format!(
            "invalid custom_fields: at most {MAX_CUSTOM_FIELDS} fields"
        ));
    }
    let mut fields = BTreeMap::new();
    for (key, value) in raw {
        let key = label("custom_fields key", key)?;
        let chars = value.chars().count();
        if chars > MAX_CUSTOM_VALUE_CHARS {
            return Err(format!(
                "invalid custom_fields[{key}]: {chars} characters, at most {MAX_CUSTOM_VALUE_CHARS}"
            ));
        }
        fields.insert(key, value.clone());
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_padded_and_grow() {
        assert_eq!(customer_code(123), "KH000123");
        assert_eq!(customer_code(1_234_567), "KH1234567");
    }

    #[test]
    fn phone_lists_name_the_bad_entry() {
        let error = phones("phones", &["0912345678".into(), "abc".into()]).expect_err("invalid");
        assert!(
            error.starts_with("phones[1]: invalid phone \"abc\""),
            "{error}"
        );
        let ok = phones("phones", &["0912 345 678".into(), "+84912345678".into()]).expect("valid");
        assert_eq!(ok, vec!["+84912345678".to_string()]);
    }

    #[test]
    fn pipelines_reject_duplicates_and_blanks() {
        assert!(validate_pipeline(&default_pipeline()).is_ok());
        let mut twice = default_pipeline();
        twice.stages[1].key = "new".into();
        let error = validate_pipeline(&twice).expect_err("duplicate");
        assert!(error.contains("pipeline.stages[1].key"), "{error}");
        let mut blank = default_pipeline();
        blank.stages[0].key = " ".into();
        assert!(validate_pipeline(&blank).is_err());
    }
}
