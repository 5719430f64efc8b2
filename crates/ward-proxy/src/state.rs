//! What the proxy runs on: the latest configuration and certificate, each replaced whole and
//! atomically, so a connection sees either the old one or the new one, never a mix.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use arc_swap::{ArcSwap, ArcSwapOption};
use chrono::Utc;
use tokio::sync::watch;

use crate::{config::Config, identity::Svid, metrics::Metrics};

/// The proxy's shared state.
pub struct State {
    config: ArcSwapOption<Config>,
    svid: ArcSwapOption<Svid>,
    more_svids: ArcSwap<BTreeMap<String, Arc<Svid>>>,
    changes: watch::Sender<u64>,
    cp_connected: AtomicBool,
    refused: Mutex<Option<String>>,
    inbound_health: watch::Sender<BTreeMap<u32, bool>>,
    /// Prometheus metrics.
    pub metrics: Metrics,
}

impl State {
    /// A state with nothing yet.
    pub fn new() -> Arc<State> {
        let (changes, _) = watch::channel(0);
        Arc::new(State {
            config: ArcSwapOption::empty(),
            svid: ArcSwapOption::empty(),
            more_svids: ArcSwap::default(),
            changes,
            cp_connected: AtomicBool::new(false),
            refused: Mutex::new(None),
            inbound_health: watch::channel(BTreeMap::new()).0,
            metrics: Metrics::new(),
        })
    }

    /// The configuration in force, if any.
    pub fn config(&self) -> Option<Arc<Config>> {
        self.config.load_full()
    }

    /// The certificate of the identity the proxy calls others with, if any.
    pub fn svid(&self) -> Option<Arc<Svid>> {
        self.svid.load_full()
    }

    /// The certificate an inbound of `service` presents: the main one when it is that
    /// service's, else the one held for it (a dataplane whose inbounds serve several services).
    pub fn svid_for(&self, service: &str) -> Option<Arc<Svid>> {
        match self.svid.load_full() {
            Some(main) if main.service == service => Some(main),
            _ => self.more_svids.load().get(service).cloned(),
        }
    }

    /// Puts a new configuration in force for every new connection and request.
    pub fn set_config(&self, config: Config) {
        self.config.store(Some(Arc::new(config)));
        self.changes.send_modify(|n| *n += 1);
    }

    /// The certificates of the further services the proxy serves, by service.
    pub fn more_svids(&self) -> Arc<BTreeMap<String, Arc<Svid>>> {
        self.more_svids.load_full()
    }

    /// Puts a new certificate in use for every new handshake: the main one (the identity the
    /// proxy calls with), or with `main` false, the one of another service it serves.
    pub fn set_svid(&self, svid: Svid, main: bool) {
        if main {
            self.metrics.certificate_expiry.set(svid.not_after.timestamp());
            self.svid.store(Some(Arc::new(svid)));
        } else {
            let svid = Arc::new(svid);
            self.more_svids.rcu(|held| {
                let mut held = BTreeMap::clone(held);
                held.insert(svid.service.clone(), svid.clone());
                held
            });
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// Wakes on every new configuration or certificate.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records whether the discovery stream is up.
    pub fn set_cp_connected(&self, connected: bool) {
        self.cp_connected.store(connected, Ordering::Relaxed);
        self.metrics.control_plane_connected.set(i64::from(connected));
    }

    /// Records why the control plane refused this proxy (`None` once it accepts it again).
    pub fn set_refused(&self, reason: Option<String>) {
        *self.refused.lock().expect("refusal lock") = reason;
    }

    /// Why the control plane refused this proxy, while it does.
    pub fn refused(&self) -> Option<String> {
        self.refused.lock().expect("refusal lock").clone()
    }

    /// Records what the probe of inbound `index` found (`ready` or not).
    pub fn set_inbound_health(&self, index: u32, ready: bool) {
        self.inbound_health.send_if_modified(|health| health.insert(index, ready) != Some(ready));
    }

    /// The health of each probed inbound, by index, woken on every change.
    pub fn inbound_health(&self) -> watch::Receiver<BTreeMap<u32, bool>> {
        self.inbound_health.subscribe()
    }

    /// Whether the discovery stream is up.
    pub fn cp_connected(&self) -> bool {
        self.cp_connected.load(Ordering::Relaxed)
    }

    /// The certificate and its time left, when less than a quarter of its lifetime is left and
    /// the control plane is unreachable to renew it.
    pub fn expiring_unrenewed(&self) -> Option<(Arc<Svid>, chrono::TimeDelta)> {
        if self.cp_connected() {
            return None;
        }
        let (svid, config) = (self.svid()?, self.config()?);
        let lifetime = chrono::TimeDelta::from_std(config.certificate_lifetime).ok()?;
        let left = svid.not_after - Utc::now();
        (left < lifetime / 4).then_some((svid, left))
    }

    /// Why the proxy is not ready, or `None` when it is: the control plane must not have refused
    /// it, and it needs a configuration and, when the mesh has mTLS, a certificate valid now.
    pub fn not_ready(&self) -> Option<String> {
        if let Some(reason) = self.refused() {
            return Some(format!("the control plane refused this proxy: {reason}"));
        }
        let Some(config) = self.config() else { return Some("no configuration from the control plane yet".into()) };
        if config.mode == crate::config::Mode::Disabled {
            return None;
        }
        let unreachable = if self.cp_connected() { "" } else { " and the control plane is unreachable" };
        // The first service is the main identity's; each further one has its own certificate.
        for (i, service) in config.dataplane_spec().services().into_iter().enumerate() {
            let svid = if i == 0 { self.svid() } else { self.svid_for(service) };
            match svid {
                None if i == 0 => return Some("no certificate yet".into()),
                None => return Some(format!("no certificate yet for service {service}")),
                Some(svid) if !svid.valid_at(Utc::now()) => {
                    return Some(format!(
                        "certificate {} expired at {}{unreachable}",
                        svid.serial,
                        svid.not_after.to_rfc3339()
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }
}
