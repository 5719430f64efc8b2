//! The control plane as a user meets it: `ward cp run` as a process, driven by the CLI
//! and by raw HTTP, restarted, and fed bad input that must change nothing.

mod common;

use std::time::Duration;

use common::{ControlPlane, MARKETPLACE};
use serde_json::{Value, json};

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Every stored resource and the audit log's length, as the API shows them.
async fn snapshot(cp: &ControlPlane) -> Value {
    let get = |path: String| {
        let token = cp.admin_token.clone();
        async move {
            let r = http().get(format!("{}{path}", cp.address)).bearer_auth(token).send().await.unwrap();
            assert!(r.status().is_success(), "GET {path}: {}", r.status());
            r.json::<Value>().await.unwrap()
        }
    };
    let meshes = get("/meshes".into()).await;
    let mut all = vec![meshes.clone()];
    for mesh in meshes["items"].as_array().unwrap() {
        let name = mesh["name"].as_str().unwrap();
        for plural in ["dataplanes", "meshtrafficpermissions", "traffic-permissions", "secrets"] {
            all.push(get(format!("/meshes/{name}/{plural}")).await);
        }
    }
    all.push(get("/global-secrets".into()).await);
    all.push(get("/audit".into()).await["total"].clone());
    Value::Array(all)
}

#[tokio::test]
async fn marketplace_survives_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(root.path());
    let out = cp.ward_stdin(&["apply", "-f", "-"], MARKETPLACE).ok();
    assert_eq!(
        out,
        "Mesh marketplace created\n\
         Dataplane users-1 in mesh marketplace created\n\
         Dataplane items-1 in mesh marketplace created\n\
         Dataplane invoices-1 in mesh marketplace created\n\
         MeshTrafficPermission users-callers in mesh marketplace created\n\
         MeshTrafficPermission items-callers in mesh marketplace created\n\
         MeshTrafficPermission invoices-callers in mesh marketplace created\n"
    );
    // Applying again updates in place.
    assert!(
        cp.ward_stdin(&["apply", "-f", "-"], MARKETPLACE)
            .ok()
            .contains("Dataplane items-1 in mesh marketplace updated")
    );
    let before = snapshot(&cp).await;

    let token = cp.admin_token.clone();
    cp.kill();
    let cp = ControlPlane::start_with(cp.data_dir.clone(), root.path());
    assert_eq!(cp.admin_token, token, "the admin token is kept across restarts");
    assert_eq!(snapshot(&cp).await, before, "everything is found again after a restart");

    let table = cp.ward(&["get", "dataplanes", "-m", "marketplace"]).ok();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("MESH") && lines[0].contains("SERVICE"), "{table}");
    assert_eq!(lines.len(), 4, "{table}");
    assert!(table.contains("invoices-1") && table.contains("8203"), "{table}");

    let one: Value =
        serde_json::from_str(&cp.ward(&["get", "mtp", "items-callers", "-m", "marketplace", "-o", "json"]).ok())
            .unwrap();
    assert_eq!(one["spec"]["from"][0]["targetRef"]["name"], "invoices");
    assert_eq!(one["version"], 2);

    // YAML output applies again unchanged (with its version: optimistic concurrency).
    let yaml = cp.ward(&["get", "meshtrafficpermissions", "-m", "marketplace", "-o", "yaml"]).ok();
    assert!(yaml.contains("type: MeshTrafficPermission"), "{yaml}");
    let out = cp.ward_stdin(&["apply", "-f", "-"], &yaml).ok();
    assert_eq!(out.matches("updated").count(), 3, "{out}");
}

