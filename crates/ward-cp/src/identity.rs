//! Mesh identity in the control plane: a CA for each backend of each mesh, dataplane tokens
//! (issue, verify, revoke, rotate their signing keys) and the CAs that sign SVIDs.
//!
//! Every private key is sealed with the key-encryption key before it reaches the store, and
//! is opened only in memory, to sign.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::Duration,
};

use base64::Engine;
use chrono::Utc;
use serde_json::json;
use tokio::sync::watch;
use ward_api::{
    Resource, Spec, ValidationError,
    error::Causes,
    mesh::{BackendType, DataSource, ProvidedConf},
};
use ward_pki::{
    BuiltinCaOptions, Ca, CaError, CaInfo, CaMaterial, DataplaneClaims, SigningKey, TokenError, TrustBundle, token,
};

use crate::{
    provided_files::{ProvidedCaDir, Requester},
    secret_resources::SecretResources,
    secrets::Kek,
    store::{Actor, MeshCa, Store, StoreError, identity_backend},
};

/// Lifetime of a builtin CA when `conf.caCert.expiration` is absent.
const DEFAULT_CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The store failed or holds something unreadable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A token was refused, or could not be made.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A sealed key or stored certificate no longer opens or parses.
    #[error("{what} is unusable: {reason}")]
    Corrupt {
        /// Which key or certificate.
        what: String,
        /// Why.
        reason: String,
    },
}

/// One backend's CA, loaded with its key, ready to sign.
#[derive(Debug, Clone)]
pub struct BackendCa {
    /// Backend name.
    pub backend: String,
    /// The CA.
    pub ca: Arc<Ca>,
}

/// Mesh identity: CAs and dataplane tokens, kept in the store.
#[derive(Clone)]
pub struct Identity {
    store: Store,
    kek: Arc<Kek>,
    revoked: Arc<RwLock<HashSet<String>>>,
    revocations: Arc<watch::Sender<u64>>,
    provided_files: ProvidedCaDir,
    secrets: SecretResources,
}

impl Identity {
    /// Identity over `store`, with the set of revoked tokens loaded; provided CAs may name
    /// files of `provided_files`.
    pub async fn load(store: Store, kek: Arc<Kek>, provided_files: ProvidedCaDir) -> Result<Self, StoreError> {
        let revoked = store.revoked_tokens().await?.into_iter().collect();
        let (revocations, _) = watch::channel(0);
        Ok(Identity {
            secrets: SecretResources::new(store.clone(), kek.clone()),
            store,
            kek,
            revoked: Arc::new(RwLock::new(revoked)),
            revocations: Arc::new(revocations),
            provided_files,
        })
    }

    /// The Secrets and GlobalSecrets, sealed with the same key as every CA key.
    pub fn secrets(&self) -> &SecretResources {
        &self.secrets
    }

