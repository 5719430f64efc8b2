//! MeshRateLimit through real proxies: the callee's proxy refuses the requests over the rate
//! with the configured status and headers, closes the connections over the rate, and lets
//! traffic through again once the interval has passed.

mod common;

use std::time::{Duration, Instant};

use common::{ControlPlane, apps, free_port, mesh::Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MESH: &str = "type: Mesh\nname: lab\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n---\ntype: MeshTrafficPermission\nmesh: lab\nname: client-calls-web\nspec:\n  targetRef: {kind: Mesh}\n  from:\n  - targetRef: {kind: MeshService, name: client}\n    default: {action: Allow}\n";

/// A control plane, the `web` echo application behind its proxy, a `db` TCP echo behind its proxy,
/// and a `client` proxy with outbounds to both.
struct Lab {
    _root: tempfile::TempDir,
    cp: ControlPlane,
    _app: apps::App,
    _db_app: apps::App,
    web: Proxy,
    db: Proxy,
    _client: Proxy,
    outbound: u16,
    db_outbound: u16,
}

impl Lab {
    async fn start() -> Lab {
        let root = tempfile::tempdir().unwrap();
        let cp = ControlPlane::start(root.path());
        cp.apply(MESH);
        let app = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "web").await;
        let web_yaml = format!(
            "type: Dataplane\nmesh: lab\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
             servicePort: {}\n    tags: {{kuma.io/service: web, kuma.io/protocol: http}}\n",
            free_port(),
            app.address.port()
        );
        let db_app = apps::tcp_echo(([127, 0, 0, 1], free_port()).into()).await;
        let db_yaml = format!(
            "type: Dataplane\nmesh: lab\nname: db-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
             servicePort: {}\n    tags: {{kuma.io/service: db, kuma.io/protocol: tcp}}\n",
            free_port(),
            db_app.address.port()
        );
        let (outbound, db_outbound) = (free_port(), free_port());
        let client_yaml = format!(
            "type: Dataplane\nmesh: lab\nname: client-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
             tags: {{kuma.io/service: client}}\n  outbound:\n  - port: {outbound}\n    tags: {{kuma.io/service: web}}\n  \
             - port: {db_outbound}\n    tags: {{kuma.io/service: db}}\n",
            free_port()
        );
        let web = cp.spawn_proxy(root.path(), "web-1", &web_yaml, &[]);
        let db = cp.spawn_proxy(root.path(), "db-1", &db_yaml, &[]);
        let client = cp.spawn_proxy(root.path(), "client-1", &client_yaml, &[]);
        tokio::task::block_in_place(|| {
            web.wait_ready();
            db.wait_ready();
            client.wait_ready();
        });
        Lab { _root: root, cp, _app: app, _db_app: db_app, web, db, _client: client, outbound, db_outbound }
    }

    /// Applies `policy` and waits until `proxy` runs with a configuration where `seen` holds.
    async fn apply(&self, policy: &str, proxy: &Proxy, seen: impl Fn(&serde_json::Value) -> bool) {
        self.cp.apply(policy);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let config = tokio::task::block_in_place(|| proxy.config());
            if seen(&config["config"]["rules"]) {
                return;
            }
            assert!(Instant::now() < deadline, "the proxy never received the policy: {}", config["config"]["rules"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.outbound)
    }
}

/// Whether inbound 0 of the rules has a MeshRateLimit mentioning `text`.
fn inbound_has(rules: &serde_json::Value, text: &str) -> bool {
    rules["inbounds"][0]["policies"]["MeshRateLimit"]["conf"].to_string().contains(text)
}

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
    lab.apply(policy, &lab.web, |r| inbound_has(r, "requestRate")).await;

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
    lab.apply(policy, &lab.web, |r| inbound_has(r, "disabled")).await;
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
    let lab = Lab::start().await;
    assert!(echoes(lab.db_outbound).await, "db echoes without a policy");
    let policy = "type: MeshRateLimit\nmesh: lab\nname: db-rate\nspec:\n  targetRef: {kind: MeshService, name: db}\n  \
                  from:\n  - targetRef: {kind: Mesh}\n    default:\n      local:\n        \
                  tcp: {connectionRate: {num: 3, interval: 3s}}\n";
    lab.apply(policy, &lab.db, |r| inbound_has(r, "connectionRate")).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(echoes(lab.db_outbound).await);
    }
    assert_eq!(got, [true, true, true, false, false]);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(echoes(lab.db_outbound).await, "the bucket refilled");
}
