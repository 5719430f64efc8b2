//! Transparent proxying: what the iptables redirect adds to a call, against the explicit
//! outbound, in the same run. Two hosts (network namespaces): `server` runs the control plane,
//! the test server and its proxy; `client` has `ward install transparent-proxy` and a proxy
//! running as the proxy user, whose Dataplane has `transparentProxying` and an explicit
//! outbound for `server`. The load generator, in `client`, calls the same server through the
//! explicit outbound (127.0.0.1:PORT, which the rules leave alone) and by the server proxy's
//! own address (captured by the nat rules into the transparent outbound listener); both
//! paths then cross the same mTLS hop to the same inbound. Prints one JSON line per measurement.
//!
//! Needs root, iptables and iproute2 (it builds the hosts itself, and fails loudly without them).
//!
//! Usage: transparent WARD_BINARY BENCH_SERVER_BINARY [--quick]

use std::{os::unix::fs::PermissionsExt, path::PathBuf, process::Command, time::Duration};

use anyhow::Context;
use serde_json::json;
use ward_bench::{
    Cpus, Proc,
    control_plane::{ControlPlane, client_server_mesh, dataplane},
    emit, free_port,
    load::{Target, open_loop},
    quick, wait_for_port, ward_proxy,
};
use ward_testbed::{PROXY_UID, Testbed};

const MESH: &str = "bench";
/// The server proxy's inbound port, on the server host's address.
const INBOUND_PORT: u16 = 10001;
/// The client proxy's explicit outbound for `server`, on the client host's loopback.
const OUTBOUND_PORT: u16 = 10002;
/// The client's declared inbound: nobody calls it, and in transparent mode the proxy leaves
/// the port to the application.
const CLIENT_INBOUND_PORT: u16 = 10003;

/// Runs `future` to completion on a runtime built by the calling thread, whose threads (and so
/// every socket it opens) belong to that thread's network namespace.
fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime").block_on(future)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--quick").collect();
    let usage = "usage: transparent WARD_BINARY BENCH_SERVER_BINARY [--quick]";
    let ward = PathBuf::from(args.get(1).context(usage)?);
    let server_bin = PathBuf::from(args.get(2).context(usage)?);
    let (rates, run, warmup) = if quick() {
        (vec![200.0, 500.0], Duration::from_secs(2), Duration::from_millis(300))
    } else {
        (vec![1000.0, 5000.0], Duration::from_secs(10), Duration::from_secs(2))
    };
    let cpus = Cpus::from_env();
    // The client's proxy runs as another user and must read its files here.
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let root = dir.path();

    let testbed = Testbed::new("bench_transparent");
    let server = testbed.host("server");
    let client = testbed.host("client");
    let server_ip = server.addr();

    // The server host: control plane and test server on the generator's cores, proxy on the
    // cores under test.
    let (cp, _app, server_proxy, client_token) = server.in_netns(|| -> anyhow::Result<_> {
        let app = free_port()?;
        let app_proc =
            Proc::spawn_on(cpus.load.as_deref(), &server_bin, &[&app.to_string()], &[], &root.join("server.log"))?;
        wait_for_port(app, Duration::from_secs(10))?;
        let cp = ControlPlane::start_on(&ward, root, cpus.load.as_deref(), server_ip)?;
        let (server_token, client_token) = block_on(async {
            for resource in client_server_mesh(MESH) {
                cp.put(&resource).await?;
            }
            anyhow::Ok((
                cp.dataplane_token(MESH, "server-1", "server").await?,
                cp.dataplane_token(MESH, "client-1", "client").await?,
            ))
        })?;
        let server_dp = dataplane(MESH, "server-1", "server", &server_ip.to_string(), INBOUND_PORT, app, &[]);
        let proxy = ward_proxy::start(&ward, &cp, root, cpus.sut.as_deref(), None, &server_dp, &server_token)?;
        Ok((cp, app_proc, proxy, client_token))
    })?;

    // The client host: the rules, then its proxy as the user they leave alone.
    let install =
        client.exec(Command::new(&ward).args(["install", "transparent-proxy", "--proxy-uid", &PROXY_UID.to_string()]));
    anyhow::ensure!(
        install.status.success(),
        "ward install transparent-proxy: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let mut client_dp = dataplane(
        MESH,
        "client-1",
        "client",
        &client.addr().to_string(),
        CLIENT_INBOUND_PORT,
        CLIENT_INBOUND_PORT,
        &[("server", OUTBOUND_PORT)],
    );
    client_dp["networking"]["transparentProxying"] =
        json!({"redirectPortInbound": 15006, "redirectPortOutbound": 15001});

    let client_proxy = client.in_netns(|| {
        ward_proxy::start(&ward, &cp, root, cpus.sut.as_deref(), Some(PROXY_UID), &client_dp, &client_token)
    })?;
    let procs: [&Proc; 2] = [&client_proxy, &server_proxy];

    client
        .in_netns(|| {
            block_on(async {
                let paths = [
                    ("explicit", Target::plain(format!("http://127.0.0.1:{OUTBOUND_PORT}/"), false)?),
                    ("transparent", Target::plain(format!("http://{server_ip}:{INBOUND_PORT}/"), false)?),
                ];
                // Both paths must answer before anything is measured (the client's proxy learns the
                // server's endpoint from the control plane shortly after both are ready).
                for (path, target) in &paths {
                    let deadline = std::time::Instant::now() + Duration::from_secs(30);
                    while !target.once().await {
                        anyhow::ensure!(std::time::Instant::now() < deadline, "{path}: no 200 within 30s");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                // Each rate measures both paths back to back, so a change in the machine's load
                // between rates cannot favour one path.
                for &rate in &rates {
                    for (path, target) in &paths {
                        open_loop(target, rate, warmup).await;
                        let before: Vec<f64> = procs.iter().map(|p| p.cpu_seconds().unwrap_or(0.0)).collect();
                        let outcome = open_loop(target, rate, run).await;
                        let per_1000: Vec<f64> = procs
                            .iter()
                            .zip(&before)
                            .map(|(p, b)| (p.cpu_seconds().unwrap_or(0.0) - b) / (outcome.ok.max(1) as f64 / 1000.0))
                            .collect();
                        let mut row = outcome.json();
                        row["path"] = (*path).into();
                        row["rate"] = rate.into();
                        row["cpu_s_per_1000"] = json!(per_1000);
                        emit("transparent", row);
                    }
                }
                anyhow::Ok(())
            })
        })
        .with_context(|| format!("logs: {} and the control plane's {}", root.display(), cp.log().display()))
}
