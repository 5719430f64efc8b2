//! Ward's data-plane proxy (`ward dp run`): it registers its Dataplane with the control plane,
//! gets a certificate for its service's SPIFFE ID, and carries the application's traffic over
//! mutual TLS, letting in only the callers a permission allows.

pub mod admin;
pub mod app_client;
pub mod authorization;
pub mod balancer;
pub mod circuit;
pub mod config;
pub mod dataplane_file;
pub mod denials;
pub mod discovery;
pub mod dns;
pub mod external;
pub mod forward;
pub mod health;
pub mod identity;
pub mod inbound;
pub mod inbound_policies;
pub mod io;
pub mod listener;
pub mod member;
pub mod mesh_client;
pub mod metrics;
pub mod metrics_endpoint;
pub mod mirror;
pub mod opa;
pub mod outbound;
pub mod probe;
pub mod retry;
pub mod routes;
pub mod state;
pub mod timeouts;
pub mod tls;
pub mod transparent;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context;
use http::HeaderName;
use hyper_util::{rt::TokioExecutor, server::conn::auto};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{app_client::AppClient, discovery::DiscoveryOptions, member::Member, state::State};
use ward_http::Limits;

/// Header carrying the caller's SPIFFE ID to the application; removed, under every spelling,
/// from what callers send.
pub const PEER_IDENTITY: HeaderName = HeaderName::from_static("x-ward-peer-identity");

/// Everything `ward dp run` is told.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// `https://host:port` of the control plane's discovery server.
    pub cp_address: String,
    /// The control plane's CA (PEM file).
    pub ca_cert: PathBuf,
    /// The Dataplane, with `{{ var }}` templates.
    pub dataplane_file: PathBuf,
    /// `name=value` for the templates.
    pub dataplane_vars: Vec<String>,
    /// File holding the dataplane token.
    pub token_file: PathBuf,
    /// Address of `/ready`, `/metrics` and `/config`; `None`: from the Dataplane's
    /// `networking.admin.port`, else 127.0.0.1:9901.
    pub admin_address: Option<SocketAddr>,
    /// How long in-flight requests may take to finish on SIGTERM.
    pub drain_timeout: Duration,
    /// Limits of every listener and connection.
    pub limits: Limits,
    /// Whether TLS 1.2 is allowed between proxies besides 1.3.
    pub allow_tls12: bool,
    /// Certificate and key (PEM files) of the metrics endpoint when its conf says `providedTLS`.
    pub metrics_tls_files: Option<(PathBuf, PathBuf)>,
}

/// What every listener and connection of a running proxy shares.
pub struct Proxy {
    /// The proxy's membership of its mesh: configuration, certificate, connections to peers.
    pub member: Arc<Member>,
    /// Limits of every listener and connection.
    pub limits: Limits,
    /// Inbound mTLS, one configuration per service the Dataplane serves (each presents its own
    /// certificate), made once at start.
    pub server_tls: BTreeMap<String, Arc<rustls::ServerConfig>>,
    /// The metrics endpoint's TLS when its conf says `providedTLS` (from `--metrics-cert-path`).
    pub metrics_tls: Option<Arc<rustls::ServerConfig>>,
    /// The HTTP server every connection uses.
    pub http_server: auto::Builder<TokioExecutor>,
    /// Clients for the local application.
    pub app: AppClient,
    /// Every connection, so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Cancelled when the proxy starts draining.
    pub draining: CancellationToken,
    /// Listeners that could not be opened, by address.
    pub listener_errors: Mutex<BTreeMap<SocketAddr, String>>,
    /// Whether the listeners of a configuration have been opened (the first one's, at least).
    pub listening: AtomicBool,
    /// MeshRateLimit's token buckets, by inbound.
    pub rate_limits: inbound_policies::Buckets,
    /// The rate limit of denial log lines.
    pub denials: denials::Log,
}

impl Proxy {
    /// Configuration, certificate, metrics.
    pub fn state(&self) -> &Arc<State> {
        &self.member.state
    }

