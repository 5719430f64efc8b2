//! API tokens: signed by the control plane, carrying a role and optionally a list of meshes.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::{
    secrets::Kek,
    store::{Store, StoreError},
};

/// Name of the sealed secret that signs user tokens.
const SIGNING_SECRET: &str = "user-token-signing-key";
/// Issuer claim of every user token.
const ISSUER: &str = "ward-cp";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read and write.
    Admin,
    /// Read only.
    Viewer,
}

impl Role {
    /// The role named `text` (`admin` or `viewer`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// Claims of a user token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    /// The token's name, recorded in the audit log.
    pub sub: String,
    /// Its role.
    pub role: Role,
    /// Meshes it is limited to; absent means every mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meshes: Option<Vec<String>>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Unique ID.
    pub jti: String,
    /// Always `ward-cp`.
    pub iss: String,
}

impl UserClaims {
    /// Whether the token may see resources of `mesh`.
    pub fn covers(&self, mesh: &str) -> bool {
        self.meshes.as_ref().is_none_or(|list| list.iter().any(|m| m == mesh))
    }
}

/// Why a request's token was refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token: send 'Authorization: Bearer <token>'")]
    Missing,
    /// Not a token we can read.
    #[error("malformed token")]
    Malformed,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Its signature is not ours.
    #[error("token signature is not valid")]
    Forged,
}

/// Issues and verifies user tokens with a key kept sealed in the store.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Tokens {
    /// Loads the signing key, creating it on first start; `true` when it was created.
    pub async fn load_or_create(store: &Store, kek: &Kek) -> Result<(Self, bool), StoreError> {
        let (sealed, created) = match store.secret(SIGNING_SECRET).await? {
            Some(sealed) => (sealed, false),
            None => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                let sealed = kek.seal(SIGNING_SECRET, &key);
                let kept = store.insert_secret(SIGNING_SECRET, &sealed).await?;
                let created = kept == sealed;
                (kept, created)
            }
        };
        let key = kek
            .open(SIGNING_SECRET, &sealed)
            .map_err(|e| StoreError::Corrupt { key: SIGNING_SECRET.into(), reason: e.to_string() })?;
        Ok((Tokens { encoding: EncodingKey::from_secret(&key), decoding: DecodingKey::from_secret(&key) }, created))
    }

    /// A new token for `name` with `role`, limited to `meshes` when given.
    pub fn issue(&self, name: &str, role: Role, meshes: Option<Vec<String>>, valid_for: Duration) -> String {
        let iat = chrono::Utc::now().timestamp();
        let claims = UserClaims {
            sub: name.to_string(),
            role,
            meshes,
            iat,
            exp: iat.saturating_add(valid_for.as_secs() as i64),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: ISSUER.into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Checks signature, issuer and expiry (no leeway).
    pub fn verify(&self, token: &str) -> Result<UserClaims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        jsonwebtoken::decode::<UserClaims>(token, &self.decoding, &validation).map(|data| data.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Forged,
                _ => AuthError::Malformed,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issue_verify_and_refuse() {
        let store = Store::in_memory().await.unwrap();
        let kek = Kek::ephemeral();
        let (tokens, created) = Tokens::load_or_create(&store, &kek).await.unwrap();
        assert!(created);
        let (same, created_again) = Tokens::load_or_create(&store, &kek).await.unwrap();
        assert!(!created_again);

        let token = tokens.issue("ops", Role::Viewer, Some(vec!["m".into()]), Duration::from_secs(60));
        let claims = same.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("ops", Role::Viewer));
        assert!(claims.covers("m") && !claims.covers("other"));

        let expired = tokens.issue("old", Role::Admin, None, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(tokens.verify(&expired), Err(AuthError::Expired));

        let (other, _) = Tokens::load_or_create(&Store::in_memory().await.unwrap(), &kek).await.unwrap();
        let forged = other.issue("ops", Role::Admin, None, Duration::from_secs(60));
        assert_eq!(tokens.verify(&forged), Err(AuthError::Forged));
        assert_eq!(tokens.verify("not-a-token"), Err(AuthError::Malformed));
    }
}
