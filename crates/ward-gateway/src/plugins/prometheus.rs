//! prometheus: Kong's metrics, under Kong's names and labels, served at `GET /metrics` of the
//! admin listener. Per-request metrics are recorded when a request's response is ready, for
//! the requests the plugin applies to; the node's own figures are read when scraped.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::Value;

use super::{Compile, Plugin};
use crate::consumers::Consumers;
use crate::upstream::{Service, Upstream};

/// Kong's buckets of `kong_kong_latency_ms`, in milliseconds.
const KONG_LATENCY_BUCKETS: [f64; 17] =
    [1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 750.0, 1000.0, 3000.0, 6000.0];
/// Kong's buckets of `kong_upstream_latency_ms` and `kong_request_latency_ms`, in milliseconds.
const UPSTREAM_LATENCY_BUCKETS: [f64; 13] =
    [25.0, 50.0, 80.0, 100.0, 250.0, 400.0, 700.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0];

/// Kong's workspace label; Ward has the one workspace Kong OSS calls `default`.
const WORKSPACE: &str = "default";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    per_consumer: bool,
    #[serde(default)]
    status_code_metrics: bool,
    #[serde(default)]
    latency_metrics: bool,
    #[serde(default)]
    bandwidth_metrics: bool,
    #[serde(default)]
    upstream_health_metrics: bool,
    #[serde(default)]
    ai_metrics: bool,
    #[serde(default)]
    wasm_metrics: bool,
}

/// A compiled prometheus configuration: which metrics it records.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Prometheus {
    pub per_consumer: bool,
    pub status_code_metrics: bool,
    pub latency_metrics: bool,
    /// Whether the node exports `kong_upstream_target_health` (any configuration enabling it does).
    pub upstream_health_metrics: bool,
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    if c.ai_metrics {
        cx.error("ai_metrics", "Ward has no AI proxy: there are no AI metrics to collect");
    }
    if c.wasm_metrics {
        cx.error("wasm_metrics", "Ward runs no Wasm filters: there are no Wasm metrics to collect");
    }
    if c.bandwidth_metrics {
        cx.error(
            "bandwidth_metrics",
            "not supported: Ward does not count the bytes a request and its response take on the wire",
        );
    }
    Some(Plugin::Prometheus(Prometheus {
        per_consumer: c.per_consumer,
        status_code_metrics: c.status_code_metrics,
        latency_metrics: c.latency_metrics,
        upstream_health_metrics: c.upstream_health_metrics,
    }))
}

/// Labels of `kong_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabels {
    service: String,
    route: String,
    code: u16,
    source: &'static str,
    workspace: &'static str,
    consumer: String,
}

/// Labels of the latency histograms.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LatencyLabels {
    service: String,
    route: String,
    workspace: &'static str,
}

/// Labels of `kong_nginx_connections_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    node_id: String,
    subsystem: &'static str,
    state: &'static str,
}

/// Labels of `kong_nginx_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node_id: String,
    subsystem: &'static str,
}

/// Labels of `kong_node_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    node_id: String,
    version: &'static str,
}

/// Labels of `kong_upstream_target_health`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    upstream: String,
    target: String,
    address: String,
    state: &'static str,
    subsystem: &'static str,
}

/// Builds histograms with fixed buckets.
#[derive(Clone)]
pub(crate) struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// What one finished request tells the metrics.
pub(crate) struct Finished<'a> {
    pub service: Option<&'a Service>,
    pub route_name: Option<&'a str>,
    pub route_id: &'a str,
    pub status: u16,
    /// The upstream answered (Kong's source `service`), rather than the gateway (`kong`).
    pub from_service: bool,
    pub consumers: &'a Consumers,
    pub consumer: Option<usize>,
    /// From the request's arrival to its response.
    pub total: Duration,
    /// From sending to the upstream to its response headers, when the upstream answered.
    pub upstream: Option<Duration>,
}

/// The per-request metrics; they outlive configurations, as Kong's do.
pub(crate) struct Metrics {
    /// Identifies this gateway process in the node's labels.
    pub node_id: String,
    status: Family<StatusLabels, Counter>,
    kong_latency: Family<LatencyLabels, Histogram, Buckets>,
    upstream_latency: Family<LatencyLabels, Histogram, Buckets>,
    request_latency: Family<LatencyLabels, Histogram, Buckets>,
    /// Log entries the log plugins dropped for a full queue (Ward's own metric).
    pub log_dropped: Family<LogLabels, Counter>,
}

