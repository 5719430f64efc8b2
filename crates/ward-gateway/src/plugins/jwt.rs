//! jwt: a signed token identifies the consumer through its `iss` claim (or another).
//!
//! The algorithm is the one the consumer's secret was configured with; the token's header
//! must name the same one, and the signature is checked with that algorithm only, so a
//! token cannot pick a weaker one (`none`, or HS256 with a public key as the secret).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use base64::Engine;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Compile, Plugin, already_authenticated, conclude};
use crate::consumers::credentials;
use crate::exchange::Exchange;
use crate::reply::Reply;

fn jwt_param() -> Vec<String> {
    vec!["jwt".into()]
}

fn authorization() -> Vec<String> {
    vec!["authorization".into()]
}

fn iss() -> String {
    "iss".into()
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "jwt_param")]
    uri_param_names: Vec<String>,
    #[serde(default)]
    cookie_names: Vec<String>,
    #[serde(default = "authorization")]
    header_names: Vec<String>,
    #[serde(default)]
    claims_to_verify: Vec<String>,
    #[serde(default = "iss")]
    key_claim_name: String,
    #[serde(default)]
    secret_is_base64: bool,
    anonymous: Option<String>,
    #[serde(default = "yes")]
    run_on_preflight: bool,
    #[serde(default)]
    maximum_expiration: f64,
    realm: Option<String>,
}

/// A compiled jwt configuration.
pub(crate) struct Jwt {
    uri_param_names: Vec<String>,
    cookie_names: Vec<String>,
    header_names: Vec<HeaderName>,
    verify_exp: bool,
    verify_nbf: bool,
    key_claim_name: String,
    secret_is_base64: bool,
    anonymous: Option<usize>,
    run_on_preflight: bool,
    maximum_expiration: f64,
    www_authenticate: HeaderValue,
    www_authenticate_error: HeaderValue,
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let mut header_names = Vec::new();
    for (i, name) in c.header_names.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => header_names.push(h),
            Err(_) => cx.error(&format!("header_names[{i}]"), format!("'{name}' is not a valid header name")),
        }
    }
    for (i, claim) in c.claims_to_verify.iter().enumerate() {
        if claim != "exp" && claim != "nbf" {
            cx.error(&format!("claims_to_verify[{i}]"), format!("'{claim}' is not one of exp, nbf"));
        }
    }
    let verify_exp = c.claims_to_verify.iter().any(|c| c == "exp");
    if !(0.0..=31_536_000.0).contains(&c.maximum_expiration) {
        cx.error("maximum_expiration", "must be between 0 and 31536000");
    }
    if c.maximum_expiration > 0.0 && !verify_exp {
        cx.error("claims_to_verify", "must contain 'exp' when 'maximum_expiration' is set");
    }
    let base = match &c.realm {
        Some(realm) => format!("Bearer realm=\"{realm}\""),
        None => "Bearer".to_string(),
    };
    let (Ok(www_authenticate), Ok(www_authenticate_error)) =
        (HeaderValue::from_str(&base), HeaderValue::from_str(&format!("{base} error=\"invalid_token\"")))
    else {
        cx.error("realm", "must be printable text");
        return None;
    };
    let anonymous = cx.anonymous(c.anonymous.as_deref());
    Some(Plugin::Jwt(Jwt {
        uri_param_names: c.uri_param_names,
        cookie_names: c.cookie_names,
        header_names,
        verify_exp,
        verify_nbf: c.claims_to_verify.iter().any(|c| c == "nbf"),
        key_claim_name: c.key_claim_name,
        secret_is_base64: c.secret_is_base64,
        anonymous,
        run_on_preflight: c.run_on_preflight,
        maximum_expiration: c.maximum_expiration,
        www_authenticate,
        www_authenticate_error,
    }))
}

static BEARER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s*[Bb]earer\s+(.+)").expect("valid regex"));

/// A token split into its parts, as Kong's parser reads it.
struct Token<'a> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    /// `header.claims`, what the signature covers.
    signed: &'a str,
    signature: &'a str,
}

fn decode_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn parse(token: &str) -> Result<Token<'_>, &'static str> {
    let mut parts = token.splitn(3, '.');
    let (Some(h), Some(c), Some(signature)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("invalid JSON");
    };
    let (Some(header), Some(claims)) = (decode_part(h), decode_part(c)) else { return Err("invalid JSON") };
    if base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature.trim_end_matches('=')).is_err() {
        return Err("invalid signature");
    }
    let known = header
        .get("alg")
        .and_then(Value::as_str)
        .is_some_and(|a| credentials::JWT_ALGORITHMS.iter().any(|(n, _)| *n == a));
    if !known {
        return Err("invalid alg");
    }
    Ok(Token { header, claims, signed: &token[..h.len() + 1 + c.len()], signature })
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

