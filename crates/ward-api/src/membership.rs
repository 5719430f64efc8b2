//! Mesh membership: whether a dataplane's tags fulfil its mesh's
//! `constraints.dataplaneProxy` (at least one requirement, when there are any, and no
//! restriction), checked on each of its tag sets as Kuma does.

use crate::{
    dataplane::{Dataplane, Tags, tags_match},
    mesh::Mesh,
};

/// Why a dataplane may not be a member of a mesh: the dataplane's field at fault and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAMember {
    /// The dataplane's field whose tags fail, e.g. `networking.inbound[1].tags`.
    pub field: String,
    /// Why, naming the mesh's rule.
    pub reason: String,
}

impl std::fmt::Display for NotAMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Checks `dp` against the constraints of `mesh` (named `mesh_name`). Every tag set of the
/// dataplane (each inbound's tags, or the gateway's) must match a requirement and no
/// restriction; a dataplane with no tags at all matches no requirement.
pub fn check(mesh_name: &str, mesh: &Mesh, dp: &Dataplane) -> Result<(), NotAMember> {
    let Some(rules) = mesh.constraints.as_ref().and_then(|c| c.dataplane_proxy.as_ref()) else { return Ok(()) };
    let empty = Tags::new();
    let mut sets: Vec<(String, &Tags)> = match &dp.networking.gateway {
        Some(gateway) => vec![("networking.gateway.tags".into(), &gateway.tags)],
        None => dp
            .networking
            .inbound
            .iter()
            .enumerate()
            .map(|(i, inbound)| (format!("networking.inbound[{i}].tags"), &inbound.tags))
            .collect(),
    };
    if sets.is_empty() {
        sets.push(("networking.inbound".into(), &empty));
    }
    for (field, tags) in sets {
        if !rules.requirements.is_empty() && !rules.requirements.iter().any(|r| tags_match(&r.tags, tags)) {
            return Err(NotAMember {
                field,
                reason: format!(
                    "tags {} fulfil none of the constraints.dataplaneProxy.requirements of Mesh {mesh_name:?}",
                    show(tags)
                ),
            });
        }
        if let Some(i) = rules.restrictions.iter().position(|r| tags_match(&r.tags, tags)) {
            return Err(NotAMember {
                field,
                reason: format!(
                    "tags {} match constraints.dataplaneProxy.restrictions[{i}] ({}) of Mesh {mesh_name:?}",
                    show(tags),
                    show(&rules.restrictions[i].tags)
                ),
            });
        }
    }
    Ok(())
}

fn show(tags: &Tags) -> String {
    let pairs: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mesh(constraints: serde_json::Value) -> Mesh {
        serde_json::from_value(json!({ "constraints": { "dataplaneProxy": constraints } })).unwrap()
    }

    fn dataplane(inbounds: &[serde_json::Value]) -> Dataplane {
        let inbound: Vec<serde_json::Value> = inbounds
            .iter()
            .enumerate()
            .map(|(i, tags)| json!({ "port": 8000 + i, "servicePort": 9000 + i, "tags": tags }))
            .collect();
        serde_json::from_value(json!({ "networking": { "address": "10.0.0.1", "inbound": inbound } })).unwrap()
    }

    /// Kuma's membership table: which dataplanes join which meshes, and which field is named.
    #[test]
    fn kumas_membership_table() {
        let backend_and_api = [
            json!({"kuma.io/service": "backend", "kuma.io/zone": "east", "version": "v1"}),
            json!({"kuma.io/service": "backend-api", "kuma.io/zone": "east", "version": "v2"}),
        ];
        let cases: Vec<(&str, Mesh, Dataplane, Option<&str>)> = vec![
            ("no constraints", Mesh::default(), dataplane(&[json!({"kuma.io/service": "backend"})]), None),
            ("empty lists", mesh(json!({})), dataplane(&[json!({"kuma.io/service": "backend"})]), None),
            (
                "every inbound fulfils a requirement",
                mesh(json!({
                    "requirements": [
                        {"tags": {"kuma.io/service": "backend", "version": "*"}},
                        {"tags": {"kuma.io/service": "backend-api", "version": "*"}},
                    ],
                    "restrictions": [{"tags": {"kuma.io/service": "web"}}],
                })),
                dataplane(&backend_and_api),
                None,
            ),
            (
                "the second inbound fulfils no requirement",
                mesh(json!({"requirements": [{"tags": {"kuma.io/service": "backend"}}]})),
                dataplane(&[json!({"kuma.io/service": "backend"}), json!({"kuma.io/service": "backend-api"})]),
                Some("networking.inbound[1].tags"),
            ),
            (
                "a restricted tag value",
                mesh(json!({
                    "requirements": [{"tags": {"kuma.io/service": "backend"}}],
                    "restrictions": [{"tags": {"kuma.io/zone": "east"}}],
                })),
                dataplane(&[json!({"kuma.io/service": "backend", "kuma.io/zone": "east"})]),
                Some("networking.inbound[0].tags"),
            ),
            (
                "a required tag missing",
                mesh(json!({"requirements": [{"tags": {"kuma.io/service": "backend", "team": "*"}}]})),
                dataplane(&[json!({"kuma.io/service": "backend"})]),
                Some("networking.inbound[0].tags"),
            ),
            (
                "a restricted tag name",
                mesh(json!({
                    "requirements": [{"tags": {"kuma.io/service": "backend"}}],
                    "restrictions": [{"tags": {"version": "*"}}],
                })),
                dataplane(&[json!({"kuma.io/service": "backend", "version": "v1"})]),
                Some("networking.inbound[0].tags"),
            ),
            (
                "no inbound fulfils no requirement",
                mesh(json!({"requirements": [{"tags": {"kuma.io/service": "*"}}]})),
                dataplane(&[]),
                Some("networking.inbound"),
            ),
            (
                "no inbound matches no restriction",
                mesh(json!({"restrictions": [{"tags": {"legacy": "*"}}]})),
                dataplane(&[]),
                None,
            ),
        ];
        for (name, mesh, dp, refused_at) in cases {
            let got = check("default", &mesh, &dp);
            assert_eq!(got.as_ref().err().map(|e| e.field.as_str()), refused_at, "{name}: {got:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_tags_the_rule_and_the_mesh() {
        let mesh = mesh(json!({"restrictions": [{"tags": {"team": "legacy"}}, {"tags": {"version": "*"}}]}));
        let dp = dataplane(&[json!({"kuma.io/service": "web", "version": "v1"})]);
        let refusal = check("prod", &mesh, &dp).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "networking.inbound[0].tags: tags {kuma.io/service=web, version=v1} match \
             constraints.dataplaneProxy.restrictions[1] ({version=*}) of Mesh \"prod\""
        );
    }

    #[test]
    fn a_gateway_is_checked_by_its_tags() {
        let mesh = mesh(json!({"requirements": [{"tags": {"kuma.io/service": "edge"}}]}));
        let gateway = |service: &str| -> Dataplane {
            serde_json::from_value(json!({"networking": {
                "address": "10.0.0.1", "gateway": {"tags": {"kuma.io/service": service}}
            }}))
            .unwrap()
        };
        assert_eq!(check("m", &mesh, &gateway("edge")), Ok(()));
        assert_eq!(check("m", &mesh, &gateway("other")).unwrap_err().field, "networking.gateway.tags");
    }
}
