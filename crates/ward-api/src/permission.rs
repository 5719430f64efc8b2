//! The `MeshTrafficPermission` resource, in its `from[]` and its `rules[]` forms.

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::{SERVICE_TAG, Tags, check_selector, check_tags},
    error::Causes,
    names::check_name,
};

string_enum! {
    /// What a permission does to a matching caller.
    pub enum Action {
        /// Let the request through.
        Allow = "Allow",
        /// Refuse it.
        Deny = "Deny",
        /// Let it through, but log it as if it were denied.
        AllowWithShadowDeny = "AllowWithShadowDeny",
    }
}

string_enum! {
    /// Kinds a `targetRef` may name.
    pub enum TargetKind {
        /// Every dataplane of the mesh.
        Mesh = "Mesh",
        /// The dataplanes of one service (`name`).
        MeshService = "MeshService",
        /// The dataplanes whose tags include `tags`.
        MeshSubset = "MeshSubset",
        /// The dataplanes of one service (`name`) whose tags include `tags`.
        MeshServiceSubset = "MeshServiceSubset",
        /// Dataplanes by `name` or `labels` (every one when neither), optionally one inbound
        /// by `sectionName`.
        Dataplane = "Dataplane",
        /// One MeshExternalService (`name`), only as a permission's top-level targetRef: the
        /// callers its entries allow may reach it (a Ward extension; Kuma 2.14 refuses it).
        MeshExternalService = "MeshExternalService",
        /// A MeshGateway (`name`), which Ward does not have.
        MeshGateway = "MeshGateway",
        /// A MeshHTTPRoute (`name`), which Ward does not have yet.
        MeshHTTPRoute = "MeshHTTPRoute",
        /// A MeshMultiZoneService (`name`): Ward has one zone.
        MeshMultiZoneService = "MeshMultiZoneService",
    }
}

string_enum! {
    /// Kinds of proxy a `Mesh` or `MeshSubset` targetRef may be narrowed to.
    pub enum ProxyType {
        /// Dataplanes with inbounds.
        Sidecar = "Sidecar",
        /// Gateway dataplanes.
        Gateway = "Gateway",
    }
}

/// A reference to the dataplanes (or callers) a policy is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    /// What kind of thing is referenced.
    pub kind: TargetKind,
    /// Name of the service (`MeshService`) or dataplane (`Dataplane`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tags (`MeshSubset`, `MeshServiceSubset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Labels of dataplanes (`Dataplane`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Tags>,
    /// Another mesh, which no kind here takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    /// Kubernetes namespace of the referenced object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// One inbound of a dataplane: its name, or its port in decimal (`Dataplane`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Kinds of proxy selected (`Mesh`, `MeshSubset`; default both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_types: Option<Vec<ProxyType>>,
}

/// A MeshTrafficPermission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshTrafficPermission {
    /// The dataplanes it protects (default: the whole mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// Callers by targetRef, each with an action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<From>>,
    /// Callers by SPIFFE ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
}

/// One `from[]` entry: callers and the action for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct From {
    /// The callers.
    pub target_ref: TargetRef,
    /// The action.
    pub default: FromConf,
}

/// `from[].default`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromConf {
    /// Allow, Deny or AllowWithShadowDeny.
    pub action: Action,
}

/// One `rules[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The matcher lists.
    pub default: RuleConf,
}

/// `rules[].default`: callers to deny, allow, or allow while logging as denied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleConf {
    /// Callers always denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Matcher>,
    /// Callers allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Matcher>,
    /// Callers allowed but logged as denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_with_shadow_deny: Vec<Matcher>,
}

/// A caller matcher of the `rules[]` form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// Match on the caller's SPIFFE ID.
    #[serde(rename = "spiffeID", default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<SpiffeIdMatch>,
    /// Match on the server name the caller asked for, which Ward does not do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<SniMatch>,
}

/// `sni: {type, value}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniMatch {
    /// `Exact`.
    #[serde(rename = "type", default)]
    pub ty: String,
    /// The server name.
    #[serde(default)]
    pub value: String,
}

impl Matcher {
    /// Whether the caller with SPIFFE ID `id` matches (a matcher without `spiffeID` never
    /// does; such matchers are refused at apply).
    pub fn matches(&self, id: &str) -> bool {
        self.spiffe_id.as_ref().is_some_and(|m| m.matches(id))
    }
}

string_enum! {
    /// How a SPIFFE ID matcher compares.
    pub enum MatchType {
        /// The whole ID.
        Exact = "Exact",
        /// A prefix of the ID.
        Prefix = "Prefix",
    }
}

/// `spiffeID: {type, value}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpiffeIdMatch {
    /// Exact or Prefix.
    #[serde(rename = "type")]
    pub ty: MatchType,
    /// The ID or prefix, starting with `spiffe://`.
    pub value: String,
}

impl SpiffeIdMatch {
    /// Whether `id` matches.
    pub fn matches(&self, id: &str) -> bool {
        match self.ty {
            MatchType::Exact => id == self.value,
            MatchType::Prefix => id.starts_with(&self.value),
        }
    }
}

