//! Health of upstream targets: passive checks (how proxied requests went) and active
//! probes, with Kong's thresholds.
//!
//! Kong leaves a target that passive checks ejected unhealthy for good unless active
//! probes bring it back (its issues #5531, #7566). Here, when active probes cannot do
//! that, an ejected target gets a trial request after a pause (1 s, doubling up to 30 s
//! while trials fail); one that succeeds makes it healthy again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Empty};

use crate::config::schema;
use crate::error::ConfigErrors;

/// What happened when a target was used or probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observation {
    /// It answered with this status.
    Status(u16),
    /// The connection failed.
    TcpFailure,
    /// It did not answer in time.
    Timeout,
}

/// Thresholds of one kind of check (passive or active).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    healthy_statuses: Vec<u16>,
    /// Consecutive successes that make an unhealthy target healthy; 0: never.
    successes: u32,
    unhealthy_statuses: Vec<u16>,
    /// Consecutive failures of each kind that make a target unhealthy; 0: never.
    tcp_failures: u32,
    timeouts: u32,
    http_failures: u32,
}

/// How active probes are made.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub kind: ProbeKind,
    pub timeout: Duration,
    pub path: PathAndQuery,
    pub headers: HeaderMap,
    /// The server name of https probes (the target's host when unset).
    pub sni: Option<String>,
    /// Between probes of a healthy target; None: not probed.
    pub healthy_interval: Option<Duration>,
    /// Between probes of an unhealthy target; None: not probed.
    pub unhealthy_interval: Option<Duration>,
    pub rules: Rules,
}

/// What an active probe does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    Http,
    Https,
    Tcp,
}

/// An upstream's compiled health checks.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub passive: Rules,
    pub active: Option<Probe>,
    /// Whether ejected targets come back through trial requests (no active recovery).
    pub trials: bool,
}

/// Longest interval or timeout of a health check, in seconds (Kong's bound).
const MAX_SECONDS: f64 = 65_535.0;

/// A positive number of seconds as a duration; none for zero (or anything unusable).
fn seconds(s: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(s).ok().filter(|d| !d.is_zero())
}

impl Policy {
    /// Whether no check can change a target's health (Kong's `healthchecks_off`).
    pub fn checks_off(&self) -> bool {
        let probed =
            self.active.as_ref().is_some_and(|a| a.healthy_interval.is_some() || a.unhealthy_interval.is_some());
        let p = &self.passive;
        !probed && p.tcp_failures == 0 && p.timeouts == 0 && p.http_failures == 0
    }

    /// Compiles `healthchecks`, recording problems under `path`.
    pub fn compile(h: &schema::Healthchecks, path: &str, errors: &mut ConfigErrors) -> Policy {
        let a = &h.active;
        let p = &h.passive;
        let passive = Rules {
            healthy_statuses: p.healthy.http_statuses.clone(),
            successes: p.healthy.successes,
            unhealthy_statuses: p.unhealthy.http_statuses.clone(),
            tcp_failures: p.unhealthy.tcp_failures,
            timeouts: p.unhealthy.timeouts,
            http_failures: p.unhealthy.http_failures,
        };
        if p.kind != "http" && p.kind != "https" && p.kind != "tcp" {
            errors.add(format!("{path}.passive.type"), "must be http, https or tcp");
        }
        let kind = match a.kind.as_str() {
            "http" => ProbeKind::Http,
            "https" => ProbeKind::Https,
            "tcp" => ProbeKind::Tcp,
            _ => {
                errors.add(format!("{path}.active.type"), "must be http, https or tcp");
                ProbeKind::Http
            }
        };
        if kind == ProbeKind::Https && a.https_verify_certificate {
            errors.add(
                format!("{path}.active.https_verify_certificate"),
                "true is not supported (Ward reads no system trust store for probes): set it to false",
            );
        }
        for (field, value) in [
            ("timeout", a.timeout),
            ("healthy.interval", a.healthy.interval),
            ("unhealthy.interval", a.unhealthy.interval),
        ] {
            if !(0.0..=MAX_SECONDS).contains(&value) {
                errors.add(format!("{path}.active.{field}"), format!("must be between 0 and {MAX_SECONDS} (seconds)"));
            }
        }
        let probe_path = match a.http_path.parse::<PathAndQuery>() {
            Ok(p) if a.http_path.starts_with('/') => p,
            _ => {
                errors.add(format!("{path}.active.http_path"), "must be a path starting with / (URI characters only)");
                PathAndQuery::from_static("/")
            }
        };
        let mut headers = HeaderMap::new();
        for (name, values) in &a.headers {
            for v in values {
                match (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(v)) {
                    (Ok(n), Ok(v)) => {
                        headers.append(n, v);
                    }
                    _ => errors.add(format!("{path}.active.headers.{name}"), "must be a valid header"),
                }
            }
        }
        let rules = Rules {
            healthy_statuses: a.healthy.http_statuses.clone(),
            successes: a.healthy.successes,
            unhealthy_statuses: a.unhealthy.http_statuses.clone(),
            tcp_failures: a.unhealthy.tcp_failures,
            timeouts: a.unhealthy.timeouts,
            http_failures: a.unhealthy.http_failures,
        };
        let (healthy_interval, unhealthy_interval) = (seconds(a.healthy.interval), seconds(a.unhealthy.interval));
        let active = (healthy_interval.is_some() || unhealthy_interval.is_some()).then(|| Probe {
            kind,
            timeout: seconds(a.timeout).unwrap_or(Duration::from_secs(1)),
            path: probe_path,
            headers,
            sni: a.https_sni.clone(),
            healthy_interval,
            unhealthy_interval,
            rules,
        });
        let active_recovers = active.as_ref().is_some_and(|p| p.unhealthy_interval.is_some() && p.rules.successes > 0);
        Policy { passive, active, trials: !active_recovers }
    }
}

