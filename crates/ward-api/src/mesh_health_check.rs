//! The `MeshHealthCheck` policy: active probes a dataplane's proxy sends to each instance of a
//! destination (`to[]`), taking the instances that fail them out of its choice until they pass
//! again, checked as Kuma 2.14's validator checks it.

use serde::{Deserialize, Serialize};

use crate::{
    duration::KumaDuration,
    error::Causes,
    mesh_circuit_breaker::Percent,
    permission::TargetKind,
    rules::{Inbound, Shape, Targeted},
};

/// A MeshHealthCheck.
pub type MeshHealthCheck = Targeted<Conf>;

/// One `default` of a MeshHealthCheck.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Conf {
    /// Time between probes of one instance (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<KumaDuration>,
    /// How long a probe may take before it counts as failed (default 15s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<KumaDuration>,
    /// Failed probes in a row that make an instance unhealthy (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<i64>,
    /// Passed probes in a row that make an unhealthy instance healthy (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<i64>,
    /// A random delay up to this before the first probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_jitter: Option<KumaDuration>,
    /// A random delay up to this added to every interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_jitter: Option<KumaDuration>,
    /// A random delay up to this percent of the interval added to every interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_jitter_percent: Option<i64>,
    /// Below this percentage of healthy instances, every instance takes traffic (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold: Option<Percent>,
    /// Below the panic threshold, fail the requests instead of sending them to every instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_traffic_on_panic: Option<bool>,
    /// A file for probe events; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log_path: Option<String>,
    /// Log every failed probe, not only the changes of health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_log_health_check_failures: Option<bool>,
    /// The interval while the destination carries no traffic; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_traffic_interval: Option<KumaDuration>,
    /// The TCP probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// The HTTP probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// The gRPC health probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcProbe>,
    /// Whether probes keep their connection between them; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_connection: Option<bool>,
}

/// `tcp`: connect, optionally send bytes and expect bytes back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    /// Turns this probe off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// What to send once connected (as Kuma does, the text's own bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// What must come back, each in order (as Kuma does, the texts' own bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive: Option<Vec<String>>,
}

/// `http`: a GET whose status must be one of the expected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpProbe {
    /// Turns this probe off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// The path probed (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Headers sent with the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_to_add: Option<HeaderModifier>,
    /// The statuses that pass (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_statuses: Option<Vec<i64>>,
}

/// `grpc`: grpc.health.v1's Check, which must answer SERVING.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcProbe {
    /// Turns this probe off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// The service asked about (default: the server as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The `:authority` of the probe (default: the destination's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// Headers set (replacing) or added (appending) to a probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifier {
    /// Replaced when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<Header>>,
    /// Appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Vec<Header>>,
}

/// A header name and value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Its name.
    pub name: String,
    /// Its value; commas separate several values, as in Kuma.
    pub value: String,
}

/// The shape Ward serves: outbound destinations only.
pub fn shape() -> Shape<'static, Conf> {
    use TargetKind::*;
    Shape {
        top: &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane],
        gateways: "Ward's gateway does not apply MeshHealthCheck: its upstreams keep Kong's health checks",
        to: &[Mesh, MeshService],
        routed_to: None,
        from: &[Mesh],
        inbound: Inbound::None,
        unsupported: &[
            (MeshGateway, "Ward has no MeshGateway"),
            (MeshExternalService, "Ward reaches a MeshExternalService's endpoints directly and does not probe them"),
            (MeshMultiZoneService, "Ward runs one zone and has no MeshMultiZoneService"),
        ],
        conf: &check_conf,
        conditioned: &|_, _, _| {},
    }
}

const POSITIVE: &str = "must be greater than zero when defined";

fn check_conf(conf: &Conf, at: &str, causes: &mut Causes) {
    for (field, d) in [
        ("interval", &conf.interval),
        ("timeout", &conf.timeout),
        ("initialJitter", &conf.initial_jitter),
        ("intervalJitter", &conf.interval_jitter),
        ("noTrafficInterval", &conf.no_traffic_interval),
    ] {
        if d.as_ref().is_some_and(|d| d.get().is_zero()) {
            causes.add(format!("{at}.{field}"), POSITIVE);
        }
    }
    for (field, v) in [("unhealthyThreshold", conf.unhealthy_threshold), ("healthyThreshold", conf.healthy_threshold)] {
        if v.is_some_and(|v| v <= 0 || v > i64::from(u32::MAX)) {
            causes.add(format!("{at}.{field}"), POSITIVE);
        }
    }
    if conf.interval_jitter_percent.is_some_and(|p| !(0..=100).contains(&p)) {
        causes.add(format!("{at}.intervalJitterPercent"), "must be in inclusive range [0, 100]");
    }
    if conf.healthy_panic_threshold.as_ref().is_some_and(|p| p.value().is_none()) {
        causes.add(format!("{at}.healthyPanicThreshold"), "must be in inclusive range [0.0, 100.0]");
    }
    if let Some(path) = &conf.event_log_path {
        if is_file_path(path) {
            causes.unsupported(
                format!("{at}.eventLogPath"),
                "Ward's proxies log health changes (and, with alwaysLogHealthCheckFailures, every failed probe) \
                 to their own log, not to a file of Envoy's event format",
            );
        } else {
            causes.add(format!("{at}.eventLogPath"), "must be a valid path when defined");
        }
    }
    if conf.no_traffic_interval.is_some() {
        causes.unsupported(
            format!("{at}.noTrafficInterval"),
            "Ward's proxies probe every destination with a MeshHealthCheck at its interval, traffic or not",
        );
    }
    if conf.reuse_connection.is_some() {
        causes.unsupported(
            format!("{at}.reuseConnection"),
            "HTTP and gRPC probes always share the proxy's connection to the instance and TCP probes open one \
             each time",
        );
    }
    if let Some(http) = &conf.http {
        if http.path.as_deref() == Some("") {
            causes.add(format!("{at}.http.path"), "must be defined");
        }
        for (i, status) in http.expected_statuses.iter().flatten().enumerate() {
            if !(100..600).contains(status) {
                causes.add(format!("{at}.http.expectedStatuses[{i}]"), "must be in inclusive range [100, 599]");
            }
        }
        let headers = http.request_headers_to_add.as_ref();
        for (list, entries) in
            [("set", headers.and_then(|h| h.set.as_ref())), ("add", headers.and_then(|h| h.add.as_ref()))]
        {
            for (i, h) in entries.into_iter().flatten().enumerate() {
                let at = format!("{at}.http.requestHeadersToAdd.{list}[{i}]");
                if h.name.is_empty() || !h.name.bytes().all(is_token_byte) {
                    causes.add(format!("{at}.name"), "must be a valid HTTP header name");
                }
                if h.value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                    causes.add(format!("{at}.value"), "must be a valid HTTP header value");
                }
            }
        }
    }
    if conf.http.is_none() && conf.tcp.is_none() && conf.grpc.is_none() {
        causes.add(at, "must have at least one defined: http, tcp, grpc");
    }
}

/// Whether `path` is a file path as Kuma's validator reads one: absolute, in Unix or Windows form.
fn is_file_path(path: &str) -> bool {
    let unix = path.starts_with('/') && !path.contains('\0');
    let bytes = path.as_bytes();
    let windows = bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && &bytes[1..3] == b":\\";
    unix || windows
}

/// Whether `b` may appear in an HTTP header name (RFC 9110's token).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