#[tokio::test]
async fn bad_input_is_refused_with_its_reason_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.ward_stdin(&["apply", "-f", "-"], MARKETPLACE).ok();
    let before = snapshot(&cp).await;

    let dp = |body: &str| format!("type: Dataplane\nmesh: marketplace\nname: bad-dp\nnetworking:\n{body}");
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed YAML", "type: Mesh\nname: [oops\n".into(), "input: is not valid YAML"),
        (
            "unknown field",
            dp("  address: 127.0.0.1\n  adress: x\n  inbound: []\n"),
            "dataplanes/bad-dp: networking.adress: unknown field",
        ),
        (
            "wrong type",
            dp("  address: 127.0.0.1\n  inbound:\n  - port: eighty\n    tags: {kuma.io/service: a}\n"),
            "dataplanes/bad-dp: networking.inbound[0].port: must be a port number between 1 and 65535",
        ),
        (
            "missing service tag",
            dp("  address: 127.0.0.1\n  inbound:\n  - port: 1\n    tags: {app: a}\n"),
            "dataplanes/bad-dp: networking.inbound[0].tags: tag \"kuma.io/service\" is required",
        ),
        (
            "no identity",
            dp("  address: 127.0.0.1\n  outbound:\n  - port: 3333\n    tags: {kuma.io/service: redis}\n"),
            "dataplanes/bad-dp: networking.inbound: is valid Kuma but not supported by Ward yet: a dataplane with neither an inbound nor a gateway",
        ),
        (
            "unknown mesh",
            "type: Dataplane\nmesh: nowhere\nname: x\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: 1\n    tags: {kuma.io/service: a}\n".into(),
            "mesh: mesh \"nowhere\" does not exist",
        ),
        (
            "duplicate documents",
            format!("{MARKETPLACE}\n---\ntype: Mesh\nname: marketplace\n"),
            "meshes/marketplace: document 8 repeats document 1",
        ),
        (
            "bad action",
            "type: MeshTrafficPermission\nmesh: marketplace\nname: allow-web\nspec:\n  from:\n  - targetRef: {kind: Mesh}\n    default: {action: Permit}\n".into(),
            "meshtrafficpermissions/allow-web: spec.from[0].default.action: must be one of Allow, Deny, AllowWithShadowDeny",
        ),
        (
            "bad duration",
            "type: Mesh\nname: marketplace\nmtls:\n  backends:\n  - name: ca-1\n    type: builtin\n    dpCert: {rotation: {expiration: 1 week}}\n".into(),
            "meshes/marketplace: mtls.backends[0].dpCert.rotation.expiration: must be a duration such as 30s, 30m, 24h or 1d",
        ),
        (
            "certificate lifetime too short",
            "type: Mesh\nname: marketplace\nmtls:\n  backends:\n  - name: ca-1\n    type: builtin\n    dpCert: {rotation: {expiration: 9s}}\n".into(),
            "meshes/marketplace: mtls.backends[0].dpCert.rotation.expiration: must be at least 10s",
        ),
        ("unknown type", "type: VirtualService\nname: x\n".into(), "document 1: type: must be one of Mesh, Dataplane"),
        ("missing name", "type: Mesh\nmtls: {}\n".into(), "meshes (document 1): name: is required"),
        (
            "enabled backend not defined",
            "type: Mesh\nname: marketplace\nmtls:\n  enabledBackend: ca-2\n  backends:\n  - name: ca-1\n    type: builtin\n".into(),
            "meshes/marketplace: mtls.enabledBackend: names backend \"ca-2\", which is not one of the backends (ca-1)",
        ),
        (
            "targetRef without name",
            "type: MeshTrafficPermission\nmesh: marketplace\nname: p\nspec:\n  targetRef: {kind: MeshService}\n  from:\n  - targetRef: {kind: Mesh}\n    default: {action: Allow}\n".into(),
            "meshtrafficpermissions/p: spec.targetRef: kind MeshService needs name or labels",
        ),
        ("empty file", "\n".into(), "input: holds no document"),
        (
            "stale version",
            "type: Mesh\nname: marketplace\nversion: 7\n".into(),
            "meshes/marketplace: version 7 is stale: the stored version is 1 (409)",
        ),
        (
            "second document bad: first not applied either",
            "type: Mesh\nname: brand-new\n---\ntype: Mesh\nname: other\nmtlss: {}\n".into(),
            "meshes/other: mtlss: unknown field",
        ),
    ];
    for (what, yaml, want) in &cases {
        let err = cp.ward_stdin(&["apply", "-f", "-"], yaml).fails();
        assert!(err.contains(want), "{what}: stderr was\n{err}\nwanted: {want}");
    }

    // Tokens.
    let viewer = cp.ward(&["generate", "user-token", "--name", "ops", "--role", "viewer", "--valid-for", "1h"]).ok();
    let viewer = viewer.trim();
    let scoped = cp
        .ward(&["generate", "user-token", "--name", "team", "--role", "admin", "--mesh", "other", "--valid-for", "1h"])
        .ok();
    let scoped = scoped.trim();
    let short = cp.ward(&["generate", "user-token", "--name", "brief", "--role", "admin", "--valid-for", "1s"]).ok();
    let forged = {
        // A viewer's token whose payload claims admin, with the viewer's signature.
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = viewer.split('.').collect();
        let payload = String::from_utf8(engine.decode(parts[1]).unwrap()).unwrap().replace("\"viewer\"", "\"admin\"");
        format!("{}.{}.{}", parts[0], engine.encode(payload), parts[2])
    };
    let mesh = "type: Mesh\nname: marketplace\n";
    let token_cases: Vec<(&str, &str, &str)> = vec![
        ("garbage token", "not-a-token", "malformed token (401)"),
        ("forged token", &forged, "token signature is not valid (401)"),
        ("viewer write", viewer, "token \"ops\" has role viewer, which cannot make changes (403)"),
        (
            "mesh-scoped token outside its mesh",
            scoped,
            "token \"team\" is not allowed to access mesh \"marketplace\" (403)",
        ),
    ];
    for (what, token, want) in &token_cases {
        let err = cp.run(Some(token), &["apply", "-f", "-"], Some(mesh)).fails();
        assert!(err.contains(want), "{what}: stderr was\n{err}\nwanted: {want}");
    }
    // A viewer can read; a scoped token sees only its meshes.
    assert!(cp.run(Some(viewer), &["get", "meshes"], None).ok().contains("marketplace"));
    assert!(!cp.run(Some(scoped), &["get", "meshes"], None).ok().contains("marketplace"));
    std::thread::sleep(Duration::from_millis(2100));
    let err = cp.run(Some(short.trim()), &["get", "meshes"], None).fails();
    assert!(err.contains("token expired (401)"), "{err}");

    // Raw HTTP cases the CLI cannot produce.
    let url = |path: &str| format!("{}{path}", cp.address);
    let admin = cp.admin_token.as_str();
    let big = json!({ "type": "Mesh", "name": "big", "labels": { "padding": "x".repeat(1_100_000) } });
    let http_cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("no token", http().get(url("/meshes")), 401, "missing bearer token"),
        (
            "body over 1 MiB",
            http().put(url("/meshes/big")).bearer_auth(admin).json(&big),
            413,
            "request body exceeds 1048576 bytes",
        ),
        (
            "name in body differs from URL",
            http().put(url("/meshes/marketplace/dataplanes/a")).bearer_auth(admin).json(&json!({"name": "b"})),
            400,
            "dataplanes/a: name: is \"b\" but the URL says \"a\"",
        ),
        (
            "unsupported content type",
            http().put(url("/meshes/x")).bearer_auth(admin).header("content-type", "text/plain").body("type: Mesh"),
            415,
            "content type \"text/plain\" is not supported",
        ),
        (
            "invalid JSON",
            http()
                .put(url("/meshes/x"))
                .bearer_auth(admin)
                .header("content-type", "application/json")
                .body("{\"type\": "),
            400,
            "request body is not valid JSON",
        ),
        (
            "delete what does not exist",
            http().delete(url("/meshes/marketplace/dataplanes/ghost")).bearer_auth(admin),
            404,
            "dataplanes/ghost not found",
        ),
        (
            "unknown type in path",
            http().get(url("/meshes/marketplace/virtualservices")).bearer_auth(admin),
            404,
            "unknown resource type \"virtualservices\"",
        ),
        (
            "viewer reads the audit log",
            http().get(url("/audit")).bearer_auth(viewer),
            403,
            "token \"ops\" has role viewer",
        ),
        (
            "token with a bad lifetime",
            http()
                .post(url("/tokens/user"))
                .bearer_auth(admin)
                .json(&json!({"name": "x", "role": "admin", "validFor": "forever"})),
            400,
            "tokens/user: validFor: must be a duration",
        ),
    ];
    for (what, request, status, want) in http_cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        let body: Value = response.json().await.unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
        let details = body["details"].as_str().unwrap_or_default();
        assert!(details.contains(want), "{what}: details were {details:?}, wanted {want:?}");
        assert!(body["title"].is_string() && body["causes"].is_array(), "{what}: Kuma's error shape: {body}");
    }

    // A validation error carries each field as a cause, in Kuma's shape.
    let response = http()
        .put(url("/meshes/marketplace/meshtrafficpermissions/allow-web"))
        .bearer_auth(admin)
        .header("content-type", "application/yaml")
        .body("spec:\n  from:\n  - targetRef: {kind: Mesh}\n    default: {action: Permit}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["causes"],
        json!([{ "field": "spec.from[0].default.action", "message": "must be one of Allow, Deny, AllowWithShadowDeny" }])
    );

    assert_eq!(snapshot(&cp).await, before, "no bad input changed the store or the audit log");
}