/// First pause before a trial request to an ejected target.
const FIRST_PAUSE_MS: i64 = 1_000;
/// Longest pause between trial requests.
const LONGEST_PAUSE_MS: i64 = 30_000;

#[derive(Debug, Default)]
struct Counters {
    successes: u32,
    tcp_failures: u32,
    timeouts: u32,
    http_failures: u32,
    /// When the next trial may start (ms since the epoch).
    trial_at: i64,
    pause: i64,
    /// A trial request is under way.
    in_trial: bool,
}

/// One target's health.
#[derive(Debug)]
pub(crate) struct State {
    healthy: AtomicBool,
    counters: Mutex<Counters>,
}

impl Default for State {
    fn default() -> Self {
        State { healthy: AtomicBool::new(true), counters: Mutex::default() }
    }
}

/// What an observation counts as.
enum Verdict {
    Success,
    Failure(Failure),
}

#[derive(Clone, Copy)]
enum Failure {
    Tcp,
    Timeout,
    Http,
}

impl Rules {
    fn verdict(&self, o: Observation) -> Option<Verdict> {
        match o {
            Observation::Status(s) if self.unhealthy_statuses.contains(&s) => Some(Verdict::Failure(Failure::Http)),
            Observation::Status(s) if self.healthy_statuses.contains(&s) => Some(Verdict::Success),
            Observation::Status(_) => None,
            Observation::TcpFailure => Some(Verdict::Failure(Failure::Tcp)),
            Observation::Timeout => Some(Verdict::Failure(Failure::Timeout)),
        }
    }
}

impl State {
    /// Whether the target takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// For an ejected target whose pause is over: claims the one trial request.
    pub fn claim_trial(&self, now: i64) -> bool {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_healthy() || now < c.trial_at {
            return false;
        }
        c.in_trial = true;
        // Until this trial reports, no other one starts.
        c.trial_at = now + c.pause.max(FIRST_PAUSE_MS);
        true
    }

    /// Records an observation judged by `rules`.
    pub fn record(&self, o: Observation, rules: &Rules, trials: bool, now: i64) {
        let Some(verdict) = rules.verdict(o) else { return };
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let healthy = self.is_healthy();
        match verdict {
            Verdict::Success => {
                c.tcp_failures = 0;
                c.timeouts = 0;
                c.http_failures = 0;
                c.successes = c.successes.saturating_add(1);
                let enough = rules.successes > 0 && c.successes >= rules.successes;
                if !healthy && (enough || (trials && c.in_trial)) {
                    *c = Counters::default();
                    self.healthy.store(true, Ordering::Release);
                    tracing::info!("upstream target is healthy again");
                }
            }
            Verdict::Failure(kind) => {
                c.successes = 0;
                let (count, limit) = match kind {
                    Failure::Tcp => (&mut c.tcp_failures, rules.tcp_failures),
                    Failure::Timeout => (&mut c.timeouts, rules.timeouts),
                    Failure::Http => (&mut c.http_failures, rules.http_failures),
                };
                *count = count.saturating_add(1);
                if healthy && limit > 0 && *count >= limit {
                    *c = Counters { trial_at: now + FIRST_PAUSE_MS, pause: FIRST_PAUSE_MS, ..Counters::default() };
                    self.healthy.store(false, Ordering::Release);
                    tracing::warn!("upstream target is unhealthy");
                } else if !healthy && c.in_trial {
                    c.in_trial = false;
                    c.pause = (c.pause * 2).clamp(FIRST_PAUSE_MS, LONGEST_PAUSE_MS);
                    c.trial_at = now + c.pause;
                }
            }
        }
    }
}

