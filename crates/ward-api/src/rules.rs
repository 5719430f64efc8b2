//! Kuma's policy engine for the kinds that configure traffic (MeshTimeout, ...): which policies
//! select a dataplane, the order they apply in, and their `default` confs merged per inbound
//! and per outbound destination, with the policies each result came from.
//!
//! As in Kuma:
//! - a policy counts for a dataplane when its top-level `targetRef` selects it (for an
//!   inbound's rules: selects that inbound);
//! - policies apply from the least to the most specific top-level kind (Mesh, Dataplane,
//!   MeshSubset, MeshService, MeshServiceSubset; a Dataplane reference by name after one by
//!   labels, one with `sectionName` after one without), and at equal kind the policy whose name
//!   sorts first applies last, so it wins;
//! - for an outbound, a `to[]` entry naming the destination applies after a `Mesh` one of the
//!   same policy order, and one with `sectionName` after one without;
//! - confs merge as JSON merge patches (RFC 7396): a later conf overrides the fields it sets,
//!   objects merge field by field, lists are replaced whole.
//!
//! MeshHTTPRoute and MeshTCPRoute merge their rules by match instead ([`routes`]).
//!
//! MeshTrafficPermission keeps its own decision ([`crate::policy`]), which shares the
//! top-level selection ([`crate::targeting`]) but ranks entries instead of merging them.

use std::{cmp::Ordering, collections::BTreeMap};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    error::Causes,
    permission::{Matcher, ProxyType, TargetKind, TargetRef},
    resource::{Resource, ResourceType},
    targeting::{Selected, selects_destination},
};

/// A policy of Kuma's targetRef form whose entries carry a `default` conf of type `C`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", bound(deserialize = "C: DeserializeOwned + Default"))]
pub struct Targeted<C> {
    /// The dataplanes it configures (default: the whole mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// Confs for outbound traffic, by destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<ToEntry<C>>>,
    /// Confs for inbound traffic, by caller (only `kind: Mesh` callers in the kinds Ward has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<FromEntry<C>>>,
    /// Confs for inbound traffic, whoever calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleEntry<C>>>,
}

/// One `to[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", bound(deserialize = "C: DeserializeOwned + Default"))]
pub struct ToEntry<C> {
    /// The destinations.
    pub target_ref: TargetRef,
    /// The conf (absent: an empty one, as Kuma reads it).
    #[serde(default)]
    pub default: C,
}

/// One `from[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", bound(deserialize = "C: DeserializeOwned"))]
pub struct FromEntry<C> {
    /// The callers.
    pub target_ref: TargetRef,
    /// The conf.
    pub default: C,
}

/// One `rules[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", bound(deserialize = "C: DeserializeOwned"))]
pub struct RuleEntry<C> {
    /// Conditions on the caller (SPIFFE ID, SNI); checked, then refused as not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<Matcher>>,
    /// The conf.
    pub default: C,
}

/// A kind's inbound parts (`from[]`, `rules[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// The kind has none (`to[]` only), and needs no entry at all.
    None,
    /// Ward serves them; a policy needs at least one entry somewhere.
    Served,
    /// Valid Kuma that Ward refuses, for this reason.
    Refused(&'a str),
}

/// Where each part of a policy kind may point, and how its confs are checked.
pub struct Shape<'a, C> {
    /// Top-level kinds Ward serves.
    pub top: &'a [TargetKind],
    /// `to[]` kinds Ward serves.
    pub to: &'a [TargetKind],
    /// The `to[]` kinds Kuma allows under a top-level MeshGateway or MeshHTTPRoute, when it
    /// narrows them.
    pub routed_to: Option<&'a [TargetKind]>,
    /// `from[]` kinds Ward serves.
    pub from: &'a [TargetKind],
    /// Whether the kind has inbound parts (`from[]`, `rules[]`), and whether Ward serves them.
    pub inbound: Inbound<'a>,
    /// Why a top-level targetRef may not list `proxyTypes: [Gateway]`.
    pub gateways: &'a str,
    /// Valid Kuma kinds Ward refuses as not supported yet, with the reason.
    pub unsupported: &'a [(TargetKind, &'a str)],
    /// Checks one conf at `at`.
    pub conf: &'a dyn Fn(&C, &str, &mut Causes),
    /// Checks a `rules[]` conf conditioned on the caller's SPIFFE ID at `at`: the fields that
    /// cannot depend on the caller.
    pub conditioned: &'a dyn Fn(&C, &str, &mut Causes),
}

