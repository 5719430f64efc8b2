//! The router: Kong's traditional-compatible matching, compiled once per configuration.
//!
//! Each (route, path) pair becomes one matcher with Kong's priority: the number of match
//! fields (methods, hosts, headers, snis, paths), then plain hosts over wildcards, then
//! the number of headers, then regex paths (by `regex_priority`) over prefixes, then the
//! longest prefix. Equal priorities keep the order of the configuration file.

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

use crate::error::ConfigErrors;

/// The protocols a route accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Protocols {
    pub http: bool,
    pub https: bool,
}

/// A host (or SNI) pattern: exact, `*.suffix` or `prefix.*`, with an optional port.
#[derive(Debug, Clone)]
struct HostPattern {
    kind: HostKind,
    port: Option<u16>,
}

#[derive(Debug, Clone)]
enum HostKind {
    Exact(String),
    /// `*.example.com` keeps `.example.com`.
    Suffix(String),
    /// `example.*` keeps `example.`.
    Prefix(String),
}

impl HostPattern {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.to_ascii_lowercase();
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse::<u16>().map_err(|_| format!("invalid port in '{text}'"))?)),
            None => (text.clone(), None),
        };
        let stars = host.matches('*').count();
        let valid_chars = host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '_'));
        if host.is_empty() || !valid_chars || stars > 1 {
            return Err(format!("invalid host '{text}'"));
        }
        let kind = if let Some(rest) = host.strip_prefix('*') {
            if !rest.starts_with('.') || rest.len() < 2 {
                return Err(format!("invalid wildcard host '{text}': use *.example.com or example.*"));
            }
            HostKind::Suffix(rest.to_string())
        } else if let Some(rest) = host.strip_suffix('*') {
            if !rest.ends_with('.') || rest.len() < 2 {
                return Err(format!("invalid wildcard host '{text}': use *.example.com or example.*"));
            }
            HostKind::Prefix(rest.to_string())
        } else if stars == 0 {
            HostKind::Exact(host.trim_end_matches('.').to_string())
        } else {
            return Err(format!("invalid wildcard host '{text}': the wildcard must be the first or last label"));
        };
        Ok(HostPattern { kind, port })
    }

    fn is_wildcard(&self) -> bool {
        !matches!(self.kind, HostKind::Exact(_))
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.kind {
            HostKind::Exact(h) => h == host,
            HostKind::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            HostKind::Prefix(p) => host.len() > p.len() && host.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug)]
enum PathPattern {
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
enum ValuePattern {
    /// Compared case-insensitively.
    Exact(String),
    /// `~*regex`, matched case-insensitively.
    Regex(Regex),
}

impl ValuePattern {
    fn matches(&self, value: &str) -> bool {
        match self {
            ValuePattern::Exact(v) => v.eq_ignore_ascii_case(value),
            ValuePattern::Regex(r) => r.is_match(value),
        }
    }
}

#[derive(Debug)]
struct Matcher {
    route: usize,
    priority: u64,
    protocols: Protocols,
    methods: Vec<Method>,
    hosts: Vec<HostPattern>,
    headers: Vec<(HeaderName, Vec<ValuePattern>)>,
    snis: Vec<HostPattern>,
    path: Option<PathPattern>,
}

/// What the router needs to know of a request.
#[derive(Debug)]
pub(crate) struct RequestView<'a> {
    pub method: &'a Method,
    /// Host header (or :authority) without its port, lower-cased.
    pub host: &'a str,
    /// The port of the listener the request came in on.
    pub port: u16,
    /// The normalised path.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub sni: Option<&'a str>,
    pub https: bool,
}

/// The groups a regex path captured, Kong's `uri_captures`: by number (0 is the whole match)
/// and by name. Empty, as in Kong, unless the matching path is a regex with at least one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Captures {
    /// Every group by number; `None` for a group that took no part in the match.
    pub numbered: Vec<Option<String>>,
    /// The named groups, in the order of the pattern.
    pub named: Vec<(String, Option<String>)>,
}

