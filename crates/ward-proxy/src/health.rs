//! MeshHealthCheck in the caller's proxy: active probes of every instance of a destination, sent
//! through the mesh as real calls are (mutual TLS to the instance's proxy, whose permissions
//! must let this caller in), as Envoy's active health checks do for Kuma.
//!
//! One task per destination with a MeshHealthCheck probes all its instances together, at most
//! [`PROBES_AT_ONCE`] at a time, then waits `interval` (plus the jitters) before the next round.
//! An instance becomes unhealthy after `unhealthyThreshold` failed probes in a row and healthy
//! again after `healthyThreshold` passed ones; instances start healthy. The task ends when the
//! destination's policy goes or changes (a new one takes over).

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, header::HeaderValue};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::{CancellationToken, DropGuard};
use ward_api::{dataplane::Protocol, mesh_health_check::Conf};
use ward_http::body::boxed;

use crate::{config::Endpoint, member::Member};

/// Probes of one destination running at once, at most.
pub const PROBES_AT_ONCE: usize = 16;

/// A destination's merged MeshHealthCheck, read once.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    interval: Duration,
    timeout: Duration,
    unhealthy_threshold: u32,
    healthy_threshold: u32,
    initial_jitter: Duration,
    interval_jitter: Duration,
    interval_jitter_percent: u32,
    /// Below this percentage of usable instances, all take traffic (None: not set here).
    pub panic_threshold: Option<f64>,
    /// Below the panic threshold, fail requests instead.
    pub fail_on_panic: bool,
    always_log_failures: bool,
    tcp: Option<TcpProbe>,
    http: Option<HttpProbe>,
    grpc: Option<GrpcProbe>,
    /// Whether `http` and `grpc` are given but disabled (then TCP stands in for them).
    disabled: (bool, bool),
}

#[derive(Debug, Clone, PartialEq)]
struct TcpProbe {
    send: Vec<u8>,
    receive: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
struct HttpProbe {
    path: String,
    /// Headers in order, each with whether it replaces (set) or appends (add).
    headers: Vec<(http::HeaderName, HeaderValue, bool)>,
    expected: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq)]
struct GrpcProbe {
    service: String,
    authority: Option<String>,
}

