//! Honouring Zalo's rate limit per app: `X-RateLimit-Limit` / `X-RateLimit-Remain` on every
//! answer, and -32 when over. Near the limit sends are spread over the rest of the window;
//! at zero (or on -32) the app's sends pause for a window, then resume.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::client::RateLimit;

/// Below this share of the limit, sends are spread out rather than sent at once.
const LOW_WATER_PERCENT: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// Near the limit: wait this long, then go.
    Wait(Duration),
    /// Over the limit: nothing goes for this long.
    Paused(Duration),
}

#[derive(Debug, Default, Clone, Copy)]
struct AppRate {
    paused_until: Option<Instant>,
    next_at: Option<Instant>,
}

/// Per-app state; the window is Zalo's (a minute) unless configured shorter for tests.
#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    apps: HashMap<String, AppRate>,
}

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Self {
            window: window.max(Duration::from_millis(1)),
            apps: HashMap::new(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether a request for `app` may go now.
    pub fn gate(&self, app: &str, now: Instant) -> Gate {
        let Some(rate) = self.apps.get(app) else {
            return Gate::Go;
        };
        if let Some(until) = rate.paused_until
            && until > now
        {
            return Gate::Paused(until - now);
        }
        match rate.next_at {
            Some(at) if at > now => Gate::Wait(at - now),
            _ => Gate::Go,
        }
    }

    /// Learns from an answer's headers; returns true when the app is now paused.
    pub fn observe(&mut self, app: &str, rate: RateLimit, now: Instant) -> bool {
        let window = self.window;
        let entry = self.apps.entry(app.to_string()).or_default();
        if rate.remain == 0 {
            entry.paused_until = Some(now + window);
            entry.next_at = None;
            return true;
        }
        entry.paused_until = None;
        entry.next_at =
            if rate.remain.saturating_mul(100) < rate.limit.saturating_mul(LOW_WATER_PERCENT) {
                // Spread what is left over the window instead of spending it at once.
                Some(now + window / rate.remain)
            } else {
                None
            };
        false
    }

    /// Zalo answered -32: pause the app for a window.
    pub fn limited(&mut self, app: &str, now: Instant) {
        let window = self.window;
        let entry = self.apps.entry(app.to_string()).or_default();
        entry.paused_until = Some(now + window);
        entry.next_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_near_the_limit_pauses_at_zero_and_resumes() {
        let window = Duration::from_secs(60);
        let mut throttle = Throttle::new(window);
        let now = Instant::now();
        assert_eq!(throttle.gate("app", now), Gate::Go);

        // Plenty left: no waiting.
        assert!(!throttle.observe(
            "app",
            RateLimit {
                limit: 4000,
                remain: 3000
            },
            now
        ));
        assert_eq!(throttle.gate("app", now), Gate::Go);

        // Under 10 % left: the rest is spread over the window.
        assert!(!throttle.observe(
            "app",
            RateLimit {
                limit: 4000,
                remain: 300
            },
            now
        ));
        assert_eq!(throttle.gate("app", now), Gate::Wait(window / 300));
        assert_eq!(throttle.gate("app", now + window / 300), Gate::Go);

        // Nothing left: paused for a window; other apps are not.
        assert!(throttle.observe(
            "app",
            RateLimit {
                limit: 4000,
                remain: 0
            },
            now
        ));
        assert_eq!(throttle.gate("app", now), Gate::Paused(window));
        assert_eq!(throttle.gate("other", now), Gate::Go);
        assert_eq!(throttle.gate("app", now + window), Gate::Go);

        // A -32 answer pauses too; a later answer with room lifts it.
        throttle.limited("app", now);
        assert!(matches!(throttle.gate("app", now), Gate::Paused(_)));
        throttle.observe(
            "app",
            RateLimit {
                limit: 4000,
                remain: 3999,
            },
            now,
        );
        assert_eq!(throttle.gate("app", now), Gate::Go);
    }
}
