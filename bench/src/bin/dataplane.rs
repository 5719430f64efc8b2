//! Data plane: client -> outbound proxy -> (mTLS) -> inbound proxy -> server, for Ward
//! (`ward dp run` twice, SVIDs from a real control plane, builtin mTLS, an allow
//! permission), two HAProxy processes as the same hop with SVIDs from the same CA, and the
//! client calling the server directly. Prints one JSON line per measurement.
//!
//! With `BENCH_WARD_BASELINE` naming an earlier `ward` binary, a second Ward pair runs that
//! binary (in a mesh of its own, same control plane) as the peer `ward-baseline`, so a change
//! is measured against what came before in the same run; after the fixed rates, before the
//! step searches, both pairs run the fixed rates again for a few rounds, taking turns to go
//! first, and the report compares their medians.
//!
//! Usage: dataplane WARD_BINARY BENCH_SERVER_BINARY [--quick]

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use serde_json::json;
use ward_bench::{
    Cpus, Proc,
    control_plane::{ControlPlane, client_server_mesh, dataplane},
    discovery::fetch_svid,
    emit, free_port, handshakes,
    load::{Target, max_rate, open_loop},
    peers::{HaproxyPorts, start_haproxy_pair},
    process::RssSampler,
    quick, wait_for_port, ward_proxy,
};

const MESH: &str = "bench";
/// The mesh of the baseline pair.
const BASELINE_MESH: &str = "bench-baseline";

/// How long each thing runs, and at which rates.
struct Plan {
    rates: Vec<f64>,
    run: Duration,
    warmup: Duration,
    search: Vec<f64>,
    step: Duration,
    handshakes: Duration,
    /// Rounds of Ward against the baseline after the main measurements.
    rounds: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                rates: vec![200.0, 500.0],
                run: Duration::from_secs(2),
                warmup: Duration::from_millis(300),
                search: vec![250.0, 500.0, 1000.0, 2000.0],
                step: Duration::from_secs(1),
                handshakes: Duration::from_secs(1),
                rounds: 1,
            }
        } else {
            Plan {
                rates: vec![1000.0, 5000.0],
                run: Duration::from_secs(10),
                warmup: Duration::from_secs(2),
                search: [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40].iter().map(|k| *k as f64 * 1000.0).collect(),
                step: Duration::from_secs(5),
                handshakes: Duration::from_secs(10),
                rounds: 3,
            }
        }
    }
}

/// One system between client and server: where the client connects, and its processes.
struct Peer<'a> {
    name: &'static str,
    h1_port: u16,
    h2c_port: u16,
    /// Outbound and inbound; none for the direct call.
    procs: Vec<&'a Proc>,
}

/// CPU seconds of each process.
fn cpu(procs: &[&Proc]) -> Vec<f64> {
    procs.iter().map(|p| p.cpu_seconds().unwrap_or(0.0)).collect()
}

/// The HTTP/1.1 and h2c targets of `peer`.
fn targets(peer: &Peer<'_>) -> anyhow::Result<[(&'static str, Target); 2]> {
    Ok([
        ("http1", Target::plain(format!("http://127.0.0.1:{}/", peer.h1_port), false)?),
        ("h2c", Target::plain(format!("http://127.0.0.1:{}/", peer.h2c_port), true)?),
    ])
}

/// One fixed rate through `peer` after a warm-up: latency, CPU and peak RSS of its processes.
async fn measure(peer: &Peer<'_>, protocol: &str, target: &Target, rate: f64, plan: &Plan) -> serde_json::Value {
    open_loop(target, rate, plan.warmup).await;
    let before = cpu(&peer.procs);
    let sampler = RssSampler::start(peer.procs.iter().map(|p| p.child.id()).collect());
    let outcome = open_loop(target, rate, plan.run).await;
    let rss = sampler.finish();
    let after = cpu(&peer.procs);
    let per_1000: Vec<f64> =
        before.iter().zip(&after).map(|(b, a)| (a - b) / (outcome.ok.max(1) as f64 / 1000.0)).collect();
    let mut row = outcome.json();
    row["peer"] = peer.name.into();
    row["protocol"] = protocol.into();
    row["rate"] = rate.into();
    row["cpu_s_per_1000"] = json!(per_1000);
    row["rss_load_mib"] = json!(rss);
    row
}