impl Captures {
    fn of(regex: &Regex, caps: &regex::Captures<'_>) -> Self {
        let text = |m: Option<regex::Match<'_>>| m.map(|m| m.as_str().to_string());
        Captures {
            numbered: caps.iter().map(text).collect(),
            named: regex.capture_names().flatten().map(|n| (n.to_string(), text(caps.name(n)))).collect(),
        }
    }
}

/// The route a request matched and how much of its path the match covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Index of the route.
    pub route: usize,
    /// Length of the matched path prefix (or regex match), 0 when the route has no path.
    pub matched_len: usize,
    /// What a regex path captured.
    pub captures: Captures,
}

/// All routes of a configuration, ordered by priority.
#[derive(Debug, Default)]
pub(crate) struct Router {
    matchers: Vec<Matcher>,
}

/// A route's match fields as written, for [`Router::add`].
pub(crate) struct RouteFields<'a> {
    pub protocols: &'a [String],
    pub methods: &'a [String],
    pub hosts: &'a [String],
    pub paths: &'a [String],
    pub headers: &'a std::collections::BTreeMap<String, Vec<String>>,
    pub snis: &'a [String],
    pub regex_priority: i64,
}

const WEIGHT_SHIFT: u32 = 61;
const PLAIN_HOST_ONLY_BIT: u64 = 1 << 60;
const HEADER_COUNT_SHIFT: u32 = 52;
const REGEX_URL_BIT: u64 = 1 << 51;
const REGEX_PRIORITY_SHIFT: u32 = 19;
const MAX_LENGTH_MASK: u64 = 0x7FFFF;

