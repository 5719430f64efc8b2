//! References to a mesh's Secrets, from its Mesh's provided backends, its MeshIdentities' CAs and its
//! MeshExternalServices' TLS, checked inside the write that could break them: a resource is not
//! stored naming a missing Secret, and a Secret something names is not deleted.

use sqlx::SqliteConnection;
use ward_api::{ResourceType, Spec};

use super::{StoreError, decode};

/// The Secrets `spec` names, each with the field naming it.
fn named(spec: &Spec) -> Vec<(String, String)> {
    match spec {
        Spec::Mesh(mesh) => mesh.named_secrets(),
        Spec::MeshExternalService(external) => external.named_secrets(),
        Spec::MeshIdentity(identity) => identity.named_secrets(),
        _ => Vec::new(),
    }
}

/// Refuses a resource (`key`, of mesh `mesh`) naming a Secret the mesh does not have.
pub(super) async fn check_named(
    tx: &mut SqliteConnection,
    mesh: &str,
    key: &str,
    spec: &Spec,
) -> Result<(), StoreError> {
    for (field, name) in named(spec) {
        let exists = sqlx::query("SELECT 1 FROM resources WHERE type = 'Secret' AND mesh = ? AND name = ?")
            .bind(mesh)
            .bind(&name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Err(StoreError::MissingSecret { key: key.to_string(), field, name });
        }
    }
    Ok(())
}

/// Refuses deleting Secret `name` of `mesh` while its Mesh or one of its MeshExternalServices
/// names it.
pub(super) async fn check_unnamed(tx: &mut SqliteConnection, mesh: &str, name: &str) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT * FROM resources WHERE (type = 'Mesh' AND name = ?) OR \
         (type IN ('MeshExternalService', 'MeshIdentity') AND mesh = ?)",
    )
    .bind(mesh)
    .bind(mesh)
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let ty: String = sqlx::Row::get(&row, "type");
        let Some(ty) = ResourceType::from_kind(&ty) else { continue };
        let resource = decode(ty, &row)?;
        if let Some((field, _)) = named(&resource.spec).into_iter().find(|(_, named)| named == name) {
            return Err(StoreError::InUse { key: format!("secrets/{name}"), by: resource.meta.key(), field });
        }
    }
    Ok(())
}
