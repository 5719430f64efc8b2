//! The inbound's data path in process, over `tokio::io::duplex`: a caller with a real SVID
//! reaches a real application, is denied with 403, and loses its open connection and streams
//! when its permission goes, its token is revoked, its CA leaves the bundle or its certificate
//! expires.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::Duration,
};

use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use ward_http::Limits;
use ward_pki::{BuiltinCaOptions, Ca, SpiffeId, generate_builtin, generate_key_and_csr};
use ward_proto::discovery::{MtlsMode, ProxyConfig};

use super::{InboundSpec, serve_caller};
use crate::{
    Proxy,
    app_client::AppClient,
    authorization::{Caller, Cut, Peer},
    config::Config,
    member::Member,
    state::State,
};

const ALLOW_WEB: &str = r#"{"type":"MeshTrafficPermission","mesh":"m","name":"allow-web","spec":{"targetRef":{"kind":"Mesh"},"from":[{"targetRef":{"kind":"MeshService","name":"web"},"default":{"action":"Allow"}}]}}"#;

fn ca() -> (Ca, String) {
    let options = BuiltinCaOptions { rsa_bits: None, lifetime: Duration::from_secs(24 * 3600) };
    let (material, _) = generate_builtin("m", &options, Utc::now() - TimeDelta::minutes(1)).unwrap();
    (Ca::load(&material).unwrap(), material.cert_pem)
}

/// An application on loopback: `/` answers `hello`, `/stream` sends a line every 50 ms, forever.
async fn application() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let body = if request.uri().path() == "/stream" {
                        let lines = futures_util::stream::unfold((), |()| async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Some((Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from("line\n"))), ()))
                        });
                        BodyExt::boxed(StreamBody::new(lines))
                    } else {
                        BodyExt::boxed(http_body_util::Full::new(Bytes::from("hello")))
                    };
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    address
}

/// A proxy for `backend-1` in mesh `m`, with a CA, in front of an application.
struct Lab {
    proxy: Arc<Proxy>,
    spec: Arc<InboundSpec>,
    ca: Ca,
    ca_pem: String,
}

impl Lab {
    async fn start() -> Lab {
        let (ca, ca_pem) = ca();
        let app = application().await;
        let state = State::new();
        let limits = Limits::default();
        let proxy = Arc::new(Proxy {
            server_tls: [("backend".to_string(), crate::tls::server_config(state.clone(), "backend".into(), false))]
                .into(),
            metrics_tls: None,
            http_server: ward_http::server::builder(&limits),
            app: AppClient::new(),
            member: Arc::new(Member::new(state.clone(), false)),
            connections: TaskTracker::new(),
            draining: CancellationToken::new(),
            listener_errors: Mutex::default(),
            listening: AtomicBool::new(false),
            rate_limits: Default::default(),
            denials: Default::default(),
            limits,
        });
        let spec = Arc::new(InboundSpec {
            listen: ([127, 0, 0, 1], 1).into(),
            app,
            protocol: Some(ward_api::dataplane::Protocol::Http),
            service: "backend".into(),
            index: 0,
        });
        let lab = Lab { proxy, spec, ca, ca_pem };
        lab.configure(&[ALLOW_WEB], &[], None);
        lab
    }

    /// Puts a configuration in force with `permissions`, `revoked` serials and, when given,
    /// another trust bundle.
    fn configure(&self, permissions: &[&str], revoked: &[&str], bundle: Option<&str>) {
        self.configure_inbounds(&[(1, "backend")], permissions, revoked, bundle);
    }

