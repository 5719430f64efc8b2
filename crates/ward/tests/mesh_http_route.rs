//! MeshHTTPRoute and MeshTCPRoute through real proxies: the caller's proxy splits a canary by
//! weight, routes by header to another service, rewrites a prefix, answers a redirect, changes
//! headers both ways, mirrors requests, and moves TCP connections; every change applies to the
//! running proxies.

mod common;

use std::time::{Duration, Instant};

use common::policy_lab::{Extras, Lab, outbound_has};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// A MeshHTTPRoute from the client to `web` with `rules` (YAML, indented under `rules:`).
fn route(name: &str, rules: &str) -> String {
    format!(
        "type: MeshHTTPRoute\nmesh: lab\nname: {name}\nspec:\n  targetRef: {{kind: MeshService, name: client}}\n  to:\n  \
         - targetRef: {{kind: MeshService, name: web}}\n    rules:\n{rules}"
    )
}

/// The canary split: `v1` and `v2` are the weights of web's `version: v1` and `version: v2`.
fn canary(v1: u32, v2: u32) -> String {
    route(
        "web-canary",
        &format!(
            "    - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n      default:\n        backendRefs:\n        \
             - {{kind: MeshServiceSubset, name: web, tags: {{version: v1}}, weight: {v1}}}\n        \
             - {{kind: MeshServiceSubset, name: web, tags: {{version: v2}}, weight: {v2}}}\n"
        ),
    )
}