impl RuleConf {
    /// The matcher lists with the action each stands for.
    pub fn lists(&self) -> [(Action, &[Matcher]); 3] {
        [
            (Action::Deny, &self.deny),
            (Action::Allow, &self.allow),
            (Action::AllowWithShadowDeny, &self.allow_with_shadow_deny),
        ]
    }
}

impl TargetRef {
    /// Checks the fields a kind needs and refuses those it does not take; `kinds` are the
    /// kinds allowed at this position, and `top` says whether it is the top-level targetRef.
    pub fn check(&self, at: &str, kinds: &[TargetKind], top: bool, causes: &mut Causes) {
        if !kinds.contains(&self.kind) {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            causes.add(format!("{at}.kind"), format!("must be one of {}", names.join(", ")));
            return;
        }
        use Field::{Forbidden as F, Optional as O, Required as R};
        // name, tags, labels, namespace, sectionName, proxyTypes
        let rules = match self.kind {
            TargetKind::Mesh => [F, F, F, F, F, O],
            TargetKind::MeshSubset => [F, O, F, F, F, O],
            TargetKind::MeshService => [O, F, O, O, O, F],
            TargetKind::MeshServiceSubset => [R, O, F, F, F, F],
            TargetKind::Dataplane => [O, F, O, O, O, F],
            TargetKind::MeshExternalService => [O, F, O, O, F, F],
            TargetKind::MeshGateway => [R, O, F, O, F, F],
            TargetKind::MeshHTTPRoute => [O, F, O, O, F, F],
            TargetKind::MeshMultiZoneService => [O, F, O, O, O, F],
        };
        let present = [
            self.name.as_deref().is_some_and(|n| !n.is_empty()),
            self.tags.as_ref().is_some_and(|t| !t.is_empty()),
            self.labels.as_ref().is_some_and(|l| !l.is_empty()),
            self.namespace.as_deref().is_some_and(|n| !n.is_empty()),
            self.section_name.as_deref().is_some_and(|n| !n.is_empty()),
            self.proxy_types.as_ref().is_some_and(|p| !p.is_empty()),
        ];
        let fields = ["name", "tags", "labels", "namespace", "sectionName", "proxyTypes"];
        for ((rule, present), field) in rules.iter().zip(present).zip(fields) {
            rule.check(&format!("{at}.{field}"), self.kind, present, causes);
        }
        if self.mesh.is_some() {
            causes.add(format!("{at}.mesh"), format!("is not allowed for kind {}", self.kind));
        }
        if self.proxy_types.as_ref().is_some_and(Vec::is_empty) && rules[5] == O {
            causes.add(format!("{at}.proxyTypes"), "must be left out or list at least one proxy type");
        }
        let named = present[0] || present[3];
        if matches!(self.kind, TargetKind::MeshService | TargetKind::Dataplane) && named && present[2] {
            causes.add(format!("{at}.labels"), "cannot be set together with name or namespace");
        }
        if matches!(self.kind, TargetKind::MeshService | TargetKind::MeshExternalService) && !present[0] && !present[2]
        {
            causes.add(at, format!("kind {} needs name or labels", self.kind));
        }
        if self.kind == TargetKind::MeshExternalService && present[0] && present[2] {
            causes.add(format!("{at}.labels"), "cannot be set together with name");
        }
        if self.kind == TargetKind::Dataplane && present[4] && !top {
            causes.add(format!("{at}.sectionName"), "can only be used in the top-level targetRef");
        }
        if let Some(name) = self.name.as_deref().filter(|n| !n.is_empty()) {
            let service_kind = matches!(self.kind, TargetKind::MeshService | TargetKind::MeshServiceSubset);
            if service_kind
                && !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
            {
                causes.add(format!("{at}.name"), "must hold only lowercase letters, digits, '.', '-' and '_'");
            } else if let Err(e) = check_name(name) {
                causes.add(format!("{at}.name"), e);
            }
        }
        if let Some(tags) = &self.tags {
            match self.kind {
                TargetKind::MeshServiceSubset => check_selector(&format!("{at}.tags"), tags, causes),
                _ => check_tags(&format!("{at}.tags"), tags, causes),
            }
        }
        if let Some(labels) = &self.labels {
            crate::labels::check_labels(&format!("{at}.labels"), labels, true, causes);
        }
        self.check_supported(at, top, causes);
    }

