//! `ward demo`: the marketplace of DESIGN.md on this machine, no setup and no root: a control
//! plane, the three services each behind its own proxy, then a tour of who may call whom.

pub mod app;
mod ports;
mod processes;
mod tour;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use crate::{client::Client, settings::Connection};
use ports::{Ports, SERVICES};
use processes::Processes;

/// The example the demo runs.
const MARKETPLACE: &str = include_str!("../../../../examples/marketplace.yaml");
/// The marketplace's edge gateway.
const GATEWAY: &str = include_str!("../../../../examples/marketplace-gateway.yml");
/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The demo consumer's API key, as the gateway example defines it.
const DEMO_KEY: &str = "demo-key";

/// `ward demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run the tour once and exit 0 only when every row matched.
    #[arg(long)]
    check: bool,
    /// First of the ports the demo uses (the gateway's; every other port is an offset from it).
    #[arg(long, default_value_t = ports::DEFAULT_BASE)]
    port_base: u16,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let ports = Ports::new(args.port_base)?;
    ports.check_free()?;
    // From here on, Ctrl-C or SIGTERM stops every process the demo started, whenever it comes.
    let stop = crate::cp::shutdown_requested().context("listening for SIGINT and SIGTERM")?;
    tokio::pin!(stop);
    let dir = tempfile::Builder::new().prefix("ward-demo-").tempdir().context("creating a temporary directory")?;
    let mut processes = Processes::new(dir.path());
    let outcome = tokio::select! {
        outcome = start_and_tour(&mut processes, dir.path(), ports) => Some(outcome),
        () = &mut stop => None,
    };
    let Some(outcome) = outcome else {
        processes.stop();
        eprintln!("stopped before the tour was done; every process the demo started is stopped");
        return Ok(());
    };
    let all_matched = match outcome {
        Ok(all) => all,
        Err(e) => {
            processes.stop();
            let e = e.context(format!("the demo's logs are in {}", dir.path().display()));
            // With every child stopped, a port still in use was taken by something else meanwhile.
            return Err(match ports.first_busy() {
                Some(busy) => e.context(busy),
                None => e,
            });
        }
    };
    if args.check {
        processes.stop();
        if !all_matched {
            bail!("some rows did not match (logs: {})", dir.path().display());
        }
        println!("every row matched");
        return Ok(());
    }
    print_try_it(ports, dir.path());
    stop.await;
    eprintln!("stopping every process the demo started...");
    processes.stop();
    match ports.busy().as_slice() {
        [] => eprintln!("stopped; every port is free again"),
        busy => eprintln!("stopped; ports still in use (by something else?): {busy:?}"),
    }
    Ok(())
}