    /// Like [`Lab::configure`], with the Dataplane's inbounds `(port, service)`, in this order,
    /// each in front of the lab's application.
    fn configure_inbounds(
        &self,
        inbounds: &[(u16, &str)],
        permissions: &[&str],
        revoked: &[&str],
        bundle: Option<&str>,
    ) {
        let app_port = self.spec.app.port();
        let inbounds: Vec<String> = inbounds
            .iter()
            .map(|(port, service)| {
                format!(
                    r#"{{"port":{port},"servicePort":{app_port},"tags":{{"kuma.io/service":"{service}","kuma.io/protocol":"http"}}}}"#
                )
            })
            .collect();
        let proto = ProxyConfig {
            version: 1,
            mesh: "m".into(),
            dataplane_json: format!(
                r#"{{"type":"Dataplane","mesh":"m","name":"backend-1","networking":{{"address":"127.0.0.1","inbound":[{}]}}}}"#,
                inbounds.join(",")
            ),
            mtls_mode: MtlsMode::Strict.into(),
            trust_bundle_pem: bundle.unwrap_or(&self.ca_pem).to_string(),
            certificate_lifetime_seconds: 24 * 3600,
            permissions_json: permissions.iter().map(|p| p.to_string()).collect(),
            revoked_serials: revoked.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        self.proxy.state().set_config(Config::from_proto(&proto).unwrap());
    }

    /// A caller of service `service` with a certificate from the lab's CA.
    fn caller(&self, service: &str) -> Peer {
        let id = SpiffeId::for_service("m", service).unwrap();
        let (_key, csr) = generate_key_and_csr(&id).unwrap();
        let svid = self.ca.sign_svid(&csr, &id, Duration::from_secs(3600), Utc::now()).unwrap();
        Peer::verify(&self.proxy.state().config().unwrap(), CertificateDer::from(svid.cert_der), Utc::now()).unwrap()
    }

    /// An HTTP/1.1 connection from `peer` through the inbound, over an in-memory pipe.
    async fn connect(&self, peer: Peer) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
        self.connect_to(self.spec.clone(), peer).await
    }

    /// Like [`Lab::connect`], through an inbound described by `spec`.
    async fn connect_to(
        &self,
        spec: Arc<InboundSpec>,
        peer: Peer,
    ) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve_caller(self.proxy.clone(), spec, server, Caller::Mesh(peer)));
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client)).await.unwrap();
        tokio::spawn(connection);
        sender
    }

    /// Inbound connections cut for `reason`, as `/metrics` counts them.
    fn cuts(&self, reason: Cut) -> u64 {
        let labels = crate::metrics::ReasonLabels { direction: crate::metrics::INBOUND, reason: reason.as_str() };
        self.proxy.state().metrics.connections_cut.get_or_create(&labels).get()
    }
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::builder().uri(path).header("host", "backend").body(Empty::new()).unwrap()
}

/// Starts `/stream` on `sender`, reads its first line, and returns how it ended within 5 s:
/// `Some(true)` for an error (cut), `Some(false)` for a clean end, `None` when still running.
async fn stream_outcome(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    cut: impl FnOnce(),
) -> Option<bool> {
    let response = sender.send_request(get("/stream")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().is_ok(), "the stream started");
    cut();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) => return true,
                None => return false,
            }
        }
    });
    ended.await.ok()
}

#[tokio::test]
async fn an_allowed_caller_reaches_the_application_and_others_get_403() {
    let lab = Lab::start().await;
    let mut web = lab.connect(lab.caller("web")).await;
    let response = web.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "hello");

    let mut other = lab.connect(lab.caller("other")).await;
    let response = other.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "RBAC: access denied");
    // A denied caller keeps its connection and gets 403 for each request.
    assert_eq!(other.send_request(get("/")).await.unwrap().status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_unreachable_application_is_a_502_that_names_no_address() {
    let lab = Lab::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // The Dataplane's inbound now points at a port nothing listens on.
    let lab = Lab { spec: Arc::new(InboundSpec { app: closed, ..(*lab.spec).clone() }), ..lab };
    lab.configure(&[ALLOW_WEB], &[], None);
    let mut web = lab.connect(lab.caller("web")).await;
    let response = web.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "upstream connect error\n", "the application's address and the OS error stay in the log");
}

#[tokio::test]
async fn losing_the_permission_resets_an_open_stream() {
    let lab = Lab::start().await;
    let mut web = lab.connect(lab.caller("web")).await;
    assert_eq!(stream_outcome(&mut web, || lab.configure(&[], &[], None)).await, Some(true));
    assert_eq!(lab.cuts(Cut::Permission), 1);
}

#[tokio::test]
async fn a_revoked_certificate_loses_its_open_stream() {
    let lab = Lab::start().await;
    let peer = lab.caller("web");
    let serial = peer.serial.clone();
    let mut web = lab.connect(peer).await;
    assert_eq!(stream_outcome(&mut web, || lab.configure(&[ALLOW_WEB], &[&serial], None)).await, Some(true));
    assert_eq!(lab.cuts(Cut::Revoked), 1);
}

