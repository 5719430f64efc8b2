//! MeshHTTPRoute and MeshTCPRoute in the policy engine: the routes of every policy that
//! configures one destination, merged into the table its caller's proxy walks, with each
//! `backendRef` resolved to the destination key the proxy knows.
//!
//! As in Kuma, HTTP rules merge by their `matches`: the rules of the more specific policy come
//! first, and a rule whose matches equal a less specific policy's overrides its conf field by
//! field; then every match becomes one route, and routes are ordered most specific match
//! first ([`compare_matches`]), ties keeping that order. For TCP, the most specific policy's
//! first rule applies.
//!
//! A policy with a `backendRef` this dataplane cannot reach is not applied to that destination
//! at all, and is reported in `unresolved`: never half-applied.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Destination, Merged, SERVICE, merge_patch};
use crate::{
    dataplane::Tags,
    mesh_http_route::{self, Filter, FilterType, Match, compare_matches},
    permission::TargetKind,
    route_backend::BackendRef,
};

/// A backend resolved: the destination key its proxy knows, the instances' tags (empty: all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// The destination key.
    pub key: String,
    /// Tags the instances chosen must have (a MeshServiceSubset's).
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// Its weight against the route's other backends.
    pub weight: u32,
}

/// A mirror: where copies of a share of the requests go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    /// Where.
    pub backend: Backend,
    /// The share copied, in percent.
    pub percentage: f64,
}

/// One route of an HTTP destination: one match and what is done with what it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    /// The match.
    #[serde(rename = "match")]
    pub matches: Match,
    /// Filters, in order, but mirrors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Mirrors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// Backends by weight (the destination itself when the rule names none).
    pub backends: Vec<Backend>,
    /// The policy whose rule this is.
    pub origin: String,
}

/// The merged MeshHTTPRoute conf of one destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRoutes {
    /// Routes, the first that matches taking the request.
    pub routes: Vec<HttpRoute>,
    /// Policies not applied here, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
}

/// The merged MeshTCPRoute conf of one destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpRoute {
    /// Backends by weight (empty when no policy applies).
    pub backends: Vec<Backend>,
    /// The policy they come from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// Policies not applied here, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
}

/// The destination key `backend` names among `destinations`.
fn resolve(backend: &BackendRef, destinations: &[Destination]) -> Result<Backend, String> {
    let name = backend.name.as_deref().unwrap_or_default();
    let section = backend.port.map(|p| p.to_string()).or_else(|| backend.section_name.clone());
    let found: Vec<&Destination> = destinations
        .iter()
        .filter(|d| d.name == name)
        .filter(|d| match (d.kind.as_str(), &section) {
            (SERVICE, None) => true,
            ("MeshService", None) => true,
            ("MeshService", Some(s)) => d.sections.contains(s),
            _ => false,
        })
        .collect();
    let weight = backend.weight();
    let tags = if backend.kind == TargetKind::MeshServiceSubset {
        backend.tags.clone().unwrap_or_default()
    } else {
        Tags::new()
    };
    match found.as_slice() {
        [one] => Ok(Backend { key: one.key.clone(), tags, weight }),
        [] => Err(format!("backendRef {}: no such service reachable from this dataplane", backend.describe())),
        _ => Err(format!("backendRef {}: the MeshService has several ports; name one with port", backend.describe())),
    }
}

/// Every backendRef of `rules` (MeshHTTPRoute or MeshTCPRoute rules as JSON), mirrors too.
fn backend_refs(rules: &Value) -> Vec<BackendRef> {
    let mut refs = Vec::new();
    for rule in rules.as_array().into_iter().flatten() {
        let default = &rule["default"];
        refs.extend(default["backendRefs"].as_array().into_iter().flatten().cloned());
        for filter in default["filters"].as_array().into_iter().flatten() {
            refs.extend(filter.get("requestMirror").map(|m| m["backendRef"].clone()));
        }
    }
    refs.into_iter().filter_map(|r| serde_json::from_value(r).ok()).collect()
}

/// The entries (policy name, `{"rules": [...]}`, in application order) whose backends all
/// resolve, and the reports of those that do not.
fn resolvable<'a>(
    entries: &[(&'a str, &'a Value)],
    destinations: &[Destination],
) -> (Vec<(&'a str, &'a Value)>, Vec<String>) {
    let (mut kept, mut unresolved) = (Vec::new(), Vec::new());
    for (name, conf) in entries {
        let errors: Vec<String> =
            backend_refs(&conf["rules"]).iter().filter_map(|b| resolve(b, destinations).err()).collect();
        if errors.is_empty() {
            kept.push((*name, *conf));
        } else {
            unresolved.push(format!("{name}: not applied: {}", errors.join("; ")));
        }
    }
    (kept, unresolved)
}

