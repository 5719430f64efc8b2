//! The discovery server's TLS: the control plane's own CA, kept sealed in the store and
//! published as `<data-dir>/cp-ca.pem` for proxies' `--ca-cert`, and a server certificate
//! issued at every start for every name and address this host answers to.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use ward_pki::{Ca, CaMaterial, ServerCert, generate_control_plane_ca};

use crate::{secrets::Kek, store::Store};

/// Name of the sealed secret holding the control plane's CA.
const CA_SECRET: &str = "control-plane-ca";
/// Lifetime of the discovery server's certificate (a new one is issued at every start).
const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// The CA proxies trust, and the certificate the discovery server presents.
pub struct DiscoveryTls {
    /// The control plane's CA certificate, PEM.
    pub ca_pem: String,
    /// The server certificate chain and key.
    pub server: ServerCert,
    /// The names and addresses the server certificate is valid for.
    pub names: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredCa {
    cert_pem: String,
    key_pem: String,
}

impl DiscoveryTls {
    /// Loads (creating on first start) the control plane's CA and issues a server certificate
    /// for localhost, this host's name and addresses, and `extra_names`.
    pub async fn load_or_create(store: &Store, kek: &Kek, extra_names: &[String]) -> anyhow::Result<Self> {
        let sealed = match store.secret(CA_SECRET).await? {
            Some(sealed) => sealed,
            None => {
                let (material, info) = generate_control_plane_ca(Utc::now())?;
                tracing::info!(fingerprint = %info.fingerprint_sha256, "generated the control plane's CA");
                let stored = StoredCa { cert_pem: material.cert_pem, key_pem: material.key_pem };
                let plain = serde_json::to_vec(&stored).expect("PEM strings serialize");
                store.insert_secret(CA_SECRET, &kek.seal(CA_SECRET, &plain)).await?
            }
        };
        let stored: StoredCa = serde_json::from_slice(&kek.open(CA_SECRET, &sealed)?)?;
        let ca = Ca::load(&CaMaterial { cert_pem: stored.cert_pem.clone(), key_pem: stored.key_pem })?;
        let names = server_names(extra_names);
        let server = ca.sign_server_cert(&names, SERVER_CERT_LIFETIME, Utc::now())?;
        Ok(DiscoveryTls { ca_pem: stored.cert_pem, server, names })
    }
}

/// localhost, the host name, every local address, and the names asked for.
fn server_names(extra: &[String]) -> Vec<String> {
    let mut names: BTreeSet<String> = ["localhost".to_string()].into();
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str().filter(|h| !h.is_empty())
    {
        names.insert(host.to_string());
    }
    let addresses: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .into_iter()
        .flatten()
        .filter_map(|iface| {
            let address = iface.address?;
            address
                .as_sockaddr_in()
                .map(|a| IpAddr::from(a.ip()))
                .or_else(|| address.as_sockaddr_in6().map(|a| IpAddr::from(a.ip())))
        })
        .collect();
    names.extend(addresses.iter().map(IpAddr::to_string));
    names.extend(["127.0.0.1".to_string(), "::1".to_string()]);
    names.extend(extra.iter().cloned());
    names.into_iter().collect()
}
