//! Key material of mesh identity: each backend's CA, token signing keys, revoked tokens and
//! the certificate each dataplane holds. Private keys arrive and leave sealed.

use sqlx::{Row, SqliteConnection};
use ward_api::mesh::Mesh;

use super::{Actor, Store, StoreError, audit_event, now};

/// The CA of one backend of a mesh, as written with its Mesh.
#[derive(Debug, Clone)]
pub struct MeshCa {
    /// Backend name.
    pub backend: String,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, sealed with the key-encryption key.
    pub sealed_key: Vec<u8>,
    /// Whether to replace a stored CA of the same backend (provided CAs) or keep it (builtin).
    pub replace: bool,
}

/// A token signing key of a mesh.
#[derive(Debug, Clone)]
pub struct StoredSigningKey {
    /// Order of creation; the highest signs new tokens.
    pub seq: i64,
    /// Key ID, as in the tokens' header.
    pub kid: String,
    /// The PKCS#8 key, sealed.
    pub sealed_key: Vec<u8>,
}

/// The certificate a dataplane was issued last for one of its identities.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneCert {
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// The backend whose CA signed it.
    pub backend: String,
}

/// Writes `cas` and drops CAs of backends the mesh no longer lists (inside the Mesh's write).
pub(super) async fn sync_mesh_cas(
    tx: &mut SqliteConnection,
    mesh_name: &str,
    mesh: &Mesh,
    cas: &[MeshCa],
) -> Result<(), StoreError> {
    let listed: Vec<&str> = mesh.mtls.iter().flat_map(|m| &m.backends).map(|b| b.name.as_str()).collect();
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT backend FROM mesh_cas WHERE mesh = ?").bind(mesh_name).fetch_all(&mut *tx).await?;
    // MeshIdentities' CAs live and go with their MeshIdentity.
    let backends = stored.iter().filter(|b| !is_identity_backend(b));
    for gone in backends.filter(|b| !listed.contains(&b.as_str())) {
        sqlx::query("DELETE FROM mesh_cas WHERE mesh = ? AND backend = ?")
            .bind(mesh_name)
            .bind(gone)
            .execute(&mut *tx)
            .await?;
    }
    put_cas(tx, mesh_name, cas).await
}

/// What a MeshIdentity's CA is kept under, beside the Mesh's backends (whose names cannot hold a `/`).
const IDENTITY_PREFIX: &str = "meshidentity/";

/// Whether `backend` names a MeshIdentity's CA.
pub fn is_identity_backend(backend: &str) -> bool {
    backend.starts_with(IDENTITY_PREFIX)
}

/// The backend name of MeshIdentity `name`'s CA.
pub fn identity_backend(name: &str) -> String {
    format!("{IDENTITY_PREFIX}{name}")
}