impl Jwt {
    pub(super) fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        if !self.run_on_preflight && ex.method == Method::OPTIONS {
            return Ok(());
        }
        if already_authenticated(ex, self.anonymous) {
            return Ok(());
        }
        let attempt = self.identify(ex);
        conclude(ex, self.anonymous, attempt)
    }

    /// Every distinct token of the request (query, cookies, headers).
    fn tokens(&self, ex: &Exchange<'_>) -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        for name in &self.uri_param_names {
            set.extend(ex.query_values(name).into_iter().filter(|t| !t.is_empty()).map(|t| t.into_owned()));
        }
        for cookie in ex.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            for pair in cookie.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=')
                    && self.cookie_names.iter().any(|n| n == k)
                    && !v.is_empty()
                {
                    set.insert(v.to_string());
                }
            }
        }
        for name in &self.header_names {
            if let Some(value) = ex.header(name)
                && let Some(m) = BEARER.captures(value).and_then(|c| c.get(1))
            {
                set.insert(m.as_str().to_string());
            }
        }
        set
    }

    fn identify(&self, ex: &Exchange<'_>) -> Result<(usize, String), Reply> {
        let fail = |message: &str| {
            Reply::error(StatusCode::UNAUTHORIZED, message)
                .header(header::WWW_AUTHENTICATE, self.www_authenticate_error.clone())
        };
        let tokens = self.tokens(ex);
        let token = match tokens.len() {
            0 => {
                return Err(Reply::error(StatusCode::UNAUTHORIZED, "Unauthorized")
                    .header(header::WWW_AUTHENTICATE, self.www_authenticate.clone()));
            }
            1 => tokens.into_iter().next().expect("one token"),
            _ => return Err(fail("Multiple tokens provided")),
        };
        let jwt = parse(&token).map_err(|e| fail(&format!("Bad token; {e}")))?;
        let claim = &self.key_claim_name;
        let key = match jwt.claims.get(claim).or_else(|| jwt.header.get(claim)) {
            None => return Err(fail(&format!("No mandatory '{claim}' in claims"))),
            Some(Value::String(k)) if k.is_empty() => return Err(fail(&format!("Invalid '{claim}' in claims"))),
            Some(Value::String(k)) => k.clone(),
            Some(other) => other.to_string(),
        };
        let Some(secret) = ex.consumers.jwt.get(&key) else {
            return Err(fail(&format!("No credentials found for given '{claim}'")));
        };
        if jwt.header.get("alg").and_then(Value::as_str) != Some(secret.algorithm_name) {
            return Err(fail("Invalid algorithm"));
        }
        let verifying_key = if self.secret_is_base64 { secret.base64.as_ref() } else { Some(&secret.plain) };
        let Some(verifying_key) = verifying_key else { return Err(fail("Invalid key/secret")) };
        let valid = jsonwebtoken::crypto::verify(jwt.signature, jwt.signed.as_bytes(), verifying_key, secret.algorithm)
            .unwrap_or(false);
        if !valid {
            return Err(fail("Invalid signature"));
        }
        let errors = self.claim_errors(&jwt.claims, now());
        if !errors.is_empty() {
            return Err(Reply::json(StatusCode::UNAUTHORIZED, &Value::Object(errors))
                .header(header::WWW_AUTHENTICATE, self.www_authenticate_error.clone()));
        }
        Ok((secret.consumer, secret.key.clone()))
    }

    /// Kong's registered-claims check, then its maximum expiration check.
    fn claim_errors(&self, claims: &Map<String, Value>, now: f64) -> Map<String, Value> {
        let mut errors = Map::new();
        let checks = [("nbf", self.verify_nbf), ("exp", self.verify_exp)];
        for (name, wanted) in checks {
            if !wanted {
                continue;
            }
            match claims.get(name).and_then(Value::as_f64) {
                None => errors.insert(name.into(), "must be a number".into()),
                Some(nbf) if name == "nbf" && nbf > now => errors.insert(name.into(), "token not valid yet".into()),
                Some(exp) if name == "exp" && exp <= now => errors.insert(name.into(), "token expired".into()),
                Some(_) => None,
            };
        }
        if errors.is_empty() && self.maximum_expiration > 0.0 {
            let exp = claims.get("exp").and_then(Value::as_f64);
            if exp.is_none_or(|exp| exp - now > self.maximum_expiration) {
                errors.insert("exp".into(), "exceeds maximum allowed expiration".into());
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn jwt(exp: bool, nbf: bool, maximum_expiration: f64) -> Jwt {
        Jwt {
            uri_param_names: vec![],
            cookie_names: vec![],
            header_names: vec![],
            verify_exp: exp,
            verify_nbf: nbf,
            key_claim_name: "iss".into(),
            secret_is_base64: false,
            anonymous: None,
            run_on_preflight: true,
            maximum_expiration,
            www_authenticate: HeaderValue::from_static("Bearer"),
            www_authenticate_error: HeaderValue::from_static("Bearer"),
        }
    }

    #[test]
    fn registered_claims() {
        let now = 1_000_000.0;
        let table: &[(Jwt, Value, Value)] = &[
            (jwt(true, false, 0.0), json!({"exp": now + 10.0}), json!({})),
            (jwt(true, false, 0.0), json!({"exp": now}), json!({"exp": "token expired"})),
            (jwt(true, false, 0.0), json!({}), json!({"exp": "must be a number"})),
            (jwt(true, false, 0.0), json!({"exp": "soon"}), json!({"exp": "must be a number"})),
            (jwt(false, true, 0.0), json!({"nbf": now + 5.0}), json!({"nbf": "token not valid yet"})),
            (jwt(false, false, 0.0), json!({"exp": 1}), json!({})),
            (
                jwt(true, false, 60.0),
                json!({"exp": now + 3600.0}),
                json!({"exp": "exceeds maximum allowed expiration"}),
            ),
            (jwt(true, false, 60.0), json!({"exp": now + 30.0}), json!({})),
        ];
        for (plugin, claims, want) in table {
            let got = plugin.claim_errors(claims.as_object().unwrap(), now);
            assert_eq!(Value::Object(got), *want, "{claims}");
        }
    }

    #[test]
    fn malformed_tokens() {
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let table = [
            ("abc".to_string(), "invalid JSON"),
            (format!("{}.{}.sig", b64(json!({"alg": "none"})), b64(json!({}))), "invalid alg"),
            (format!("{}.notjson.sig", b64(json!({"alg": "HS256"}))), "invalid JSON"),
            (format!("{}.{}.@@", b64(json!({"alg": "HS256"})), b64(json!({}))), "invalid signature"),
        ];
        for (token, want) in table {
            assert_eq!(parse(&token).err(), Some(want), "{token}");
        }
    }
}
