//! hmac-auth: requests signed with a consumer's secret, as Kong's plugin checks them. The
//! `Authorization` (or `Proxy-Authorization`) header reads
//! `hmac username="U", algorithm="hmac-sha256", headers="date request-line", signature="B64"`;
//! the signature is the HMAC of the named headers' lines (`name: value`, joined by newlines;
//! `request-line` is `METHOD TARGET HTTP/x.y`, `@request-target` is `@request-target: method
//! target`), a `Date` or `X-Date` within `clock_skew` seconds is required, and with
//! `validate_request_body` a `Digest: SHA-256=<base64>` must match the body.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use aws_lc_rs::hmac;
use base64::Engine;
use http::{HeaderName, HeaderValue, StatusCode, Version, header};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::{BODY_LIMIT, Compile, Plugin, already_authenticated, conclude};
use crate::exchange::{BodyError, Exchange};
use crate::reply::Reply;

const NOT_VALID: &str = "HMAC signature cannot be verified";
const NOT_SAME: &str = "HMAC signature does not match";
const NO_DATE: &str =
    "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication";
const X_DATE: HeaderName = HeaderName::from_static("x-date");
const DIGEST: HeaderName = HeaderName::from_static("digest");

/// Kong's algorithm names.
const ALGORITHMS: [&str; 4] = ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"];

fn three_hundred() -> f64 {
    300.0
}

fn all_algorithms() -> Vec<String> {
    ALGORITHMS.map(String::from).to_vec()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    hide_credentials: bool,
    #[serde(default = "three_hundred")]
    clock_skew: f64,
    anonymous: Option<String>,
    #[serde(default)]
    validate_request_body: bool,
    #[serde(default)]
    enforce_headers: Vec<String>,
    #[serde(default = "all_algorithms")]
    algorithms: Vec<String>,
    realm: Option<String>,
}

/// A compiled hmac-auth configuration.
pub(crate) struct HmacAuth {
    anonymous: Option<usize>,
    hide_credentials: bool,
    clock_skew: Duration,
    validate_request_body: bool,
    enforce_headers: Vec<String>,
    algorithms: Vec<String>,
    www_authenticate: HeaderValue,
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let mut ok = true;
    let clock_skew = match Duration::try_from_secs_f64(c.clock_skew) {
        Ok(skew) if c.clock_skew > 0.0 => skew,
        Ok(_) => {
            cx.error("clock_skew", "value must be greater than 0");
            ok = false;
            Duration::ZERO
        }
        Err(_) => {
            cx.error("clock_skew", "must be a number of seconds greater than 0 and not beyond what a clock holds");
            ok = false;
            Duration::ZERO
        }
    };
    for (i, algorithm) in c.algorithms.iter().enumerate() {
        if !ALGORITHMS.contains(&algorithm.as_str()) {
            cx.error(&format!("algorithms[{i}]"), format!("expected one of: {}", ALGORITHMS.join(", ")));
            ok = false;
        }
    }
    let realm = c.realm.as_deref().map_or_else(|| "hmac".to_string(), |r| format!("hmac realm=\"{r}\""));
    let Ok(www_authenticate) = HeaderValue::from_str(&realm) else {
        cx.error("realm", "must be printable text");
        return None;
    };
    let anonymous = cx.anonymous(c.anonymous.as_deref());
    ok.then(|| {
        Plugin::HmacAuth(HmacAuth {
            anonymous,
            hide_credentials: c.hide_credentials,
            clock_skew,
            validate_request_body: c.validate_request_body,
            enforce_headers: c.enforce_headers,
            algorithms: c.algorithms,
            www_authenticate,
        })
    })
}

/// Kong's pattern for the header's fields (greedy, anywhere in the value).
static FIELDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\s*[Hh]mac\s*username="(.+)",\s*algorithm="(.+)",\s*headers="(.+)",\s*signature="(.+)""#)
        .expect("valid regex")
});

/// What a signed request says about its signature.
#[derive(Debug, PartialEq)]
struct Signed {
    username: String,
    algorithm: String,
    headers: Vec<String>,
    signature: String,
}

fn signed(value: Option<&str>) -> Option<Signed> {
    let fields = FIELDS.captures(value?)?;
    let field = |i| fields.get(i).map_or(String::new(), |m| m.as_str().to_string());
    Some(Signed {
        username: field(1),
        algorithm: field(2),
        headers: field(3).split(' ').map(str::to_string).collect(),
        signature: field(4),
    })
}

/// Whether the header `name` holds an HTTP date within `skew` of now.
fn recent(ex: &Exchange<'_>, name: &HeaderName, skew: Duration) -> bool {
    let Some(at) = ex.header(name).and_then(|d| httpdate::parse_http_date(d).ok()) else { return false };
    let now = SystemTime::now();
    let apart = now.duration_since(at).or_else(|_| at.duration_since(now)).unwrap_or_default();
    apart <= skew
}

/// The text a client signs: one line per header it names.
fn signing_string(ex: &Exchange<'_>, headers: &[String]) -> String {
    let target = ex.uri.path_and_query().map_or("/", |p| p.as_str());
    let lines: Vec<String> = headers
        .iter()
        .map(|name| {
            let value = HeaderName::from_bytes(name.as_bytes())
                .ok()
                .and_then(|h| ex.headers.get(h))
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            match (value, name.as_str()) {
                (Some(value), _) => format!("{name}: {value}"),
                (None, "@request-target") => {
                    format!("@request-target: {} {target}", ex.method.as_str().to_ascii_lowercase())
                }
                (None, "request-line") => format!("{} {target} {}", ex.method, http_version(ex.version)),
                (None, _) => format!("{name}:"),
            }
        })
        .collect();
    lines.join("\n")
}

