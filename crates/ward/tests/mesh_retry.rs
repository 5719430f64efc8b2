//! MeshRetry through real proxies: a failing instance is hidden by retries on another one, a
//! body is sent again whole when it was buffered and never when it streamed, and a per-try
//! timeout bounds each try.

mod common;

use std::time::{Duration, Instant};

use common::policy_lab::{Extras, Lab, outbound_has};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_hide_a_broken_instance_and_resend_only_buffered_bodies() {
    // web-2's application is gone: its proxy answers every request with 502.
    let lab = Lab::start_with(Extras { broken_webs: 1, ..Extras::default() }).await;
    let http = common::http_client();
    let url = lab.url("/");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Both instances take requests: without a retry policy, some fail.
    let mut statuses = Vec::new();
    while !(statuses.contains(&502) && statuses.contains(&200)) {
        assert!(Instant::now() < deadline, "both instances answer: {statuses:?}");
        statuses.push(http.get(&url).send().await.unwrap().status().as_u16());
    }

    lab.apply(
        "type: MeshRetry\nmesh: lab\nname: web-retries\nspec:\n  targetRef: {kind: MeshService, name: client}\n  to:\n  \
         - targetRef: {kind: MeshService, name: web}\n    default:\n      http:\n        numRetries: 3\n        \
         retryOn: [GatewayError]\n        backOff: {baseInterval: 10ms, maxInterval: 50ms}\n        \
         hostSelection: [{predicate: OmitPreviousHosts}]\n",
        &lab.client,
        |r| outbound_has(r, "MeshRetry", "OmitPreviousHosts"),
    )
    .await;
    for i in 0..20 {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "request {i} was retried on the working instance");
    }
    // A body of known length is buffered, so every try carries it whole.
    for i in 0..6 {
        let response = http.post(&url).body(vec![b'x'; 4000]).send().await.unwrap();
        assert_eq!(response.status(), 200, "POST {i}");
        let echoed: serde_json::Value = response.json().await.unwrap();
        assert_eq!(echoed["bodyBytes"], 4000, "the retried try carried the whole body");
    }
    // A streamed body is never buffered, so it is never retried: one of two goes to web-2.
    let mut streamed = Vec::new();
    for _ in 0..4 {
        let chunks =
            (0..3).map(|_| Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![b'y'; 100]))));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let response = http.post(&url).body(reqwest::Body::wrap(body)).send().await.unwrap();
        streamed.push(response.status().as_u16());
    }
    assert!(streamed.contains(&502), "a streamed request is tried once: {streamed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_try_timeout_bounds_each_try() {
    let lab = Lab::start().await;
    lab.apply(
        "type: MeshRetry\nmesh: lab\nname: quick-tries\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      \
         http: {numRetries: 2, perTryTimeout: 300ms, retryOn: [Reset], backOff: {baseInterval: 10ms}}\n",
        &lab.client,
        |r| outbound_has(r, "MeshRetry", "perTryTimeout"),
    )
    .await;
    let http = common::http_client();
    let started = Instant::now();
    let response = http.get(lab.url("/slow?ms=5000")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(took >= Duration::from_millis(850) && took < Duration::from_secs(4), "three tries of 300ms: {took:?}");
    let quick = http.get(lab.url("/slow?ms=20")).send().await.unwrap();
    assert_eq!(quick.status(), 200);
}