/// Probes a target once.
pub(crate) async fn probe(probe: &Probe, host: &str, port: u16) -> Observation {
    let tls = (probe.kind == ProbeKind::Https).then(|| super::connect::client_tls(None));
    let connector = super::connect::connector(tls, probe.timeout);
    let attempt = async {
        let name = probe.sni.clone().unwrap_or_else(|| host.to_string());
        let conn = match connector.open_as(host.to_string(), port, name).await {
            Ok(c) => c,
            Err(super::connect::ConnectError::Timeout) => return Observation::Timeout,
            Err(_) => return Observation::TcpFailure,
        };
        if probe.kind == ProbeKind::Tcp {
            return Observation::Status(200);
        }
        let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(conn).await else {
            return Observation::TcpFailure;
        };
        tokio::spawn(connection);
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = Uri::from(probe.path.clone());
        *request.headers_mut() = probe.headers.clone();
        let authority = if port == 80 || port == 443 { host.to_string() } else { format!("{host}:{port}") };
        if let Ok(v) = http::HeaderValue::from_str(&authority) {
            request.headers_mut().entry(http::header::HOST).or_insert(v);
        }
        match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await;
                Observation::Status(status)
            }
            Err(_) => Observation::TcpFailure,
        }
    };
    tokio::time::timeout(probe.timeout, attempt).await.unwrap_or(Observation::Timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(tcp_failures: u32, http_failures: u32, successes: u32) -> Rules {
        Rules {
            healthy_statuses: vec![200],
            successes,
            unhealthy_statuses: vec![500],
            tcp_failures,
            timeouts: 0,
            http_failures,
        }
    }

    #[test]
    fn ejected_by_passive_checks_then_back_after_a_trial() {
        let state = State::default();
        let r = rules(2, 0, 0);
        state.record(Observation::TcpFailure, &r, true, 0);
        assert!(state.is_healthy(), "one failure is below the threshold");
        state.record(Observation::TcpFailure, &r, true, 0);
        assert!(!state.is_healthy());
        assert!(!state.claim_trial(500), "no trial during the pause");
        assert!(state.claim_trial(1_000));
        assert!(!state.claim_trial(1_001), "one trial at a time");
        state.record(Observation::TcpFailure, &r, true, 1_010);
        assert!(!state.is_healthy());
        assert!(!state.claim_trial(2_500), "the pause doubled");
        assert!(state.claim_trial(3_010));
        state.record(Observation::Status(200), &r, true, 3_020);
        assert!(state.is_healthy(), "a successful trial brings it back");
    }

    #[test]
    fn successes_bring_back_when_configured_and_statuses_count() {
        let state = State::default();
        let r = rules(0, 2, 2);
        let table = [
            (Observation::Status(500), true),
            (Observation::Status(404), true), // neither healthy nor unhealthy: ignored
            (Observation::Status(500), false),
            (Observation::Status(200), false),
            (Observation::Status(200), true),
        ];
        for (o, healthy) in table {
            state.record(o, &r, false, 0);
            assert_eq!(state.is_healthy(), healthy, "{o:?}");
        }
    }

    #[test]
    fn counts_stop_at_their_largest_value() {
        // A target that answers well for ever keeps counting successes; so do failures.
        let table = [
            (Counters { successes: u32::MAX, ..Counters::default() }, Observation::Status(200), true),
            (Counters { tcp_failures: u32::MAX, ..Counters::default() }, Observation::TcpFailure, false),
            (Counters { timeouts: u32::MAX, ..Counters::default() }, Observation::Timeout, false),
            (Counters { http_failures: u32::MAX, ..Counters::default() }, Observation::Status(500), false),
        ];
        for (counters, o, healthy) in table {
            let state = State { healthy: AtomicBool::new(true), counters: Mutex::new(counters) };
            state.record(o, &Rules { timeouts: 3, ..rules(3, 3, 3) }, true, 0);
            assert_eq!(state.is_healthy(), healthy, "{o:?}");
        }
    }

    #[test]
    fn a_success_resets_failure_counts() {
        let state = State::default();
        let r = rules(2, 0, 0);
        state.record(Observation::TcpFailure, &r, true, 0);
        state.record(Observation::Status(200), &r, true, 0);
        state.record(Observation::TcpFailure, &r, true, 0);
        assert!(state.is_healthy(), "failures must be consecutive");
    }
}