#[tokio::test]
async fn a_ca_leaving_the_bundle_takes_its_certificates_connections() {
    let lab = Lab::start().await;
    let mut web = lab.connect(lab.caller("web")).await;
    let (_, other_ca) = ca();
    assert_eq!(stream_outcome(&mut web, || lab.configure(&[ALLOW_WEB], &[], Some(&other_ca))).await, Some(true));
    assert_eq!(lab.cuts(Cut::Untrusted), 1);
}

#[tokio::test]
async fn an_expiring_certificate_loses_its_connection_at_not_after() {
    let lab = Lab::start().await;
    let mut peer = lab.caller("web");
    peer.not_after = Utc::now() + TimeDelta::milliseconds(500);
    let mut web = lab.connect(peer).await;
    assert_eq!(stream_outcome(&mut web, || ()).await, Some(true));
    assert_eq!(lab.cuts(Cut::Expired), 1);
}

#[tokio::test]
async fn a_stream_that_keeps_its_permission_runs_on() {
    let lab = Lab::start().await;
    let mut web = lab.connect(lab.caller("web")).await;
    let other_permission = ALLOW_WEB.replace("allow-web", "also-allow-web");
    let outcome = stream_outcome(&mut web, || lab.configure(&[ALLOW_WEB, &other_permission], &[], None)).await;
    assert_eq!(outcome, None, "a new configuration that still allows the caller leaves its stream alone");
}

/// The inbound serving `service` in the configuration in force.
fn inbound_of(lab: &Lab, service: &str) -> Arc<InboundSpec> {
    lab.proxy.state().config().unwrap().inbounds.iter().find(|i| i.service == service).unwrap().clone()
}

/// Waits, at most 5 s, until `/metrics` counts `n` connections cut for `reason`.
async fn wait_for_cuts(lab: &Lab, reason: Cut, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while lab.cuts(reason) < n {
        assert!(tokio::time::Instant::now() < deadline, "{} connections cut for {}", lab.cuts(reason), reason.as_str());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_connection_to_a_removed_inbound_is_closed_and_never_decided_as_another() {
    let lab = Lab::start().await;
    let allow_backend = ALLOW_WEB.replace(r#"{"kind":"Mesh"}"#, r#"{"kind":"MeshService","name":"backend"}"#);
    // web may call backend (inbound 1) but not secret (inbound 0).
    lab.configure_inbounds(&[(1, "secret"), (2, "backend")], &[&allow_backend], &[], None);
    let mut web = lab.connect_to(inbound_of(&lab, "secret"), lab.caller("web")).await;
    assert_eq!(web.send_request(get("/")).await.unwrap().status(), StatusCode::FORBIDDEN);

    // secret goes: backend now holds index 0, which the open connection to secret once had.
    lab.configure_inbounds(&[(2, "backend")], &[&allow_backend], &[], None);
    wait_for_cuts(&lab, Cut::InboundRemoved, 1).await;
    let after = web.send_request(get("/")).await;
    assert!(after.is_err(), "the connection to the removed inbound is closed, not answered: {after:?}");
}

#[tokio::test]
async fn removing_an_inbound_ends_its_open_streams_and_leaves_the_others() {
    let lab = Lab::start().await;
    lab.configure_inbounds(&[(1, "old"), (2, "backend")], &[ALLOW_WEB], &[], None);
    let mut to_old = lab.connect_to(inbound_of(&lab, "old"), lab.caller("web")).await;
    let mut to_backend = lab.connect_to(inbound_of(&lab, "backend"), lab.caller("web")).await;
    let response = to_backend.send_request(get("/stream")).await.unwrap();
    let mut backend_stream = response.into_body();
    assert!(backend_stream.frame().await.unwrap().is_ok(), "the stream to backend started");
    // The stream to old is cut when its inbound goes; the one to backend, whose inbound moved
    // from index 1 to 0 in the same change, runs on.
    let removed = || lab.configure_inbounds(&[(2, "backend")], &[ALLOW_WEB], &[], None);
    assert_eq!(stream_outcome(&mut to_old, removed).await, Some(true));
    assert_eq!(lab.cuts(Cut::InboundRemoved), 1);
    for _ in 0..3 {
        assert!(backend_stream.frame().await.unwrap().is_ok(), "the stream to backend goes on");
    }
}
