//! `ward dp run`: the data-plane proxy next to one service instance.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Subcommand;
use ward_api::duration::KumaDuration;
use ward_http::Limits;
use ward_proxy::ProxyOptions;

/// `ward dp ...`.
#[derive(Debug, Subcommand)]
pub enum DpCommand {
    /// Run the proxy of one service instance (the discovery server's address comes from --cp-address, https://HOST:5678).
    Run {
        /// The control plane's CA certificate (its <data-dir>/cp-ca.pem), to authenticate the discovery server.
        #[arg(long)]
        ca_cert: PathBuf,
        /// The Dataplane resource (YAML or JSON), with {{ var }} templates.
        #[arg(long)]
        dataplane_file: PathBuf,
        /// File holding the dataplane token (`ward generate dataplane-token`).
        #[arg(long)]
        dataplane_token_file: PathBuf,
        /// A template value for the dataplane file, `name=value` (repeatable).
        #[arg(long = "dataplane-var")]
        dataplane_vars: Vec<String>,
        /// Address of /ready, /metrics and /config (default: 127.0.0.1 and the Dataplane's
        /// networking.admin.port, else 127.0.0.1:9901).
        #[arg(long)]
        admin_address: Option<SocketAddr>,
        /// How long in-flight requests may take to finish after SIGTERM or SIGINT.
        #[arg(long, visible_alias = "shutdown-grace", default_value = "30s", value_parser = duration)]
        drain_timeout: KumaDuration,
        /// Largest request head accepted, bytes (larger: 431).
        #[arg(long, default_value_t = Limits::default().max_header_bytes)]
        max_header_bytes: usize,
        /// Most request headers accepted (more: 431).
        #[arg(long, default_value_t = Limits::default().max_headers)]
        max_headers: usize,
        /// Time a client has to complete the TLS handshake and each request head.
        #[arg(long, default_value = "10s", value_parser = duration)]
        header_read_timeout: KumaDuration,
        /// A connection moving no byte for this long is closed.
        #[arg(long, default_value = "300s", value_parser = duration)]
        idle_timeout: KumaDuration,
        /// Most connections open at once on one listener.
        #[arg(long, default_value_t = Limits::default().max_connections)]
        max_connections: usize,
        /// Most connections open at once from one client address on one listener (default: no cap).
        #[arg(long)]
        max_connections_per_client: Option<usize>,
        /// Pass on request headers whose names contain '_' (by default they are dropped: many
        /// applications read X_Foo as X-Foo).
        #[arg(long)]
        allow_underscores_in_headers: bool,
        /// Accept TLS 1.2 between proxies as well as 1.3.
        #[arg(long)]
        allow_tls12: bool,
        /// Certificate (PEM) of the metrics endpoint when the mesh's metrics say `tls.mode:
        /// providedTLS` (as kuma-dp's flag).
        #[arg(long, requires = "metrics_key_path")]
        metrics_cert_path: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, requires = "metrics_cert_path")]
        metrics_key_path: Option<PathBuf>,
    },
}

fn duration(text: &str) -> Result<KumaDuration, String> {
    KumaDuration::parse(text)
}

/// Runs the proxy until SIGINT or SIGTERM, then drains.
pub async fn run(cp_address: Option<String>, command: DpCommand) -> anyhow::Result<()> {
    let DpCommand::Run {
        ca_cert,
        dataplane_file,
        dataplane_token_file,
        dataplane_vars,
        admin_address,
        drain_timeout,
        max_header_bytes,
        max_headers,
        header_read_timeout,
        idle_timeout,
        max_connections,
        max_connections_per_client,
        allow_underscores_in_headers,
        allow_tls12,
        metrics_cert_path,
        metrics_key_path,
    } = command;
    let cp_address = cp_address.context("--cp-address: required, the discovery server as https://HOST:5678")?;
    let options = ProxyOptions {
        cp_address,
        ca_cert,
        dataplane_file,
        dataplane_vars,
        token_file: dataplane_token_file,
        admin_address,
        drain_timeout: drain_timeout.get(),
        limits: Limits {
            max_header_bytes,
            max_headers,
            header_read_timeout: header_read_timeout.get(),
            idle_timeout: idle_timeout.get(),
            max_connections,
            max_connections_per_client,
            allow_underscores_in_headers,
        },
        allow_tls12,
        metrics_tls_files: metrics_cert_path.zip(metrics_key_path),
    };
    ward_proxy::run(options, crate::cp::shutdown_signal()).await
}
