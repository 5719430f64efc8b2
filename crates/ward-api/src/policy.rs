//! The authorization decision: may this caller reach this dataplane, and which policy said so.
//!
//! Rules, in order:
//! 1. Only MeshTrafficPermissions whose top-level `targetRef` selects the destination count.
//!    The more specific top-level kind wins:
//!    Dataplane > MeshServiceSubset > MeshSubset > MeshService > Mesh.
//!    A targetRef selects inbounds by their own tags, service, name or port, as Kuma does.
//!    A proxy decides once for all the inbounds of its dataplane, so a permission that selects
//!    only some of them counts only with its Deny entries: it can deny on the others too,
//!    never allow there.
//! 2. Among those, the entry whose caller selector is most specific wins:
//!    `rules[]` SPIFFE matchers > MeshSubset and MeshServiceSubset (more tags first, the
//!    service counting as a tag) > MeshService > Mesh.
//! 3. At equal specificity Deny beats AllowWithShadowDeny beats Allow, so a broad Allow
//!    never overrides an equally specific Deny (unlike Kuma's issue #16873).
//! 4. When no MeshTrafficPermission matches, legacy TrafficPermissions may allow.
//! 5. Otherwise the answer is Deny, naming no policy.
//!
//! A MeshExternalService is decided apart ([`decide_external`]): only permissions whose
//! top-level targetRef is `{kind: MeshExternalService, name}` count, ranked by rules 2 and 3;
//! otherwise Deny (rule 4 never applies). Such a permission selects no dataplane.

use std::fmt;

use crate::{
    dataplane::{Dataplane, Inbound, SERVICE_TAG, Tags, tags_match},
    permission::{Action, MeshTrafficPermission, TargetKind, TargetRef},
    resource::{Resource, ResourceType, Spec},
    spiffe::SpiffeId,
    targeting::{Selected, selects_destination},
};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A mesh member described by its tags (`kuma.io/service` at least), as `ward explain` asks.
    Tags(Tags),
    /// A mesh member proven by a certificate: its SPIFFE ID, and the tags of the inbounds of its
    /// dataplane that serve that identity's service (`None` while they are not known).
    Workload {
        /// The SPIFFE ID of its certificate.
        id: SpiffeId,
        /// Tag sets of its dataplane's inbounds of its service, from the control plane.
        tags: Option<Vec<Tags>>,
    },
    /// A plaintext caller of a PERMISSIVE mesh, with no identity: only mesh-wide
    /// (`from[].targetRef.kind: Mesh`) entries match it.
    Anonymous,
}

impl Caller {
    /// A caller known by its SPIFFE ID alone.
    pub fn spiffe(id: SpiffeId) -> Caller {
        Caller::Workload { id, tags: None }
    }
}

/// The tags a dataplane shows as a caller: the tag set of each of its inbounds (or its gateway)
/// that serves `service`, the service its identity names.
pub fn caller_tags(dp: &Dataplane, service: &str) -> Vec<Tags> {
    let sets: Vec<&Tags> = match &dp.networking.gateway {
        Some(gateway) => vec![&gateway.tags],
        None => dp.networking.inbound.iter().map(|i| &i.tags).collect(),
    };
    sets.into_iter().filter(|t| t.get(SERVICE_TAG).is_some_and(|s| s == service)).cloned().collect()
}

/// Whether a caller selector needs more than the caller's service to match: a tag other than
/// `kuma.io/service` with a value other than `*`.
pub fn needs_tags(selector: &Tags) -> bool {
    selector.iter().any(|(k, v)| k != SERVICE_TAG && v != "*")
}

/// Whether the decisions of `policies` can depend on a caller's tags beyond its service, so
/// the proxy must know them.
pub fn depend_on_caller_tags(policies: &[Resource]) -> bool {
    !tag_selectors(policies).is_empty()
}

/// The caller selectors of `policies` that need tags beyond the service (see [`needs_tags`]).
/// Permissions for a MeshExternalService are left out: no proxy decides them for a caller it
/// does not know, the control plane does, for the dataplane whose tags it holds.
pub fn tag_selectors(policies: &[Resource]) -> Vec<std::borrow::Cow<'_, Tags>> {
    policies
        .iter()
        .flat_map(|r| -> Vec<std::borrow::Cow<'_, Tags>> {
            match &r.spec {
                Spec::MeshTrafficPermission(mtp) if mtp.external_service().is_some() => Vec::new(),
                Spec::MeshTrafficPermission(mtp) => mtp
                    .from
                    .iter()
                    .flatten()
                    .filter_map(|e| e.target_ref.subset_tags())
                    .map(std::borrow::Cow::Owned)
                    .collect(),
                Spec::TrafficPermission(tp) => tp.sources.iter().map(|s| std::borrow::Cow::Borrowed(&s.tags)).collect(),
                _ => Vec::new(),
            }
        })
        .filter(|t| needs_tags(t))
        .collect()
}

/// A policy that decided, named `Type/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// Its type.
    pub ty: ResourceType,
    /// Its name.
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ty.info().name, self.name)
    }
}

/// The answer: what to do, and which policy decided (none when nothing matched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow, Deny or AllowWithShadowDeny.
    pub action: Action,
    /// The deciding policy; `None` for the default deny.
    pub policy: Option<PolicyRef>,
}

impl Decision {
    /// Whether the request may pass (Allow or AllowWithShadowDeny).
    pub fn allows(&self) -> bool {
        self.action != Action::Deny
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.policy {
            Some(p) => write!(f, "{} by {p}", self.action),
            None => write!(f, "{} (no permission matches)", self.action),
        }
    }
}

/// The caller as seen from mesh `mesh`: its service, SPIFFE ID and tag sets, as far as known.
struct CallerView {
    service: Option<String>,
    spiffe_id: Option<String>,
    /// Tag sets of its inbounds; `None` when only its service is known.
    tags: Option<Vec<Tags>>,
    anonymous: bool,
}