    /// Completes a Mesh before it is stored: generates the CA of each builtin backend that has
    /// none yet, checks each provided CA, and replaces inline private keys with a reference to
    /// their sealed copy. Returns the CAs to store with the Mesh. Secrets are read from the
    /// mesh's own; files only for a global admin (see [`ProvidedCaDir`]).
    pub async fn prepare_mesh(
        &self,
        resource: &mut Resource,
        requester: Requester,
    ) -> Result<Vec<MeshCa>, ValidationError> {
        let key = resource.meta.key();
        let mesh_name = resource.meta.name.clone();
        let Spec::Mesh(mesh) = &mut resource.spec else { return Ok(vec![]) };
        let Some(mtls) = &mut mesh.mtls else { return Ok(vec![]) };
        let internal = |e: StoreError| ValidationError::single(key.clone(), "", format!("cannot be stored: {e}"));
        let existing: HashMap<String, MeshCa> = self
            .store
            .mesh_cas(&mesh_name)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|c| (c.backend.clone(), c))
            .collect();
        let mut out = Vec::new();
        let mut causes = Causes::default();
        for (i, backend) in mtls.backends.iter_mut().enumerate() {
            let at = format!("mtls.backends[{i}].conf");
            let seal_name = ca_seal_name(&mesh_name, &backend.name);
            match backend.ty {
                BackendType::Builtin if existing.contains_key(&backend.name) => {}
                BackendType::Builtin => {
                    let conf = backend.builtin_conf().unwrap_or_default().ca_cert.unwrap_or_default();
                    let options = BuiltinCaOptions {
                        rsa_bits: conf.rsa_bits,
                        lifetime: conf.expiration.map_or(DEFAULT_CA_LIFETIME, |e| e.get()),
                    };
                    let mesh = mesh_name.clone();
                    let generated =
                        tokio::task::spawn_blocking(move || ward_pki::generate_builtin(&mesh, &options, Utc::now()))
                            .await
                            .expect("CA generation does not panic");
                    match generated {
                        Ok((material, info)) => {
                            tracing::info!(mesh = %mesh_name, backend = %backend.name, fingerprint = %info.fingerprint_sha256, "generated a builtin CA");
                            out.push(MeshCa {
                                backend: backend.name.clone(),
                                cert_pem: material.cert_pem,
                                sealed_key: self.kek.seal(&seal_name, material.key_pem.as_bytes()),
                                replace: false,
                            });
                        }
                        Err(e) => {
                            let (field, reason) = builtin_cause(&e);
                            causes.add(format!("{at}.caCert{field}"), reason);
                        }
                    }
                }
                // Refused when the mesh is read: Ward does not issue from external CAs.
                BackendType::Vault | BackendType::AcmPca | BackendType::CertManager => {}
                BackendType::Provided => {
                    let Ok(conf) = backend.provided_conf() else { continue };
                    let stored = existing.get(&backend.name);
                    let material = self.provided_material(&mesh_name, &conf, requester, stored, &at, &mut causes).await;
                    let Some(material) = material else { continue };
                    if let Err(e) = ward_pki::validate_provided(&material.cert_pem, &material.key_pem, Utc::now()) {
                        // CaError messages start with the part at fault: "cert: ..." or "key: ...".
                        let text = e.to_string();
                        let (part, reason) = text.split_once(": ").unwrap_or(("cert", &text));
                        causes.add(format!("{at}.{part}"), reason);
                        continue;
                    }
                    if matches!(conf.key, DataSource::Inline(_) | DataSource::InlineString(_)) {
                        backend.conf = Some(json!({ "cert": conf.cert, "key": DataSource::Secret(seal_name.clone()) }));
                    }
                    out.push(MeshCa {
                        backend: backend.name.clone(),
                        cert_pem: material.cert_pem,
                        sealed_key: self.kek.seal(&seal_name, material.key_pem.as_bytes()),
                        replace: true,
                    });
                }
            }
        }
        if causes.0.is_empty() { Ok(out) } else { Err(ValidationError { resource: key, causes: causes.0 }) }
    }

    /// Completes a MeshIdentity before it is stored: generates its CA (kept while its trust domain
    /// stays the same) or reads and checks the one it provides, sealing the key, and replaces an
    /// inline private key with a reference to its sealed copy. Returns the CA to store with it.
    pub async fn prepare_identity(
        &self,
        resource: &mut Resource,
        requester: Requester,
    ) -> Result<Vec<MeshCa>, ValidationError> {
        let key = resource.meta.key();
        let (mesh, name) = (resource.meta.mesh.clone(), resource.meta.name.clone());
        let Spec::MeshIdentity(spec) = &mut resource.spec else { return Ok(vec![]) };
        let refuse = |field: &str, reason: String| ValidationError::single(key.clone(), field, reason);
        let trust_domain =
            spec.trust_domain(&mesh, &resource.meta.labels).map_err(|r| refuse("spec.spiffeID.trustDomain", r))?;
        let backend = identity_backend(&name);
        let seal_name = ca_seal_name(&mesh, &backend);
        let stored = self
            .store
            .mesh_cas(&mesh)
            .await
            .map_err(|e| refuse("", format!("cannot be stored: {e}")))?
            .into_iter()
            .find(|c| c.backend == backend);
        let Some((cert, private_key)) = spec.provided_ca() else {
            let same_domain = stored
                .as_ref()
                .and_then(|c| CaInfo::from_pem(&c.cert_pem).ok())
                .is_some_and(|info| info.subject.rsplit(", ").next() == Some(format!("CN={trust_domain}").as_str()));
            if same_domain {
                return Ok(vec![]);
            }
            let options = BuiltinCaOptions { rsa_bits: None, lifetime: DEFAULT_CA_LIFETIME };
            let domain = trust_domain.clone();
            let (material, info) =
                tokio::task::spawn_blocking(move || ward_pki::generate_builtin(&domain, &options, Utc::now()))
                    .await
                    .expect("CA generation does not panic")
                    .map_err(|e| refuse("spec.spiffeID.trustDomain", e.to_string()))?;
            tracing::info!(%mesh, identity = %name, %trust_domain, fingerprint = %info.fingerprint_sha256, "generated the CA of a MeshIdentity");
            let sealed_key = self.kek.seal(&seal_name, material.key_pem.as_bytes());
            return Ok(vec![MeshCa { backend, cert_pem: material.cert_pem, sealed_key, replace: true }]);
        };
        let at = "spec.provider.bundled.ca";
        let mut causes = Causes::default();
        let cert_at = format!("{at}.certificate");
        let cert_pem = self.read_source(&mesh, &cert, None, requester, &cert_at, &mut causes).await;
        let key_at = format!("{at}.privateKey");
        let key_pem = self.read_source(&mesh, &private_key, stored.as_ref(), requester, &key_at, &mut causes).await;
        let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) else {
            return Err(ValidationError { resource: key, causes: causes.0 });
        };
        let material = CaMaterial { cert_pem, key_pem };
        // Field names of the Mesh's provided backend (`cert`, `key`) become Kuma's here.
        if let Err(e) = ward_pki::validate_provided(&material.cert_pem, &material.key_pem, Utc::now()) {
            let text = e.to_string();
            let (part, reason) = text.split_once(": ").unwrap_or(("cert", &text));
            let field = if part == "key" { "privateKey" } else { "certificate" };
            return Err(refuse(&format!("{at}.{field}"), reason.to_string()));
        }
        let self_signed = CaInfo::from_pem(&material.cert_pem).is_ok_and(|info| info.self_signed);
        if self_signed && !spec.allows_self_signed() {
            return Err(refuse(
                "spec.provider.bundled.insecureAllowSelfSigned",
                "self-signed certificates are not allowed: the CA is its own issuer; give one signed by \
                 your root, or set insecureAllowSelfSigned: true"
                    .into(),
            ));
        }
        if matches!(private_key, DataSource::Inline(_) | DataSource::InlineString(_)) {
            spec.seal_private_key(&seal_name);
        }
        let sealed_key = self.kek.seal(&seal_name, material.key_pem.as_bytes());
        Ok(vec![MeshCa { backend, cert_pem: material.cert_pem, sealed_key, replace: true }])
    }

    /// Reads a provided backend's certificate and key, recording what cannot be read.
    async fn provided_material(
        &self,
        mesh: &str,
        conf: &ProvidedConf,
        requester: Requester,
        stored: Option<&MeshCa>,
        at: &str,
        causes: &mut Causes,
    ) -> Option<CaMaterial> {
        let cert_pem = self.read_source(mesh, &conf.cert, None, requester, &format!("{at}.cert"), causes).await;
        let key_pem = self.read_source(mesh, &conf.key, stored, requester, &format!("{at}.key"), causes).await;
        Some(CaMaterial { cert_pem: cert_pem?, key_pem: key_pem? })
    }

    /// The PEM text of a data source, or a cause recorded under `at`. `sealed` is the backend's
    /// stored CA when `source` is a key, which `secret: mesh-ca/<mesh>/<backend>` names.
    async fn read_source(
        &self,
        mesh: &str,
        source: &DataSource,
        sealed: Option<&MeshCa>,
        requester: Requester,
        at: &str,
        causes: &mut Causes,
    ) -> Option<String> {
        let read = match source {
            DataSource::File(path) => {
                return self
                    .provided_files
                    .read(path, requester)
                    .map_err(|e| causes.add(format!("{at}.file"), e.to_string()))
                    .ok();
            }
            DataSource::Inline(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| "inline: must be the base64 of a PEM document".to_string()),
            DataSource::InlineString(text) => Ok(text.clone()),
            DataSource::Secret(name) => {
                let at = format!("{at}.secret");
                return match self.read_secret(mesh, name, sealed).await {
                    Ok(pem) => Some(pem),
                    Err(reason) => {
                        causes.add(at, reason);
                        None
                    }
                };
            }
        };
        read.map_err(|e| causes.add(at, e)).ok()
    }

    /// The PEM text of Secret `name` of `mesh`, or of the backend's sealed key it names.
    async fn read_secret(&self, mesh: &str, name: &str, sealed: Option<&MeshCa>) -> Result<String, String> {
        if let Some(stored) = sealed.filter(|s| name == ca_seal_name(mesh, &s.backend)) {
            return self
                .open(name, &stored.sealed_key)
                .map_err(|_| "the sealed key no longer opens; give the key again".into());
        }
        if let Err(reason) = ward_api::names::check_name(name) {
            return Err(format!("{name:?} names no Secret ({reason}), nor the sealed key of this backend"));
        }
        match self.secrets.data(mesh, name).await {
            Ok(Some(bytes)) => String::from_utf8(bytes).map_err(|_| format!("Secret {name:?} does not hold PEM text")),
            Ok(None) => Err(format!("Secret {name:?} does not exist in the mesh")),
            Err(e) => Err(format!("Secret {name:?} cannot be read: {e}")),
        }
    }

    /// The public description of each backend's CA of a mesh.
    pub async fn ca_infos(&self, mesh: &str) -> Result<Vec<(String, CaInfo)>, IdentityError> {
        self.store
            .mesh_cas(mesh)
            .await?
            .into_iter()
            .map(|c| {
                let info = CaInfo::from_pem(&c.cert_pem).map_err(|e| corrupt(&ca_seal_name(mesh, &c.backend), e))?;
                Ok((c.backend, info))
            })
            .collect()
    }

    /// Every backend's CA of a mesh, loaded with its key.
    pub async fn signing_cas(&self, mesh: &str) -> Result<Vec<BackendCa>, IdentityError> {
        let mut out = Vec::new();
        for stored in self.store.mesh_cas(mesh).await? {
            let name = ca_seal_name(mesh, &stored.backend);
            let key_pem = self.open(&name, &stored.sealed_key)?;
            let ca = Ca::load(&CaMaterial { cert_pem: stored.cert_pem, key_pem }).map_err(|e| corrupt(&name, e))?;
            out.push(BackendCa { backend: stored.backend, ca: Arc::new(ca) });
        }
        Ok(out)
    }

    /// Issues a dataplane token for `name` of `services` (at least one) in `mesh`, signed by
    /// the mesh's newest key (created on first use).
    pub async fn issue_token(
        &self,
        mesh: &str,
        name: &str,
        services: &[&str],
        valid_for: Duration,
        actor: &Actor,
    ) -> Result<(String, DataplaneClaims), IdentityError> {
        let key = match self.signing_keys(mesh).await?.pop() {
            Some(key) => key,
            None => {
                self.rotate_signing_key(mesh, false, actor).await?;
                self.signing_keys(mesh).await?.pop().expect("a key was just added")
            }
        };
        let claims = DataplaneClaims::new(mesh, name, services, Utc::now(), valid_for);
        Ok((token::issue(&key, &claims)?, claims))
    }

    /// Adds a new signing key to a mesh, which signs every token from now on; with
    /// `retire_older`, tokens signed by the older keys stop working. Returns the new key's ID.
    pub async fn rotate_signing_key(
        &self,
        mesh: &str,
        retire_older: bool,
        actor: &Actor,
    ) -> Result<String, IdentityError> {
        let key = SigningKey::generate()?;
        let sealed = self.kek.seal(&signing_seal_name(mesh, key.kid()), key.to_pkcs8_pem().as_bytes());
        self.store.add_signing_key(mesh, key.kid(), &sealed, retire_older, actor).await?;
        Ok(key.kid().to_string())
    }

    /// Checks that `token` is valid now and grants dataplane `name` in `mesh` the identity of
    /// every one of `services`.
    pub async fn verify_token(
        &self,
        token: &str,
        mesh: &str,
        name: &str,
        services: &[&str],
    ) -> Result<DataplaneClaims, IdentityError> {
        let keys: Vec<_> = self.signing_keys(mesh).await?.iter().map(SigningKey::verifying_key).collect();
        let claims = token::verify(token, &keys, Utc::now()).map_err(|e| match e {
            // A key of another mesh is unknown here: say which mesh the token was for when it can be read.
            TokenError::UnknownKey { .. } => unverified_mesh(token)
                .filter(|m| m != mesh)
                .map_or(e, |token_mesh| TokenError::WrongMesh { token: token_mesh, requested: mesh.into() }),
            e => e,
        })?;
        for service in services {
            token::authorize(&claims, mesh, name, service, &|jti| self.is_revoked(jti))?;
        }
        Ok(claims)
    }

    /// Revokes a token by its ID; `false` when it already was revoked.
    pub async fn revoke(&self, jti: &str, actor: &Actor) -> Result<bool, IdentityError> {
        let added = self.store.revoke_token(jti, actor).await?;
        self.revoked.write().expect("revoked set lock").insert(jti.to_string());
        self.revocations.send_modify(|n| *n += 1);
        Ok(added)
    }

    /// Whether token `jti` has been revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.read().expect("revoked set lock").contains(jti)
    }

    /// Wakes on every revocation.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    async fn signing_keys(&self, mesh: &str) -> Result<Vec<SigningKey>, IdentityError> {
        self.store
            .signing_keys(mesh)
            .await?
            .iter()
            .map(|stored| {
                let name = signing_seal_name(mesh, &stored.kid);
                SigningKey::from_pkcs8_pem(&self.open(&name, &stored.sealed_key)?).map_err(|e| corrupt(&name, e))
            })
            .collect()
    }

    fn open(&self, name: &str, sealed: &[u8]) -> Result<String, IdentityError> {
        let bytes = self.kek.open(name, sealed).map_err(|e| corrupt(name, e))?;
        String::from_utf8(bytes).map_err(|e| corrupt(name, e))
    }
}

