//! Outbound: the local application calls a service through a local listener; the proxy picks
//! one of the service's connected instances and carries the call to its proxy over mutual TLS,
//! HTTP over a shared HTTP/2 connection, TCP over a connection of its own.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use http::{Request, Response, StatusCode};
use hyper::{body::Incoming, service::service_fn};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use ward_http::{
    Body,
    body::boxed,
    headers::{is_upgrade, remove_every_spelling, strip_hop_by_hop},
};

use crate::{
    PEER_IDENTITY, Proxy,
    authorization::{Cut, Peer, first_cut},
    external::External,
    forward::{self, OpenConnection},
    io::{Activity, Counted, Detected, Prefixed, detect},
    metrics::OUTBOUND,
    timeouts::Limits,
};
use crate::{
    circuit::{Held, Outcome},
    member::Try,
    routes::{Target, Weighted},
};

/// One outbound of the Dataplane: a local listener for one destination service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSpec {
    /// Where the application connects.
    pub listen: SocketAddr,
    /// The destination service.
    pub service: String,
}

/// Accepts the application's connections on `listener` until `stop`.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, spec: Arc<OutboundSpec>, stop: CancellationToken) {
    let shared = proxy.clone();
    ward_http::accept::serve(listener, &shared.limits, &shared.connections, stop, move |tcp, _peer| {
        handle(proxy.clone(), spec.service.clone(), tcp)
    })
    .await
}

/// Carries one connection of the application to `service`.
pub async fn handle(proxy: Arc<Proxy>, service: String, tcp: TcpStream) {
    let _open = OpenConnection::new(&proxy, OUTBOUND);
    let Some(config) = proxy.state().config() else { return };
    if let Some(external) = config.external.get(&service) {
        return handle_external(proxy.clone(), &service, external.clone(), tcp).await;
    }
    let protocol = config.services.get(&service).and_then(|s| s.protocol);
    let timeouts = config.outbound_timeouts(&service);
    let idle = timeouts.idle_or(proxy.limits.idle_timeout);
    let activity = Activity::new();
    let io = Counted::new(tcp, activity.clone());
    let (detected, io) = match protocol {
        Some(p) if p.is_opaque() => (Detected::Tcp, Prefixed::new(Default::default(), io)),
        Some(_) => (Detected::Http, Prefixed::new(Default::default(), io)),
        None => match detect(io).await {
            Ok(found) => found,
            Err(_) => return,
        },
    };
    if detected == Detected::Tcp {
        // A MeshTCPRoute chooses the backend of each connection; its own policies apply.
        let route = config.routes.tcp.get(&service).cloned();
        let target = match route.as_deref().map(Weighted::pick) {
            None => Target { key: &service, subset: None },
            Some(Some(backend)) => Target::of(backend),
            Some(None) => {
                tracing::debug!(%service, "every MeshTCPRoute backend has weight 0: closing the connection");
                return;
            }
        };
        let timeouts = config.outbound_timeouts(target.key);
        let idle = timeouts.idle_or(proxy.limits.idle_timeout);
        let attempts = config.outbound_retry(target.key).map_or(1, |p| p.connect_attempts);
        let Some((endpoint, upstream)) = connect_tcp(&proxy, &config, target, &timeouts, attempts).await else {
            return;
        };
        let Some(peer) = Peer::of(proxy.state(), upstream.get_ref().1) else { return };
        tokio::select! {
            _ = forward::copy_tcp(&proxy, OUTBOUND, io, upstream) => {}
            () = forward::until_idle(&activity, idle) => tracing::debug!("closing an idle TCP connection"),
            () = peer.watched(proxy.state().clone(), endpoint.address) => {}
        }
        return;
    }
    let service_fn = {
        let proxy = proxy.clone();
        let service: Arc<str> = service.into();
        service_fn(move |request| {
            let (proxy, service) = (proxy.clone(), service.clone());
            async move { Ok::<_, std::convert::Infallible>(handle_routed(&proxy, &service, request).await) }
        })
    };
    let (io, service_fn) = ward_http::server::guard(io, service_fn, &proxy.limits);
    let connection = proxy.http_server.serve_connection_with_upgrades(io, service_fn);
    // The local application is not authorized here; the peers' trust is watched per connection
    // to them (mesh_client).
    forward::drive(&proxy, connection, &activity, (idle, None), std::future::pending()).await;
}

