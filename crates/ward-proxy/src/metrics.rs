//! The proxy's Prometheus metrics, served at `/metrics` of the admin listener.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Which side of the proxy traffic crossed.
pub const INBOUND: &str = "inbound";
/// Traffic the local application sends out.
pub const OUTBOUND: &str = "outbound";

/// Labels of a finished request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// inbound or outbound.
    pub direction: &'static str,
    /// The caller's SPIFFE ID (inbound), this proxy's (outbound), or `anonymous`.
    pub source: String,
    /// The destination service.
    pub destination: String,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of per-destination figures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    /// inbound or outbound.
    pub direction: &'static str,
    /// The destination service.
    pub destination: String,
}

/// Labels of byte counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// inbound or outbound.
    pub direction: &'static str,
    /// `received` (from the connection's initiator) or `sent` (to it).
    pub flow: &'static str,
}

/// Labels of connection gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// inbound or outbound.
    pub direction: &'static str,
}

/// Labels of a failed handshake.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// inbound or outbound.
    pub direction: &'static str,
    /// Why, in a few words (e.g. `unknown_issuer`, `no_client_certificate`).
    pub reason: &'static str,
}

/// Labels of an authorization decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Allow, Deny or AllowWithShadowDeny.
    pub action: String,
    /// `Type/name` of the deciding policy, or `default-deny`.
    pub policy: String,
}

/// Labels of a refused request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    /// The destination service.
    pub destination: String,
    /// `Type/name` of the deciding policy (a MeshTrafficPermission or a MeshOPA), or `default-deny`.
    pub policy: String,
}

/// Builds latency histograms: 0.1 ms to about 13 s.
#[derive(Clone)]
pub struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.0001, 2.0, 18))
    }
}

/// Every metric of the proxy.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Requests by direction, source, destination and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency until the response headers, seconds.
    pub request_duration: Family<DestinationLabels, Histogram, LatencyBuckets>,
    /// Bytes proxied.
    pub bytes: Family<BytesLabels, Counter>,
    /// Open connections.
    pub open_connections: Family<DirectionLabels, Gauge>,
    /// TLS handshakes that failed, by reason.
    pub tls_handshake_failures: Family<ReasonLabels, Counter>,
    /// Authorization decisions on inbound connections and requests, by action and policy.
    pub authorization: Family<DecisionLabels, Counter>,
    /// Inbound requests refused, by destination and deciding policy.
    pub requests_denied: Family<DeniedLabels, Counter>,
    /// Open connections closed because their peer lost its permission or its certificate's trust.
    pub connections_cut: Family<ReasonLabels, Counter>,
    /// When the certificate in use expires (Unix seconds).
    pub certificate_expiry: Gauge,
    /// 1 while the discovery stream is up.
    pub control_plane_connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ward");
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(LatencyBuckets),
            bytes: Family::default(),
            open_connections: Family::default(),
            tls_handshake_failures: Family::default(),
            authorization: Family::default(),
            requests_denied: Family::default(),
            connections_cut: Family::default(),
            certificate_expiry: Gauge::default(),
            control_plane_connected: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "HTTP requests by direction, source, destination and status", m.requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from a request to its response headers",
            m.request_duration.clone(),
        );
        registry.register("bytes", "Bytes proxied", m.bytes.clone());
        registry.register("open_connections", "Connections open now", m.open_connections.clone());
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by reason",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "authorization_decisions",
            "Authorization decisions by action and policy",
            m.authorization.clone(),
        );
        registry.register(
            "requests_denied",
            "Inbound requests refused, by destination and the policy that decided (MeshTrafficPermission/NAME, MeshOPA/NAME or default-deny)",
            m.requests_denied.clone(),
        );
        registry.register(
            "connections_cut",
            "Open connections closed because the peer lost its permission (permission), its certificate expired (expired), its token was revoked (revoked) or its CA left the trust bundle (untrusted)",
            m.connections_cut.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the proxy's certificate expires",
            m.certificate_expiry.clone(),
        );
        registry.register(
            "control_plane_connected",
            "1 while the discovery stream to the control plane is up",
            m.control_plane_connected.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
