//! SVID issuance: N simulated proxies (discovery streams from this one process) are connected
//! to a mesh with builtin mTLS, then all send a CSR at the same moment, as after a mass
//! renewal. Measures each request's latency (CSR sent to certificate received, p50/p99), the
//! overall SVIDs per second, and SVIDs per CPU-second of the control plane (per core).
//!
//! Usage: cp-svids WARD_BINARY PROXIES [--quick]

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use ward_bench::{
    Cpus,
    control_plane::{ControlPlane, dataplane},
    discovery, emit, histogram, percentiles_ms,
};
use ward_proto::discovery::{CertificateRequest, ProxyMessage, control_message::Message, proxy_message};

const MESH: &str = "bench";
const SERVICES: usize = 10;
const STREAMS_PER_CONNECTION: usize = 100;

/// A CSR for `service`'s SPIFFE ID with a fresh P-256 key, as a proxy makes it.
fn csr(service: &str) -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(format!("spiffe://{MESH}/{service}").try_into()?)];
    Ok(params.serialize_request(&key)?.pem()?)
}

/// Reads the stream until a certificate (or a refusal) arrives.
async fn certificate(stream: &mut discovery::Stream) -> anyhow::Result<()> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(120), stream.inbox.message())
            .await
            .context("no certificate within 120s")??
            .context("the stream ended")?;
        match message.message {
            Some(Message::Certificate(_)) => return Ok(()),
            Some(Message::CertificateRefused(r)) => bail!("certificate refused: {}", r.reason),
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--quick").collect();
    let usage = "usage: cp-svids WARD_BINARY PROXIES [--quick]";
    let ward = PathBuf::from(args.get(1).context(usage)?);
    let n: usize = args.get(2).context(usage)?.parse()?;
    let cpus = Cpus::from_env();
    let dir = tempfile::tempdir()?;
    let cp = Arc::new(ControlPlane::start(&ward, dir.path(), cpus.sut.as_deref())?);
    cp.put(&json!({"type": "Mesh", "name": MESH, "mtls": {"enabledBackend": "ca-1",
        "backends": [{"name": "ca-1", "type": "builtin"}]}}))
        .await?;
    let service = |i: usize| format!("svc-{}", i % SERVICES);

    let tokens: Vec<String> = futures_util::stream::iter(0..n)
        .map(|i| {
            let cp = cp.clone();
            async move { cp.dataplane_token(MESH, &format!("dp-{i}"), &service(i)).await }
        })
        .buffered(32)
        .try_collect()
        .await?;
    let mut channels = Vec::new();
    for _ in 0..n.div_ceil(STREAMS_PER_CONNECTION) {
        channels.push(discovery::connect(&cp).await?);
    }
    let streams: Vec<discovery::Stream> = futures_util::stream::iter(tokens.into_iter().enumerate())
        .map(|(i, token)| {
            let channel = channels[i % channels.len()].clone();
            let address = format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256);
            let dp = dataplane(MESH, &format!("dp-{i}"), &service(i), &address, 8080, 8080, &[]);
            async move { discovery::open(channel, &token, &dp).await }
        })
        .buffered(64)
        .try_collect()
        .await?;
    // The CSRs are made beforehand: key generation is the proxies' cost, not the control plane's.
    let csrs: Vec<String> = (0..n).map(|i| csr(&service(i))).collect::<Result<_, _>>()?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let cpu_before = cp.proc.cpu_seconds()?;
    let started = Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .zip(csrs)
        .map(|(mut stream, csr_pem)| {
            tokio::spawn(async move {
                let sent = Instant::now();
                let request = CertificateRequest { csr_pem, service: String::new() };
                let message = ProxyMessage { message: Some(proxy_message::Message::CertificateRequest(request)) };
                stream.outbox.send(message).await?;
                certificate(&mut stream).await?;
                Ok::<_, anyhow::Error>(sent.elapsed())
            })
        })
        .collect();
    let mut latencies = histogram();
    for task in tasks {
        latencies.saturating_record((task.await??.as_micros() as u64).max(1));
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cp.proc.cpu_seconds()? - cpu_before;
    let (p50, p99, _) = percentiles_ms(&latencies);
    emit(
        "cp-svids",
        json!({
            "proxies": n, "seconds": seconds, "svids_per_second": n as f64 / seconds,
            "cp_cpu_seconds": cpu, "svids_per_cpu_second": n as f64 / cpu.max(0.01),
            "p50_ms": p50, "p99_ms": p99, "max_ms": latencies.max() as f64 / 1000.0,
        }),
    );
    Ok(())
}
