//! When to renew a certificate, and how long to wait between failed attempts.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The share of a certificate's lifetime that renewal jitter may add after its midpoint.
pub const RENEW_JITTER_SHARE: f64 = 0.1;

/// When to renew: the lifetime's midpoint plus up to 10% of the lifetime, scaled by `jitter_fraction` (clamped to 0..=1).
pub fn renew_at(not_before: DateTime<Utc>, not_after: DateTime<Utc>, jitter_fraction: f64) -> DateTime<Utc> {
    let lifetime_ms = (not_after - not_before).num_milliseconds().max(0);
    let jitter = if jitter_fraction.is_nan() { 0.0 } else { jitter_fraction.clamp(0.0, 1.0) };
    let extra_ms = (lifetime_ms as f64 * RENEW_JITTER_SHARE * jitter) as i64;
    not_before + TimeDelta::milliseconds(lifetime_ms / 2 + extra_ms)
}

/// Exponential backoff with full jitter: base 1 s, doubling per attempt, capped at 60 s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The delay ceiling of the first attempt.
    pub const BASE: Duration = Duration::from_secs(1);
    /// The largest delay ceiling.
    pub const CAP: Duration = Duration::from_secs(60);

    /// A backoff at its first attempt.
    pub fn new() -> Self {
        Self::default()
    }

    /// The upper bound of the next delay: `min(CAP, BASE * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        Self::BASE.saturating_mul(2u32.saturating_pow(self.attempt)).min(Self::CAP)
    }

    /// The next delay, `ceiling * jitter_fraction` (clamped to 0..=1; pass a uniform random number), and advances.
    pub fn next_delay(&mut self, jitter_fraction: f64) -> Duration {
        let jitter = if jitter_fraction.is_nan() { 0.0 } else { jitter_fraction.clamp(0.0, 1.0) };
        let delay = self.ceiling().mul_f64(jitter);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Back to the first attempt, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_at_is_the_midpoint_plus_bounded_jitter() {
        let nb = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let na = nb + TimeDelta::hours(24);
        let cases = [
            (0.0, TimeDelta::hours(12)),
            (1.0, TimeDelta::hours(12) + TimeDelta::minutes(144)),
            (0.5, TimeDelta::hours(12) + TimeDelta::minutes(72)),
            (7.0, TimeDelta::hours(12) + TimeDelta::minutes(144)),
            (-1.0, TimeDelta::hours(12)),
            (f64::NAN, TimeDelta::hours(12)),
        ];
        for (jitter, after_nb) in cases {
            assert_eq!(renew_at(nb, na, jitter), nb + after_nb, "jitter {jitter}");
        }
        assert_eq!(renew_at(na, nb, 1.0), na, "inverted validity renews at once");
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new();
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let c = b.ceiling();
                assert_eq!(b.clone().next_delay(1.0), c);
                b.next_delay(0.0);
                c.as_secs()
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        for _ in 0..100 {
            b.next_delay(0.5);
        }
        assert_eq!(b.ceiling(), Backoff::CAP);
        assert_eq!(b.next_delay(0.5), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.ceiling(), Backoff::BASE);
        assert_eq!(b.next_delay(0.25), Duration::from_millis(250));
    }
}