/// Carries one connection of the application to the MeshExternalService `key` names, as it is
/// or inside the TLS the proxy originates, while this dataplane may reach it: a permission
/// taken away closes the connection.
async fn handle_external(proxy: Arc<Proxy>, key: &str, external: Arc<External>, tcp: TcpStream) {
    if let Some(reason) = &external.denied {
        tracing::info!(external = %external.name, reason, "connection to a MeshExternalService refused");
        return;
    }
    let timeouts = proxy.state().config().map(|c| c.outbound_timeouts(key)).unwrap_or_default();
    let upstream = match crate::external::connect(&external, timeouts.connect.unwrap_or(CONNECT_TIMEOUT)).await {
        Ok((upstream, _)) => upstream,
        Err(e) => {
            tracing::warn!(external = %external.name, error = %e, "cannot reach the MeshExternalService");
            return;
        }
    };
    let activity = Activity::new();
    let io = Counted::new(tcp, activity.clone());
    let allowed = |config: &crate::config::Config| config.external.get(key).is_some_and(|e| e.denied.is_none());
    tokio::select! {
        _ = forward::copy_tcp(&proxy, OUTBOUND, io, upstream) => {}
        () = forward::until_idle(&activity, timeouts.idle_or(proxy.limits.idle_timeout)) => {
            tracing::debug!("closing an idle TCP connection");
        }
        cut = first_cut(proxy.state(), None, |config, _| (!allowed(config)).then_some(Cut::Permission)) => {
            tracing::info!(external = %external.name, "closing a connection to a MeshExternalService no longer allowed");
            cut.count(proxy.state(), OUTBOUND);
        }
    }
}

/// A TLS connection to an instance of `target`, trying up to `attempts` instances (MeshRetry's
/// `tcp.maxConnectAttempt`), each not tried before while there is one.
async fn connect_tcp(
    proxy: &Proxy,
    config: &crate::config::Config,
    target: Target<'_>,
    timeouts: &ward_api::mesh_timeout::Timeouts,
    attempts: u32,
) -> Option<(crate::config::Endpoint, tokio_rustls::client::TlsStream<TcpStream>)> {
    let service = target.key;
    let all = config.services.get(service).map(|s| s.endpoints_in(target.subset)).unwrap_or_default();
    let breaker = proxy.member.breaker(service, config.outbound_circuit(service));
    let endpoints = crate::circuit::choosable(&all, breaker.as_deref(), proxy.member.health(service).as_deref());
    let mut tried: Vec<SocketAddr> = Vec::new();
    for _ in 0..attempts {
        let fresh: Vec<_> = endpoints.iter().filter(|e| !tried.contains(&e.address)).cloned().collect();
        let pool = if fresh.is_empty() { &endpoints } else { &fresh };
        let Some(endpoint) = proxy.member.balancer(service).pick(pool).map(|(e, _)| e.clone()) else {
            tracing::debug!(%service, "no endpoint: closing the TCP connection");
            return None;
        };
        let result = proxy.member.mesh.connect(&endpoint, b"", timeouts.connect).await;
        if let Some(b) = &breaker {
            let outcome = if result.is_ok() { Outcome::Reached } else { Outcome::Unreachable };
            b.record(endpoint.address, outcome, all.len());
        }
        match result {
            Ok(upstream) => return Some((endpoint, upstream)),
            Err(e) => {
                tracing::warn!(%service, error = %e, "cannot reach an instance");
                tried.push(endpoint.address);
            }
        }
    }
    None
}

