//! cors: answers preflight requests and adds the CORS headers to every response.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::{Compile, Plugin};
use crate::exchange::Exchange;
use crate::reply::Reply;

fn kong_methods() -> Vec<String> {
    ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"].map(String::from).to_vec()
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    exposed_headers: Vec<String>,
    #[serde(default = "kong_methods")]
    methods: Vec<String>,
    max_age: Option<u64>,
    #[serde(default)]
    credentials: bool,
    #[serde(default)]
    private_network: bool,
    #[serde(default)]
    preflight_continue: bool,
    #[serde(default = "yes")]
    allow_origin_absent: bool,
}

/// One allowed origin.
enum Origin {
    /// `scheme://host:port`, compared after normalising both.
    Exact(String),
    /// A regex over the whole origin, or over the host alone when the pattern has no `:`.
    Pattern { regex: Regex, by_host: bool },
}

/// A compiled cors configuration.
pub(crate) struct Cors {
    /// None: every origin (`*`).
    origins: Option<Vec<Origin>>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    methods: HeaderValue,
    max_age: Option<HeaderValue>,
    credentials: bool,
    private_network: bool,
    preflight_continue: bool,
    allow_origin_absent: bool,
}

/// `scheme://host:port` of an origin with the scheme's default port made explicit, and its host.
fn normalize_origin(origin: &str) -> (String, String) {
    let lower = origin.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://").unwrap_or(("http", &lower));
    let authority = rest.split('/').next().unwrap_or_default();
    let default_port = if scheme == "https" { "443" } else { "80" };
    let (host, port) = match authority.find(']') {
        Some(end) => (&authority[..=end], authority[end + 1..].strip_prefix(':')),
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = port.filter(|p| !p.is_empty()).unwrap_or(default_port);
    (format!("{scheme}://{host}:{port}"), host.to_string())
}

fn joined(cx: &mut Compile<'_>, field: &str, values: &[String]) -> Option<HeaderValue> {
    if values.is_empty() {
        return None;
    }
    match HeaderValue::from_str(&values.join(",")) {
        Ok(v) => Some(v),
        Err(_) => {
            cx.error(field, "must be valid header values");
            None
        }
    }
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let origins = if c.origins.is_empty() || c.origins == ["*"] {
        None
    } else {
        let mut list = Vec::new();
        for (i, o) in c.origins.iter().enumerate() {
            let looks_like_regex =
                o.chars().any(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | ':' | '/' | '-')));
            if looks_like_regex {
                // Checked alone first: `a)|(b` would otherwise escape the anchoring group.
                match Regex::new(o).and_then(|_| Regex::new(&format!("^(?:{o})$"))) {
                    Ok(regex) => list.push(Origin::Pattern { regex, by_host: !o.contains(':') }),
                    Err(e) => cx.error(
                        &format!("origins[{i}]"),
                        format!("invalid regex: {}", e.to_string().lines().last().unwrap_or("")),
                    ),
                }
            } else {
                list.push(Origin::Exact(normalize_origin(o).0));
            }
        }
        Some(list)
    };
    let allow_headers = joined(cx, "headers", &c.headers);
    let expose_headers = joined(cx, "exposed_headers", &c.exposed_headers);
    let methods = joined(cx, "methods", &c.methods).unwrap_or(HeaderValue::from_static(""));
    let max_age = c.max_age.map(HeaderValue::from);
    Some(Plugin::Cors(Cors {
        origins,
        allow_headers,
        expose_headers,
        methods,
        max_age,
        credentials: c.credentials,
        private_network: c.private_network,
        preflight_continue: c.preflight_continue,
        allow_origin_absent: c.allow_origin_absent,
    }))
}

const ALLOW_PRIVATE_NETWORK: HeaderName = HeaderName::from_static("access-control-allow-private-network");
const REQUEST_PRIVATE_NETWORK: HeaderName = HeaderName::from_static("access-control-request-private-network");

