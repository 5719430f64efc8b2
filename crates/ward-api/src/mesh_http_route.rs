//! The `MeshHTTPRoute` policy: how a caller's proxy routes the HTTP requests it sends to a
//! destination (`to[]`): matches on path, method, headers and query, filters that change the
//! request or answer, and weighted backends, checked as Kuma 2.14's validator checks it.

use serde::{Deserialize, Serialize};

use crate::{
    error::Causes,
    mesh_fault_injection::{Percentage, check_percentage},
    mesh_retry::{HeaderMatch, HeaderMatchType},
    permission::TargetRef,
    route_backend::BackendRef,
};

/// A MeshHTTPRoute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshHttpRoute {
    /// The callers whose proxies route (default: the whole mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// Routes by destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<To>>,
}

/// One `to[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct To {
    /// The destination whose requests are routed.
    pub target_ref: TargetRef,
    /// Host names (MeshGateway only, which Ward does not have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One rule: the requests it takes and what is done with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// The requests taken: any of these matches.
    #[serde(default)]
    pub matches: Vec<Match>,
    /// What is done with them.
    #[serde(default)]
    pub default: RuleConf,
}

/// One match: every condition it sets holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Match {
    /// On the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// On the method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// On query parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_params: Option<Vec<QueryParamMatch>>,
    /// On headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderMatch>>,
}

string_enum! {
    /// How a path is matched.
    pub enum PathMatchType {
        /// The whole path.
        Exact = "Exact",
        /// The path, or a `/`-separated prefix of it.
        PathPrefix = "PathPrefix",
        /// The whole path matches a regular expression.
        RegularExpression = "RegularExpression",
    }
}

/// `matches[].path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    /// How.
    #[serde(rename = "type")]
    pub ty: PathMatchType,
    /// The path, prefix or expression.
    #[serde(default)]
    pub value: String,
}

string_enum! {
    /// An HTTP method.
    pub enum Method {
        /// CONNECT.
        Connect = "CONNECT",
        /// DELETE.
        Delete = "DELETE",
        /// GET.
        Get = "GET",
        /// HEAD.
        Head = "HEAD",
        /// OPTIONS.
        Options = "OPTIONS",
        /// PATCH.
        Patch = "PATCH",
        /// POST.
        Post = "POST",
        /// PUT.
        Put = "PUT",
        /// TRACE.
        Trace = "TRACE",
    }
}

string_enum! {
    /// How a query parameter is matched.
    pub enum QueryMatchType {
        /// The whole value.
        Exact = "Exact",
        /// The whole value matches a regular expression.
        RegularExpression = "RegularExpression",
    }
}

/// `matches[].queryParams[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParamMatch {
    /// How.
    #[serde(rename = "type")]
    pub ty: QueryMatchType,
    /// The parameter's name.
    pub name: String,
    /// The value or expression.
    #[serde(default)]
    pub value: String,
}

/// `rules[].default`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleConf {
    /// Changes made to the request or its answer, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<Filter>>,
    /// Where requests go, by weight (default: the destination itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<BackendRef>>,
}

string_enum! {
    /// A filter's type.
    pub enum FilterType {
        /// Sets, adds or removes request headers.
        RequestHeaderModifier = "RequestHeaderModifier",
        /// Sets, adds or removes answer headers.
        ResponseHeaderModifier = "ResponseHeaderModifier",
        /// Answers with a redirect instead of forwarding.
        RequestRedirect = "RequestRedirect",
        /// Rewrites the host or path forwarded.
        URLRewrite = "URLRewrite",
        /// Sends a copy of the request elsewhere too.
        RequestMirror = "RequestMirror",
    }
}

/// `filters[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Filter {
    /// Which.
    #[serde(rename = "type")]
    pub ty: FilterType,
    /// `RequestHeaderModifier`'s conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// `ResponseHeaderModifier`'s conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// `RequestRedirect`'s conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    /// `URLRewrite`'s conf.
    #[serde(default, rename = "urlRewrite", skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    /// `RequestMirror`'s conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
}

