//! Inbound: callers from the mesh reach the local application through here. Each connection is
//! mutual TLS (or, in a PERMISSIVE mesh, plaintext as an anonymous caller); the caller's SPIFFE
//! ID is decided against the permissions before anything reaches the application, and again on
//! every request and every configuration change.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::{body::Incoming, service::service_fn};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use ward_api::{dataplane::Protocol, mesh_timeout::enabled};

use ward_http::{
    Body,
    body::text,
    headers::{is_upgrade, remove_every_spelling, strip_hop_by_hop},
};

use crate::{
    PEER_IDENTITY, Proxy,
    authorization::{Caller, Peer, authorize},
    config::Mode,
    denials::Denial,
    forward::{self, OpenConnection},
    inbound_policies::{self, Counting},
    io::{Activity, Counted, Detected, detect},
    metrics::{INBOUND, ReasonLabels},
    opa,
    timeouts::Limits,
    tls,
};

/// Envoy's words for a denied request, which Kuma users script against.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// One inbound of the Dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundSpec {
    /// Where callers connect.
    pub listen: SocketAddr,
    /// Where the application listens.
    pub app: SocketAddr,
    /// Its `kuma.io/protocol`, when declared.
    pub protocol: Option<Protocol>,
    /// The service it serves, whose certificate it presents.
    pub service: String,
    /// Its index in the Dataplane's `networking.inbound`, where permissions are decided.
    pub index: usize,
}

/// Accepts callers on `listener` until `stop`.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, spec: Arc<InboundSpec>, stop: CancellationToken) {
    let shared = proxy.clone();
    ward_http::accept::serve(listener, &shared.limits, &shared.connections, stop, move |tcp, _peer| {
        handle(proxy.clone(), spec.clone(), tcp)
    })
    .await
}

/// Serves one caller's connection to the inbound `spec`.
pub async fn handle(proxy: Arc<Proxy>, spec: Arc<InboundSpec>, tcp: TcpStream) {
    let _open = OpenConnection::new(&proxy, INBOUND);
    let Some(config) = proxy.state().config() else { return };
    let plaintext = match config.mode {
        Mode::Disabled => Some(Caller::Unchecked),
        Mode::Strict => None,
        Mode::Permissive => {
            let mut first = [0u8; 1];
            match tokio::time::timeout(proxy.limits.header_read_timeout, tcp.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == 0x16 => None,
                Ok(Ok(1)) => Some(Caller::Anonymous),
                _ => return,
            }
        }
    };
    if let Some(caller) = plaintext {
        return serve_caller(proxy, spec, tcp, caller).await;
    }
    let Some(server_tls) = proxy.server_tls(&spec.service) else {
        tracing::warn!(service = %spec.service, "an inbound of a service the Dataplane file does not serve; closing");
        return;
    };
    let acceptor = TlsAcceptor::from(server_tls);
    let tls = match tokio::time::timeout(proxy.limits.header_read_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = tls::failure_reason(&e);
            proxy
                .state()
                .metrics
                .tls_handshake_failures
                .get_or_create(&ReasonLabels { direction: INBOUND, reason })
                .inc();
            tracing::debug!(error = %e, reason, "inbound TLS handshake failed");
            return;
        }
        Err(_) => {
            let labels = ReasonLabels { direction: INBOUND, reason: "timeout" };
            proxy.state().metrics.tls_handshake_failures.get_or_create(&labels).inc();
            return;
        }
    };
    let Some(peer) = Peer::of(proxy.state(), tls.get_ref().1) else { return };
    serve_caller(proxy, spec, tls, Caller::Mesh(peer)).await
}

