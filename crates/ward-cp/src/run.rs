//! `ward cp run`: open the store, prepare keys and the admin token, serve the API.

use std::{
    fs,
    io::Write,
    net::SocketAddr,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, ApiState},
    auth::{Role, Tokens},
    data_dir::DataDirLock,
    discovery::{Discovery, tls::DiscoveryTls},
    identity::Identity,
    provided_files::ProvidedCaDir,
    secrets::Kek,
    store::Store,
};

/// Lifetime of the admin token written on first start.
const ADMIN_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Settings of a control plane.
#[derive(Debug, Clone)]
pub struct CpConfig {
    /// Directory of the database, the admin token and (by default) the key-encryption key.
    pub data_dir: PathBuf,
    /// Address of the REST API.
    pub api_address: SocketAddr,
    /// Address of the discovery server proxies connect to.
    pub dp_server_address: SocketAddr,
    /// Names (besides localhost, the host name and local addresses) the discovery server's certificate covers.
    pub dp_server_hostnames: Vec<String>,
    /// The key-encryption key file; default `<data-dir>/kek`.
    pub kek_file: Option<PathBuf>,
    /// The range services' virtual IPs come from.
    pub vip_range: ipnet::Ipv4Net,
    /// The directory `provided` CA backends may read files from; none: no file is read.
    pub provided_ca_dir: Option<PathBuf>,
    /// How long open API requests may take to finish once a shutdown began.
    pub shutdown_grace: Duration,
}

/// Runs the control plane until `shutdown` completes; then it stops accepting, ends every
/// discovery stream (proxies keep their configuration and reconnect later), lets open API
/// requests finish within the grace period and returns.
pub async fn run(config: CpConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("--data-dir {}: cannot create", config.data_dir.display()))?;
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    let provided_files = match &config.provided_ca_dir {
        Some(dir) => ProvidedCaDir::new(dir)
            .with_context(|| format!("--provided-ca-dir {}: must be a directory", dir.display()))?,
        None => ProvidedCaDir::default(),
    };
    let kek_path = config.kek_file.clone().unwrap_or_else(|| config.data_dir.join("kek"));
    let kek = Arc::new(Kek::load_or_create(&kek_path).context("--kek-file")?);
    let db = config.data_dir.join("ward.db");
    let store = Store::open(&db).await.with_context(|| format!("store {}", db.display()))?;
    let (tokens, created) = Tokens::load_or_create(&store, &kek).await?;
    let identity = Identity::load(store.clone(), kek.clone(), provided_files).await?;
    let tls = DiscoveryTls::load_or_create(&store, &kek, &config.dp_server_hostnames).await?;

    let api_listener = tokio::net::TcpListener::bind(config.api_address)
        .await
        .with_context(|| format!("--api-address {}: cannot listen", config.api_address))?;
    let dp_listener = tokio::net::TcpListener::bind(config.dp_server_address)
        .await
        .with_context(|| format!("--dp-server-address {}: cannot listen", config.dp_server_address))?;
    let ca_path = config.data_dir.join("cp-ca.pem");
    fs::write(&ca_path, &tls.ca_pem).with_context(|| format!("writing {}", ca_path.display()))?;
    let token_path = config.data_dir.join("admin-token");
    if created || !token_path.exists() {
        let token = tokens.issue("admin", Role::Admin, None, ADMIN_TOKEN_LIFETIME);
        write_private(&token_path, token.as_bytes()).with_context(|| format!("writing {}", token_path.display()))?;
    }
    tracing::info!(path = %token_path.display(), "admin token (use: ward config set-cp --token \"$(cat {})\")", token_path.display());
    tracing::info!(address = %config.api_address, data_dir = %config.data_dir.display(), "control plane API listening");
    tracing::info!(address = %config.dp_server_address, ca = %ca_path.display(), names = ?tls.names, "discovery server listening (proxies: --ca-cert {})", ca_path.display());

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let discovery = Discovery::start(store.clone(), identity.clone(), config.vip_range);
    let snapshots = discovery.snapshots.clone();
    let app = api::router(ApiState {
        store,
        tokens,
        identity,
        online: discovery.online.clone(),
        snapshots: discovery.snapshots.clone(),
    });
    let api = axum::serve(api_listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    let dp = discovery.serve(dp_listener, tls, {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            // Streams never end by themselves: end each one, telling its proxy why.
            snapshots.close();
        }
    });
    let served = async { tokio::join!(async { api.await.context("serving the API") }, dp) };
    let grace_over = async {
        stop.cancelled().await;
        tracing::info!(grace = ?config.shutdown_grace, "stopping: no new connections, discovery streams ended");
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::select! {
        (api, dp) = served => api.and(dp)?,
        () = grace_over => tracing::warn!(grace = ?config.shutdown_grace, "connections were still open at the end of the grace period; closing them"),
    }
    tracing::info!("control plane stopped");
    Ok(())
}

/// Writes `bytes` to `path` readable by the owner only, replacing any older file.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(tmp, path)
}
