//! MeshRateLimit through real proxies: the callee's proxy refuses the requests over the rate
//! with the configured status and headers, closes the connections over the rate, and lets
//! traffic through again once the interval has passed.

mod common;

use std::time::{Duration, Instant};

use common::policy_lab::{Extras, Lab, inbound_has};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The statuses of `n` requests made one after the other, with the header `x-limited` of the
/// refused ones.
async fn statuses(lab: &Lab, http: &reqwest::Client, n: usize) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let response = http.get(lab.url("/")).send().await.unwrap();
        let limited = response.headers().get_all("x-limited").iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        out.push((response.status().as_u16(), limited.join(",")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_over_the_rate_are_refused_until_the_interval_passes() {
    let lab = Lab::start().await;
    let http = common::http_client();
    let policy = "type: MeshRateLimit\nmesh: lab\nname: web-rate\nspec:\n  targetRef: {kind: MeshService, name: web}\n  \
                  rules:\n  - default:\n      local:\n        http:\n          requestRate: {num: 5, interval: 3s}\n          \
                  onRateLimit:\n            status: 429\n            headers:\n              set: [{name: x-limited, value: 'yes'}]\n              \
                  add: [{name: x-limited, value: again}]\n";
    lab.apply(policy, &lab.web, |r| inbound_has(r, "MeshRateLimit", "requestRate")).await;

    let started = Instant::now();
    let got = statuses(&lab, &http, 8).await;
    assert!(started.elapsed() < Duration::from_secs(2), "all within one interval: {:?}", started.elapsed());
    let ok = got.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 5, "{got:?}");
    for (status, limited) in &got[5..] {
        assert_eq!((*status, limited.as_str()), (429, "yes,again"), "{got:?}");
    }
    let shown = lab.cp.ward(&["inspect", "dataplane", "web-1", "-m", "lab", "--rules"]).ok();
    assert!(shown.contains("MeshRateLimit (from web-rate)"), "{shown}");

    // The bucket is full again after the interval.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let got = statuses(&lab, &http, 6).await;
    let ok = got.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 5, "{got:?}");
    assert_eq!(got[5].0, 429, "{got:?}");

    // disabled: true lifts it.
    let policy = "type: MeshRateLimit\nmesh: lab\nname: web-rate\nspec:\n  targetRef: {kind: MeshService, name: web}\n  \
                  rules:\n  - default:\n      local:\n        http:\n          disabled: true\n          \
                  requestRate: {num: 5, interval: 3s}\n";
    lab.apply(policy, &lab.web, |r| inbound_has(r, "MeshRateLimit", "disabled")).await;
    let got = statuses(&lab, &http, 10).await;
    assert!(got.iter().all(|(s, _)| *s == 200), "{got:?}");
}

/// Whether a new TCP connection through the client's outbound to db echoes.
async fn echoes(port: u16) -> bool {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    if tcp.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut buf)).await, Ok(Ok(_))) && &buf == b"ping"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_over_the_rate_are_closed_until_the_interval_passes() {
    let lab = Lab::start_with(Extras { db: true, ..Extras::default() }).await;
    let db = lab.db.as_ref().expect("the lab runs db");
    assert!(echoes(lab.db_outbound).await, "db echoes without a policy");
    let policy = "type: MeshRateLimit\nmesh: lab\nname: db-rate\nspec:\n  targetRef: {kind: MeshService, name: db}\n  \
                  from:\n  - targetRef: {kind: Mesh}\n    default:\n      local:\n        \
                  tcp: {connectionRate: {num: 3, interval: 3s}}\n";
    lab.apply(policy, db, |r| inbound_has(r, "MeshRateLimit", "connectionRate")).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(echoes(lab.db_outbound).await);
    }
    assert_eq!(got, [true, true, true, false, false]);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(echoes(lab.db_outbound).await, "the bucket refilled");
}