impl CallerView {
    fn new(mesh: &str, caller: &Caller) -> Self {
        match caller {
            Caller::Tags(tags) => CallerView {
                service: tags.get(SERVICE_TAG).cloned(),
                spiffe_id: tags.get(SERVICE_TAG).map(|s| format!("spiffe://{mesh}/{s}")),
                tags: Some(vec![tags.clone()]),
                anonymous: false,
            },
            Caller::Anonymous => CallerView { service: None, spiffe_id: None, tags: Some(Vec::new()), anonymous: true },
            Caller::Workload { id, tags } => {
                let service = (id.mesh() == mesh)
                    .then(|| id.service())
                    .flatten()
                    .filter(|s| !s.is_empty() && !s.contains('/'))
                    .map(str::to_string);
                CallerView {
                    // Tag sets of another service than the identity's are never taken on trust.
                    tags: tags
                        .as_ref()
                        .map(|sets| sets.iter().filter(|t| t.get(SERVICE_TAG) == service.as_ref()).cloned().collect()),
                    service,
                    spiffe_id: Some(id.to_string()),
                    anonymous: false,
                }
            }
        }
    }

    /// Whether the caller is a member of the mesh at all.
    fn in_mesh(&self) -> bool {
        self.service.is_some()
    }

    /// Whether the caller matches a tag selector. With its tags unknown, a selector that needs
    /// them matches only when `pessimistic` (a Deny), so an unknown caller is never let through
    /// by a tag it may not have, nor past a Deny it may fall under.
    fn matches(&self, selector: &Tags, pessimistic: bool) -> bool {
        let Some(service) = &self.service else { return false };
        if !needs_tags(selector) {
            return selector.get(SERVICE_TAG).is_none_or(|s| s == "*" || s == service);
        }
        match &self.tags {
            Some(sets) => sets.iter().any(|t| tags_match(selector, t)),
            None => pessimistic && selector.get(SERVICE_TAG).is_none_or(|s| s == "*" || s == service),
        }
    }
}

/// Specificity of a top-level targetRef (higher wins).
fn target_rank(kind: TargetKind) -> u8 {
    match kind {
        TargetKind::Mesh => 0,
        TargetKind::MeshService => 1,
        TargetKind::MeshSubset => 2,
        TargetKind::MeshServiceSubset => 3,
        TargetKind::Dataplane => 4,
        // Never ranked against the kinds above: it selects no dataplane, and only permissions
        // of this kind decide for a MeshExternalService.
        TargetKind::MeshExternalService => 0,
        // Refused in permissions: never ranked.
        TargetKind::MeshGateway | TargetKind::MeshHTTPRoute | TargetKind::MeshMultiZoneService => 0,
    }
}

/// Precedence of actions at equal specificity (higher wins).
fn action_rank(action: Action) -> u8 {
    match action {
        Action::Allow => 0,
        Action::AllowWithShadowDeny => 1,
        Action::Deny => 2,
    }
}

/// How specifically a `from[]` targetRef selects the caller, if it does (higher wins).
fn caller_rank(target: &TargetRef, action: Action, caller: &CallerView) -> Option<(u8, usize)> {
    if caller.anonymous {
        return (target.kind == TargetKind::Mesh).then_some((0, 0));
    }
    if !caller.in_mesh() {
        return None;
    }
    match target.kind {
        TargetKind::Mesh => Some((0, 0)),
        TargetKind::MeshService => (target.name == caller.service).then_some((1, 0)),
        TargetKind::MeshSubset | TargetKind::MeshServiceSubset => {
            let tags = target.subset_tags()?;
            caller.matches(&tags, action == Action::Deny).then_some((2, tags.len()))
        }
        TargetKind::Dataplane
        | TargetKind::MeshExternalService
        | TargetKind::MeshGateway
        | TargetKind::MeshHTTPRoute
        | TargetKind::MeshMultiZoneService => None,
    }
}

/// A candidate answer from one policy entry, ranked for comparison.
type Candidate<'a> = ((u8, u8, usize, u8), Action, &'a str);

fn candidates<'a>(name: &'a str, mtp: &'a MeshTrafficPermission, caller: &CallerView, top: u8) -> Vec<Candidate<'a>> {
    let mut out = Vec::new();
    for entry in mtp.from.iter().flatten() {
        let action = entry.default.action;
        if let Some((rank, tags)) = caller_rank(&entry.target_ref, action, caller) {
            out.push(((top, rank, tags, action_rank(action)), action, name));
        }
    }
    let Some(id) = &caller.spiffe_id else { return out };
    for rule in mtp.rules.iter().flatten() {
        for (action, matchers) in rule.default.lists() {
            if matchers.iter().any(|m| m.matches(id)) {
                out.push(((top, 3, 0, action_rank(action)), action, name));
            }
        }
    }
    out
}

/// The decision of the highest ranked candidate (at equal rank, the policy whose name sorts
/// first), naming its MeshTrafficPermission.
fn best<'a>(found: impl Iterator<Item = Candidate<'a>>) -> Option<Decision> {
    let (_, action, name) = found.max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.2.cmp(a.2)))?;
    Some(Decision {
        action,
        policy: Some(PolicyRef { ty: ResourceType::MeshTrafficPermission, name: name.to_string() }),
    })
}

/// Decides whether `caller` may reach the MeshExternalService `name` of mesh `mesh`: only the
/// MeshTrafficPermissions of that mesh whose top-level targetRef names it count, their `from[]`
/// and `rules[]` entries ranked as for a dataplane (rules 2 and 3 above). With none matching,
/// the answer is Deny: legacy TrafficPermissions never allow it.
pub fn decide_external(policies: &[Resource], caller: &Caller, mesh: &str, name: &str) -> Decision {
    let caller = CallerView::new(mesh, caller);
    let found = policies
        .iter()
        .filter(|r| r.meta.mesh == mesh)
        .filter_map(|r| match &r.spec {
            Spec::MeshTrafficPermission(mtp) if mtp.external_service() == Some(name) => {
                Some((r.meta.name.as_str(), mtp))
            }
            _ => None,
        })
        .flat_map(|(policy, mtp)| candidates(policy, mtp, &caller, target_rank(TargetKind::MeshExternalService)));
    best(found).unwrap_or(Decision { action: Action::Deny, policy: None })
}