#[tokio::test]
async fn audit_log_deletes_and_config_file() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());

    // The config file replaces flags and environment.
    let err = cp.run(None, &["get", "meshes"], None).fails();
    assert!(err.contains("cannot reach the control plane") || err.contains("(401)"), "{err}");
    cp.run(None, &["config", "set-cp", "--address", &cp.address, "--token", &cp.admin_token], None).ok();
    let config = cp.home.path().join(".config/ward/config.yaml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600, "the token file is private");
    cp.run(None, &["apply", "-f", "-"], Some(MARKETPLACE)).ok();
    let version = cp.run(None, &["version"], None).ok();
    assert!(version.contains("control plane: ward "), "{version}");

    // Deleting one resource, then the mesh with everything in it.
    assert_eq!(
        cp.ward(&["delete", "dataplane", "items-1", "-m", "marketplace"]).ok(),
        "Dataplane items-1 in mesh marketplace deleted\n"
    );
    let err = cp.ward(&["delete", "dataplane", "items-1", "-m", "marketplace"]).fails();
    assert!(err.contains("dataplanes/items-1 not found (404)"), "{err}");
    cp.ward(&["delete", "mesh", "marketplace"]).ok();
    let left = cp.ward(&["get", "dataplanes", "-m", "marketplace"]).ok();
    assert_eq!(left.lines().count(), 1, "only the header is left: {left}");

    let audit: Value = http()
        .get(format!("{}/audit", cp.address))
        .bearer_auth(&cp.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = audit["items"].as_array().unwrap();
    assert_eq!(audit["total"], 9, "{audit}");
    assert_eq!(items[0]["tokenName"], "admin");
    assert_eq!(items[0]["action"], "created");
    assert_eq!(items[0]["resource"], "Mesh marketplace");
    assert_eq!(items[7]["resource"], "Dataplane marketplace/items-1");
    assert_eq!(
        (items[7]["action"].as_str(), items[7]["oldVersion"].as_i64(), items[7]["newVersion"].as_i64()),
        (Some("deleted"), Some(1), None)
    );
    assert_eq!(items[8]["action"], "deleted");
}

#[test]
fn a_bad_virtual_ip_range_is_refused_before_anything_starts() {
    let data_dir = tempfile::tempdir().unwrap();
    for (range, reason) in [
        ("240.0.0.0/31", "'240.0.0.0/31' is too small: a prefix of at most /30 is needed"),
        ("fd00::/8", "'fd00::/8' is not an IPv4 CIDR block"),
    ] {
        let output = std::process::Command::new(common::WARD)
            .args(["cp", "run", "--vip-cidr", range, "--data-dir"])
            .arg(data_dir.path().join("never"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains("--vip-cidr") && stderr.contains(reason), "{stderr}");
    }
    assert!(!data_dir.path().join("never").exists(), "nothing was created");
}

#[tokio::test]
async fn names_that_are_not_resource_names_never_reach_a_url() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.ward_stdin(&["apply", "-f", "-"], MARKETPLACE).ok();
    cp.ward_stdin(&["apply", "-f", "-"], "type: Mesh\nname: victim\n").ok();
    let before = snapshot(&cp).await;

    let cases: &[(&[&str], &str)] = &[
        (&["delete", "meshtrafficpermission", "../../victim", "-m", "marketplace"], "name \"../../victim\": must"),
        (&["delete", "mesh", "x/../victim"], "name \"x/../victim\": must"),
        (&["delete", "dataplane", "users-1", "-m", ".."], "mesh \"..\": must"),
        (&["get", "dataplane", "a/b", "-m", "marketplace"], "name \"a/b\": must"),
        (&["get", "dataplanes", "-m", "victim?x=1"], "mesh \"victim?x=1\": must"),
        (&["inspect", "dataplane", "%2e%2e", "-m", "marketplace"], "dataplane \"%2e%2e\": must"),
        (&["explain", "users-1", "--caller", "users", "-m", "../victim"], "mesh \"../victim\": must"),
        (&["rotate", "signing-key", "-m", "../victim"], "mesh \"../victim\": must"),
    ];
    for (args, want) in cases {
        let err = cp.ward(args).fails();
        assert!(err.contains(want), "ward {args:?}: stderr was\n{err}\nwanted: {want}");
    }

    // The server refuses such names too, whoever sends them.
    let url = |path: &str| format!("{}{path}", cp.address);
    let admin = cp.admin_token.as_str();
    let http_cases: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
        (
            "encoded dot-dot slash in a name",
            http()
                .delete(url("/meshes/marketplace/meshtrafficpermissions/%2E%2E%2F%2E%2E%2Fvictim"))
                .bearer_auth(admin),
            "URL path: name: must",
        ),
        ("slash in a mesh", http().get(url("/meshes/a%2Fb/dataplanes")).bearer_auth(admin), "URL path: mesh: must"),
        (
            "space in a mesh name",
            http().put(url("/meshes/bad%20name")).bearer_auth(admin).json(&json!({"type": "Mesh"})),
            "URL path: name: must",
        ),
    ];
    for (what, request, want) in http_cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{what}");
        let body: Value = response.json().await.unwrap();
        let details = body["details"].as_str().unwrap_or_default();
        assert!(details.starts_with(want), "{what}: details were {details:?}, wanted {want:?}");
    }
    assert_eq!(snapshot(&cp).await, before, "nothing was deleted or changed");
}

