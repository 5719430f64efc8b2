//! MeshCircuitBreaker in the caller's proxy: per destination, how many requests and retries run
//! at once, and which instances are ejected while they fail (outlier detection), as Envoy's
//! clusters do for Kuma.
//!
//! Ejection: an instance is ejected when a detector fires, if fewer than `maxEjectionPercent`
//! of the destination's instances are ejected already; its n-th ejection lasts n ×
//! `baseEjectionTime`, and it is back once that passed. While fewer than
//! `healthyPanicThreshold` percent of the instances are not ejected, ejections are ignored
//! and every instance takes traffic. Success rates and failure percentages are judged once
//! per `interval`, over the requests of that interval.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use ward_api::mesh_circuit_breaker::{Conf, Percent};

use crate::{config::Endpoint, health::Health};

/// How a try toward an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered with this status.
    Answered(u16),
    /// It could not be reached or the exchange broke off (a locally originated failure).
    Unreachable,
    /// A connection to it was made (TCP): ends a run of failures to reach it.
    Reached,
}

/// The outlier detection settings of a destination.
#[derive(Debug, Clone)]
struct Detection {
    interval: Duration,
    base_ejection: Duration,
    max_ejection_percent: f64,
    split: bool,
    total: Option<u32>,
    gateway: Option<u32>,
    local: Option<u32>,
    /// (minimum hosts, request volume, standard deviation factor).
    success_rate: Option<(usize, u32, f64)>,
    /// (minimum hosts, request volume, threshold percent).
    failure_percentage: Option<(usize, u32, f64)>,
    /// `healthyPanicThreshold`, when set here.
    panic_threshold: Option<f64>,
}

/// What is known of one instance.
#[derive(Debug, Default)]
struct Host {
    total: u32,
    gateway: u32,
    local: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
    successes: u32,
    failures: u32,
}

/// A destination's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    max_requests: Option<u32>,
    max_retries: Option<u32>,
    detection: Option<Detection>,
    requests: Arc<AtomicU32>,
    retries: Arc<AtomicU32>,
    hosts: Mutex<(HashMap<SocketAddr, Host>, Instant)>,
}

/// A request or retry counted against a limit until dropped.
pub struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request's slot until it is done with.
pub struct Held<B> {
    inner: B,
    _slot: Option<Slot>,
}

impl<B> Held<B> {
    /// `inner`, holding `slot`.
    pub fn new(inner: B, slot: Option<Slot>) -> Self {
        Held { inner, _slot: slot }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Takes a slot under `limit` on `counter`, if one is free.
fn take(counter: &Arc<AtomicU32>, limit: Option<u32>) -> Option<Slot> {
    let Some(limit) = limit else {
        counter.fetch_add(1, Ordering::AcqRel);
        return Some(Slot(counter.clone()));
    };
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).ok()?;
    Some(Slot(counter.clone()))
}

impl Breaker {
    /// The breaker of a merged MeshCircuitBreaker conf.
    pub fn from_conf(conf: &serde_json::Value) -> Result<Breaker, String> {
        let conf: Conf = serde_json::from_value(conf.clone()).map_err(|e| format!("MeshCircuitBreaker conf: {e}"))?;
        let limits = conf.connection_limits.unwrap_or_default();
        let detection = conf.outlier_detection.filter(|o| o.disabled != Some(true)).map(|o| {
            let d = o.detectors.unwrap_or_default();
            Detection {
                interval: o.interval.map_or(Duration::from_secs(10), |d| d.get()),
                base_ejection: o.base_ejection_time.map_or(Duration::from_secs(30), |d| d.get()),
                max_ejection_percent: f64::from(o.max_ejection_percent.unwrap_or(10)),
                split: o.split_external_and_local_errors.unwrap_or(false),
                total: d.total_failures.and_then(|c| c.consecutive),
                gateway: d.gateway_failures.and_then(|c| c.consecutive),
                local: d.local_origin_failures.and_then(|c| c.consecutive),
                success_rate: d.success_rate.map(|s| {
                    let factor = s.standard_deviation_factor.as_ref().and_then(Percent::number).unwrap_or(1.9);
                    (s.minimum_hosts.unwrap_or(5) as usize, s.request_volume.unwrap_or(100), factor)
                }),
                failure_percentage: d.failure_percentage.map(|f| {
                    let threshold = f64::from(f.threshold.unwrap_or(85));
                    (f.minimum_hosts.unwrap_or(5) as usize, f.request_volume.unwrap_or(50), threshold)
                }),
                panic_threshold: o.healthy_panic_threshold.as_ref().and_then(Percent::value),
            }
        });
        Ok(Breaker {
            max_requests: limits.max_requests,
            max_retries: limits.max_retries,
            detection,
            requests: Arc::default(),
            retries: Arc::default(),
            hosts: Mutex::new((HashMap::new(), Instant::now())),
        })
    }

    /// A request slot, unless `maxRequests` run already.
    pub fn admit(&self) -> Option<Slot> {
        take(&self.requests, self.max_requests)
    }

