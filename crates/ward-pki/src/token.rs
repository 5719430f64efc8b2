//! Dataplane tokens: EdDSA-signed JWTs binding a proxy to a mesh, a dataplane name and a service.
//!
//! Expiry is checked against the `now` the caller passes, with no leeway: the control plane
//! both issues and verifies tokens on its own clock, so there is no skew to absorb.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use rcgen::{KeyPair, PKCS_ED25519};
use serde::{Deserialize, Serialize};

use crate::x509;

/// The only JWT algorithm Ward signs or accepts.
const ALG: &str = "EdDSA";

/// What a dataplane token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneClaims {
    /// The mesh the dataplane belongs to.
    pub mesh: String,
    /// The dataplane's name.
    pub name: String,
    /// The service whose identity the dataplane may hold (the first, when it may hold several).
    pub service: String,
    /// Further services whose identities the dataplane may hold: a dataplane whose inbounds
    /// serve several services holds one certificate per service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_services: Vec<String>,
    /// Expiry (JWT `exp`, seconds).
    #[serde(with = "chrono::serde::ts_seconds")]
    pub exp: DateTime<Utc>,
    /// Issue time (JWT `iat`, seconds).
    #[serde(with = "chrono::serde::ts_seconds")]
    pub iat: DateTime<Utc>,
    /// Unique token ID, used for revocation.
    pub jti: String,
}

impl DataplaneClaims {
    /// Claims for `services` (at least one), issued at `now`, expiring after `lifetime`, with
    /// a fresh random `jti`.
    pub fn new(mesh: &str, name: &str, services: &[&str], now: DateTime<Utc>, lifetime: std::time::Duration) -> Self {
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        let (first, more) = services.split_first().map_or(("", &[][..]), |(f, m)| (*f, m));
        DataplaneClaims {
            mesh: mesh.to_string(),
            name: name.to_string(),
            service: first.to_string(),
            more_services: more.iter().map(|s| s.to_string()).collect(),
            exp: x509::add(now, lifetime),
            iat: now,
            jti: x509::hex(&jti),
        }
    }

    /// Every service whose identity the token grants, the first first.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.service.as_str()).chain(self.more_services.iter().map(String::as_str))
    }
}

/// Why a token was not issued, not accepted, or does not authorize a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The signing key cannot be generated or loaded.
    #[error("signing key: {reason}")]
    Key {
        /// What is wrong.
        reason: String,
    },
    /// Signing failed inside the JWT library.
    #[error("token: signing failed: {reason}")]
    Signing {
        /// The library's message.
        reason: String,
    },
    /// The token is not a well-formed JWT with the expected claims.
    #[error("token: malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The header names an algorithm other than EdDSA (including `none`).
    #[error("token: algorithm `{alg}` is not accepted (only EdDSA)")]
    UnsupportedAlgorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// No known key has the header's `kid`.
    #[error("token: signed by unknown key `{kid}`")]
    UnknownKey {
        /// The header's `kid`.
        kid: String,
    },
    /// The signature does not verify.
    #[error("token: signature does not verify")]
    BadSignature,
    /// The token has expired.
    #[error("token: expired at {}", x509::rfc3339(at))]
    Expired {
        /// The token's `exp`.
        at: DateTime<Utc>,
    },
    /// The token is for another mesh.
    #[error("token: issued for mesh `{token}`, not `{requested}`")]
    WrongMesh {
        /// The mesh in the token.
        token: String,
        /// The mesh requested.
        requested: String,
    },
    /// The token is for another dataplane.
    #[error("token: issued for dataplane `{token}`, not `{requested}`")]
    WrongName {
        /// The dataplane name in the token.
        token: String,
        /// The name requested.
        requested: String,
    },
    /// The token is for other services.
    #[error("token: issued for service `{token}`, not `{requested}`")]
    WrongService {
        /// The services in the token, comma-separated.
        token: String,
        /// The service requested.
        requested: String,
    },
    /// The token has been revoked.
    #[error("token: `{jti}` has been revoked")]
    Revoked {
        /// The revoked token ID.
        jti: String,
    },
}

/// An Ed25519 token signing key; its `kid` is derived from the public key, so it survives export and import.
pub struct SigningKey {
    kid: String,
    key: KeyPair,
    encoding: EncodingKey,
}

/// The public half of a [`SigningKey`], enough to verify tokens.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    decoding: DecodingKey,
}

