//! MeshHTTPRoute and MeshTCPRoute in the caller's proxy: the route table of a destination, read
//! once per configuration, the route a request takes, the filters it applies, and the weighted
//! choice of a backend (another service, or some instances of one by tags).

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use regex::Regex;
use ward_api::{
    dataplane::Tags,
    mesh_http_route::{
        Filter, FilterType, HeaderModifier, Match, PathMatchType, PathRewrite, PathRewriteType, QueryMatchType,
    },
    mesh_retry::HeaderMatchType,
    rules::routes::{Backend, HttpRoutes, Mirror, TcpRoute},
};

use ward_http::{Body, body::text};

/// Where a request or connection goes: a destination key, and the tags its instances must
/// have (none: any instance).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The destination key.
    pub key: &'a str,
    /// The instances' tags.
    pub subset: Option<&'a Tags>,
}

impl<'a> Target<'a> {
    /// The destination `backend` names.
    pub fn of(backend: &'a Backend) -> Self {
        Target { key: &backend.key, subset: (!backend.tags.is_empty()).then_some(&backend.tags) }
    }
}

/// Backends chosen at random in proportion to their weights.
#[derive(Debug, Default)]
pub struct Weighted(Vec<Backend>);

impl Weighted {
    /// Backends by weight.
    pub fn new(backends: Vec<Backend>) -> Self {
        Weighted(backends)
    }

    /// One backend, drawn by weight; `None` when every weight is zero (or there is none).
    pub fn pick(&self) -> Option<&Backend> {
        let total: u64 = self.0.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut draw = rand::random_range(0..total);
        self.0.iter().find(|b| {
            let w = u64::from(b.weight);
            if draw < w {
                return true;
            }
            draw -= w;
            false
        })
    }

    /// Whether there is no backend.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The MeshTCPRoute of a destination: its backends by weight.
pub fn tcp_table(conf: &serde_json::Value) -> Result<Weighted, String> {
    let route: TcpRoute = serde_json::from_value(conf.clone()).map_err(|e| format!("MeshTCPRoute conf: {e}"))?;
    Ok(Weighted::new(route.backends))
}

/// How a path is matched.
#[derive(Debug)]
enum PathCheck {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

/// How a header or query value is matched.
#[derive(Debug)]
enum ValueCheck {
    Exact(String),
    Present,
    Absent,
    Prefix(String),
    Regex(Regex),
}

impl ValueCheck {
    fn holds(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (ValueCheck::Absent, v) => v.is_none(),
            (_, None) => false,
            (ValueCheck::Present, Some(_)) => true,
            (ValueCheck::Exact(want), Some(v)) => v == want,
            (ValueCheck::Prefix(want), Some(v)) => v.starts_with(want.as_str()),
            (ValueCheck::Regex(re), Some(v)) => re.is_match(v),
        }
    }
}

/// A whole-value regular expression (Envoy's matchers match the whole value).
fn whole(expr: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{expr})$")).map_err(|e| format!("regular expression {expr:?}: {e}"))
}

/// One match, read.
#[derive(Debug)]
struct Matcher {
    path: Option<PathCheck>,
    method: Option<String>,
    headers: Vec<(HeaderName, ValueCheck)>,
    query: Vec<(String, ValueCheck)>,
}

