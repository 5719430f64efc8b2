//! The proxy's side of the discovery stream: register, receive configurations and
//! certificates, renew the certificate at half its life, and reconnect with backoff when the
//! control plane goes away, serving all along with what it last received.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate as CaCertificate, Channel, ClientTlsConfig, Endpoint};
use ward_api::Resource;
use ward_pki::{Backoff, SpiffeId};
use ward_proto::discovery::{
    CertificateRequest, ControlMessage, InboundHealth, ProxyMessage, Register, control_message,
    discovery_client::DiscoveryClient, proxy_message,
};

use crate::{
    config::{Config, Mode},
    identity::{self, PendingKey},
    state::State,
};

/// How long to wait for the answer to a CSR before asking again.
const CSR_TIMEOUT: Duration = Duration::from_secs(15);
/// The shortest wait after the control plane refused this proxy: a refused token stays refused
/// until an operator acts, so asking again at the network-error pace only adds noise.
const REFUSED_MIN_DELAY: Duration = Duration::from_secs(15);
/// The longest such wait.
const REFUSED_MAX_DELAY: Duration = Duration::from_secs(300);
/// At most this long after a configuration shortens the certificate lifetime, the proxy renews
/// (spread so that a mesh's proxies do not all ask at once).
const SHORTENED_LIFETIME_SPREAD: Duration = Duration::from_secs(30);

/// The control plane turned this proxy away (token refused, revoked, or a Dataplane it will not
/// accept), in its own words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Whether a status from the control plane is a refusal rather than a failure to answer.
fn refusal(status: &tonic::Status) -> Option<Refused> {
    use tonic::Code::*;
    matches!(status.code(), PermissionDenied | Unauthenticated | InvalidArgument | FailedPrecondition | NotFound)
        .then(|| Refused(status.message().to_string()))
}

/// A status from the control plane as an error: a [`Refused`] when it is one.
fn status_error(status: tonic::Status) -> anyhow::Error {
    match refusal(&status) {
        Some(refused) => refused.into(),
        None => anyhow::anyhow!("{}", status.message()),
    }
}

/// Where the control plane is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// `https://host:port` of the discovery server.
    pub cp_address: String,
    /// The control plane's CA, PEM.
    pub ca_cert_pem: String,
    /// File holding the dataplane token; read at every connection, so it can be replaced.
    pub token_file: PathBuf,
    /// The Dataplane to register.
    pub dataplane: Resource,
}

/// One identity the proxy holds a certificate for, and when its next CSR is due.
struct Held {
    id: SpiffeId,
    service: String,
    /// The identity the proxy calls others with (the first service), as opposed to that of a
    /// further service its inbounds serve.
    main: bool,
    due: tokio::time::Instant,
    backoff: Backoff,
}

impl Held {
    /// Its certificate in use, if any.
    fn svid(&self, state: &State) -> Option<Arc<crate::identity::Svid>> {
        if self.main { state.svid() } else { state.svid_for(&self.service) }
    }

    fn retry_later(&mut self) {
        self.due = tokio::time::Instant::now() + self.backoff.next_delay(rand::random());
    }
}

/// The proxy's certificates, one per service it serves (the main one first), and the one key
/// waiting for its certificate: requests go one at a time, so each answer is for the pending one.
struct Renewal {
    held: Vec<Held>,
    pending: Option<(usize, PendingKey, tokio::time::Instant)>,
}

impl Renewal {
    /// Takes the identities a new configuration gives: one workload ID for every service when a
    /// MeshIdentity selects the dataplane, else one per service; a changed one is asked for at once.
    fn adopt(&mut self, config: &Config) {
        for held in &mut self.held {
            let wanted = match &config.workload_id {
                Some(id) => id.clone(),
                None => match SpiffeId::for_service(&config.mesh, &held.service) {
                    Ok(id) => id,
                    Err(_) => continue,
                },
            };
            if wanted != held.id {
                tracing::info!(service = %held.service, from = %held.id, to = %wanted, "the dataplane's identity changed; asking for a certificate of the new one");
                held.id = wanted;
                held.due = tokio::time::Instant::now();
            }
        }
    }

    /// Which certificate to ask for next, and when: the pending one again after its timeout,
    /// else the one due first.
    fn next(&self) -> (usize, tokio::time::Instant) {
        match &self.pending {
            Some((i, _, sent)) => (*i, *sent + CSR_TIMEOUT),
            None => self
                .held
                .iter()
                .enumerate()
                .map(|(i, h)| (i, h.due))
                .min_by_key(|(_, due)| *due)
                .unwrap_or_else(|| (0, tokio::time::Instant::now() + Duration::from_secs(365 * 86_400))),
        }
    }
}