/// A header and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderKeyValue {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// Header changes: set (replacing), add (beside what is there), remove.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifier {
    /// Headers set, replacing any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<HeaderKeyValue>>,
    /// Headers added beside what is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Vec<HeaderKeyValue>>,
    /// Headers removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<Vec<String>>,
}

string_enum! {
    /// How a path is rewritten.
    pub enum PathRewriteType {
        /// The whole path is replaced.
        ReplaceFullPath = "ReplaceFullPath",
        /// The prefix matched is replaced.
        ReplacePrefixMatch = "ReplacePrefixMatch",
    }
}

/// A path rewrite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathRewrite {
    /// How.
    #[serde(rename = "type")]
    pub ty: PathRewriteType,
    /// The new path (`ReplaceFullPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// What replaces the prefix matched (`ReplacePrefixMatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// `requestRedirect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestRedirect {
    /// `http` or `https` (default: the request's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The host (default: the request's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The path (default: the request's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// The port (default: the request's, if it names one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// The status (default 302).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
}

/// `urlRewrite`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UrlRewrite {
    /// The host forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The path forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// MeshGateway only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_to_backend_hostname: Option<bool>,
}

/// `requestMirror`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestMirror {
    /// The share of requests copied, in percent (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percentage>,
    /// Where the copies go.
    pub backend_ref: BackendRef,
}

/// The redirect statuses Kuma allows.
const REDIRECT_STATUSES: &[i64] = &[301, 302, 303, 307, 308];

/// Checks a MeshHTTPRoute as Kuma's validator does; what Ward cannot serve is refused as
/// unsupported.
pub fn check(route: &MeshHttpRoute, causes: &mut Causes) {
    crate::route_backend::check_top(route.target_ref.as_ref(), "MeshHTTPRoute", causes);
    for (i, to) in route.to.iter().flatten().enumerate() {
        let at = format!("spec.to[{i}]");
        let gateway = crate::route_backend::on_gateway(route.target_ref.as_ref());
        crate::route_backend::check_to_ref(&to.target_ref, &format!("{at}.targetRef"), gateway, causes);
        if to.hostnames.as_ref().is_some_and(|h| !h.is_empty()) && !gateway {
            causes.add(format!("{at}.hostnames"), "must not be defined");
        }
        for (j, rule) in to.rules.iter().enumerate() {
            check_rule(rule, &format!("{at}.rules[{j}]"), gateway, causes);
        }
    }
}

fn check_rule(rule: &Rule, at: &str, gateway: bool, causes: &mut Causes) {
    if rule.matches.is_empty() {
        causes.add(format!("{at}.matches"), "must have at least one element");
    }
    for (k, m) in rule.matches.iter().enumerate() {
        check_match(m, &format!("{at}.matches[{k}]"), causes);
    }
    let prefix_only = rule.matches.iter().all(|m| m.path.as_ref().is_some_and(|p| p.ty == PathMatchType::PathPrefix));
    let filters = rule.default.filters.as_deref().unwrap_or_default();
    for (k, filter) in filters.iter().enumerate() {
        check_filter(filter, &format!("{at}.default.filters[{k}]"), prefix_only, gateway, causes);
    }
    let redirects = filters.iter().any(|f| f.ty == FilterType::RequestRedirect);
    if gateway && rule.default.backend_refs.as_ref().is_none_or(Vec::is_empty) && !redirects {
        causes.add(format!("{at}.default.backendRefs"), "must not be empty");
    }
    for (k, backend) in rule.default.backend_refs.iter().flatten().enumerate() {
        backend.check(&format!("{at}.default.backendRefs[{k}]"), causes);
    }
}