impl<C: Serialize> Targeted<C> {
    /// Checks kinds per position, the entry lists, and every conf, as Kuma's validators do.
    pub fn check(&self, shape: &Shape<'_, C>, causes: &mut Causes) {
        let refs = |at: &str, target: &TargetRef, kinds: &[TargetKind], top: bool, causes: &mut Causes| {
            if let Some((_, why)) = shape.unsupported.iter().find(|(k, _)| *k == target.kind) {
                // Its fields are still checked, so a document Kuma refuses is refused as invalid.
                target.check(at, &[target.kind], top, causes);
                causes.unsupported(format!("{at}.kind"), format!("kind {}: {why}", target.kind));
            } else {
                target.check(at, kinds, top, causes);
            }
        };
        let (to, from, rules) = (self.to.as_deref(), self.from.as_deref(), self.rules.as_deref());
        let len = |l: Option<usize>| l.unwrap_or(0);
        let (to_len, from_len, rules_len) =
            (len(to.map(<[_]>::len)), len(from.map(<[_]>::len)), len(rules.map(<[_]>::len)));
        if let Some(target) = &self.target_ref {
            refs("spec.targetRef", target, shape.top, true, causes);
            if target.proxy_types.as_ref().is_some_and(|t| t.contains(&ProxyType::Gateway)) {
                causes.unsupported("spec.targetRef.proxyTypes", shape.gateways);
            }
            if target.section_name.as_deref().is_some_and(|s| !s.is_empty()) && to_len > 0 {
                causes.add("spec.targetRef.sectionName", "can only be used with inbound policies (no 'to')");
            }
            if matches!(target.kind, TargetKind::MeshGateway | TargetKind::MeshHTTPRoute) && from_len > 0 {
                causes.add("spec.from", "must not be defined");
            }
        }
        if shape.inbound == Inbound::None {
            for (field, present) in [("from", from.is_some()), ("rules", rules.is_some())] {
                if present {
                    causes.add(format!("spec.{field}"), "unknown field: this kind configures outbound traffic only");
                }
            }
        } else if rules_len > 0 && (to_len > 0 || from_len > 0) {
            causes.add("spec", "fields 'to' and 'from' must be empty when 'rules' is defined");
        } else if rules_len == 0 && to_len == 0 && from_len == 0 {
            causes.add("spec", "at least one of 'from', 'to' or 'rules' has to be defined");
        }
        // Under a gateway or a route, some kinds narrow what a destination may be.
        let routed = self
            .target_ref
            .as_ref()
            .is_some_and(|t| matches!(t.kind, TargetKind::MeshGateway | TargetKind::MeshHTTPRoute));
        let narrowed = shape.routed_to.filter(|_| routed);
        for (i, entry) in to.into_iter().flatten().enumerate() {
            let at = format!("spec.to[{i}].targetRef");
            if let Some(kinds) = narrowed.filter(|kinds| !kinds.contains(&entry.target_ref.kind)) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                causes.add(
                    format!("{at}.kind"),
                    format!("must be one of {} under a MeshGateway or MeshHTTPRoute", names.join(", ")),
                );
            }
            refs(&at, &entry.target_ref, shape.to, false, causes);
            (shape.conf)(&entry.default, &format!("spec.to[{i}].default"), causes);
        }
        if let Inbound::Refused(why) = shape.inbound {
            for (field, len) in [("from", from_len), ("rules", rules_len)] {
                if len > 0 {
                    causes.unsupported(format!("spec.{field}"), why);
                }
            }
        }
        for (i, entry) in from.into_iter().flatten().enumerate() {
            refs(&format!("spec.from[{i}].targetRef"), &entry.target_ref, shape.from, false, causes);
            (shape.conf)(&entry.default, &format!("spec.from[{i}].default"), causes);
        }
        for (i, entry) in rules.into_iter().flatten().enumerate() {
            let at = format!("spec.rules[{i}].default");
            let matches = entry.matches.as_deref().unwrap_or_default();
            for (j, m) in matches.iter().enumerate() {
                if m.spiffe_id.is_none() && m.sni.is_none() {
                    causes.add(
                        format!("spec.rules[{i}].matches[{j}]"),
                        "must specify at least one of 'spiffeID' or 'sni'",
                    );
                }
                let at = format!("spec.rules[{i}].matches[{j}]");
                if let Some(id) = &m.spiffe_id
                    && (!id.value.starts_with("spiffe://") || id.value.len() <= "spiffe://".len())
                {
                    causes
                        .add(format!("{at}.spiffeID.value"), "must be a valid Spiffe ID: scheme is missing or invalid");
                }
                if let Some(sni) = &m.sni
                    && sni.ty != "Exact"
                {
                    causes.add(
                        format!("{at}.sni.type"),
                        format!("unrecognized type {:?}, supported values are: Exact", sni.ty),
                    );
                }
            }
            if matches.iter().any(|m| m.spiffe_id.is_some()) {
                (shape.conditioned)(&entry.default, &at, causes);
            }
            if !matches.is_empty() {
                causes.unsupported(
                    format!("spec.rules[{i}].matches"),
                    "rules conditioned on the caller's SPIFFE ID or SNI are not served; leave out matches",
                );
            }
            (shape.conf)(&entry.default, &at, causes);
        }
    }

    /// The policy's parts as the engine reads them, confs as JSON.
    pub fn entries(&self) -> Entries<'_> {
        let json = |c: &C| serde_json::to_value(c).expect("confs serialize");
        Entries {
            top: self.target_ref.as_ref(),
            to: self.to.iter().flatten().map(|e| (&e.target_ref, json(&e.default))).collect(),
            inbound: self
                .from
                .iter()
                .flatten()
                .filter(|e| e.target_ref.kind == TargetKind::Mesh)
                .map(|e| json(&e.default))
                .chain(self.rules.iter().flatten().map(|e| json(&e.default)))
                .collect(),
        }
    }
}

