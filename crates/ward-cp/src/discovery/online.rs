//! Which proxies are connected right now: one session per dataplane, the newest winning.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the control plane knows of a connected proxy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// Unique per stream.
    #[serde(skip)]
    pub id: u64,
    /// When the stream opened (RFC 3339).
    pub connected_at: String,
    /// The proxy's own version.
    pub proxy_version: String,
    /// The ID of the dataplane token it presented.
    pub token_id: String,
    /// Where it connected from.
    pub remote_address: Option<SocketAddr>,
    /// Ends the session when cancelled.
    #[serde(skip)]
    pub cancel: CancellationToken,
}

/// Why the control plane last turned a proxy away.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    /// When (RFC 3339).
    pub at: String,
    /// The reason the proxy was told.
    pub reason: String,
}

/// The connected proxies, by mesh and dataplane name; tells the snapshot builder of every change.
#[derive(Clone)]
pub struct Online {
    sessions: Arc<Mutex<HashMap<(String, String), SessionInfo>>>,
    refusals: Arc<Mutex<HashMap<(String, String), Refusal>>>,
    next_id: Arc<AtomicU64>,
    changed: mpsc::UnboundedSender<String>,
}

impl Online {
    /// An empty registry, and the receiver of the names of meshes whose set of proxies changed.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (changed, receiver) = mpsc::unbounded_channel();
        let online = Online {
            sessions: Default::default(),
            refusals: Default::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            changed,
        };
        (online, receiver)
    }

    /// Records a new session of `mesh/name`, ending the one it replaces; returns its ID.
    pub fn connect(&self, mesh: &str, name: &str, mut info: SessionInfo) -> u64 {
        info.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = info.id;
        let key = (mesh.to_string(), name.to_string());
        self.refusals.lock().expect("refusals lock").remove(&key);
        let replaced = self.lock().insert(key, info);
        if let Some(old) = replaced {
            tracing::info!(mesh, dataplane = name, "a new stream replaces the proxy's previous one");
            old.cancel.cancel();
        }
        let _ = self.changed.send(mesh.to_string());
        id
    }

    /// Forgets session `id` of `mesh/name`, unless a newer session replaced it.
    pub fn disconnect(&self, mesh: &str, name: &str, id: u64) {
        let key = (mesh.to_string(), name.to_string());
        let mut sessions = self.lock();
        if sessions.get(&key).is_some_and(|s| s.id == id) {
            sessions.remove(&key);
            drop(sessions);
            let _ = self.changed.send(mesh.to_string());
        }
    }

    /// The session of `mesh/name`, when connected.
    pub fn get(&self, mesh: &str, name: &str) -> Option<SessionInfo> {
        self.lock().get(&(mesh.to_string(), name.to_string())).cloned()
    }

    /// Remembers why a proxy of `mesh/name` was turned away (its token refused or revoked), until
    /// it connects again; the registry keeps one per dataplane of a mesh that exists.
    pub fn refuse(&self, mesh: &str, name: &str, reason: &str) {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let refusal = Refusal { at, reason: reason.to_string() };
        self.refusals.lock().expect("refusals lock").insert((mesh.to_string(), name.to_string()), refusal);
    }

    /// Why a proxy of `mesh/name` was last turned away, when it was and has not connected since.
    pub fn refusal(&self, mesh: &str, name: &str) -> Option<Refusal> {
        self.refusals.lock().expect("refusals lock").get(&(mesh.to_string(), name.to_string())).cloned()
    }

    /// Names of the connected dataplanes of `mesh`.
    pub fn names(&self, mesh: &str) -> HashSet<String> {
        self.lock().keys().filter(|(m, _)| m == mesh).map(|(_, n)| n.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), SessionInfo>> {
        self.sessions.lock().expect("online registry lock")
    }
}
