//! The credentials a consumer authenticates with, prepared at load so that the
//! authentication plugins only look them up and compare: key-auth keys (indexed by their
//! SHA-256), basic-auth password digests (Kong's), hmac-auth secrets, and JWT secrets with
//! their keys parsed.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::schema;
use crate::error::ConfigErrors;

/// A key-auth credential: whose it is and its id (sent as X-Credential-Identifier).
#[derive(Debug)]
pub(crate) struct KeyCredential {
    pub consumer: usize,
    pub id: String,
}

/// The digest a key-auth key is indexed by, so that lookups never compare the key itself.
pub(crate) fn key_digest(key: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// A basic-auth credential: whose it is, and Kong's digest of its password.
#[derive(Debug)]
pub(crate) struct BasicCredential {
    pub consumer: usize,
    digest: String,
}

/// Kong's password digest: hex SHA-1 of the password followed by the consumer id.
fn kong_digest(password: &str, consumer_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{password}{consumer_id}").as_bytes(),
    );
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl BasicCredential {
    /// A credential whose `password` is plain text (`transform`, Kong's default) or already Kong's digest.
    pub fn new(consumer: usize, consumer_id: &str, password: &str, transform: bool) -> Self {
        let digest = if transform { kong_digest(password, consumer_id) } else { password.to_ascii_lowercase() };
        BasicCredential { consumer, digest }
    }

    /// Whether `password` is this credential's, compared in constant time.
    pub fn accepts(&self, password: &str, consumer_id: &str) -> bool {
        let given = kong_digest(password, consumer_id);
        aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), self.digest.as_bytes()).is_ok()
    }
}

/// An hmac-auth credential: whose it is, its username (sent as X-Credential-Identifier) and
/// the secret requests are signed with.
pub(crate) struct HmacCredential {
    pub consumer: usize,
    pub username: String,
    pub secret: Vec<u8>,
}

/// Never prints the secret.
impl std::fmt::Debug for HmacCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacCredential").field("consumer", &self.consumer).field("username", &self.username).finish()
    }
}

/// Kong's JWT algorithm names, and what each needs to verify a signature.
pub(crate) const JWT_ALGORITHMS: [(&str, Algorithm); 12] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// A consumer's JWT secret, with its verification keys prepared at load.
pub(crate) struct JwtSecret {
    pub consumer: usize,
    /// What the key claim must say.
    pub key: String,
    pub algorithm: Algorithm,
    /// The algorithm's name as a token header must give it.
    pub algorithm_name: &'static str,
    pub plain: DecodingKey,
    /// The HMAC secret base64-decoded, for plugins with `secret_is_base64`.
    pub base64: Option<DecodingKey>,
}

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSecret").field("key", &self.key).field("algorithm", &self.algorithm_name).finish()
    }
}

impl JwtSecret {
    /// Prepares a `jwt_secrets` entry, recording problems under `path`.
    pub fn compile(consumer: usize, s: &schema::JwtSecret, path: &str, errors: &mut ConfigErrors) -> Option<JwtSecret> {
        let name = s.algorithm.as_deref().unwrap_or("HS256");
        let Some(&(algorithm_name, algorithm)) = JWT_ALGORITHMS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = JWT_ALGORITHMS.iter().map(|(n, _)| *n).collect();
            errors.add(format!("{path}.algorithm"), format!("'{name}' is not supported ({})", names.join(", ")));
            return None;
        };
        let key = s.key.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let (plain, base64) = if name.starts_with("HS") {
            let secret = s.secret.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            let decoded = base64::engine::general_purpose::STANDARD.decode(secret.as_bytes()).ok();
            (DecodingKey::from_secret(secret.as_bytes()), decoded.map(|d| DecodingKey::from_secret(&d)))
        } else {
            let Some(pem) = &s.rsa_public_key else {
                errors.add(format!("{path}.rsa_public_key"), format!("is required for {name}"));
                return None;
            };
            let parsed = match name {
                n if n.starts_with("RS") || n.starts_with("PS") => DecodingKey::from_rsa_pem(pem.as_bytes()),
                n if n.starts_with("ES") => DecodingKey::from_ec_pem(pem.as_bytes()),
                _ => DecodingKey::from_ed_pem(pem.as_bytes()),
            };
            match parsed {
                Ok(k) => (k, None),
                Err(e) => {
                    errors.add(format!("{path}.rsa_public_key"), format!("is not a {name} public key in PEM: {e}"));
                    return None;
                }
            }
        };
        Some(JwtSecret { consumer, key, algorithm, algorithm_name, plain, base64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_compatible_digest() {
        // Kong stores sha1(password .. consumer_id); a file written with _transform: false carries it.
        let c = BasicCredential::new(0, "4d924084-1adb-40a5-c042-63b19db421d1", "kong", true);
        assert_eq!(c.digest, kong_digest("kong", "4d924084-1adb-40a5-c042-63b19db421d1"));
        assert!(c.accepts("kong", "4d924084-1adb-40a5-c042-63b19db421d1"));
        assert!(!c.accepts("kong ", "4d924084-1adb-40a5-c042-63b19db421d1"));
        let hashed = BasicCredential::new(0, "x", &kong_digest("secret", "x").to_uppercase(), false);
        assert!(hashed.accepts("secret", "x"));
    }
}