/// What the engine reads of one policy.
pub struct Entries<'a> {
    /// Its top-level targetRef.
    pub top: Option<&'a TargetRef>,
    /// Its `to[]` entries.
    pub to: Vec<(&'a TargetRef, Value)>,
    /// Its inbound confs (`from[]` entries for every caller, then `rules[]`), in order.
    pub inbound: Vec<Value>,
}

/// A destination of a dataplane's outbound traffic, as a `to[]` targetRef can name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// The key the proxy knows it by: the service, or the MeshService's port, or the
    /// MeshExternalService's destination.
    pub key: String,
    /// Service (a `kuma.io/service` value), MeshService or MeshExternalService.
    pub kind: String,
    /// The service's or resource's name.
    pub name: String,
    /// A MeshService port's name and number, which `sectionName` may name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<String>,
    /// The MeshService's or MeshExternalService's labels, which a reference may select by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Kind of destination for a `kuma.io/service` value.
pub const SERVICE: &str = "Service";

/// One kind's merged conf at one place, and the policies it came from, in the order applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    /// The conf.
    pub conf: Value,
    /// Names of the policies merged, the last one winning.
    pub origins: Vec<String>,
}

/// The merged confs of each policy kind at one inbound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundRules {
    /// The inbound's port.
    pub port: u16,
    /// The inbound's name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conf by policy kind.
    pub policies: BTreeMap<String, Merged>,
}

/// The merged confs of each policy kind for one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundRules {
    /// The destination.
    pub destination: Destination,
    /// Conf by policy kind.
    pub policies: BTreeMap<String, Merged>,
}

/// Every policy's effect on one dataplane, as `ward inspect dataplane --rules` shows it and
/// its proxy enforces it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataplaneRules {
    /// One entry per inbound, in the Dataplane's order.
    pub inbounds: Vec<InboundRules>,
    /// One entry per destination some policy configures.
    pub outbounds: Vec<OutboundRules>,
}

impl DataplaneRules {
    /// The merged conf of `kind` at inbound `index`.
    pub fn inbound(&self, index: usize, kind: ResourceType) -> Option<&Value> {
        self.inbounds.get(index)?.policies.get(kind.info().name).map(|m| &m.conf)
    }