impl Router {
    /// Compiles route `index` (written at `path`), recording every problem in `errors`.
    /// Returns the protocols the route accepts.
    pub fn add(&mut self, index: usize, at: &str, f: RouteFields<'_>, errors: &mut ConfigErrors) -> Protocols {
        let mut protocols = Protocols::default();
        for (i, p) in f.protocols.iter().enumerate() {
            match p.as_str() {
                "http" => protocols.http = true,
                "https" => protocols.https = true,
                other => {
                    errors.add(format!("{at}.protocols[{i}]"), format!("'{other}' is not supported (http, https)"))
                }
            }
        }
        if f.protocols.is_empty() {
            errors.add(format!("{at}.protocols"), "must not be empty");
        }
        if !f.snis.is_empty() && !protocols.https {
            errors.add(format!("{at}.snis"), "'snis' can only be set when 'protocols' is 'https'");
        }
        if f.methods.is_empty() && f.hosts.is_empty() && f.paths.is_empty() && f.headers.is_empty() && f.snis.is_empty()
        {
            errors.add(at, "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis'");
        }
        let mut methods = Vec::new();
        for (i, m) in f.methods.iter().enumerate() {
            match Method::from_bytes(m.as_bytes()) {
                Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) => methods.push(method),
                _ => errors.add(format!("{at}.methods[{i}]"), format!("invalid method '{m}': use upper-case letters")),
            }
        }
        let hosts = host_patterns(f.hosts, &format!("{at}.hosts"), errors);
        let snis = host_patterns(f.snis, &format!("{at}.snis"), errors);
        let mut headers = Vec::new();
        for (name, values) in f.headers {
            let field = format!("{at}.headers.{name}");
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                errors.add(field, "invalid header name");
                continue;
            };
            if header == http::header::HOST {
                errors.add(field, "cannot route on the Host header: use 'hosts'");
                continue;
            }
            if values.is_empty() {
                errors.add(&field, "must list at least one value");
            }
            let mut patterns = Vec::new();
            for (i, v) in values.iter().enumerate() {
                match v.strip_prefix("~*") {
                    // Case-insensitive by the regex's own flag: lower-casing the pattern would
                    // turn classes such as `\D` into `\d`.
                    Some(re) => match regex::RegexBuilder::new(re).case_insensitive(true).build() {
                        Ok(r) => patterns.push(ValuePattern::Regex(r)),
                        Err(e) => errors.add(format!("{field}[{i}]"), format!("invalid regex: {e}")),
                    },
                    None => patterns.push(ValuePattern::Exact(v.clone())),
                }
            }
            headers.push((header, patterns));
        }

        let mut weight = [!methods.is_empty(), !hosts.is_empty(), !headers.is_empty(), !snis.is_empty()]
            .iter()
            .filter(|b| **b)
            .count() as u64;
        let plain_host_only = !f.hosts.is_empty() && hosts.iter().all(|h| !h.is_wildcard());
        let header_count = (headers.len() as u64).min(255);
        let mut paths: Vec<Option<PathPattern>> = Vec::new();
        for (i, p) in f.paths.iter().enumerate() {
            let field = format!("{at}.paths[{i}]");
            if let Some(re) = p.strip_prefix('~') {
                // Checked alone first: `a)|(b` would otherwise escape the anchoring group.
                match Regex::new(re).and_then(|_| Regex::new(&format!("^(?:{re})"))) {
                    Ok(r) => paths.push(Some(PathPattern::Regex(r))),
                    Err(e) => {
                        errors.add(field, format!("invalid regex: {}", e.to_string().lines().last().unwrap_or("")))
                    }
                }
            } else if !p.starts_with('/') {
                errors.add(field, "must start with / (a prefix) or ~ (a regex)");
            } else if crate::path::normalize(p).as_deref() != Ok(p.as_str()) {
                errors
                    .add(field, "must be a normalised path (no '..', '//', or encoded slash), or it could never match");
            } else {
                paths.push(Some(PathPattern::Prefix(p.clone())));
            }
        }
        if paths.is_empty() {
            paths.push(None);
        } else {
            weight += 1;
        }
        for path in paths {
            let (regex_url, length) = match &path {
                Some(PathPattern::Regex(_)) => (true, 0),
                Some(PathPattern::Prefix(p)) => (false, p.len() as u64),
                None => (false, 0),
            };
            let regex_priority = if regex_url { f.regex_priority.clamp(0, u32::MAX as i64) as u64 } else { 0 };
            let priority = weight << WEIGHT_SHIFT
                | if plain_host_only { PLAIN_HOST_ONLY_BIT } else { 0 }
                | header_count << HEADER_COUNT_SHIFT
                | if regex_url { REGEX_URL_BIT } else { 0 }
                | regex_priority << REGEX_PRIORITY_SHIFT
                | (length & MAX_LENGTH_MASK);
            self.matchers.push(Matcher {
                route: index,
                priority,
                protocols,
                methods: methods.clone(),
                hosts: hosts.clone(),
                headers: headers.clone(),
                snis: snis.clone(),
                path,
            });
        }
        protocols
    }

    /// Orders the matchers; call once after every route was added.
    pub fn finish(&mut self) {
        // A stable sort keeps the file's order among equal priorities.
        self.matchers.sort_by_key(|m| std::cmp::Reverse(m.priority));
    }

    /// The route a request goes to, if any.
    pub fn find(&self, req: &RequestView<'_>) -> Option<Found> {
        self.matchers.iter().find_map(|m| m.matches(req))
    }
}

fn host_patterns(hosts: &[String], field: &str, errors: &mut ConfigErrors) -> Vec<HostPattern> {
    let mut out = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(p) => out.push(p),
            Err(e) => errors.add(format!("{field}[{i}]"), e),
        }
    }
    out
}