/// The probe a destination of some protocol gets, as Kuma selects it: the protocol's own when
/// given and enabled, else TCP when the protocol's own is given but disabled (or the protocol
/// is TCP), else none.
enum Kind<'a> {
    Tcp(&'a TcpProbe),
    Http(&'a HttpProbe),
    Grpc(&'a GrpcProbe),
}

impl Settings {
    /// The settings of a merged MeshHealthCheck conf.
    pub fn from_conf(conf: &serde_json::Value) -> Result<Settings, String> {
        let conf: Conf = serde_json::from_value(conf.clone()).map_err(|e| format!("MeshHealthCheck conf: {e}"))?;
        let duration =
            |d: &Option<ward_api::duration::KumaDuration>, default: Duration| d.as_ref().map_or(default, |d| d.get());
        let enabled = |disabled: Option<bool>| disabled != Some(true);
        let http = match conf.http.as_ref().filter(|h| enabled(h.disabled)) {
            None => None,
            Some(h) => {
                let mut headers = Vec::new();
                let modifier = h.request_headers_to_add.clone().unwrap_or_default();
                for (list, set) in [(modifier.add, false), (modifier.set, true)] {
                    for header in list.into_iter().flatten() {
                        let name = http::HeaderName::from_bytes(header.name.as_bytes())
                            .map_err(|e| format!("MeshHealthCheck header {:?}: {e}", header.name))?;
                        for (i, value) in header.value.split(',').enumerate() {
                            let value = HeaderValue::from_str(value)
                                .map_err(|e| format!("MeshHealthCheck header {:?}: {e}", header.name))?;
                            headers.push((name.clone(), value, set && i == 0));
                        }
                    }
                }
                let expected = h.expected_statuses.clone().unwrap_or_else(|| vec![200]);
                Some(HttpProbe {
                    path: h.path.clone().unwrap_or_else(|| "/".to_string()),
                    headers,
                    expected: expected.into_iter().filter_map(|s| u16::try_from(s).ok()).collect(),
                })
            }
        };
        Ok(Settings {
            interval: duration(&conf.interval, Duration::from_secs(60)),
            timeout: duration(&conf.timeout, Duration::from_secs(15)),
            unhealthy_threshold: conf.unhealthy_threshold.and_then(|v| u32::try_from(v).ok()).unwrap_or(5),
            healthy_threshold: conf.healthy_threshold.and_then(|v| u32::try_from(v).ok()).unwrap_or(1),
            initial_jitter: duration(&conf.initial_jitter, Duration::ZERO),
            interval_jitter: duration(&conf.interval_jitter, Duration::ZERO),
            interval_jitter_percent: conf.interval_jitter_percent.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            panic_threshold: conf.healthy_panic_threshold.as_ref().and_then(|p| p.value()),
            fail_on_panic: conf.fail_traffic_on_panic.unwrap_or(false),
            always_log_failures: conf.always_log_health_check_failures.unwrap_or(false),
            tcp: conf.tcp.filter(|t| enabled(t.disabled)).map(|t| TcpProbe {
                send: t.send.unwrap_or_default().into_bytes(),
                receive: t.receive.unwrap_or_default().into_iter().map(String::into_bytes).collect(),
            }),
            http,
            disabled: (
                conf.http.as_ref().is_some_and(|h| !enabled(h.disabled)),
                conf.grpc.as_ref().is_some_and(|g| !enabled(g.disabled)),
            ),
            grpc: conf.grpc.filter(|g| enabled(g.disabled)).map(|g| GrpcProbe {
                service: g.service_name.unwrap_or_default(),
                authority: g.authority.filter(|a| !a.is_empty()),
            }),
        })
    }

    /// The probe for a destination speaking `protocol` (none given: TCP, as in Kuma).
    fn kind(&self, protocol: Option<Protocol>) -> Option<Kind<'_>> {
        let tcp = self.tcp.as_ref().map(Kind::Tcp);
        let (http_disabled, grpc_disabled) = self.disabled;
        match protocol.unwrap_or(Protocol::Tcp) {
            Protocol::Http | Protocol::Http2 => self.http.as_ref().map(Kind::Http).or(tcp.filter(|_| http_disabled)),
            Protocol::Grpc => self.grpc.as_ref().map(Kind::Grpc).or(tcp.filter(|_| grpc_disabled)),
            Protocol::Tcp | Protocol::Kafka => tcp,
        }
    }

    fn pause(&self) -> Duration {
        let jitter = |max: Duration| {
            if max.is_zero() { Duration::ZERO } else { max.mul_f64(rand::random_range(0.0..1.0)) }
        };
        self.interval + jitter(self.interval_jitter) + jitter(self.interval * self.interval_jitter_percent / 100)
    }
}

/// What the probes found of one instance.
#[derive(Debug, Default)]
struct Host {
    unhealthy: bool,
    failed: u32,
    passed: u32,
}

/// The health of a destination's instances, kept by its probing task.
#[derive(Debug)]
pub struct Health {
    /// What it was made from.
    pub settings: Settings,
    hosts: Mutex<HashMap<SocketAddr, Host>>,
    _stop: DropGuard,
}

impl Health {
    /// The instances that failed their probes.
    pub fn unhealthy(&self) -> HashSet<SocketAddr> {
        let hosts = self.hosts.lock().expect("health lock");
        hosts.iter().filter(|(_, h)| h.unhealthy).map(|(a, _)| *a).collect()
    }

    fn record(&self, service: &str, endpoint: &Endpoint, result: Result<(), String>) {
        let mut hosts = self.hosts.lock().expect("health lock");
        let host = hosts.entry(endpoint.address).or_default();
        let s = &self.settings;
        match result {
            Ok(()) => {
                host.failed = 0;
                host.passed += 1;
                if host.unhealthy && host.passed >= s.healthy_threshold {
                    host.unhealthy = false;
                    tracing::info!(%service, instance = %endpoint.dataplane, "instance healthy again: it passes its health probes");
                }
            }
            Err(reason) => {
                host.passed = 0;
                host.failed += 1;
                if !host.unhealthy && host.failed >= s.unhealthy_threshold {
                    host.unhealthy = true;
                    tracing::warn!(%service, instance = %endpoint.dataplane, %reason, "instance unhealthy: it fails its health probes");
                } else if s.always_log_failures {
                    tracing::warn!(%service, instance = %endpoint.dataplane, %reason, "health probe failed");
                }
            }
        }
    }
}

/// Starts probing destination `service` with `settings`, until the returned health is dropped.
pub fn start(member: &Arc<Member>, service: &str, settings: Settings) -> Arc<Health> {
    let stop = CancellationToken::new();
    let health = Arc::new(Health { settings, hosts: Mutex::default(), _stop: stop.clone().drop_guard() });
    let (weak, service) = (Arc::downgrade(&health), service.to_string());
    let member = Arc::downgrade(member);
    tokio::spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = probe_rounds(member, weak, service) => {}
        }
    });
    health
}