    /// The merged conf of `kind` for the destination the proxy knows as `key`.
    pub fn outbound(&self, key: &str, kind: ResourceType) -> Option<&Value> {
        let rules = self.outbounds.iter().find(|o| o.destination.key == key)?;
        rules.policies.get(kind.info().name).map(|m| &m.conf)
    }
}

/// Order of top-level kinds, least specific first (Kuma's order).
fn kind_order(kind: TargetKind) -> u8 {
    match kind {
        TargetKind::Mesh => 1,
        TargetKind::Dataplane => 2,
        TargetKind::MeshSubset => 3,
        TargetKind::MeshGateway => 4,
        TargetKind::MeshService => 5,
        TargetKind::MeshExternalService => 6,
        TargetKind::MeshMultiZoneService => 7,
        TargetKind::MeshServiceSubset => 8,
        TargetKind::MeshHTTPRoute => 9,
    }
}

/// Order of a policy by its top-level targetRef, least specific first.
fn top_order(top: Option<&TargetRef>) -> (u8, u8) {
    let Some(top) = top else { return (kind_order(TargetKind::Mesh), 0) };
    let within = match top.kind {
        TargetKind::Dataplane => {
            let by_name = top.name.as_deref().is_some_and(|n| !n.is_empty());
            let section = top.section_name.as_deref().is_some_and(|s| !s.is_empty());
            2 * u8::from(by_name) + u8::from(section)
        }
        _ => 0,
    };
    (kind_order(top.kind), within)
}

