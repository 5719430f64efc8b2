//! MeshHealthCheck through real proxies: the caller's proxy probes every instance of `web`
//! through the mesh; an instance whose health endpoint fails stops taking traffic and takes it
//! again once it passes; below the panic threshold every instance takes traffic (or none with
//! failTrafficOnPanic); a TCP probe checks what the instance sends back.

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::policy_lab::{Extras, Lab, answered_by, outbound_has};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn policy(name: &str, extra: &str) -> String {
    format!(
        "type: MeshHealthCheck\nmesh: lab\nname: {name}\nspec:\n  to:\n  - targetRef: {{kind: MeshService, name: web}}\n    \
         default:\n      interval: 200ms\n      timeout: 1s\n      unhealthyThreshold: 2\n      healthyThreshold: 1\n      \
         http:\n        path: /health\n{extra}"
    )
}

/// Who answered each of `n` requests, counted.
async fn answers(lab: &Lab, n: usize) -> BTreeMap<String, usize> {
    let http = common::http_client();
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let response = http.get(lab.url("/")).send().await.unwrap();
        let who = if response.status() == 200 {
            answered_by(&response.text().await.unwrap())
        } else {
            format!("status {}", response.status().as_u16())
        };
        *seen.entry(who).or_default() += 1;
    }
    seen
}

/// Waits until `n` requests in a row are answered as `wanted` says.
async fn until(lab: &Lab, what: &str, wanted: impl Fn(&BTreeMap<String, usize>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = answers(lab, 12).await;
        if wanted(&seen) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never happened; last answers: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_failing_its_health_probe_takes_no_traffic_until_it_passes_again() {
    let lab = Lab::start_with(Extras { named_webs: 2, ..Extras::default() }).await;
    lab.apply(&policy("probe-web", ""), &lab.client, |r| outbound_has(r, "MeshHealthCheck", "/health")).await;
    until(&lab, "every instance taking traffic", |seen| seen.len() == 3).await;
    let failing = &lab.named[0];
    failing.set_healthy(false);
    until(&lab, "the failing instance leaving", |seen| seen.len() == 2 && !seen.contains_key(&failing.name)).await;
    // It stays out while it fails.
    let seen = answers(&lab, 30).await;
    assert!(!seen.contains_key(&failing.name), "{seen:?}");
    failing.set_healthy(true);
    until(&lab, "the instance coming back", |seen| seen.contains_key(&failing.name)).await;
    let log = tokio::task::block_in_place(|| lab.client.log());
    assert!(log.contains("instance unhealthy: it fails its health probes"), "{log}");
    assert!(log.contains("instance healthy again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn below_the_panic_threshold_every_instance_takes_traffic_or_none_on_fail_traffic_on_panic() {
    let lab = Lab::start_with(Extras { named_webs: 2, ..Extras::default() }).await;
    // One of three healthy is 33%: above a 30% threshold, only web-1 takes traffic.
    lab.apply(&policy("probe-web", "      healthyPanicThreshold: 30\n"), &lab.client, |r| {
        outbound_has(r, "MeshHealthCheck", "healthyPanicThreshold")
    })
    .await;
    for named in &lab.named {
        named.set_healthy(false);
    }
    until(&lab, "only web-1 answering", |seen| seen.keys().eq(["web-1"])).await;
    // Below a 50% threshold the proxy panics: every instance takes traffic again.
    lab.apply(&policy("probe-web", "      healthyPanicThreshold: 50\n"), &lab.client, |r| {
        outbound_has(r, "MeshHealthCheck", "50")
    })
    .await;
    until(&lab, "every instance taking traffic in panic", |seen| seen.len() == 3).await;
    // Unless the policy fails the traffic instead.
    lab.apply(
        &policy("probe-web", "      healthyPanicThreshold: 50\n      failTrafficOnPanic: true\n"),
        &lab.client,
        |r| outbound_has(r, "MeshHealthCheck", "failTrafficOnPanic"),
    )
    .await;
    until(&lab, "traffic failing in panic", |seen| seen.keys().eq(["status 503"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tcp_probe_checks_the_answer_to_what_it_sends() {
    let lab = Lab::start_with(Extras { db: true, ..Extras::default() }).await;
    let tcp_policy = |receive: &str| {
        format!(
            "type: MeshHealthCheck\nmesh: lab\nname: probe-db\nspec:\n  to:\n  - targetRef: {{kind: MeshService, name: db}}\n    \
             default:\n      interval: 200ms\n      timeout: 1s\n      unhealthyThreshold: 1\n      healthyPanicThreshold: 0\n      \
             tcp:\n        send: ping\n        receive: [{receive}]\n"
        )
    };
    let echo = |port: u16| async move {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        tcp.write_all(b"hello").await.ok()?;
        let mut buf = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(2), tcp.read_exact(&mut buf)).await.ok()?.ok()?;
        Some(buf)
    };
    // Expecting what never comes back makes the one instance unhealthy: with no panic
    // threshold, nothing is left to connect to.
    lab.apply(&tcp_policy("pong"), &lab.client, |r| outbound_has(r, "MeshHealthCheck", "pong")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while echo(lab.db_outbound).await.is_some() {
        assert!(Instant::now() < deadline, "the db never became unhealthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The echo sends back what the probe sends, in the blocks expected: the instance is healthy
    // and stays so through many probes.
    lab.apply(&tcp_policy("pi, ng"), &lab.client, |r| outbound_has(r, "MeshHealthCheck", "\"ng\"")).await;
    for _ in 0..15 {
        assert_eq!(echo(lab.db_outbound).await, Some(*b"hello"), "a healthy db carries every connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_probe_asks_the_standard_health_service() {
    let lab = Lab::start_with(Extras { grpc: true, ..Extras::default() }).await;
    lab.apply(
        "type: MeshHealthCheck\nmesh: lab\nname: probe-grpc\nspec:\n  to:\n  - targetRef: {kind: MeshService, name: grpc}\n    \
         default:\n      interval: 200ms\n      timeout: 1s\n      unhealthyThreshold: 1\n      healthyPanicThreshold: 0\n      \
         grpc: {serviceName: ward.test}\n",
        &lab.client,
        |r| outbound_has(r, "MeshHealthCheck", "ward.test"),
    )
    .await;
    let reachable = || async {
        let url = format!("http://127.0.0.1:{}", lab.grpc_outbound);
        let Ok(channel) = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await else { return false };
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok()
    };
    let wait = |want: bool, what: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while reachable().await != want {
            assert!(Instant::now() < deadline, "{what} never happened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(reachable().await, "the service is reachable while it serves");
    let reporter = lab.grpc_health.as_ref().unwrap();
    reporter.set_service_status("ward.test", tonic_health::ServingStatus::NotServing).await;
    wait(false, "the instance leaving once its health service says NOT_SERVING").await;
    reporter.set_service_status("ward.test", tonic_health::ServingStatus::Serving).await;
    wait(true, "the instance coming back once it serves again").await;
}