    /// Valid Kuma references that Ward cannot enforce exactly, refused as such. A destination
    /// (not `top`) may name a MeshService's port by `sectionName`.
    fn check_supported(&self, at: &str, top: bool, causes: &mut Causes) {
        if self.kind != TargetKind::Dataplane && self.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
            causes.unsupported(
                format!("{at}.namespace"),
                "Ward has no Kubernetes namespaces for services; only a Dataplane reference may name one (matched \
                 against the dataplane's k8s.kuma.io/namespace label)",
            );
        }
        if self.kind == TargetKind::MeshExternalService && top && self.labels.as_ref().is_some_and(|l| !l.is_empty()) {
            causes.unsupported(format!("{at}.labels"), "a permission names its MeshExternalService");
        }
        if self.kind == TargetKind::MeshService {
            if top && self.labels.as_ref().is_some_and(|l| !l.is_empty()) {
                causes.unsupported(
                    format!("{at}.labels"),
                    "Ward has no MeshService resources whose labels could be matched; name the service",
                );
            }
            if top && self.section_name.as_deref().is_some_and(|n| !n.is_empty()) {
                causes.unsupported(
                    format!("{at}.sectionName"),
                    "Ward has no MeshService resources whose ports could be named; use kind Dataplane with sectionName",
                );
            }
        }
    }

    /// The tags a caller or inbound must carry to match a `MeshSubset` or `MeshServiceSubset`
    /// reference: its tags, plus the service for the latter.
    pub fn subset_tags(&self) -> Option<Tags> {
        let mut tags = self.tags.clone().unwrap_or_default();
        match self.kind {
            TargetKind::MeshSubset => {}
            TargetKind::MeshServiceSubset => {
                tags.insert(SERVICE_TAG.to_string(), self.name.clone().unwrap_or_default());
            }
            _ => return None,
        }
        Some(tags)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Required,
    Optional,
    Forbidden,
}

impl Field {
    fn check(&self, at: &str, kind: TargetKind, present: bool, causes: &mut Causes) {
        match (self, present) {
            (Field::Required, false) => causes.add(at, format!("is required for kind {kind}")),
            (Field::Forbidden, true) => causes.add(at, format!("is not allowed for kind {kind}")),
            _ => {}
        }
    }
}

impl MeshTrafficPermission {
    /// The MeshExternalService this permission is about, when its top-level targetRef names one.
    pub fn external_service(&self) -> Option<&str> {
        let target = self.target_ref.as_ref().filter(|t| t.kind == TargetKind::MeshExternalService)?;
        target.name.as_deref()
    }

    /// Checks what serde cannot: kinds per position, required fields, one form at a time.
    pub fn check(&self, causes: &mut Causes) {
        use TargetKind::*;
        if let Some(target) = &self.target_ref {
            target.check(
                "spec.targetRef",
                &[Mesh, MeshService, MeshSubset, MeshServiceSubset, Dataplane, MeshExternalService],
                true,
                causes,
            );
            if target.kind == MeshExternalService && target.name.as_deref().is_none_or(str::is_empty) {
                causes.add("spec.targetRef.name", "is required: a permission names its MeshExternalService");
            }
        }
        match (&self.from, &self.rules) {
            (Some(_), Some(_)) => causes.add("spec", "from and rules cannot be used together"),
            (None, None) => causes.add("spec", "must have from or rules"),
            (Some(from), None) if from.is_empty() => causes.add("spec.from", "must not be empty"),
            (None, Some(rules)) if rules.is_empty() => causes.add("spec.rules", "must not be empty"),
            _ => {}
        }
        for (i, entry) in self.from.iter().flatten().enumerate() {
            let kinds = [Mesh, MeshService, MeshSubset, MeshServiceSubset];
            let at = format!("spec.from[{i}].targetRef");
            entry.target_ref.check(&at, &kinds, false, causes);
            if entry.target_ref.kind == MeshService
                && entry.target_ref.section_name.as_deref().is_some_and(|n| !n.is_empty())
            {
                causes.unsupported(
                    format!("{at}.sectionName"),
                    "a caller is matched by its service, not by one of its ports",
                );
            }
        }
        for (i, rule) in self.rules.iter().flatten().enumerate() {
            let at = format!("spec.rules[{i}].default");
            if rule.default.lists().iter().all(|(_, list)| list.is_empty()) {
                causes.add(&at, "must have at least one of deny, allow, allowWithShadowDeny");
            }
            for (field, list) in [
                ("deny", &rule.default.deny),
                ("allow", &rule.default.allow),
                ("allowWithShadowDeny", &rule.default.allow_with_shadow_deny),
            ] {
                for (j, matcher) in list.iter().enumerate() {
                    let at = format!("{at}.{field}[{j}]");
                    if let Some(id) = &matcher.spiffe_id
                        && (!id.value.starts_with("spiffe://") || id.value.len() <= "spiffe://".len())
                    {
                        causes.add(format!("{at}.spiffeID.value"), "must start with spiffe:// and name a trust domain");
                    }
                    if let Some(sni) = &matcher.sni {
                        if sni.ty != "Exact" {
                            causes.add(format!("{at}.sni.type"), "must be Exact");
                        }
                        if !is_dns_subdomain(&sni.value) {
                            causes.add(
                                format!("{at}.sni.value"),
                                "must be a DNS name (lowercase letters, digits, '-' and '.')",
                            );
                        }
                        causes.unsupported(
                            format!("{at}.sni"),
                            "Ward's proxy does not match callers on the server name they ask for",
                        );
                    } else if matcher.spiffe_id.is_none() {
                        causes.unsupported(
                            &at,
                            "a matcher without spiffeID: Ward matches callers on their SPIFFE ID only",
                        );
                    }
                }
            }
        }
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
