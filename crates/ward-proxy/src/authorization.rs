//! Who may reach the local application: the caller a connection proves, the decision for it
//! (made once per caller and configuration, and counted), and the watch that cuts a connection
//! the moment its caller loses its permission or its certificate stops being trusted: expired,
//! revoked, or signed by a CA the mesh no longer trusts.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use rustls_pki_types::CertificateDer;
use ward_api::{
    Resource,
    dataplane::Tags,
    permission::Action,
    policy::{self, Decision},
};
use ward_pki::{SpiffeId, VerifiedSvid, VerifyError};

use crate::{
    config::Config,
    metrics::{DecisionLabels, OUTBOUND, ReasonLabels},
    state::State,
};

/// How long a new caller's connection waits for the control plane to tell this proxy the tags
/// of the caller's certificate, when the permissions look at tags and the certificate is new.
const TAGS_WAIT: Duration = Duration::from_secs(5);

/// A workload proven by the certificate it presented in a handshake.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The SPIFFE ID it proves.
    pub id: SpiffeId,
    /// Its certificate's serial, lowercase hex.
    pub serial: String,
    /// When its certificate expires.
    pub not_after: DateTime<Utc>,
    /// Which CA key signed its certificate (see [`ward_pki::VerifiedSvid::issuer`]).
    pub issuer: String,
    leaf: CertificateDer<'static>,
}

impl Peer {
    /// The peer of an established TLS connection, whose handshake verified its certificate
    /// against the configuration in force (its chain is not verified again).
    pub fn of(state: &State, connection: &rustls::CommonState) -> Option<Peer> {
        let leaf = connection.peer_certificates()?.first()?.clone().into_owned();
        let config = state.config()?;
        let verified = config.bundle.verified_peer(&leaf).ok()?;
        Peer::held(&config, verified, leaf, Utc::now())
    }

    /// The peer proven by `leaf`, when `config` trusts it at `now`.
    pub fn verify(config: &Config, leaf: CertificateDer<'static>, now: DateTime<Utc>) -> Option<Peer> {
        let verified = config.bundle.verify_peer(&leaf, now).ok()?;
        Peer::held(config, verified, leaf, now)
    }

    /// The peer of a verified certificate, unless revoked or expired.
    fn held(
        config: &Config,
        verified: VerifiedSvid,
        leaf: CertificateDer<'static>,
        now: DateTime<Utc>,
    ) -> Option<Peer> {
        let peer = Peer {
            id: verified.spiffe_id,
            serial: verified.serial,
            not_after: verified.not_after,
            issuer: verified.issuer,
            leaf,
        };
        let live = now < peer.not_after && !config.revoked_serials.contains(&peer.serial);
        live.then_some(peer)
    }

    /// Why `config` no longer trusts this peer at `now`, if it does not.
    pub fn distrusted(&self, config: &Config, now: DateTime<Utc>) -> Option<Cut> {
        if now >= self.not_after {
            return Some(Cut::Expired);
        }
        if config.revoked_serials.contains(&self.serial) {
            return Some(Cut::Revoked);
        }
        match config.bundle.verify_svid(&self.leaf, now) {
            Ok(id) if id == self.id => None,
            Err(VerifyError::Expired { .. }) => Some(Cut::Expired),
            _ => Some(Cut::Untrusted),
        }
    }

    /// Completes, with the reason, once the peer is no longer trusted: at its certificate's
    /// expiry, or with the first configuration that revokes it or no longer trusts its CA.
    pub async fn distrust(&self, state: &State) -> Cut {
        first_cut(state, Some(self.not_after), |config, _| self.distrusted(config, Utc::now())).await
    }

    /// Completes once this peer, reached by an outbound connection to `endpoint`, is no longer
    /// trusted; logs and counts the cut. The connection it guards ends with it.
    pub async fn watched(self, state: Arc<State>, endpoint: SocketAddr) {
        let cut = self.distrust(&state).await;
        tracing::info!(%endpoint, peer = %self.id, reason = cut.as_str(), "closing a connection to a peer no longer trusted");
        cut.count(&state, OUTBOUND);
    }
}

