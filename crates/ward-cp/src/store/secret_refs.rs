//! References from a Mesh's provided backends to the mesh's Secrets, checked inside the write
//! that could break them: a Mesh is not stored naming a missing Secret, and a Secret a Mesh
//! names is not deleted.

use sqlx::SqliteConnection;
use ward_api::{Spec, mesh::Mesh};

use super::{StoreError, decode};

/// Refuses a Mesh naming a Secret the mesh does not have.
pub(super) async fn check_named(tx: &mut SqliteConnection, mesh_name: &str, mesh: &Mesh) -> Result<(), StoreError> {
    for (field, name) in mesh.named_secrets() {
        let exists = sqlx::query("SELECT 1 FROM resources WHERE type = 'Secret' AND mesh = ? AND name = ?")
            .bind(mesh_name)
            .bind(&name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Err(StoreError::MissingSecret { key: format!("meshes/{mesh_name}"), field, name });
        }
    }
    Ok(())
}

/// Refuses deleting Secret `name` of `mesh_name` while the Mesh names it.
pub(super) async fn check_unnamed(tx: &mut SqliteConnection, mesh_name: &str, name: &str) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT * FROM resources WHERE type = 'Mesh' AND name = ?")
        .bind(mesh_name)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else { return Ok(()) };
    let Spec::Mesh(mesh) = decode(ward_api::ResourceType::Mesh, &row)?.spec else { return Ok(()) };
    match mesh.named_secrets().into_iter().find(|(_, named)| named == name) {
        Some((field, _)) => {
            Err(StoreError::InUse { key: format!("secrets/{name}"), mesh: mesh_name.to_string(), field })
        }
        None => Ok(()),
    }
}