impl SigningKey {
    /// Generates a fresh key.
    pub fn generate() -> Result<Self, TokenError> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| TokenError::Key { reason: e.to_string() })?;
        Ok(Self::from_key_pair(key))
    }

    /// Loads a key from PKCS#8 PEM (as written by [`SigningKey::to_pkcs8_pem`]).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, TokenError> {
        let key = KeyPair::from_pem(pem)
            .map_err(|e| TokenError::Key { reason: format!("not a PKCS#8 private key PEM: {e}") })?;
        if key.algorithm() != &PKCS_ED25519 {
            return Err(TokenError::Key { reason: "not an Ed25519 key".into() });
        }
        Ok(Self::from_key_pair(key))
    }

    fn from_key_pair(key: KeyPair) -> Self {
        let kid = x509::sha256_hex(key.public_key_raw())[..16].to_string();
        let encoding = EncodingKey::from_ed_der(key.serialized_der());
        SigningKey { kid, key, encoding }
    }

    /// The key ID carried in the JWT header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8 PEM, for the control plane to store encrypted.
    pub fn to_pkcs8_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey { kid: self.kid.clone(), decoding: DecodingKey::from_ed_der(self.key.public_key_raw()) }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey {{ kid: {:?}, key: <redacted> }}", self.kid)
    }
}

impl VerifyingKey {
    /// The key ID.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey {{ kid: {:?} }}", self.kid)
    }
}

/// Signs claims into a JWT (`alg: EdDSA`, `kid` in the header).
pub fn issue(key: &SigningKey, claims: &DataplaneClaims) -> Result<String, TokenError> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| TokenError::Signing { reason: e.to_string() })
}

/// The header fields Ward looks at before choosing a key.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
}

/// Verifies a token's algorithm, key, signature and expiry at `now`, and returns its claims.
pub fn verify(token: &str, keys: &[VerifyingKey], now: DateTime<Utc>) -> Result<DataplaneClaims, TokenError> {
    let malformed = |reason: String| TokenError::Malformed { reason };
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(malformed(format!("expected 3 dot-separated parts, found {}", parts.len())));
    }
    let header_json =
        URL_SAFE_NO_PAD.decode(parts[0]).map_err(|e| malformed(format!("header is not base64url: {e}")))?;
    let header: RawHeader = serde_json::from_slice(&header_json).map_err(|e| malformed(format!("header: {e}")))?;
    if header.alg != ALG {
        return Err(TokenError::UnsupportedAlgorithm { alg: header.alg });
    }
    let kid = header.kid.ok_or_else(|| malformed("header has no kid".into()))?;
    let key = keys.iter().find(|k| k.kid == kid).ok_or(TokenError::UnknownKey { kid })?;

    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<DataplaneClaims>(token, &key.decoding, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => malformed(e.to_string()),
        })?
        .claims;
    if now >= claims.exp {
        return Err(TokenError::Expired { at: claims.exp });
    }
    Ok(claims)
}