/// Completes with the first reason `check` gives, asked now, at every new configuration or
/// certificate (told whether one came since the start), and at `expires`.
pub(crate) async fn first_cut(
    state: &State,
    expires: Option<DateTime<Utc>>,
    mut check: impl FnMut(&Config, bool) -> Option<Cut>,
) -> Cut {
    let mut changes = state.changes();
    let mut changed = false;
    loop {
        let Some(config) = state.config() else { return Cut::Untrusted };
        if let Some(cut) = check(&config, changed) {
            return cut;
        }
        let wait = expires.map_or(Duration::from_secs(365 * 24 * 3600), until);
        tokio::select! {
            result = changes.changed() => match result {
                Ok(()) => changed = true,
                Err(_) => std::future::pending::<()>().await,
            },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Time from now until `at`, zero when past.
fn until(at: DateTime<Utc>) -> Duration {
    (at - Utc::now()).to_std().unwrap_or_default()
}

/// Why an open connection was closed, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The caller's permission was taken away.
    Permission,
    /// The peer's certificate expired.
    Expired,
    /// The peer's dataplane token was revoked.
    Revoked,
    /// The peer's certificate no longer chains to the mesh's trust bundle.
    Untrusted,
    /// The inbound the caller reached is no longer in the configuration.
    InboundRemoved,
}

impl Cut {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Cut::Permission => "permission",
            Cut::Expired => "expired",
            Cut::Revoked => "revoked",
            Cut::Untrusted => "untrusted",
            Cut::InboundRemoved => "inbound_removed",
        }
    }

    /// Counts a connection closed for this reason.
    pub fn count(self, state: &State, direction: &'static str) {
        state.metrics.connections_cut.get_or_create(&ReasonLabels { direction, reason: self.as_str() }).inc();
    }
}

/// Who is calling, as far as the connection proves it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A mesh workload with a verified certificate.
    Mesh(Peer),
    /// Plaintext in a PERMISSIVE mesh.
    Anonymous,
    /// mTLS is off in this mesh: nothing is checked.
    Unchecked,
}

impl Caller {
    /// The decision of `config` for this caller at inbound `inbound` (its index in the Dataplane).
    pub fn decide(&self, config: &Config, inbound: usize) -> Decision {
        match self {
            Caller::Mesh(peer) => config.authorizer.decide(Some((peer, config.peer_tags.get(&peer.serial))), inbound),
            Caller::Anonymous => config.authorizer.decide(None, inbound),
            Caller::Unchecked => Decision { action: Action::Allow, policy: None },
        }
    }

    /// The caller in metrics and logs: its SPIFFE ID, or `anonymous`.
    pub fn label(&self) -> &str {
        match self {
            Caller::Mesh(peer) => peer.id.as_str(),
            Caller::Anonymous | Caller::Unchecked => "anonymous",
        }
    }

    /// Completes, with the reason, when the caller's connection to an inbound must be closed:
    /// its certificate expires, is revoked or is no longer trusted, or a new configuration
    /// denies it or no longer has that inbound (`inbound` finds its index in a configuration,
    /// see [`Config::inbound_index`]). A caller denied from the start keeps its connection,
    /// and gets 403 for each request.
    pub async fn cut(&self, state: &State, inbound: impl Fn(&Config) -> Option<usize>) -> Cut {
        let peer = match self {
            Caller::Mesh(peer) => Some(peer),
            Caller::Anonymous | Caller::Unchecked => None,
        };
        first_cut(state, peer.map(|p| p.not_after), |config, changed| {
            peer.and_then(|p| p.distrusted(config, Utc::now())).or_else(|| {
                if !changed {
                    return None;
                }
                match inbound(config) {
                    None => Some(Cut::InboundRemoved),
                    Some(index) => (!self.decide(config, index).allows()).then_some(Cut::Permission),
                }
            })
        })
        .await
    }