fn check_match(m: &Match, at: &str, causes: &mut Causes) {
    if let Some(path) = &m.path {
        let value = format!("{at}.path.value");
        match path.ty {
            PathMatchType::RegularExpression => check_regex(&path.value, &value, causes),
            PathMatchType::PathPrefix if path.value == "/" => {}
            PathMatchType::PathPrefix => {
                if path.value.ends_with('/') {
                    causes.add(
                        &value,
                        "does not need a trailing slash because only a `/`-separated prefix or an entire path is matched",
                    );
                }
                if !path.value.starts_with('/') {
                    causes.add(&value, "must be an absolute path");
                }
            }
            PathMatchType::Exact if !path.value.starts_with('/') => causes.add(&value, "must be an absolute path"),
            PathMatchType::Exact => {}
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, q) in m.query_params.iter().flatten().enumerate() {
        if !names.insert(q.name.as_str()) {
            causes.add(format!("{at}.queryParams[{i}].name"), format!("multiple entries for name {}", q.name));
        }
        if q.ty == QueryMatchType::RegularExpression {
            check_regex(&q.value, &format!("{at}.queryParams[{i}].value"), causes);
        }
    }
    for (i, h) in m.headers.iter().flatten().enumerate() {
        let at = format!("{at}.headers[{i}]");
        if !is_header_name(&h.name) {
            causes.add(format!("{at}.name"), "must be a valid HTTP header name");
        }
        let value = h.value.as_deref().unwrap_or_default();
        match h.ty.unwrap_or(HeaderMatchType::Exact) {
            HeaderMatchType::Present | HeaderMatchType::Absent if !value.is_empty() => {
                causes.add(format!("{at}.value"), "must not be defined");
            }
            HeaderMatchType::RegularExpression => check_regex(value, &format!("{at}.value"), causes),
            _ => {}
        }
    }
}

/// Checks that `expr` compiles (Kuma's expressions are RE2, a subset of what `regex` reads
/// with the same meaning).
fn check_regex(expr: &str, at: &str, causes: &mut Causes) {
    if let Err(e) = regex::Regex::new(expr) {
        causes.add(at, format!("must be a valid regular expression: {e}"));
    }
}

fn check_filter(filter: &Filter, at: &str, prefix_only: bool, gateway: bool, causes: &mut Causes) {
    let prefix_rewrite = |path: &Option<PathRewrite>, at: String, causes: &mut Causes| {
        let Some(path) = path else { return };
        if path.replace_prefix_match.is_some() && !prefix_only {
            causes.add(format!("{at}.replacePrefixMatch"), "can only appear if all matches match a path prefix");
        }
        let (field, set) = match path.ty {
            PathRewriteType::ReplaceFullPath => ("replaceFullPath", path.replace_full_path.is_some()),
            PathRewriteType::ReplacePrefixMatch => ("replacePrefixMatch", path.replace_prefix_match.is_some()),
        };
        if !set {
            causes.add(format!("{at}.{field}"), format!("must be defined with type {}", path.ty));
        }
    };
    match filter.ty {
        FilterType::RequestHeaderModifier | FilterType::ResponseHeaderModifier => {
            let (field, modifier) = if filter.ty == FilterType::RequestHeaderModifier {
                ("requestHeaderModifier", &filter.request_header_modifier)
            } else {
                ("responseHeaderModifier", &filter.response_header_modifier)
            };
            match modifier {
                None => causes.add(format!("{at}.{field}"), "must be defined"),
                Some(m) => check_modifier(m, &format!("{at}.{field}"), causes),
            }
        }
        FilterType::RequestRedirect => {
            let Some(r) = &filter.request_redirect else {
                return causes.add(format!("{at}.requestRedirect"), "must be defined");
            };
            let at = format!("{at}.requestRedirect");
            prefix_rewrite(&r.path, format!("{at}.path"), causes);
            check_hostname(r.hostname.as_deref(), &format!("{at}.hostname"), causes);
            if r.scheme.as_deref().is_some_and(|s| s != "http" && s != "https") {
                causes.add(format!("{at}.scheme"), "must be one of http, https");
            }
            if r.port.is_some_and(|p| !(1..=65535).contains(&p)) {
                causes.add(format!("{at}.port"), "must be between 1 and 65535");
            }
            if r.status_code.is_some_and(|s| !REDIRECT_STATUSES.contains(&s)) {
                causes.add(format!("{at}.statusCode"), "must be one of 301, 302, 303, 307, 308");
            }
        }
        FilterType::URLRewrite => {
            let Some(r) = &filter.url_rewrite else {
                return causes.add(format!("{at}.urlRewrite"), "must be defined");
            };
            let at = format!("{at}.urlRewrite");
            prefix_rewrite(&r.path, format!("{at}.path"), causes);
            check_hostname(r.hostname.as_deref(), &format!("{at}.hostname"), causes);
            if r.host_to_backend_hostname == Some(true) {
                if !gateway {
                    causes.add(format!("{at}.hostToBackendHostname"), "can only be set with MeshGateway");
                }
                if r.hostname.is_some() {
                    causes.add(format!("{at}.hostToBackendHostname"), "cannot be set together with hostname");
                }
            }
        }
        FilterType::RequestMirror => {
            let Some(m) = &filter.request_mirror else {
                return causes.add(format!("{at}.requestMirror"), "must be defined");
            };
            let at = format!("{at}.requestMirror");
            m.backend_ref.check_mirror(&format!("{at}.backendRef"), causes);
            if let Some(p) = &m.percentage {
                check_percentage(p, &format!("{at}.percentage"), causes);
            }
        }
    }
}

fn check_modifier(m: &HeaderModifier, at: &str, causes: &mut Causes) {
    if m.set.is_none() && m.add.is_none() && m.remove.is_none() {
        return causes.add(at, "must have at least one defined: set, add, remove");
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut name = |name: &str, at: String, causes: &mut Causes| {
        if !seen.insert(name.to_ascii_lowercase()) {
            causes.add(format!("{at}.name"), "duplicate header name");
        }
        if !is_header_name(name) {
            causes.add(format!("{at}.name"), "must be a valid HTTP header name");
        }
    };
    for (field, list) in [("set", &m.set), ("add", &m.add)] {
        for (i, h) in list.iter().flatten().enumerate() {
            name(&h.name, format!("{at}.{field}[{i}]"), causes);
            if !is_header_value(&h.value) {
                causes.add(format!("{at}.{field}[{i}].value"), "must be a valid HTTP header value");
            }
        }
    }
    for (i, h) in m.remove.iter().flatten().enumerate() {
        name(h, format!("{at}.remove[{i}]"), causes);
    }
}

/// Whether `name` is an HTTP header name (an RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` can be sent as an HTTP header value (no control characters but tab).
fn is_header_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Kuma's precise hostname: a DNS-1123 subdomain, never an IP address.
fn check_hostname(hostname: Option<&str>, at: &str, causes: &mut Causes) {
    let Some(host) = hostname else { return };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return causes.add(at, "cannot be an IP address");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        causes.add(
            at,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
             start and end with an alphanumeric character",
        );
    }
}

impl MeshHttpRoute {
    /// Its `to[]` entries as the policy engine reads them: each destination with its rules.
    pub fn entries(&self) -> crate::rules::Entries<'_> {
        let to = self
            .to
            .iter()
            .flatten()
            .map(|t| {
                (
                    &t.target_ref,
                    serde_json::json!({ "rules": serde_json::to_value(&t.rules).expect("rules serialize") }),
                )
            })
            .collect();
        crate::rules::Entries { top: self.target_ref.as_ref(), to, inbound: Vec::new() }
    }
}

/// Kuma's order of matches, most specific first: a path before none (Exact, then the longer
/// prefix, then the longer expression), a method before none, then more headers, then more
/// query parameters.
pub fn compare_matches(a: &Match, b: &Match) -> std::cmp::Ordering {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let path = match (&a.path, &b.path) {
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (None, None) => Equal,
        (Some(x), Some(y)) => {
            let rank = |t: PathMatchType| match t {
                PathMatchType::Exact => 0,
                PathMatchType::PathPrefix => 1,
                PathMatchType::RegularExpression => 2,
            };
            match rank(x.ty).cmp(&rank(y.ty)) {
                Equal if x.ty == PathMatchType::Exact => Equal,
                Equal => y.value.len().cmp(&x.value.len()),
                other => other,
            }
        }
    };
    let method = b.method.is_some().cmp(&a.method.is_some());
    let count = |m: &Match| (m.headers.as_ref().map_or(0, Vec::len), m.query_params.as_ref().map_or(0, Vec::len));
    let ((ha, qa), (hb, qb)) = (count(a), count(b));
    path.then(method).then(hb.cmp(&ha)).then(qb.cmp(&qa))
}
