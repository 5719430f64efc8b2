//! Identity after the handshake: decisions on callers' tags are exact at the inbound, and open
//! connections and streams end as soon as their caller loses its permission, its token is
//! revoked, or its certificate expires; a refused proxy says why; a shortened certificate
//! lifetime applies at once.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use base64::Engine;
use common::{ControlPlane, apps, free_port, mesh::Proxy};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A mesh `m` with a `backend` proxy in front of an echo application, and the permissions `mtp`.
struct Mesh {
    cp: ControlPlane,
    backend: Proxy,
    _app: apps::App,
}

impl Mesh {
    async fn start(root: &Path, mesh_extra: &str, mtp: &str) -> Mesh {
        let cp = ControlPlane::start(root);
        cp.apply(&format!(
            "type: Mesh\nname: m\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n{mesh_extra}---\n{mtp}"
        ));
        let app = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "backend").await;
        let yaml = format!(
            "type: Dataplane\nmesh: m\nname: backend-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    servicePort: {}\n    tags: {{kuma.io/service: backend, kuma.io/protocol: http}}\n",
            free_port(),
            app.address.port()
        );
        let backend = cp.spawn_proxy(root, "backend-1", &yaml, &[]);
        tokio::task::block_in_place(|| backend.wait_ready());
        Mesh { cp, backend, _app: app }
    }

    /// A `web` proxy named `name` with `tags` and an outbound to backend; its outbound port.
    fn caller(&self, root: &Path, name: &str, tags: &str) -> (Proxy, u16) {
        let outbound = free_port();
        let yaml = format!(
            "type: Dataplane\nmesh: m\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    tags: {{kuma.io/service: web{tags}}}\n  outbound:\n  - port: {outbound}\n    tags: {{kuma.io/service: backend}}\n",
            free_port()
        );
        let proxy = self.cp.spawn_proxy(root, name, &yaml, &[]);
        tokio::task::block_in_place(|| proxy.wait_ready());
        (proxy, outbound)
    }
}

/// Allow `web` to reach backend, but deny its canary (Kuma's documented example).
const ALLOW_WEB_DENY_CANARY: &str = "type: MeshTrafficPermission\nmesh: m\nname: backend-callers\nspec:\n  targetRef: {kind: MeshService, name: backend}\n  from:\n  - targetRef: {kind: MeshService, name: web}\n    default: {action: Allow}\n  - targetRef: {kind: MeshSubset, tags: {kuma.io/service: web, version: canary}}\n    default: {action: Deny}\n";

const ALLOW_WEB: &str = "type: MeshTrafficPermission\nmesh: m\nname: backend-callers\nspec:\n  targetRef: {kind: MeshService, name: backend}\n  from:\n  - targetRef: {kind: MeshService, name: web}\n    default: {action: Allow}\n";

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn status(client: &reqwest::Client, port: u16) -> u16 {
    client.get(format!("http://127.0.0.1:{port}/")).send().await.map_or(0, |r| r.status().as_u16())
}