/// The fixed rates, lowest first and both protocols at each.
async fn measure_rates(peer: &Peer<'_>, plan: &Plan) -> anyhow::Result<()> {
    let targets = targets(peer)?;
    for &rate in &plan.rates {
        for (protocol, target) in &targets {
            let mut row = measure(peer, protocol, target, rate, plan).await;
            row["kind"] = "latency".into();
            emit("dataplane", row);
        }
    }
    Ok(())
}

/// The highest rate with p99 under 10 ms, for each protocol.
async fn search_rates(peer: &Peer<'_>, plan: &Plan) -> anyhow::Result<()> {
    for (protocol, target) in &targets(peer)? {
        let (best, steps) = max_rate(target, &plan.search, plan.step, 10.0).await;
        let last_tried = steps.last().map_or(0.0, |s| s.0);
        emit(
            "dataplane",
            json!({"kind": "max_rate", "peer": peer.name, "protocol": protocol, "max_rps": best,
            "ceiling": best >= last_tried && steps.len() == plan.search.len(), "steps": steps}),
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--quick").collect();
    let usage = "usage: dataplane WARD_BINARY BENCH_SERVER_BINARY [--quick]";
    let ward = PathBuf::from(args.get(1).context(usage)?);
    let server_bin = PathBuf::from(args.get(2).context(usage)?);
    let plan = Plan::new(quick());
    let cpus = Cpus::from_env();
    let dir = tempfile::tempdir()?;
    let root = dir.path();

    let app = free_port()?;
    let _server =
        Proc::spawn_on(cpus.load.as_deref(), &server_bin, &[&app.to_string()], &[], &root.join("server.log"))?;
    wait_for_port(app, Duration::from_secs(10))?;

    // The control plane idles during the measurements; it shares the load generator's cores.
    let cp = ControlPlane::start(&ward, root, cpus.load.as_deref())?;
    for resource in client_server_mesh(MESH) {
        cp.put(&resource).await?;
    }
    let client_svid = fetch_svid(&cp, MESH, "bench-client-svid", "client").await?;
    let server_svid = fetch_svid(&cp, MESH, "bench-server-svid", "server").await?;

    let sut = cpus.sut.as_deref();
    let (inbound, outbound, ward_in, ward_out) = start_pair(&ward, &cp, root, sut, MESH, "1", app).await?;
    let baseline = match std::env::var_os("BENCH_WARD_BASELINE").map(PathBuf::from) {
        Some(earlier) => {
            for resource in client_server_mesh(BASELINE_MESH) {
                cp.put(&resource).await?;
            }
            Some(start_pair(&earlier, &cp, root, sut, BASELINE_MESH, "b", app).await?)
        }
        None => None,
    };

    let ha = HaproxyPorts { out_h1: free_port()?, out_h2c: free_port()?, inbound: free_port()? };
    let (ha_out, ha_in) = start_haproxy_pair(root, sut, &client_svid, &server_svid, &ha, app)?;

    let mut peers = vec![
        Peer { name: "direct", h1_port: app, h2c_port: app, procs: vec![] },
        Peer { name: "ward", h1_port: ward_out, h2c_port: ward_out, procs: vec![&outbound, &inbound] },
    ];
    if let Some((inbound, outbound, _, port)) = &baseline {
        peers.push(Peer { name: "ward-baseline", h1_port: *port, h2c_port: *port, procs: vec![outbound, inbound] });
    }
    peers.push(Peer { name: "haproxy", h1_port: ha.out_h1, h2c_port: ha.out_h2c, procs: vec![&ha_out, &ha_in] });
    // Every path must answer before anything is measured (the outbound learns the inbound's
    // endpoint from the control plane shortly after both are ready).
    for peer in &peers {
        let target = Target::plain(format!("http://127.0.0.1:{}/", peer.h1_port), false)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !target.once().await {
            anyhow::ensure!(std::time::Instant::now() < deadline, "{}: no 200 through the path within 30s", peer.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for peer in &peers[1..] {
        emit(
            "dataplane",
            json!({"kind": "idle", "peer": peer.name, "rss_idle_mib": peer.procs.iter().map(|p| p.rss_mib()).collect::<Vec<_>>()}),
        );
    }
    // Fixed rates first, then the rounds against the baseline, then the step searches: the
    // searches' higher rates leave grown buffers and high-water marks behind, which would
    // inflate the RSS measured under a lower load.
    for peer in &peers {
        measure_rates(peer, &plan).await?;
    }
    if let Some(earlier) = peers.iter().find(|p| p.name == "ward-baseline") {
        versus_baseline([&peers[1], earlier], &plan).await?;
    }
    for peer in &peers {
        search_rates(peer, &plan).await?;
    }

    let config = handshakes::client_config(&client_svid)?;
    let mut inbounds = vec![("ward", ward_in, &inbound, config.clone())];
    if let Some((inbound, _, port, _)) = &baseline {
        // A client of the baseline's mesh, whose CA that inbound trusts.
        let svid = fetch_svid(&cp, BASELINE_MESH, "bench-client-svid-b", "client").await?;
        inbounds.push(("ward-baseline", *port, inbound, handshakes::client_config(&svid)?));
    }
    inbounds.push(("haproxy", ha.inbound, &ha_in, config));
    for (name, port, proc, config) in inbounds {
        let before = proc.cpu_seconds()?;
        let result = handshakes::handshake_loop(([127, 0, 0, 1], port).into(), config, 8, plan.handshakes).await;
        let used = proc.cpu_seconds()? - before;
        emit(
            "dataplane",
            json!({"kind": "handshakes", "peer": name, "ok": result.ok, "errors": result.errors,
            "per_second": result.ok as f64 / result.seconds, "inbound_cpu_s": used,
            "per_inbound_cpu_second": result.ok as f64 / used.max(0.01)}),
        );
    }
    Ok(())
}

/// More rounds of the fixed rates through Ward and the baseline, which take turns to go first,
/// so that a slow stretch of a busy machine falls on both: one sample each is noise.
async fn versus_baseline(pair: [&Peer<'_>; 2], plan: &Plan) -> anyhow::Result<()> {
    let targets = [targets(pair[0])?, targets(pair[1])?];
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            for &rate in &plan.rates {
                for (protocol, target) in &targets[i] {
                    let mut row = measure(pair[i], protocol, target, rate, plan).await;
                    row["kind"] = "versus_baseline".into();
                    row["round"] = round.into();
                    emit("dataplane", row);
                }
            }
        }
    }
    Ok(())
}

/// A Ward pair of `ward` in `mesh` (dataplanes `server-SUFFIX`, `client-SUFFIX`): the inbound
/// and outbound processes, the inbound's port and the outbound's.
async fn start_pair(
    ward: &std::path::Path,
    cp: &ControlPlane,
    root: &std::path::Path,
    sut: Option<&str>,
    mesh: &str,
    suffix: &str,
    app: u16,
) -> anyhow::Result<(Proc, Proc, u16, u16)> {
    let (ward_in, ward_out, ward_out_unused) = (free_port()?, free_port()?, free_port()?);
    let (server, client) = (format!("server-{suffix}"), format!("client-{suffix}"));
    let server_dp = dataplane(mesh, &server, "server", "127.0.0.1", ward_in, app, &[]);
    let client_dp =
        dataplane(mesh, &client, "client", "127.0.0.1", ward_out_unused, ward_out_unused, &[("server", ward_out)]);
    let inbound =
        ward_proxy::start(ward, cp, root, sut, None, &server_dp, &cp.dataplane_token(mesh, &server, "server").await?)?;
    let outbound =
        ward_proxy::start(ward, cp, root, sut, None, &client_dp, &cp.dataplane_token(mesh, &client, "client").await?)?;
    Ok((inbound, outbound, ward_in, ward_out))
}
