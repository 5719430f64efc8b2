//! Control-plane writes: N Dataplanes and N MeshTrafficPermissions PUT concurrently
//! through the REST API. Prints one JSON line: writes/s, latency percentiles, RSS.
//!
//! Usage: cp-writes WARD_BINARY [COUNT_PER_TYPE] [CONCURRENCY]

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::sync::Mutex;
use ward_bench::{Proc, free_port, histogram, percentiles_ms, wait_for_file};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let ward = PathBuf::from(args.get(1).context("usage: cp-writes WARD_BINARY [COUNT] [CONCURRENCY]")?);
    let count: usize = args.get(2).map_or(Ok(10_000), |a| a.parse())?;
    let concurrency: usize = args.get(3).map_or(Ok(32), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let data = dir.path().join("data");
    let cp = Proc::spawn(
        &ward,
        &[
            "cp",
            "run",
            "--data-dir",
            data.to_str().unwrap(),
            "--api-address",
            &format!("127.0.0.1:{port}"),
            "--dp-server-address",
            &format!("127.0.0.1:{}", free_port()?),
        ],
        &dir.path().join("cp.log"),
    )?;
    wait_for_file(&data.join("admin-token"), Duration::from_secs(20))?;
    let token = std::fs::read_to_string(data.join("admin-token"))?.trim().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(concurrency).build()?;
    let put = move |path: String, body: serde_json::Value| {
        let (client, token, base) = (client.clone(), token.clone(), base.clone());
        async move {
            let response = client.put(format!("{base}{path}")).bearer_auth(token).json(&body).send().await?;
            if !response.status().is_success() {
                bail!("PUT {path}: {} {}", response.status(), response.text().await.unwrap_or_default());
            }
            anyhow::Ok(())
        }
    };
    for _ in 0..100 {
        if put("/meshes/bench".into(), json!({"type": "Mesh", "name": "bench"})).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let jobs: Vec<(String, serde_json::Value)> = (0..count)
        .flat_map(|i| {
            let dp = json!({"type": "Dataplane", "mesh": "bench", "name": format!("dp-{i}"), "networking": {
                "address": format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256),
                "inbound": [{"port": 8080, "tags": {"kuma.io/service": format!("svc-{}", i % 500), "kuma.io/protocol": "http"}}]}});
            let mtp = json!({"type": "MeshTrafficPermission", "mesh": "bench", "name": format!("mtp-{i}"), "spec": {
                "targetRef": {"kind": "MeshService", "name": format!("svc-{}", i % 500)},
                "from": [{"targetRef": {"kind": "MeshService", "name": format!("svc-{}", (i + 1) % 500)}, "default": {"action": "Allow"}}]}});
            [(format!("/meshes/bench/dataplanes/dp-{i}"), dp), (format!("/meshes/bench/meshtrafficpermissions/mtp-{i}"), mtp)]
        })
        .collect();
    let total = jobs.len();
    let queue = Arc::new(Mutex::new(jobs));
    let latencies = Arc::new(Mutex::new(histogram()));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (queue, latencies, put) = (queue.clone(), latencies.clone(), put.clone());
            tokio::spawn(async move {
                loop {
                    let Some((path, body)) = queue.lock().await.pop() else { return anyhow::Ok(()) };
                    let sent = Instant::now();
                    put(path, body).await?;
                    latencies.lock().await.record(sent.elapsed().as_micros() as u64)?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (rss, peak) = cp.rss_kib()?;
    let (p50, p99, p999) = percentiles_ms(&*latencies.lock().await);
    println!(
        "{}",
        json!({
            "writes": total, "concurrency": concurrency, "seconds": elapsed,
            "writes_per_second": total as f64 / elapsed,
            "p50_ms": p50, "p99_ms": p99, "p999_ms": p999,
            "rss_mib": rss as f64 / 1024.0, "peak_rss_mib": peak as f64 / 1024.0,
            "cpu_seconds": cp.cpu_seconds()?,
        })
    );
    Ok(())
}
