//! MeshFaultInjection through two real proxies: the callee's proxy aborts, delays or slows
//! the share of requests the policy says, and nothing at percentage 0.

mod common;

use std::time::{Duration, Instant};

use common::policy_lab::{Lab, inbound_has};

/// A MeshFaultInjection of `fault` for every caller of `web`.
fn policy(fault: &str) -> String {
    format!(
        "type: MeshFaultInjection\nmesh: lab\nname: faults\nspec:\n  targetRef: {{kind: MeshService, name: web}}\n  \
         from:\n  - targetRef: {{kind: Mesh}}\n    default:\n      http:\n      - {fault}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_for_every_request_answers_its_status_and_percentage_0_answers_none() {
    let lab = Lab::start().await;
    let http = common::http_client();
    lab.apply(&policy("abort: {httpStatus: 503, percentage: 100}"), &lab.web, |r| {
        inbound_has(r, "MeshFaultInjection", "503")
    })
    .await;
    for _ in 0..5 {
        let response = http.get(lab.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.text().await.unwrap(), "fault filter abort");
    }
    let shown = lab.cp.ward(&["inspect", "dataplane", "web-1", "-m", "lab", "--rules"]).ok();
    assert!(shown.contains("MeshFaultInjection (from faults)"), "{shown}");

    // Half of them, as a decimal in a string.
    lab.apply(&policy("abort: {httpStatus: 500, percentage: '50.5'}"), &lab.web, |r| {
        inbound_has(r, "MeshFaultInjection", "50.5")
    })
    .await;
    let mut aborted = 0;
    for _ in 0..100 {
        match http.get(lab.url("/")).send().await.unwrap().status().as_u16() {
            500 => aborted += 1,
            200 => {}
            other => panic!("answered {other}"),
        }
    }
    assert!((20..=80).contains(&aborted), "{aborted} of 100 aborted at 50.5%");

    let zero = "abort: {httpStatus: 503, percentage: 0}\n        delay: {value: 5s, percentage: 0}";
    lab.apply(&policy(zero), &lab.web, |r| inbound_has(r, "MeshFaultInjection", "5s")).await;
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(http.get(lab.url("/")).send().await.unwrap().status(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(4), "no delay at 0%: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delay_holds_every_request_for_its_value() {
    let lab = Lab::start().await;
    lab.apply(&policy("delay: {value: 1s, percentage: 100}"), &lab.web, |r| inbound_has(r, "MeshFaultInjection", "1s"))
        .await;
    let http = common::http_client();
    for _ in 0..2 {
        let started = Instant::now();
        let response = http.get(lab.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "answered after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_bandwidth_slows_a_large_body_to_its_limit() {
    let lab = Lab::start().await;
    let http = common::http_client();
    let started = Instant::now();
    let body = http.get(lab.url("/bytes?n=20480")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(body.len(), 20480);
    assert!(started.elapsed() < Duration::from_secs(1), "quick without the policy: {:?}", started.elapsed());

    // 10kbps is Envoy's 10 KiB a second: 20 KiB take two seconds.
    lab.apply(&policy("responseBandwidth: {limit: 10kbps, percentage: 100}"), &lab.web, |r| {
        inbound_has(r, "MeshFaultInjection", "10kbps")
    })
    .await;
    let started = Instant::now();
    let response = http.get(lab.url("/bytes?n=20480")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    let took = started.elapsed();
    assert_eq!(body.len(), 20480);
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(8), "took {took:?}");
}
