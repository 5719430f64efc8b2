//! The Prometheus endpoint a dataplane serves (Kuma's `metrics`): the mesh's enabled
//! backend, overridden field by field by the Dataplane's own `metrics`, with Kuma's defaults.
//! Under the mesh's mTLS (`activeMTLSBackend`) the endpoint is an inbound of its own (tags default to
//! `kuma.io/service: dataplane-metrics`), which scrapers reach with a mesh certificate and a
//! permission, as in Kuma.

use serde::{Deserialize, Serialize};

use crate::{
    Resource, Spec,
    dataplane::{AggregateMetrics, Dataplane, Inbound, PrometheusConf, PrometheusTlsMode, SERVICE_TAG, Tags},
    mesh::Mesh,
};

/// Port of the endpoint when no conf names one.
pub const DEFAULT_PORT: u16 = 5670;
/// Path of the endpoint when no conf names one.
pub const DEFAULT_PATH: &str = "/metrics";
/// The service the endpoint's inbound is, when no conf names its tags.
pub const DEFAULT_SERVICE: &str = "dataplane-metrics";

/// Where and how a dataplane serves its metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusEndpoint {
    /// Port, on the dataplane's `networking.address`.
    pub port: u16,
    /// The one path served.
    pub path: String,
    /// Tags of the endpoint's inbound, which permissions select.
    pub tags: Tags,
    /// How it is served.
    pub tls: EndpointTls,
    /// Applications' metrics merged into the answer.
    pub aggregate: Vec<AppMetrics>,
    /// Only the proxy's metrics whose names match this regular expression.
    pub filter_regex: Option<String>,
    /// Only the proxy's metrics that have counted something.
    pub used_only: bool,
}

/// How the endpoint is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndpointTls {
    /// Plain HTTP: `tls.mode: disabled`, `skipMTLS: true`, or a mesh without mTLS.
    Disabled,
    /// The mesh's mTLS: scrapers present a mesh certificate and need a permission.
    Mesh,
    /// TLS with a certificate given to the proxy (`ward dp run --metrics-cert-path`).
    Provided,
}

/// One application endpoint whose metrics are merged in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppMetrics {
    /// Its name in the conf.
    pub name: String,
    /// Host (default 127.0.0.1).
    pub address: String,
    /// Port.
    pub port: u16,
    /// Path (default `/metrics`).
    pub path: String,
}

/// The endpoint `dp` serves in `mesh`, if the mesh enables a Prometheus backend (a Dataplane's
/// own `metrics` only adjusts it, as in Kuma). `mesh_mtls` says whether the mesh has mTLS on.
/// Confs are valid after their resources' checks; what does not read is left at its default.
pub fn endpoint(mesh: &Mesh, dp: &Dataplane, mesh_mtls: bool) -> Option<PrometheusEndpoint> {
    let metrics = mesh.metrics.as_ref()?;
    let enabled = metrics.enabled_backend.as_deref().filter(|e| !e.is_empty())?;
    let backend = metrics.backends.iter().find(|b| b.name.as_deref() == Some(enabled))?;
    let read = |conf: &Option<serde_json::Value>| -> PrometheusConf {
        conf.clone().and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default()
    };
    let mut conf = read(&backend.conf);
    if let Some(own) = dp.metrics.as_ref().filter(|m| m.ty == "prometheus") {
        merge(&mut conf, read(&own.conf));
    }
    let mode = match (&conf.tls, conf.skip_mtls) {
        (Some(tls), _) => tls.mode.unwrap_or(PrometheusTlsMode::ActiveMtlsBackend),
        (None, Some(true)) => PrometheusTlsMode::Disabled,
        (None, _) => PrometheusTlsMode::ActiveMtlsBackend,
    };
    let envoy = conf.envoy.as_ref();
    Some(PrometheusEndpoint {
        port: conf.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0).unwrap_or(DEFAULT_PORT),
        path: conf.path.filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_PATH.into()),
        tags: conf
            .tags
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| Tags::from([(SERVICE_TAG.to_string(), DEFAULT_SERVICE.to_string())])),
        tls: match mode {
            PrometheusTlsMode::ActiveMtlsBackend if mesh_mtls => EndpointTls::Mesh,
            PrometheusTlsMode::ActiveMtlsBackend | PrometheusTlsMode::Disabled => EndpointTls::Disabled,
            PrometheusTlsMode::ProvidedTls => EndpointTls::Provided,
        },
        aggregate: conf
            .aggregate
            .into_iter()
            .filter(|a| a.enabled != Some(false))
            .filter_map(|a| {
                Some(AppMetrics {
                    port: a.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0)?,
                    address: a.address.filter(|a| !a.is_empty()).unwrap_or_else(|| "127.0.0.1".into()),
                    path: a.path.filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_PATH.into()),
                    name: a.name,
                })
            })
            .collect(),
        filter_regex: envoy.and_then(|e| e["filterRegex"].as_str()).filter(|r| !r.is_empty()).map(String::from),
        used_only: envoy.and_then(|e| e["usedOnly"].as_bool()).unwrap_or(false),
    })
}

/// Kuma's merge of a Dataplane's conf over the mesh's: each field the Dataplane sets wins, tags
/// are merged, and an `aggregate` entry replaces the mesh's of the same name.
fn merge(conf: &mut PrometheusConf, own: PrometheusConf) {
    let PrometheusConf { port, path, tags, skip_mtls, aggregate, envoy, tls } = own;
    conf.port = port.or(conf.port);
    conf.path = path.or(conf.path.take());
    if let Some(tags) = tags {
        conf.tags.get_or_insert_with(Tags::new).extend(tags);
    }
    if skip_mtls.is_some() || tls.is_some() {
        conf.skip_mtls = skip_mtls;
        conf.tls = tls;
    }
    conf.envoy = envoy.or(conf.envoy.take());
    for entry in aggregate {
        conf.aggregate.retain(|a: &AggregateMetrics| a.name != entry.name);
        conf.aggregate.push(entry);
    }
}