    /// Waits, at most a few seconds, until the configuration tells the tags of this caller's
    /// certificate, when the permissions look at callers' tags: a certificate issued a moment ago
    /// reaches this proxy's configuration shortly after it reaches its holder.
    pub async fn await_tags(&self, state: &State) {
        let Caller::Mesh(peer) = self else { return };
        let known = |c: &Config| !c.authorizer.needs_tags() || c.peer_tags.contains_key(&peer.serial);
        if state.config().is_none_or(|c| known(&c)) {
            return;
        }
        let mut changes = state.changes();
        let deadline = Instant::now() + TAGS_WAIT;
        while state.config().is_some_and(|c| !known(&c)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, changes.changed()).await.is_err() {
                tracing::warn!(caller = %peer.id, serial = %peer.serial, "the tags of the caller's certificate are unknown; deciding without them");
                return;
            }
        }
    }
}

/// Decides a caller at inbound `inbound` with the configuration in force, counting the decision.
pub fn authorize(state: &State, caller: &Caller, config: &Config, inbound: usize) -> Decision {
    let decision = caller.decide(config, inbound);
    if !matches!(caller, Caller::Unchecked) {
        let labels = DecisionLabels {
            action: decision.action.as_str().to_string(),
            policy: crate::inbound::policy_label(&decision),
        };
        state.metrics.authorization.get_or_create(&labels).inc();
    }
    if decision.action == Action::AllowWithShadowDeny {
        tracing::info!(caller = caller.label(), decision = %decision, "shadow deny: let through, would have been denied");
    }
    decision
}

/// The permissions of this dataplane, and the decisions already made with them.
#[derive(Debug, serde::Serialize)]
pub struct Authorizer {
    #[serde(serialize_with = "resources_json")]
    permissions: Vec<Resource>,
    #[serde(skip)]
    destination: Resource,
    #[serde(skip)]
    needs_tags: bool,
    /// Decisions by inbound and the caller's certificate serial (a serial names one identity).
    #[serde(skip)]
    decided: Mutex<HashMap<String, HashMap<usize, Decision>>>,
    /// The decisions for anonymous callers, by inbound, once made.
    #[serde(skip)]
    anonymous: Mutex<HashMap<usize, Decision>>,
}

impl Authorizer {
    /// An authorizer for callers of `destination`.
    pub fn new(permissions: Vec<Resource>, destination: Resource) -> Self {
        let needs_tags = policy::depend_on_caller_tags(&permissions);
        Authorizer { permissions, destination, needs_tags, decided: Mutex::default(), anonymous: Mutex::default() }
    }

    /// Whether some decision depends on a caller's tags beyond its service.
    pub fn needs_tags(&self) -> bool {
        self.needs_tags
    }

    /// The decision at inbound `inbound` for a caller proven by a certificate (with the tags of
    /// the dataplane it was issued to, when known), or anonymous (`None`); each certificate is
    /// decided once per inbound and configuration.
    pub fn decide(&self, caller: Option<(&Peer, Option<&Vec<Tags>>)>, inbound: usize) -> Decision {
        let at =
            |caller: &policy::Caller| policy::decide_at_inbound(&self.permissions, caller, &self.destination, inbound);
        let Some((peer, tags)) = caller else {
            let mut anonymous = self.anonymous.lock().expect("decision cache lock");
            return anonymous.entry(inbound).or_insert_with(|| at(&policy::Caller::Anonymous)).clone();
        };
        let mut decided = self.decided.lock().expect("decision cache lock");
        if let Some(d) = decided.get(peer.serial.as_str()).and_then(|at_inbound| at_inbound.get(&inbound)) {
            return d.clone();
        }
        let decision = at(&policy::Caller::Workload { id: peer.id.clone(), tags: tags.cloned() });
        decided.entry(peer.serial.clone()).or_default().insert(inbound, decision.clone());
        decision
    }
}

fn resources_json<S: serde::Serializer>(r: &[Resource], s: S) -> Result<S::Ok, S::Error> {
    let list: Vec<_> = r.iter().map(Resource::to_json).collect();
    serde::Serialize::serialize(&list, s)
}