/// The field under `conf.caCert` a builtin CA's generation error belongs to, and its reason.
fn builtin_cause(e: &CaError) -> (&'static str, String) {
    let text = e.to_string();
    let field = match e {
        CaError::LifetimeTooShort { .. } | CaError::LifetimeTooLong { .. } => ".expiration",
        CaError::RsaBits { .. } => ".RSAbits",
        _ => return ("", text),
    };
    // The message starts with the option at fault ("lifetime: ..."), which the field now names.
    (field, text.split_once(": ").map_or(text.clone(), |(_, reason)| reason.to_string()))
}

/// Checks that every CA bundle of a MeshTrust is PEM of CA certificates.
pub fn check_trust(resource: &Resource) -> Result<(), ValidationError> {
    let Spec::MeshTrust(trust) = &resource.spec else { return Ok(()) };
    let mut causes = Causes::default();
    for (i, pem) in trust.pems().enumerate() {
        let checked = TrustBundle::new(trust.trust_domain())
            .and_then(|mut bundle| bundle.add_domain_pem(trust.trust_domain(), pem));
        if let Err(e) = checked {
            causes.add(format!("spec.caBundles[{i}].pem.value"), e.to_string());
        }
    }
    if causes.0.is_empty() { Ok(()) } else { Err(ValidationError { resource: resource.meta.key(), causes: causes.0 }) }
}

/// The name a backend's CA key is sealed under (and referenced by, in a stored Mesh).
fn ca_seal_name(mesh: &str, backend: &str) -> String {
    format!("mesh-ca/{mesh}/{backend}")
}

fn signing_seal_name(mesh: &str, kid: &str) -> String {
    format!("signing-key/{mesh}/{kid}")
}

fn corrupt(what: &str, reason: impl ToString) -> IdentityError {
    IdentityError::Corrupt { what: what.into(), reason: reason.to_string() }
}

/// The `mesh` claim of a token, read without checking its signature (only to explain a refusal).
fn unverified_mesh(token: &str) -> Option<String> {
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    serde_json::from_slice::<serde_json::Value>(&payload).ok()?.get("mesh")?.as_str().map(String::from)
}
