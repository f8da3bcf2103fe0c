//! NATS subject rules, so the embedded bus filters exactly like JetStream.

/// A subject token: letters, digits, `-` and `_` (a conservative subset of what NATS allows,
/// safe for tenant ids and event names).
pub fn is_valid_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Whether `subject` matches `filter`: `*` matches one token, a final `>` one or more.
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut filter_tokens = filter.split('.');
    let mut subject_tokens = subject.split('.');
    loop {
        match (filter_tokens.next(), subject_tokens.next()) {
            (Some(">"), Some(_)) => return filter_tokens.next().is_none(),
            (Some("*"), Some(_)) => {}
            (Some(expected), Some(actual)) if expected == actual => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_nats() {
        assert!(matches(
            "events.message_received.>",
            "events.message_received.acme"
        ));
        assert!(matches("events.*.acme", "events.contact_updated.acme"));
        assert!(matches("events.>", "events.a.b.c"));
        assert!(!matches("events.>", "events"));
        assert!(!matches("events.*", "events.a.b"));
        assert!(!matches(
            "events.message_received.>",
            "events.contact_updated.acme"
        ));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
    }

    #[test]
    fn tokens_are_conservative() {
        assert!(is_valid_token("tenant-1_x"));
        assert!(!is_valid_token("a.b"));
        assert!(!is_valid_token("*"));
        assert!(!is_valid_token(""));
        assert!(!is_valid_token("có dấu"));
    }
}
