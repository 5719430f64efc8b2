//! The discovery messages between the control plane and its proxies: decoded with prost from
//! arbitrary bytes, then handed to the code that consumes each on the receiving side.

use std::{sync::OnceLock, time::Duration};

use chrono::Utc;
use prost::Message;
use ward_pki::{BuiltinCaOptions, Ca, SpiffeId, TrustBundle};
use ward_proto::discovery::{ControlMessage, ProxyConfig, ProxyMessage, control_message, proxy_message};
use ward_proxy::{authorization::Peer, config::Config, identity};

/// The mesh whose CA signs in the control plane's part, and whose bundle the proxy trusts.
const MESH: &str = "default";

/// Decodes `data` as what a proxy sends (read by the control plane: the Register's Dataplane,
/// a CSR signed by a mesh CA) and as what the control plane sends (read by the proxy: a
/// configuration into its `Config` and a decision with it, a certificate checked against the
/// pending key and the bundle).
pub fn run(data: &[u8]) {
    if let Ok(ProxyMessage { message: Some(message) }) = ProxyMessage::decode(data) {
        match message {
            proxy_message::Message::Register(register) => {
                let _ = ward_cp::discovery::session::read_dataplane(&register);
            }
            proxy_message::Message::CertificateRequest(request) => {
                let lifetime = Duration::from_secs(86_400);
                let _ = fixture().ca.sign_svid(&request.csr_pem, &fixture().id, lifetime, Utc::now());
            }
            // An index and a flag, checked against the stored Dataplane by the session.
            proxy_message::Message::InboundHealth(_) => {}
        }
    }
    if let Ok(ControlMessage { message: Some(message) }) = ControlMessage::decode(data) {
        match message {
            control_message::Message::Config(proto) => {
                if let Ok(config) = Config::from_proto(&proto) {
                    let peer = &fixture().peer;
                    config.authorizer.decide(None, 0);
                    config.authorizer.decide(Some((peer, config.peer_tags.get(&peer.serial))), 0);
                }
            }
            control_message::Message::Certificate(certificate) => {
                let f = fixture();
                let _ = identity::accept(&f.pending, &certificate, &f.id, "backend", &f.bundle);
            }
            control_message::Message::CertificateRefused(_) => {}
        }
    }
}

/// What both sides hold before a message arrives, made once per process.
struct Fixture {
    ca: Ca,
    bundle: TrustBundle,
    id: SpiffeId,
    pending: identity::PendingKey,
    /// A caller with a certificate of the fixture's CA.
    peer: Peer,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let options = BuiltinCaOptions { rsa_bits: None, lifetime: Duration::from_secs(365 * 86_400) };
        let (material, _) = ward_pki::generate_builtin(MESH, &options, Utc::now()).expect("a builtin CA");
        let ca = Ca::load(&material).expect("the CA just made");
        let bundle = TrustBundle::from_pem(MESH, ca.cert_pem()).expect("the CA's bundle");
        let id = SpiffeId::for_service(MESH, "backend").expect("a SPIFFE ID");
        let pending = identity::request(&id).expect("a key and CSR");
        let lifetime = Duration::from_secs(86_400);
        let svid = ca.sign_svid(&pending.csr_pem, &id, lifetime, Utc::now()).expect("an SVID for the fixture's key");
        let proto = ProxyConfig {
            mesh: MESH.into(),
            dataplane_json: format!(
                r#"{{"type":"Dataplane","mesh":"{MESH}","name":"backend-1","networking":{{"address":"127.0.0.1","inbound":[{{"port":1,"tags":{{"kuma.io/service":"backend"}}}}]}}}}"#
            ),
            trust_bundle_pem: ca.cert_pem().to_string(),
            ..Default::default()
        };
        let config = Config::from_proto(&proto).expect("the fixture's configuration");
        let peer = Peer::verify(&config, svid.cert_der.into(), Utc::now()).expect("the fixture's caller");
        Fixture { ca, bundle, id, pending, peer }
    })
}
