//! Unmodified applications for proxies to sit in front of: an HTTP echo server (HTTP/1.1 and
//! h2c, WebSocket echo on upgrade, slow and streaming endpoints), a TCP echo server, and a gRPC
//! server (the standard health service, unary and streaming).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use tokio::{io::AsyncWriteExt, net::TcpListener, task::JoinHandle};

/// A server task, aborted on drop.
pub struct App {
    /// Where it listens.
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bind(address: SocketAddr) -> TcpListener {
    TcpListener::bind(address).await.unwrap_or_else(|e| panic!("test app cannot listen on {address}: {e}"))
}

/// An HTTP server on `address` that answers as `service`:
/// - any path: JSON with the service, method, path, headers and the number of body bytes read;
/// - `/slow?ms=N`: the same after N milliseconds;
/// - `/stream`: a chunked body of one line a second, for a minute;
/// - `/bytes?n=N`: a body of N bytes;
/// - an upgrade to `websocket`: a WebSocket that echoes every message.
pub async fn http_echo(address: SocketAddr, service: &'static str) -> App {
    serve_echo(address, service, None).await
}

/// What a recording echo server answered, one JSON document per request, in order.
pub type Seen = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// The echo server of [`http_echo`], keeping what it answers each request (its path, headers
/// and body length) for the test to look at.
pub async fn http_echo_seen(address: SocketAddr, service: &'static str) -> (App, Seen) {
    let seen = Seen::default();
    (serve_echo(address, service, Some(seen.clone())).await, seen)
}

async fn serve_echo(address: SocketAddr, service: &'static str, seen: Option<Seen>) -> App {
    let listener = bind(address).await;
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(service, seen.clone(), request));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    App { address, task }
}

/// The same echo server behind TLS with `leaf` (ALPN h2 and http/1.1); among the echoed headers,
/// `x-test-sni` is the server name the client asked for (empty without one).
pub async fn https_echo(address: SocketAddr, service: &'static str, leaf: &super::Leaf) -> App {
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(leaf.cert.as_bytes()).map(Result::unwrap).collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = bind(address).await;
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let sni = tls.get_ref().1.server_name().unwrap_or_default().to_string();
                let service = service_fn(move |mut request: Request<Incoming>| {
                    request.headers_mut().insert("x-test-sni", sni.parse().unwrap());
                    answer(service, None, request)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    App { address, task }
}

/// Every body the echo server sends.
type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    service: &'static str,
    seen: Option<Seen>,
    mut request: Request<Incoming>,
) -> Result<Response<EchoBody>, Infallible> {
    if request.headers().get("upgrade").is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        return Ok(websocket(&mut request).map(BodyExt::boxed));
    }
    if request.uri().path() == "/stream" {
        let lines = futures_util::stream::unfold(0u32, |n| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            (n < 60).then(|| (Ok(hyper::body::Frame::data(Bytes::from(format!("line {n}\n")))), n + 1))
        });
        return Ok(Response::new(BodyExt::boxed(http_body_util::StreamBody::new(lines))));
    }
    if request.uri().path() == "/bytes" {
        let n: usize =
            request.uri().query().and_then(|q| q.strip_prefix("n=")).and_then(|n| n.parse().ok()).unwrap_or(0);
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; n])).boxed()));
    }
    if let Some(ms) = request.uri().query().and_then(|q| q.strip_prefix("ms=")).and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned().into()))
        .collect();
    let (method, path, version) =
        (request.method().to_string(), request.uri().path().to_string(), format!("{:?}", request.version()));
    let mut body = request.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let reply = json!({ "service": service, "method": method, "path": path, "version": version, "headers": headers, "bodyBytes": bytes });
    if let Some(seen) = seen {
        seen.lock().unwrap().push(reply.clone());
    }
    let mut response = Response::new(Full::new(Bytes::from(reply.to_string())).boxed());
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    Ok(response)
}

fn websocket(request: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let key = request.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec()).unwrap_or_default();
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let role = tokio_tungstenite::tungstenite::protocol::Role::Server;
        let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), role, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() || socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A TCP server on `address` that writes back what it reads.
pub async fn tcp_echo(address: SocketAddr) -> App {
    let listener = bind(address).await;
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    App { address, task }
}

/// A TCP server on `address` that writes `name` and a newline to every connection, then
/// closes it.
pub async fn tcp_greeter(address: SocketAddr, name: &'static str) -> App {
    let listener = bind(address).await;
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let _ = tcp.write_all(format!("{name}\n").as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    App { address, task }
}

/// A gRPC server on `address` with the standard health service; returns the reporter that
/// changes the status `Watch` streams.
pub async fn grpc_health(address: SocketAddr) -> (App, tonic_health::server::HealthReporter) {
    let listener = bind(address).await;
    let address = listener.local_addr().unwrap();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("ward.test", tonic_health::ServingStatus::Serving).await;
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (App { address, task }, reporter)
}

/// An HTTP server on `address` that answers every request with `name` (200), after `ms`
/// milliseconds when the query says `ms=N`, and `/health` with 200 while `healthy` holds, 503
/// once it does not: an instance a test can tell apart and make fail its health probes.
pub async fn named(address: SocketAddr, name: String, healthy: std::sync::Arc<std::sync::atomic::AtomicBool>) -> App {
    let listener = bind(address).await;
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (name, healthy) = (name.clone(), healthy.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (name, healthy) = (name.clone(), healthy.clone());
                    async move {
                        let delay =
                            request.uri().query().and_then(|q| q.strip_prefix("ms=")).and_then(|n| n.parse().ok());
                        if let Some(ms) = delay {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        let up = healthy.load(std::sync::atomic::Ordering::SeqCst);
                        let status = if request.uri().path() == "/health" && !up {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                        let response = Response::builder().status(status).body(Full::new(Bytes::from(name))).unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    App { address, task }
}