/// A Mesh `team` whose one backend is a provided CA read from files.
fn provided_mesh(cert: &str, key: &str) -> String {
    format!(
        "type: Mesh\nname: team\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: provided\n    \
         conf:\n      cert: {{file: '{cert}'}}\n      key: {{file: '{key}'}}\n"
    )
}

#[tokio::test]
async fn provided_ca_files_are_read_only_for_global_admins_and_only_from_the_named_directory() {
    let root = tempfile::tempdir().unwrap();
    let ca_dir = root.path().join("provided-cas");
    std::fs::create_dir(&ca_dir).unwrap();
    let options = ward_pki::BuiltinCaOptions { rsa_bits: None, lifetime: Duration::from_secs(30 * 86_400) };
    let (ca, _) = ward_pki::generate_builtin("team", &options, chrono::Utc::now()).unwrap();
    std::fs::write(ca_dir.join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(ca_dir.join("ca.key"), &ca.key_pem).unwrap();
    std::fs::write(root.path().join("outside.key"), &ca.key_pem).unwrap();
    std::os::unix::fs::symlink(root.path().join("outside.key"), ca_dir.join("link.key")).unwrap();
    let dir = ca_dir.display().to_string();
    let cp = ControlPlane::start_with_args(
        root.path().join("data"),
        root.path(),
        common::free_port(),
        common::free_port(),
        &["--provided-ca-dir", &dir],
    );
    let team = cp
        .ward(&["generate", "user-token", "--name", "team", "--role", "admin", "--mesh", "team", "--valid-for", "1h"])
        .ok();
    let team = team.trim();
    let before = snapshot(&cp).await;

    // A mesh-scoped admin may name no file at all, existing or not, inside the directory or not.
    let scoped_refusal = "meshes/team: mtls.backends[0].conf.cert.file: only a global admin may name a file";
    let in_dir = |name: &str| format!("{dir}/{name}");
    for (cert, key) in [
        ("ca.pem".to_string(), "ca.key".to_string()),
        (in_dir("ca.pem"), in_dir("ca.key")),
        ("/etc/passwd".into(), "/nonexistent".into()),
        ("/nonexistent".into(), "/etc/passwd".into()),
    ] {
        let err = cp.run(Some(team), &["apply", "-f", "-"], Some(&provided_mesh(&cert, &key))).fails();
        assert!(err.contains(scoped_refusal), "cert {cert}, key {key}: {err}");
        assert!(!err.contains("os error") && !err.contains("No such file"), "nothing about the host leaks: {err}");
    }

    // A global admin reads only from the directory, and every failure reads the same.
    let unreadable = |path: &str| {
        format!("meshes/team: mtls.backends[0].conf.key.file: cannot read {path:?} from the provided CA directory")
    };
    for key in [
        "/etc/passwd",
        "../outside.key",
        "link.key",
        "missing.key",
        ".",
        &root.path().join("outside.key").display().to_string(),
    ] {
        let err = cp.ward_stdin(&["apply", "-f", "-"], &provided_mesh("ca.pem", key)).fails();
        assert!(err.contains(&unreadable(key)), "key {key}: {err}");
        assert!(!err.contains("os error") && !err.contains("No such file"), "nothing about the host leaks: {err}");
    }
    assert_eq!(snapshot(&cp).await, before, "nothing refused was stored");

    let out = cp.ward_stdin(&["apply", "-f", "-"], &provided_mesh("ca.pem", "ca.key")).ok();
    assert_eq!(out, "Mesh team created\n");
    let cas: Value = http()
        .get(format!("{}/meshes/team/_cas", cp.address))
        .bearer_auth(&cp.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cas["backends"][0]["enabled"], true, "{cas}");

    // Without --provided-ca-dir no file is read, and the refusal says how to allow it.
    let other = tempfile::tempdir().unwrap();
    let plain = ControlPlane::start(other.path());
    let err = plain.ward_stdin(&["apply", "-f", "-"], &provided_mesh(&in_dir("ca.pem"), &in_dir("ca.key"))).fails();
    assert!(
        err.contains("meshes/team: mtls.backends[0].conf.cert.file:") && err.contains("--provided-ca-dir"),
        "{err}"
    );
}

#[tokio::test]
async fn durations_past_x509_long_labels_and_foreign_yaml_tags_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.ward_stdin(&["apply", "-f", "-"], MARKETPLACE).ok();
    let before = snapshot(&cp).await;

    let long = "x".repeat(64);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "CA lifetime past 9999-12-31",
            "type: Mesh\nname: m\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n    \
             conf: {caCert: {expiration: 70000000h}}\n"
                .into(),
            "meshes/m: mtls.backends[0].conf.caCert.expiration: ",
        ),
        (
            "label value of 64 characters",
            format!("type: Mesh\nname: m\nlabels: {{team: {long}}}\n"),
            "meshes/m: labels.team: ",
        ),
        ("label name of 64 characters", format!("type: Mesh\nname: m\nlabels: {{{long}: a}}\n"), "meshes/m: labels."),
        (
            "label prefix of 254 characters",
            format!("type: Mesh\nname: m\nlabels: {{{}.io/team: a}}\n", "a".repeat(251)),
            "meshes/m: labels.",
        ),
        ("label with a space", "type: Mesh\nname: m\nlabels: {'a b': c}\n".into(), "meshes/m: labels.a b: "),
        (
            "python object tag",
            "type: Mesh\nname: m\nlabels: !!python/object:os.system {team: a}\n".into(),
            "document 1: labels: tag !!python/object:os.system",
        ),
        (
            "application tag in a second document",
            "type: Mesh\nname: a\n---\ntype: Mesh\nname: b\nmtls:\n  backends:\n  - !ca {name: x, type: builtin}\n"
                .into(),
            "document 2: mtls.backends[0]: tag !ca",
        ),
        ("tag on a scalar", "type: Mesh\nname: !!binary bWVzaA==\n".into(), "document 1: name: tag !!binary"),
    ];
    for (what, yaml, want) in &cases {
        let err = cp.ward_stdin(&["apply", "-f", "-"], yaml).fails();
        assert!(err.contains(want), "{what}: stderr was\n{err}\nwanted: {want}");
    }
    // The server checks the same without the CLI.
    let response = http()
        .put(format!("{}/meshes/m", cp.address))
        .bearer_auth(&cp.admin_token)
        .header("content-type", "application/yaml")
        .body("type: Mesh\nname: m\nnetworking: !!python/object/apply:os.system ['true']\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["details"].as_str().unwrap().contains("document 1: networking: tag !!python/object/apply:os.system"),
        "{body}"
    );
    assert_eq!(snapshot(&cp).await, before, "nothing refused was stored");
}