/// The Dataplane as permissions see it at its metrics endpoint: its inbounds, then one more
/// for the endpoint (at index `networking.inbound.len()`), with the endpoint's tags.
pub fn with_endpoint_inbound(dataplane: &Resource, endpoint: &PrometheusEndpoint) -> Resource {
    let mut resource = dataplane.clone();
    if let Spec::Dataplane(dp) = &mut resource.spec {
        let inbound = serde_json::json!({ "port": endpoint.port, "tags": endpoint.tags });
        let inbound: Inbound = serde_json::from_value(inbound).expect("an inbound of a port and tags reads");
        dp.networking.inbound.push(inbound);
    }
    resource
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::dataplane::Port;

    fn mesh(metrics: serde_json::Value) -> Mesh {
        serde_json::from_value(json!({ "metrics": metrics })).unwrap()
    }

    fn dataplane(metrics: Option<serde_json::Value>) -> Dataplane {
        let mut dp = json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}});
        if let Some(m) = metrics {
            dp["metrics"] = m;
        }
        serde_json::from_value(dp).unwrap()
    }

    fn prometheus(conf: serde_json::Value) -> serde_json::Value {
        json!({"enabledBackend": "p", "backends": [{"name": "p", "type": "prometheus", "conf": conf}]})
    }

    #[test]
    fn kumas_defaults_and_the_dataplanes_overrides() {
        let dp = dataplane(None);
        assert_eq!(endpoint(&Mesh::default(), &dp, true), None, "no metrics on the mesh");
        assert_eq!(
            endpoint(&mesh(json!({"backends": [{"name": "p", "type": "prometheus"}]})), &dp, true),
            None,
            "a backend that is not enabled"
        );
        let bare = endpoint(
            &mesh(json!({"enabledBackend": "p", "backends": [{"name": "p", "type": "prometheus"}]})),
            &dp,
            true,
        )
        .unwrap();
        assert_eq!(
            bare,
            PrometheusEndpoint {
                port: 5670,
                path: "/metrics".into(),
                tags: Tags::from([("kuma.io/service".into(), "dataplane-metrics".into())]),
                tls: EndpointTls::Mesh,
                aggregate: vec![],
                filter_regex: None,
                used_only: false,
            }
        );
        let plain = endpoint(&mesh(prometheus(json!({}))), &dp, false).unwrap();
        assert_eq!(plain.tls, EndpointTls::Disabled, "a mesh without mTLS");
        for (conf, tls) in [
            (json!({"skipMTLS": true}), EndpointTls::Disabled),
            (json!({"skipMTLS": false}), EndpointTls::Mesh),
            (json!({"tls": {"mode": "disabled"}}), EndpointTls::Disabled),
            (json!({"tls": {"mode": "activeMTLSBackend"}}), EndpointTls::Mesh),
            (json!({"tls": {"mode": "providedTLS"}}), EndpointTls::Provided),
        ] {
            assert_eq!(endpoint(&mesh(prometheus(conf.clone())), &dp, true).unwrap().tls, tls, "{conf}");
        }

        let mesh = mesh(prometheus(json!({
            "port": 1234, "path": "/stats", "tags": {"kuma.io/service": "metrics", "team": "a"},
            "aggregate": [{"name": "app", "port": 9000}, {"name": "side", "port": 9001, "path": "/m", "address": "10.0.0.9"}],
            "envoy": {"filterRegex": "ward_.*", "usedOnly": true},
        })));
        let own = dataplane(Some(json!({"type": "prometheus", "conf": {
            "port": 4321, "tags": {"team": "b"}, "skipMTLS": true,
            "aggregate": [{"name": "app", "port": 9100, "path": "/app"}, {"name": "off", "port": 9200, "enabled": false}],
        }})));
        let merged = endpoint(&mesh, &own, true).unwrap();
        assert_eq!((merged.port, merged.path.as_str(), merged.tls), (4321, "/stats", EndpointTls::Disabled));
        assert_eq!(
            merged.tags,
            Tags::from([("kuma.io/service".into(), "metrics".into()), ("team".into(), "b".into())])
        );
        let apps: Vec<(&str, &str, u16, &str)> =
            merged.aggregate.iter().map(|a| (a.name.as_str(), a.address.as_str(), a.port, a.path.as_str())).collect();
        assert_eq!(apps, [("side", "10.0.0.9", 9001, "/m"), ("app", "127.0.0.1", 9100, "/app")]);
        assert_eq!((merged.filter_regex.as_deref(), merged.used_only), (Some("ward_.*"), true));
    }

    #[test]
    fn the_endpoint_is_one_more_inbound_for_permissions() {
        let resource = crate::parse::resource(
            json!({"type": "Dataplane", "mesh": "m", "name": "web-1", "networking": dataplane(None).networking}),
            "test",
        )
        .unwrap();
        let endpoint = endpoint(&mesh(prometheus(json!({}))), &dataplane(None), true).unwrap();
        let Spec::Dataplane(seen) = with_endpoint_inbound(&resource, &endpoint).spec else { unreachable!() };
        assert_eq!(seen.networking.inbound.len(), 2);
        assert_eq!(seen.networking.inbound[1].service(), Some("dataplane-metrics"));
        assert_eq!(seen.networking.inbound[1].port, Port(5670));
    }
}