async fn probe_rounds(member: Weak<Member>, health: Weak<Health>, service: String) {
    let Some(initial) = health.upgrade().map(|h| h.settings.initial_jitter) else { return };
    if !initial.is_zero() {
        tokio::time::sleep(initial.mul_f64(rand::random_range(0.0..1.0))).await;
    }
    loop {
        let (Some(member), Some(health)) = (member.upgrade(), health.upgrade()) else { return };
        let service_conf = member.state.config().and_then(|c| c.services.get(&service).cloned());
        let (endpoints, protocol) = service_conf.map(|s| (s.endpoints, s.protocol)).unwrap_or_default();
        if let Some(kind) = health.settings.kind(protocol) {
            let (timeout, member, service, kind) = (health.settings.timeout, &*member, service.as_str(), &kind);
            let probes = futures_util::stream::iter(endpoints.iter().cloned())
                .map(|e: Endpoint| async move {
                    let result = tokio::time::timeout(timeout, probe(member, service, &e, kind))
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
                    (e, result)
                })
                .buffer_unordered(PROBES_AT_ONCE);
            for (endpoint, result) in probes.collect::<Vec<_>>().await {
                health.record(service, &endpoint, result);
            }
            let present: HashSet<SocketAddr> = endpoints.iter().map(|e| e.address).collect();
            health.hosts.lock().expect("health lock").retain(|a, _| present.contains(a));
        }
        let pause = health.settings.pause();
        drop((member, health));
        tokio::time::sleep(pause).await;
    }
}

