//! MeshCircuitBreaker through real proxies: an instance that keeps failing is ejected so that
//! callers stop reaching it, and requests beyond maxRequests are refused at once.

mod common;

use std::time::{Duration, Instant};

use common::policy_lab::{Extras, Lab, outbound_has};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_instance_is_ejected_and_callers_stop_reaching_it() {
    // web-2's application is gone: its proxy answers every request with 502. No request goes
    // out before the client has the breaker.
    let lab = Lab::start_with(Extras { broken_webs: 1, ..Extras::default() }).await;
    lab.apply(
        "type: MeshCircuitBreaker\nmesh: lab\nname: eject-failing\nspec:\n  to:\n  - targetRef: {kind: MeshService, name: web}\n    \
         default:\n      outlierDetection:\n        baseEjectionTime: 1m\n        maxEjectionPercent: 50\n        \
         healthyPanicThreshold: 0\n        detectors:\n          gatewayFailures: {consecutive: 2}\n",
        &lab.client,
        |r| outbound_has(r, "MeshCircuitBreaker", "gatewayFailures"),
    )
    .await;
    let http = common::http_client();
    let url = lab.url("/");
    // Wait until both instances are endpoints (the first 502 proves web-2 is reached), then the
    // second consecutive 502 ejects it: at most two failures reach the caller.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failures = 0;
    let mut in_a_row = 0;
    while in_a_row < 20 {
        assert!(Instant::now() < deadline, "web-2 is never ejected: {failures} failures");
        match http.get(&url).send().await.unwrap().status().as_u16() {
            200 => in_a_row += 1,
            502 => {
                failures += 1;
                in_a_row = 0;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((1..=2).contains(&failures), "web-2 was ejected after two gateway failures: saw {failures}");
    let log = tokio::task::block_in_place(|| lab.client.log());
    assert!(log.contains("instance ejected by outlier detection"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_beyond_max_requests_are_refused_at_once() {
    let lab = Lab::start().await;
    lab.apply(
        "type: MeshCircuitBreaker\nmesh: lab\nname: one-at-a-time\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    \
         default:\n      connectionLimits: {maxRequests: 1}\n",
        &lab.client,
        |r| outbound_has(r, "MeshCircuitBreaker", "maxRequests"),
    )
    .await;
    let http = common::http_client();
    // Two slow requests at once: one runs, the other is refused without waiting.
    let call = |http: reqwest::Client, url: String| async move {
        let started = Instant::now();
        let response = http.get(url).send().await.unwrap();
        let overloaded = response.headers().get("x-envoy-overloaded").cloned();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        (status, started.elapsed(), overloaded, body)
    };
    let slow = lab.url("/slow?ms=2000");
    let (a, b) = tokio::join!(call(http.clone(), slow.clone()), call(http.clone(), slow));
    let (ran, refused) = if a.0 == 200 { (a, b) } else { (b, a) };
    assert_eq!(ran.0, 200, "one request runs: {ran:?}");
    assert!(ran.1 >= Duration::from_millis(1900), "{ran:?}");
    assert_eq!(refused.0, 503, "the other is refused: {refused:?}");
    assert!(refused.1 < Duration::from_millis(1500), "refused at once: {refused:?}");
    assert_eq!(refused.2.as_ref().map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(refused.3, "upstream overflow\n");
    // Its slot is given back once the proxy is done with its answer.
    let deadline = Instant::now() + Duration::from_secs(5);
    while http.get(lab.url("/")).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "the slot is free again once the answer is done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