    /// The inbound mTLS configuration of `service`; `None` for a service the Dataplane does not serve.
    pub fn server_tls(&self, service: &str) -> Option<Arc<rustls::ServerConfig>> {
        self.server_tls.get(service).cloned()
    }
}

/// Runs the proxy until `shutdown` completes, then drains.
pub async fn run(options: ProxyOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let vars = dataplane_file::parse_vars(&options.dataplane_vars)?;
    let text = std::fs::read_to_string(&options.dataplane_file)
        .with_context(|| format!("--dataplane-file {}", options.dataplane_file.display()))?;
    let dataplane = dataplane_file::read(&text, &vars)?;
    let ca_cert_pem = member::read_ca_cert(&options.ca_cert)?;
    member::check_token_file(&options.token_file)?;

    let metrics_tls = match &options.metrics_tls_files {
        None => None,
        Some((cert, key)) => {
            let read = |path: &PathBuf, flag: &str| {
                std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))
            };
            let (cert_pem, key_pem) = (read(cert, "--metrics-cert-path")?, read(key, "--metrics-key-path")?);
            let config = tls::provided_server_config(&cert_pem, &key_pem)
                .map_err(|e| anyhow::anyhow!("--metrics-cert-path / --metrics-key-path: {e}"))?;
            Some(config)
        }
    };
    let state = State::new();
    let proxy = Arc::new(Proxy {
        server_tls: match &dataplane.spec {
            ward_api::Spec::Dataplane(dp) => dp
                .services()
                .into_iter()
                .map(|s| (s.to_string(), tls::server_config(state.clone(), s.to_string(), options.allow_tls12)))
                .collect(),
            _ => BTreeMap::new(),
        },
        metrics_tls,
        http_server: ward_http::server::builder(&options.limits),
        app: AppClient::new(),
        member: Arc::new(Member::new(state.clone(), options.allow_tls12)),
        connections: TaskTracker::new(),
        draining: CancellationToken::new(),
        listener_errors: Mutex::default(),
        listening: AtomicBool::new(false),
        rate_limits: inbound_policies::Buckets::default(),
        denials: denials::Log::default(),
        limits: options.limits.clone(),
    });
    let admin_address = admin::address(options.admin_address, &dataplane)?;
    let probes = match &dataplane.spec {
        ward_api::Spec::Dataplane(dp) => probe::probes(dp),
        _ => Vec::new(),
    };
    let admin = tokio::net::TcpListener::bind(admin_address)
        .await
        .with_context(|| format!("admin listener {admin_address}: cannot listen"))?;
    tracing::info!(address = %admin_address, "admin listener (/ready, /metrics, /config)");
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        let router = admin::router(proxy.clone());
        async move {
            let _ = axum::serve(admin, router).with_graceful_shutdown(stop.cancelled_owned()).await;
        }
    });
    let discovery_options = DiscoveryOptions {
        cp_address: options.cp_address.clone(),
        ca_cert_pem,
        token_file: options.token_file.clone(),
        dataplane,
    };
    let discovery = tokio::spawn(discovery::run(state.clone(), discovery_options, stop.clone()));
    tokio::spawn(discovery::watch_expiry(state.clone(), stop.clone()));
    tokio::spawn(listener::reconcile(proxy.clone(), stop.clone()));
    tokio::spawn(member::keep_health_checks(proxy.member.clone(), stop.clone()));
    for probe in probes {
        tokio::spawn(probe::run(probe, state.clone(), stop.clone()));
    }

    tokio::select! {
        _ = shutdown => {}
        result = discovery => {
            // The stream only ends by itself on a setting that can never work.
            result.context("discovery task")??;
        }
    }
    tracing::info!(timeout = ?options.drain_timeout, "draining: no new connections; waiting for in-flight requests");
    stop.cancel();
    proxy.draining.cancel();
    ward_http::accept::drain(&proxy.connections, options.drain_timeout).await;
    tracing::info!("proxy stopped");
    Ok(())
}
