//! Counters of the `local` policy: in this process, one lock per shard of counters, so
//! that checking and counting a request are one step.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use super::{Outcome, PERIODS, Period, Usage};

/// One counter's windows, by period: (window start in ms, requests counted).
type Windows = [(i64, u64); 6];

/// Counters in this process, shared by every configuration (a reload keeps the counts).
#[derive(Debug)]
pub(crate) struct LocalCounters {
    shards: Vec<Mutex<HashMap<String, Windows>>>,
}

/// Entries a shard holds before expired ones are dropped.
const SHARD_SWEEP_AT: usize = 4096;

impl Default for LocalCounters {
    fn default() -> Self {
        LocalCounters { shards: (0..64).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

impl LocalCounters {
    /// Counts one request for `key` unless that would exceed a limit.
    pub(super) fn hit(&self, key: &str, limits: &[(Period, u64)], now: i64) -> Outcome {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let shard = &self.shards[hasher.finish() as usize % self.shards.len()];
        let mut map = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= SHARD_SWEEP_AT && !map.contains_key(key) {
            map.retain(|_, windows| {
                windows
                    .iter()
                    .zip(PERIODS)
                    .any(|((start, count), (period, ..))| *count > 0 && period.window(*start).1 > now)
            });
        }
        if !map.contains_key(key) {
            map.insert(key.to_string(), [(0, 0); 6]);
        }
        let windows = map.get_mut(key).expect("inserted above");
        let mut usage = Vec::with_capacity(limits.len());
        let mut refused_by = None;
        for &(period, limit) in limits {
            let slot = &mut windows[period.index()];
            let (start, _) = period.window(now);
            if slot.0 != start {
                *slot = (start, 0);
            }
            if refused_by.is_none() && slot.1 + 1 > limit {
                refused_by = Some(period);
            }
            usage.push(Usage { period, limit, count: slot.1 });
        }
        if refused_by.is_none() {
            for u in &mut usage {
                windows[u.period.index()].1 += 1;
                u.count += 1;
            }
        }
        Outcome { usage, refused_by }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::headers;
    use super::*;

    #[test]
    fn local_counts_never_exceed_and_report_remaining() {
        let counters = LocalCounters::default();
        let limits = [(Period::Minute, 6), (Period::Hour, 100)];
        let now = 1_700_000_000_000;
        let mut remaining = Vec::new();
        for _ in 0..7 {
            let outcome = counters.hit("k", &limits, now);
            let (h, _) = headers(&outcome, now);
            remaining.push((outcome.refused_by, h["ratelimit-remaining"].to_str().unwrap().to_string()));
        }
        let want: Vec<(Option<Period>, String)> = ["5", "4", "3", "2", "1", "0"]
            .iter()
            .map(|r| (None, r.to_string()))
            .chain([(Some(Period::Minute), "0".to_string())])
            .collect();
        assert_eq!(remaining, want);
        // The refused request counted nowhere: the hour still shows six.
        let outcome = counters.hit("k", &limits, now);
        assert_eq!(outcome.usage[1].count, 6);
        // A new minute starts afresh.
        assert_eq!(counters.hit("k", &limits, now + 60_000).usage[0].count, 1);
    }

    #[test]
    fn local_counts_are_exact_across_threads() {
        let counters = Arc::new(LocalCounters::default());
        let admitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let now = 1_700_000_000_000;
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, a) = (counters.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if c.hit("shared", &[(Period::Hour, 1000)], now).refused_by.is_none() {
                            a.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(std::sync::atomic::Ordering::Relaxed), 1000);
    }
}
