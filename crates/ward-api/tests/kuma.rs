//! Kuma 2.14's own documents, checked against Ward's reading of them.
//!
//! Under `tests/kuma/`:
//! - `valid/KIND/*.yaml` must apply, and read back unchanged from their stored form;
//! - `unsupported/KIND/*.yaml` are valid Kuma that Ward refuses, every cause saying it is
//!   not supported yet;
//! - `stricter/KIND/*.yaml` hold fields Kuma 2.14's schema does not have, which Kuma drops
//!   silently and Ward refuses (as it refuses every unknown field);
//! - `invalid/KIND/*.yaml` must be refused, with a cause at a field that a `# refuse: PATH`
//!   comment line names (the paths Kuma's validator names, in Ward's spelling). Ward reports
//!   every cause its checks find, but only the first a document's shape has (a wrong type).

use std::path::{Path, PathBuf};

use ward_api::{Resource, ValidationError, error::UNSUPPORTED, parse};

fn fixtures(group: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kuma").join(group);
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn load(path: &Path) -> (String, Vec<Result<Resource, ValidationError>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs = parse::documents(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let results =
        docs.into_iter().enumerate().map(|(i, d)| parse::resource(d, &format!("document {}", i + 1))).collect();
    (text, results)
}

fn is_unsupported(err: &ValidationError) -> bool {
    err.causes.iter().all(|c| c.message.starts_with(UNSUPPORTED))
}

/// Whether Ward's field `got` names Kuma's `want`, or a field that contains it or that it
/// contains (Kuma may name a message's parent where Ward names the member, or the reverse).
fn names_field(got: &str, want: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        inner.strip_prefix(outer).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    got == want || within(got, want) || within(want, got)
}

#[test]
fn valid_kuma_documents_apply_and_read_back_unchanged() {
    let files = fixtures("valid");
    assert!(files.len() > 190, "the corpus is there: {}", files.len());
    let mut failures = Vec::new();
    for path in &files {
        for result in load(path).1 {
            match result {
                Ok(resource) => {
                    let again = parse::resource(resource.to_json(), "read back");
                    if again.as_ref() != Ok(&resource) {
                        failures.push(format!("{}: reads back as {again:?}", path.display()));
                    }
                }
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} refused:\n{}", failures.len(), files.len(), failures.join("\n"));
}

#[test]
fn valid_kuma_documents_ward_cannot_serve_are_refused_as_unsupported() {
    let files = fixtures("unsupported");
    let mut failures = Vec::new();
    for path in &files {
        for result in load(path).1 {
            match result {
                Ok(_) => failures.push(format!("{}: applies", path.display())),
                Err(e) if !is_unsupported(&e) => failures.push(format!("{}: {e}", path.display())),
                Err(_) => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The share of valid documents that apply, per group of kinds: the core resources, and each
    // traffic policy (MeshTimeout waits on MeshHTTPRoute and MeshGateway for most of the rest).
    let kind_of = |p: &PathBuf| p.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned());
    let (valid, unsupported) = (fixtures("valid"), files);
    for (kinds, floor) in [
        (
            &["dataplane", "mesh", "meshtrafficpermission", "trafficpermission", "meshservice", "meshexternalservice"]
                [..],
            0.93,
        ),
        (&["meshtimeout"][..], 0.75),
        (&["meshretry"][..], 0.7),
        (&["meshcircuitbreaker"][..], 0.4),
        // Kuma's own MeshFaultInjection and MeshRateLimit documents mostly name callers, match
        // on SPIFFE IDs or configure gateways.
        (&["meshfaultinjection"][..], 0.1),
        (&["meshratelimit"][..], 0.6),
        // Most of Kuma's own MeshIdentity documents name Kubernetes namespaces and service
        // accounts in their paths, or issue through SPIRE or an extension.
        (&["meshidentity"][..], 0.3),
        (&["meshtrust"][..], 0.98),
        // Kuma's MeshHealthCheck documents mostly probe gateways, external or multi-zone
        // services, or log events to a file.
        (&["meshhealthcheck"][..], 0.1),
        // Kuma's MeshLoadBalancingStrategy documents that do not apply prefer localities,
        // target routes or gateways, or have the proxy set cookies.
        (&["meshloadbalancingstrategy"][..], 0.5),
        // The rest of Kuma's routes configure MeshGateways or choose backends by labels.
        (&["meshhttproute"][..], 0.6),
        (&["meshtcproute"][..], 0.5),
        // Kong Mesh's MeshOPA documents: half configure the agent, read Rego from a Secret or
        // verify JWTs with io.jwt, which Ward's engine lacks.
        (&["meshopa"][..], 0.4),
    ] {
        let count =
            |list: &[PathBuf]| list.iter().filter(|p| kind_of(p).is_some_and(|k| kinds.contains(&k.as_str()))).count();
        let (applied, refused) = (count(&valid), count(&unsupported));
        let share = applied as f64 / (applied + refused) as f64;
        assert!(share >= floor, "{kinds:?}: only {applied} of {} valid Kuma documents apply", applied + refused);
    }
}

#[test]
fn fields_kuma_drops_silently_are_refused() {
    let files = fixtures("stricter");
    assert!(!files.is_empty());
    for path in &files {
        for result in load(path).1 {
            assert!(result.is_err(), "{}: applies", path.display());
        }
    }
}

#[test]
fn invalid_kuma_documents_are_refused_at_the_field_kuma_names() {
    let files = fixtures("invalid");
    assert!(files.len() > 80, "the corpus is there: {}", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let (text, results) = load(path);
        let wanted: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# refuse: ")).collect();
        for result in results {
            let err = match result {
                Ok(_) => {
                    failures.push(format!("{}: applies", path.display()));
                    continue;
                }
                Err(e) => e,
            };
            if is_unsupported(&err) {
                failures.push(format!("{}: refused only as unsupported: {err}", path.display()));
            }
            let named = |want: &&str| err.causes.iter().any(|c| names_field(&c.field, want));
            if !wanted.is_empty() && !wanted.iter().any(named) {
                failures.push(format!("{}: nothing said about {wanted:?}; got:\n{err}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Kuma's MeshExternalServices apply in Ward with no warning but where Ward cannot carry them as
/// given: without endpoints (Kuma's validation tests of labels have none), or with TLS fields
/// while TLS is off.
#[test]
fn kuma_mesh_external_services_apply_warning_only_about_endpoints_and_tls() {
    let files: Vec<PathBuf> = fixtures("valid")
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("meshexternalservice")))
        .collect();
    assert!(files.len() >= 30, "the MeshExternalService corpus is there: {}", files.len());
    for path in &files {
        for result in load(path).1 {
            let resource = result.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for warning in resource.warnings() {
                let expected = warning.field == "spec.endpoints" || warning.field.starts_with("spec.tls.");
                assert!(expected, "{}: {}: {}", path.display(), warning.field, warning.message);
            }
        }
    }
}