/// A Mesh `m` with builtin mTLS and a Dataplane `web-1` on free loopback ports.
fn mesh_and_dataplane() -> (String, String) {
    let mesh = "type: Mesh\nname: m\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n";
    let dataplane = format!(
        "type: Dataplane\nmesh: m\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
         servicePort: {}\n    tags: {{kuma.io/service: web}}\n",
        common::free_port(),
        common::free_port()
    );
    (mesh.into(), dataplane)
}

/// Waits up to 60 s until `ward inspect` says the dataplane is (`true`) or is not online.
fn wait_online(cp: &ControlPlane, want: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = cp.ward(&["inspect", "dataplane", "web-1", "-m", "m"]).ok();
        if out.contains("status:      online") == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "dataplane online={want} not seen within 60s:\n{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_control_plane_stops_on_sigterm_and_sigint_with_a_proxy_connected() {
    use nix::sys::signal::Signal;
    let root = tempfile::tempdir().unwrap();
    let (api_port, dp_port) = (common::free_port(), common::free_port());
    let data_dir = root.path().join("data");
    let mut cp = ControlPlane::start_on(data_dir.clone(), root.path(), api_port, dp_port);
    let (mesh, dataplane) = mesh_and_dataplane();
    cp.apply(&mesh);
    cp.apply(&dataplane);
    let mut proxy = cp.start_proxy(root.path(), "web-1", &dataplane, &[]);
    wait_online(&cp, true);
    let serial = proxy.serial().expect("the proxy holds a certificate");

    // Default grace: 10 s. The open discovery stream must not hold the process.
    cp.signal(Signal::SIGTERM);
    let status = cp.wait_exit(Duration::from_secs(12));
    assert!(status.is_some(), "still running 12 s after SIGTERM:\n{}", cp.log());
    assert!(status.unwrap().success(), "exit status {status:?}:\n{}", cp.log());
    assert!(cp.log().contains("control plane stopped"), "{}", cp.log());
    assert!(!cp.log().contains("end of the grace period"), "the stream was ended, not waited for:\n{}", cp.log());

    // The proxy keeps serving with what it had.
    assert!(proxy.wait_exit(Duration::ZERO).is_none(), "the proxy keeps running:\n{}", proxy.log());
    assert_eq!(proxy.serial(), Some(serial), "the proxy keeps its certificate");
    assert_eq!(proxy.admin_get("/ready").0, 200, "the proxy still serves:\n{}", proxy.log());

    // It reconnects to the next control plane on the same data dir (the lock was released).
    let mut cp = ControlPlane::start_with_args(data_dir, root.path(), api_port, dp_port, &["--shutdown-grace", "3s"]);
    wait_online(&cp, true);
    cp.signal(Signal::SIGINT);
    let status = cp.wait_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "exit {status:?} after SIGINT with a 3 s grace:\n{}", cp.log());
}