async fn start_and_tour(processes: &mut Processes, dir: &std::path::Path, ports: Ports) -> anyhow::Result<bool> {
    let resources = shifted_marketplace(ports)?;
    let api = format!("http://127.0.0.1:{}", ports.api());
    step(1, &format!("starting the control plane (API {api}, discovery 127.0.0.1:{})", ports.discovery()));
    let data = dir.join("cp-data");
    processes.spawn(
        "control-plane",
        &args(&[
            "cp",
            "run",
            "--data-dir",
            &data.display().to_string(),
            "--api-address",
            &format!("127.0.0.1:{}", ports.api()),
            "--dp-server-address",
            &format!("127.0.0.1:{}", ports.discovery()),
        ]),
    )?;
    let token = wait_for(processes, "the control plane's admin token", || {
        std::fs::read_to_string(data.join("admin-token")).ok()
    })
    .await?;
    let client = Client::new(Connection { address: api.clone(), token: Some(token.trim().to_string()) })?;
    wait_for_async(processes, "the control plane's API", || async { client.get_json("/").await.ok() }).await?;
    done("control plane is up");

    step(2, "applying the marketplace: a mesh with builtin mTLS, 3 dataplanes, 3 permissions");
    for resource in &resources {
        let path = crate::cli::resource_path(resource.meta.ty, &resource.meta.mesh, &resource.meta.name)?;
        client.send(reqwest::Method::PUT, &path, Some(&resource.to_json())).await?;
    }
    done("applied");

    step(3, "starting users, items and invoices (ward demo-app)");
    for (i, service) in SERVICES.iter().enumerate().map(|(i, s)| (i + 1, *s)) {
        let mut app = vec![
            "demo-app".to_string(),
            "--name".into(),
            service.into(),
            "--listen".into(),
            format!("127.0.0.1:{}", ports.app(i)),
        ];
        if service == "invoices" {
            app.extend(["--users-url".into(), format!("http://127.0.0.1:{}", ports.outbound(3, 1))]);
            app.extend(["--items-url".into(), format!("http://127.0.0.1:{}", ports.outbound(3, 2))]);
        }
        processes.spawn(service, &app)?;
    }
    done("started");

    step(4, "starting a proxy per service; each gets its certificate from the control plane");
    let ca = data.join("cp-ca.pem");
    for (i, service) in SERVICES.iter().enumerate().map(|(i, s)| (i + 1, *s)) {
        let name = format!("{service}-1");
        let dataplane = resources.iter().find(|r| r.meta.name == name).context("the example's dataplane")?;
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, dataplane.to_json().to_string())?;
        let body = serde_json::json!({ "mesh": "marketplace", "name": name, "tags": { "kuma.io/service": [service] }, "validFor": "24h" });
        let token = client.send(reqwest::Method::POST, "/tokens/dataplane", Some(&body)).await?.body;
        let token_file = dir.join(format!("{name}.token"));
        std::fs::write(&token_file, token.trim())?;
        processes.spawn(
            &format!("{service}-proxy"),
            &args(&[
                "--cp-address",
                &format!("https://127.0.0.1:{}", ports.discovery()),
                "dp",
                "run",
                "--ca-cert",
                &ca.display().to_string(),
                "--dataplane-file",
                &file.display().to_string(),
                "--dataplane-token-file",
                &token_file.display().to_string(),
                "--admin-address",
                &format!("127.0.0.1:{}", ports.proxy_admin(i)),
            ]),
        )?;
    }
    let http = reqwest::Client::builder().no_proxy().build()?;
    for (i, service) in SERVICES.iter().enumerate().map(|(i, s)| (i + 1, *s)) {
        let ready = format!("http://127.0.0.1:{}/ready", ports.proxy_admin(i));
        let what = format!("the {service} proxy to be ready");
        wait_for_async(processes, &what, || async { http.get(&ready).send().await.ok().filter(|r| r.status() == 200) })
            .await?;
        done(&format!("{service}: the proxy has its certificate (spiffe://marketplace/{service}) and listens"));
    }

    step(
        5,
        &format!(
            "starting the edge gateway on 127.0.0.1:{} (key-auth; it joins the mesh as edge-gateway)",
            ports.gateway()
        ),
    );
    let config = dir.join("gateway.yml");
    std::fs::write(&config, GATEWAY)?;
    let body = serde_json::json!({ "mesh": "marketplace", "name": "edge-gateway-1", "tags": { "kuma.io/service": ["edge-gateway"] }, "validFor": "24h" });
    let token = client.send(reqwest::Method::POST, "/tokens/dataplane", Some(&body)).await?.body;
    let token_file = dir.join("edge-gateway-1.token");
    std::fs::write(&token_file, token.trim())?;
    processes.spawn(
        "gateway",
        &args(&[
            "--cp-address",
            &format!("https://127.0.0.1:{}", ports.discovery()),
            "gateway",
            "run",
            "--config",
            &config.display().to_string(),
            "--proxy-listen",
            &format!("127.0.0.1:{}", ports.gateway()),
            "--proxy-ssl-listen",
            &format!("127.0.0.1:{}", ports.gateway_tls()),
            "--admin-listen",
            &format!("127.0.0.1:{}", ports.gateway_admin()),
            "--mesh",
            "marketplace",
            "--ca-cert",
            &ca.display().to_string(),
            "--dataplane-token-file",
            &token_file.display().to_string(),
        ]),
    )?;
    let ready = format!("http://127.0.0.1:{}/status/ready", ports.gateway_admin());
    wait_for_async(processes, "the gateway to join the mesh", || async {
        http.get(&ready).send().await.ok().filter(|r| r.status() == 200)
    })
    .await?;
    done("gateway: has its certificate (spiffe://marketplace/edge-gateway) and listens");

    step(
        6,
        "touring: through the gateway with and without the key, every service to every service, an outsider to each inbound",
    );
    let rows = tour::run(ports, Some(DEMO_KEY)).await;
    println!("\n{}", tour::table(&rows));
    Ok(rows.iter().all(tour::Row::matched))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn step(n: u32, what: &str) {
    eprintln!("[{n}/6] {what}");
}

