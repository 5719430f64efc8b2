//! A configuration compiled once for serving: router, per-route plugin chains, consumers,
//! services and their upstreams, and the TLS configuration.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config;
use crate::consumers::Consumers;
use crate::error::ConfigErrors;
use crate::plugins::{self, Chain};
use crate::router::{Protocols, RouteFields, Router};
use crate::runtime::Shared;
use crate::tls::{self, CaStore};
use crate::upstream::Service;
use crate::upstream::balancer::Balancer;

/// A compiled route.
pub(crate) struct Route {
    pub id: String,
    pub name: Option<String>,
    pub service: Option<usize>,
    pub strip_path: bool,
    pub path_handling: PathHandling,
    pub preserve_host: bool,
    pub protocols: Protocols,
    pub https_redirect_status_code: StatusCode,
    pub chain: Chain,
}

/// How a route joins the service's path and the request's path (Kong's `path_handling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathHandling {
    /// Kong 0.x and 2.x, the default: the paths are segments, joined by slashes.
    V0,
    /// Kong 1.x, deprecated in Kong 3: the service's path is a prefix, written before the
    /// rest of the request's path without a slash between them.
    V1,
}

/// The values of `path_handling`, as Kong spells them.
const PATH_HANDLINGS: [(&str, PathHandling); 2] = [("v0", PathHandling::V0), ("v1", PathHandling::V1)];

/// One configuration, compiled: router, plugin chains, credentials, upstreams, TLS.
pub(crate) struct Gateway {
    /// The text it was compiled from.
    pub source: String,
    /// SHA-256 (hex, first 32 digits) of the text.
    pub hash: String,
    pub router: Router,
    pub routes: Vec<Route>,
    pub services: Vec<Service>,
    pub consumers: Consumers,
    pub tls: Arc<rustls::ServerConfig>,
    balancers: Vec<Arc<Balancer>>,
    /// Whether a prometheus plugin is configured.
    pub prometheus: bool,
    /// Where prometheus plugins record (shared by every configuration).
    pub metrics: Arc<crate::plugins::prometheus::Metrics>,
    /// Whether a prometheus plugin asks for the upstream targets' health.
    pub upstream_health_metrics: bool,
    /// Stops this configuration's active health checks when it is dropped.
    _probes: DropGuard,
    probes: CancellationToken,
}

impl Gateway {
    /// Starts the active health checks of this configuration's upstreams; they stop when
    /// it is dropped (replaced, and no request uses it any more).
    pub fn start_health_checks(&self) {
        for b in &self.balancers {
            b.start_probes(&self.probes);
        }
    }

    /// `(upstream, target, address, state)` of every target of every upstream, in Kong's states.
    pub fn target_health(&self) -> Vec<(String, String, String, &'static str)> {
        let mut all: Vec<_> = self.balancers.iter().flat_map(|b| b.health_report()).collect();
        all.sort();
        all
    }
}

const REDIRECT_CODES: [u16; 5] = [426, 301, 302, 307, 308];