/// Labels of `kong_log_entries_dropped_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LogLabels {
    /// The log plugin: file-log, http-log or tcp-log.
    pub plugin: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            node_id: uuid::Uuid::new_v4().to_string(),
            status: Family::default(),
            kong_latency: Family::new_with_constructor(Buckets(&KONG_LATENCY_BUCKETS)),
            upstream_latency: Family::new_with_constructor(Buckets(&UPSTREAM_LATENCY_BUCKETS)),
            request_latency: Family::new_with_constructor(Buckets(&UPSTREAM_LATENCY_BUCKETS)),
            log_dropped: Family::default(),
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Metrics {
    /// Records a finished request as configuration `conf` asks; never waits on anything but
    /// the metric families' short in-memory locks.
    pub fn record(&self, conf: &Prometheus, f: &Finished<'_>) {
        let service = f
            .service
            .map(|s| match (&s.name, &s.upstream) {
                (Some(name), _) => name.clone(),
                (None, Upstream::Host { host, .. } | Upstream::Mesh { host, .. }) => host.clone(),
                (None, Upstream::Balanced(b)) => b.name.clone(),
            })
            .unwrap_or_default();
        let route = f.route_name.unwrap_or(f.route_id).to_string();
        if conf.status_code_metrics {
            let consumer = conf
                .per_consumer
                .then(|| f.consumer.and_then(|c| f.consumers.list[c].username.clone()))
                .flatten()
                .unwrap_or_default();
            let labels = StatusLabels {
                service: service.clone(),
                route: route.clone(),
                code: f.status,
                source: if f.from_service { "service" } else { "kong" },
                workspace: WORKSPACE,
                consumer,
            };
            self.status.get_or_create(&labels).inc();
        }
        if conf.latency_metrics {
            let labels = LatencyLabels { service, route, workspace: WORKSPACE };
            self.request_latency.get_or_create(&labels).observe(millis(f.total));
            let upstream = f.upstream.unwrap_or_default();
            if let Some(u) = f.upstream {
                self.upstream_latency.get_or_create(&labels).observe(millis(u));
            }
            self.kong_latency.get_or_create(&labels).observe(millis(f.total.saturating_sub(upstream)));
        }
    }

    /// Registers the per-request metrics under Kong's names.
    fn register(&self, registry: &mut Registry) {
        registry.register("http_requests", "HTTP status codes per consumer/service/route in Kong", self.status.clone());
        registry.register(
            "kong_latency_ms",
            "Latency added by Kong and enabled plugins for each service/route in Kong",
            self.kong_latency.clone(),
        );
        registry.register(
            "upstream_latency_ms",
            "Latency added by upstream response for each service/route in Kong",
            self.upstream_latency.clone(),
        );
        registry.register(
            "request_latency_ms",
            "Total latency incurred during requests for each service/route in Kong",
            self.request_latency.clone(),
        );
        registry.register(
            "log_entries_dropped",
            "Log entries file-log, http-log and tcp-log dropped because their queue was full (Ward)",
            self.log_dropped.clone(),
        );
    }
}

/// The figures of the node a scrape reports besides the per-request metrics.
pub(crate) struct Node {
    pub connections_accepted: u64,
    pub connections_active: u64,
    pub total_requests: u64,
    /// Whether a prometheus plugin is configured (else only the node's figures are exported).
    pub enabled: bool,
    /// `(upstream, target, address, state)` of every target, when some configuration asks.
    pub health: Option<Vec<(String, String, String, &'static str)>>,
}

/// The text of `GET /metrics`.
pub(crate) fn exposition(metrics: &Metrics, node: &Node) -> String {
    let mut registry = Registry::with_prefix("kong");
    let gauge = |value: u64| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        g
    };
    let connections = Family::<ConnectionLabels, Gauge>::default();
    for (state, value) in
        [("accepted", node.connections_accepted), ("active", node.connections_active), ("total", node.total_requests)]
    {
        let labels = ConnectionLabels { node_id: metrics.node_id.clone(), subsystem: "http", state };
        connections.get_or_create(&labels).set(i64::try_from(value).unwrap_or(i64::MAX));
    }
    registry.register("nginx_connections_total", "Number of connections by subsystem", connections);
    let requests = Family::<NodeLabels, Gauge>::default();
    requests
        .get_or_create(&NodeLabels { node_id: metrics.node_id.clone(), subsystem: "http" })
        .set(i64::try_from(node.total_requests).unwrap_or(i64::MAX));
    registry.register("nginx_requests_total", "Number of requests total", requests);
    // Database-less, as Kong in DB-less mode: the datastore is always reachable.
    registry.register("datastore_reachable", "Datastore reachable from Kong, 0 is unreachable", gauge(1));
    let info = Family::<InfoLabels, Gauge>::default();
    info.get_or_create(&InfoLabels { node_id: metrics.node_id.clone(), version: env!("CARGO_PKG_VERSION") }).set(1);
    registry.register("node_info", "Kong Node metadata information", info);
    if let Some(targets) = &node.health {
        let health = Family::<HealthLabels, Gauge>::default();
        for (upstream, target, address, state) in targets {
            for each in HEALTH_STATES {
                let labels = HealthLabels {
                    upstream: upstream.clone(),
                    target: target.clone(),
                    address: address.clone(),
                    state: each,
                    subsystem: "http",
                };
                health.get_or_create(&labels).set(i64::from(each == *state));
            }
        }
        registry.register(
            "upstream_target_health",
            "Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, value is 1 when state is populated.",
            health,
        );
    }
    if node.enabled {
        metrics.register(&mut registry);
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// Kong's states of a target, in its order.
pub(crate) const HEALTH_STATES: [&str; 4] = ["healthchecks_off", "healthy", "unhealthy", "dns_error"];

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(consumers: &Consumers, consumer: Option<usize>, from_service: bool, status: u16) -> Finished<'_> {
        Finished {
            service: None,
            route_name: Some("r"),
            route_id: "id",
            status,
            from_service,
            consumers,
            consumer,
            total: Duration::from_millis(30),
            upstream: from_service.then(|| Duration::from_millis(20)),
        }
    }

