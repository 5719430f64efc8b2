//! Keeps one snapshot per watched mesh up to date: any change to the store or to the set of
//! connected proxies rebuilds the meshes it touched, a few milliseconds later, in one batch.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use ipnet::Ipv4Net;
use tokio::sync::{mpsc, watch};

use super::{
    online::Online,
    snapshot::{MeshSnapshot, SharedSnapshot},
};
use crate::{identity::Identity, store::Store};

/// How long the builder gathers changes before rebuilding, so a burst costs one rebuild.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// How long the builder waits before building again a mesh whose build failed.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Hands out the live snapshot of each mesh.
#[derive(Clone)]
pub struct Snapshots {
    channels: Arc<Mutex<HashMap<String, watch::Sender<SharedSnapshot>>>>,
    wanted: mpsc::UnboundedSender<String>,
}

impl Snapshots {
    /// Starts the builder task over `store`; `online_changes` names meshes whose proxies came or went.
    pub fn start(
        store: Store,
        identity: Identity,
        online: Online,
        online_changes: mpsc::UnboundedReceiver<String>,
        vip_range: Ipv4Net,
    ) -> Snapshots {
        let (wanted, wanted_rx) = mpsc::unbounded_channel();
        let snapshots = Snapshots { channels: Default::default(), wanted };
        tokio::spawn(run(snapshots.clone(), store, identity, online, online_changes, wanted_rx, vip_range));
        snapshots
    }

    /// The live snapshot of `mesh`; the first subscriber of a mesh has it built.
    pub fn subscribe(&self, mesh: &str) -> watch::Receiver<SharedSnapshot> {
        let mut channels = self.channels.lock().expect("snapshot channels lock");
        if let Some(sender) = channels.get(mesh) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(Arc::new(MeshSnapshot::default()));
        channels.insert(mesh.to_string(), sender);
        let _ = self.wanted.send(mesh.to_string());
        receiver
    }

    /// Has the snapshot of `mesh` rebuilt, for a change the store's feed does not carry (a
    /// certificate issued).
    pub fn rebuild(&self, mesh: &str) {
        let _ = self.wanted.send(mesh.to_string());
    }

    /// Drops every mesh's channel: each open stream ends, telling its proxy that the control
    /// plane is shutting down.
    pub fn close(&self) {
        self.channels.lock().expect("snapshot channels lock").clear();
    }

    fn watched(&self) -> HashSet<String> {
        let mut channels = self.channels.lock().expect("snapshot channels lock");
        channels.retain(|_, sender| sender.receiver_count() > 0);
        channels.keys().cloned().collect()
    }

    fn publish(&self, mesh: &str, snapshot: MeshSnapshot) {
        if let Some(sender) = self.channels.lock().expect("snapshot channels lock").get(mesh) {
            sender.send_replace(Arc::new(snapshot));
        }
    }
}

async fn run(
    snapshots: Snapshots,
    store: Store,
    identity: Identity,
    online: Online,
    mut online_changes: mpsc::UnboundedReceiver<String>,
    mut wanted: mpsc::UnboundedReceiver<String>,
    vip_range: Ipv4Net,
) {
    let mut store_changes = store.subscribe();
    let mut revocations = identity.revocations();
    let mut seen_revision = store_changes.borrow_and_update().revision;
    let mut version = 0u64;
    // Meshes whose last build failed: their proxies still wait for them, so they are built again.
    let mut failed = HashSet::new();
    loop {
        let mut dirty: HashSet<String> = std::mem::take(&mut failed);
        let mut everything = false;
        // Wait for the first change (or the retry delay), then gather what follows within the batch window.
        let mut started = !dirty.is_empty();
        let deadline = tokio::time::sleep(if started { RETRY_DELAY } else { BATCH_WINDOW });
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                changed = store_changes.changed() => {
                    if changed.is_err() { return; }
                    let change = store_changes.borrow_and_update().clone();
                    // The feed keeps only the latest change: after a gap, rebuild every mesh.
                    everything |= change.revision > seen_revision + 1;
                    seen_revision = change.revision;
                    if let Some((_, _, mesh, _)) = change.what { dirty.insert(mesh); }
                }
                Some(mesh) = online_changes.recv() => { dirty.insert(mesh); }
                // A revoked token's certificates are pushed to every proxy of its mesh.
                changed = revocations.changed() => {
                    if changed.is_err() { return; }
                    everything = true;
                }
                Some(mesh) = wanted.recv() => { dirty.insert(mesh); }
                _ = &mut deadline, if started => break,
            }
            if !started {
                started = true;
                deadline.as_mut().reset(tokio::time::Instant::now() + BATCH_WINDOW);
            }
        }
        // Generated MeshServices follow their dataplanes in every mesh that changed, watched or
        // not; what they write comes back as one more change, which finds nothing to do.
        for mesh in &dirty {
            if let Err(e) = crate::mesh_service_generator::sync(&store, mesh).await {
                tracing::error!(%mesh, error = %e, "cannot update the generated MeshServices");
            }
        }
        let watched = snapshots.watched();
        let meshes: Vec<String> = if everything {
            watched.into_iter().collect()
        } else {
            dirty.into_iter().filter(|m| watched.contains(m)).collect()
        };
        for mesh in meshes {
            version += 1;
            match MeshSnapshot::build(&store, &identity, &mesh, &online.names(&mesh), vip_range, version).await {
                Ok(snapshot) => snapshots.publish(&mesh, snapshot),
                Err(e) => {
                    tracing::error!(mesh = %mesh, error = %e, retry_in = ?RETRY_DELAY, "cannot rebuild the mesh's configuration; proxies keep the last one");
                    failed.insert(mesh);
                }
            }
        }
    }
}
