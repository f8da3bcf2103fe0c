//! Durations as a mergeable log-bucket histogram (the DDSketch idea with a fixed gamma).
//!
//! Each sample of at least one second falls in bucket `1 + floor(log_γ(seconds))`, so any
//! two histograms merge by adding counts per bucket: per-hour rows in SQL are summed with
//! `SUM(count) GROUP BY bucket` over any range, and [`Histogram::merge`] does the same in
//! memory. With γ = 1.04 a quantile of one second or more read back is within 2 % of the
//! true sample it stands for. Bucket 0 holds every wait under one second and reads back as
//! 0: a reply within the second is "immediate" at the resolution reports show (whole
//! seconds), and keeping the bucket bounds fixed keeps rows folded years apart mergeable.

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

    /// Adds one sample, in microseconds.
    pub fn record(&mut self, micros: i64) {
        self.add(bucket_of(micros), 1);
    }

    /// Adds every sample of `other`: the histogram of the two sets of samples together,
    /// whatever order or grouping they were merged in.
    pub fn merge(&mut self, other: &Histogram) {
        for (bucket, count) in &other.buckets {
            self.add(*bucket, *count);
        }
    }

    /// (bucket, count) pairs, lowest bucket first: how a histogram is stored.
    pub fn buckets(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.buckets.iter().map(|(bucket, count)| (*bucket, *count))
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
    fn quantiles_use_the_nearest_rank() {
        let mut histogram = Histogram::default();
        for seconds in [60, 180, 600] {
            histogram.record(seconds * 1_000_000);
        }
        assert_eq!(histogram.count(), 3);
        let p50 = histogram.quantile(0.5).expect("samples") as f64;
        assert!((p50 - 180e6).abs() / 180e6 < 0.02);
        let p90 = histogram.quantile(0.9).expect("samples") as f64;
        assert!((p90 - 600e6).abs() / 600e6 < 0.02);
        // p50 of two samples is the smaller one.
        let mut two = Histogram::default();
        two.record(10_000_000);
        two.record(20_000_000);
        assert_eq!(two.quantile(0.5), Some(value_of(bucket_of(10_000_000))));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        // Hours of samples, merged in two different groupings, against one histogram that
        // saw every sample: same buckets, same quantiles.
        let hours: Vec<Vec<i64>> = (1..=24)
            .map(|hour| {
                (0..hour)
                    .map(|i| (i * 37 + hour * 11) % 5_000 * 1_000_000)
                    .collect()
            })
            .collect();
        let mut all = Histogram::default();
        let mut per_hour = Vec::new();
        for samples in &hours {
            let mut hour = Histogram::default();
            for sample in samples {
                hour.record(*sample);
                all.record(*sample);
            }
            per_hour.push(hour);
        }
        let mut forward = Histogram::default();
        for hour in &per_hour {
            forward.merge(hour);
        }
        let (mut evens, mut odds) = (Histogram::default(), Histogram::default());
        for (index, hour) in per_hour.iter().enumerate().rev() {
            if index % 2 == 0 {
                evens.merge(hour);
            } else {
                odds.merge(hour);
            }
        }
        evens.merge(&odds);
        assert_eq!(forward, all);
        assert_eq!(evens, all);
        assert_eq!(all.count(), (1..=24).sum::<u64>());
        for q in [0.5, 0.9, 0.99] {
            assert_eq!(evens.quantile(q), all.quantile(q));
        }
        // Merging what is stored as rows gives the histogram back.
        let mut rows = Histogram::default();
        for (bucket, count) in all.buckets() {
            rows.add(bucket, count);
        }
        assert_eq!(rows, all);
    }
}
