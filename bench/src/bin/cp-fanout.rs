//! Control-plane fan-out: N simulated proxies (discovery streams from this one process,
//! 100 streams per HTTP/2 connection), each registering its own Dataplane with its own
//! token as a real proxy does. Measures the control plane's RSS per connected proxy and the
//! time from applying a MeshTrafficPermission to every proxy having received it.
//!
//! Usage: cp-fanout WARD_BINARY PROXIES [--quick]

use std::{
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use ward_bench::{
    Cpus,
    control_plane::{ControlPlane, dataplane},
    discovery, emit, histogram, percentiles_ms,
};
use ward_proto::discovery::control_message::Message;

const MESH: &str = "bench";
/// The permission whose arrival is timed.
const MARKER: &str = "fanout-allow";
const STREAMS_PER_CONNECTION: usize = 100;
const INSTANCES_PER_SERVICE: usize = 10;

/// What every simulated proxy reports into.
struct Board {
    configured: AtomicUsize,
    configs: AtomicU64,
    received: Vec<OnceLock<Instant>>,
}

fn simulated(i: usize, services: usize) -> serde_json::Value {
    let address = format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256);
    let outbound = format!("svc-{}", (i / INSTANCES_PER_SERVICE + 1) % services);
    dataplane(
        MESH,
        &format!("dp-{i}"),
        &format!("svc-{}", i / INSTANCES_PER_SERVICE % services),
        &address,
        8080,
        8080,
        &[(&outbound, 10001)],
    )
}

/// Waits until `check` holds, polling every 50 ms, up to `timeout`; whether it did.
async fn wait_until(timeout: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--quick").collect();
    let usage = "usage: cp-fanout WARD_BINARY PROXIES [--quick]";
    let ward = PathBuf::from(args.get(1).context(usage)?);
    let n: usize = args.get(2).context(usage)?.parse()?;
    let services = n.div_ceil(INSTANCES_PER_SERVICE).max(2);
    let cpus = Cpus::from_env();
    let dir = tempfile::tempdir()?;
    let cp = Arc::new(ControlPlane::start(&ward, dir.path(), cpus.sut.as_deref())?);
    cp.put(&json!({"type": "Mesh", "name": MESH})).await?;

    let started = Instant::now();
    let tokens: Vec<String> = futures_util::stream::iter(0..n)
        .map(|i| {
            let cp = cp.clone();
            async move {
                cp.dataplane_token(MESH, &format!("dp-{i}"), &format!("svc-{}", i / INSTANCES_PER_SERVICE % services))
                    .await
            }
        })
        .buffered(32)
        .try_collect()
        .await?;
    let token_seconds = started.elapsed().as_secs_f64();
    let baseline = cp.proc.rss_mib();

    let mut channels = Vec::new();
    for _ in 0..n.div_ceil(STREAMS_PER_CONNECTION) {
        channels.push(discovery::connect(&cp).await?);
    }
    let board = Arc::new(Board {
        configured: AtomicUsize::new(0),
        configs: AtomicU64::new(0),
        received: (0..n).map(|_| OnceLock::new()).collect(),
    });
    let started = Instant::now();
    let opened: Vec<discovery::Stream> = futures_util::stream::iter(tokens.into_iter().enumerate())
        .map(|(i, token)| {
            let channel = channels[i % channels.len()].clone();
            async move { discovery::open(channel, &token, &simulated(i, services)).await }
        })
        .buffered(64)
        .try_collect()
        .await?;
    let register_seconds = started.elapsed().as_secs_f64();
    for (i, mut stream) in opened.into_iter().enumerate() {
        let board = board.clone();
        tokio::spawn(async move {
            let _outbox = stream.outbox;
            let mut first = true;
            while let Ok(Some(message)) = stream.inbox.message().await {
                let Some(Message::Config(config)) = message.message else { continue };
                board.configs.fetch_add(1, Ordering::Relaxed);
                if first {
                    first = false;
                    board.configured.fetch_add(1, Ordering::Relaxed);
                }
                if config.permissions_json.iter().any(|p| p.contains(MARKER)) {
                    let _ = board.received[i].set(Instant::now());
                }
            }
        });
    }
    let all_configured = wait_until(Duration::from_secs(300), || board.configured.load(Ordering::Relaxed) == n).await;
    anyhow::ensure!(
        all_configured,
        "only {} of {n} proxies got a configuration",
        board.configured.load(Ordering::Relaxed)
    );
    let configured_seconds = started.elapsed().as_secs_f64();
    // Quiet: no configuration pushed for a second.
    let mut last = u64::MAX;
    while board.configs.load(Ordering::Relaxed) != last {
        last = board.configs.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let settle_seconds = started.elapsed().as_secs_f64();
    let configs_while_joining = board.configs.load(Ordering::Relaxed);
    let connected = cp.proc.rss_mib();

    let applied = Instant::now();
    cp.put(&json!({"type": "MeshTrafficPermission", "mesh": MESH, "name": MARKER, "spec": {
        "targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}))
        .await?;
    wait_until(Duration::from_secs(60), || board.received.iter().all(|r| r.get().is_some())).await;
    let mut latencies = histogram();
    for at in board.received.iter().filter_map(|r| r.get()) {
        latencies.saturating_record((at.duration_since(applied).as_micros() as u64).max(1));
    }
    let (p50, p99, _) = percentiles_ms(&latencies);
    let (_, peak) = cp.proc.rss_kib()?;
    emit(
        "cp-fanout",
        json!({
            "proxies": n, "services": services, "connections": channels.len(),
            "token_seconds": token_seconds, "register_seconds": register_seconds,
            "all_configured_seconds": configured_seconds, "settled_seconds": settle_seconds,
            "configs_while_joining": configs_while_joining,
            "rss_baseline_mib": baseline, "rss_connected_mib": connected, "peak_rss_mib": peak as f64 / 1024.0,
            "kib_per_proxy": (connected - baseline) * 1024.0 / n as f64,
            "updated": latencies.len(), "update_p50_ms": p50, "update_p99_ms": p99,
            "update_max_ms": latencies.max() as f64 / 1000.0,
            "cp_cpu_seconds": cp.proc.cpu_seconds()?,
        }),
    );
    Ok(())
}