impl Cors {
    pub(super) fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        let origin = ex.headers.get(header::ORIGIN).cloned();
        let preflight = ex.method == Method::OPTIONS
            && origin.is_some()
            && ex.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            if self.preflight_continue {
                return Ok(());
            }
            let mut headers = HeaderMap::new();
            self.origin_headers(origin.as_ref(), &mut headers);
            match (&self.allow_headers, ex.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS)) {
                (Some(allowed), _) | (None, Some(allowed)) => {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
                }
                (None, None) => {}
            }
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
            if let Some(max_age) = &self.max_age {
                headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
            }
            if self.private_network && ex.header(&REQUEST_PRIVATE_NETWORK) == Some("true") {
                headers.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
            }
            let mut reply = Reply::empty(StatusCode::OK);
            reply.headers = Box::new(headers);
            return Err(reply);
        }
        if origin.is_none() && !self.allow_origin_absent {
            return Ok(());
        }
        let mut headers = HeaderMap::new();
        self.origin_headers(origin.as_ref(), &mut headers);
        if let Some(expose) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        ex.response_headers.extend(headers);
        Ok(())
    }

    /// Access-Control-Allow-Origin, -Credentials and Vary, as Kong sets them.
    fn origin_headers(&self, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        let vary = || HeaderValue::from_static("Origin");
        let Some(allowed) = &self.origins else {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            // Credentials cannot go with '*': echo the origin instead.
            if self.credentials
                && let Some(origin) = origin
            {
                out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
                out.insert(header::VARY, vary());
            }
            return;
        };
        out.insert(header::VARY, vary());
        if self.credentials {
            out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        let Some(origin) = origin else { return };
        let sent = origin.to_str().unwrap_or_default();
        let (domain, host) = normalize_origin(sent);
        // A pattern matches the whole host, or the whole origin as sent or with its default port.
        let matches = allowed.iter().any(|o| match o {
            Origin::Exact(d) => *d == domain,
            Origin::Pattern { regex, by_host: true } => regex.is_match(&host),
            Origin::Pattern { regex, by_host: false } => regex.is_match(sent) || regex.is_match(&domain),
        });
        if matches {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalise_with_default_ports() {
        let table = [
            ("https://example.com", ("https://example.com:443", "example.com")),
            ("http://Example.com:8080", ("http://example.com:8080", "example.com")),
            ("http://example.com/path", ("http://example.com:80", "example.com")),
        ];
        for (origin, (domain, host)) in table {
            assert_eq!(normalize_origin(origin), (domain.to_string(), host.to_string()), "{origin}");
        }
    }

    #[test]
    fn which_origins_are_echoed() {
        let cors = Cors {
            origins: Some(vec![
                Origin::Exact(normalize_origin("https://app.example.com").0),
                Origin::Pattern { regex: Regex::new(r"^(?:.*\.trusted\.test)$").unwrap(), by_host: true },
                Origin::Pattern { regex: Regex::new(r"^(?:https://.*\.partner\.test)$").unwrap(), by_host: false },
            ]),
            allow_headers: None,
            expose_headers: None,
            methods: HeaderValue::from_static("GET"),
            max_age: None,
            credentials: true,
            private_network: false,
            preflight_continue: false,
            allow_origin_absent: true,
        };
        let table = [
            ("https://app.example.com", true),
            ("https://app.example.com:443", true),
            ("http://app.example.com", false),
            ("https://a.trusted.test", true),
            ("https://trusted.test.evil.com", false),
            ("https://a.partner.test", true),
            ("http://a.partner.test", false),
            ("https://evil.com", false),
        ];
        for (origin, echoed) in table {
            let mut out = HeaderMap::new();
            cors.origin_headers(Some(&HeaderValue::from_str(origin).unwrap()), &mut out);
            assert_eq!(out.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_some(), echoed, "{origin}");
            assert_eq!(out.get(header::VARY).unwrap(), "Origin");
            assert_eq!(out.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).unwrap(), "true");
        }
    }
}