/// The MeshHTTPRoute table of `destination` from `entries` (policy name and conf, in
/// application order); `None` when there are none.
pub fn merge_http(entries: &[(&str, &Value)], destination: &Destination, all: &[Destination]) -> Option<Merged> {
    if entries.is_empty() {
        return None;
    }
    let (kept, unresolved) = resolvable(entries, all);
    // (matches, default, origins most specific first), most specific policy's rules first.
    let mut rules: Vec<(Value, Value, Vec<&str>)> = Vec::new();
    for (name, conf) in kept.iter().rev() {
        for rule in conf["rules"].as_array().into_iter().flatten() {
            let (matches, default) = (&rule["matches"], &rule["default"]);
            match rules.iter_mut().find(|(m, _, _)| m == matches) {
                Some((_, held, origins)) => {
                    let mut base = default.clone();
                    merge_patch(&mut base, held);
                    *held = base;
                    origins.push(name);
                }
                None => rules.push((matches.clone(), default.clone(), vec![*name])),
            }
        }
    }
    let mut routes = Vec::new();
    for (matches, default, origins) in &rules {
        let Ok(matches) = serde_json::from_value::<Vec<Match>>(matches.clone()) else { continue };
        let Ok(default) = serde_json::from_value::<mesh_http_route::RuleConf>(default.clone()) else { continue };
        let Ok((filters, mirrors, backends)) = resolve_conf(&default, destination, all) else { continue };
        for m in matches {
            routes.push(HttpRoute {
                matches: m,
                filters: filters.clone(),
                mirrors: mirrors.clone(),
                backends: backends.clone(),
                origin: origins[0].to_string(),
            });
        }
    }
    routes.sort_by(|a, b| compare_matches(&a.matches, &b.matches));
    let conf = HttpRoutes { routes, unresolved };
    Some(Merged {
        conf: serde_json::to_value(conf).expect("routes serialize"),
        origins: entries.iter().map(|(n, _)| n.to_string()).fold(Vec::new(), dedup),
    })
}

type Resolved = (Vec<Filter>, Vec<Mirror>, Vec<Backend>);

/// A rule's filters (mirrors apart) and backends, resolved; the destination itself when it
/// names no backend.
fn resolve_conf(
    conf: &mesh_http_route::RuleConf,
    destination: &Destination,
    all: &[Destination],
) -> Result<Resolved, String> {
    let mut filters = Vec::new();
    let mut mirrors = Vec::new();
    for filter in conf.filters.iter().flatten() {
        match (&filter.ty, &filter.request_mirror) {
            (FilterType::RequestMirror, Some(m)) => mirrors.push(Mirror {
                backend: resolve(&m.backend_ref, all)?,
                percentage: m.percentage.as_ref().map_or(Some(100.0), |p| p.value()).unwrap_or(100.0).clamp(0.0, 100.0),
            }),
            _ => filters.push(filter.clone()),
        }
    }
    let backends = match conf.backend_refs.as_deref() {
        None | Some([]) => vec![Backend { key: destination.key.clone(), tags: Tags::new(), weight: 1 }],
        Some(refs) => refs.iter().map(|r| resolve(r, all)).collect::<Result<_, _>>()?,
    };
    Ok((filters, mirrors, backends))
}

/// The MeshTCPRoute of `destination` from `entries` (policy name and conf, in application
/// order): the most specific policy's first rule; `None` when there are none.
pub fn merge_tcp(entries: &[(&str, &Value)], all: &[Destination]) -> Option<Merged> {
    if entries.is_empty() {
        return None;
    }
    let (kept, unresolved) = resolvable(entries, all);
    let mut route = TcpRoute { unresolved, ..TcpRoute::default() };
    if let Some((name, conf)) = kept.last() {
        let refs =
            backend_refs(&Value::Array(conf["rules"].as_array().into_iter().flatten().take(1).cloned().collect()));
        route.backends = refs.iter().filter_map(|r| resolve(r, all).ok()).collect();
        route.origin = name.to_string();
    }
    Some(Merged {
        conf: serde_json::to_value(route).expect("routes serialize"),
        origins: entries.iter().map(|(n, _)| n.to_string()).fold(Vec::new(), dedup),
    })
}

fn dedup(mut names: Vec<String>, name: String) -> Vec<String> {
    if !names.contains(&name) {
        names.push(name);
    }
    names
}

/// The service names the MeshHTTPRoutes and MeshTCPRoutes that select the Dataplane `dataplane`
/// send traffic to (backends and mirrors): a proxy must know them to route there.
pub fn backend_names(policies: &[crate::Resource], dataplane: &crate::Resource) -> std::collections::BTreeSet<String> {
    let crate::Spec::Dataplane(dp) = &dataplane.spec else { return Default::default() };
    let (name, labels) = (&dataplane.meta.name, &dataplane.meta.labels);
    policies
        .iter()
        .filter(|r| r.meta.mesh == dataplane.meta.mesh)
        .filter(|r| matches!(r.meta.ty, crate::ResourceType::MeshHTTPRoute | crate::ResourceType::MeshTCPRoute))
        .filter_map(|r| r.spec.targeted())
        .filter(|e| {
            crate::targeting::selects_destination(e.top, name, labels, dp, None) != crate::targeting::Selected::None
        })
        .flat_map(|e| e.to.into_iter().flat_map(|(_, conf)| backend_refs(&conf["rules"])))
        .filter_map(|b| b.name)
        .collect()
}