/// Applies `patch` onto `target` as a JSON merge patch (RFC 7396).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(out) = target else { unreachable!("made an object above") };
    for (key, value) in fields {
        if value.is_null() {
            out.remove(key);
        } else {
            merge_patch(out.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Lists a kind appends instead of replacing, as Kong Mesh merges them; each entry is told
/// the policy it came from (`origin`).
fn appended(kind: ResourceType) -> Option<&'static str> {
    (kind == ResourceType::MeshOPA).then_some("appendPolicies")
}

/// Merges confs of `kind` given in application order, each with its policy's name.
fn merge<'a>(kind: ResourceType, confs: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Option<Merged> {
    let mut merged: Option<Merged> = None;
    for (name, conf) in confs {
        let m = merged.get_or_insert_with(|| Merged { conf: Value::Null, origins: Vec::new() });
        let list = appended(kind).map(|field| {
            let before = m.conf.get(field).and_then(Value::as_array).cloned().unwrap_or_default();
            let added = conf.get(field).and_then(Value::as_array).into_iter().flatten().map(|entry| {
                let mut entry = entry.clone();
                if let Value::Object(fields) = &mut entry {
                    fields.insert("origin".into(), Value::String(name.to_string()));
                }
                entry
            });
            (field, before.into_iter().chain(added).collect::<Vec<_>>())
        });
        merge_patch(&mut m.conf, conf);
        if let Some((field, list)) = list
            && let Value::Object(fields) = &mut m.conf
        {
            fields.insert(field.to_string(), Value::Array(list));
        }
        if !m.origins.iter().any(|o| o == name) {
            m.origins.push(name.to_string());
        }
    }
    merged
}

/// How a `to[]` targetRef selects `destination`, if it does: its order among entries of one
/// policy order (Mesh first, sectionName last).
fn to_order(target: &TargetRef, destination: &Destination) -> Option<u8> {
    // A resource is named, or selected by labels (never both, as the checks ensure).
    let named = || match (&target.name, &target.labels) {
        (Some(name), _) => *name == destination.name,
        (None, Some(labels)) => labels.iter().all(|(k, v)| destination.labels.get(k) == Some(v)),
        (None, None) => false,
    };
    match target.kind {
        TargetKind::Mesh => Some(0),
        TargetKind::MeshService if destination.kind == SERVICE => {
            let service = target.name.as_deref() == Some(destination.name.as_str());
            (service && target.section_name.is_none()).then_some(1)
        }
        TargetKind::MeshService if destination.kind == "MeshService" && named() => {
            match target.section_name.as_deref() {
                None => Some(1),
                Some(section) => destination.sections.iter().any(|s| s == section).then_some(2),
            }
        }
        TargetKind::MeshExternalService if destination.kind == "MeshExternalService" => named().then_some(1),
        _ => None,
    }
}

/// The rules of `kinds` for the dataplane `dataplane`, from every resource of its mesh in
/// `policies` (others are skipped), for its inbounds and for `destinations`.
pub fn compute(policies: &[Resource], dataplane: &Resource, destinations: &[Destination]) -> DataplaneRules {
    let crate::Spec::Dataplane(dp) = &dataplane.spec else { return DataplaneRules::default() };
    let (name, labels) = (&dataplane.meta.name, &dataplane.meta.labels);
    // Every policy of the mesh with its entries, in application order.
    let mut all: Vec<(&Resource, Entries<'_>)> = policies
        .iter()
        .filter(|r| r.meta.mesh == dataplane.meta.mesh)
        .filter_map(|r| r.spec.targeted().map(|e| (r, e)))
        .collect();
    all.sort_by(|(a, ea), (b, eb)| {
        top_order(ea.top).cmp(&top_order(eb.top)).then_with(|| b.meta.name.cmp(&a.meta.name))
    });
    let kinds: std::collections::BTreeSet<ResourceType> = all.iter().map(|(r, _)| r.meta.ty).collect();

    let inbounds = dp
        .networking
        .inbound
        .iter()
        .map(|inbound| {
            let mut merged = BTreeMap::new();
            for kind in &kinds {
                let confs = all
                    .iter()
                    .filter(|(r, e)| {
                        r.meta.ty == *kind
                            && selects_destination(e.top, name, labels, dp, Some(inbound)) == Selected::All
                    })
                    .flat_map(|(r, e)| e.inbound.iter().map(move |c| (r.meta.name.as_str(), c)));
                if let Some(m) = merge(*kind, confs) {
                    merged.insert(kind.info().name.to_string(), m);
                }
            }
            InboundRules { port: inbound.port.0, name: inbound.name.clone(), policies: merged }
        })
        .collect();

    let selecting: Vec<&(&Resource, Entries<'_>)> =
        all.iter().filter(|(_, e)| selects_destination(e.top, name, labels, dp, None) != Selected::None).collect();
    let outbounds = destinations
        .iter()
        .filter_map(|destination| {
            let mut merged = BTreeMap::new();
            for kind in &kinds {
                // (policy position, entry order, entry position): stable application order.
                let mut found: Vec<(usize, u8, usize, &str, &Value)> = Vec::new();
                for (at, (r, e)) in selecting.iter().enumerate().filter(|(_, (r, _))| r.meta.ty == *kind) {
                    for (i, (target, conf)) in e.to.iter().enumerate() {
                        if let Some(order) = to_order(target, destination) {
                            found.push((at, order, i, r.meta.name.as_str(), conf));
                        }
                    }
                }
                found.sort_by(|a, b| by_policy_then_entry(a, b, &selecting));
                let entries: Vec<(&str, &Value)> = found.iter().map(|f| (f.3, f.4)).collect();
                let merged_kind = match kind {
                    ResourceType::MeshHTTPRoute => routes::merge_http(&entries, destination, destinations),
                    ResourceType::MeshTCPRoute => routes::merge_tcp(&entries, destinations),
                    _ => merge(*kind, entries.iter().copied()),
                };
                if let Some(m) = merged_kind {
                    merged.insert(kind.info().name.to_string(), m);
                }
            }
            (!merged.is_empty()).then(|| OutboundRules { destination: destination.clone(), policies: merged })
        })
        .collect();
    DataplaneRules { inbounds, outbounds }
}

/// Kuma's order of `to[]` entries: by the policy's top-level kind, then by the entry's
/// targetRef, then by policy name (the first name last), then as written.
fn by_policy_then_entry(
    a: &(usize, u8, usize, &str, &Value),
    b: &(usize, u8, usize, &str, &Value),
    selecting: &[&(&Resource, Entries<'_>)],
) -> Ordering {
    let top = |i: usize| top_order(selecting[i].1.top);
    top(a.0).cmp(&top(b.0)).then(a.1.cmp(&b.1)).then(a.0.cmp(&b.0)).then(a.2.cmp(&b.2))
}

pub mod routes;
#[cfg(test)]
mod tests;
