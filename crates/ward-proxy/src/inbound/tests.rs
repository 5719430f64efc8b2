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
            member: Member::new(state.clone(), false, Default::default()),
            connections: TaskTracker::new(),
            draining: CancellationToken::new(),
            listener_errors: Mutex::default(),
            listening: AtomicBool::new(false),
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
        let app_port = self.spec.app.port();
        let proto = ProxyConfig {
            version: 1,
            mesh: "m".into(),
            dataplane_json: format!(
                r#"{{"type":"Dataplane","mesh":"m","name":"backend-1","networking":{{"address":"127.0.0.1","inbound":[{{"port":1,"servicePort":{app_port},"tags":{{"kuma.io/service":"backend","kuma.io/protocol":"http"}}}}]}}}}"#
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
    let spec = Arc::new(InboundSpec { app: closed, ..(*lab.spec).clone() });
    let mut web = lab.connect_to(spec, lab.caller("web")).await;
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
