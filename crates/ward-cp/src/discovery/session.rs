//! One proxy's stream: authenticate its token, store its Dataplane, then push its
//! configuration on every change and answer its certificate requests.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use ward_api::{Resource, ResourceType, Spec, dataplane::Health, parse, policy};
use ward_pki::{DataplaneClaims, SpiffeId};
use ward_proto::discovery::{
    Certificate, CertificateRefused, ControlMessage, InboundHealth, ProxyConfig, ProxyMessage, Register,
    control_message, proxy_message,
};

use super::{Discovery, online::SessionInfo, snapshot::SharedSnapshot, workload_ids::WORKLOAD_LABEL};
use crate::store::{Actor, DataplaneCert, IssuedCert, StoreError};

/// How long a new stream may take to send its Register message.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new stream waits for its mesh's first snapshot.
const FIRST_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

/// An authenticated, registered proxy.
pub struct Session {
    discovery: Discovery,
    token: String,
    claims: DataplaneClaims,
    id: u64,
    cancel: CancellationToken,
    snapshots: watch::Receiver<SharedSnapshot>,
    out: mpsc::Sender<Result<ControlMessage, Status>>,
    last_config: Option<ProxyConfig>,
}

impl Session {
    /// Reads the Register message, checks the token against it, stores the Dataplane and marks it online.
    pub async fn open(
        discovery: Discovery,
        token: String,
        remote: Option<SocketAddr>,
        incoming: &mut Streaming<ProxyMessage>,
        out: mpsc::Sender<Result<ControlMessage, Status>>,
    ) -> Result<Session, Status> {
        let first = tokio::time::timeout(REGISTER_TIMEOUT, incoming.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register message within 30s"))??;
        let Some(ProxyMessage { message: Some(proxy_message::Message::Register(register)) }) = first else {
            return Err(Status::invalid_argument("the first message of a stream must be Register"));
        };
        let (dataplane, services) = read_dataplane(&register)?;
        let (mesh, name) = (dataplane.meta.mesh.clone(), dataplane.meta.name.clone());
        let services: Vec<&str> = services.iter().map(String::as_str).collect();
        let claims = match discovery.identity.verify_token(&token, &mesh, &name, &services).await {
            Ok(claims) => claims,
            Err(e) => {
                let reason = format!("dataplane token refused: {e}");
                tracing::warn!(%mesh, dataplane = %name, %reason, "proxy refused");
                // Only for dataplanes that exist, so a caller cannot fill the registry with names.
                if discovery.store.get(ResourceType::Dataplane, &mesh, &name).await.is_ok_and(|d| d.is_some()) {
                    discovery.online.refuse(&mesh, &name, &reason);
                }
                return Err(Status::permission_denied(reason));
            }
        };
        if let Some(reason) = not_a_member(&discovery, &dataplane).await? {
            tracing::warn!(%mesh, dataplane = %name, %reason, "proxy refused");
            if discovery.store.get(ResourceType::Dataplane, &mesh, &name).await.is_ok_and(|d| d.is_some()) {
                discovery.online.refuse(&mesh, &name, &reason);
            }
            return Err(Status::permission_denied(reason));
        }
        store_dataplane(&discovery, dataplane).await?;

        let cancel = CancellationToken::new();
        let info = SessionInfo {
            id: 0,
            connected_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            proxy_version: register.proxy_version.clone(),
            token_id: claims.jti.clone(),
            remote_address: remote,
            cancel: cancel.clone(),
        };
        let snapshots = discovery.snapshots.subscribe(&mesh);
        let id = discovery.online.connect(&mesh, &name, info);
        tracing::info!(%mesh, dataplane = %name, ?services, remote = ?remote, "proxy connected");
        Ok(Session { discovery, token, claims, id, cancel, snapshots, out, last_config: None })
    }

    /// Serves the stream until the proxy leaves, is replaced, or its token is revoked.
    pub async fn run(mut self, mut incoming: Streaming<ProxyMessage>) {
        let end = self.serve(&mut incoming).await.err();
        let (mesh, name) = (&self.claims.mesh, &self.claims.name);
        self.discovery.online.disconnect(mesh, name, self.id);
        match end {
            Some(status) => {
                tracing::info!(%mesh, dataplane = %name, reason = %status.message(), "proxy stream closed by the control plane");
                let _ = self.out.send(Err(status)).await;
            }
            None => tracing::info!(%mesh, dataplane = %name, "proxy disconnected"),
        }
    }

    async fn serve(&mut self, incoming: &mut Streaming<ProxyMessage>) -> Result<(), Status> {
        let mut revocations = self.discovery.identity.revocations();
        // Certificates are signed with a current snapshot, so wait for the first one that holds us.
        tokio::time::timeout(
            FIRST_SNAPSHOT_TIMEOUT,
            self.snapshots.wait_for(|s| s.dataplanes.contains_key(&self.claims.name)),
        )
        .await
        .map_err(|_| Status::unavailable("the mesh's configuration was not ready within 30s"))?
        .map_err(|_| Status::unavailable("the control plane is shutting down"))?;
        self.push_config().await?;
        loop {
            tokio::select! {
                message = incoming.message() => match message {
                    Ok(Some(ProxyMessage { message: Some(proxy_message::Message::CertificateRequest(request)) })) => {
                        let answer = self.sign(&request.csr_pem, &request.service).await;
                        self.send(answer).await?;
                    }
                    Ok(Some(ProxyMessage { message: Some(proxy_message::Message::InboundHealth(report)) })) => {
                        self.record_health(report).await?;
                    }
                    Ok(Some(_)) => {
                        return Err(Status::invalid_argument("only CertificateRequest and InboundHealth may follow Register"));
                    }
                    Ok(None) => return Ok(()),
                    Err(status) => {
                        tracing::debug!(error = %status, "proxy stream broke");
                        return Ok(());
                    }
                },
                changed = self.snapshots.changed() => {
                    changed.map_err(|_| Status::unavailable("the control plane is shutting down"))?;
                    self.push_config().await?;
                }
                _ = revocations.changed() => {
                    if self.discovery.identity.is_revoked(&self.claims.jti) {
                        let reason = format!("dataplane token refused: token {} has been revoked", self.claims.jti);
                        self.discovery.online.refuse(&self.claims.mesh, &self.claims.name, &reason);
                        return Err(Status::permission_denied(reason));
                    }
                }
                _ = self.cancel.cancelled() => return Err(Status::aborted("a newer stream of this dataplane replaced this one")),
                _ = self.out.closed() => return Ok(()),
            }
        }
    }

    /// Records the health the proxy found by probing an inbound as that inbound's
    /// `health.ready`, as Kuma's health discovery does; the snapshot then adds or removes the
    /// endpoint.
    async fn record_health(&self, report: InboundHealth) -> Result<(), Status> {
        let (mesh, name) = (&self.claims.mesh, &self.claims.name);
        let Some(mut stored) =
            self.discovery.store.get(ResourceType::Dataplane, mesh, name).await.map_err(store_status)?
        else {
            return Ok(());
        };
        let Spec::Dataplane(dp) = &mut stored.spec else { return Ok(()) };
        let at = format!("networking.inbound[{}]", report.inbound);
        let Some(inbound) = dp.networking.inbound.get_mut(report.inbound as usize) else {
            return Err(Status::invalid_argument(format!("inbound health: the Dataplane has no {at}")));
        };
        if inbound.service_probe.is_none() {
            return Err(Status::invalid_argument(format!("inbound health: {at} has no serviceProbe")));
        }
        if inbound.health.as_ref().map(|h| h.ready) == Some(report.ready) {
            return Ok(());
        }
        inbound.health = Some(Health { ready: report.ready });
        tracing::info!(%mesh, dataplane = %name, inbound = %at, ready = report.ready, "probed inbound health changed");
        self.discovery.store.put(stored, &Actor(format!("dataplane:{name}"))).await.map_err(store_status)?;
        Ok(())
    }

    /// Sends the configuration when it differs from the last one sent; ends the stream of a
    /// dataplane its mesh's constraints no longer admit.
    async fn push_config(&mut self) -> Result<(), Status> {
        let snapshot = self.snapshots.borrow_and_update().clone();
        if let Some(reason) = snapshot.non_members.get(&self.claims.name) {
            let reason = format!("not a member of mesh {}: {reason}", self.claims.mesh);
            self.discovery.online.refuse(&self.claims.mesh, &self.claims.name, &reason);
            return Err(Status::permission_denied(reason));
        }
        let Some(config) = snapshot.proxy_config(&self.claims.name) else {
            return Err(Status::not_found(format!(
                "dataplane {} or its mesh {} was deleted",
                self.claims.name, self.claims.mesh
            )));
        };
        let unchanged = self
            .last_config
            .as_ref()
            .is_some_and(|last| ProxyConfig { version: config.version, ..last.clone() } == config);
        if unchanged {
            return Ok(());
        }
        self.last_config = Some(config.clone());
        self.send(control_message::Message::Config(config)).await
    }

    async fn send(&self, message: control_message::Message) -> Result<(), Status> {
        self.out
            .send(Ok(ControlMessage { message: Some(message) }))
            .await
            .map_err(|_| Status::cancelled("the proxy went away"))
    }

    /// Signs a CSR for the identity of `service` (empty: the dataplane's first), one of the
    /// registered Dataplane's services that the token grants, or says why not.
    async fn sign(&self, csr_pem: &str, service: &str) -> control_message::Message {
        let refuse = |reason: String| {
            tracing::warn!(mesh = %self.claims.mesh, dataplane = %self.claims.name, %reason, "certificate request refused");
            control_message::Message::CertificateRefused(CertificateRefused { reason })
        };
        let claims = &self.claims;
        let snapshot = self.snapshots.borrow().clone();
        if let Some(reason) = snapshot.non_members.get(&claims.name) {
            return refuse(format!("not a member of mesh {}: {reason}", claims.mesh));
        }
        let Some(resource @ Resource { spec: Spec::Dataplane(dp), .. }) = snapshot.dataplanes.get(&claims.name) else {
            return refuse(format!("dataplane {} is not in mesh {}", claims.name, claims.mesh));
        };
        let services = dp.services();
        let service = if service.is_empty() { dp.service() } else { service };
        if !services.contains(&service) {
            return refuse(format!(
                "service {service:?} is not one of the dataplane's (networking.inbound[].tags.kuma.io/service: {})",
                services.join(", ")
            ));
        }
        if let Err(e) = self.discovery.identity.verify_token(&self.token, &claims.mesh, &claims.name, &[service]).await
        {
            return refuse(format!("dataplane token refused: {e}"));
        }
        let (ca, id, lifetime, backend) = if snapshot.issuers.in_use() {
            let (id, issuer) = match snapshot.issuers.of(&claims.name) {
                Ok(found) => found,
                Err(reason) => return refuse(reason),
            };
            // A workload named in an identity must be one the token vouches for: a dataplane sets
            // its own labels when it registers.
            if let Some(workload) = resource.meta.labels.get(WORKLOAD_LABEL)
                && workload != &claims.service
                && !claims.more_services.contains(workload)
            {
                return refuse(format!(
                    "label {WORKLOAD_LABEL}: {workload:?} is not a service the dataplane token is for; \
                     a MeshIdentity renders it into the dataplane's SPIFFE ID"
                ));
            }
            let Some(ca) = &issuer.ca else {
                return refuse(format!("MeshIdentity {} has no CA yet; apply it again", issuer.name));
            };
            (Arc::clone(ca), id.clone(), issuer.spec.cert_lifetime(), issuer.backend())
        } else {
            let (Some(signer), Some(backend)) =
                (&snapshot.signer, snapshot.mesh.as_ref().and_then(|m| m.enabled_backend()))
            else {
                return refuse(format!("mesh {} has mTLS disabled: there is no CA to sign with", claims.mesh));
            };
            let id = match SpiffeId::for_service(&claims.mesh, service) {
                Ok(id) => id,
                Err(e) => return refuse(format!("no SPIFFE ID for this dataplane: {e}")),
            };
            (Arc::clone(&signer.ca), id, backend.cert_lifetime(), signer.backend.clone())
        };
        let csr = csr_pem.to_string();
        let signed = tokio::task::spawn_blocking(move || ca.sign_svid(&csr, &id, lifetime, Utc::now()))
            .await
            .expect("signing does not panic");
        let svid = match signed {
            Ok(svid) => svid,
            Err(e) => return refuse(e.to_string()),
        };
        if !svid.ignored.is_empty() {
            tracing::warn!(mesh = %claims.mesh, dataplane = %claims.name, ignored = ?svid.ignored, "the CSR asked for more than its identity; that part was left out");
        }
        let record = DataplaneCert {
            spiffe_id: svid.spiffe_id.to_string(),
            serial: svid.serial_hex.clone(),
            not_before: svid.not_before.to_rfc3339(),
            not_after: svid.not_after.to_rfc3339(),
            backend: backend.clone(),
        };
        let issued = IssuedCert {
            serial: svid.serial_hex.clone(),
            dataplane: claims.name.clone(),
            service: service.to_string(),
            token_id: claims.jti.clone(),
            not_after: svid.not_after,
        };
        if let Err(e) = self.discovery.store.record_issued_cert(&claims.mesh, &issued, &record).await {
            return refuse(format!("cannot record the certificate: {e}"));
        }
        // Peers whose permissions look at callers' tags learn this serial's; other meshes need
        // no rebuild (a revocation rebuilds every mesh with the serials recorded here).
        if policy::depend_on_caller_tags(&snapshot.permissions) {
            self.discovery.snapshots.rebuild(&claims.mesh);
        }
        control_message::Message::Certificate(Certificate {
            chain_pem: svid.chain_pem,
            spiffe_id: svid.spiffe_id.to_string(),
            serial: svid.serial_hex,
            not_before_unix: svid.not_before.timestamp(),
            not_after_unix: svid.not_after.timestamp(),
            backend,
        })
    }
}

/// Parses the registered Dataplane and its services, refusing anything else with the reason.
pub fn read_dataplane(register: &Register) -> Result<(Resource, Vec<String>), Status> {
    let doc: serde_json::Value = serde_json::from_str(&register.dataplane_json)
        .map_err(|e| Status::invalid_argument(format!("dataplane: not valid JSON: {e}")))?;
    let resource = parse::resource(doc, "dataplane").map_err(|e| Status::invalid_argument(e.to_string()))?;
    let Spec::Dataplane(dp) = &resource.spec else {
        return Err(Status::invalid_argument(format!("{}: a proxy registers a Dataplane", resource.meta.key())));
    };
    let services = dp.services().into_iter().map(String::from).collect();
    Ok((resource, services))
}

/// Why the mesh's constraints refuse the registered Dataplane, if they do.
async fn not_a_member(discovery: &Discovery, dataplane: &Resource) -> Result<Option<String>, Status> {
    let (mesh, Spec::Dataplane(dp)) = (&dataplane.meta.mesh, &dataplane.spec) else { return Ok(None) };
    let Some(Resource { spec: Spec::Mesh(spec), .. }) =
        discovery.store.get(ResourceType::Mesh, mesh, mesh).await.map_err(store_status)?
    else {
        return Ok(None);
    };
    Ok(ward_api::membership::check(mesh, &spec, dp)
        .err()
        .map(|refusal| format!("not a member of mesh {mesh}: {refusal}")))
}

/// Stores the Dataplane as the proxy describes it, unless the store already holds exactly that.
async fn store_dataplane(discovery: &Discovery, dataplane: Resource) -> Result<(), Status> {
    let mut dataplane = dataplane;
    let meta = &dataplane.meta;
    let stored = discovery.store.get(ResourceType::Dataplane, &meta.mesh, &meta.name).await.map_err(store_status)?;
    // The health of a probed inbound is the control plane's to keep, not the file's to reset.
    if let (Some(Resource { spec: Spec::Dataplane(old), .. }), Spec::Dataplane(new)) = (&stored, &mut dataplane.spec) {
        for (inbound, before) in new.networking.inbound.iter_mut().zip(&old.networking.inbound) {
            if inbound.service_probe.is_some() && before.service_probe.is_some() && inbound.health.is_none() {
                inbound.health.clone_from(&before.health);
            }
        }
    }
    let meta = &dataplane.meta;
    if stored.is_some_and(|s| s.spec == dataplane.spec && s.meta.labels == meta.labels) {
        return Ok(());
    }
    let actor = Actor(format!("dataplane:{}", meta.name));
    discovery.store.put(dataplane, &actor).await.map_err(store_status)?;
    Ok(())
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::UnknownMesh(mesh) => Status::failed_precondition(format!("mesh {mesh:?} does not exist")),
        StoreError::Conflict { .. }
        | StoreError::NotFound(_)
        | StoreError::MissingSecret { .. }
        | StoreError::InUse { .. }
        | StoreError::MixedIdentity { .. } => Status::aborted(e.to_string()),
        StoreError::NotAMember { .. } => Status::permission_denied(e.to_string()),
        StoreError::Database(_) | StoreError::Corrupt { .. } => Status::internal(e.to_string()),
    }
}