async fn serve_caller<IO>(proxy: Arc<Proxy>, spec: Arc<InboundSpec>, io: IO, caller: Caller)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = Counted::new(io, activity.clone());
    let (protocol, io) = match spec.protocol {
        Some(p) if p.is_opaque() => (Detected::Tcp, crate::io::Prefixed::new(Default::default(), io)),
        Some(_) => (Detected::Http, crate::io::Prefixed::new(Default::default(), io)),
        None => match detect(io).await {
            Ok(found) => found,
            Err(_) => return,
        },
    };
    caller.await_tags(proxy.state()).await;
    // MeshRateLimit's connection rate counts every connection to the inbound, HTTP or not.
    if let Some(limits) = proxy.state().config().and_then(|c| c.inbound_rate_limits(spec.index))
        && let Some(limit) = limits.connections
        && !proxy.rate_limits.take(spec.index, Counting::Connections, limit)
    {
        tracing::debug!(caller = caller.label(), "connection refused by a MeshRateLimit");
        return;
    }
    let timeouts = proxy.state().config().map(|c| c.inbound_timeouts(spec.index)).unwrap_or_default();
    let idle = timeouts.idle_or(proxy.limits.idle_timeout);
    if protocol == Detected::Tcp {
        let Some(config) = proxy.state().config() else { return };
        let Some(index) = config.inbound_index(&spec) else { return };
        if !authorize(proxy.state(), &caller, &config, index).allows() {
            return;
        }
        if config.inbound_opa(index).is_some() {
            // MeshOPA decides HTTP requests; opaque bytes cannot be asked about, so none pass.
            tracing::warn!(caller = caller.label(), "a MeshOPA applies to this TCP inbound; closing the connection");
            return;
        }
        let within = timeouts.connect.unwrap_or(crate::app_client::CONNECT_TIMEOUT);
        let app = match tokio::time::timeout(within, crate::app_client::connect(spec.app)).await {
            Ok(Ok(app)) => app,
            Ok(Err(e)) => {
                tracing::warn!(app = %spec.app, error = %e, "cannot reach the application");
                return;
            }
            Err(_) => {
                tracing::warn!(app = %spec.app, "cannot reach the application: connect timed out");
                return;
            }
        };
        let _ = app.set_nodelay(true);
        tokio::select! {
            _ = forward::copy_tcp(&proxy, INBOUND, io, app) => {}
            () = forward::until_idle(&activity, idle) => tracing::debug!("closing an idle TCP connection"),
            cut = caller.cut(proxy.state(), |c| c.inbound_index(&spec)) => {
                tracing::info!(caller = caller.label(), reason = cut.as_str(), "closing the caller's connection");
                cut.count(proxy.state(), INBOUND);
            }
        }
        return;
    }
    let service = {
        let (proxy, spec, caller) = (proxy.clone(), spec.clone(), caller.clone());
        service_fn(move |request| {
            let (proxy, spec, caller) = (proxy.clone(), spec.clone(), caller.clone());
            async move { Ok::<_, std::convert::Infallible>(handle_request(&proxy, &spec, &caller, request).await) }
        })
    };
    let (io, service) = ward_http::server::guard(io, service, &proxy.limits);
    let connection = proxy.http_server.serve_connection_with_upgrades(io, service);
    if let Some(reason) = forward::drive(
        &proxy,
        connection,
        &activity,
        (idle, enabled(timeouts.max_connection)),
        caller.cut(proxy.state(), |c| c.inbound_index(&spec)),
    )
    .await
    {
        tracing::info!(
            caller = caller.label(),
            reason = reason.as_str(),
            "closed the caller's connection and its requests"
        );
        reason.count(proxy.state(), INBOUND);
    }
}

