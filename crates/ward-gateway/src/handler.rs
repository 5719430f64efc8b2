//! Handling one request: framing checks, path normalisation, routing, the
//! route's plugins, then the upstream call with hop-by-hop headers removed and
//! X-Forwarded-* set, and Kong's errors on failure.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use hyper::body::{Body as HttpBody, Incoming};
use ipnet::IpNet;
use ward_http::headers::{remove_every_spelling, remove_other_spellings, strip_hop_by_hop};

use crate::compiled::{Gateway, PathHandling, Route};
use crate::exchange::{Exchange, RequestBody, consumer_headers};
use crate::listener::ConnInfo;
use crate::reply::{Body, Reply};
use crate::router::{Found, RequestView};
use crate::upstream::balancer::{HashOn, hash_key};
use crate::upstream::call::{Outgoing, OutgoingBody, call};
use crate::upstream::{Service, Upstream};

/// Headers the gateway sets about the client; from a trusted peer, their usual spelling is kept.
const FORWARDED: [HeaderName; 7] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-path"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-real-ip"),
];

/// The client's address: the peer, or, when the peer is a trusted proxy, the first
/// untrusted address of X-Forwarded-For counting from the right.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let forwarded: Vec<&str> = headers
        .get_all(HeaderName::from_static("x-forwarded-for"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for entry in forwarded.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>() else { break };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// What the upstream is asked for: the service's path `base` joined with the request's
/// `path` (without its first `matched_len` bytes when `strip`) by the route's rules.
fn upstream_path(handling: PathHandling, base: Option<&str>, path: &str, matched_len: usize, strip: bool) -> String {
    match handling {
        PathHandling::V0 => joined_v0(base, path, matched_len, strip),
        PathHandling::V1 => prefixed_v1(base, path, matched_len, strip),
    }
}

/// Kong's `path_handling: v1`: the service's path, then what follows the matched prefix
/// (with `strip` and a path matched) or the request's path without its first slash; where
/// two slashes would meet, one is dropped.
fn prefixed_v1(base: Option<&str>, path: &str, matched_len: usize, strip: bool) -> String {
    let base = base.unwrap_or("/");
    let rest = if strip && matched_len > 0 {
        path.get(matched_len..).unwrap_or_default()
    } else {
        path.strip_prefix('/').unwrap_or(path)
    };
    match (base.strip_suffix('/'), rest.starts_with('/')) {
        (Some(trimmed), true) => format!("{trimmed}{rest}"),
        _ => format!("{base}{rest}"),
    }
}

/// Kong's `path_handling: v0`: the paths are segments, joined by one slash.
fn joined_v0(base: Option<&str>, path: &str, matched_len: usize, strip: bool) -> String {
    let base = base.unwrap_or("/");
    let postfix = if strip { &path[matched_len.min(path.len())..] } else { &path[1..] };
    let base_ends_slash = base.ends_with('/');
    match (base_ends_slash, strip) {
        (true, true) if postfix.is_empty() => {
            if base == "/" || path.ends_with('/') {
                base.to_string()
            } else {
                base[..base.len() - 1].to_string()
            }
        }
        (true, true) if postfix.starts_with('/') => format!("{}{postfix}", &base[..base.len() - 1]),
        (true, _) => format!("{base}{postfix}"),
        (false, true) if postfix.is_empty() => {
            if path.len() > 1 && path.ends_with('/') {
                format!("{base}/")
            } else {
                base.to_string()
            }
        }
        (false, true) if postfix.starts_with('/') => format!("{base}{postfix}"),
        (false, true) => format!("{base}/{postfix}"),
        (false, false) => {
            if path == "/" {
                base.to_string()
            } else {
                format!("{base}{path}")
            }
        }
    }
}

/// Host of a Host header (or authority): lower-cased, without the port.
fn host_only(authority: &str) -> String {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn status_reply(status: StatusCode) -> Response<Body> {
    Reply::status(status).into_response()
}

/// Handles one request from a client.
pub(crate) async fn handle(
    gw: Arc<Gateway>,
    trusted: &[IpNet],
    conn: &ConnInfo,
    request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let (parts, body) = request.into_parts();
    let h = &parts.headers;
    // Framing is the HTTP/1 parser's: it refuses differing Content-Lengths and a
    // Transfer-Encoding not ending in chunked, and beside chunked it drops Content-Length
    // and closes the connection after the response (RFC 9112, 6.1), so nothing can be
    // smuggled behind a body. Two Host headers it lets through; they are refused here.
    if h.get_all(header::HOST).iter().count() > 1 {
        return status_reply(StatusCode::BAD_REQUEST);
    }
    let Ok(path) = crate::path::normalize(parts.uri.path()) else { return status_reply(StatusCode::BAD_REQUEST) };
    let authority = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let host = host_only(&authority);
    let view = RequestView {
        method: &parts.method,
        host: &host,
        port: conn.local.port(),
        path: &path,
        headers: h,
        sni: conn.sni.as_deref(),
        https: conn.https,
    };
    let Some(mut found) = gw.router.find(&view) else {
        return Reply::error(StatusCode::NOT_FOUND, "no Route matched with those values").into_response();
    };
    let route = &gw.routes[found.route];
    if !conn.https && !route.protocols.http {
        return upgrade_to_https(route, &authority, &parts.uri);
    }
    let mut headers = parts.headers;
    // Under every spelling: an application may read X_Consumer_Username as X-Consumer-Username.
    remove_every_spelling(&mut headers, &consumer_headers::ALL);
    remove_other_spellings(&mut headers, &FORWARDED);
    let client_ip = client_ip(conn.peer.ip(), &headers, trusted);
    let service = route.service.map(|s| &gw.services[s]);
    // The response phase needs the client's method, whatever a plugin sends upstream.
    let head = parts.method == Method::HEAD;
    // What the log plugins serialize of the request, as the client sent it.
    let logged = route.chain.logs().then(|| (parts.method.clone(), parts.uri.clone(), headers.clone()));
    let mut ex = Exchange {
        method: parts.method,
        headers,
        path,
        query: parts.uri.query().map(str::to_string),
        uri: parts.uri,
        version: parts.version,
        body: RequestBody::Stream(body),
        client_ip,
        conn,
        consumers: &gw.consumers,
        route,
        service,
        consumer: None,
        credential: None,
        response_headers: HeaderMap::new(),
        uri_captures: std::mem::take(&mut found.captures),
        upstream_path: None,
        upstream_host: None,
        responders: Vec::new(),
        session: Default::default(),
    };
    let outcome = route.chain.run(&mut ex).await;
    let extra = std::mem::take(&mut ex.response_headers);
    let responders = std::mem::take(&mut ex.responders);
    let mut state = ex.access_state();
    let (response, upstream, upstream_uri) = match (outcome, service) {
        (Err(reply), _) => (reply.into_response(), None, None),
        (Ok(()), None) => (
            Reply::error(StatusCode::SERVICE_UNAVAILABLE, "no Service found with those values").into_response(),
            None,
            None,
        ),
        (Ok(()), Some(service)) => forward(ex, found, service, &authority, trusted).await,
    };
    // As Kong's header and body filters: the plugins' response headers first (they all
    // come before the response phase plugins by priority), then those plugins in order.
    let response = crate::plugins::respond(&responders, with_headers(response, extra), head, &mut state).await;
    if let Some(conf) = crate::plugins::prometheus(&responders) {
        let finished = crate::plugins::prometheus::Finished {
            service,
            route_name: route.name.as_deref(),
            route_id: &route.id,
            status: response.status().as_u16(),
            from_service: upstream.is_some(),
            consumers: &gw.consumers,
            consumer: state.consumer,
            total: started.elapsed(),
            upstream,
        };
        gw.metrics.record(conf, &finished);
    }
    if let Some((method, uri, request_headers)) = &logged {
        let mut log = crate::plugins::logs(&responders).peekable();
        if log.peek().is_some() {
            let entry = crate::plugins::logs::Entry {
                method,
                uri,
                https: conn.https,
                authority: &authority,
                port: conn.local.port(),
                request_headers,
                upstream_uri: upstream_uri.as_deref(),
                status: response.status(),
                response_headers: response.headers(),
                started_at,
                total: started.elapsed(),
                upstream,
                upstream_failed: upstream.is_none() && upstream_uri.is_some(),
                client_ip,
                route,
                service,
                consumer: state.consumer.map(|c| &gw.consumers.list[c]),
            };
            let line: Arc<str> = Arc::from(crate::plugins::logs::serialize(&entry).to_string());
            for l in log {
                l.push(&line);
            }
        }
    }
    response
}

/// 426 for an https-only route reached over plain HTTP, or the configured redirect.
fn upgrade_to_https(route: &Route, authority: &str, uri: &http::Uri) -> Response<Body> {
    if route.https_redirect_status_code == StatusCode::UPGRADE_REQUIRED {
        return Reply::error(StatusCode::UPGRADE_REQUIRED, "Please use HTTPS protocol")
            .header(header::CONNECTION, HeaderValue::from_static("Upgrade"))
            .header(header::UPGRADE, HeaderValue::from_static("TLS/1.2, HTTP/1.1"))
            .into_response();
    }
    let target = format!("https://{}{}", host_only(authority), uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut reply = Reply::empty(route.https_redirect_status_code);
    if let Ok(location) = HeaderValue::from_str(&target) {
        reply = reply.header(header::LOCATION, location);
    }
    reply.into_response()
}

/// Adds the plugins' response headers (Vary is appended, the others replace).
pub(crate) fn with_headers(mut response: Response<Body>, extra: HeaderMap) -> Response<Body> {
    let headers = response.headers_mut();
    let mut last = None;
    for (name, value) in extra {
        let name = name.or(last.clone()).expect("the first entry has a name");
        last = Some(name.clone());
        if name == header::VARY {
            let present =
                headers.get_all(header::VARY).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()));
            if !present {
                headers.append(name, value);
            }
        } else {
            headers.insert(name, value);
        }
    }
    response
}

/// The hash of a request for consistent hashing: `hash_on`, else `hash_fallback`.
fn request_hash(ex: &Exchange<'_>, service: &Service) -> Option<u64> {
    let Upstream::Balanced(b) = &service.upstream else { return None };
    let key = |on: &HashOn| -> Option<String> {
        match on {
            HashOn::None => None,
            HashOn::Consumer => ex.consumer.map(|c| ex.consumers.list[c].id.clone()).or_else(|| ex.credential.clone()),
            HashOn::Ip => Some(ex.client_ip.to_string()),
            HashOn::Header(name) => ex.header(name).map(str::to_string),
            HashOn::Path => Some(ex.path.clone()),
            HashOn::QueryArg(arg) => ex.query_values(arg).first().map(|v| v.to_string()),
        }
    };
    key(&b.hash_on).or_else(|| key(&b.hash_fallback)).map(|k| hash_key(&k))
}

/// Sets X-Real-IP and X-Forwarded-*: kept from a trusted peer, Ward's own otherwise.
fn forwarded_headers(ex: &mut Exchange<'_>, trusted: &[IpNet], host: &str, prefix: Option<&str>) {
    let peer = ex.conn.peer.ip().to_canonical();
    let peer_trusted = trusted.iter().any(|n| n.contains(&peer));
    let headers = &mut ex.headers;
    let xff = HeaderName::from_static("x-forwarded-for");
    let previous: Vec<String> =
        headers.get_all(&xff).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
    let chain = if previous.is_empty() { peer.to_string() } else { format!("{}, {peer}", previous.join(", ")) };
    let port = ex.conn.local.port().to_string();
    let scheme = if ex.conn.https { "https" } else { "http" };
    let values: [(&str, Option<&str>); 6] = [
        ("x-forwarded-for", Some(&chain)),
        ("x-forwarded-proto", Some(scheme)),
        ("x-forwarded-host", Some(host)),
        ("x-forwarded-port", Some(&port)),
        ("x-forwarded-path", Some(&ex.path)),
        ("x-forwarded-prefix", prefix),
    ];
    for (name, ours) in values {
        let name = HeaderName::from_static(name);
        let keep = peer_trusted && name != xff && headers.contains_key(&name);
        if keep {
            continue;
        }
        crate::exchange::set_or_clear(headers, name, ours);
    }
    crate::exchange::set_or_clear(headers, HeaderName::from_static("x-real-ip"), Some(&ex.client_ip.to_string()));
}

/// Sends the request to the service, and the client gets its response without hop-by-hop
/// headers, or Kong's error when the upstream call fails; with the response of the upstream
/// comes how long it took to arrive, and the path and query the upstream was asked for.
async fn forward(
    mut ex: Exchange<'_>,
    found: Found,
    service: &Service,
    authority: &str,
    trusted: &[IpNet],
) -> (Response<Body>, Option<Duration>, Option<String>) {
    let route = ex.route;
    let upstream_path = match ex.upstream_path.take() {
        Some(replaced) => replaced,
        None => {
            upstream_path(route.path_handling, service.path.as_deref(), &ex.path, found.matched_len, route.strip_path)
        }
    };
    let path_and_query = match &ex.query {
        Some(q) => format!("{upstream_path}?{q}"),
        None => upstream_path,
    };
    let prefix = (route.strip_path && found.matched_len > 0).then(|| ex.path[..found.matched_len].to_string());
    forwarded_headers(&mut ex, trusted, &host_only(authority), prefix.as_deref());
    let hash = request_hash(&ex, service);
    strip_hop_by_hop(&mut ex.headers, false);
    // A body that can be sent again allows retries on another target.
    let body = match std::mem::replace(&mut ex.body, RequestBody::Buffered(Bytes::new())) {
        RequestBody::Buffered(b) => OutgoingBody::Replayable(b),
        RequestBody::Stream(s) if s.is_end_stream() => OutgoingBody::Replayable(Bytes::new()),
        RequestBody::Stream(s) => OutgoingBody::Stream(s),
    };
    let preserved_host = ex.upstream_host.take().or_else(|| route.preserve_host.then(|| authority.to_string()));
    let sent_uri = path_and_query.clone();
    let outgoing = Outgoing { method: ex.method, path_and_query, headers: ex.headers, body, preserved_host };
    let sent = Instant::now();
    match call(service, outgoing, hash).await {
        Ok(response) => {
            let waited = sent.elapsed();
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers, false);
            parts.version = Version::HTTP_11;
            (Response::from_parts(parts, body), Some(waited), Some(sent_uri))
        }
        Err(e) => (e.reply().into_response(), None, Some(sent_uri)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_paths_follow_kong_v0() {
        // (service path, request path, matched prefix, strip_path, upstream path)
        let table = [
            (None, "/items/1", 6, true, "/1"),
            (None, "/items", 6, true, "/"),
            (None, "/items/1", 6, false, "/items/1"),
            (Some("/api"), "/items/1", 6, true, "/api/1"),
            (Some("/api"), "/items", 6, true, "/api"),
            (Some("/api"), "/items/", 6, true, "/api/"),
            (Some("/api/"), "/items/1", 6, true, "/api/1"),
            (Some("/api/"), "/items", 6, true, "/api"),
            (Some("/api/"), "/items/", 6, true, "/api/"),
            (Some("/api"), "/itemsx", 6, true, "/api/x"),
            (Some("/api/"), "/itemsx", 6, true, "/api/x"),
            (Some("/api"), "/items/1", 6, false, "/api/items/1"),
            (Some("/api/"), "/items/1", 6, false, "/api/items/1"),
            (Some("/api"), "/", 1, false, "/api"),
            (None, "/", 0, true, "/"),
        ];
        for (base, path, matched, strip, want) in table {
            assert_eq!(
                upstream_path(PathHandling::V0, base, path, matched, strip),
                want,
                "{base:?} {path} {matched} {strip}"
            );
        }
    }

    #[test]
    fn upstream_paths_follow_kongs_path_handling_table() {
        // Kong's table for path_handling (autodoc/data/admin-api.lua, routes): service path
        // /s; (route path, strip_path, path_handling, request path, proxied path).
        let table = [
            ("/fv0", false, PathHandling::V0, "/fv0req", "/s/fv0req"),
            ("/fv1", false, PathHandling::V1, "/fv1req", "/sfv1req"),
            ("/tv0", true, PathHandling::V0, "/tv0req", "/s/req"),
            ("/tv1", true, PathHandling::V1, "/tv1req", "/sreq"),
            ("/fv0/", false, PathHandling::V0, "/fv0/req", "/s/fv0/req"),
            ("/fv1/", false, PathHandling::V1, "/fv1/req", "/sfv1/req"),
            ("/tv0/", true, PathHandling::V0, "/tv0/req", "/s/req"),
            ("/tv1/", true, PathHandling::V1, "/tv1/req", "/sreq"),
        ];
        for (route, strip, handling, path, want) in table {
            assert_eq!(
                upstream_path(handling, Some("/s"), path, route.len(), strip),
                want,
                "{route} {strip} {handling:?}"
            );
        }
    }

    #[test]
    fn upstream_paths_follow_kong_v1() {
        // Kong's traditional router, v1 (kong/router/traditional.lua): (service path, request
        // path, matched prefix, strip_path, upstream path).
        let table = [
            // A trailing slash on the service's path meets the slash left after the prefix.
            (Some("/s/"), "/tv1/req", 4, true, "/s/req"),
            (Some("/s/"), "/tv1/req", 5, true, "/s/req"),
            (Some("/s/"), "/fv1/req", 4, false, "/s/fv1/req"),
            // Nothing after the prefix: the service's path alone, as written.
            (Some("/s"), "/tv1", 4, true, "/s"),
            (Some("/s/"), "/tv1", 4, true, "/s/"),
            (Some("/s"), "/tv1/", 4, true, "/s/"),
            (Some("/s"), "/tv1/", 5, true, "/s"),
            // A trailing slash of the request stays.
            (Some("/s"), "/fv1/req/", 4, false, "/sfv1/req/"),
            (Some("/s"), "/tv1/req/", 4, true, "/s/req/"),
            // No service path is /.
            (None, "/tv1/req", 4, true, "/req"),
            (None, "/tv1/req", 5, true, "/req"),
            (None, "/fv1/req", 4, false, "/fv1/req"),
            (None, "/", 1, true, "/"),
            // A route without paths strips nothing: the request's path after its first slash.
            (Some("/s"), "/req", 0, true, "/sreq"),
            (Some("/s"), "/req", 0, false, "/sreq"),
            (Some("/s"), "/", 0, true, "/s"),
            (Some("/s/"), "/req", 0, true, "/s/req"),
        ];
        for (base, path, matched, strip, want) in table {
            assert_eq!(
                upstream_path(PathHandling::V1, base, path, matched, strip),
                want,
                "{base:?} {path} {matched} {strip}"
            );
        }
    }

    #[test]
    fn client_address_comes_from_forwarded_for_only_through_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let table = [
            ("192.0.2.1", Some("203.0.113.9"), "192.0.2.1"),
            ("10.0.0.5", Some("203.0.113.9"), "203.0.113.9"),
            ("10.0.0.5", Some("198.51.100.7, 203.0.113.9, 10.1.1.1"), "203.0.113.9"),
            ("10.0.0.5", None, "10.0.0.5"),
            ("10.0.0.5", Some("garbage, 10.2.2.2"), "10.2.2.2"),
            ("::ffff:10.0.0.5", Some("2001:db8::7"), "2001:db8::7"),
        ];
        for (peer, xff, want) in table {
            let mut headers = HeaderMap::new();
            if let Some(x) = xff {
                headers.insert("x-forwarded-for", x.parse().unwrap());
            }
            assert_eq!(
                client_ip(peer.parse().unwrap(), &headers, &trusted),
                want.parse::<IpAddr>().unwrap(),
                "{peer} {xff:?}"
            );
        }
    }
}
