//! MeshTimeout through two real proxies: a hung call becomes a 504 at the caller's proxy
//! (`to[]`) or at the callee's (`rules[]`), a stalled or endless stream is cut, an idle
//! keep-alive connection is closed; and `ward inspect dataplane --rules` shows what applies and
//! where it came from.

mod common;

use std::time::{Duration, Instant};

use common::policy_lab::{Lab, inbound_has, outbound_has};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_timeout_on_the_callers_side_turns_a_hung_call_into_a_504() {
    let lab = Lab::start().await;
    let http = common::http_client();
    let policy = "type: MeshTimeout\nmesh: lab\nname: web-calls\nspec:\n  targetRef: {kind: MeshService, name: client}\n  \
                  to:\n  - targetRef: {kind: MeshService, name: web}\n    default: {http: {requestTimeout: 1s}}\n";
    lab.apply(policy, &lab.client, |r| outbound_has(r, "MeshTimeout", "requestTimeout")).await;

    let started = Instant::now();
    let hung = http.get(lab.url("/slow?ms=8000")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(hung.status(), 504);
    assert_eq!(hung.text().await.unwrap(), "upstream request timeout\n");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(6), "answered after {took:?}");
    let quick = http.get(lab.url("/slow?ms=50")).send().await.unwrap();
    assert_eq!(quick.status(), 200, "a call within the timeout passes");

    // What applies, and from which policy, as the operator sees it.
    let shown = lab.cp.ward(&["inspect", "dataplane", "client-1", "-m", "lab", "--rules"]).ok();
    assert!(shown.contains("outbound Service web"), "{shown}");
    assert!(shown.contains("MeshTimeout (from web-calls)"), "{shown}");
    assert!(shown.contains("\"requestTimeout\": \"1s\""), "{shown}");
    let web_rules = lab.cp.ward(&["inspect", "dataplane", "web-1", "-m", "lab", "--rules"]).ok();
    assert!(!web_rules.contains("MeshTimeout"), "the policy selects the client only: {web_rules}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_inbound_rule_times_out_at_the_callees_proxy() {
    let lab = Lab::start().await;
    let policy = "type: MeshTimeout\nmesh: lab\nname: web-inbound\nspec:\n  targetRef: {kind: Dataplane, name: web-1}\n  \
                  rules:\n  - default: {http: {requestTimeout: 1s}}\n";
    lab.apply(policy, &lab.web, |r| inbound_has(r, "MeshTimeout", "requestTimeout")).await;
    let started = Instant::now();
    let hung = common::http_client().get(lab.url("/slow?ms=8000")).send().await.unwrap();
    assert_eq!(hung.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(6), "answered after {:?}", started.elapsed());
    let log = tokio::task::block_in_place(|| lab.web.log());
    assert!(log.contains("request ended by a MeshTimeout"), "the callee's proxy ended it: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_stream_and_an_endless_one_are_cut() {
    let lab = Lab::start().await;
    let http = common::http_client();
    // /stream sends a line a second: a stream idle limit under that cuts it at the first gap.
    let policy = "type: MeshTimeout\nmesh: lab\nname: streams\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    \
                  default: {http: {streamIdleTimeout: 300ms}}\n";
    lab.apply(policy, &lab.client, |r| outbound_has(r, "MeshTimeout", "streamIdleTimeout")).await;
    let started = Instant::now();
    let response = http.get(lab.url("/stream")).send().await.unwrap();
    assert!(response.bytes().await.is_err(), "the stream ends in an error, not a complete body");
    assert!(started.elapsed() < Duration::from_secs(10), "cut after {:?}", started.elapsed());

    // A maximum duration cuts a stream that never stalls.
    let policy = "type: MeshTimeout\nmesh: lab\nname: streams\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    \
                  default: {http: {maxStreamDuration: 3s}}\n";
    lab.apply(policy, &lab.client, |r| outbound_has(r, "MeshTimeout", "maxStreamDuration")).await;
    let started = Instant::now();
    let response = http.get(lab.url("/stream")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err(), "the stream ends in an error at its maximum duration");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2500) && took < Duration::from_secs(15), "cut after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let lab = Lab::start().await;
    let policy = "type: MeshTimeout\nmesh: lab\nname: idle\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    \
                  default: {idleTimeout: 1s}\n";
    lab.apply(policy, &lab.client, |r| outbound_has(r, "MeshTimeout", "idleTimeout")).await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", lab.outbound)).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    // Drain what is left of the answer; the connection then stays open until the limit.
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the proxy closed the idle connection");
    assert!(started.elapsed() >= Duration::from_millis(700), "closed only once idle: {:?}", started.elapsed());
}