/// Polls `check` every 50 ms until it holds or `within` passes; how long it took.
async fn within(within: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The sum of a Prometheus counter's samples whose labels contain every one of `labels`.
fn counter(proxy: &Proxy, name: &str, labels: &[&str]) -> f64 {
    proxy
        .admin_get("/metrics")
        .1
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `jti` of the token a test proxy was started with.
fn token_id(root: &Path, name: &str) -> String {
    let token = std::fs::read_to_string(root.join(format!("{name}.token"))).unwrap();
    let payload = token.trim().split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["jti"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deny_on_a_canary_subset_holds_at_the_inbound() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), "", ALLOW_WEB_DENY_CANARY).await;
    let (_stable, stable_port) = mesh.caller(root.path(), "web-stable", ", version: stable");
    let (_canary, canary_port) = mesh.caller(root.path(), "web-canary", ", version: canary");
    let http = client();
    assert_eq!(status(&http, stable_port).await, 200, "web without the canary tag is allowed");
    assert_eq!(status(&http, canary_port).await, 403, "web's canary is denied: {}", mesh.backend.log());

    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "backend-1", "-m", "m", "--caller", "web"];
        args.extend(extra);
        mesh.cp.ward(&args).ok()
    };
    assert!(
        explain(&["--caller-dataplane", "web-canary"]).starts_with("Deny by MeshTrafficPermission/backend-callers")
    );
    assert!(
        explain(&["--caller-dataplane", "web-stable"]).starts_with("Allow by MeshTrafficPermission/backend-callers")
    );
    let unknown = explain(&[]);
    assert!(
        unknown.starts_with("Deny") && unknown.contains("depends on") && unknown.contains("canary"),
        "without the caller's dataplane the answer says it depends on its tags: {unknown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streaming_response_is_reset_when_its_permission_goes() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), "", ALLOW_WEB).await;
    let (_web, port) = mesh.caller(root.path(), "web-1", "");
    let mut response = reqwest::get(format!("http://127.0.0.1:{port}/stream")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.chunk().await.unwrap().is_some(), "the stream started");
    mesh.cp.ward(&["delete", "mtp", "backend-callers", "-m", "m"]).ok();
    let deleted = Instant::now();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), response.chunk()).await {
            Ok(Ok(Some(_))) if deleted.elapsed() < Duration::from_secs(10) => continue,
            other => break other,
        }
    };
    assert!(matches!(ended, Ok(Err(_))), "the stream was cut, not finished or still running: {ended:?}");
    assert!(
        deleted.elapsed() < Duration::from_secs(3),
        "the stream was cut {:?} after the permission went",
        deleted.elapsed()
    );
    let counted = within(Duration::from_secs(2), async || {
        counter(&mesh.backend, "ward_connections_cut_total", &["direction=\"inbound\"", "reason=\"permission\""]) >= 1.0
    });
    assert!(counted.await.is_some(), "the cut is counted with its reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_a_proxy_cuts_its_open_connections_at_its_peers() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), "", ALLOW_WEB).await;
    let (web, port) = mesh.caller(root.path(), "web-1", "");
    // One keep-alive connection from the application, one pooled HTTP/2 connection between the
    // proxies: both open before the revocation.
    let http = client();
    assert_eq!(status(&http, port).await, 200);
    let mut stream = http.get(format!("http://127.0.0.1:{port}/stream")).send().await.unwrap();
    assert!(stream.chunk().await.unwrap().is_some());

    mesh.cp.ward(&["revoke", "dataplane-token", &token_id(root.path(), "web-1")]).ok();
    let refused = within(Duration::from_secs(2), async || status(&http, port).await != 200).await;
    assert!(refused.is_some(), "web's requests still pass 2s after its revocation: {}", mesh.backend.log());
    assert!(
        matches!(tokio::time::timeout(Duration::from_secs(2), stream.chunk()).await, Ok(Err(_))),
        "the open stream was cut too"
    );
    let counted = within(Duration::from_secs(2), async || {
        counter(&mesh.backend, "ward_connections_cut_total", &["reason=\"revoked\""]) >= 1.0
    });
    assert!(counted.await.is_some(), "the cut is counted with its reason");
    let handshake_refused = within(Duration::from_secs(10), async || {
        status(&http, port).await != 200
            && counter(&mesh.backend, "ward_tls_handshake_failures_total", &["reason=\"revoked\""]) >= 1.0
    });
    assert!(
        handshake_refused.await.is_some(),
        "new handshakes of the revoked certificate are refused:\n{}\n{}",
        mesh.backend.admin_get("/metrics").1,
        web.log()
    );

    // The revoked proxy says why, and so does the control plane.
    let (ready, why) = web.admin_get("/ready");
    assert_eq!(ready, 503, "{why}");
    assert!(why.contains("refused") && why.contains("revoked"), "{why}");
    assert!(web.log().contains("ERROR") && web.log().contains("the control plane refused this proxy"), "{}", web.log());
    let inspect = mesh.cp.ward(&["inspect", "dataplane", "web-1", "-m", "m"]).ok();
    assert!(inspect.contains("refused") && inspect.contains("revoked"), "{inspect}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_an_instance_cuts_the_upgraded_connections_to_it() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), "", ALLOW_WEB).await;
    let (web, port) = mesh.caller(root.path(), "web-1", "");
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/socket")).await.unwrap();
    assert_eq!(response.status(), 101);
    socket.send(Message::text("before")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap().into_text().unwrap(), "before");

    // The instance called, not the caller, loses its trust: only the caller's outbound can tell.
    mesh.cp.ward(&["revoke", "dataplane-token", &token_id(root.path(), "backend-1")]).ok();
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match socket.next().await {
                Some(Ok(message)) if !message.is_close() => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the upgraded connection to the revoked instance is still open after 2s: {}", web.log());
    let counted = within(Duration::from_secs(2), async || {
        counter(&web, "ward_connections_cut_total", &["direction=\"outbound\"", "reason=\"revoked\""]) >= 1.0
    });
    assert!(counted.await.is_some(), "the cut is counted at the caller's outbound with its reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_whose_certificate_expires_is_cut_at_its_not_after() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), "    dpCert: {rotation: {expiration: 10s}}\n", ALLOW_WEB).await;
    let (web, port) = mesh.caller(root.path(), "web-1", "");
    let mut stream = reqwest::get(format!("http://127.0.0.1:{port}/stream")).await.unwrap();
    assert!(stream.chunk().await.unwrap().is_some());
    // Without its control plane the caller cannot renew: its certificate runs out in seconds.
    let not_after = web.config()["certificate"]["notAfter"].as_str().unwrap().to_string();
    let mut cp = mesh.cp;
    cp.kill();
    let not_after = chrono::DateTime::parse_from_rfc3339(&not_after).unwrap();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.chunk()).await {
            Ok(Ok(Some(_))) => continue,
            other => break other,
        }
    };
    let late = chrono::Utc::now().signed_duration_since(not_after);
    assert!(matches!(ended, Ok(Err(_))), "the stream was cut: {ended:?}");
    assert!(late < chrono::TimeDelta::seconds(3), "cut {late} after the caller's notAfter");
    let counted = within(Duration::from_secs(2), async || {
        counter(&mesh.backend, "ward_connections_cut_total", &["reason=\"expired\""]) >= 1.0
    });
    assert!(counted.await.is_some(), "the cut is counted with its reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shortened_certificate_lifetime_applies_at_once() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), "", ALLOW_WEB).await;
    let before = mesh.backend.serial().unwrap();
    let not_after = |p: &Proxy| {
        chrono::DateTime::parse_from_rfc3339(p.config()["certificate"]["notAfter"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    assert!(not_after(&mesh.backend) - chrono::Utc::now() > chrono::TimeDelta::hours(20), "the default is 24h");
    mesh.cp.apply("type: Mesh\nname: m\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n    dpCert: {rotation: {expiration: 1h}}\n");
    let renewed = within(Duration::from_secs(45), async || mesh.backend.serial().is_some_and(|s| s != before)).await;
    assert!(renewed.is_some(), "the proxy kept its 24h certificate: {}", mesh.backend.log());
    assert!(not_after(&mesh.backend) - chrono::Utc::now() <= chrono::TimeDelta::minutes(61));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mesh_constraints_refuse_dataplanes_at_apply_and_cut_off_connected_ones() {
    let root = tempfile::tempdir().unwrap();
    let mesh_yaml = |restricted: &str| {
        format!(
            "type: Mesh\nname: m\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n\
             constraints:\n  dataplaneProxy:\n    requirements:\n    - tags: {{kuma.io/service: '*', team: '*'}}\n    \
             - tags: {{kuma.io/service: backend}}\n    restrictions:\n    - tags: {{{restricted}}}\n"
        )
    };
    let first = mesh_yaml("version: legacy");
    let mesh = Mesh::start(root.path(), first.split_once("type: builtin\n").unwrap().1, ALLOW_WEB).await;

    let dataplane = |name: &str, tags: &str| {
        format!(
            "type: Dataplane\nmesh: m\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
             tags: {{kuma.io/service: web{tags}}}\n",
            free_port()
        )
    };
    for (tags, field, reason) in [
        ("", "networking.inbound[0].tags", "fulfil none of the constraints.dataplaneProxy.requirements of Mesh \"m\""),
        (
            ", team: a, version: legacy",
            "networking.inbound[0].tags",
            "match constraints.dataplaneProxy.restrictions[0]",
        ),
    ] {
        let refused = mesh.cp.ward_stdin(&["apply", "-f", "-"], &dataplane("web-x", tags)).fails();
        assert!(refused.contains(field) && refused.contains(reason), "web{tags}: {refused}");
    }
    assert!(mesh.cp.ward(&["get", "dataplanes", "-m", "m"]).ok().lines().all(|l| !l.contains("web-x")));

    let (web, port) = mesh.caller(root.path(), "web-1", ", team: a");
    let http = client();
    assert_eq!(status(&http, port).await, 200, "a member reaches backend");

    // Restricting team a cuts web-1 off: the apply says so, backend refuses its certificate,
    // its stream ends, and it says why.
    let applied = mesh.cp.ward_stdin(&["apply", "-f", "-"], &mesh_yaml("team: a"));
    let warning = applied.stderr();
    assert!(
        warning.contains("warning: Mesh/m: constraints.dataplaneProxy: 1 existing dataplane(s)")
            && warning.contains("web-1"),
        "{warning}"
    );
    applied.ok();
    let cut = within(Duration::from_secs(5), async || status(&http, port).await != 200).await;
    assert!(cut.is_some(), "web-1 still reaches backend 5s after it left the mesh: {}", mesh.backend.log());
    let said = within(Duration::from_secs(5), async || {
        let (ready, why) = web.admin_get("/ready");
        ready == 503 && why.contains("not a member of mesh m")
    });
    assert!(said.await.is_some(), "{:?}\n{}", web.admin_get("/ready"), web.log());
    let inspect = mesh.cp.ward(&["inspect", "dataplane", "web-1", "-m", "m"]).ok();
    assert!(inspect.contains("refused") && inspect.contains("restrictions[0]"), "{inspect}");
}