/// Whether `policy` is a permission that can decide for callers of the dataplane `destination`:
/// what a proxy needs of its mesh's policies to make every decision [`decide`] would make.
pub fn applies_to(policy: &Resource, destination: &Resource) -> bool {
    let Spec::Dataplane(dp) = &destination.spec else { return false };
    if policy.meta.mesh != destination.meta.mesh {
        return false;
    }
    match &policy.spec {
        Spec::MeshTrafficPermission(mtp) => {
            selects_destination(mtp.target_ref.as_ref(), &destination.meta.name, &destination.meta.labels, dp, None)
                != Selected::None
        }
        Spec::TrafficPermission(tp) => tp.destinations.iter().any(|d| dp.has_tags(&d.tags)),
        _ => false,
    }
}

/// Decides whether `caller` may reach the dataplane `destination` as a whole, given every
/// resource of its mesh (other types are ignored). A policy selecting only some of its
/// inbounds counts only for its Deny here; [`decide_at_inbound`] is exact.
pub fn decide(policies: &[Resource], caller: &Caller, destination: &Resource) -> Decision {
    decide_at(policies, caller, destination, None)
}

/// Decides whether `caller` may reach inbound `inbound` (an index into
/// `networking.inbound`) of the dataplane `destination`: the policies selecting that
/// inbound decide, as Kuma computes rules per inbound. An index out of range is denied.
pub fn decide_at_inbound(policies: &[Resource], caller: &Caller, destination: &Resource, inbound: usize) -> Decision {
    let Spec::Dataplane(dp) = &destination.spec else {
        return Decision { action: Action::Deny, policy: None };
    };
    match dp.networking.inbound.get(inbound) {
        Some(at) => decide_at(policies, caller, destination, Some(at)),
        None => Decision { action: Action::Deny, policy: None },
    }
}

