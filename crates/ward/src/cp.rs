//! `ward cp run`: the control plane process.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Subcommand;
use ipnet::Ipv4Net;
use ward_api::duration::KumaDuration;
use ward_cp::run::{CpConfig, run as run_cp};

/// `ward cp ...`.
#[derive(Debug, Subcommand)]
pub enum CpCommand {
    /// Start the control plane: store, REST API, discovery server.
    Run {
        /// Directory of the database, admin token and key-encryption key.
        #[arg(long, default_value = "./ward-data")]
        data_dir: PathBuf,
        /// Address of the REST API.
        #[arg(long, default_value = "127.0.0.1:5681")]
        api_address: SocketAddr,
        /// Address of the discovery server that proxies connect to (gRPC over TLS).
        #[arg(long, default_value = "0.0.0.0:5678")]
        dp_server_address: SocketAddr,
        /// Another name or address proxies use to reach this host (repeatable); localhost, the host
        /// name and every local address are always in the discovery server's certificate.
        #[arg(long = "dp-server-hostname")]
        dp_server_hostnames: Vec<String>,
        /// Key-encryption key file (32 bytes; created 0600 when absent). Default: <data-dir>/kek.
        #[arg(long)]
        kek_file: Option<PathBuf>,
        /// IPv4 range the services' virtual IPs (`<service>.mesh`) come from.
        #[arg(long, default_value = "240.0.0.0/4", value_parser = parse_vip_range)]
        vip_cidr: Ipv4Net,
        /// Directory whose files `provided` CA backends may name (`conf.cert.file`, `conf.key.file`),
        /// and only a global admin; without it no file is read.
        #[arg(long)]
        provided_ca_dir: Option<PathBuf>,
        /// On SIGTERM or SIGINT, how long open API requests may take before the process exits.
        #[arg(long, default_value = "10s", value_parser = KumaDuration::parse)]
        shutdown_grace: KumaDuration,
    },
}

/// An IPv4 CIDR block with room for at least two services, normalised to its network address.
fn parse_vip_range(text: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = text.parse().map_err(|_| format!("'{text}' is not an IPv4 CIDR block (such as 240.0.0.0/4)"))?;
    if net.prefix_len() > 30 {
        return Err(format!("'{text}' is too small: a prefix of at most /30 is needed"));
    }
    Ok(net.trunc())
}

/// Runs the control plane until SIGINT or SIGTERM.
pub async fn run(command: CpCommand) -> anyhow::Result<()> {
    let CpCommand::Run {
        data_dir,
        api_address,
        dp_server_address,
        dp_server_hostnames,
        kek_file,
        vip_cidr,
        provided_ca_dir,
        shutdown_grace,
    } = command;
    let config = CpConfig {
        data_dir,
        api_address,
        dp_server_address,
        dp_server_hostnames,
        kek_file,
        vip_range: vip_cidr,
        provided_ca_dir,
        shutdown_grace: shutdown_grace.get(),
    };
    // Listening starts before anything else, so a signal during start-up still stops cleanly.
    let stop = shutdown_requested().context("listening for SIGINT and SIGTERM")?;
    run_cp(config, stop).await
}

/// Listens for SIGINT and SIGTERM from this call on (so that one arriving early is not lost);
/// the future completes on the first.
pub fn shutdown_requested() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
