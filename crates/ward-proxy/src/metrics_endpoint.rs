//! The Prometheus endpoint of Kuma's `metrics`: the proxy's metrics (filtered as the conf or
//! a `filter` query asks) and its applications' (`aggregate`), on
//! `networking.address:port/path`, over plain HTTP, the mesh's mTLS (a scraper needs a mesh
//! certificate and a permission for the endpoint's tags) or a certificate given to the proxy.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use regex::Regex;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use ward_api::metrics::{AppMetrics, EndpointTls, PrometheusEndpoint};
use ward_http::{
    Body,
    body::{full, text},
};

use crate::{
    Proxy,
    authorization::{Caller, Peer, authorize},
    inbound::DENIED_BODY,
};

/// How long an application's metrics may take to arrive.
const APP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest application metrics body merged in.
const APP_MAX_BYTES: usize = 8 << 20;
/// Content type of the proxy's own metrics alone.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type once applications' metrics are merged in (they may not be OpenMetrics).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The endpoint a configuration asks for, where it listens.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSpec {
    /// Where scrapers connect.
    pub listen: SocketAddr,
    /// What it serves and how.
    pub endpoint: PrometheusEndpoint,
    /// Index of its inbound in the Dataplane as permissions see it
    /// ([`ward_api::metrics::with_endpoint_inbound`]).
    pub inbound: usize,
}

/// Serves scrapers on `listener` until `stop`, which also closes the open connections: a
/// configuration that changes how the endpoint is served (say, plain HTTP to mTLS) leaves no
/// connection served the old way.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, spec: Arc<EndpointSpec>, stop: CancellationToken) {
    let shared = proxy.clone();
    let closed = stop.clone();
    ward_http::accept::serve(listener, &shared.limits, &shared.connections, stop, move |tcp, _peer| {
        let (handled, closed) = (handle(proxy.clone(), spec.clone(), tcp), closed.clone());
        async move {
            tokio::select! {
                _ = handled => {}
                _ = closed.cancelled() => {}
            }
        }
    })
    .await
}

/// Why the endpoint cannot be served as its conf says.
pub fn unservable(proxy: &Proxy, spec: &EndpointSpec) -> Option<String> {
    (spec.endpoint.tls == EndpointTls::Provided && proxy.metrics_tls.is_none()).then(|| {
        "metrics: tls.mode providedTLS needs `ward dp run --metrics-cert-path` and `--metrics-key-path`".to_string()
    })
}

async fn handle(proxy: Arc<Proxy>, spec: Arc<EndpointSpec>, tcp: TcpStream) {
    let timeout = proxy.limits.header_read_timeout;
    match spec.endpoint.tls {
        EndpointTls::Disabled => serve_http(proxy, spec, tcp, Caller::Unchecked).await,
        EndpointTls::Provided => {
            let Some(config) = proxy.metrics_tls.clone() else { return };
            if let Ok(Ok(tls)) = tokio::time::timeout(timeout, TlsAcceptor::from(config).accept(tcp)).await {
                serve_http(proxy, spec, tls, Caller::Unchecked).await;
            }
        }
        EndpointTls::Mesh => {
            let Some(service) = proxy.state().config().map(|c| c.dataplane_spec().service().to_string()) else {
                return;
            };
            let Some(server_tls) = proxy.server_tls(&service) else { return };
            let acceptor = TlsAcceptor::from(server_tls);
            let Ok(Ok(tls)) = tokio::time::timeout(timeout, acceptor.accept(tcp)).await else { return };
            let Some(peer) = Peer::of(proxy.state(), tls.get_ref().1) else { return };
            serve_http(proxy, spec, tls, Caller::Mesh(peer)).await;
        }
    }
}

async fn serve_http<IO>(proxy: Arc<Proxy>, spec: Arc<EndpointSpec>, io: IO, caller: Caller)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let proxy = proxy.clone();
        service_fn(move |request| {
            let (proxy, spec, caller) = (proxy.clone(), spec.clone(), caller.clone());
            async move { Ok::<_, std::convert::Infallible>(answer(&proxy, &spec, &caller, request).await) }
        })
    };
    let _ = proxy.http_server.serve_connection(TokioIo::new(io), service).await;
}