    /// A retry slot, unless `maxRetries` run already.
    pub fn admit_retry(&self) -> Option<Slot> {
        take(&self.retries, self.max_retries)
    }

    /// The instances ejected now.
    fn ejected(&self) -> HashSet<SocketAddr> {
        let Some(detection) = &self.detection else { return HashSet::new() };
        let now = Instant::now();
        let mut guard = self.hosts.lock().expect("outlier state lock");
        self.sweep(&mut guard, detection, now);
        guard.0.iter().filter(|(_, h)| h.ejected_until.is_some_and(|t| t > now)).map(|(a, _)| *a).collect()
    }

    /// Records how a try toward `host` ended, out of `total` instances, ejecting it when a
    /// consecutive-failures detector fires.
    pub fn record(&self, host: SocketAddr, outcome: Outcome, total: usize) {
        let Some(d) = &self.detection else { return };
        let now = Instant::now();
        let mut guard = self.hosts.lock().expect("outlier state lock");
        self.sweep(&mut guard, d, now);
        let h = guard.0.entry(host).or_default();
        let failed = match outcome {
            Outcome::Answered(status) => {
                h.local = 0;
                if status >= 500 {
                    h.total += 1;
                    if matches!(status, 502..=504) {
                        h.gateway += 1;
                    } else {
                        h.gateway = 0;
                    }
                    true
                } else {
                    h.total = 0;
                    h.gateway = 0;
                    false
                }
            }
            Outcome::Reached => {
                h.local = 0;
                false
            }
            Outcome::Unreachable if d.split => {
                h.local += 1;
                true
            }
            Outcome::Unreachable => {
                // Without the split, a failure to reach it counts as a gateway failure (503).
                h.total += 1;
                h.gateway += 1;
                true
            }
        };
        if failed {
            h.failures += 1;
        } else {
            h.successes += 1;
        }
        let fires = |count: u32, limit: Option<u32>| limit.is_some_and(|l| count >= l);
        let detected = fires(h.total, d.total) || fires(h.gateway, d.gateway) || (d.split && fires(h.local, d.local));
        if detected {
            h.total = 0;
            h.gateway = 0;
            h.local = 0;
            eject(&mut guard.0, host, d, now, total);
        }
    }