/// Runs the stream until `shutdown`, reconnecting whenever it breaks.
pub async fn run(state: Arc<State>, options: DiscoveryOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let channel = channel(&options)?;
    let held = identities_of(&options.dataplane)?;
    let mut renewal = Renewal { held, pending: None };
    let mut backoff = Backoff::new();
    loop {
        let outcome = session(&state, &options, channel.clone(), &mut renewal, &mut backoff, &shutdown).await;
        state.set_cp_connected(false);
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) => {
                let delay = backoff.next_delay(rand::random());
                match e.downcast_ref::<Refused>() {
                    Some(Refused(reason)) => {
                        let delay = (delay * 15).clamp(REFUSED_MIN_DELAY, REFUSED_MAX_DELAY);
                        tracing::error!(%reason, retry_in = ?delay, "the control plane refused this proxy; serving with the last configuration until it accepts it");
                        state.set_refused(Some(reason.clone()));
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.cancelled() => return Ok(()),
                        }
                        continue;
                    }
                    None => {
                        tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "control plane unreachable; serving with the last configuration")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
}

fn channel(options: &DiscoveryOptions) -> anyhow::Result<Channel> {
    let uri: http::Uri =
        options.cp_address.parse().with_context(|| format!("--cp-address {:?}: not a URL", options.cp_address))?;
    if uri.scheme_str() != Some("https") {
        bail!("--cp-address {:?}: must be https://HOST:PORT (the discovery stream is always TLS)", options.cp_address);
    }
    let host = uri.host().context("--cp-address: no host")?.trim_matches(['[', ']']).to_string();
    let tls = ClientTlsConfig::new().ca_certificate(CaCertificate::from_pem(&options.ca_cert_pem)).domain_name(host);
    Ok(Endpoint::from(uri)
        .tls_config(tls)
        .context("--ca-cert")?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect_lazy())
}

/// The identities the Dataplane's services give it: the one it calls others with first.
fn identities_of(dataplane: &Resource) -> anyhow::Result<Vec<Held>> {
    let ward_api::Spec::Dataplane(dp) = &dataplane.spec else { bail!("dataplane file: not a Dataplane") };
    let mut held = Vec::new();
    for (i, service) in dp.services().into_iter().enumerate() {
        let id = SpiffeId::for_service(&dataplane.meta.mesh, service)
            .map_err(|e| anyhow::anyhow!("dataplane file: no SPIFFE ID for service {service:?}: {e}"))?;
        let (service, main, due, backoff) = (service.to_string(), i == 0, tokio::time::Instant::now(), Backoff::new());
        held.push(Held { id, service, main, due, backoff });
    }
    Ok(held)
}

/// One stream, from connection to its end; `Ok` only on shutdown.
async fn session(
    state: &Arc<State>,
    options: &DiscoveryOptions,
    channel: Channel,
    renewal: &mut Renewal,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&options.token_file)
        .with_context(|| format!("--dataplane-token-file {}", options.token_file.display()))?;
    let (outbox, outgoing) = mpsc::channel(8);
    let register = Register {
        dataplane_json: options.dataplane.to_json().to_string(),
        proxy_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    outbox.send(ProxyMessage { message: Some(proxy_message::Message::Register(register)) }).await?;
    let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
    let bearer = format!("Bearer {}", token.trim()).parse().context("the dataplane token is not valid header text")?;
    request.metadata_mut().insert("authorization", bearer);
    let mut incoming = DiscoveryClient::new(channel).stream(request).await.map_err(status_error)?.into_inner();
    state.set_cp_connected(true);
    tracing::info!(cp = %options.cp_address, "connected to the control plane");
    // Certificates held from an earlier stream are renewed on schedule; missing ones at once.
    renewal.pending = None;
    for held in &mut renewal.held {
        if held.svid(state).is_none() {
            held.due = tokio::time::Instant::now();
        }
    }
    // The health of probed inbounds: all of it once per stream, then each change.
    let mut health = state.inbound_health();
    let mut reported = BTreeMap::new();
    report_health(&outbox, &mut health, &mut reported).await?;
    loop {
        let wants_certificate = state.config().is_some_and(|c| c.mode != Mode::Disabled);
        let (next, deadline) = renewal.next();
        tokio::select! {
            message = incoming.message() => {
                let message = message.map_err(status_error)?.context("the control plane closed the stream")?;
                state.set_refused(None);
                handle(state, renewal, message);
                backoff.reset();
            }
            _ = tokio::time::sleep_until(deadline), if wants_certificate => {
                if renewal.pending.is_some() {
                    tracing::warn!("no answer to the certificate request within 15s; asking again");
                }
                let held = &renewal.held[next];
                let pending = identity::request(&held.id)?;
                let csr = CertificateRequest { csr_pem: pending.csr_pem.clone(), service: held.service.clone() };
                renewal.pending = Some((next, pending, tokio::time::Instant::now()));
                outbox.send(ProxyMessage { message: Some(proxy_message::Message::CertificateRequest(csr)) }).await?;
            }
            Ok(()) = health.changed() => report_health(&outbox, &mut health, &mut reported).await?,
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Sends the health of each probed inbound that differs from what this stream reported.
async fn report_health(
    outbox: &mpsc::Sender<ProxyMessage>,
    health: &mut watch::Receiver<BTreeMap<u32, bool>>,
    reported: &mut BTreeMap<u32, bool>,
) -> anyhow::Result<()> {
    let current = health.borrow_and_update().clone();
    for (inbound, ready) in current {
        if reported.insert(inbound, ready) != Some(ready) {
            let message = proxy_message::Message::InboundHealth(InboundHealth { inbound, ready });
            outbox.send(ProxyMessage { message: Some(message) }).await?;
        }
    }
    Ok(())
}

/// Applies one message of the control plane.
fn handle(state: &State, renewal: &mut Renewal, message: ControlMessage) {
    match message.message {
        Some(control_message::Message::Config(proto)) => match Config::from_proto(&proto) {
            Ok(config) => {
                renewal.adopt(&config);
                if config.mode != Mode::Disabled {
                    reschedule(state, renewal, &config, &proto.enabled_backend);
                }
                tracing::debug!(version = config.version, "new configuration");
                state.set_config(config);
            }
            Err(e) => tracing::error!(error = %e, "configuration refused; keeping the previous one"),
        },
        Some(control_message::Message::Certificate(certificate)) => {
            let Some((i, pending, _)) = renewal.pending.take() else {
                tracing::warn!("a certificate arrived that no request was waiting for; ignored");
                return;
            };
            let held = &mut renewal.held[i];
            let Some(config) = state.config() else {
                tracing::warn!("a certificate arrived before any configuration; asking again");
                held.retry_later();
                return;
            };
            match identity::accept(&pending, &certificate, &held.id, &held.service, &config.bundle) {
                Ok(svid) => {
                    // Half of the life left from now (NotBefore is backdated for clock skew).
                    let renew_at = ward_pki::renew_at(Utc::now(), svid.not_after, rand::random());
                    let wait = (renew_at - Utc::now()).max(TimeDelta::zero()).to_std().unwrap_or_default();
                    tracing::info!(spiffe_id = %svid.spiffe_id, serial = %svid.serial, not_after = %svid.not_after, renew_in = ?wait, "certificate installed");
                    state.set_svid(svid, held.main);
                    held.backoff.reset();
                    held.due = tokio::time::Instant::now() + wait;
                }
                Err(e) => {
                    tracing::error!(error = %e, "certificate from the control plane refused");
                    held.retry_later();
                }
            }
        }
        Some(control_message::Message::CertificateRefused(refused)) => {
            tracing::error!(reason = %refused.reason, "the control plane refused to sign a certificate");
            if let Some((i, _, _)) = renewal.pending.take() {
                renewal.held[i].retry_later();
            }
        }
        None => tracing::warn!("empty message from the control plane"),
    }
}

/// Brings renewals forward for a new configuration: at once when the mesh's signing CA changed,
/// soon (spread) when a certificate outlives a shortened lifetime.
fn reschedule(state: &State, renewal: &mut Renewal, config: &Config, enabled_backend: &str) {
    let pending = renewal.pending.as_ref().map(|(i, _, _)| *i);
    for (i, held) in renewal.held.iter_mut().enumerate() {
        let Some(svid) = held.svid(state) else { continue };
        if Some(i) == pending {
            continue;
        }
        if svid.backend != enabled_backend {
            tracing::info!(backend = %enabled_backend, service = %held.service, "the mesh's signing CA changed; renewing the certificate now");
            held.due = tokio::time::Instant::now();
        } else if outlives(&svid, config.certificate_lifetime, Utc::now()) {
            let spread = (config.certificate_lifetime / 10).min(SHORTENED_LIFETIME_SPREAD);
            let wait = spread.mul_f64(rand::random::<f64>());
            tracing::info!(not_after = %svid.not_after, lifetime = ?config.certificate_lifetime, renew_in = ?wait, "the certificate outlives the mesh's new lifetime; renewing");
            held.due = held.due.min(tokio::time::Instant::now() + wait);
        }
    }
}

/// Whether a certificate lives on past what the mesh now issues (its lifetime was shortened).
fn outlives(svid: &crate::identity::Svid, lifetime: Duration, now: chrono::DateTime<Utc>) -> bool {
    // A minute of slack: certificates are backdated for clock skew.
    let allowed = TimeDelta::from_std(lifetime + Duration::from_secs(60)).unwrap_or(TimeDelta::MAX);
    !lifetime.is_zero() && svid.not_after - now > allowed
}

/// Logs loudly, every ten seconds, while the certificate is about to expire and the control
/// plane cannot renew it.
pub async fn watch_expiry(state: Arc<State>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = shutdown.cancelled() => return,
        }
        let Some((svid, left)) = state.expiring_unrenewed() else { continue };
        if left <= TimeDelta::zero() {
            tracing::error!(serial = %svid.serial, expired_at = %svid.not_after, "certificate EXPIRED and the control plane is unreachable: mTLS connections fail until it is back");
        } else {
            tracing::error!(serial = %svid.serial, expires_in_seconds = left.num_seconds(), "certificate expires soon and the control plane is unreachable to renew it");
        }
    }
}