#[test]
fn a_second_control_plane_on_the_same_data_dir_refuses_to_start_naming_the_first() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    let mut second = std::process::Command::new(common::WARD)
        .args(["cp", "run", "--data-dir"])
        .arg(&cp.data_dir)
        .args(["--api-address", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--dp-server-address", &format!("127.0.0.1:{}", common::free_port())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            let output = second.wait_with_output().unwrap();
            panic!("a second control plane runs on the same data dir:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let want = format!("is in use by process {}", cp.pid());
    assert!(stderr.contains("--data-dir") && stderr.contains(&want), "wanted {want:?} in:\n{stderr}");
    // The first one was not disturbed.
    assert!(cp.ward(&["get", "meshes"]).ok().starts_with("NAME"));
}

#[tokio::test]
async fn dry_run_checks_what_apply_checks_and_stores_nothing() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    let empty = snapshot(&cp).await;
    let dry_run = |yaml: &str| cp.ward_stdin(&["apply", "--dry-run", "-f", "-"], yaml);

    // A new mesh is checked by the control plane; what goes in it only here, and it says so.
    let out = dry_run(MARKETPLACE).ok();
    assert!(out.starts_with("Mesh marketplace created (dry run)\n"), "{out}");
    let local =
        "Dataplane users-1 in mesh marketplace created (dry run; checked without the control plane: the mesh is new)";
    assert!(out.contains(local), "{out}");
    assert_eq!(snapshot(&cp).await, empty, "nothing was stored, nor audited");

    cp.ward_stdin(&["apply", "-f", "-"], MARKETPLACE).ok();
    let before = snapshot(&cp).await;
    let out = dry_run(MARKETPLACE).ok();
    assert_eq!(out.lines().count(), 7, "{out}");
    assert!(out.lines().all(|l| l.ends_with(" updated (dry run)")), "{out}");
    let secret = "type: Secret\nmesh: marketplace\nname: token\ndata: c2VjcmV0\n";
    assert_eq!(dry_run(secret).ok(), "Secret token in mesh marketplace created (dry run)\n");
    assert_eq!(snapshot(&cp).await, before, "nothing was stored, nor audited");

    // Refusals come from the control plane's own checks, word for word as a real apply's.
    let cases = [
        (
            "a Secret the mesh does not have",
            "type: Mesh\nname: marketplace\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: provided\n    \
             conf: {cert: {secret: ca-cert}, key: {secret: ca-key}}\n",
            "meshes/marketplace: mtls.backends[0].conf.cert.secret: Secret \"ca-cert\" does not exist in the mesh",
        ),
        (
            "a stale version",
            "type: Mesh\nname: marketplace\nversion: 7\n",
            "meshes/marketplace: version 7 is stale: the stored version is 1",
        ),
        (
            "an unknown mesh",
            "type: Secret\nmesh: nowhere\nname: token\ndata: c2VjcmV0\n",
            "mesh: mesh \"nowhere\" does not exist",
        ),
        (
            "empty data",
            "type: Secret\nmesh: marketplace\nname: token\ndata: ''\n",
            "secrets/token: data: cannot be empty",
        ),
    ];
    for (what, yaml, want) in cases {
        let dry = dry_run(yaml).fails();
        let real = cp.ward_stdin(&["apply", "-f", "-"], yaml).fails();
        assert!(dry.starts_with(want), "{what}: {dry}");
        assert_eq!(dry.lines().next(), real.lines().next().map(|l| l.trim_start_matches("Error: ")), "{what}");
    }
    assert_eq!(snapshot(&cp).await, before, "nothing refused was stored");
}

#[tokio::test]
async fn what_get_prints_as_yaml_applies_again_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.ward_stdin(&["apply", "-f", "-"], MARKETPLACE).ok();
    let extra = "type: TrafficPermission\nmesh: marketplace\nname: legacy\nsources:\n- match: {kuma.io/service: '*'}\n\
                 destinations:\n- match: {kuma.io/service: items}\n---\n\
                 type: Secret\nmesh: marketplace\nname: token\nlabels: {team: a}\ndata: c2VjcmV0\n---\n\
                 type: GlobalSecret\nname: shared\ndata: c2hhcmVk\n";
    cp.ward_stdin(&["apply", "-f", "-"], extra).ok();
    let changing = |yaml: &str| -> String {
        yaml.lines().filter(|l| !l.starts_with("version:") && !l.starts_with("modificationTime:")).collect()
    };
    for (ty, name, more) in [
        ("mesh", "marketplace", None),
        ("dataplane", "users-1", None),
        ("meshtrafficpermission", "users-callers", None),
        ("traffic-permission", "legacy", None),
        ("secret", "token", Some("--show-data")),
        ("global-secret", "shared", Some("--show-data")),
    ] {
        let mut args = vec!["get", ty, name, "-m", "marketplace", "-o", "yaml"];
        args.extend(more);
        let printed = cp.ward(&args).ok();
        let out = cp.ward_stdin(&["apply", "-f", "-"], &printed).ok();
        assert!(out.ends_with(" updated\n"), "{ty}: {out}");
        let again = cp.ward(&args).ok();
        assert_eq!(changing(&again), changing(&printed), "{ty}");
        assert!(again.contains("version: 2"), "{ty}: {again}");
    }
    // Without --show-data the data is not printed, and what is printed cannot empty the Secret.
    let hidden = cp.ward(&["get", "secret", "token", "-m", "marketplace", "-o", "yaml"]).ok();
    assert!(!hidden.contains("data") && hidden.contains("name: token"), "{hidden}");
    let err = cp.ward_stdin(&["apply", "-f", "-"], &hidden).fails();
    assert!(err.contains("secrets/token: data: is required"), "{err}");
}

