//! Gateway: HTTPS client -> edge gateway -> server, for Ward's gateway with no plugins and
//! with key-auth + rate-limiting (local policy, a limit never reached), against nginx as a
//! plain TLS reverse proxy. Each gateway runs alone on the cores under test. Prints one JSON
//! line per gateway: closed-loop throughput at saturation and per CPU-second of the gateway,
//! and latency at a fixed rate.
//!
//! Usage: gateway WARD_BINARY BENCH_SERVER_BINARY [--quick]

use std::{path::Path, time::Duration};

use anyhow::Context;
use serde_json::json;
use ward_bench::{
    Cpus, Proc, emit, free_port,
    load::{Target, closed_loop, open_loop},
    peers::start_nginx,
    pki::{ServerCert, server_cert},
    quick, wait_for_port,
};

const HOST: &str = "bench.test";
const KEY: &str = "bench-key";

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

/// Kong declarative configuration: one service and route to the server, the certificate, and
/// with `plugins` key-auth and rate-limiting on the route plus a consumer holding [`KEY`].
fn ward_config(cert: &ServerCert, app: u16, plugins: bool) -> String {
    let mut config = format!(
        "_format_version: \"3.0\"\ncertificates:\n- cert: |\n{}  key: |\n{}  snis: [{HOST}]\nservices:\n- name: app\n  url: http://127.0.0.1:{app}\n  routes:\n  - name: all\n    paths: [/]\n",
        indent(&cert.cert_pem),
        indent(&cert.key_pem)
    );
    if plugins {
        config += "    plugins:\n    - name: key-auth\n    - name: rate-limiting\n      config: {second: 1000000, policy: local}\n";
        config += &format!("consumers:\n- username: bench\n  keyauth_credentials:\n  - key: {KEY}\n");
    }
    config
}

fn start_ward_gateway(ward: &Path, dir: &Path, cpus: Option<&str>, config: &str, port: u16) -> anyhow::Result<Proc> {
    let file = dir.join("kong.yml");
    std::fs::write(&file, config)?;
    let (plain, admin) = (free_port()?, free_port()?);
    let args = [
        "gateway",
        "run",
        "--config",
        file.to_str().context("path")?,
        "--proxy-listen",
        &format!("127.0.0.1:{plain}"),
        "--proxy-ssl-listen",
        &format!("127.0.0.1:{port}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
    ];
    let log = dir.join(format!("gateway-{port}.log"));
    let mut proc = Proc::spawn_on(cpus, ward, &args, &[("WARD_LOG", "warn")], &log)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        proc.check_alive(&log)?;
        anyhow::ensure!(std::time::Instant::now() < deadline, "gateway not listening after 30s: see {}", log.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(proc)
}

/// An HTTPS/1.1 keep-alive client trusting `ca` that reaches [`HOST`] at 127.0.0.1:`port`.
fn https_target(ca: &str, port: u16, key: bool) -> anyhow::Result<Target> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(10))
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes())?])
        .resolve(HOST, ([127, 0, 0, 1], port).into())
        .build()?;
    let headers = if key { vec![("apikey", KEY.to_string())] } else { vec![] };
    Ok(Target { client, url: format!("https://{HOST}:{port}/"), headers })
}

async fn measure(name: &str, proc: &Proc, target: &Target, quick: bool) -> anyhow::Result<()> {
    let (run, rate, concurrency) =
        if quick { (Duration::from_secs(2), 300.0, 16) } else { (Duration::from_secs(15), 2000.0, 64) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !target.once().await {
        anyhow::ensure!(std::time::Instant::now() < deadline, "{name}: no 200 within 20s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    closed_loop(target, concurrency, run / 4).await;
    let before = proc.cpu_seconds()?;
    let saturated = closed_loop(target, concurrency, run).await;
    let used = proc.cpu_seconds()? - before;
    let fixed = open_loop(target, rate, run).await;
    let (rss, peak) = proc.rss_kib()?;
    emit(
        "gateway",
        json!({
            "peer": name, "concurrency": concurrency,
            "saturated_rps": saturated.rate(), "saturated_errors": saturated.errors, "gateway_cpu_s": used,
            "rps_per_core": saturated.ok as f64 / used.max(0.01),
            "rate": rate, "fixed": fixed.json(), "rss_mib": rss as f64 / 1024.0, "peak_rss_mib": peak as f64 / 1024.0,
        }),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--quick").collect();
    let usage = "usage: gateway WARD_BINARY BENCH_SERVER_BINARY [--quick]";
    let ward = std::path::PathBuf::from(args.get(1).context(usage)?);
    let server_bin = std::path::PathBuf::from(args.get(2).context(usage)?);
    let quick = quick();
    let cpus = Cpus::from_env();
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let app = free_port()?;
    let _server =
        Proc::spawn_on(cpus.load.as_deref(), &server_bin, &[&app.to_string()], &[], &root.join("server.log"))?;
    wait_for_port(app, Duration::from_secs(10))?;
    let cert = server_cert(root, HOST)?;
    let sut = cpus.sut.as_deref();

    for (name, plugins) in [("ward", false), ("ward+key-auth+rate-limiting", true)] {
        let port = free_port()?;
        let gateway = start_ward_gateway(&ward, root, sut, &ward_config(&cert, app, plugins), port)?;
        measure(name, &gateway, &https_target(&cert.ca_pem, port, plugins)?, quick).await?;
    }
    let port = free_port()?;
    let nginx = start_nginx(root, sut, &cert, port, app)?;
    measure("nginx", &nginx, &https_target(&cert.ca_pem, port, false)?, quick).await?;
    Ok(())
}