/// `HTTP/1.1`, as Kong writes the version (`%.01f`: HTTP/2 is `HTTP/2.0`).
fn http_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn algorithm(name: &str) -> Option<hmac::Algorithm> {
    Some(match name {
        "hmac-sha1" => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "hmac-sha256" => hmac::HMAC_SHA256,
        "hmac-sha384" => hmac::HMAC_SHA384,
        "hmac-sha512" => hmac::HMAC_SHA512,
        _ => return None,
    })
}

impl HmacAuth {
    pub(super) async fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        if already_authenticated(ex, self.anonymous) {
            return Ok(());
        }
        let attempt = self.identify(ex).await;
        conclude(ex, self.anonymous, attempt)
    }

    fn unauthorized(&self, message: &str) -> Reply {
        Reply::error(StatusCode::UNAUTHORIZED, message).header(header::WWW_AUTHENTICATE, self.www_authenticate.clone())
    }

    async fn identify(&self, ex: &mut Exchange<'_>) -> Result<(usize, String), Reply> {
        let (authorization, proxy) = (ex.header(&header::AUTHORIZATION), ex.header(&header::PROXY_AUTHORIZATION));
        if authorization.is_none() && proxy.is_none() {
            return Err(self.unauthorized("Unauthorized"));
        }
        if !(recent(ex, &X_DATE, self.clock_skew) || recent(ex, &header::DATE, self.clock_skew)) {
            return Err(self.unauthorized(NO_DATE));
        }
        // Proxy-Authorization first; Authorization when it names no user.
        let (given, used) = match signed(proxy).filter(|s| !s.username.is_empty()) {
            Some(s) => (Some(s), header::PROXY_AUTHORIZATION),
            None => (signed(authorization), header::AUTHORIZATION),
        };
        if self.hide_credentials {
            ex.headers.remove(used);
        }
        let Some(given) = given else { return Err(self.unauthorized(NOT_VALID)) };
        if given.username.is_empty() || given.signature.is_empty() {
            return Err(self.unauthorized(NOT_VALID));
        }
        if self.enforce_headers.iter().any(|h| !given.headers.contains(h)) {
            return Err(self.unauthorized(NOT_VALID));
        }
        let Some(hash) = algorithm(&given.algorithm).filter(|_| self.algorithms.contains(&given.algorithm)) else {
            return Err(self.unauthorized(NOT_VALID));
        };
        let consumers = ex.consumers;
        let Some(credential) = consumers.hmac.get(&given.username) else {
            return Err(self.unauthorized(NOT_VALID));
        };
        let key = hmac::Key::new(hash, &credential.secret);
        let signature = base64::engine::general_purpose::STANDARD.decode(&given.signature).unwrap_or_default();
        if hmac::verify(&key, signing_string(ex, &given.headers).as_bytes(), &signature).is_err() {
            return Err(self.unauthorized(NOT_SAME));
        }
        if self.validate_request_body && !body_matches_digest(ex).await? {
            return Err(self.unauthorized(NOT_SAME));
        }
        Ok((credential.consumer, credential.username.clone()))
    }
}

/// Whether the body matches the `Digest` header (`SHA-256=<base64>`); with no such header,
/// whether there is no body.
async fn body_matches_digest(ex: &mut Exchange<'_>) -> Result<bool, Reply> {
    let body = match ex.body_bytes(BODY_LIMIT).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(_)) => return Err(Reply::status(StatusCode::PAYLOAD_TOO_LARGE)),
        Err(BodyError::Read(_)) => return Err(Reply::status(StatusCode::BAD_REQUEST)),
    };
    let Some(digest) = ex.header(&DIGEST) else { return Ok(body.is_empty()) };
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
    let expected = format!("SHA-256={}", base64::engine::general_purpose::STANDARD.encode(sha256.as_ref()));
    Ok(aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), digest.as_bytes()).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_header_reads_as_kongs_pattern_does() {
        let bob = |algorithm: &str, headers: &str, signature: &str| Signed {
            username: "bob".into(),
            algorithm: algorithm.into(),
            headers: headers.split(' ').map(String::from).collect(),
            signature: signature.into(),
        };
        let table = [
            (
                r#"hmac username="bob",algorithm="hmac-sha1",headers="date",signature="c2ln""#,
                Some(bob("hmac-sha1", "date", "c2ln")),
            ),
            (
                r#"hmac username="bob",  algorithm="hmac-sha256",   headers="date request-line", signature="c2ln""#,
                Some(bob("hmac-sha256", "date request-line", "c2ln")),
            ),
            (r#"Hmac username="bob",algorithm="x",headers="a",signature="s""#, Some(bob("x", "a", "s"))),
            ("hmac username", None),
            ("hmac username=,algorithm,", None),
            (r#"hmac username="bob",  algorithm="hmac-sha1""#, None),
            (r#"hmac username="bob",algorithm="hmac-sha1",header="date",signature="s""#, None),
            (r#"hmac username="bob",algorithm="hmac-sha1",headers="date",sig="s""#, None),
        ];
        for (value, want) in table {
            assert_eq!(signed(Some(value)), want, "{value}");
        }
    }
}