#[tokio::test]
async fn secret_data_is_shown_only_to_admins_who_ask_and_every_read_is_audited() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    cp.apply("type: Mesh\nname: a\n---\ntype: Mesh\nname: b\n");
    cp.apply("type: Secret\nmesh: a\nname: s\ndata: c2VjcmV0\n---\ntype: GlobalSecret\nname: g\ndata: Z2xvYmFs\n");
    let token = |name: &str, role: &str, mesh: Option<&str>| {
        let mut args = vec!["generate", "user-token", "--name", name, "--role", role, "--valid-for", "1h"];
        args.extend(mesh.map(|m| ["--mesh", m]).into_iter().flatten());
        cp.ward(&args).ok().trim().to_string()
    };
    let admin_a = token("admin-a", "admin", Some("a"));
    let admin_b = token("admin-b", "admin", Some("b"));
    let viewer = token("viewer", "viewer", None);
    let global = cp.admin_token.clone();
    let get = |token: &str, path: &str| {
        let (token, path) = (token.to_string(), path.to_string());
        let address = cp.address.clone();
        async move {
            let r = http().get(format!("{address}{path}")).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let cases: &[(&str, &str, &str, u16, Option<&str>)] = &[
        ("viewer lists names", &viewer, "/meshes/a/secrets", 200, None),
        ("viewer reads the envelope", &viewer, "/meshes/a/secrets/s", 200, None),
        ("viewer asks for data", &viewer, "/meshes/a/secrets/s?showData=true", 403, None),
        ("admin of a", &admin_a, "/meshes/a/secrets/s?showData=true", 200, Some("c2VjcmV0")),
        ("admin of b", &admin_b, "/meshes/a/secrets/s?showData=true", 403, None),
        ("admin of b lists a", &admin_b, "/meshes/a/secrets", 403, None),
        ("global admin", &global, "/meshes/a/secrets/s?showData=true", 200, Some("c2VjcmV0")),
        ("admin of a, global secret names", &admin_a, "/global-secrets", 403, None),
        ("admin of a, global secret data", &admin_a, "/global-secrets/g?showData=true", 403, None),
        ("viewer, global secret", &viewer, "/global-secrets/g", 200, None),
        ("viewer, global secret data", &viewer, "/global-secrets/g?showData=true", 403, None),
        ("global admin, global secret data", &global, "/global-secrets/g?showData=true", 200, Some("Z2xvYmFs")),
        ("data of a Mesh", &global, "/meshes/a?showData=true", 400, None),
        ("data of a Dataplane", &global, "/meshes/a/dataplanes/x?showData=true", 404, None),
    ];
    for (what, token, path, status, data) in cases {
        let (got, body) = get(token, path).await;
        assert_eq!(got, *status, "{what}: {body}");
        assert_eq!(body["data"].as_str(), *data, "{what}: {body}");
    }
    let (_, list) = get(&global, "/meshes/a/secrets").await;
    assert_eq!(list["items"][0]["name"], "s");
    assert_eq!(list["items"][0].get("data"), None, "a list never holds data: {list}");

    let (_, audit) = get(&global, "/audit").await;
    let reads: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "read-data")
        .map(|e| (e["tokenName"].as_str().unwrap(), e["resource"].as_str().unwrap()))
        .collect();
    assert_eq!(reads, [("admin-a", "Secret a/s"), ("admin", "Secret a/s"), ("admin", "GlobalSecret g")]);
}

