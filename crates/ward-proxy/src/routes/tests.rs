use serde_json::json;

use super::*;

fn table(routes: serde_json::Value) -> HttpTable {
    HttpTable::from_conf(&json!({ "routes": routes })).unwrap()
}

fn backend(key: &str, weight: u32) -> serde_json::Value {
    json!({ "key": key, "weight": weight })
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut r = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.header("host", "api.mesh").body(()).unwrap()
}

fn chosen(t: &HttpTable, r: &Request<()>) -> Option<String> {
    t.find(r).map(|route| route.backends.0[0].key.clone())
}

#[test]
fn the_first_route_that_matches_takes_the_request() {
    let t = table(json!([
        {"match": {"path": {"type": "Exact", "value": "/a"}}, "backends": [backend("exact", 1)], "origin": "r"},
        {"match": {"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"}, "backends": [backend("post", 1)], "origin": "r"},
        {"match": {"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "x-v", "value": "2"}]}, "backends": [backend("v2", 1)], "origin": "r"},
        {"match": {"headers": [{"type": "Absent", "name": "x-a"}], "queryParams": [{"type": "RegularExpression", "name": "q", "value": "[0-9]+"}]}, "backends": [backend("q", 1)], "origin": "r"},
        {"match": {"path": {"type": "RegularExpression", "value": "/re/[a-z]+"}}, "backends": [backend("re", 1)], "origin": "r"},
    ]));
    let find = |m: &str, uri: &str, h: &[(&str, &str)]| chosen(&t, &request(m, uri, h));
    assert_eq!(find("GET", "/a", &[]).as_deref(), Some("exact"));
    assert_eq!(find("GET", "/a/b", &[]), None, "Exact is the whole path");
    assert_eq!(find("POST", "/api/x", &[]).as_deref(), Some("post"));
    assert_eq!(find("POST", "/apix", &[]), None, "a prefix ends at a slash");
    assert_eq!(find("GET", "/api", &[("x-v", "2")]).as_deref(), Some("v2"));
    assert_eq!(find("GET", "/api", &[("x-v", "3")]), None);
    assert_eq!(find("GET", "/x?q=12", &[]).as_deref(), Some("q"));
    assert_eq!(find("GET", "/x?q=12a", &[]), None, "an expression matches the whole value");
    assert_eq!(find("GET", "/x?q=12", &[("x-a", "1")]), None);
    assert_eq!(find("GET", "/re/abc", &[]).as_deref(), Some("re"));
    assert_eq!(find("GET", "/re/abc/d", &[]), None);
}

#[test]
fn rewrites_replace_the_prefix_matched_or_the_whole_path_and_keep_the_query() {
    let rewrite = |prefix: &str, path: serde_json::Value| {
        table(json!([{
            "match": {"path": {"type": "PathPrefix", "value": prefix}},
            "filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "other.mesh", "path": path}}],
            "backends": [backend("b", 1)], "origin": "r"
        }]))
    };
    let run = |t: &HttpTable, uri: &str| {
        let mut r = request("GET", uri, &[]);
        t.find(&r).unwrap().rewrite_request(&mut r);
        (r.uri().to_string(), r.headers()["host"].to_str().unwrap().to_string())
    };
    let t = rewrite("/old", json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}));
    assert_eq!(run(&t, "/old/x?a=1"), ("/new/x?a=1".to_string(), "other.mesh".to_string()));
    assert_eq!(run(&t, "/old").0, "/new");
    let t = rewrite("/old", json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}));
    assert_eq!(run(&t, "/old/x").0, "/x");
    assert_eq!(run(&t, "/old").0, "/");
    let t = rewrite("/", json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v1"}));
    assert_eq!(run(&t, "/x").0, "/v1/x");
    let t = rewrite("/old", json!({"type": "ReplaceFullPath", "replaceFullPath": "/full"}));
    assert_eq!(run(&t, "/old/x?a=1").0, "/full?a=1");
}

#[test]
fn a_redirect_keeps_what_it_does_not_change() {
    let t = table(json!([{
        "match": {"path": {"type": "PathPrefix", "value": "/old"}},
        "filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "port": 8443, "statusCode": 301,
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}}],
        "backends": [backend("b", 1)], "origin": "r"
    }]));
    let r = request("GET", "/old/x?a=1", &[]);
    let response = t.find(&r).unwrap().redirect(&r).unwrap();
    assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(response.headers()["location"], "https://api.mesh:8443/new/x?a=1");
}

#[test]
fn header_modifiers_set_add_and_remove() {
    let mut headers = HeaderMap::new();
    headers.insert("x-set", HeaderValue::from_static("old"));
    headers.insert("x-add", HeaderValue::from_static("one"));
    headers.insert("x-gone", HeaderValue::from_static("1"));
    let m: HeaderModifier = serde_json::from_value(json!({
        "set": [{"name": "x-set", "value": "new"}], "add": [{"name": "x-add", "value": "two"}], "remove": ["x-gone"]
    }))
    .unwrap();
    modify(&mut headers, &m);
    assert_eq!(headers["x-set"], "new");
    assert_eq!(headers.get_all("x-add").iter().collect::<Vec<_>>(), ["one", "two"]);
    assert!(!headers.contains_key("x-gone"));
}

#[test]
fn weights_choose_in_proportion_and_zero_never() {
    let w = Weighted::new(serde_json::from_value(json!([backend("a", 0), backend("b", 3), backend("c", 1)])).unwrap());
    let mut counts = std::collections::HashMap::new();
    for _ in 0..4000 {
        *counts.entry(w.pick().unwrap().key.clone()).or_insert(0) += 1;
    }
    assert!(!counts.contains_key("a"));
    // 3000 and 1000 expected; these bounds are many standard deviations wide.
    assert!((2700..3300).contains(&counts["b"]), "{counts:?}");
    assert!(Weighted::new(serde_json::from_value(json!([backend("a", 0)])).unwrap()).pick().is_none());
}
