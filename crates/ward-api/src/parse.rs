//! Reading resources from YAML or JSON documents, with every error tied to a field.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{
    error::{Cause, Causes, ValidationError},
    labels::check_labels,
    names::check_name,
    resource::{Meta, Resource, ResourceType, Spec, TYPES},
    secret::Secret,
    yaml,
};

/// Envelope fields every resource may carry besides its content.
const ENVELOPE: [&str; 8] = ["type", "name", "mesh", "labels", "version", "creationTime", "modificationTime", "kri"];

/// Splits YAML text (one or more `---` documents; JSON is YAML too) into documents.
/// Booleans follow YAML 1.2 (only `true`/`false`), as Kuma's Go parser does, so that a
/// name like `y` or `no` stays a string; tags other than YAML 1.2's core ones are refused
/// with the document and field they sit on.
pub fn documents(text: &str) -> Result<Vec<Value>, ValidationError> {
    let options = serde_saphyr::options! { strict_booleans: true };
    let nodes = serde_saphyr::from_multiple_with_options::<yaml::Node>(text, options).map_err(|e| {
        ValidationError::single("input", "", format!("is not valid YAML: {}", first_line(&e.to_string())))
    })?;
    nodes
        .into_iter()
        .enumerate()
        .map(|(i, node)| {
            yaml::into_json(node)
                .map_err(|cause| ValidationError { resource: format!("document {}", i + 1), causes: vec![cause] })
        })
        .collect()
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// Reads one document into a validated resource. `label` names the document in errors
/// when it has no usable type and name (e.g. `document 2`).
pub fn resource(doc: Value, label: &str) -> Result<Resource, ValidationError> {
    let Value::Object(mut fields) = doc else {
        return Err(ValidationError::single(label, "", "must be a mapping with type, name and the resource's fields"));
    };
    let ty = match fields.get("type") {
        None => return Err(ValidationError::single(label, "type", "is required")),
        Some(Value::String(kind)) => {
            ResourceType::from_kind(kind).ok_or_else(|| ValidationError::single(label, "type", type_choices()))?
        }
        Some(_) => return Err(ValidationError::single(label, "type", type_choices())),
    };
    let plural = ty.info().plural;
    let name = match fields.get("name") {
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err(ValidationError::single(format!("{plural} ({label})"), "name", "must be a string")),
        None => return Err(ValidationError::single(format!("{plural} ({label})"), "name", "is required")),
    };
    let resource_key = format!("{plural}/{name}");
    let fail = |causes: Vec<Cause>| ValidationError { resource: resource_key.clone(), causes };

    let mut causes = Causes::default();
    if let Err(e) = check_name(&name) {
        causes.add("name", e);
    }
    let mesh = match (ty.is_mesh_scoped(), fields.get("mesh")) {
        (true, Some(Value::String(mesh))) => {
            if let Err(e) = check_name(mesh) {
                causes.add("mesh", e);
            }
            mesh.clone()
        }
        (true, Some(_)) => {
            causes.add("mesh", "must be a string");
            String::new()
        }
        (true, None) => {
            causes.add("mesh", format!("is required for a {}", ty.info().name));
            String::new()
        }
        (false, Some(_)) => {
            causes.add("mesh", format!("must not be set on a {}", ty.info().name));
            String::new()
        }
        (false, None) if ty == ResourceType::Mesh => name.clone(),
        (false, None) => String::new(),
    };
    let labels = match fields.get("labels") {
        None => Default::default(),
        Some(v) => typed("labels", v.clone()).unwrap_or_else(|cause| {
            causes.0.push(cause);
            Default::default()
        }),
    };
    check_labels("labels", &labels, false, &mut causes);
    let version = match fields.get("version") {
        None => 0,
        Some(v) => v.as_u64().unwrap_or_else(|| {
            causes.add("version", "must be a non-negative integer");
            0
        }),
    };
    // Set by a control plane (`kri` is Kuma's resource identifier in its output): ignored on input.
    for output_field in ["creationTime", "modificationTime", "kri"] {
        if fields.get(output_field).is_some_and(|v| !v.is_string()) {
            causes.add(output_field, "must be a string (it is set by the control plane and ignored on input)");
        }
    }
    if !causes.0.is_empty() {
        return Err(fail(causes.0));
    }
    for field in ENVELOPE {
        fields.remove(field);
    }

    let (content, prefix) = if ty.info().has_spec_field {
        let spec = fields.remove("spec");
        // A MeshService's status and SNIs, and the status of a MeshExternalService, MeshIdentity or
        // MeshTrust, are computed by the control plane, and Kuma's output carries them: ignored on input.
        let computed: &[Computed] = match ty {
            ResourceType::MeshService => {
                &[("status", "an object", Value::is_object), ("snis", "a list", Value::is_array)]
            }
            ResourceType::MeshExternalService | ResourceType::MeshIdentity | ResourceType::MeshTrust => {
                &[("status", "an object", Value::is_object)]
            }
            _ => &[],
        };
        for &(field, shape, fits) in computed {
            if fields.remove(field).is_some_and(|v| !fits(&v)) {
                let reason = format!("must be {shape} (it is computed by the control plane and ignored on input)");
                return Err(fail(vec![Cause::new(field, reason)]));
            }
        }
        if let Some(extra) = fields.keys().next() {
            return Err(fail(vec![Cause::new(extra.clone(), "unknown field")]));
        }
        match spec {
            Some(spec) => (spec, "spec"),
            None => return Err(fail(vec![Cause::new("spec", "is required")])),
        }
    } else {
        (Value::Object(fields), "")
    };

    let mut causes = Causes::default();
    let spec = match ty {
        ResourceType::Mesh => typed(prefix, content).map(Spec::Mesh),
        ResourceType::Dataplane => typed(prefix, content).map(Spec::Dataplane),
        ResourceType::MeshTrafficPermission => typed(prefix, content).map(Spec::MeshTrafficPermission),
        ResourceType::TrafficPermission => typed(prefix, content).map(Spec::TrafficPermission),
        ResourceType::MeshService => typed(prefix, content).map(Spec::MeshService),
        ResourceType::MeshExternalService => typed(prefix, content).map(Spec::MeshExternalService),
        ResourceType::MeshTimeout => typed(prefix, content).map(Spec::MeshTimeout),
        ResourceType::MeshRetry => typed(prefix, content).map(Spec::MeshRetry),
        ResourceType::MeshCircuitBreaker => typed(prefix, content).map(Spec::MeshCircuitBreaker),
        ResourceType::MeshHTTPRoute => typed(prefix, content).map(Spec::MeshHTTPRoute),
        ResourceType::MeshTCPRoute => typed(prefix, content).map(Spec::MeshTCPRoute),
        ResourceType::MeshFaultInjection => typed(prefix, content).map(Spec::MeshFaultInjection),
        ResourceType::MeshRateLimit => typed(prefix, content).map(Spec::MeshRateLimit),
        ResourceType::MeshIdentity => typed(prefix, content).map(Spec::MeshIdentity),
        ResourceType::MeshTrust => typed(prefix, content).map(Spec::MeshTrust),
        ResourceType::MeshHealthCheck => typed(prefix, content).map(Spec::MeshHealthCheck),
        ResourceType::MeshLoadBalancingStrategy => typed(prefix, content).map(Spec::MeshLoadBalancingStrategy),
        ResourceType::MeshOPA => typed(prefix, content).map(Spec::MeshOPA),
        ResourceType::Secret | ResourceType::GlobalSecret => match Secret::from_given(content, &mut causes) {
            Some(secret) => Ok(Spec::Secret(secret)),
            None => return Err(fail(causes.0)),
        },
    }
    .map_err(|cause| fail(vec![cause]))?;

    match &spec {
        Spec::Mesh(s) => s.check(&mut causes),
        Spec::Dataplane(s) => s.check(&mut causes),
        Spec::MeshTrafficPermission(s) => s.check(&mut causes),
        Spec::TrafficPermission(s) => s.check(&mut causes),
        Spec::MeshService(s) => {
            if name.len() > crate::mesh_service::MAX_NAME_LEN {
                causes.add("name", format!("must not be longer than {} characters", crate::mesh_service::MAX_NAME_LEN));
            }
            s.check(&mut causes)
        }
        Spec::MeshExternalService(s) => {
            if name.len() > crate::mesh_external_service::MAX_NAME_LEN {
                let max = crate::mesh_external_service::MAX_NAME_LEN;
                causes.add("name", format!("must not be longer than {max} characters"));
            }
            s.check(&mut causes)
        }
        Spec::MeshTimeout(s) => s.check(&crate::mesh_timeout::shape(), &mut causes),
        Spec::MeshRetry(s) => s.check(&crate::mesh_retry::shape(), &mut causes),
        Spec::MeshCircuitBreaker(s) => s.check(&crate::mesh_circuit_breaker::shape(), &mut causes),
        Spec::MeshHTTPRoute(s) => crate::mesh_http_route::check(s, &mut causes),
        Spec::MeshTCPRoute(s) => crate::mesh_tcp_route::check(s, &mut causes),
        Spec::MeshFaultInjection(s) => crate::mesh_fault_injection::check(s, &mut causes),
        Spec::MeshRateLimit(s) => crate::mesh_rate_limit::check(s, &mut causes),
        Spec::MeshIdentity(s) => s.check(&mesh, &labels, &mut causes),
        Spec::MeshTrust(s) => s.check(&mut causes),
        Spec::MeshHealthCheck(s) => s.check(&crate::mesh_health_check::shape(), &mut causes),
        Spec::MeshLoadBalancingStrategy(s) => crate::mesh_load_balancing_strategy::check(s, &mut causes),
        Spec::MeshOPA(s) => crate::mesh_opa::check(s, &mut causes),
        Spec::Secret(_) => {}
    }
    if !causes.0.is_empty() {
        return Err(fail(causes.0));
    }
    let meta = Meta { ty, mesh, name, labels, version, creation_time: None, modification_time: None };
    Ok(Resource { meta, spec })
}

/// A field the control plane computes: its name, the shape it must have, and the test of it.
type Computed = (&'static str, &'static str, fn(&Value) -> bool);

fn type_choices() -> String {
    let names: Vec<&str> = TYPES.iter().map(|t| t.name).collect();
    format!("must be one of {}", names.join(", "))
}

/// Deserializes `value` into `T`, turning serde's first error into a cause whose field
/// path starts with `prefix`.
pub fn typed<T: DeserializeOwned>(prefix: &str, value: Value) -> Result<T, Cause> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
        let path = join(prefix, &err.path().to_string());
        let message = err.inner().to_string();
        serde_cause(&path, &message)
    })
}