/// Checks that verified claims cover the requested mesh, dataplane and service, and are not revoked.
pub fn authorize(
    claims: &DataplaneClaims,
    mesh: &str,
    name: &str,
    service: &str,
    revoked: &impl Fn(&str) -> bool,
) -> Result<(), TokenError> {
    if claims.mesh != mesh {
        return Err(TokenError::WrongMesh { token: claims.mesh.clone(), requested: mesh.to_string() });
    }
    if claims.name != name {
        return Err(TokenError::WrongName { token: claims.name.clone(), requested: name.to_string() });
    }
    if !claims.services().any(|s| s == service) {
        let token = claims.services().collect::<Vec<_>>().join(", ");
        return Err(TokenError::WrongService { token, requested: service.to_string() });
    }
    if revoked(&claims.jti) {
        return Err(TokenError::Revoked { jti: claims.jti.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use std::time::Duration;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    fn claims() -> DataplaneClaims {
        DataplaneClaims::new("default", "users-1", &["users"], now(), Duration::from_secs(3600))
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn a_valid_token_verifies_and_carries_kid_and_eddsa() {
        let key = SigningKey::generate().unwrap();
        let token = issue(&key, &claims()).unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], key.kid());
        let got = verify(&token, &[key.verifying_key()], now()).unwrap();
        assert_eq!(got, claims_with_jti(&got.jti));
        assert_eq!(got.exp, now() + TimeDelta::hours(1));
    }

    fn claims_with_jti(jti: &str) -> DataplaneClaims {
        DataplaneClaims { jti: jti.to_string(), ..claims() }
    }

    #[test]
    fn rejected_tokens_table() {
        let key = SigningKey::generate().unwrap();
        let stranger = SigningKey::generate().unwrap();
        let keys = [key.verifying_key()];
        let good = issue(&key, &claims()).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let other_payload =
            b64(&serde_json::to_string(&DataplaneClaims { service: "admin".into(), ..claims() }).unwrap());
        let kid = key.kid();
        type Check = fn(&TokenError) -> bool;
        let cases: Vec<(&str, String, DateTime<Utc>, Check)> = vec![
            ("expired", good.clone(), now() + TimeDelta::hours(1), |e| matches!(e, TokenError::Expired { .. })),
            ("tampered payload", format!("{}.{other_payload}.{}", parts[0], parts[2]), now(), |e| {
                matches!(e, TokenError::BadSignature)
            }),
            ("tampered signature", format!("{}.{}.{}", parts[0], parts[1], b64("x".repeat(64).as_str())), now(), |e| {
                matches!(e, TokenError::BadSignature)
            }),
            ("unknown kid", issue(&stranger, &claims()).unwrap(), now(), |e| {
                matches!(e, TokenError::UnknownKey { .. })
            }),
            (
                "alg none",
                format!("{}.{}.", b64(&format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#)), parts[1]),
                now(),
                |e| matches!(e, TokenError::UnsupportedAlgorithm { alg } if alg == "none"),
            ),
            (
                "alg HS256",
                format!("{}.{}.{}", b64(&format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#)), parts[1], parts[2]),
                now(),
                |e| matches!(e, TokenError::UnsupportedAlgorithm { .. }),
            ),
            ("no kid", format!("{}.{}.{}", b64(r#"{"alg":"EdDSA"}"#), parts[1], parts[2]), now(), |e| {
                matches!(e, TokenError::Malformed { .. })
            }),
            ("two parts", format!("{}.{}", parts[0], parts[1]), now(), |e| matches!(e, TokenError::Malformed { .. })),
            ("garbage", "!!!.???.***".into(), now(), |e| matches!(e, TokenError::Malformed { .. })),
        ];
        for (name, token, at, check) in cases {
            let err = verify(&token, &keys, at).expect_err(name);
            assert!(check(&err), "{name}: {err:?}");
            assert!(err.to_string().starts_with("token: "), "{name}: {err}");
        }
    }

    #[test]
    fn expiry_is_exact_with_no_leeway() {
        let key = SigningKey::generate().unwrap();
        let token = issue(&key, &claims()).unwrap();
        let exp = now() + TimeDelta::hours(1);
        assert!(verify(&token, &[key.verifying_key()], exp - TimeDelta::seconds(1)).is_ok());
        let err = verify(&token, &[key.verifying_key()], exp).unwrap_err();
        assert_eq!(err.to_string(), format!("token: expired at {}", x509::rfc3339(&exp)));
    }

    #[test]
    fn two_signing_keys_are_valid_at_once() {
        let (old, new) = (SigningKey::generate().unwrap(), SigningKey::generate().unwrap());
        assert_ne!(old.kid(), new.kid());
        let keys = [old.verifying_key(), new.verifying_key()];
        for key in [&old, &new] {
            assert!(verify(&issue(key, &claims()).unwrap(), &keys, now()).is_ok());
        }
        let only_new = [new.verifying_key()];
        assert!(matches!(
            verify(&issue(&old, &claims()).unwrap(), &only_new, now()),
            Err(TokenError::UnknownKey { .. })
        ));
    }

    #[test]
    fn keys_survive_pem_export_and_import() {
        let key = SigningKey::generate().unwrap();
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let loaded = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(loaded.kid(), key.kid());
        let token = issue(&loaded, &claims()).unwrap();
        assert!(verify(&token, &[key.verifying_key()], now()).is_ok());
        assert!(!format!("{key:?}").contains("PRIVATE"));

        let ec = KeyPair::generate().unwrap().serialize_pem();
        assert_eq!(SigningKey::from_pkcs8_pem(&ec).unwrap_err().to_string(), "signing key: not an Ed25519 key");
        assert!(matches!(SigningKey::from_pkcs8_pem("nope"), Err(TokenError::Key { .. })));
    }

    #[test]
    fn authorize_table() {
        let c = claims();
        let none = |_: &str| false;
        let all = |_: &str| true;
        type Check = fn(&Result<(), TokenError>) -> bool;
        let cases: [(&str, &str, &str, bool, Check); 5] = [
            ("default", "users-1", "users", false, |r| r.is_ok()),
            (
                "other",
                "users-1",
                "users",
                false,
                |r| matches!(r, Err(TokenError::WrongMesh { token, requested }) if token == "default" && requested == "other"),
            ),
            ("default", "users-2", "users", false, |r| matches!(r, Err(TokenError::WrongName { .. }))),
            ("default", "users-1", "items", false, |r| matches!(r, Err(TokenError::WrongService { .. }))),
            ("default", "users-1", "users", true, |r| matches!(r, Err(TokenError::Revoked { .. }))),
        ];
        for (mesh, name, service, revoked, check) in cases {
            let got = if revoked {
                authorize(&c, mesh, name, service, &all)
            } else {
                authorize(&c, mesh, name, service, &none)
            };
            assert!(check(&got), "{mesh}/{name}/{service} revoked={revoked}: {got:?}");
        }
        let both =
            DataplaneClaims::new("default", "users-1", &["users", "users-admin"], now(), Duration::from_secs(60));
        for (service, granted) in [("users", true), ("users-admin", true), ("items", false)] {
            assert_eq!(authorize(&both, "default", "users-1", service, &none).is_ok(), granted, "{service}");
        }
        assert_eq!(
            authorize(&both, "default", "users-1", "items", &none).unwrap_err().to_string(),
            "token: issued for service `users, users-admin`, not `items`"
        );
        let revoked_jti = c.jti.clone();
        let err = authorize(&c, "default", "users-1", "users", &|jti: &str| jti == revoked_jti).unwrap_err();
        assert_eq!(err.to_string(), format!("token: `{}` has been revoked", c.jti));
    }
}