impl Matcher {
    fn matches(&self, req: &RequestView<'_>) -> Option<Found> {
        // Plain HTTP reaches an https-only route, which then asks for an upgrade.
        if req.https && !self.protocols.https {
            return None;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method) {
            return None;
        }
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| h.matches(req.host, req.port)) {
            return None;
        }
        // As in Kong, SNIs only count for HTTPS requests.
        if req.https && !self.snis.is_empty() {
            let sni = req.sni.unwrap_or_default().to_ascii_lowercase();
            if !self.snis.iter().any(|s| s.matches(&sni, req.port)) {
                return None;
            }
        }
        for (name, patterns) in &self.headers {
            let mut values = req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
            if !values.any(|v| patterns.iter().any(|p| p.matches(v))) {
                return None;
            }
        }
        let (matched_len, captures) = match &self.path {
            None => (0, Captures::default()),
            Some(PathPattern::Prefix(p)) => {
                if !req.path.starts_with(p.as_str()) {
                    return None;
                }
                (p.len(), Captures::default())
            }
            // Groups are read only when there are some: Kong has no captures otherwise.
            Some(PathPattern::Regex(r)) if r.captures_len() > 1 => {
                let caps = r.captures(req.path)?;
                (caps.get_match().end(), Captures::of(r, &caps))
            }
            Some(PathPattern::Regex(r)) => (r.find(req.path)?.end(), Captures::default()),
        };
        Some(Found { route: self.route, matched_len, captures })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct R {
        methods: &'static [&'static str],
        hosts: &'static [&'static str],
        paths: &'static [&'static str],
        headers: &'static [(&'static str, &'static [&'static str])],
        snis: &'static [&'static str],
        regex_priority: i64,
    }

    const NONE: R = R { methods: &[], hosts: &[], paths: &[], headers: &[], snis: &[], regex_priority: 0 };

    fn router(routes: &[R]) -> Router {
        let mut router = Router::default();
        let mut errors = ConfigErrors::default();
        for (i, r) in routes.iter().enumerate() {
            let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            let headers: BTreeMap<String, Vec<String>> = r.headers.iter().map(|(k, v)| (k.to_string(), s(v))).collect();
            let fields = RouteFields {
                protocols: &["http".into(), "https".into()],
                methods: &s(r.methods),
                hosts: &s(r.hosts),
                paths: &s(r.paths),
                headers: &headers,
                snis: &s(r.snis),
                regex_priority: r.regex_priority,
            };
            router.add(i, &format!("routes[{i}]"), fields, &mut errors);
        }
        assert!(errors.is_empty(), "{errors}");
        router.finish();
        router
    }

    fn find(router: &Router, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Option<(usize, usize)> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let view = RequestView { method: &method, host, port: 8000, path, headers: &map, sni: None, https: false };
        router.find(&view).map(|f| (f.route, f.matched_len))
    }

    #[test]
    fn kong_ordering() {
        let r = router(&[
            R { paths: &["/"], ..NONE },                                                   // 0
            R { paths: &["/api"], ..NONE },                                                // 1
            R { paths: &["/api/v1"], ..NONE },                                             // 2
            R { paths: &["~/api/v\\d+/admin"], ..NONE },                                   // 3
            R { paths: &["~/api/v1/admin"], regex_priority: 5, ..NONE },                   // 4
            R { hosts: &["*.example.com"], paths: &["/api"], ..NONE },                     // 5
            R { hosts: &["www.example.com"], paths: &["/api"], ..NONE },                   // 6
            R { methods: &["POST"], paths: &["/api"], ..NONE },                            // 7
            R { headers: &[("x-version", &["v2", "~*^beta"])], paths: &["/api"], ..NONE }, // 8
            R { headers: &[("x-tier", &["~*^\\D+$"])], paths: &["/api"], ..NONE },         // 9
        ]);
        type Row<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], Option<(usize, usize)>);
        let table: &[Row<'_>] = &[
            ("GET", "a.test", "/", &[], Some((0, 1))),
            ("GET", "a.test", "/other", &[], Some((0, 1))),
            ("GET", "a.test", "/api/x", &[], Some((1, 4))),
            ("GET", "a.test", "/apix", &[], Some((1, 4))),
            ("GET", "a.test", "/api/v1/x", &[], Some((2, 7))),
            ("GET", "a.test", "/api/v2/admin/x", &[], Some((3, 13))),
            ("GET", "a.test", "/api/v1/admin/x", &[], Some((4, 13))),
            ("GET", "foo.example.com", "/api", &[], Some((5, 4))),
            ("GET", "www.example.com", "/api", &[], Some((6, 4))),
            ("GET", "example.com", "/api", &[], Some((1, 4))),
            ("POST", "a.test", "/api", &[], Some((7, 4))),
            ("GET", "a.test", "/api", &[("X-Version", "V2")], Some((8, 4))),
            ("GET", "a.test", "/api", &[("x-version", "Beta-3")], Some((8, 4))),
            ("GET", "a.test", "/api", &[("x-version", "v3")], Some((1, 4))),
            // `\D` stays "not a digit": the pattern is not lower-cased into `\d`.
            ("GET", "a.test", "/api", &[("x-tier", "Gold")], Some((9, 4))),
            ("GET", "a.test", "/api", &[("x-tier", "42")], Some((1, 4))),
        ];
        for (method, host, path, headers, want) in table {
            assert_eq!(find(&r, method, host, path, headers), *want, "{method} {host}{path} {headers:?}");
        }
    }

    #[test]
    fn regex_paths_capture_their_groups_as_kong_does() {
        let r = router(&[
            R { paths: &["~/users/(?P<user>\\w+)/items/(\\d+)"], ..NONE },
            R { paths: &["~/plain/\\d+"], ..NONE },
            R { paths: &["~/opt/(x)?(?<rest>y.*)"], ..NONE },
            R { paths: &["/prefix"], ..NONE },
        ]);
        let captures = |path: &str| {
            let (method, map) = (Method::GET, HeaderMap::new());
            let view =
                RequestView { method: &method, host: "a", port: 80, path, headers: &map, sni: None, https: false };
            r.find(&view).map(|f| f.captures)
        };
        let s = |v: &str| Some(v.to_string());
        let users = captures("/users/ann/items/42/more").unwrap();
        assert_eq!(users.numbered, vec![s("/users/ann/items/42"), s("ann"), s("42")]);
        assert_eq!(users.named, vec![("user".to_string(), s("ann"))]);
        // No group: no captures at all, not even the whole match (Kong's `uri_captures` is empty).
        assert_eq!(captures("/plain/7").unwrap(), Captures::default());
        let optional = captures("/opt/yz").unwrap();
        assert_eq!(optional.numbered, vec![s("/opt/yz"), None, s("yz")]);
        assert_eq!(optional.named, vec![("rest".to_string(), s("yz"))]);
        assert_eq!(captures("/prefix/a").unwrap(), Captures::default());
    }

    #[test]
    fn no_route_and_wildcards() {
        let r = router(&[R { hosts: &["api.*"], ..NONE }, R { hosts: &["*.b.test"], methods: &["GET"], ..NONE }]);
        assert_eq!(find(&r, "GET", "api.io", "/", &[]), Some((0, 0)));
        assert_eq!(find(&r, "GET", "x.b.test", "/", &[]), Some((1, 0)));
        assert_eq!(find(&r, "GET", "b.test", "/", &[]), None);
        assert_eq!(find(&r, "PUT", "x.b.test", "/", &[]), None);
    }

    #[test]
    fn invalid_routes_are_refused_with_their_field() {
        let mut router = Router::default();
        let mut errors = ConfigErrors::default();
        let fields = RouteFields {
            protocols: &["grpc".into()],
            methods: &["get".into()],
            hosts: &["a.*.com".into()],
            paths: &["~/a(".into(), "/a/../b".into(), "a".into(), "~/a)|(.*admin".into()],
            headers: &BTreeMap::from([("host".to_string(), vec!["x".to_string()])]),
            snis: &["x.test".into()],
            regex_priority: 0,
        };
        router.add(0, "routes[0]", fields, &mut errors);
        let text = errors.to_string();
        for want in [
            "routes[0].protocols[0]: 'grpc' is not supported",
            "routes[0].snis: 'snis' can only be set when 'protocols' is 'https'",
            "routes[0].methods[0]: invalid method 'get'",
            "routes[0].hosts[0]: invalid wildcard host",
            "routes[0].paths[0]: invalid regex",
            "routes[0].paths[1]: must be a normalised path",
            "routes[0].paths[2]: must start with /",
            "routes[0].paths[3]: invalid regex",
            "routes[0].headers.host: cannot route on the Host header",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