async fn probe(member: &Member, service: &str, endpoint: &Endpoint, kind: &Kind<'_>) -> Result<(), String> {
    match kind {
        Kind::Tcp(tcp) => {
            let mut stream = member.mesh.connect(endpoint, b"", None).await.map_err(|e| e.to_string())?;
            if tcp.send.is_empty() {
                return Ok(());
            }
            stream.write_all(&tcp.send).await.map_err(|e| format!("cannot send: {e}"))?;
            // Each expected block must come back, in order, not necessarily next to each other.
            let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
            loop {
                if contains_in_order(&seen, &tcp.receive) {
                    return Ok(());
                }
                let n = stream.read(&mut buf).await.map_err(|e| format!("cannot read: {e}"))?;
                if n == 0 {
                    return Err("the connection closed before the expected bytes came".into());
                }
                seen.extend_from_slice(&buf[..n]);
            }
        }
        Kind::Http(probe) => {
            let mut request = Request::get(probe.path.as_str()).header(http::header::HOST, service);
            let headers = request.headers_mut().expect("a valid request so far");
            for (name, value, set) in &probe.headers {
                if *set {
                    headers.insert(name.clone(), value.clone());
                } else {
                    headers.append(name.clone(), value.clone());
                }
            }
            let request = request.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
            let request = ward_http::headers::to_http2_form(request, service).map(boxed);
            let response = member.mesh.send(endpoint, request, &Default::default()).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            if probe.expected.contains(&status) { Ok(()) } else { Err(format!("status {status}")) }
        }
        Kind::Grpc(probe) => {
            // grpc.health.v1.HealthCheckRequest { service = 1 }, in one uncompressed frame.
            let mut message = Vec::new();
            if !probe.service.is_empty() {
                message.push(0x0a);
                push_varint(&mut message, probe.service.len() as u64);
                message.extend_from_slice(probe.service.as_bytes());
            }
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
            frame.extend_from_slice(&message);
            let request = Request::post("/grpc.health.v1.Health/Check")
                .header(http::header::HOST, probe.authority.as_deref().unwrap_or(service))
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header(http::header::TE, "trailers")
                .body(Full::new(Bytes::from(frame)))
                .map_err(|e| e.to_string())?;
            let request = ward_http::headers::to_http2_form(request, service).map(boxed);
            let response = member.mesh.send(endpoint, request, &Default::default()).await.map_err(|e| e.to_string())?;
            if response.status() != http::StatusCode::OK {
                return Err(format!("status {}", response.status()));
            }
            let head_status = response.headers().get("grpc-status").cloned();
            let body = response.into_body().collect().await.map_err(|e| e.to_string())?;
            let trailers = body.trailers().cloned();
            let grpc_status = trailers.as_ref().and_then(|t| t.get("grpc-status").cloned()).or(head_status);
            if grpc_status.as_ref().map(HeaderValue::as_bytes) != Some(b"0") {
                return Err(format!("grpc-status {grpc_status:?}"));
            }
            match serving_status(&body.to_bytes()) {
                Some(1) => Ok(()),
                other => Err(format!("health status {other:?}, not SERVING")),
            }
        }
    }
}

/// The `status` (field 1) of the HealthCheckResponse in a gRPC frame; absent is 0 (UNKNOWN).
fn serving_status(frame: &[u8]) -> Option<u64> {
    let message = frame.get(5..)?;
    let mut at = 0;
    while at < message.len() {
        let tag = message[at];
        at += 1;
        let (value, used) = read_varint(message.get(at..)?)?;
        at += used;
        match tag {
            0x08 => return Some(value),
            t if t & 7 == 0 => {}
            t if t & 7 == 2 => at += value as usize,
            _ => return None,
        }
    }
    Some(0)
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Whether every block of `blocks` is in `seen`, in order.
fn contains_in_order(seen: &[u8], blocks: &[Vec<u8>]) -> bool {
    let mut rest = seen;
    for block in blocks {
        match rest.windows(block.len().max(1)).position(|w| w == block.as_slice()) {
            Some(at) if !block.is_empty() => rest = &rest[at + block.len()..],
            Some(_) => {}
            None if block.is_empty() => {}
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_blocks_must_come_in_order() {
        let blocks = vec![b"foo".to_vec(), b"bar".to_vec()];
        assert!(contains_in_order(b"xxfooyybar", &blocks));
        assert!(!contains_in_order(b"barfoo", &blocks));
        assert!(!contains_in_order(b"foo", &blocks));
    }

    #[test]
    fn grpc_health_answers_are_read() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
    }

    #[test]
    fn the_probe_follows_the_protocol_as_in_kuma() {
        let settings = |conf: serde_json::Value| Settings::from_conf(&conf).unwrap();
        let both = settings(serde_json::json!({"http": {"path": "/h"}, "tcp": {}}));
        assert!(matches!(both.kind(Some(Protocol::Http)), Some(Kind::Http(_))));
        assert!(matches!(both.kind(None), Some(Kind::Tcp(_))));
        let http_off = settings(serde_json::json!({"http": {"disabled": true}, "tcp": {}}));
        assert!(matches!(http_off.kind(Some(Protocol::Http)), Some(Kind::Tcp(_))));
        let http_only = settings(serde_json::json!({"http": {}}));
        assert!(http_only.kind(Some(Protocol::Tcp)).is_none());
        let tcp_only = settings(serde_json::json!({"tcp": {}}));
        assert!(tcp_only.kind(Some(Protocol::Http)).is_none(), "Kuma falls back to TCP only for a disabled http");
    }
}
