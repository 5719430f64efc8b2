//! The running gateway: the configuration in force, swapped whole for the next one, and
//! what outlives configurations (rate-limiting counters, Redis connections, the mesh).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::compiled::{Gateway, compile};
use crate::error::ConfigErrors;
use crate::plugins::rate_limiting;

/// State that outlives configurations: rate-limiting counters, Redis connections, the
/// correlation-id counter, the gateway's membership of a mesh, and the default secret of
/// sessions (so that a reload keeps them valid).
#[derive(Default)]
pub(crate) struct Shared {
    pub local_counters: Arc<rate_limiting::LocalCounters>,
    pub redis: rate_limiting::RedisClients,
    /// The `uuid#counter` IDs of correlation-id.
    pub request_ids: Arc<crate::plugins::correlation_id::Counter>,
    /// Set when the gateway joined a mesh: services with `host: <service>.mesh` go through it.
    pub mesh: Option<Arc<ward_proxy::member::Member>>,
    /// The secret of session plugins without one, and the clock sessions are measured by.
    pub sessions: crate::plugins::session::Defaults,
    /// The prometheus plugin's per-request metrics (kept across reloads, as Kong keeps them).
    pub metrics: Arc<crate::plugins::prometheus::Metrics>,
}

/// Counters the status endpoint reports.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub connections_accepted: AtomicU64,
    pub connections_active: AtomicU64,
    pub total_requests: AtomicU64,
}

/// The running gateway: the configuration in force and what outlives it.
pub(crate) struct Runtime {
    current: ArcSwap<Gateway>,
    shared: Shared,
    /// Peers whose X-Forwarded-For (and other X-Forwarded-*) headers are believed.
    pub trusted_ips: Vec<IpNet>,
    reloading: tokio::sync::Mutex<()>,
    pub stats: Stats,
}

impl Runtime {
    /// Compiles the first configuration; `mesh` is the gateway's membership of a mesh, if any.
    pub fn new(
        text: &str,
        trusted_ips: Vec<IpNet>,
        mesh: Option<Arc<ward_proxy::member::Member>>,
    ) -> Result<Runtime, ConfigErrors> {
        let shared = Shared { mesh, ..Shared::default() };
        let gateway = compile(text, &shared)?;
        gateway.start_health_checks();
        Ok(Runtime {
            current: ArcSwap::from_pointee(gateway),
            shared,
            trusted_ips,
            reloading: tokio::sync::Mutex::new(()),
            stats: Stats::default(),
        })
    }

    /// The prometheus plugin's per-request metrics.
    pub fn metrics(&self) -> &crate::plugins::prometheus::Metrics {
        &self.shared.metrics
    }

    /// The mesh the gateway joined, if any.
    pub fn mesh(&self) -> Option<&Arc<ward_proxy::member::Member>> {
        self.shared.mesh.as_ref()
    }

    /// The configuration in force; a request keeps the one it started with.
    pub fn current(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Validates `text` whole and, only if it is valid, puts it in force atomically.
    pub async fn reload(&self, text: &str) -> Result<Arc<Gateway>, ConfigErrors> {
        let _one_at_a_time = self.reloading.lock().await;
        let gateway = Arc::new(compile(text, &self.shared)?);
        gateway.start_health_checks();
        self.current.store(gateway.clone());
        Ok(gateway)
    }
}