impl Matcher {
    fn new(m: &Match) -> Result<Matcher, String> {
        let path = match &m.path {
            None => None,
            Some(p) => Some(match p.ty {
                PathMatchType::Exact => PathCheck::Exact(p.value.clone()),
                PathMatchType::PathPrefix => PathCheck::Prefix(p.value.trim_end_matches('/').to_string()),
                PathMatchType::RegularExpression => PathCheck::Regex(whole(&p.value)?),
            }),
        };
        let mut headers = Vec::new();
        for h in m.headers.iter().flatten() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| format!("header {:?}: {e}", h.name))?;
            let value = h.value.clone().unwrap_or_default();
            let check = match h.ty.unwrap_or(HeaderMatchType::Exact) {
                HeaderMatchType::Exact => ValueCheck::Exact(value),
                HeaderMatchType::Present => ValueCheck::Present,
                HeaderMatchType::Absent => ValueCheck::Absent,
                HeaderMatchType::Prefix => ValueCheck::Prefix(value),
                HeaderMatchType::RegularExpression => ValueCheck::Regex(whole(&value)?),
            };
            headers.push((name, check));
        }
        let mut query = Vec::new();
        for q in m.query_params.iter().flatten() {
            let check = match q.ty {
                QueryMatchType::Exact => ValueCheck::Exact(q.value.clone()),
                QueryMatchType::RegularExpression => ValueCheck::Regex(whole(&q.value)?),
            };
            query.push((q.name.clone(), check));
        }
        Ok(Matcher { path, method: m.method.map(|m| m.as_str().to_string()), headers, query })
    }

    fn holds<B>(&self, request: &Request<B>) -> bool {
        let path = request.uri().path();
        let path_ok = match &self.path {
            None => true,
            Some(PathCheck::Exact(p)) => path == p,
            // An empty prefix is `/`, which every path has.
            Some(PathCheck::Prefix(p)) => {
                p.is_empty()
                    || path.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            Some(PathCheck::Regex(re)) => re.is_match(path),
        };
        path_ok
            && self.method.as_deref().is_none_or(|m| request.method().as_str() == m)
            && self.headers.iter().all(|(name, check)| check.holds(joined(request.headers(), name).as_deref()))
            && self.query.iter().all(|(name, check)| check.holds(query_value(request.uri(), name).as_deref()))
    }

    /// The prefix a `ReplacePrefixMatch` replaces.
    fn prefix(&self) -> Option<&str> {
        match &self.path {
            Some(PathCheck::Prefix(p)) => Some(p),
            _ => None,
        }
    }
}

/// Every value of header `name`, joined by commas as Envoy reads them; `None` when absent.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().map(|v| v.to_str().unwrap_or_default()).collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The first value of query parameter `name`, as written.
fn query_value(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_string())
    })
}

/// One route, read.
#[derive(Debug)]
pub struct Route {
    matcher: Matcher,
    filters: Vec<Filter>,
    /// Where copies of requests go.
    pub mirrors: Vec<Mirror>,
    /// Where requests go.
    pub backends: Weighted,
}

/// A destination's MeshHTTPRoute table.
#[derive(Debug, Default)]
pub struct HttpTable(Vec<Route>);

impl HttpTable {
    /// The table of a merged MeshHTTPRoute conf, its expressions compiled.
    pub fn from_conf(conf: &serde_json::Value) -> Result<HttpTable, String> {
        let routes: HttpRoutes =
            serde_json::from_value(conf.clone()).map_err(|e| format!("MeshHTTPRoute conf: {e}"))?;
        let mut table = Vec::new();
        for r in routes.routes {
            table.push(Route {
                matcher: Matcher::new(&r.matches)?,
                filters: r.filters,
                mirrors: r.mirrors,
                backends: Weighted::new(r.backends),
            });
        }
        Ok(HttpTable(table))
    }

    /// The first route that takes `request`.
    pub fn find<B>(&self, request: &Request<B>) -> Option<&Route> {
        self.0.iter().find(|r| r.matcher.holds(request))
    }
}

