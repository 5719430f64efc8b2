//! `ward gateway run`: the edge API gateway, configured with Kong's declarative format.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use ipnet::IpNet;
use ward_api::duration::KumaDuration;
use ward_http::Limits;

/// `ward gateway ...`.
#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Serve a Kong declarative configuration (reloaded on SIGHUP or by POST /config).
    Run(Box<RunArgs>),
    /// Check a declarative configuration without serving it (every error is listed).
    Check {
        /// Declarative configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Check it as a gateway that joins a mesh (accepting `host: <service>.mesh`).
        #[arg(long)]
        mesh: bool,
    },
}

/// `ward gateway run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Declarative configuration file (Kong's `_format_version: "3.0"`, YAML or JSON).
    #[arg(long)]
    config: PathBuf,
    /// HTTP proxy listener.
    #[arg(long, default_value = "0.0.0.0:8000")]
    proxy_listen: SocketAddr,
    /// HTTPS proxy listener (certificates chosen by SNI, HTTP/2 by ALPN).
    #[arg(long, default_value = "0.0.0.0:8443")]
    proxy_ssl_listen: SocketAddr,
    /// Admin API listener (GET /status, GET and POST /config).
    #[arg(long, default_value = "127.0.0.1:8001")]
    admin_listen: SocketAddr,
    /// Proxies whose X-Forwarded-For names the client (comma-separated addresses or CIDRs).
    #[arg(long, value_delimiter = ',', value_parser = parse_net)]
    trusted_ips: Vec<IpNet>,
    /// Join this mesh, so that services with `host: <service>.mesh` are reached over mTLS
    /// (needs --cp-address https://HOST:5678, --ca-cert and --dataplane-token-file).
    #[arg(long)]
    mesh: Option<String>,
    /// The control plane's CA certificate (its <data-dir>/cp-ca.pem).
    #[arg(long, requires = "mesh")]
    ca_cert: Option<PathBuf>,
    /// File holding the gateway's dataplane token.
    #[arg(long, requires = "mesh")]
    dataplane_token_file: Option<PathBuf>,
    /// Name of the gateway's Dataplane (the token must be issued for it).
    #[arg(long, default_value = "edge-gateway-1", requires = "mesh")]
    dataplane_name: String,
    /// The gateway's service, hence its identity spiffe://<mesh>/<service>.
    #[arg(long, default_value = "edge-gateway", requires = "mesh")]
    mesh_service: String,
    /// The address the gateway's Dataplane declares.
    #[arg(long, default_value = "127.0.0.1", requires = "mesh")]
    mesh_address: String,
    /// How long open requests may take to finish after SIGTERM or SIGINT.
    #[arg(long, default_value = "10s", value_parser = KumaDuration::parse)]
    shutdown_grace: KumaDuration,
    /// Most connections open at once on each listener.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Most connections open at once from one client address on each listener (default: no cap).
    #[arg(long)]
    max_connections_per_client: Option<usize>,
    /// Time a client has to complete the TLS handshake and each request head (HTTP/2: each
    /// header block).
    #[arg(long, default_value = "10s", value_parser = KumaDuration::parse)]
    header_read_timeout: KumaDuration,
    /// Largest request head accepted, bytes (larger: 431).
    #[arg(long, default_value_t = Limits::default().max_header_bytes)]
    max_header_bytes: usize,
    /// Most request headers accepted (more: 431).
    #[arg(long, default_value_t = Limits::default().max_headers)]
    max_headers: usize,
    /// Pass on request headers whose names contain '_' (by default they are dropped: many
    /// applications read X_Consumer_Username as X-Consumer-Username).
    #[arg(long)]
    allow_underscores_in_headers: bool,
}

fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("'{text}' is not an IP address or CIDR block"))
}

/// Runs the gateway until SIGINT or SIGTERM, or checks a file; `cp_address` is the
/// discovery server when joining a mesh.
pub async fn run(cp_address: Option<String>, command: GatewayCommand) -> anyhow::Result<()> {
    let a = match command {
        GatewayCommand::Run(a) => a,
        GatewayCommand::Check { config, mesh } => {
            let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
            ward_gateway::validate(&text, mesh)
                .map_err(|errors| anyhow::anyhow!("{errors}\n{} error(s) in {}", errors.0.len(), config.display()))?;
            println!("{} is valid", config.display());
            return Ok(());
        }
    };
    let mesh = match &a.mesh {
        Some(mesh) => Some(join_options(mesh, &a, cp_address)?),
        None => None,
    };
    let options = ward_gateway::Options {
        config: a.config,
        proxy_listen: a.proxy_listen,
        proxy_ssl_listen: a.proxy_ssl_listen,
        admin_listen: a.admin_listen,
        trusted_ips: a.trusted_ips,
        mesh,
        limits: Limits {
            max_header_bytes: a.max_header_bytes,
            max_headers: a.max_headers,
            header_read_timeout: a.header_read_timeout.get(),
            max_connections: a.max_connections,
            max_connections_per_client: a.max_connections_per_client,
            allow_underscores_in_headers: a.allow_underscores_in_headers,
            ..Limits::default()
        },
        shutdown_grace: a.shutdown_grace.get(),
    };
    ward_gateway::run(options, crate::cp::shutdown_signal()).await?;
    Ok(())
}

/// How the gateway joins `mesh`: a delegated-gateway Dataplane of its own, with no inbound.
fn join_options(
    mesh: &str,
    a: &RunArgs,
    cp_address: Option<String>,
) -> anyhow::Result<ward_proxy::member::JoinOptions> {
    let cp_address =
        cp_address.context("--cp-address: required with --mesh, the discovery server as https://HOST:5678")?;
    let ca_cert = a.ca_cert.clone().context("--ca-cert: required with --mesh (the control plane's cp-ca.pem)")?;
    let token_file = a.dataplane_token_file.clone().context("--dataplane-token-file: required with --mesh")?;
    let doc = serde_json::json!({
        "type": "Dataplane",
        "mesh": mesh,
        "name": a.dataplane_name,
        "networking": {
            "address": a.mesh_address,
            "gateway": { "type": "DELEGATED", "tags": { "kuma.io/service": a.mesh_service } },
        },
    });
    let dataplane = ward_api::parse::resource(doc, "gateway dataplane").map_err(|e| anyhow::anyhow!("--mesh: {e}"))?;
    Ok(ward_proxy::member::JoinOptions { cp_address, ca_cert, token_file, dataplane })
}