/// How long reaching a MeshExternalService's endpoint may take, TLS included.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Carries one request of the application to `service`, as its MeshHTTPRoute (or, without one,
/// its MeshTCPRoute) says: a redirect answered here, or the request changed, copied to mirrors
/// and sent to the backend chosen, and its answer changed.
async fn handle_routed(proxy: &Arc<Proxy>, service: &str, mut request: Request<Incoming>) -> Response<Body> {
    let Some(config) = proxy.state().config() else { return handle_request(proxy, service, request).await };
    if let Some(table) = config.routes.http.get(service)
        && let Some(route) = table.find(&request)
    {
        if let Some(redirect) = route.redirect(&request) {
            return redirect;
        }
        let Some(backend) = route.backends.pick() else {
            return forward::unavailable(StatusCode::SERVICE_UNAVAILABLE, "every backend of the route has weight 0");
        };
        route.rewrite_request(&mut request);
        let request = request.map(boxed);
        let request = if route.mirrors.is_empty() || is_upgrade(&request) {
            request
        } else {
            crate::mirror::send_copies(proxy, &route.mirrors, request)
        };
        let mut response = send_to(proxy, Target::of(backend), request).await;
        route.rewrite_response(&mut response);
        return response;
    }
    match config.routes.tcp.get(service).map(|b| b.pick()) {
        None => handle_request(proxy, service, request).await,
        Some(Some(backend)) => send_to(proxy, Target::of(backend), request.map(boxed)).await,
        Some(None) => forward::unavailable(StatusCode::SERVICE_UNAVAILABLE, "every backend of the route has weight 0"),
    }
}

/// Carries one request of the application to `service`, unrouted.
async fn handle_request(proxy: &Proxy, service: &str, request: Request<Incoming>) -> Response<Body> {
    send_to(proxy, Target { key: service, subset: None }, request.map(boxed)).await
}

/// Carries one request to `target`, under its own MeshTimeout, MeshRetry and
/// MeshCircuitBreaker.
async fn send_to(proxy: &Proxy, target: Target<'_>, mut request: Request<Body>) -> Response<Body> {
    let service = target.key;
    let started = Instant::now();
    let source = proxy.state().svid().map_or_else(|| "unknown".to_string(), |s| s.spiffe_id.to_string());
    let upgrading = is_upgrade(&request);
    strip_hop_by_hop(request.headers_mut(), upgrading);
    remove_every_spelling(request.headers_mut(), &[PEER_IDENTITY]);
    let member = &proxy.member;
    let config = proxy.state().config();
    let timeouts = config.as_ref().map(|c| c.outbound_timeouts(service)).unwrap_or_default();
    let breaker = config.as_ref().and_then(|c| member.breaker(service, c.outbound_circuit(service)));
    let slot = match breaker.as_ref().map(|b| b.admit()) {
        Some(None) => {
            tracing::info!(%service, "request refused: the circuit breaker's maxRequests run already");
            let mut response = forward::unavailable(StatusCode::SERVICE_UNAVAILABLE, "upstream overflow");
            response.headers_mut().insert("x-envoy-overloaded", http::HeaderValue::from_static("true"));
            forward::record(proxy, OUTBOUND, &source, service, response.status(), started);
            return response;
        }
        Some(slot) => slot,
        None => None,
    };
    let how = Try { timeouts, avoid: &[], breaker: breaker.as_deref(), subset: target.subset };
    let result = if upgrading {
        // The upgraded connection outlives this request: it watches the peer's trust itself.
        forward::upgrade(request, |r| member.send_upgrade(service, r, &timeouts, target.subset)).await
    } else {
        let limits = Limits::new(&timeouts, started.into());
        let retry = config.as_ref().and_then(|c| c.outbound_retry(service));
        let send = |r: Request<Body>| async {
            match &retry {
                Some(policy) => crate::retry::send(member, service, r, how, policy).await,
                None => member.send(service, r, how).await.map(|(response, _)| response),
            }
        };
        match limits.exchange(request, send).await {
            Ok(result) => result,
            Err(expired) => {
                tracing::info!(%service, ?expired, "request ended by a MeshTimeout");
                let response = expired.response();
                forward::record(proxy, OUTBOUND, &source, service, response.status(), started);
                return response;
            }
        }
    };
    let response = match result {
        Ok(mut response) => {
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                strip_hop_by_hop(response.headers_mut(), false);
            }
            response
        }
        Err(crate::member::SendError::PerTryTimeout) => {
            tracing::info!(%service, "request ended by MeshRetry's per-try timeout");
            forward::unavailable(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
        }
        Err(e) => {
            tracing::warn!(%service, error = %e, "request not carried");
            forward::unavailable(StatusCode::SERVICE_UNAVAILABLE, e)
        }
    };
    forward::record(proxy, OUTBOUND, &source, service, response.status(), started);
    // The request counts against maxRequests until its answer is done with.
    response.map(|body| boxed(Held::new(body, slot)))
}
