//! Customers' Zalo profiles (display name, avatar), fetched once per user and kept for a day,
//! so the contact a new customer creates has a name instead of a bare Zalo id.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::client::UserProfile;

const FOUND_TTL: Duration = Duration::from_secs(24 * 3600);
/// A failed fetch is not tried again for a while: a slow or refusing API must not slow
/// every webhook of that user.
const MISSED_TTL: Duration = Duration::from_secs(600);
const MAX_ENTRIES: usize = 100_000;

type Key = (String, String, String);
/// A profile (or `None`: not available) and when it was fetched.
type Entry = (Option<UserProfile>, Instant);

#[derive(Debug, Clone, Default)]
pub struct Profiles {
    entries: Arc<Mutex<HashMap<Key, Entry>>>,
}

/// What the cache knows about a user.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    Found(UserProfile),
    /// Fetched recently and not available.
    Missed,
    Unknown,
}

impl Profiles {
    fn key(tenant: &str, account: &str, user: &str) -> Key {
        (tenant.to_string(), account.to_string(), user.to_string())
    }

    pub fn get(&self, tenant: &str, account: &str, user: &str, now: Instant) -> Cached {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&Self::key(tenant, account, user)) {
            Some((Some(profile), at)) if now.duration_since(*at) < FOUND_TTL => {
                Cached::Found(profile.clone())
            }
            Some((None, at)) if now.duration_since(*at) < MISSED_TTL => Cached::Missed,
            _ => Cached::Unknown,
        }
    }

    pub fn put(
        &self,
        tenant: &str,
        account: &str,
        user: &str,
        profile: Option<UserProfile>,
        now: Instant,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            // Crude but bounded: the worst case is fetching profiles again.
            entries.clear();
        }
        entries.insert(Self::key(tenant, account, user), (profile, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_found_and_missed_profiles_for_a_while() {
        let profiles = Profiles::default();
        let now = Instant::now();
        assert_eq!(profiles.get("t", "a", "u", now), Cached::Unknown);
        let lan = UserProfile {
            display_name: "Lan".into(),
            ..Default::default()
        };
        profiles.put("t", "a", "u", Some(lan.clone()), now);
        assert_eq!(profiles.get("t", "a", "u", now), Cached::Found(lan));
        // Per tenant and account.
        assert_eq!(profiles.get("t2", "a", "u", now), Cached::Unknown);
        assert_eq!(
            profiles.get("t", "a", "u", now + FOUND_TTL),
            Cached::Unknown
        );
        profiles.put("t", "a", "v", None, now);
        assert_eq!(profiles.get("t", "a", "v", now), Cached::Missed);
        assert_eq!(
            profiles.get("t", "a", "v", now + MISSED_TTL),
            Cached::Unknown
        );
    }
}