fn decide_at(policies: &[Resource], caller: &Caller, destination: &Resource, at: Option<&Inbound>) -> Decision {
    let Spec::Dataplane(dp) = &destination.spec else {
        return Decision { action: Action::Deny, policy: None };
    };
    let (dest_name, labels, mesh) = (&destination.meta.name, &destination.meta.labels, &destination.meta.mesh);
    let caller = CallerView::new(mesh, caller);

    let found = policies
        .iter()
        .filter(|r| &r.meta.mesh == mesh)
        .filter_map(|r| match &r.spec {
            Spec::MeshTrafficPermission(mtp) => Some((r.meta.name.as_str(), mtp)),
            _ => None,
        })
        .flat_map(|(name, mtp)| {
            let selected = selects_destination(mtp.target_ref.as_ref(), dest_name, labels, dp, at);
            let top = mtp.target_ref.as_ref().map_or(0, |t| target_rank(t.kind));
            let mut found = candidates(name, mtp, &caller, top);
            match selected {
                Selected::None => found.clear(),
                Selected::Part => found.retain(|(_, action, _)| *action == Action::Deny),
                Selected::All => {}
            }
            found
        });
    if let Some(decision) = best(found) {
        return decision;
    }

    let legacy = policies.iter().filter(|r| &r.meta.mesh == mesh).find(|r| match &r.spec {
        Spec::TrafficPermission(tp) => {
            caller.in_mesh()
                && tp.sources.iter().any(|s| caller.matches(&s.tags, false))
                && tp.destinations.iter().any(|d| match at {
                    Some(inbound) => tags_match(&d.tags, &inbound.tags),
                    None => dp.has_tags(&d.tags),
                })
        }
        _ => false,
    });
    match legacy {
        Some(r) => Decision {
            action: Action::Allow,
            policy: Some(PolicyRef { ty: ResourceType::TrafficPermission, name: r.meta.name.clone() }),
        },
        None => Decision { action: Action::Deny, policy: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn load(yaml: &str) -> Vec<Resource> {
        parse::documents(yaml)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, d)| parse::resource(d, &format!("document {}", i + 1)).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    fn dataplane(name: &str, service: &str, extra_tag: &str) -> Resource {
        load(&format!(
            "type: Dataplane\nmesh: m\nname: {name}\nlabels: {{team: {service}-team}}\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: 8080\n    tags:\n      kuma.io/service: {service}\n      {extra_tag}\n"
        ))
        .remove(0)
    }

    fn mtp(name: &str, target: &str, from: &[(&str, &str)]) -> String {
        let mut s =
            format!("---\ntype: MeshTrafficPermission\nmesh: m\nname: {name}\nspec:\n  targetRef: {target}\n  from:\n");
        for (source, action) in from {
            s += &format!("  - targetRef: {source}\n    default: {{action: {action}}}\n");
        }
        s
    }

    fn spiffe(id: &str) -> Caller {
        Caller::spiffe(SpiffeId::parse(id).unwrap())
    }

    fn svc(name: &str) -> Caller {
        Caller::Tags(Tags::from([(SERVICE_TAG.into(), name.into())]))
    }

    /// (policies YAML, caller, destination, expected action, expected policy name)
    #[test]
    fn decisions_table() {
        let backend = dataplane("backend-1", "backend", "version: v2");
        let any = "{kind: Mesh}";
        let web = "{kind: MeshService, name: web}";
        let web_subset = "{kind: MeshSubset, tags: {kuma.io/service: web}}";
        let to_backend = "{kind: MeshService, name: backend}";
        let to_v2 = "{kind: MeshSubset, tags: {version: v2}}";
        let to_dp = "{kind: Dataplane, name: backend-1}";
        let to_team = "{kind: Dataplane, labels: {team: backend-team}}";
        let rules = |list: &str, kind: &str, value: &str| {
            format!(
                "---\ntype: MeshTrafficPermission\nmesh: m\nname: rules\nspec:\n  rules:\n  - default:\n      {list}:\n      - spiffeID: {{type: {kind}, value: '{value}'}}\n"
            )
        };
        let cases: Vec<(String, Caller, Action, Option<&str>)> = vec![
            // Nothing applies: default deny, no policy named.
            (String::new(), svc("web"), Action::Deny, None),
            (mtp("a", to_backend, &[(web, "Allow")]), svc("web"), Action::Allow, Some("a")),
            (mtp("a", to_backend, &[(web, "Allow")]), svc("other"), Action::Deny, None),
            (mtp("a", "{kind: MeshService, name: other}", &[(any, "Allow")]), svc("web"), Action::Deny, None),
            // Equal specificity: Deny wins over Allow, whatever the order (Kuma #16873).
            (mtp("a", to_backend, &[(web, "Allow")]) + &mtp("b", to_backend, &[(web, "Deny")]), svc("web"), Action::Deny, Some("b")),
            (mtp("b", to_backend, &[(web, "Deny")]) + &mtp("a", to_backend, &[(web, "Allow")]), svc("web"), Action::Deny, Some("b")),
            (mtp("a", any, &[(any, "Allow"), (any, "Deny")]), svc("web"), Action::Deny, Some("a")),
            (mtp("a", any, &[(any, "Allow")]) + &mtp("b", any, &[(any, "AllowWithShadowDeny")]), svc("web"), Action::AllowWithShadowDeny, Some("b")),
            // A specific Deny is not overridden by a broader Allow.
            (mtp("broad", any, &[(any, "Allow")]) + &mtp("specific", to_backend, &[(web, "Deny")]), svc("web"), Action::Deny, Some("specific")),
            // A more specific top-level targetRef wins: Dataplane > MeshSubset > MeshService > Mesh.
            (mtp("svc", to_backend, &[(any, "Deny")]) + &mtp("subset", to_v2, &[(any, "Allow")]), svc("web"), Action::Allow, Some("subset")),
            (mtp("subset", to_v2, &[(any, "Deny")]) + &mtp("dp", to_dp, &[(any, "Allow")]), svc("web"), Action::Allow, Some("dp")),
            (mtp("mesh", any, &[(web, "Deny")]) + &mtp("svc", to_backend, &[(any, "Allow")]), svc("web"), Action::Allow, Some("svc")),
            (mtp("lbl", to_team, &[(any, "Allow")]), svc("web"), Action::Allow, Some("lbl")),
            (mtp("lbl", "{kind: Dataplane, labels: {team: other}}", &[(any, "Allow")]), svc("web"), Action::Deny, None),
            // Within one level, the more specific caller selector wins.
            (mtp("a", to_backend, &[(any, "Deny"), (web, "Allow")]), svc("web"), Action::Allow, Some("a")),
            (mtp("a", to_backend, &[(web, "Deny"), (web_subset, "Allow")]), svc("web"), Action::Allow, Some("a")),
            (
                mtp("a", to_backend, &[(web_subset, "Allow"), ("{kind: MeshSubset, tags: {kuma.io/service: web, version: v1}}", "Deny")]),
                Caller::Tags(Tags::from([(SERVICE_TAG.into(), "web".into()), ("version".into(), "v1".into())])),
                Action::Deny,
                Some("a"),
            ),
            // Callers known only by SPIFFE ID.
            (mtp("a", to_backend, &[(web, "Allow")]), spiffe("spiffe://m/web"), Action::Allow, Some("a")),
            (mtp("a", to_backend, &[(any, "Allow")]), spiffe("spiffe://other-mesh/web"), Action::Deny, None),
            (mtp("a", to_backend, &[(web_subset, "Allow")]), spiffe("spiffe://m/web/extra"), Action::Deny, None),
            // rules[] form: Exact and Prefix; deny wins inside the form.
            (rules("allow", "Exact", "spiffe://m/web"), spiffe("spiffe://m/web"), Action::Allow, Some("rules")),
            (rules("allow", "Exact", "spiffe://m/web"), spiffe("spiffe://m/web2"), Action::Deny, None),
            (rules("allow", "Prefix", "spiffe://m/"), svc("anything"), Action::Allow, Some("rules")),
            (rules("deny", "Prefix", "spiffe://m/") + &mtp("a", any, &[(web, "Allow")]), svc("web"), Action::Deny, Some("rules")),
            (rules("allowWithShadowDeny", "Exact", "spiffe://m/web"), svc("web"), Action::AllowWithShadowDeny, Some("rules")),
            // A plaintext caller of a PERMISSIVE mesh: only mesh-wide entries match it.
            (mtp("a", any, &[(any, "Allow")]), Caller::Anonymous, Action::Allow, Some("a")),
            (mtp("a", to_backend, &[(any, "Allow")]), Caller::Anonymous, Action::Allow, Some("a")),
            (mtp("a", to_backend, &[(web, "Allow")]), Caller::Anonymous, Action::Deny, None),
            (mtp("a", any, &[(any, "Allow"), (any, "Deny")]), Caller::Anonymous, Action::Deny, Some("a")),
            (rules("allow", "Prefix", "spiffe://m/"), Caller::Anonymous, Action::Deny, None),
            // Legacy TrafficPermission only when no MeshTrafficPermission matches.
            (
                "type: TrafficPermission\nmesh: m\nname: legacy\nsources:\n- match: {kuma.io/service: '*'}\ndestinations:\n- match: {kuma.io/service: backend}\n".into(),
                svc("web"),
                Action::Allow,
                Some("legacy"),
            ),
            (
                "type: TrafficPermission\nmesh: m\nname: legacy\nsources:\n- match: {kuma.io/service: web}\ndestinations:\n- match: {kuma.io/service: other}\n".into(),
                svc("web"),
                Action::Deny,
                None,
            ),
            (
                mtp("a", to_backend, &[(web, "Deny")])
                    + "---\ntype: TrafficPermission\nmesh: m\nname: legacy\nsources:\n- match: {kuma.io/service: '*'}\ndestinations:\n- match: {kuma.io/service: '*'}\n",
                svc("web"),
                Action::Deny,
                Some("a"),
            ),
        ];
        for (i, (yaml, caller, action, policy)) in cases.into_iter().enumerate() {
            let policies = if yaml.is_empty() { vec![] } else { load(&yaml) };
            let got = decide(&policies, &caller, &backend);
            assert_eq!(got.action, action, "case {i}: {yaml}");
            assert_eq!(got.policy.as_ref().map(|p| p.name.as_str()), policy, "case {i}: {yaml}");
        }
    }

    fn workload(service: &str, tags: Option<&[&[(&str, &str)]]>) -> Caller {
        let sets = tags.map(|sets| {
            sets.iter()
                .map(|set| {
                    let mut t: Tags = set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                    t.entry(SERVICE_TAG.into()).or_insert_with(|| service.into());
                    t
                })
                .collect()
        });
        Caller::Workload { id: SpiffeId::for_service("m", service).unwrap(), tags: sets }
    }

    /// Decisions on callers' tags beyond their service, with the tags known from the control
    /// plane, and without them (a Deny that may apply applies; an Allow that needs a tag does not).
    #[test]
    fn tag_decisions_table() {
        let backend = dataplane("backend-1", "backend", "version: v2");
        let to_backend = "{kind: MeshService, name: backend}";
        let web = "{kind: MeshService, name: web}";
        let canary = "{kind: MeshSubset, tags: {kuma.io/service: web, version: canary}}";
        let stable = "{kind: MeshSubset, tags: {kuma.io/service: web, version: stable}}";
        let any_canary = "{kind: MeshSubset, tags: {version: canary}}";
        let docs = mtp("web", to_backend, &[(web, "Allow"), (canary, "Deny")]);
        let legacy = "type: TrafficPermission\nmesh: m\nname: legacy\nsources:\n- match: {kuma.io/service: web, version: v1}\ndestinations:\n- match: {kuma.io/service: backend}\n";
        let cases: Vec<(String, Caller, Action, Option<&str>)> = vec![
            // Kuma's documented example: allow web, deny its canary.
            (docs.clone(), workload("web", Some(&[&[("version", "canary")]])), Action::Deny, Some("web")),
            (docs.clone(), workload("web", Some(&[&[("version", "stable")]])), Action::Allow, Some("web")),
            (docs.clone(), workload("web", Some(&[&[]])), Action::Allow, Some("web")),
            (
                docs.clone(),
                workload("web", Some(&[&[("version", "stable")], &[("version", "canary")]])),
                Action::Deny,
                Some("web"),
            ),
            (docs.clone(), workload("web", None), Action::Deny, Some("web")),
            (docs, workload("other", None), Action::Deny, None),
            // An Allow that needs a tag lets in only callers known to have it.
            (
                mtp("s", to_backend, &[(stable, "Allow")]),
                workload("web", Some(&[&[("version", "stable")]])),
                Action::Allow,
                Some("s"),
            ),
            (
                mtp("s", to_backend, &[(stable, "Allow")]),
                workload("web", Some(&[&[("version", "canary")]])),
                Action::Deny,
                None,
            ),
            (mtp("s", to_backend, &[(stable, "Allow")]), workload("web", None), Action::Deny, None),
            (mtp("s", to_backend, &[(stable, "AllowWithShadowDeny")]), workload("web", None), Action::Deny, None),
            // A selector without a service applies to every service's canaries.
            (
                mtp("c", to_backend, &[("{kind: Mesh}", "Allow"), (any_canary, "Deny")]),
                workload("web", Some(&[&[("version", "canary")]])),
                Action::Deny,
                Some("c"),
            ),
            (
                mtp("c", to_backend, &[("{kind: Mesh}", "Allow"), (any_canary, "Deny")]),
                workload("web", Some(&[&[]])),
                Action::Allow,
                Some("c"),
            ),
            // Tag sets of another service than the certificate's are not believed.
            (
                mtp(
                    "a",
                    to_backend,
                    &[("{kind: MeshSubset, tags: {kuma.io/service: admin, version: canary}}", "Allow")],
                ),
                Caller::Workload {
                    id: SpiffeId::for_service("m", "web").unwrap(),
                    tags: Some(vec![Tags::from([
                        (SERVICE_TAG.into(), "admin".into()),
                        ("version".into(), "canary".into()),
                    ])]),
                },
                Action::Deny,
                None,
            ),
            // Legacy TrafficPermission sources with tags.
            (legacy.into(), workload("web", Some(&[&[("version", "v1")]])), Action::Allow, Some("legacy")),
            (legacy.into(), workload("web", Some(&[&[("version", "v2")]])), Action::Deny, None),
            (legacy.into(), workload("web", None), Action::Deny, None),
        ];
        for (i, (yaml, caller, action, policy)) in cases.into_iter().enumerate() {
            let got = decide(&load(&yaml), &caller, &backend);
            assert_eq!(got.action, action, "case {i}: {caller:?}\n{yaml}");
            assert_eq!(got.policy.as_ref().map(|p| p.name.as_str()), policy, "case {i}: {yaml}");
        }
    }

    #[test]
    fn kuma_2_14_target_refs_decide_exactly() {
        let two = load(
            "type: Dataplane\nmesh: m\nname: api-1\nlabels: {team: api, k8s.kuma.io/namespace: demo}\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  \
             - port: 8080\n    name: main\n    tags: {kuma.io/service: api, version: v1}\n  - port: 9090\n    \
             tags: {kuma.io/service: api, version: v1, port: admin}\n",
        )
        .remove(0);
        let web_v2 = || Caller::Workload {
            id: SpiffeId::parse("spiffe://m/web").unwrap(),
            tags: Some(vec![Tags::from([(SERVICE_TAG.into(), "web".into()), ("version".into(), "v2".into())])]),
        };
        let any = "{kind: Mesh}";
        let cases: Vec<(String, Caller, Action)> = vec![
            // MeshServiceSubset callers: service and tags must both match.
            (
                mtp("a", any, &[("{kind: MeshServiceSubset, name: web, tags: {version: v2}}", "Allow")]),
                web_v2(),
                Action::Allow,
            ),
            (
                mtp("a", any, &[("{kind: MeshServiceSubset, name: web, tags: {version: v1}}", "Allow")]),
                web_v2(),
                Action::Deny,
            ),
            (
                mtp("a", any, &[("{kind: MeshServiceSubset, name: other, tags: {version: v2}}", "Allow")]),
                web_v2(),
                Action::Deny,
            ),
            // A bare Dataplane selects every dataplane; labels select by the dataplane's labels.
            (mtp("a", "{kind: Dataplane}", &[(any, "Allow")]), svc("web"), Action::Allow),
            (mtp("a", "{kind: Dataplane, labels: {team: api}}", &[(any, "Allow")]), svc("web"), Action::Allow),
            (mtp("a", "{kind: Dataplane, labels: {team: db}}", &[(any, "Allow")]), svc("web"), Action::Deny),
            // A namespace is the dataplane's k8s.kuma.io/namespace label.
            (mtp("a", "{kind: Dataplane, name: api-1, namespace: demo}", &[(any, "Allow")]), svc("web"), Action::Allow),
            (mtp("a", "{kind: Dataplane, name: api-1, namespace: other}", &[(any, "Allow")]), svc("web"), Action::Deny),
            (mtp("a", "{kind: Dataplane, namespace: demo}", &[(any, "Allow")]), svc("web"), Action::Allow),
            // proxyTypes: a sidecar is not a gateway.
            (mtp("a", "{kind: Mesh, proxyTypes: [Gateway]}", &[(any, "Allow")]), svc("web"), Action::Deny),
            (mtp("a", "{kind: Mesh, proxyTypes: [Sidecar]}", &[(any, "Allow")]), svc("web"), Action::Allow),
            // Decided for the dataplane as a whole (as `ward explain` does without an inbound), two
            // permissions each selecting one inbound of two (by name, by port) do not add up to an
            // allow; the proxy decides per inbound (see the next test).
            (
                mtp("a", "{kind: Dataplane, name: api-1, sectionName: main}", &[(any, "Allow")])
                    + &mtp("b", "{kind: Dataplane, name: api-1, sectionName: '9090'}", &[(any, "Allow")]),
                svc("web"),
                Action::Deny,
            ),
            // Selecting one inbound of two, a permission may deny for both and never allow for the other.
            (
                mtp("a", "{kind: Dataplane, name: api-1, sectionName: main}", &[(any, "Allow")]),
                svc("web"),
                Action::Deny,
            ),
            (
                mtp("a", any, &[(any, "Allow")]) + &mtp("b", "{kind: Dataplane, sectionName: main}", &[(any, "Deny")]),
                svc("web"),
                Action::Deny,
            ),
            (mtp("a", "{kind: MeshSubset, tags: {port: admin}}", &[(any, "Allow")]), svc("web"), Action::Deny),
            (mtp("a", "{kind: MeshSubset, tags: {version: v1}}", &[(any, "Allow")]), svc("web"), Action::Allow),
        ];
        for (i, (yaml, caller, action)) in cases.into_iter().enumerate() {
            let got = decide(&load(&yaml), &caller, &two);
            assert_eq!(got.action, action, "case {i}: {caller:?}\n{yaml}");
        }
    }

    /// What the proxy decides at each inbound: exactly the policies that select that inbound,
    /// for a dataplane with sections and one whose inbounds serve two services.
    #[test]
    fn decisions_at_an_inbound_follow_the_policies_selecting_it() {
        let dataplane = |yaml: &str| load(yaml).remove(0);
        let api = dataplane(
            "type: Dataplane\nmesh: m\nname: api-1\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  \
             - port: 8080\n    name: main\n    tags: {kuma.io/service: api}\n  - port: 9090\n    \
             tags: {kuma.io/service: api, port: admin}\n",
        );
        let two_services = dataplane(
            "type: Dataplane\nmesh: m\nname: backend-1\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  \
             - port: 8080\n    tags: {kuma.io/service: backend}\n  - port: 8081\n    tags: {kuma.io/service: backend-api}\n",
        );
        let any = "{kind: Mesh}";
        // (policies, destination, [action at inbound 0, at inbound 1], action as a whole)
        let cases: Vec<(String, &Resource, [Action; 2], Action)> = vec![
            (
                mtp("a", "{kind: Dataplane, sectionName: main}", &[(any, "Allow")])
                    + &mtp("b", "{kind: Dataplane, sectionName: '9090'}", &[(any, "Allow")]),
                &api,
                [Action::Allow, Action::Allow],
                Action::Deny,
            ),
            (
                mtp("a", "{kind: Dataplane, sectionName: main}", &[(any, "Allow")]),
                &api,
                [Action::Allow, Action::Deny],
                Action::Deny,
            ),
            (
                mtp("a", any, &[(any, "Allow")])
                    + &mtp("b", "{kind: MeshSubset, tags: {port: admin}}", &[(any, "Deny")]),
                &api,
                [Action::Allow, Action::Deny],
                Action::Deny,
            ),
            (
                mtp("a", "{kind: MeshService, name: backend}", &[("{kind: MeshService, name: web}", "Allow")]),
                &two_services,
                [Action::Allow, Action::Deny],
                Action::Deny,
            ),
            (
                mtp("a", "{kind: MeshService, name: backend}", &[("{kind: MeshService, name: web}", "Allow")])
                    + &mtp(
                        "b",
                        "{kind: MeshService, name: backend-api}",
                        &[("{kind: MeshService, name: web}", "Allow")],
                    ),
                &two_services,
                [Action::Allow, Action::Allow],
                Action::Deny,
            ),
            (
                "---\ntype: TrafficPermission\nmesh: m\nname: tp\nsources:\n- match: {kuma.io/service: web}\n\
                 destinations:\n- match: {kuma.io/service: backend-api}\n"
                    .to_string(),
                &two_services,
                [Action::Deny, Action::Allow],
                Action::Allow,
            ),
        ];
        for (i, (yaml, destination, at, whole)) in cases.into_iter().enumerate() {
            let policies = load(&yaml);
            for (inbound, want) in at.into_iter().enumerate() {
                let got = decide_at_inbound(&policies, &svc("web"), destination, inbound);
                assert_eq!(got.action, want, "case {i} at inbound {inbound}:\n{yaml}");
            }
            assert_eq!(decide(&policies, &svc("web"), destination).action, whole, "case {i} as a whole:\n{yaml}");
            assert_eq!(decide_at_inbound(&policies, &svc("web"), destination, 2).action, Action::Deny, "case {i}");
        }
    }

    #[test]
    fn which_policies_depend_on_tags() {
        let web = "{kind: MeshService, name: web}";
        let canary = "{kind: MeshSubset, tags: {kuma.io/service: web, version: canary}}";
        let only_service = "{kind: MeshSubset, tags: {kuma.io/service: web}}";
        let wildcard = "{kind: MeshServiceSubset, name: web, tags: {version: '*'}}";
        assert!(!depend_on_caller_tags(&load(&mtp("a", "{kind: Mesh}", &[(web, "Allow"), (only_service, "Deny")]))));
        assert!(!depend_on_caller_tags(&load(&mtp("a", "{kind: Mesh}", &[(wildcard, "Deny")]))));
        assert!(depend_on_caller_tags(&load(&mtp("a", "{kind: Mesh}", &[(web, "Allow"), (canary, "Deny")]))));
        let pay = "{kind: MeshExternalService, name: pay}";
        assert!(!depend_on_caller_tags(&load(&mtp("a", pay, &[(web, "Allow"), (canary, "Deny")]))));
    }

    #[test]
    fn caller_tags_are_the_inbounds_of_the_identity_service() {
        let dp = load("type: Dataplane\nmesh: m\nname: web-1\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: 1\n    tags: {kuma.io/service: web, version: canary}\n  - port: 2\n    tags: {kuma.io/service: web, version: v2}\n").remove(0);
        let Spec::Dataplane(dp) = &dp.spec else { unreachable!() };
        let sets = caller_tags(dp, "web");
        let versions: Vec<&str> = sets.iter().map(|t| t["version"].as_str()).collect();
        assert_eq!(versions, ["canary", "v2"]);
        assert!(caller_tags(dp, "admin").is_empty());
    }

    /// The marketplace of DESIGN.md, from the example every test and the demo share.
    #[test]
    fn marketplace_example() {
        let all = load(include_str!("../../../examples/marketplace.yaml"));
        let dataplane = |service: &str| {
            all.iter().find(|r| matches!(&r.spec, Spec::Dataplane(d) if d.service() == service)).expect("dataplane")
        };
        let allowed = [
            ("invoices", "users"),
            ("invoices", "items"),
            ("users", "invoices"),
            ("edge-gateway", "users"),
            ("edge-gateway", "items"),
            ("edge-gateway", "invoices"),
        ];
        for caller in ["users", "items", "invoices", "edge-gateway", "outsider"] {
            for destination in ["users", "items", "invoices"] {
                let want = allowed.contains(&(caller, destination));
                let got = decide(&all, &spiffe(&format!("spiffe://marketplace/{caller}")), dataplane(destination));
                assert_eq!(got.allows(), want, "{caller} -> {destination}: {got}");
            }
        }
    }

    #[test]
    fn applicable_policies_decide_like_all_of_them() {
        let all = load(include_str!("../../../examples/marketplace.yaml"));
        for destination in all.iter().filter(|r| matches!(r.spec, Spec::Dataplane(_))) {
            let mine: Vec<Resource> = all.iter().filter(|p| applies_to(p, destination)).cloned().collect();
            assert_eq!(mine.len(), 1, "one permission per marketplace service: {}", destination.meta.name);
            for caller in ["users", "items", "invoices", "edge-gateway", "outsider"] {
                let caller = spiffe(&format!("spiffe://marketplace/{caller}"));
                assert_eq!(decide(&mine, &caller, destination), decide(&all, &caller, destination));
            }
        }
    }

    #[test]
    fn other_meshes_policies_do_not_apply() {
        let backend = dataplane("backend-1", "backend", "version: v2");
        let mut policies = load(&mtp("a", "{kind: Mesh}", &[("{kind: Mesh}", "Allow")]));
        policies[0].meta.mesh = "other".into();
        assert_eq!(decide(&policies, &svc("web"), &backend).action, Action::Deny);
    }

    #[test]
    fn decision_explains_itself() {
        let backend = dataplane("backend-1", "backend", "version: v2");
        let policies = load(&mtp("allow-web", "{kind: Mesh}", &[("{kind: Mesh}", "Allow")]));
        assert_eq!(decide(&policies, &svc("web"), &backend).to_string(), "Allow by MeshTrafficPermission/allow-web");
        assert_eq!(decide(&[], &svc("web"), &backend).to_string(), "Deny (no permission matches)");
    }

    /// (policies, caller, expected action, expected policy) for the MeshExternalService `pay` of
    /// mesh `m`.
    #[test]
    fn mesh_external_service_decisions() {
        let pay = "{kind: MeshExternalService, name: pay}";
        let any = "{kind: Mesh}";
        let web = "{kind: MeshService, name: web}";
        let canary = "{kind: MeshSubset, tags: {kuma.io/service: web, version: canary}}";
        let web_canary = || Caller::Workload {
            id: SpiffeId::for_service("m", "web").unwrap(),
            tags: Some(vec![Tags::from([(SERVICE_TAG.into(), "web".into()), ("version".into(), "canary".into())])]),
        };
        let rules = "---\ntype: MeshTrafficPermission\nmesh: m\nname: by-id\nspec:\n  targetRef: {kind: MeshExternalService, name: pay}\n  \
                     rules:\n  - default:\n      allow:\n      - spiffeID: {type: Prefix, value: 'spiffe://m/'}\n";
        let legacy = "---\ntype: TrafficPermission\nmesh: m\nname: legacy\nsources:\n- match: {kuma.io/service: '*'}\n\
                      destinations:\n- match: {kuma.io/service: '*'}\n";
        let cases: Vec<(String, Caller, Action, Option<&str>)> = vec![
            (String::new(), svc("web"), Action::Deny, None),
            (mtp("to-pay", pay, &[(any, "Allow")]), svc("web"), Action::Allow, Some("to-pay")),
            (mtp("to-pay", pay, &[(web, "Allow")]), svc("web"), Action::Allow, Some("to-pay")),
            (mtp("to-pay", pay, &[(web, "Allow")]), svc("api"), Action::Deny, None),
            (mtp("to-pay", pay, &[(any, "Allow"), (canary, "Deny")]), web_canary(), Action::Deny, Some("to-pay")),
            (
                mtp("broad", pay, &[(any, "Allow")]) + &mtp("canary", pay, &[(canary, "Deny")]),
                web_canary(),
                Action::Deny,
                Some("canary"),
            ),
            (
                mtp("broad", pay, &[(any, "Allow")]) + &mtp("canary", pay, &[(canary, "Deny")]),
                svc("web"),
                Action::Allow,
                Some("broad"),
            ),
            (rules.to_string(), spiffe("spiffe://m/web"), Action::Allow, Some("by-id")),
            (rules.to_string(), spiffe("spiffe://other/web"), Action::Deny, None),
            // Permissions for another MeshExternalService, for dataplanes, or legacy ones, do not count.
            (
                mtp("to-bank", "{kind: MeshExternalService, name: bank}", &[(any, "Allow")]),
                svc("web"),
                Action::Deny,
                None,
            ),
            (mtp("all", any, &[(any, "Allow")]), svc("web"), Action::Deny, None),
            (legacy.to_string(), svc("web"), Action::Deny, None),
            (mtp("s", pay, &[(any, "AllowWithShadowDeny")]), Caller::Anonymous, Action::AllowWithShadowDeny, Some("s")),
            (mtp("s", pay, &[(web, "Allow")]), Caller::Anonymous, Action::Deny, None),
        ];
        for (i, (yaml, caller, action, policy)) in cases.into_iter().enumerate() {
            let got = decide_external(&load(&yaml), &caller, "m", "pay");
            assert_eq!(got.action, action, "case {i}: {caller:?}\n{yaml}");
            assert_eq!(got.policy.as_ref().map(|p| p.name.as_str()), policy, "case {i}: {yaml}");
        }

        // A permission of another mesh does not count.
        let mut other = load(&mtp("to-pay", pay, &[(any, "Allow")]));
        other[0].meta.mesh = "other".into();
        assert_eq!(decide_external(&other, &svc("web"), "m", "pay").action, Action::Deny);
        assert_eq!(decide_external(&other, &svc("web"), "other", "pay").action, Action::Allow);

        // It never changes what is decided for a dataplane, nor applies to one.
        let backend = dataplane("backend-1", "backend", "version: v2");
        let base = mtp("all", any, &[(web, "Allow")]);
        for extra in
            [mtp("x", pay, &[(any, "Deny")]), mtp("x", pay, &[(web, "Allow")]) + &mtp("y", pay, &[(any, "Deny")])]
        {
            let with = load(&(base.clone() + &extra));
            let without = load(&base);
            assert!(with.iter().filter(|p| p.meta.name != "all").all(|p| !applies_to(p, &backend)));
            for caller in [svc("web"), svc("api"), Caller::Anonymous] {
                assert_eq!(decide(&with, &caller, &backend), decide(&without, &caller, &backend));
                assert_eq!(
                    decide_at_inbound(&with, &caller, &backend, 0),
                    decide_at_inbound(&without, &caller, &backend, 0)
                );
            }
            let only = load(&extra);
            assert_eq!(decide(&only, &svc("web"), &backend), Decision { action: Action::Deny, policy: None });
        }
    }

    #[test]
    fn a_mesh_external_service_target_is_checked() {
        let base = "type: MeshTrafficPermission\nmesh: m\nname: p\nspec:\n  targetRef: ";
        let from = "\n  from:\n  - targetRef: {kind: Mesh}\n    default: {action: Allow}\n";
        let cases = [
            ("{kind: MeshExternalService}", "spec.targetRef.name"),
            ("{kind: MeshExternalService, name: pay, sectionName: http}", "spec.targetRef.sectionName"),
            ("{kind: MeshExternalService, name: pay, tags: {a: b}}", "spec.targetRef.tags"),
            ("{kind: MeshExternalService, name: pay, labels: {a: b}}", "spec.targetRef.labels"),
            ("{kind: MeshExternalService, name: pay, proxyTypes: [Sidecar]}", "spec.targetRef.proxyTypes"),
            ("{kind: MeshExternalService, name: 'a/b'}", "spec.targetRef.name"),
        ];
        for (target, field) in cases {
            let docs = parse::documents(&format!("{base}{target}{from}")).unwrap();
            let err = parse::resource(docs.into_iter().next().unwrap(), "test").unwrap_err();
            assert!(err.causes.iter().any(|c| c.field == field), "{target}: {err}");
        }
        let yaml = "type: MeshTrafficPermission\nmesh: m\nname: p\nspec:\n  targetRef: {kind: Mesh}\n  from:\n  \
                    - targetRef: {kind: MeshExternalService, name: pay}\n    default: {action: Allow}\n";
        let err = parse::resource(parse::documents(yaml).unwrap().remove(0), "test").unwrap_err();
        assert_eq!(err.causes[0].field, "spec.from[0].targetRef.kind", "{err}");
        let ok =
            load(&mtp("p", "{kind: MeshExternalService, name: pay}", &[("{kind: MeshService, name: web}", "Allow")]));
        let Spec::MeshTrafficPermission(p) = &ok[0].spec else { unreachable!() };
        assert_eq!(p.external_service(), Some("pay"));
        assert_eq!(resource_round_trip(&ok[0]), ok[0]);
    }

    fn resource_round_trip(r: &Resource) -> Resource {
        parse::resource(r.to_json(), "again").unwrap()
    }
}