/// Compiles a declarative configuration, or returns every error in it.
pub(crate) fn compile(text: &str, shared: &Shared) -> Result<Gateway, ConfigErrors> {
    let (decl, mut errors) = config::parse(text)?;
    let ca = CaStore::compile(&decl, &mut errors);
    let consumers = Consumers::compile(&decl, &mut errors);
    let mut balancers = HashMap::new();
    for (i, u) in decl.upstreams.iter().enumerate() {
        let targets: Vec<_> = decl.targets.iter().filter(|t| t.links.upstream == Some(i)).collect();
        balancers.insert(u.item.name.clone(), Arc::new(Balancer::compile(u, &targets, &mut errors)));
    }
    let services: Vec<Option<Service>> =
        decl.services.iter().map(|s| Service::compile(s, &balancers, &ca, shared.mesh.as_ref(), &mut errors)).collect();
    let plugins = plugins::compile_all(&decl, &consumers, &ca, shared, &mut errors);
    let mut router = Router::default();
    let mut routes = Vec::new();
    for (i, e) in decl.routes.iter().enumerate() {
        let r = &e.item;
        let written = r.path_handling.as_deref().unwrap_or("v0");
        let path_handling = match PATH_HANDLINGS.iter().find(|(name, _)| *name == written) {
            Some((_, handling)) => *handling,
            None => {
                errors.add(format!("{}.path_handling", e.path), format!("'{written}' is not one of v0, v1"));
                PathHandling::V0
            }
        };
        if !REDIRECT_CODES.contains(&r.https_redirect_status_code) {
            errors.add(format!("{}.https_redirect_status_code", e.path), "must be one of 426, 301, 302, 307, 308");
        }
        let fields = RouteFields {
            protocols: &r.protocols,
            methods: &r.methods,
            hosts: &r.hosts,
            paths: &r.paths,
            headers: &r.headers,
            snis: &r.snis,
            regex_priority: r.regex_priority,
        };
        // Routes of a disabled service are not routed, as in Kong.
        let service_enabled = e.links.service.is_none_or(|s| decl.services[s].item.enabled);
        let protocols = if service_enabled {
            router.add(i, &e.path, fields, &mut errors)
        } else {
            Router::default().add(i, &e.path, fields, &mut errors)
        };
        routes.push(Route {
            id: e.id.clone(),
            name: r.name.clone(),
            service: e.links.service,
            strip_path: r.strip_path,
            path_handling,
            preserve_host: r.preserve_host,
            protocols,
            https_redirect_status_code: StatusCode::from_u16(r.https_redirect_status_code)
                .unwrap_or(StatusCode::UPGRADE_REQUIRED),
            chain: plugins.chain(i, e.links.service),
        });
    }
    router.finish();
    let certificates = tls::sni_certificates(&decl, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let tls = tls::server_config(certificates, plugins.wants_client_certificates);
    let probes = CancellationToken::new();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let hash: String = digest.as_ref().iter().take(16).map(|b| format!("{b:02x}")).collect();
    Ok(Gateway {
        source: text.to_string(),
        hash,
        router,
        routes,
        services: services.into_iter().map(|s| s.expect("no errors, so every service compiled")).collect(),
        consumers,
        tls,
        balancers: balancers.into_values().collect(),
        prometheus: plugins.prometheus,
        metrics: shared.metrics.clone(),
        upstream_health_metrics: plugins.upstream_health_metrics,
        _probes: probes.clone().drop_guard(),
        probes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Upstream;

    /// Everything wrong with `text` (after the format line), as `path: message` lines.
    fn refusals(text: &str) -> String {
        match compile(&format!("_format_version: \"3.0\"\n{text}"), &Shared::default()) {
            Ok(_) => String::new(),
            Err(errors) => errors.to_string(),
        }
    }

    #[test]
    fn hostile_configurations_are_refused_with_their_path() {
        let table: &[(&str, &str)] = &[
            (
                "consumers:\n- username: a\n  oauth2_credentials: [{name: a, client_id: a}]\n  acls: [{group: g}]\n",
                "consumers[0].oauth2_credentials: unknown field",
            ),
            (
                "consumers:\n- usrname: b\n  acls: [{group: g}]\n  keyauth_credentials: [{key: k}]\n  basicauth_credentials: [{username: b, password: p}]\n  jwt_secrets: [{key: j}]\n",
                "consumers[0].usrname: unknown field",
            ),
            (
                "upstreams:\n- name: u\n  healthchecks: {active: {healthy: {interval: 1e300}}}\n",
                "upstreams[0].healthchecks.active.healthy.interval: must be between 0 and 65535",
            ),
            (
                "upstreams:\n- name: u\n  healthchecks: {active: {unhealthy: {interval: 1e300}}}\n",
                "upstreams[0].healthchecks.active.unhealthy.interval: must be between 0 and 65535",
            ),
            (
                "upstreams:\n- name: u\n  healthchecks: {active: {timeout: 1e300, healthy: {interval: 5}}}\n",
                "upstreams[0].healthchecks.active.timeout: must be between 0 and 65535",
            ),
            (
                "upstreams:\n- name: u\n  healthchecks: {active: {http_path: \"/a b\", healthy: {interval: 5}}}\n",
                "upstreams[0].healthchecks.active.http_path: must be a path",
            ),
            (
                "upstreams:\n- name: u\n  targets: [{target: \"[::1]x\"}]\n",
                "upstreams[0].targets[0].target: '[::1]x' is not host:port",
            ),
            (
                "upstreams:\n- name: u\n  targets: [{target: \"h:0\"}]\n",
                "upstreams[0].targets[0].target: 'h:0' is not host:port",
            ),
            ("services:\n- url: http://127.0.0.1:99999\n", "services[0].url: the port must be between 1 and 65535"),
            ("services:\n- url: http://u@127.0.0.1:9000\n", "services[0].url: must not carry a user name"),
            (
                "services:\n- host: \"a@evil.test\"\n",
                "services[0].host: 'a@evil.test' is not a host name or IP address",
            ),
            ("services:\n- host: \"a b\"\n", "services[0].host: 'a b' is not a host name or IP address"),
            ("services:\n- host: x\n  path: \"/a b\"\n", "services[0].path: must be a path"),
            ("services:\n- host: x\n  path: \"/a?b=1\"\n", "services[0].path: must be a path"),
            ("routes:\n- paths: [\"~/a)|(.*\"]\n", "routes[0].paths[0]: invalid regex"),
            (
                "plugins:\n- name: cors\n  config: {origins: [\"a)|(.*\"]}\n",
                "plugins[0].config.origins[0]: invalid regex",
            ),
            (
                "plugins:\n- name: openid-connect\n  config: {issuer: \"http://i\", client_id: a, client_secret: s, timeout: 1e300, rediscovery_lifetime: 1e300}\n",
                "plugins[0].config.timeout: must be between 1 and 2147483646 milliseconds",
            ),
            (
                "plugins:\n- name: openid-connect\n  config: {issuer: \"http://i\", client_id: a, client_secret: s, leeway: 1e300}\n",
                "plugins[0].config.leeway: must be at most 31536000 seconds",
            ),
            (
                "plugins:\n- name: openid-connect\n  config: {issuer: \"http://i\", client_id: a, client_secret: s, session_absolute_timeout: -1}\n",
                "plugins[0].config.session_absolute_timeout: must be at least 0",
            ),
            (
                "plugins:\n- name: openid-connect\n  config: {issuer: \"http://i\", client_id: [\"\"], client_secret: s, session_cookie_name: \"a b\", upstream_headers_claims: [sub], upstream_headers_names: [\"a b\"]}\n",
                "plugins[0].config.upstream_headers_names[0]: 'a b' is not a header name",
            ),
            (&"[".repeat(100_000), "is not valid YAML or JSON"),
            (
                "services:\n- host: h\n  routes: [{paths: [/a], path_handling: v2}]\n",
                "services[0].routes[0].path_handling: 'v2' is not one of v0, v1",
            ),
            ("services:\n- url: \"/relative\"\n  host: h\n", "services[0].url: '/relative' is not an absolute URL"),
        ];
        let mut missed = Vec::new();
        for (text, want) in table {
            let got = std::panic::catch_unwind(|| refusals(text)).unwrap_or_else(|_| "a panic".into());
            if !got.contains(want) {
                missed.push(format!("wanted {want}\n  got {got}"));
            }
        }
        assert!(missed.is_empty(), "{}", missed.join("\n"));
    }

    #[test]
    fn a_services_url_replaces_the_parts_written_beside_it() {
        // (service, https, host, port, path): what url lacks is Kong's default, not what is
        // written beside it, which is not checked (Kong's shorthand replaces it first).
        let table = [
            (
                "url: http://a.test/u\n  protocol: https\n  host: b.test\n  port: 1\n  path: /p",
                false,
                "a.test",
                80,
                Some("/u"),
            ),
            ("url: https://a.test\n  port: 8443\n  path: /p", true, "a.test", 443, None),
            ("url: http://a.test:9000/\n  path: \"/install#x\"\n  port: 0", false, "a.test", 9000, Some("/")),
            ("url: http://a.test\n  path: /", false, "a.test", 80, None),
            ("host: b.test\n  port: 1\n  path: /p\n  protocol: https", true, "b.test", 1, Some("/p")),
        ];
        for (service, https, host, port, path) in table {
            let text = format!("_format_version: \"3.0\"\nservices:\n- {service}\n");
            let gw = compile(&text, &Shared::default()).unwrap_or_else(|e| panic!("{service}: {e}"));
            let s = &gw.services[0];
            assert_eq!((s.https, s.path.as_deref()), (https, path), "{service}");
            match &s.upstream {
                Upstream::Host { host: h, port: p } => assert_eq!((h.as_str(), *p), (host, port), "{service}"),
                other => panic!("{service}: {other}"),
            }
        }
    }
}