/// Kuma 2.14 fields: a field without effect in Ward applies with a warning line on stderr
/// naming it and why, and what `ward get -o yaml` prints applies again unchanged.
#[tokio::test]
async fn kuma_fields_without_effect_apply_with_a_warning_and_read_back_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    let yaml = "type: Mesh\nname: obs\ntracing:\n  backends:\n  - name: zipkin\n    type: zipkin\n    \
                conf: {url: 'http://zipkin:9411/api/v2/spans'}\nconstraints:\n  dataplaneProxy:\n    \
                requirements:\n    - tags: {kuma.io/service: web}\n---\ntype: Dataplane\nmesh: obs\nname: web-1\n\
                networking:\n  address: 10.0.0.1\n  advertisedAddress: 192.0.2.1\n  inbound:\n  - port: 8080\n    \
                address: 10.0.0.2\n    name: http\n    state: NotReady\n    serviceProbe: {interval: 5s, tcp: {}}\n    \
                tags: {kuma.io/service: web}\n  outbound:\n  - port: 10001\n    \
                backendRef: {kind: MeshMultiZoneService, name: backend, port: 80}\n";
    let out = cp.ward_stdin(&["apply", "-f", "-"], yaml);
    out.ok();
    let stderr = out.stderr();
    for want in [
        "warning: Mesh/obs: tracing: Ward's proxy does not send traces",
        "warning: Dataplane/web-1: networking.outbound[0].backendRef.kind: Ward has no MeshMultiZoneService resources",
    ] {
        assert!(stderr.lines().any(|l| l.starts_with(want)), "wanted {want:?} in stderr:\n{stderr}");
    }
    assert_eq!(stderr.lines().filter(|l| l.starts_with("warning: ")).count(), 2, "{stderr}");

    let stable = |text: &str| -> String {
        text.lines()
            .filter(|l| !l.starts_with("version:") && !l.starts_with("modificationTime:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for args in [&["get", "mesh", "obs", "-o", "yaml"][..], &["get", "dataplane", "web-1", "-m", "obs", "-o", "yaml"]] {
        let first = cp.ward(args).ok();
        for field in ["advertisedAddress: \"192.0.2.1\"", "state: NotReady", "name: http", "backendRef:", "tracing:"] {
            if args[1] == "dataplane" && field == "tracing:" || args[1] == "mesh" && field != "tracing:" {
                continue;
            }
            assert!(first.contains(field), "{args:?} keeps {field}:\n{first}");
        }
        cp.ward_stdin(&["apply", "-f", "-"], &first).ok();
        assert_eq!(stable(&cp.ward(args).ok()), stable(&first), "{args:?} applies again unchanged");
    }
}
