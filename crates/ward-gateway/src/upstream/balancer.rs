//! Choosing a target among an upstream's: round robin and consistent hashing over a ring
//! of slots (as Kong's ring balancer), or least connections; unhealthy targets are skipped.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

use super::Picked;
use super::health::{self, Observation, Policy};
use crate::config::{Entity, schema};
use crate::error::ConfigErrors;

/// How targets are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    RoundRobin,
    LeastConnections,
    ConsistentHashing,
}

/// One target of an upstream.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    weight: u32,
    in_flight: Arc<AtomicUsize>,
    health: health::State,
}

/// What a request is hashed on for consistent hashing.
#[derive(Debug, Clone)]
pub(crate) enum HashOn {
    None,
    Consumer,
    Ip,
    Header(http::HeaderName),
    Path,
    QueryArg(String),
}

/// A compiled `upstreams` entity.
#[derive(Debug)]
pub(crate) struct Balancer {
    /// The upstream's name.
    pub name: String,
    pub host_header: Option<String>,
    targets: Vec<Target>,
    /// Slots of the ring, each a target index, spread by weight.
    ring: Vec<usize>,
    algorithm: Algorithm,
    pub hash_on: HashOn,
    pub hash_fallback: HashOn,
    next: AtomicUsize,
    policy: Policy,
    /// Percent of healthy weight below which the whole upstream is down.
    threshold: f64,
}

/// Counts a request as in flight to a target until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Spreads `slots` slots over targets by weight, interleaved (smooth weighted round robin).
fn ring(weights: &[u32], slots: usize) -> Vec<usize> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut current = vec![0i64; weights.len()];
    (0..slots)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(weights) {
                *c += i64::from(*w);
            }
            let (best, _) =
                current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i))).expect("targets");
            current[best] -= total;
            best
        })
        .collect()
}

fn hash_on(
    kind: &str,
    header: Option<&str>,
    query_arg: Option<&str>,
    field: &str,
    errors: &mut ConfigErrors,
) -> HashOn {
    match kind {
        "none" => HashOn::None,
        "consumer" => HashOn::Consumer,
        "ip" => HashOn::Ip,
        "path" => HashOn::Path,
        "header" => match header.map(|h| http::HeaderName::from_bytes(h.as_bytes())) {
            Some(Ok(h)) => HashOn::Header(h),
            _ => {
                errors.add(field, "header needs a valid header name in its _header field");
                HashOn::None
            }
        },
        "query_arg" => match query_arg {
            Some(q) if !q.is_empty() => HashOn::QueryArg(q.to_string()),
            _ => {
                errors.add(field, "query_arg needs its _query_arg field");
                HashOn::None
            }
        },
        other => {
            errors.add(field, format!("'{other}' is not supported (none, consumer, ip, header, path, query_arg)"));
            HashOn::None
        }
    }
}

/// A target written as `host:port` (port 8000 when absent, as Kong), IPv6 in brackets.
fn parse_target(text: &str) -> Option<(String, u16)> {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']')? {
            (h, "") => (h.to_string(), None),
            (h, after) => (h.to_string(), Some(after.strip_prefix(':')?.parse().ok()?)),
        },
        None => match text.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.parse().ok()?)),
            _ => (text.to_string(), None),
        },
    };
    (!host.is_empty() && port != Some(0)).then_some((host, port.unwrap_or(8000)))
}

