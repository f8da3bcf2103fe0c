//! Durations as a mergeable log-bucket histogram (the DDSketch idea with a fixed gamma).
//!
//! Each sample falls in bucket `1 + floor(log_γ(seconds))` (bucket 0 holds sub-second
//! waits), so any two histograms merge by adding counts per bucket: per-hour rows in SQL
//! are summed with `SUM(count) GROUP BY bucket` over any range. With γ = 1.04 a quantile read
//! back is within 2% of the true sample it stands for.

/// Growth factor between bucket bounds.
pub const GAMMA: f64 = 1.04;

/// The bucket of a duration in microseconds (negative durations count as zero).
pub fn bucket_of(micros: i64) -> i64 {
    let seconds = micros.max(0) as f64 / 1_000_000.0;
    if seconds < 1.0 {
        return 0;
    }
    1 + (seconds.ln() / GAMMA.ln()).floor() as i64
}

/// The value a bucket stands for, in microseconds: the harmonic mean of its bounds, which
/// bounds the relative error by (γ-1)/(γ+1) on either side.
pub fn value_of(bucket: i64) -> i64 {
    if bucket <= 0 {
        return 0;
    }
    let lower = GAMMA.powi((bucket - 1) as i32);
    let upper = lower * GAMMA;
    let seconds = 2.0 * lower * upper / (lower + upper);
    (seconds * 1_000_000.0).round() as i64
}

/// A merged histogram: (bucket, count) pairs in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    buckets: std::collections::BTreeMap<i64, u64>,
}

impl Histogram {
    pub fn add(&mut self, bucket: i64, count: u64) {
        *self.buckets.entry(bucket).or_default() += count;
    }

    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The nearest-rank quantile `q` (0 < q ≤ 1) in microseconds; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return Some(value_of(*bucket));
            }
        }
        self.buckets.keys().last().map(|bucket| value_of(*bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_within_two_percent() {
        for seconds in [1.0, 7.5, 60.0, 300.0, 3_600.0, 86_400.0, 30.0 * 86_400.0] {
            let micros = (seconds * 1e6) as i64;
            let back = value_of(bucket_of(micros)) as f64;
            let error = (back - micros as f64).abs() / micros as f64;
            assert!(error <= 0.02, "{seconds}s came back as {back}µs");
        }
        assert_eq!(value_of(bucket_of(400_000)), 0);
        assert_eq!(bucket_of(-5), 0);
    }

    #[test]
    fn quantiles_use_the_nearest_rank_and_merge_by_adding() {
        let mut left = Histogram::default();
        let mut right = Histogram::default();
        left.add(bucket_of(60_000_000), 1);
        right.add(bucket_of(180_000_000), 1);
        right.add(bucket_of(600_000_000), 1);
        left.add(bucket_of(180_000_000), 0);
        for (bucket, count) in right.buckets.clone() {
            left.add(bucket, count);
        }
        assert_eq!(left.count(), 3);
        let p50 = left.quantile(0.5).expect("samples") as f64;
        assert!((p50 - 180e6).abs() / 180e6 < 0.02);
        let p90 = left.quantile(0.9).expect("samples") as f64;
        assert!((p90 - 600e6).abs() / 600e6 < 0.02);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
