//! Ward's edge API gateway: Kong's declarative configuration (format 3.0), router and
//! security plugins, in front of services reached over HTTP or HTTPS.
//!
//! [`run`] serves the proxy (HTTP and HTTPS) and admin listeners until shutdown, then stops
//! accepting and lets open requests finish within the grace period; it reloads the
//! configuration file on SIGHUP. A configuration is validated whole before it
//! replaces the one in force; requests under way finish with the one they started with.

mod admin;
mod compiled;
mod config;
mod consumers;
mod error;
mod exchange;
mod handler;
mod listener;
mod path;
mod plugins;
mod reply;
mod router;
mod runtime;
mod tls;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{ConfigError, ConfigErrors};

/// What `ward gateway run` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The declarative configuration file (Kong's format 3.0, YAML or JSON).
    pub config: PathBuf,
    /// HTTP proxy listener.
    pub proxy_listen: SocketAddr,
    /// HTTPS proxy listener.
    pub proxy_ssl_listen: SocketAddr,
    /// Admin API listener.
    pub admin_listen: SocketAddr,
    /// Peers whose X-Forwarded-For is believed (Kong's `trusted_ips`).
    pub trusted_ips: Vec<IpNet>,
    /// How to join a mesh, so that services with `host: <service>.mesh` are reachable.
    pub mesh: Option<ward_proxy::member::JoinOptions>,
    /// Limits of each proxy listener and its connections.
    pub limits: ward_http::Limits,
    /// How long open requests may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is invalid.
    #[error("{path} is invalid ({} error(s)):\n{errors}", errors.0.len())]
    Config {
        /// The file.
        path: PathBuf,
        /// Everything wrong with it.
        errors: ConfigErrors,
    },
    /// The mesh could not be joined.
    #[error("joining the mesh: {0:#}")]
    Mesh(anyhow::Error),
    /// A listener could not be opened.
    #[error("listening on {address} ({role}): {source}")]
    Listen {
        /// Which listener.
        role: &'static str,
        /// Its address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Checks a declarative configuration without serving it; `mesh_member` accepts mesh
/// services (`host: <service>.mesh`), as a gateway that joins a mesh does.
pub fn validate(text: &str, mesh_member: bool) -> Result<(), ConfigErrors> {
    let mesh = mesh_member.then(|| {
        let detached = ward_proxy::state::State::new();
        Arc::new(ward_proxy::member::Member::new(detached, false))
    });
    compiled::compile(text, &runtime::Shared { mesh, ..Default::default() }).map(|_| ())
}

/// The declarative text in the body of an admin `POST /config`, found as the admin API finds
/// it (the raw body, or the `config` field of a form or multipart form); `None` when there is none.
pub fn admin_config_text(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    admin::config_text(content_type, &bytes::Bytes::copy_from_slice(body)).ok()
}

fn read(path: &PathBuf) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.clone(), source })
}

async fn bind(role: &'static str, address: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(address).await.map_err(|source| Error::Listen { role, address, source })
}

/// Runs the gateway until `shutdown` completes.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let text = read(&options.config)?;
    let stop = CancellationToken::new();
    let mesh = match options.mesh.clone() {
        Some(join) => Some(ward_proxy::member::join(join, stop.clone()).map_err(Error::Mesh)?),
        None => None,
    };
    let runtime = runtime::Runtime::new(&text, options.trusted_ips.clone(), mesh)
        .map_err(|errors| Error::Config { path: options.config.clone(), errors })?;
    let runtime = Arc::new(runtime);
    // Before any listener is up: a SIGHUP sent once the gateway answers must reload it, and
    // not meet the default disposition, which ends the process.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let proxy = bind("proxy", options.proxy_listen).await?;
    let proxy_ssl = bind("proxy ssl", options.proxy_ssl_listen).await?;
    let admin = bind("admin", options.admin_listen).await?;
    let listening = Arc::new(listener::Listening::new(options.limits.clone()));
    tokio::spawn(listener::serve(proxy, runtime.clone(), false, listening.clone(), stop.clone()));
    tokio::spawn(listener::serve(proxy_ssl, runtime.clone(), true, listening.clone(), stop.clone()));
    tokio::spawn(admin::serve(admin, runtime.clone(), listening.clone(), stop.clone()));
    tokio::spawn(reload_on_hangup(hangups, runtime.clone(), options.config.clone(), stop.clone()));
    tracing::info!(
        proxy = %options.proxy_listen,
        proxy_ssl = %options.proxy_ssl_listen,
        admin = %options.admin_listen,
        hash = %runtime.current().hash,
        "gateway started"
    );
    shutdown.await;
    tracing::info!(grace = ?options.shutdown_grace, "draining: no new connections; waiting for open requests");
    stop.cancel();
    listening.draining.cancel();
    ward_http::accept::drain(&listening.connections, options.shutdown_grace).await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Reloads the configuration file on every SIGHUP; a bad file leaves the old one in force.
async fn reload_on_hangup(
    hangups: std::io::Result<tokio::signal::unix::Signal>,
    runtime: Arc<runtime::Runtime>,
    path: PathBuf,
    stop: CancellationToken,
) {
    let Ok(mut hangups) = hangups else {
        return tracing::error!("cannot listen for SIGHUP: reloads only through the admin API");
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        let result = match read(&path) {
            Ok(text) => runtime.reload(&text).await.map_err(|errors| Error::Config { path: path.clone(), errors }),
            Err(e) => Err(e),
        };
        match result {
            Ok(gw) => tracing::info!(hash = %gw.hash, "configuration reloaded on SIGHUP"),
            Err(e) => tracing::error!("SIGHUP: kept the configuration in force: {e}"),
        }
    }
}