impl Balancer {
    /// Compiles an upstream and its targets.
    pub fn compile(
        e: &Entity<schema::Upstream>,
        targets: &[&Entity<schema::Target>],
        errors: &mut ConfigErrors,
    ) -> Balancer {
        let u = &e.item;
        let at = |field: &str| format!("{}.{field}", e.path);
        let algorithm = match u.algorithm.as_str() {
            "round-robin" => Algorithm::RoundRobin,
            "least-connections" => Algorithm::LeastConnections,
            "consistent-hashing" => Algorithm::ConsistentHashing,
            other => {
                errors.add(
                    at("algorithm"),
                    format!("'{other}' is not supported (round-robin, least-connections, consistent-hashing)"),
                );
                Algorithm::RoundRobin
            }
        };
        let hash_on =
            hash_on(&u.hash_on, u.hash_on_header.as_deref(), u.hash_on_query_arg.as_deref(), &at("hash_on"), errors);
        let hash_fallback = hash_on_fallback(u, &at("hash_fallback"), errors);
        if algorithm == Algorithm::ConsistentHashing && matches!(hash_on, HashOn::None) {
            errors.add(at("hash_on"), "consistent-hashing needs hash_on");
        }
        for (field, value) in [
            ("hash_on_cookie", &u.hash_on_cookie),
            ("hash_on_uri_capture", &u.hash_on_uri_capture),
            ("hash_fallback_uri_capture", &u.hash_fallback_uri_capture),
        ] {
            if value.is_some() {
                errors.add(at(field), "is not supported");
            }
        }
        if !(10..=65536).contains(&u.slots) {
            errors.add(at("slots"), "must be between 10 and 65536");
        }
        let mut list = Vec::new();
        for t in targets {
            match parse_target(&t.item.target) {
                Some((host, port)) => {
                    if t.item.weight > 65535 {
                        errors.add(format!("{}.weight", t.path), "must be between 0 and 65535");
                    }
                    if host.ends_with(".mesh") {
                        errors.add(
                            format!("{}.target", t.path),
                            "mesh targets need ward gateway run --mesh ...: not available yet",
                        );
                    }
                    list.push(Target {
                        host,
                        port,
                        weight: t.item.weight,
                        in_flight: Arc::default(),
                        health: health::State::default(),
                    })
                }
                None => errors.add(format!("{}.target", t.path), format!("'{}' is not host:port", t.item.target)),
            }
        }
        let weights: Vec<u32> = list.iter().map(|t| t.weight).collect();
        let policy = Policy::compile(&u.healthchecks, &at("healthchecks"), errors);
        let threshold = u.healthchecks.threshold;
        if !(0.0..=100.0).contains(&threshold) {
            errors.add(at("healthchecks.threshold"), "must be between 0 and 100");
        }
        Balancer {
            name: u.name.clone(),
            host_header: u.host_header.clone(),
            ring: ring(&weights, u.slots.clamp(10, 65536) as usize),
            targets: list,
            algorithm,
            hash_on,
            hash_fallback,
            next: AtomicUsize::new(0),
            policy,
            threshold,
        }
    }

    /// Whether enough of the upstream is healthy to use it at all.
    fn above_threshold(&self) -> bool {
        if self.threshold <= 0.0 {
            return true;
        }
        let total: u64 = self.targets.iter().map(|t| u64::from(t.weight)).sum();
        let healthy: u64 = self.targets.iter().filter(|t| t.health.is_healthy()).map(|t| u64::from(t.weight)).sum();
        total > 0 && (healthy as f64) * 100.0 / (total as f64) >= self.threshold
    }

    /// Whether target `i` may take this request: healthy, or its trial is due.
    fn usable(&self, i: usize, now: i64) -> bool {
        let t = &self.targets[i];
        t.weight > 0 && (t.health.is_healthy() || (self.policy.trials && t.health.claim_trial(now)))
    }