    fn node(enabled: bool) -> Node {
        Node { connections_accepted: 3, connections_active: 1, total_requests: 7, enabled, health: None }
    }

    fn consumers() -> Consumers {
        let text = "_format_version: \"3.0\"\nconsumers:\n- username: alice\n";
        let (decl, mut errors) = crate::config::parse(text).unwrap();
        let c = Consumers::compile(&decl, &mut errors);
        assert!(errors.0.is_empty());
        c
    }

    #[test]
    fn each_flag_records_its_metrics_only() {
        let consumers = consumers();
        let m = Metrics::default();
        m.record(&Prometheus::default(), &finished(&consumers, Some(0), true, 200));
        let text = exposition(&m, &node(true));
        assert!(!text.contains("kong_http_requests_total{"), "{text}");
        assert!(!text.contains("kong_request_latency_ms_count{"), "{text}");

        let conf = Prometheus { status_code_metrics: true, ..Default::default() };
        m.record(&conf, &finished(&consumers, Some(0), true, 200));
        m.record(&conf, &finished(&consumers, None, false, 401));
        let text = exposition(&m, &node(true));
        let want = "kong_http_requests_total{service=\"\",route=\"r\",code=\"200\",source=\"service\",workspace=\"default\",consumer=\"\"} 1";
        assert!(text.contains(want), "{text}");
        let want = "kong_http_requests_total{service=\"\",route=\"r\",code=\"401\",source=\"kong\",workspace=\"default\",consumer=\"\"} 1";
        assert!(text.contains(want), "{text}");

        let conf = Prometheus { status_code_metrics: true, per_consumer: true, ..Default::default() };
        m.record(&conf, &finished(&consumers, Some(0), true, 200));
        assert!(
            exposition(&m, &node(true))
                .contains("code=\"200\",source=\"service\",workspace=\"default\",consumer=\"alice\"} 1")
        );

        let conf = Prometheus { latency_metrics: true, ..Default::default() };
        m.record(&conf, &finished(&consumers, None, true, 200));
        m.record(&conf, &finished(&consumers, None, false, 401));
        let text = exposition(&m, &node(true));
        let labels = "{service=\"\",route=\"r\",workspace=\"default\"}";
        assert!(text.contains(&format!("kong_request_latency_ms_count{labels} 2")), "{text}");
        // Only the upstream's answer has an upstream latency.
        assert!(text.contains(&format!("kong_upstream_latency_ms_count{labels} 1")), "{text}");
        assert!(text.contains(&format!("kong_upstream_latency_ms_sum{labels} 20.0")), "{text}");
        // Kong's part: 10 ms of the proxied request, all 30 of the one it answered itself.
        assert!(text.contains(&format!("kong_kong_latency_ms_sum{labels} 40.0")), "{text}");
        assert!(
            text.contains("kong_kong_latency_ms_bucket{le=\"7.0\",service=\"\",route=\"r\",workspace=\"default\"} 0")
        );
    }

    #[test]
    fn node_figures_are_always_exported_and_request_metrics_only_when_enabled() {
        let m = Metrics::default();
        let conf = Prometheus { status_code_metrics: true, ..Default::default() };
        let consumers = consumers();
        m.record(&conf, &finished(&consumers, None, true, 200));
        let text = exposition(&m, &node(false));
        assert!(text.contains("kong_datastore_reachable 1"), "{text}");
        let active =
            format!("kong_nginx_connections_total{{node_id=\"{}\",subsystem=\"http\",state=\"active\"}} 1", m.node_id);
        assert!(text.contains(&active), "{text}");
        assert!(!text.contains("kong_http_requests_total{"), "{text}");
        assert!(!text.contains("kong_upstream_target_health"), "{text}");

        let health = vec![("u".to_string(), "10.0.0.1:80".to_string(), "10.0.0.1:80".to_string(), "unhealthy")];
        let text = exposition(&m, &Node { health: Some(health), ..node(true) });
        let line = |state: &str, v: u8| {
            format!(
                "kong_upstream_target_health{{upstream=\"u\",target=\"10.0.0.1:80\",address=\"10.0.0.1:80\",state=\"{state}\",subsystem=\"http\"}} {v}"
            )
        };
        assert!(text.contains(&line("unhealthy", 1)), "{text}");
        assert!(text.contains(&line("healthy", 0)), "{text}");
        assert!(text.contains(&line("healthchecks_off", 0)), "{text}");
        assert!(text.contains("kong_http_requests_total{"), "{text}");
    }
}