/// Drops the CA of MeshIdentity `name` (inside its delete).
pub(super) async fn delete_identity_ca(tx: &mut SqliteConnection, mesh: &str, name: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM mesh_cas WHERE mesh = ? AND backend = ?")
        .bind(mesh)
        .bind(identity_backend(name))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Writes `cas` of a mesh: replacing a stored CA of the same backend when asked, else keeping it.
pub(super) async fn put_cas(tx: &mut SqliteConnection, mesh_name: &str, cas: &[MeshCa]) -> Result<(), StoreError> {
    for ca in cas {
        let on_conflict = if ca.replace {
            "DO UPDATE SET cert_pem = excluded.cert_pem, sealed_key = excluded.sealed_key, created_at = excluded.created_at"
        } else {
            "DO NOTHING"
        };
        sqlx::query(&format!(
            "INSERT INTO mesh_cas (mesh, backend, cert_pem, sealed_key, created_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (mesh, backend) {on_conflict}"
        ))
        .bind(mesh_name)
        .bind(&ca.backend)
        .bind(&ca.cert_pem)
        .bind(&ca.sealed_key)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Drops everything identity keeps for a mesh (inside the Mesh's delete).
pub(super) async fn delete_mesh(tx: &mut SqliteConnection, mesh: &str) -> Result<(), StoreError> {
    for table in ["mesh_cas", "signing_keys", "dataplane_certs"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE mesh = ?")).bind(mesh).execute(&mut *tx).await?;
    }
    Ok(())
}

/// Forgets the certificate of a deleted dataplane (inside its delete).
pub(super) async fn delete_dataplane(tx: &mut SqliteConnection, mesh: &str, name: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM dataplane_certs WHERE mesh = ? AND dataplane = ?")
        .bind(mesh)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

impl Store {
    /// The CAs of a mesh's backends, by backend name.
    pub async fn mesh_cas(&self, mesh: &str) -> Result<Vec<MeshCa>, StoreError> {
        let rows = sqlx::query("SELECT backend, cert_pem, sealed_key FROM mesh_cas WHERE mesh = ? ORDER BY backend")
            .bind(mesh)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| MeshCa {
                backend: r.get("backend"),
                cert_pem: r.get("cert_pem"),
                sealed_key: r.get("sealed_key"),
                replace: false,
            })
            .collect())
    }

    /// The token signing keys of a mesh, oldest first.
    pub async fn signing_keys(&self, mesh: &str) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows = sqlx::query("SELECT seq, kid, sealed_key FROM signing_keys WHERE mesh = ? ORDER BY seq")
            .bind(mesh)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| StoredSigningKey { seq: r.get("seq"), kid: r.get("kid"), sealed_key: r.get("sealed_key") })
            .collect())
    }

    /// Adds a signing key to a mesh (it becomes the one that signs); with `retire_older`,
    /// removes the mesh's other keys, so tokens they signed stop working.
    pub async fn add_signing_key(
        &self,
        mesh: &str,
        kid: &str,
        sealed_key: &[u8],
        retire_older: bool,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let mesh_exists = sqlx::query("SELECT 1 FROM resources WHERE type = 'Mesh' AND name = ?")
            .bind(mesh)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !mesh_exists {
            return Err(StoreError::UnknownMesh(mesh.into()));
        }
        if retire_older {
            sqlx::query("DELETE FROM signing_keys WHERE mesh = ?").bind(mesh).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO signing_keys (mesh, kid, sealed_key, created_at) VALUES (?, ?, ?, ?)")
            .bind(mesh)
            .bind(kid)
            .bind(sealed_key)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        let action = if retire_older { "rotated signing key, retiring older keys" } else { "added signing key" };
        audit_event(&mut tx, actor, action, &format!("SigningKey {mesh}/{kid}"), None, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that token `jti` is revoked; `false` when it already was.
    pub async fn revoke_token(&self, jti: &str, actor: &Actor) -> Result<bool, StoreError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let added = sqlx::query("INSERT OR IGNORE INTO revoked_tokens (jti, revoked_at) VALUES (?, ?)")
            .bind(jti)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if added {
            audit_event(&mut tx, actor, "revoked", &format!("DataplaneToken {jti}"), None, None).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Every revoked token ID.
    pub async fn revoked_tokens(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT jti FROM revoked_tokens").fetch_all(&self.pool).await?)
    }

    /// The certificate last issued to a dataplane for each of its identities, by SPIFFE ID.
    pub async fn dataplane_certs(&self, mesh: &str, dataplane: &str) -> Result<Vec<DataplaneCert>, StoreError> {
        let rows = sqlx::query("SELECT * FROM dataplane_certs WHERE mesh = ? AND dataplane = ? ORDER BY spiffe_id")
            .bind(mesh)
            .bind(dataplane)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DataplaneCert {
                spiffe_id: r.get("spiffe_id"),
                serial: r.get("serial"),
                not_before: r.get("not_before"),
                not_after: r.get("not_after"),
                backend: r.get("backend"),
            })
            .collect())
    }
}
