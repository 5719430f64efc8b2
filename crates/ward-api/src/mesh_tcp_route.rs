//! The `MeshTCPRoute` policy: to which backends, by weight, a caller's proxy sends the
//! connections (and, without a MeshHTTPRoute, the HTTP requests) it carries to a destination,
//! checked as Kuma 2.14's validator checks it.

use serde::{Deserialize, Serialize};

use crate::{error::Causes, permission::TargetRef, route_backend::BackendRef};

/// A MeshTCPRoute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshTcpRoute {
    /// The callers whose proxies route (default: the whole mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// Routes by destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<To>>,
}

/// One `to[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct To {
    /// The destination whose traffic is routed.
    pub target_ref: TargetRef,
    /// The rules; the first one applies.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Its conf.
    pub default: RuleConf,
}

/// `rules[].default`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleConf {
    /// Where connections go, by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<BackendRef>>,
}

/// Checks a MeshTCPRoute as Kuma's validator does; what Ward cannot serve is refused as
/// unsupported.
pub fn check(route: &MeshTcpRoute, causes: &mut Causes) {
    crate::route_backend::check_top(route.target_ref.as_ref(), "MeshTCPRoute", causes);
    for (i, to) in route.to.iter().flatten().enumerate() {
        let at = format!("spec.to[{i}]");
        let gateway = crate::route_backend::on_gateway(route.target_ref.as_ref());
        crate::route_backend::check_to_ref(&to.target_ref, &format!("{at}.targetRef"), gateway, causes);
        for (j, rule) in to.rules.iter().enumerate() {
            let at = format!("{at}.rules[{j}].default.backendRefs");
            match rule.default.backend_refs.as_deref() {
                None | Some([]) => causes.add(at, "must be defined"),
                Some(refs) => {
                    for (k, backend) in refs.iter().enumerate() {
                        backend.check(&format!("{at}[{k}]"), causes);
                    }
                }
            }
        }
    }
}

impl MeshTcpRoute {
    /// Its `to[]` entries as the policy engine reads them: each destination with its rules.
    pub fn entries(&self) -> crate::rules::Entries<'_> {
        let to = self
            .to
            .iter()
            .flatten()
            .map(|t| {
                (
                    &t.target_ref,
                    serde_json::json!({ "rules": serde_json::to_value(&t.rules).expect("rules serialize") }),
                )
            })
            .collect();
        crate::rules::Entries { top: self.target_ref.as_ref(), to, inbound: Vec::new() }
    }
}
