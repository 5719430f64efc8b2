//! `private_key_jwt` (OpenID Connect Core 9, RFC 7523): the gateway authenticates itself at
//! the provider with a short-lived JWT signed by its own RSA key, given as a private JWK
//! (Kong's `client_jwk`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Seconds a client assertion is valid.
const ASSERTION_LIFETIME: i64 = 60;

/// The gateway's signing key for client assertions.
pub(super) struct ClientKey {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey").field("alg", &self.alg).field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// A DER length.
fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

/// A DER INTEGER of the unsigned big-endian `value`.
fn der_integer(value: &[u8], out: &mut Vec<u8>) {
    let trimmed: Vec<u8> = value.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(trimmed);
    out.push(0x02);
    der_length(content.len(), out);
    out.extend(content);
}

/// The PKCS#1 RSAPrivateKey of an RSA private JWK, or why it is not one.
fn rsa_der(jwk: &Value) -> Result<Vec<u8>, String> {
    if jwk.get("kty").and_then(Value::as_str) != Some("RSA") {
        return Err("only RSA keys (kty: RSA) are supported".into());
    }
    let mut body = Vec::new();
    der_integer(&[0], &mut body);
    for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
        let text = jwk.get(name).and_then(Value::as_str).ok_or_else(|| format!("'{name}' is missing"))?;
        let bytes =
            URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| format!("'{name}' is not base64url"))?;
        der_integer(&bytes, &mut body);
    }
    let mut der = vec![0x30];
    der_length(body.len(), &mut der);
    der.extend(body);
    Ok(der)
}

impl ClientKey {
    /// The key of a private RSA JWK (its `alg`: RS256 unless it says RS384, RS512 or PS*).
    pub fn from_jwk(jwk: &Value) -> Result<Self, String> {
        let der = rsa_der(jwk)?;
        aws_lc_rs::rsa::KeyPair::from_der(&der).map_err(|e| format!("not a valid RSA private key: {e}"))?;
        let alg = match jwk.get("alg").and_then(Value::as_str) {
            None => Algorithm::RS256,
            Some(name) => match name.parse::<Algorithm>() {
                Ok(a) if a.family() == jsonwebtoken::AlgorithmFamily::Rsa => a,
                _ => return Err(format!("alg '{name}' is not an RSA signature algorithm")),
            },
        };
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_string);
        Ok(ClientKey { key: EncodingKey::from_rsa_der(&der), alg, kid })
    }

    /// A client assertion of `client_id` for `audience` (the provider's issuer), at `now`.
    pub fn assertion(&self, client_id: &str, audience: &str, now: i64) -> Result<String, String> {
        let mut jti = [0u8; 24];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| "no randomness".to_string())?;
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integers_are_minimal_and_positive() {
        let table: [(&[u8], &[u8]); 4] =
            [(&[0], &[2, 1, 0]), (&[0, 0, 5], &[2, 1, 5]), (&[0x80], &[2, 2, 0, 0x80]), (&[1, 0], &[2, 2, 1, 0])];
        for (value, want) in table {
            let mut out = Vec::new();
            der_integer(value, &mut out);
            assert_eq!(out, want, "{value:?}");
        }
        let mut long = Vec::new();
        der_length(300, &mut long);
        assert_eq!(long, [0x82, 1, 44]);
    }

    #[test]
    fn keys_that_are_not_private_rsa_keys_are_refused() {
        assert_eq!(ClientKey::from_jwk(&json!({"kty": "EC"})).err().unwrap(), "only RSA keys (kty: RSA) are supported");
        assert_eq!(
            ClientKey::from_jwk(&json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"})).err().unwrap(),
            "'d' is missing"
        );
        let bogus = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQ", "p": "AQ", "q": "AQ", "dp": "AQ", "dq": "AQ", "qi": "AQ"});
        assert!(ClientKey::from_jwk(&bogus).err().unwrap().starts_with("not a valid RSA private key"));
    }
}