async fn handle_request(
    proxy: &Proxy,
    spec: &InboundSpec,
    caller: &Caller,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let Some(config) = proxy.state().config() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "proxy has no configuration\n");
    };
    // The configuration may have changed since the connection was accepted.
    let Some(index) = config.inbound_index(spec) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "this inbound is no longer configured\n");
    };
    // A denial is counted, logged and answered the same whichever policy decided it.
    let refuse = |mut response: Response<Body>, request: &Request<Incoming>, policy: &str| {
        let (state, header) = (proxy.state(), config.denied_by_header);
        denial(caller, spec, request, policy).record(state, &proxy.denials, header, &mut response);
        forward::record(proxy, INBOUND, caller.label(), &spec.service, response.status(), started);
        response
    };
    let decision = authorize(proxy.state(), caller, &config, index);
    if !decision.allows() {
        return refuse(text(StatusCode::FORBIDDEN, DENIED_BODY), &request, &policy_label(&decision));
    }
    let upgrading = is_upgrade(&request);
    let mut buffered = None;
    let mut response_headers = Vec::new();
    if let Some(in_force) = config.inbound_opa(index) {
        if let Some(max) = in_force.max_body.filter(|_| !upgrading) {
            match opa::buffer(request.body_mut(), max).await {
                Ok(b) => buffered = Some(b),
                Err(e) => {
                    tracing::debug!(error = %e, "the request body ended before it could be decided");
                    return text(StatusCode::BAD_REQUEST, "the request body could not be read\n");
                }
            }
        }
        // The callee's own identity: its workload's under MeshIdentity, else its service's.
        let destination = match &config.workload_id {
            Some(id) => id.to_string(),
            None => format!("spiffe://{}/{}", config.mesh, spec.service),
        };
        let source = match caller {
            Caller::Mesh(peer) => Some(peer.id.as_str()),
            Caller::Anonymous | Caller::Unchecked => None,
        };
        let peers = opa::Peers { source, destination: &destination, address: spec.listen };
        let (mut parts, body) = request.into_parts();
        let outcome = opa::decide(&in_force, &mut parts, buffered.as_ref(), peers);
        request = Request::from_parts(parts, body);
        match outcome {
            opa::Outcome::Pass(headers) => response_headers = headers,
            opa::Outcome::Deny(response, by) => {
                return refuse(response, &request, &format!("MeshOPA/{}", by.unwrap_or_default()));
            }
        }
    }
    if let Some(limits) = config.inbound_rate_limits(index)
        && let Some(limit) = limits.requests
        && !proxy.rate_limits.take(index, Counting::Requests, limit)
    {
        tracing::debug!(caller = caller.label(), "request refused by a MeshRateLimit");
        let response = inbound_policies::rate_limited(&limits);
        forward::record(proxy, INBOUND, caller.label(), &spec.service, response.status(), started);
        return response;
    }
    let faults = inbound_policies::decide(&config.inbound_faults(index));
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if let Some(status) = faults.abort {
        let response = inbound_policies::aborted(status);
        forward::record(proxy, INBOUND, caller.label(), &spec.service, response.status(), started);
        return response;
    }
    let response = {
        let headers = request.headers_mut();
        strip_hop_by_hop(headers, upgrading);
        remove_every_spelling(headers, &[PEER_IDENTITY]);
        if let Caller::Mesh(peer) = caller
            && let Ok(value) = HeaderValue::from_str(peer.id.as_str())
        {
            headers.insert(PEER_IDENTITY, value);
        }
        if !request.headers().contains_key(header::HOST)
            && let Some(authority) = request.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            request.headers_mut().insert(header::HOST, authority);
        }
        let h2c = matches!(spec.protocol, Some(Protocol::Http2 | Protocol::Grpc));
        let result = if upgrading {
            // The upgraded connection outlives this HTTP connection: it watches the caller itself.
            let (state, caller, inbound) = (proxy.state().clone(), caller.clone(), spec.clone());
            let cut = async move {
                let reason = caller.cut(&state, |c| c.inbound_index(&inbound)).await;
                tracing::info!(
                    caller = caller.label(),
                    reason = reason.as_str(),
                    "closing the caller's upgraded connection"
                );
                reason.count(&state, INBOUND);
            };
            forward::upgrade(request, |r| async {
                proxy.app.send_upgrade(spec.app, r).await.map(|response| (response, cut))
            })
            .await
        } else {
            let timeouts = config.inbound_timeouts(index);
            let within = timeouts.connect.unwrap_or(crate::app_client::CONNECT_TIMEOUT);
            // As in Envoy, a fault's delay comes before the request's deadline starts.
            let limits = Limits::new(&timeouts, (if faults.delay.is_zero() { started } else { Instant::now() }).into());
            match limits.exchange(opa::body(request, buffered), |r| proxy.app.send(spec.app, h2c, within, r)).await {
                Ok(result) => result,
                Err(expired) => {
                    tracing::info!(app = %spec.app, ?expired, "request ended by a MeshTimeout");
                    let response = expired.response();
                    forward::record(proxy, INBOUND, caller.label(), &spec.service, response.status(), started);
                    return response;
                }
            }
        };
        match result {
            Ok(mut response) => {
                if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                    strip_hop_by_hop(response.headers_mut(), false);
                    opa::add_headers(response.headers_mut(), &response_headers, true);
                    if let Some(rate) = faults.bandwidth {
                        response = inbound_policies::throttle(response, rate);
                    }
                }
                response
            }
            Err(e) => {
                // The application's address and the OS error stay in the log, not in the answer.
                tracing::warn!(app = %spec.app, error = %e, "cannot reach the application");
                forward::unavailable(StatusCode::BAD_GATEWAY, "upstream connect error")
            }
        }
    };
    forward::record(proxy, INBOUND, caller.label(), &spec.service, response.status(), started);
    response
}

/// `Type/name` of the policy behind a decision, or `default-deny`.
pub fn policy_label(decision: &ward_api::policy::Decision) -> String {
    decision.policy.as_ref().map_or_else(|| "default-deny".to_string(), ToString::to_string)
}

fn denial<'a, B>(caller: &'a Caller, spec: &'a InboundSpec, request: &'a Request<B>, policy: &'a str) -> Denial<'a> {
    Denial {
        caller: caller.label(),
        destination: &spec.service,
        method: request.method().as_str(),
        path: request.uri().path(),
        policy,
    }
}

#[cfg(test)]
mod tests;