/// Which service answered each of `n` requests to `path`.
async fn answers(lab: &Lab, path: &str, n: usize) -> Vec<String> {
    let http = common::http_client();
    let mut out = Vec::new();
    for _ in 0..n {
        let response = http.get(lab.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let echoed: Value = response.json().await.unwrap();
        out.push(echoed["service"].as_str().unwrap().to_string());
    }
    out
}

fn count(answers: &[String], service: &str) -> usize {
    answers.iter().filter(|a| *a == service).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_moves_by_weight_on_running_proxies() {
    let lab = Lab::start_with(Extras { routes: true, ..Extras::default() }).await;
    // Unrouted, both instances of web answer.
    let seen = answers(&lab, "/", 20).await;
    assert!(count(&seen, "web") > 0 && count(&seen, "web-v2") > 0, "{seen:?}");

    let weights = |v1: u32, v2: u32| {
        move |r: &Value| {
            outbound_has(r, "MeshHTTPRoute", &format!("\"tags\":{{\"version\":\"v2\"}},\"weight\":{v2}"))
                && outbound_has(r, "MeshHTTPRoute", &format!("\"tags\":{{\"version\":\"v1\"}},\"weight\":{v1}"))
        }
    };
    lab.apply(&canary(100, 0), &lab.client, weights(100, 0)).await;
    let seen = answers(&lab, "/", 30).await;
    assert_eq!(count(&seen, "web"), 30, "all to version v1: {seen:?}");

    lab.apply(&canary(0, 100), &lab.client, weights(0, 100)).await;
    let seen = answers(&lab, "/", 30).await;
    assert_eq!(count(&seen, "web-v2"), 30, "all to version v2: {seen:?}");

    // Half and half: 100 of 200 expected each; 50 is more than seven standard deviations off.
    lab.apply(&canary(1, 1), &lab.client, weights(1, 1)).await;
    let seen = answers(&lab, "/", 200).await;
    assert!(count(&seen, "web") > 50 && count(&seen, "web-v2") > 50, "an even split: {seen:?}");

    let shown = lab.cp.ward(&["inspect", "dataplane", "client-1", "-m", "lab", "--rules"]).ok();
    assert!(shown.contains("MeshHTTPRoute (from web-canary)"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_header_routes_to_another_service_and_headers_change_both_ways() {
    let lab = Lab::start_with(Extras { routes: true, ..Extras::default() }).await;
    let rules = "    - matches: [{headers: [{name: x-tenant, value: beta}]}]\n      default:\n        filters:\n        \
                 - type: RequestHeaderModifier\n          requestHeaderModifier:\n            set: [{name: x-routed, value: api}]\n            \
                 remove: [x-secret]\n        - type: ResponseHeaderModifier\n          responseHeaderModifier:\n            \
                 add: [{name: x-served-by, value: api}]\n        backendRefs: [{kind: MeshService, name: api}]\n";
    lab.apply(&route("by-tenant", rules), &lab.client, |r| outbound_has(r, "MeshHTTPRoute", "x-served-by")).await;
    let http = common::http_client();

    let response =
        http.get(lab.url("/orders")).header("x-tenant", "beta").header("x-secret", "s3").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-served-by"], "api");
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["service"], "api");
    assert_eq!(echoed["headers"]["x-routed"], "api");
    assert!(echoed["headers"].get("x-secret").is_none(), "{echoed}");

    // Without the header, no route matches: web answers as before, untouched.
    let response = http.get(lab.url("/orders")).header("x-secret", "s3").send().await.unwrap();
    assert!(response.headers().get("x-served-by").is_none());
    let echoed: Value = response.json().await.unwrap();
    assert!(echoed["service"].as_str().unwrap().starts_with("web"), "{echoed}");
    assert_eq!(echoed["headers"]["x-secret"], "s3");

    // A route never opens a way the permissions close: api's proxy still decides.
    lab.cp.apply(
        "type: MeshTrafficPermission\nmesh: lab\nname: api-closed\nspec:\n  targetRef: {kind: MeshService, name: api}\n  \
         from:\n  - targetRef: {kind: MeshService, name: client}\n    default: {action: Deny}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = http.get(lab.url("/orders")).header("x-tenant", "beta").send().await.unwrap().status();
        if status == 403 {
            break;
        }
        assert!(status == 200 && Instant::now() < deadline, "api refuses the client once denied: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prefix_is_rewritten_and_a_redirect_answered() {
    let lab = Lab::start().await;
    let rules = "    - matches: [{path: {type: PathPrefix, value: /old}}]\n      default:\n        filters:\n        \
                 - type: URLRewrite\n          urlRewrite:\n            hostname: rewritten.mesh\n            \
                 path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}\n    \
                 - matches: [{path: {type: Exact, value: /moved}}]\n      default:\n        filters:\n        \
                 - type: RequestRedirect\n          requestRedirect:\n            hostname: example.com\n            \
                 statusCode: 301\n            path: {type: ReplaceFullPath, replaceFullPath: /there}\n";
    lab.apply(&route("paths", rules), &lab.client, |r| outbound_has(r, "MeshHTTPRoute", "example.com")).await;
    let http = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    let echoed: Value = http.get(lab.url("/old/items")).send().await.unwrap().json().await.unwrap();
    assert_eq!(echoed["path"], "/new/items");
    assert_eq!(echoed["headers"]["host"], "rewritten.mesh");
    let echoed: Value = http.get(lab.url("/older")).send().await.unwrap().json().await.unwrap();
    assert_eq!(echoed["path"], "/older", "a prefix ends at a slash");

    let response = http.get(lab.url("/moved?q=1")).send().await.unwrap();
    assert_eq!(response.status(), 301);
    let location = format!("http://example.com:{}/there?q=1", lab.outbound);
    assert_eq!(response.headers()["location"], location.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mirror_gets_copies_and_never_fails_the_request() {
    let lab = Lab::start_with(Extras { routes: true, ..Extras::default() }).await;
    let rules = "    - matches: [{path: {type: PathPrefix, value: /}}]\n      default:\n        filters:\n        \
                 - type: RequestMirror\n          requestMirror:\n            backendRef: {kind: MeshService, name: shadow}\n        \
                 - type: RequestMirror\n          requestMirror:\n            \
                 backendRef: {kind: MeshServiceSubset, name: web, tags: {version: none}}\n        \
                 backendRefs: [{kind: MeshServiceSubset, name: web, tags: {version: v1}}]\n";
    lab.apply(&route("shadowed", rules), &lab.client, |r| outbound_has(r, "MeshHTTPRoute", "shadow")).await;
    let http = common::http_client();
    for i in 0..5 {
        let response = http.post(lab.url(&format!("/copy/{i}"))).body(vec![b'x'; 3000]).send().await.unwrap();
        // A mirror with no instance to go to never fails the request.
        assert_eq!(response.status(), 200);
        let echoed: Value = response.json().await.unwrap();
        assert_eq!((echoed["service"].as_str(), echoed["bodyBytes"].as_u64()), (Some("web"), Some(3000)));
    }
    let seen = lab.shadow.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let copies: Vec<Value> = seen.lock().unwrap().clone();
        if copies.len() == 5 {
            for copy in &copies {
                assert_eq!(copy["bodyBytes"], 3000, "{copy}");
                assert!(copy["headers"]["host"].as_str().unwrap().ends_with("-shadow"), "{copy}");
            }
            let mut paths: Vec<&str> = copies.iter().map(|c| c["path"].as_str().unwrap()).collect();
            paths.sort();
            assert_eq!(paths, ["/copy/0", "/copy/1", "/copy/2", "/copy/3", "/copy/4"]);
            break;
        }
        assert!(copies.len() < 5 && Instant::now() < deadline, "the shadow saw every copy once: {copies:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_nobody_knows_is_reported_and_the_route_not_applied() {
    let lab = Lab::start_with(Extras { routes: true, ..Extras::default() }).await;
    let rules = "    - matches: [{path: {type: PathPrefix, value: /}}]\n      default:\n        backendRefs:\n        \
                 - {kind: MeshService, name: api, weight: 1}\n        - {kind: MeshService, name: nowhere, weight: 1}\n";
    lab.apply(&route("half-known", rules), &lab.client, |r| outbound_has(r, "MeshHTTPRoute", "nowhere")).await;
    let shown = lab.cp.ward(&["inspect", "dataplane", "client-1", "-m", "lab", "--rules"]).ok();
    assert!(shown.contains("half-known: not applied: backendRef MeshService/nowhere"), "{shown}");
    let seen = answers(&lab, "/", 10).await;
    assert_eq!(count(&seen, "api"), 0, "none of the route applies: {seen:?}");
}

/// What the client's `db` outbound gives back for one connection that sends `ping`.
async fn tcp_answer(lab: &Lab) -> String {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", lab.db_outbound)).await.unwrap();
    tcp.write_all(b"ping\n").await.unwrap();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(tcp);
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await.unwrap().unwrap();
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tcp_route_moves_connections_and_back() {
    let lab = Lab::start_with(Extras { db: true, routes: true, ..Extras::default() }).await;
    assert_eq!(tcp_answer(&lab).await, "ping\n", "db echoes");
    let tcp_route = |to: &str| {
        format!(
            "type: MeshTCPRoute\nmesh: lab\nname: db-move\nspec:\n  targetRef: {{kind: Mesh}}\n  to:\n  \
             - targetRef: {{kind: MeshService, name: db}}\n    rules:\n    - default:\n        \
             backendRefs: [{{kind: MeshService, name: {to}}}]\n"
        )
    };
    lab.apply(&tcp_route("cache"), &lab.client, |r| outbound_has(r, "MeshTCPRoute", "cache")).await;
    for _ in 0..3 {
        assert_eq!(tcp_answer(&lab).await, "cache\n", "every connection goes to cache");
    }
    lab.apply(&tcp_route("db"), &lab.client, |r| {
        outbound_has(r, "MeshTCPRoute", "db-move") && !outbound_has(r, "MeshTCPRoute", "cache")
    })
    .await;
    assert_eq!(tcp_answer(&lab).await, "ping\n", "back to db");
}