/// Rewrites serde's wording into a field path and a reason a user can act on.
fn serde_cause(path: &str, message: &str) -> Cause {
    let quoted = |text: &str| text.split('`').nth(1).map(str::to_string);
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let field = quoted(rest).unwrap_or_default();
        let at = if path.ends_with(&field) { path.to_string() } else { join(path, &field) };
        return Cause::new(at, "unknown field");
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return Cause::new(join(path, &quoted(rest).unwrap_or_default()), "is required");
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let expected = rest.split_once("expected ").map_or("", |(_, e)| e).replace('`', "");
        return Cause::new(path, format!("must be one of {}", expected.trim_start_matches("one of ")));
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
        return Cause::new(path, format!("must be {expected} (got {got})"));
    }
    Cause::new(path, message)
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty() || path == ".") {
        (_, true) => prefix.to_string(),
        (true, false) => path.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(yaml: &str) -> Result<Resource, ValidationError> {
        let docs = documents(yaml).expect("valid YAML");
        resource(docs.into_iter().next().expect("one document"), "document 1")
    }

    fn error_of(yaml: &str) -> String {
        parse_one(yaml).expect_err("must be rejected").to_string()
    }

    #[test]
    fn a_gateway_dataplane_takes_its_identity_from_its_tags() {
        let gw = parse_one(
            "type: Dataplane\nmesh: default\nname: edge-1\nnetworking:\n  address: 127.0.0.1\n  gateway:\n    type: DELEGATED\n    tags: {kuma.io/service: edge-gateway}\n",
        )
        .unwrap();
        let Spec::Dataplane(dp) = &gw.spec else { panic!() };
        assert_eq!(dp.service(), "edge-gateway");
        assert!(dp.networking.inbound.is_empty());
    }

    #[test]
    fn kuma_universal_examples_parse() {
        let mesh = parse_one(
            "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n    \
             mode: STRICT\n    dpCert:\n      rotation:\n        expiration: 1d\n    conf:\n      caCert:\n        RSAbits: 2048\n        \
             expiration: 10y\nnetworking:\n  outbound:\n    passthrough: false\n",
        )
        .unwrap();
        let Spec::Mesh(m) = &mesh.spec else { panic!() };
        assert_eq!(m.enabled_backend().unwrap().cert_lifetime().as_secs(), 86_400);
        assert!(!m.passthrough());
        assert_eq!(mesh.meta.mesh, "default");

        let dp = parse_one(
            "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: 10001\n    \
             servicePort: 8080\n    tags:\n      kuma.io/service: web\n      kuma.io/protocol: http\n  outbound:\n  - port: 20001\n    \
             tags:\n      kuma.io/service: backend\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n",
        )
        .unwrap();
        let Spec::Dataplane(d) = &dp.spec else { panic!() };
        assert_eq!(d.service(), "web");

        let mtp = parse_one(
            "type: MeshTrafficPermission\nmesh: default\nname: allow-web\nspec:\n  targetRef:\n    kind: MeshService\n    name: backend\n  \
             from:\n  - targetRef:\n      kind: MeshSubset\n      tags:\n        kuma.io/service: web\n    default:\n      action: Allow\n",
        )
        .unwrap();
        assert_eq!(mtp.meta.key(), "meshtrafficpermissions/allow-web");
        // Output keeps the Universal shape and reads back to the same resource.
        let again = resource(mtp.to_json(), "again").unwrap();
        assert_eq!(again, mtp);

        parse_one(
            "type: TrafficPermission\nmesh: default\nname: legacy\nsources:\n- match:\n    kuma.io/service: '*'\n\
             destinations:\n- match:\n    kuma.io/service: backend\n",
        )
        .unwrap();
    }

    #[test]
    fn bad_input_names_resource_field_and_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "type: Dataplane\nmesh: default\nname: gw\nnetworking:\n  address: 1.2.3.4\n  gateway: {type: EDGE, tags: {kuma.io/service: gw}}\n",
                "dataplanes/gw: networking.gateway.type: must be one of DELEGATED, BUILTIN",
            ),
            (
                "type: Dataplane\nmesh: default\nname: gw\nnetworking:\n  address: 1.2.3.4\n  gateway: {type: DELEGATED, tags: {app: gw}}\n",
                "dataplanes/gw: networking.gateway.tags: tag \"kuma.io/service\" is required",
            ),
            (
                "type: Dataplane\nmesh: default\nname: gw\nnetworking:\n  address: 1.2.3.4\n  gateway: {type: DELEGATED, tags: {kuma.io/service: gw}}\n  inbound:\n  - port: 1\n    tags: {kuma.io/service: gw}\n",
                "dataplanes/gw: networking.inbound: a delegated gateway has no inbounds",
            ),
            (
                "type: MeshTrafficPermission\nmesh: default\nname: allow-web\nspec:\n  from:\n  - targetRef: {kind: Mesh}\n    default: {action: Permit}\n",
                "meshtrafficpermissions/allow-web: spec.from[0].default.action: must be one of Allow, Deny, AllowWithShadowDeny",
            ),
            ("type: Mesh\nname: default\nmtlss: {}\n", "meshes/default: mtlss: unknown field"),
            (
                "type: Mesh\nname: default\nmtls:\n  backends:\n  - name: a\n    type: builtin\n    colour: red\n",
                "meshes/default: mtls.backends[0].colour: unknown field",
            ),
            (
                "type: Dataplane\nmesh: default\nname: dp\nnetworking:\n  address: 1.2.3.4\n  inbound:\n  - port: 99999\n    tags: {kuma.io/service: a}\n",
                "dataplanes/dp: networking.inbound[0].port: must be a port number between 1 and 65535",
            ),
            (
                "type: Dataplane\nmesh: default\nname: dp\nnetworking:\n  address: 1.2.3.4\n  inbound:\n  - port: 1\n    tags: {app: a}\n",
                "dataplanes/dp: networking.inbound[0].tags: tag \"kuma.io/service\" is required",
            ),
            (
                "type: Dataplane\nmesh: default\nname: dp\nnetworking:\n  address: 1.2.3.4\n  outbound:\n  - port: 1\n    tags: {kuma.io/service: a}\n",
                "dataplanes/dp: networking.inbound: is valid Kuma but not supported by Ward yet: a dataplane with neither an inbound nor a gateway",
            ),
            (
                "type: Dataplane\nmesh: default\nname: dp\nnetworking:\n  address: 1.2.3.4\n  inbound:\n  - port: '80'\n    tags: {kuma.io/service: a}\n",
                "dataplanes/dp: networking.inbound[0].port: must be a port number",
            ),
            (
                "type: Dataplane\nmesh: default\nname: dp\nnetworking:\n  inbound: []\n",
                "dataplanes/dp: networking.address: is required",
            ),
            (
                "type: Mesh\nname: default\nmtls:\n  enabledBackend: x\n",
                "meshes/default: mtls.enabledBackend: names backend \"x\"",
            ),
            (
                "type: Mesh\nname: m\nmtls:\n  backends:\n  - name: a\n    type: builtin\n    dpCert: {rotation: {expiration: 5s}}\n",
                "meshes/m: mtls.backends[0].dpCert.rotation.expiration: must be at least 10s",
            ),
            (
                "type: Mesh\nname: m\nmtls:\n  backends:\n  - name: a\n    type: builtin\n    dpCert: {rotation: {expiration: soon}}\n",
                "meshes/m: mtls.backends[0].dpCert.rotation.expiration: must be a duration",
            ),
            (
                "type: Mesh\nname: m\nmtls:\n  backends:\n  - name: a\n    type: hsm\n",
                "meshes/m: mtls.backends[0].type: must be one of builtin, provided, vault, acmpca, certmanager",
            ),
            (
                "type: Mesh\nname: m\nmtls:\n  backends:\n  - name: a\n    type: provided\n",
                "meshes/m: mtls.backends[0].conf: is required for a provided backend",
            ),
            (
                "type: Mesh\nname: m\nmtls:\n  backends:\n  - name: a\n    type: builtin\n    conf: {caCert: {RSAbits: 1024}}\n",
                "meshes/m: mtls.backends[0].conf.caCert.RSAbits: must be one of 2048, 3072, 4096",
            ),
            (
                "type: Gadget\nname: x\n",
                "document 1: type: must be one of Mesh, Dataplane, MeshTrafficPermission, TrafficPermission, MeshService, MeshExternalService, MeshTimeout, MeshRetry, MeshCircuitBreaker, MeshFaultInjection, MeshRateLimit, MeshIdentity, MeshTrust, MeshHealthCheck, MeshLoadBalancingStrategy, MeshHTTPRoute, MeshTCPRoute, MeshOPA, Secret, GlobalSecret",
            ),
            (
                "type: Mesh\nname: m\nmetrics:\n  enabledBackend: p\n  backends:\n  - name: p\n    type: prometheus\n    conf: {envoy: {filterRegex: '(open'}}\n",
                "meshes/m: metrics.backends[0].conf.envoy.filterRegex: is not a regular expression",
            ),
            ("name: x\n", "document 1: type: is required"),
            ("type: Mesh\n", "meshes (document 1): name: is required"),
            ("type: Mesh\nname: Bad/Name\n", "meshes/Bad/Name: name: must contain only"),
            (
                "type: Dataplane\nname: dp\nnetworking: {address: a}\n",
                "dataplanes/dp: mesh: is required for a Dataplane",
            ),
            ("type: Mesh\nname: m\nmesh: m\n", "meshes/m: mesh: must not be set on a Mesh"),
            (
                "type: MeshTrafficPermission\nmesh: default\nname: p\nspec:\n  targetRef: {kind: MeshService}\n  from:\n  - targetRef: {kind: Mesh}\n    default: {action: Allow}\n",
                "meshtrafficpermissions/p: spec.targetRef: kind MeshService needs name or labels",
            ),
            (
                "type: MeshTrafficPermission\nmesh: default\nname: p\nspec:\n  from:\n  - targetRef: {kind: Dataplane, name: x}\n    default: {action: Allow}\n",
                "meshtrafficpermissions/p: spec.from[0].targetRef.kind: must be one of Mesh, MeshService, MeshSubset",
            ),
            (
                "type: MeshTrafficPermission\nmesh: default\nname: p\nspec: {}\n",
                "meshtrafficpermissions/p: spec: must have from or rules",
            ),
            (
                "type: MeshTrafficPermission\nmesh: default\nname: p\nspec:\n  rules:\n  - default:\n      allow:\n      - spiffeID: {type: Exact, value: web}\n",
                "meshtrafficpermissions/p: spec.rules[0].default.allow[0].spiffeID.value: must start with spiffe://",
            ),
            (
                "type: MeshTrafficPermission\nmesh: default\nname: p\nfrom: []\n",
                "meshtrafficpermissions/p: from: unknown field",
            ),
            (
                "type: TrafficPermission\nmesh: default\nname: t\nsources: []\ndestinations:\n- match: {app: x}\n",
                "traffic-permissions/t: sources: must have at least one entry",
            ),
            (
                "type: Mesh\nname: m\nnetworking:\n  outbound:\n    passthrough: maybe\n",
                "meshes/m: networking.outbound.passthrough: must be a boolean (got string \"maybe\")",
            ),
            ("- a\n- b\n", "document 1: must be a mapping"),
        ];
        for (yaml, want) in cases {
            let got = error_of(yaml);
            assert!(got.starts_with(want), "for\n{yaml}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn secrets_in_kuma_universal_form() {
        let secret = parse_one("type: Secret\nmesh: default\nname: ca-key\ndata: aGVsbG8=\n").unwrap();
        assert_eq!((secret.meta.key(), secret.meta.mesh.as_str()), ("secrets/ca-key".into(), "default"));
        assert_eq!(secret.spec, Spec::Secret(Secret::Data(b"hello".to_vec())));
        assert_eq!(resource(secret.to_json(), "again").unwrap(), secret, "opened data reads back the same");
        let global = parse_one("type: GlobalSecret\nname: admin-key\ndata: aGVsbG8=\n").unwrap();
        assert_eq!((global.meta.key(), global.meta.mesh.as_str()), ("global-secrets/admin-key".into(), ""));
        assert_eq!(global.to_json()["data"], "aGVsbG8=");
        assert!(global.to_json().get("mesh").is_none());

        let cases: &[(&str, &str)] = &[
            ("type: Secret\nmesh: default\nname: s\ndata: ''\n", "secrets/s: data: cannot be empty"),
            ("type: Secret\nmesh: default\nname: s\ndata: '%%%'\n", "secrets/s: data: must be base64"),
            ("type: Secret\nmesh: default\nname: s\n", "secrets/s: data: is required"),
            ("type: Secret\nmesh: default\nname: s\ndata: aA==\nvalue: x\n", "secrets/s: value: unknown field"),
            ("type: Secret\nname: s\ndata: aA==\n", "secrets/s: mesh: is required for a Secret"),
            (
                "type: GlobalSecret\nmesh: default\nname: g\ndata: aA==\n",
                "global-secrets/g: mesh: must not be set on a GlobalSecret",
            ),
            ("type: GlobalSecret\nname: g\ndata: [1]\n", "global-secrets/g: data: must be a string"),
        ];
        for (yaml, want) in cases {
            let got = error_of(yaml);
            assert!(got.starts_with(want), "for\n{yaml}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn several_causes_are_all_reported() {
        let err = parse_one(
            "type: Dataplane\nmesh: default\nname: dp\nnetworking:\n  address: 'bad address'\n  inbound:\n  - port: 1\n    \
             tags: {kuma.io/service: a, kuma.io/protocol: smtp}\n  - port: 1\n    tags: {kuma.io/service: a}\n",
        )
        .unwrap_err();
        let fields: Vec<&str> = err.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["networking.address", "networking.inbound[0].tags.kuma.io/protocol", "networking.inbound[1].port"]
        );
    }

    #[test]
    fn yaml_syntax_errors_are_reported() {
        let err = documents("type: Mesh\nname: [unclosed\n").unwrap_err().to_string();
        assert!(err.starts_with("input: is not valid YAML"), "{err}");
        assert_eq!(documents("type: Mesh\nname: a\n---\ntype: Mesh\nname: b\n").unwrap().len(), 2);
        let err = documents("type: Mesh\nname: a\nname: b\n").unwrap_err().to_string();
        assert!(err.starts_with("input: is not valid YAML"), "duplicate keys are refused: {err}");
        assert_eq!(parse_one("type: Mesh\nname: no\n").unwrap().meta.name, "no");
    }
}
