//! MeshOPA through real proxies: the callee's proxy asks the Rego of every MeshOPA selecting it
//! about each request a MeshTrafficPermission let through, and passes, changes or refuses it
//! as the policies answer; refusals say who refused them.

mod common;

use std::time::{Duration, Instant};

use common::policy_lab::{Lab, MESH, inbound_has};

/// A MeshOPA named `name` for the `web` service with `default` (indented YAML under it).
fn mesh_opa(name: &str, default: &str) -> String {
    format!(
        "type: MeshOPA\nmesh: lab\nname: {name}\nspec:\n  targetRef:\n    kind: MeshService\n    name: web\n  default:\n{default}"
    )
}

/// `appendPolicies` with one inline module.
fn inline(rego: &str) -> String {
    let body: String = rego.lines().map(|l| format!("          {l}\n")).collect();
    format!("    appendPolicies:\n    - rego:\n        inlineString: |\n{body}")
}

async fn status(http: &reqwest::Client, method: reqwest::Method, url: &str) -> u16 {
    http.request(method, url).send().await.unwrap().status().as_u16()
}

/// Waits until `check` holds, polling every 100 ms for at most 20 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rego_decides_by_method_and_path_and_denials_name_the_policy() {
    let lab = Lab::start().await;
    let http = common::http_client();
    assert_eq!(status(&http, reqwest::Method::POST, &lab.url("/")).await, 200);

    // Kong Mesh's composition: every policy must allow, and a package's deny refuses.
    let operator = mesh_opa(
        "get-only",
        &inline(
            "package envoy.authz\n\ndefault allow = false\n\nallow {\n  input.attributes.request.http.method == \"GET\"\n}",
        ),
    );
    let owner = mesh_opa(
        "block-path",
        &inline("package serviceowner\n\ndefault allow = true\n\ndeny {\n  input.parsed_path == [\"blocked\"]\n}"),
    );
    lab.apply(&format!("{operator}---\n{owner}"), &lab.web, |r| {
        inbound_has(r, "MeshOPA", "get-only") && inbound_has(r, "MeshOPA", "block-path")
    })
    .await;
    assert_eq!(status(&http, reqwest::Method::GET, &lab.url("/open")).await, 200);
    let refused = http.post(lab.url("/open")).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get("x-ward-denied-by").is_none(), "off by default");
    assert_eq!(status(&http, reqwest::Method::GET, &lab.url("/blocked")).await, 403);
    assert_eq!(status(&http, reqwest::Method::GET, &lab.url("/blocked/deeper")).await, 200);

    let (_, metrics) = tokio::task::block_in_place(|| lab.web.admin_get("/metrics"));
    assert!(
        metrics.contains(r#"ward_requests_denied_total{destination="web",policy="MeshOPA/get-only"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ward_requests_denied_total{destination="web",policy="MeshOPA/block-path"} 1"#),
        "{metrics}"
    );
    let log = lab.web.log();
    assert!(log.contains("request denied") && log.contains("/blocked") && log.contains("MeshOPA/block-path"), "{log}");

    // The mesh's ward.deniedByHeader names the deciding policy in the answer.
    lab.cp.apply(&format!("{}ward:\n  deniedByHeader: true\n", MESH.split("---").next().unwrap()));
    eventually("the denial names its policy", || async {
        let r = http.post(lab.url("/")).send().await.unwrap();
        r.headers().get("x-ward-denied-by").is_some_and(|v| v == "MeshOPA/get-only")
    })
    .await;
    let r = http.get(lab.url("/blocked")).send().await.unwrap();
    assert_eq!(r.headers().get("x-ward-denied-by").unwrap(), "MeshOPA/block-path");

    // So does a MeshTrafficPermission's denial, which comes first.
    lab.cp.apply(&MESH.split("---").nth(1).unwrap().replace("action: Allow", "action: Deny"));
    eventually("the permission denies", || async {
        let r = http.get(lab.url("/open")).send().await.unwrap();
        r.headers().get("x-ward-denied-by").is_some_and(|v| v == "MeshTrafficPermission/client-calls-web")
    })
    .await;
    let (_, metrics) = tokio::task::block_in_place(|| lab.web.admin_get("/metrics"));
    assert!(
        metrics.contains(
            r#"ward_requests_denied_total{destination="web",policy="MeshTrafficPermission/client-calls-web"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn object_results_change_the_request_or_answer_with_their_status_body_and_headers() {
    let lab = Lab::start().await;
    let http = common::http_client();
    let rego = r#"package envoy.authz

default allow = {"allowed": true, "headers": {"x-user": "from-rego"}, "request_headers_to_remove": ["x-secret"], "response_headers_to_add": {"x-decided": "opa"}}

allow = {"allowed": false, "http_status": 401, "body": "sign in first", "headers": {"www-authenticate": "Bearer"}} {
  input.parsed_path == ["admin"]
}"#;
    lab.apply(&mesh_opa("objects", &inline(rego)), &lab.web, |r| inbound_has(r, "MeshOPA", "objects")).await;

    let passed = http.get(lab.url("/a")).header("x-secret", "s").header("x-user", "forged").send().await.unwrap();
    assert_eq!(passed.status(), 200);
    assert_eq!(passed.headers().get("x-decided").unwrap(), "opa");
    let echoed: serde_json::Value = passed.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-user"], "from-rego", "{echoed}");
    assert!(echoed["headers"].get("x-secret").is_none(), "{echoed}");

    let refused = http.get(lab.url("/admin")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers().get("www-authenticate").unwrap(), "Bearer");
    assert_eq!(refused.text().await.unwrap(), "sign in first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_are_inspected_up_to_max_size_and_reach_the_application_whole() {
    let lab = Lab::start().await;
    let http = common::http_client();
    let rego = "package envoy.authz\n\ndefault allow = false\n\nallow {\n  input.parsed_body.amount < 100\n}\n\n\
                allow {\n  input.attributes.request.http.headers[\"x-envoy-auth-partial-body\"] == \"true\"\n  \
                startswith(input.attributes.request.http.body, \"{\\\"amount\\\": 1,\")\n}";
    let default = format!("    authConfig:\n      requestBody:\n        maxSize: 64\n{}", inline(rego));
    lab.apply(&mesh_opa("amounts", &default), &lab.web, |r| inbound_has(r, "MeshOPA", "maxSize")).await;

    let post = |body: String| http.post(lab.url("/pay")).header("content-type", "application/json").body(body).send();
    let small = post(r#"{"amount": 5}"#.to_string()).await.unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.json::<serde_json::Value>().await.unwrap()["bodyBytes"], 13);
    assert_eq!(post(r#"{"amount": 500}"#.to_string()).await.unwrap().status(), 403);
    // Longer than maxSize: the policy sees the first 64 bytes, marked partial; the application
    // gets all of it.
    let long = format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(100_000));
    let response = post(long.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["bodyBytes"], long.len());
    let long = format!(r#"{{"amount": 2, "pad": "{}"}}"#, "x".repeat(100_000));
    assert_eq!(post(long).await.unwrap().status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rego_that_does_not_compile_is_refused_at_apply_with_its_line() {
    let lab = Lab::start().await;
    let broken = mesh_opa("broken", &inline("package envoy.authz\n\nallow {\n  input.method ==\n}"));
    let err = lab.cp.ward_stdin(&["apply", "-f", "-"], &broken).fails();
    assert!(
        err.contains("spec.default.appendPolicies[0].rego") && err.contains("Rego does not compile at line 3"),
        "{err}"
    );
    let (_, listed) = (0, lab.cp.ward(&["get", "meshopas", "-m", "lab"]).ok());
    assert!(!listed.contains("broken"), "nothing is half-applied: {listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_flipped_under_load_loses_no_request() {
    let lab = Lab::start().await;
    let http = common::http_client();
    let gets =
        "package envoy.authz\n\ndefault allow = false\n\nallow {\n  input.attributes.request.http.method == \"GET\"\n}";
    let all = "package envoy.authz\n\ndefault allow = true";
    lab.apply(&mesh_opa("flip", &inline(gets)), &lab.web, |r| inbound_has(r, "MeshOPA", "GET")).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, stop) = (http.clone(), lab.url("/steady"), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    statuses.push(http.get(&url).send().await.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
                }
                statuses
            })
        })
        .collect();
    for round in 0..3 {
        lab.apply(&mesh_opa("flip", &inline(all)), &lab.web, |r| !inbound_has(r, "MeshOPA", "GET")).await;
        eventually("POST passes", || async { status(&http, reqwest::Method::POST, &lab.url("/")).await == 200 }).await;
        lab.apply(&mesh_opa("flip", &inline(gets)), &lab.web, |r| inbound_has(r, "MeshOPA", "GET")).await;
        eventually("POST is refused", || async { status(&http, reqwest::Method::POST, &lab.url("/")).await == 403 })
            .await;
        eprintln!("flip round {round} done");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        let statuses = task.await.unwrap();
        total += statuses.len();
        let lost: Vec<_> = statuses.iter().filter(|s| **s != Ok(200)).collect();
        assert!(lost.is_empty(), "every GET passes under every version: {lost:?}");
    }
    assert!(total > 50, "the load ran: {total} requests");
}