    /// Once per interval: lets expired ejections go, and judges success rates and failure
    /// percentages over the interval's requests.
    fn sweep(&self, state: &mut (HashMap<SocketAddr, Host>, Instant), d: &Detection, now: Instant) {
        let (hosts, last) = state;
        if now.duration_since(*last) < d.interval {
            return;
        }
        *last = now;
        let total = hosts.len();
        let rates: Vec<(SocketAddr, f64, u32)> = hosts
            .iter()
            .filter(|(_, h)| h.ejected_until.is_none_or(|t| t <= now))
            .map(|(a, h)| {
                let n = h.successes + h.failures;
                (*a, if n == 0 { 100.0 } else { 100.0 * f64::from(h.successes) / f64::from(n) }, n)
            })
            .collect();
        let mut outliers = Vec::new();
        if let Some((minimum, volume, threshold)) = d.failure_percentage {
            let judged: Vec<_> = rates.iter().filter(|r| r.2 >= volume).collect();
            if judged.len() >= minimum {
                outliers.extend(judged.iter().filter(|r| 100.0 - r.1 >= threshold).map(|r| r.0));
            }
        }
        if let Some((minimum, volume, factor)) = d.success_rate {
            let judged: Vec<_> = rates.iter().filter(|r| r.2 >= volume).collect();
            if judged.len() >= minimum {
                let mean = judged.iter().map(|r| r.1).sum::<f64>() / judged.len() as f64;
                let variance = judged.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / judged.len() as f64;
                let floor = mean - factor * variance.sqrt();
                outliers.extend(judged.iter().filter(|r| r.1 < floor).map(|r| r.0));
            }
        }
        for host in hosts.values_mut() {
            host.successes = 0;
            host.failures = 0;
        }
        for host in outliers {
            eject(hosts, host, d, now, total);
        }
    }
}

/// Ejects `host` unless `maxEjectionPercent` of the `total` instances are ejected already.
fn eject(hosts: &mut HashMap<SocketAddr, Host>, host: SocketAddr, d: &Detection, now: Instant, total: usize) {
    let ejected = hosts.values().filter(|h| h.ejected_until.is_some_and(|t| t > now)).count();
    let total = total.max(hosts.len()).max(1);
    if 100.0 * ejected as f64 / total as f64 >= d.max_ejection_percent {
        return;
    }
    let h = hosts.entry(host).or_default();
    if h.ejected_until.is_some_and(|t| t > now) {
        return;
    }
    h.ejections += 1;
    h.ejected_until = Some(now + d.base_ejection * h.ejections);
    tracing::info!(%host, until = ?d.base_ejection * h.ejections, "instance ejected by outlier detection");
}

/// The one answer to "which instances of a destination may take this try": those that pass
/// their MeshHealthCheck probes (`health`) and are not ejected by the MeshCircuitBreaker's
/// outlier detection (`breaker`). While fewer than the healthy panic threshold percent of the
/// instances are left (the MeshCircuitBreaker's, else the MeshHealthCheck's, else 50, as
/// Envoy's cluster has one), every instance takes traffic, or none when the MeshHealthCheck
/// says `failTrafficOnPanic`.
pub fn choosable(endpoints: &[Endpoint], breaker: Option<&Breaker>, health: Option<&Health>) -> Vec<Endpoint> {
    let detection = breaker.and_then(|b| b.detection.as_ref());
    if detection.is_none() && health.is_none() {
        return endpoints.to_vec();
    }
    let ejected = breaker.map(Breaker::ejected).unwrap_or_default();
    let unhealthy = health.map(Health::unhealthy).unwrap_or_default();
    let healthy: Vec<Endpoint> = endpoints
        .iter()
        .filter(|e| !ejected.contains(&e.address) && !unhealthy.contains(&e.address))
        .cloned()
        .collect();
    let share = if endpoints.is_empty() { 100.0 } else { 100.0 * healthy.len() as f64 / endpoints.len() as f64 };
    let threshold = detection
        .and_then(|d| d.panic_threshold)
        .or_else(|| health.and_then(|h| h.settings.panic_threshold))
        .unwrap_or(50.0);
    if share >= threshold {
        healthy
    } else if health.is_some_and(|h| h.settings.fail_on_panic) {
        Vec::new()
    } else {
        endpoints.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn endpoints(n: u8) -> Vec<Endpoint> {
        (1..=n)
            .map(|i| Endpoint {
                address: SocketAddr::from(([127, 0, 0, i], 8080)),
                dataplane: format!("web-{i}"),
                identity: "spiffe://m/web".parse().unwrap(),
            })
            .collect()
    }

    fn breaker(conf: serde_json::Value) -> Breaker {
        Breaker::from_conf(&conf).unwrap()
    }

    #[test]
    fn consecutive_gateway_failures_eject_an_instance_and_success_resets_the_count() {
        let b = breaker(json!({"outlierDetection": {"maxEjectionPercent": 50, "healthyPanicThreshold": 0,
            "detectors": {"gatewayFailures": {"consecutive": 3}}}}));
        let all = endpoints(2);
        let bad = all[0].address;
        b.record(bad, Outcome::Answered(502), 2);
        b.record(bad, Outcome::Answered(503), 2);
        b.record(bad, Outcome::Answered(200), 2);
        b.record(bad, Outcome::Answered(504), 2);
        b.record(bad, Outcome::Answered(502), 2);
        assert_eq!(choosable(&all, Some(&b), None).len(), 2, "a success in between resets the count");
        b.record(bad, Outcome::Unreachable, 2);
        let usable = choosable(&all, Some(&b), None);
        assert_eq!(usable.len(), 1);
        assert_eq!(usable[0].address, all[1].address);
    }

    #[test]
    fn max_ejection_percent_and_the_panic_threshold_keep_instances_in_use() {
        let conf = |panic: u32| {
            json!({"outlierDetection": {"maxEjectionPercent": 50, "healthyPanicThreshold": panic,
                "detectors": {"totalFailures": {"consecutive": 1}}}})
        };
        let all = endpoints(2);
        let b = breaker(conf(50));
        b.record(all[0].address, Outcome::Answered(500), 2);
        b.record(all[1].address, Outcome::Answered(500), 2);
        let usable = choosable(&all, Some(&b), None);
        assert_eq!(usable.len(), 1, "the second ejection would pass 50% of the instances");
        assert_eq!(usable[0].address, all[1].address);
        let panicking = breaker(conf(60));
        panicking.record(all[0].address, Outcome::Answered(500), 2);
        assert_eq!(
            choosable(&all, Some(&panicking), None).len(),
            2,
            "50% healthy is below the 60% threshold: all take traffic"
        );
    }

    #[test]
    fn limits_refuse_what_runs_beyond_them() {
        let b = breaker(json!({"connectionLimits": {"maxRequests": 2, "maxRetries": 1}}));
        let (a, c) = (b.admit().unwrap(), b.admit().unwrap());
        assert!(b.admit().is_none());
        drop(a);
        assert!(b.admit().is_some());
        let r = b.admit_retry().unwrap();
        assert!(b.admit_retry().is_none());
        drop((r, c));
        assert!(b.admit_retry().is_some());
    }

    #[test]
    fn a_split_counts_failures_to_reach_an_instance_apart() {
        let b = breaker(json!({"outlierDetection": {"maxEjectionPercent": 100, "healthyPanicThreshold": 0,
            "splitExternalAndLocalErrors": true,
            "detectors": {"localOriginFailures": {"consecutive": 2}, "gatewayFailures": {"consecutive": 5}}}}));
        let all = endpoints(1);
        let host = all[0].address;
        b.record(host, Outcome::Answered(503), 1);
        b.record(host, Outcome::Unreachable, 1);
        assert_eq!(choosable(&all, Some(&b), None).len(), 1);
        b.record(host, Outcome::Unreachable, 1);
        assert!(choosable(&all, Some(&b), None).is_empty(), "two failures to reach it in a row");
    }
}