async fn answer(proxy: &Proxy, spec: &EndpointSpec, caller: &Caller, request: Request<Incoming>) -> Response<Body> {
    let Some(config) = proxy.state().config() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "proxy has no configuration\n");
    };
    // Between a new configuration and the listener's restart, the old endpoint answers nothing.
    if config.prometheus.as_deref() != Some(spec) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "this metrics endpoint is no longer configured\n");
    }
    if !authorize(proxy.state(), caller, &config, spec.inbound).allows() {
        return text(StatusCode::FORBIDDEN, DENIED_BODY);
    }
    if request.uri().path() != spec.endpoint.path {
        return text(StatusCode::NOT_FOUND, format!("metrics are served at {}\n", spec.endpoint.path));
    }
    let query_filter = request
        .uri()
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "filter").map(|(_, v)| v.into_owned()));
    let mut filters = Vec::new();
    for (what, pattern) in [("envoy.filterRegex", spec.endpoint.filter_regex.clone()), ("filter", query_filter)] {
        match pattern.map(|p| Regex::new(&p)) {
            Some(Ok(regex)) => filters.push(regex),
            Some(Err(e)) => return text(StatusCode::BAD_REQUEST, format!("{what}: not a regular expression: {e}\n")),
            None => {}
        }
    }
    let own = select(&proxy.state().metrics.encode(), &filters, spec.endpoint.used_only);
    if spec.endpoint.aggregate.is_empty() {
        return with_type(full(own), OPENMETRICS);
    }
    let mut body = strip_eof(&own);
    for app in &spec.endpoint.aggregate {
        match scrape(proxy, app).await {
            Ok(metrics) => body.push_str(&strip_eof(&metrics)),
            Err(reason) => {
                tracing::warn!(application = %app.name, %reason, "application metrics unavailable");
                body.push_str(&format!("# application metrics {} unavailable: {reason}\n", app.name));
            }
        }
    }
    with_type(full(body), PROMETHEUS_TEXT)
}

fn with_type(body: Body, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

/// The metric families of `text` (OpenMetrics) whose names every filter matches, with only
/// families that have counted something when `used_only`; `# EOF` kept.
fn select(text: &str, filters: &[Regex], used_only: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut family: Vec<&str> = Vec::new();
    let mut name = "";
    let flush = |out: &mut String, family: &mut Vec<&str>, name: &str| {
        let used = family
            .iter()
            .filter(|l| !l.starts_with('#'))
            .any(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v != 0.0));
        if filters.iter().all(|f| f.is_match(name)) && (used || !used_only) {
            for line in family.iter() {
                out.push_str(line);
                out.push('\n');
            }
        }
        family.clear();
    };
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let header = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE "));
        if let Some(rest) = header {
            let this = rest.split(' ').next().unwrap_or("");
            if this != name {
                flush(&mut out, &mut family, name);
                name = this;
            }
        }
        family.push(line);
    }
    flush(&mut out, &mut family, name);
    out.push_str("# EOF\n");
    out
}

fn strip_eof(text: &str) -> String {
    let mut out: String = text.lines().filter(|l| l.trim() != "# EOF").flat_map(|l| [l, "\n"]).collect();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The metrics an application serves, as text.
async fn scrape(proxy: &Proxy, app: &AppMetrics) -> Result<String, String> {
    let ip = app.address.parse().map_err(|_| format!("address {:?} is not an IP address", app.address))?;
    let request = Request::get(&app.path)
        .header(header::HOST, format!("{}:{}", app.address, app.port))
        .header(header::ACCEPT, "text/plain")
        .body(Empty::<Bytes>::new().map_err(|never| match never {}).boxed())
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let response = proxy
            .app
            .send(SocketAddr::new(ip, app.port), false, crate::app_client::CONNECT_TIMEOUT, request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), APP_MAX_BYTES);
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8 text".to_string())
    };
    tokio::time::timeout(APP_TIMEOUT, fetch).await.map_err(|_| format!("no answer within {APP_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP ward_requests Requests.\n# TYPE ward_requests counter\n\
                        ward_requests_total{direction=\"inbound\"} 3\n\
                        # HELP ward_cut Connections cut.\n# TYPE ward_cut counter\nward_cut_total 0\n\
                        # HELP ward_up Up.\n# TYPE ward_up gauge\nward_up 1\n# EOF\n";

    #[test]
    fn families_are_kept_by_name_and_by_use() {
        let names = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .map(|l| l.split(' ').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&select(TEXT, &[], false)), ["ward_requests", "ward_cut", "ward_up"]);
        assert_eq!(names(&select(TEXT, &[], true)), ["ward_requests", "ward_up"]);
        let requests = Regex::new("requests").unwrap();
        assert_eq!(names(&select(TEXT, std::slice::from_ref(&requests), false)), ["ward_requests"]);
        let ward = Regex::new("^ward_").unwrap();
        assert_eq!(names(&select(TEXT, &[ward, requests], false)), ["ward_requests"]);
        assert!(select(TEXT, &[], false).ends_with("ward_up 1\n# EOF\n"));
        assert!(!strip_eof(TEXT).contains("# EOF"));
    }
}
