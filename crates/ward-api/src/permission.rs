//! The `MeshTrafficPermission` resource, in its `from[]` and its `rules[]` forms.

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::{Tags, check_tags},
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
        /// One dataplane by `name`, or those with `labels`.
        Dataplane = "Dataplane",
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
    /// Tags (`MeshSubset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Labels of dataplanes (`Dataplane`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Tags>,
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
    #[serde(rename = "spiffeID")]
    pub spiffe_id: SpiffeIdMatch,
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
    /// kinds allowed at this position.
    pub fn check(&self, at: &str, kinds: &[TargetKind], causes: &mut Causes) {
        if !kinds.contains(&self.kind) {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            causes.add(format!("{at}.kind"), format!("must be one of {}", names.join(", ")));
            return;
        }
        let (name_rule, tags_rule, labels_rule) = match self.kind {
            TargetKind::Mesh => (Field::Forbidden, Field::Forbidden, Field::Forbidden),
            TargetKind::MeshService => (Field::Required, Field::Forbidden, Field::Forbidden),
            TargetKind::MeshSubset => (Field::Forbidden, Field::Required, Field::Forbidden),
            TargetKind::Dataplane => (Field::Optional, Field::Forbidden, Field::Optional),
        };
        let kind = self.kind;
        name_rule.check(&format!("{at}.name"), kind, self.name.is_some(), causes);
        tags_rule.check(&format!("{at}.tags"), kind, self.tags.is_some(), causes);
        labels_rule.check(&format!("{at}.labels"), kind, self.labels.is_some(), causes);
        if kind == TargetKind::Dataplane && self.name.is_none() && self.labels.is_none() {
            causes.add(at, "kind Dataplane needs name or labels");
        }
        if let Some(name) = &self.name
            && let Err(e) = check_name(name)
        {
            causes.add(format!("{at}.name"), e);
        }
        for (field, tags) in [("tags", &self.tags), ("labels", &self.labels)] {
            if let Some(tags) = tags {
                if tags.is_empty() {
                    causes.add(format!("{at}.{field}"), "must not be empty");
                }
                check_tags(&format!("{at}.{field}"), tags, causes);
            }
        }
        if let Some(labels) = &self.labels {
            crate::labels::check_labels(&format!("{at}.labels"), labels, true, causes);
        }
    }
}

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
    /// Checks what serde cannot: kinds per position, required fields, one form at a time.
    pub fn check(&self, causes: &mut Causes) {
        use TargetKind::*;
        if let Some(target) = &self.target_ref {
            target.check("spec.targetRef", &[Mesh, MeshService, MeshSubset, Dataplane], causes);
        }
        match (&self.from, &self.rules) {
            (Some(_), Some(_)) => causes.add("spec", "from and rules cannot be used together"),
            (None, None) => causes.add("spec", "must have from or rules"),
            (Some(from), None) if from.is_empty() => causes.add("spec.from", "must not be empty"),
            (None, Some(rules)) if rules.is_empty() => causes.add("spec.rules", "must not be empty"),
            _ => {}
        }
        for (i, entry) in self.from.iter().flatten().enumerate() {
            entry.target_ref.check(&format!("spec.from[{i}].targetRef"), &[Mesh, MeshService, MeshSubset], causes);
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
                    if !matcher.spiffe_id.value.starts_with("spiffe://")
                        || matcher.spiffe_id.value.len() <= "spiffe://".len()
                    {
                        causes.add(
                            format!("{at}.{field}[{j}].spiffeID.value"),
                            "must start with spiffe:// and name a trust domain",
                        );
                    }
                }
            }
        }
    }
}