    /// Chooses a target; `hash` is the request's hash for consistent hashing.
    pub fn pick(&self, hash: Option<u64>, tried: &[usize]) -> Option<Picked> {
        if self.ring.is_empty() || !self.above_threshold() {
            return None;
        }
        let now = now_ms();
        let fresh = |i: usize| !tried.contains(&i);
        let chosen = match self.algorithm {
            Algorithm::LeastConnections => {
                let mut order: Vec<usize> = (0..self.targets.len()).collect();
                let start = self.next.fetch_add(1, Ordering::Relaxed) % order.len().max(1);
                order.rotate_left(start);
                order.sort_by_key(|&i| {
                    let t = &self.targets[i];
                    (!fresh(i), t.in_flight.load(Ordering::Acquire) * 1000 / t.weight.max(1) as usize)
                });
                order.into_iter().find(|&i| self.usable(i, now))
            }
            Algorithm::RoundRobin | Algorithm::ConsistentHashing => {
                let start = match (self.algorithm, hash) {
                    (Algorithm::ConsistentHashing, Some(h)) => h as usize,
                    _ => self.next.fetch_add(1, Ordering::Relaxed),
                };
                let slots = self.ring.len();
                let start = start % slots;
                let walk = |want_fresh: bool| {
                    (0..slots)
                        .map(|k| self.ring[(start + k) % slots])
                        .find(|&i| (!want_fresh || fresh(i)) && self.usable(i, now))
                };
                walk(true).or_else(|| walk(false))
            }
        }?;
        let t = &self.targets[chosen];
        t.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Picked {
            host: t.host.clone(),
            port: t.port,
            target: Some(chosen),
            in_flight: Some(InFlight(t.in_flight.clone())),
        })
    }

    /// `(upstream, target, address, state)` of each target, in Kong's states: `healthchecks_off`
    /// when no check can change its health, `healthy` or `unhealthy` otherwise. The address is
    /// the target's own `host:port` (a name is resolved only when connecting).
    pub fn health_report(&self) -> Vec<(String, String, String, &'static str)> {
        let off = self.policy.checks_off();
        self.targets
            .iter()
            .map(|t| {
                let target = match t.host.parse::<std::net::Ipv6Addr>() {
                    Ok(_) => format!("[{}]:{}", t.host, t.port),
                    Err(_) => format!("{}:{}", t.host, t.port),
                };
                let state = match (off, t.health.is_healthy()) {
                    (true, _) => "healthchecks_off",
                    (false, true) => "healthy",
                    (false, false) => "unhealthy",
                };
                (self.name.clone(), target.clone(), target, state)
            })
            .collect()
    }

    /// Records how a proxied request to target `i` went.
    pub fn report_passive(&self, i: usize, o: Observation) {
        self.targets[i].health.record(o, &self.policy.passive, self.policy.trials, now_ms());
    }

    /// Starts active probes of every target until `stop` is cancelled.
    pub fn start_probes(self: &Arc<Self>, stop: &CancellationToken) {
        let Some(probe) = self.policy.active.clone() else { return };
        for i in 0..self.targets.len() {
            let (balancer, probe, stop) = (self.clone(), probe.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let t = &balancer.targets[i];
                    let interval =
                        if t.health.is_healthy() { probe.healthy_interval } else { probe.unhealthy_interval };
                    let wait = interval.unwrap_or(std::time::Duration::from_secs(1));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    if interval.is_some() {
                        let o = health::probe(&probe, &t.host, t.port).await;
                        t.health.record(o, &probe.rules, false, now_ms());
                    }
                }
            });
        }
    }
}

fn hash_on_fallback(u: &schema::Upstream, field: &str, errors: &mut ConfigErrors) -> HashOn {
    hash_on(&u.hash_fallback, u.hash_fallback_header.as_deref(), u.hash_fallback_query_arg.as_deref(), field, errors)
}

/// A stable hash of a request's hash key.
pub(crate) fn hash_key(key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_follows_weights_and_interleaves() {
        let r = ring(&[1, 1], 10);
        assert_eq!(r, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        let r = ring(&[3, 1, 0], 100);
        assert_eq!(r.iter().filter(|&&i| i == 0).count(), 75);
        assert_eq!(r.iter().filter(|&&i| i == 2).count(), 0);
        assert!(ring(&[0, 0], 10).is_empty());
    }

    #[test]
    fn any_request_hash_picks_a_target() {
        let upstream = serde_json::json!({"name": "pool", "algorithm": "consistent-hashing", "hash_on": "ip"});
        fn entity<T>(path: &str, item: T) -> Entity<T> {
            Entity { path: path.into(), id: path.into(), item, links: Default::default() }
        }
        let upstream = entity("upstreams[0]", serde_json::from_value(upstream).unwrap());
        let targets: Vec<Entity<schema::Target>> = ["10.0.0.1:80", "10.0.0.2:80"]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                entity(&format!("targets[{i}]"), serde_json::from_value(serde_json::json!({"target": t})).unwrap())
            })
            .collect();
        let mut errors = ConfigErrors::default();
        let balancer = Balancer::compile(&upstream, &targets.iter().collect::<Vec<_>>(), &mut errors);
        assert!(errors.is_empty(), "{errors}");
        // A hash is whatever the client's key hashes to, the largest ones too; with every
        // target tried already, the walk goes round the whole ring before it picks one.
        for hash in [0, 1, u64::MAX - 1, u64::MAX] {
            for tried in [&[][..], &[0, 1]] {
                assert!(balancer.pick(Some(hash), tried).is_some(), "{hash} {tried:?}");
            }
        }
    }

    #[test]
    fn targets_parse_like_kong() {
        let table = [
            ("10.0.0.1:9000", Some(("10.0.0.1", 9000))),
            ("example.com", Some(("example.com", 8000))),
            ("[::1]:81", Some(("::1", 81))),
            ("[::1]", Some(("::1", 8000))),
            ("host:notaport", None),
            ("[::1]x", None),
            ("[::1]:", None),
            ("h:0", None),
            ("h:65536", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_target(text), want.map(|(h, p)| (h.to_string(), p)), "{text}");
        }
    }
}