fn done(what: &str) {
    eprintln!("      {what}");
}

/// The example's resources with every port moved by the demo's base.
fn shifted_marketplace(ports: Ports) -> anyhow::Result<Vec<ward_api::Resource>> {
    let mut resources = Vec::new();
    for (i, mut doc) in ward_api::parse::documents(MARKETPLACE)?.into_iter().enumerate() {
        if doc["type"] == "Dataplane" {
            shift_ports(&mut doc, ports.shift());
        }
        resources.push(ward_api::parse::resource(doc, &format!("document {}", i + 1))?);
    }
    resources.sort_by_key(|r| r.meta.ty);
    Ok(resources)
}

fn shift_ports(value: &mut Value, by: i32) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match (key.as_str(), v.as_i64()) {
                    ("port" | "servicePort", Some(p)) => *v = (p + i64::from(by)).into(),
                    _ => shift_ports(v, by),
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|v| shift_ports(v, by)),
        _ => {}
    }
}

/// Waits up to a minute for `probe` to give something, failing early when a process died.
async fn wait_for<T>(processes: &mut Processes, what: &str, probe: impl Fn() -> Option<T>) -> anyhow::Result<T> {
    wait_for_async(processes, what, || std::future::ready(probe())).await
}

async fn wait_for_async<T, F: Future<Output = Option<T>>>(
    processes: &mut Processes,
    what: &str,
    probe: impl Fn() -> F,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let mut said = false;
    loop {
        // A probe answered by something other than the demo's process may never finish.
        if let Ok(Some(found)) = tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
            return Ok(found);
        }
        processes.check_alive()?;
        if started.elapsed() > Duration::from_secs(60) {
            bail!("waited a minute for {what}");
        }
        if !said && started.elapsed() > Duration::from_secs(2) {
            done(&format!("waiting for {what}..."));
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What to try while the demo runs. The admin token is named by its file, never printed:
/// terminals are recorded, shared and scrolled back.
fn print_try_it(ports: Ports, dir: &std::path::Path) {
    let api = ports.api();
    let token_file = dir.join("cp-data/admin-token");
    println!(
        "The marketplace keeps running until Ctrl-C. Logs: {}\n\n\
         Try it:\n  \
         curl -s -H 'apikey: {key}' http://127.0.0.1:{gateway}/invoices/1   # through the gateway, into the mesh\n  \
         curl -s http://127.0.0.1:{gateway}/items                 # 401: no API key\n  \
         curl -s http://127.0.0.1:{users_inv}/invoices/1      # users -> invoices (allowed; invoices calls users and items)\n  \
         curl -s http://127.0.0.1:{users_items}/items            # users -> items: 403 RBAC: access denied\n  \
         curl -s http://127.0.0.1:{inv_items}/items            # invoices -> items (allowed)\n  \
         curl -s http://127.0.0.1:{admin}/metrics | grep ward_requests   # what items' proxy counted\n\n  \
         export WARD_CP_ADDRESS=http://127.0.0.1:{api} WARD_API_TOKEN=\"$(cat {token_file})\"\n  \
         ward get dataplanes -m marketplace\n  \
         ward inspect dataplane items-1 -m marketplace\n  \
         ward explain items-1 --caller users -m marketplace\n  \
         ward delete meshtrafficpermission items-callers -m marketplace   # then invoices and the gateway get 403 from items",
        dir.display(),
        key = DEMO_KEY,
        gateway = ports.gateway(),
        users_inv = ports.outbound(1, 3),
        users_items = ports.outbound(1, 2),
        inv_items = ports.outbound(3, 2),
        admin = ports.proxy_admin(2),
        token_file = token_file.display(),
    );
}
