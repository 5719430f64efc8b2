//! Verifying a JWT the provider signed: the algorithm must be asymmetric and fit the key
//! (never `none`, never HMAC with a public key as the secret), the signature must verify
//! with the provider's key of the token's `kid`, and `iss`, `exp`, `nbf`, `aud` and the
//! nonce must be what is expected.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use serde_json::{Map, Value};

use super::provider::{KeyError, Provider};

/// Claims of a token.
pub(super) type Claims = Map<String, Value>;

/// What a token must say besides a valid signature.
pub(super) struct Expect<'a> {
    pub issuer: &'a str,
    /// Accepted audiences (any one in `aud`); None: `aud` is not checked here.
    pub audiences: Option<&'a [String]>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: u64,
    /// The nonce an ID token must carry.
    pub nonce: Option<&'a str>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum Rejected {
    #[error("not a JWT")]
    Malformed,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("invalid signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("invalid issuer")]
    Issuer,
    #[error("invalid audience")]
    Audience,
    #[error("invalid nonce")]
    Nonce,
    #[error("invalid claims")]
    Claims,
}

/// Whether `token` has the shape of a JWS (three base64url parts).
pub(super) fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// The algorithm the token's header names, if the gateway accepts it for a provider's key.
fn algorithm(token: &str) -> Result<Algorithm, Rejected> {
    let head = token.split('.').next().ok_or(Rejected::Malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(head).map_err(|_| Rejected::Malformed)?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| Rejected::Malformed)?;
    let name = header.get("alg").and_then(Value::as_str).ok_or(Rejected::Algorithm)?;
    let alg: Algorithm = name.parse().map_err(|_| Rejected::Algorithm)?;
    if alg.family() == AlgorithmFamily::Hmac {
        return Err(Rejected::Algorithm);
    }
    Ok(alg)
}

/// The claims of `token` once everything checks out.
pub(super) async fn verify(provider: &Provider, token: &str, expect: &Expect<'_>) -> Result<Claims, Rejected> {
    if !looks_like_jwt(token) {
        return Err(Rejected::Malformed);
    }
    let alg = algorithm(token)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejected::Malformed)?;
    let key = provider.key(header.kid.as_deref(), alg).await?;
    let mut validation = Validation::new(alg);
    validation.leeway = expect.leeway;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.set_issuer(&[expect.issuer]);
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => Rejected::Signature,
            ErrorKind::ExpiredSignature => Rejected::Expired,
            ErrorKind::ImmatureSignature => Rejected::NotYetValid,
            ErrorKind::InvalidIssuer => Rejected::Issuer,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Rejected::Algorithm,
            _ => Rejected::Claims,
        })?
        .claims;
    if let Some(audiences) = expect.audiences
        && !has_any(&claims, "aud", audiences)
    {
        return Err(Rejected::Audience);
    }
    if let Some(nonce) = expect.nonce
        && claims.get("nonce").and_then(Value::as_str) != Some(nonce)
    {
        return Err(Rejected::Nonce);
    }
    Ok(claims)
}

/// The values of a claim that is a string (space-separated when `split`) or an array of strings.
pub(super) fn values<'a>(claims: &'a Claims, name: &str, split: bool) -> Vec<&'a str> {
    match claims.get(name) {
        Some(Value::String(s)) if split => s.split_whitespace().collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether claim `name` holds any of `wanted`.
pub(super) fn has_any(claims: &Claims, name: &str, wanted: &[String]) -> bool {
    values(claims, name, false).iter().any(|v| wanted.iter().any(|w| w == v))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn b64(v: Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        let token = |alg: &str| format!("{}.{}.c2ln", b64(json!({"alg": alg})), b64(json!({})));
        assert!(matches!(algorithm(&token("RS256")), Ok(Algorithm::RS256)));
        assert!(matches!(algorithm(&token("ES256")), Ok(Algorithm::ES256)));
        for refused in ["none", "None", "HS256", "HS512", "RS1"] {
            assert!(matches!(algorithm(&token(refused)), Err(Rejected::Algorithm)), "{refused}");
        }
        assert!(matches!(algorithm("@@.x.y"), Err(Rejected::Malformed)));
    }

    #[test]
    fn jwt_shapes() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt("eyJh.eyJz."), "an empty signature is still the shape (alg none)");
        for not in ["opaque-token", "a.b", "a.b.c.d", ".b.c", "a b.c.d", "a.b.c="] {
            assert!(!looks_like_jwt(not), "{not}");
        }
    }

    #[test]
    fn claim_values() {
        let claims = json!({"scope": "read write", "aud": ["a", "b"], "one": "x y", "n": 3});
        let claims = claims.as_object().unwrap();
        assert_eq!(values(claims, "scope", true), ["read", "write"]);
        assert_eq!(values(claims, "one", false), ["x y"]);
        assert_eq!(values(claims, "aud", true), ["a", "b"]);
        assert!(values(claims, "n", false).is_empty());
        assert!(has_any(claims, "aud", &["b".into()]));
        assert!(!has_any(claims, "aud", &["c".into()]));
    }
}