impl Route {
    /// The redirect this route answers `request` with, if it redirects.
    pub fn redirect<B>(&self, request: &Request<B>) -> Option<Response<Body>> {
        let filter = self.filters.iter().find(|f| f.ty == FilterType::RequestRedirect)?;
        let r = filter.request_redirect.as_ref()?;
        let (host, port) = request_host(request);
        let host = r.hostname.clone().unwrap_or(host);
        let port = r.port.map(|p| p.to_string()).or(port);
        let scheme = r.scheme.as_deref().unwrap_or("http");
        let path = match &r.path {
            Some(rewrite) => self.rewritten(request.uri().path(), rewrite),
            None => request.uri().path().to_string(),
        };
        let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let location = format!("{scheme}://{host}{port}{path}{query}");
        let status = r.status_code.and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok());
        let mut response = text(status.unwrap_or(StatusCode::FOUND), "");
        response.headers_mut().remove(header::CONTENT_TYPE);
        match HeaderValue::from_str(&location) {
            Ok(value) => response.headers_mut().insert(header::LOCATION, value),
            Err(_) => return Some(text(StatusCode::BAD_REQUEST, "the redirect's location is not a valid header")),
        };
        Some(response)
    }

    /// Applies the request filters (header changes, URL rewrites) to `request`, in order.
    pub fn rewrite_request<B>(&self, request: &mut Request<B>) {
        for filter in &self.filters {
            match filter.ty {
                FilterType::RequestHeaderModifier => {
                    if let Some(m) = &filter.request_header_modifier {
                        modify(request.headers_mut(), m);
                    }
                }
                FilterType::URLRewrite => {
                    let Some(rewrite) = &filter.url_rewrite else { continue };
                    if let Some(host) = rewrite.hostname.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
                        request.headers_mut().insert(header::HOST, host);
                        set_uri(request, None);
                    }
                    if let Some(path) = &rewrite.path {
                        let new = self.rewritten(request.uri().path(), path);
                        set_uri(request, Some(&new));
                    }
                }
                _ => {}
            }
        }
    }

    /// Applies the answer filters to `response`, in order.
    pub fn rewrite_response<B>(&self, response: &mut Response<B>) {
        for filter in self.filters.iter().filter(|f| f.ty == FilterType::ResponseHeaderModifier) {
            if let Some(m) = &filter.response_header_modifier {
                modify(response.headers_mut(), m);
            }
        }
    }

    /// `path` rewritten as `rewrite` says, against this route's prefix.
    fn rewritten(&self, path: &str, rewrite: &PathRewrite) -> String {
        match rewrite.ty {
            PathRewriteType::ReplaceFullPath => rewrite.replace_full_path.clone().unwrap_or_else(|| path.to_string()),
            PathRewriteType::ReplacePrefixMatch => {
                let replacement = rewrite.replace_prefix_match.as_deref().unwrap_or("/");
                let Some(rest) = self.matcher.prefix().and_then(|p| path.strip_prefix(p)) else {
                    return path.to_string();
                };
                match (rest, replacement.trim_end_matches('/')) {
                    ("", "") => "/".to_string(),
                    ("", _) => replacement.to_string(),
                    (rest, kept) => format!("{kept}{rest}"),
                }
            }
        }
    }
}

/// The request's host and port, from its Host header or its URI.
fn request_host<B>(request: &Request<B>) -> (String, Option<String>) {
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            (host.to_string(), Some(port.to_string()))
        }
        _ => (authority.to_string(), None),
    }
}

/// Sets the request's URI to origin form (the Host header names the host), with `path` in
/// place of its path when given; its query stays.
fn set_uri<B>(request: &mut Request<B>, path: Option<&str>) {
    let path = path.unwrap_or(request.uri().path());
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    if let Ok(uri) = format!("{path}{query}").parse::<Uri>() {
        if let Some(authority) = request.uri().authority().cloned()
            && !request.headers().contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            request.headers_mut().insert(header::HOST, host);
        }
        *request.uri_mut() = uri;
    }
}

/// Applies a header modifier: set replaces, add appends, remove drops.
fn modify(headers: &mut HeaderMap, m: &HeaderModifier) {
    let pair = |name: &str, value: &str| {
        Some((HeaderName::from_bytes(name.as_bytes()).ok()?, HeaderValue::from_str(value).ok()?))
    };
    for h in m.set.iter().flatten() {
        if let Some((name, value)) = pair(&h.name, &h.value) {
            headers.insert(name, value);
        }
    }
    for h in m.add.iter().flatten() {
        if let Some((name, value)) = pair(&h.name, &h.value) {
            headers.append(name, value);
        }
    }
    for name in m.remove.iter().flatten() {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
}

/// The routes of each destination of one configuration.
#[derive(Debug, Default)]
pub struct Routes {
    /// MeshHTTPRoute tables by destination key.
    pub http: std::collections::HashMap<String, Arc<HttpTable>>,
    /// MeshTCPRoute backends by destination key.
    pub tcp: std::collections::HashMap<String, Arc<Weighted>>,
}

#[cfg(test)]
mod tests;
