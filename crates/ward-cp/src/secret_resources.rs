//! Secret and GlobalSecret resources: their data is sealed with the key-encryption key before
//! it reaches the store, and opened only in memory, for a provided CA or an admin who asks.

use std::sync::Arc;

use ward_api::{Meta, Resource, ResourceType, Spec, ValidationError, secret::Secret};

use crate::{
    secrets::Kek,
    store::{Store, StoreError},
};

/// Seals and opens the data of Secrets and GlobalSecrets.
#[derive(Clone)]
pub struct SecretResources {
    store: Store,
    kek: Arc<Kek>,
}

impl SecretResources {
    /// Secrets of `store`, sealed with `kek`.
    pub fn new(store: Store, kek: Arc<Kek>) -> Self {
        SecretResources { store, kek }
    }

    /// The resource as it may be stored: a Secret's data sealed; other resources unchanged.
    pub fn seal(&self, mut resource: Resource) -> Resource {
        if let Spec::Secret(Secret::Data(data)) = &resource.spec {
            resource.spec = Spec::Secret(Secret::Sealed(self.kek.seal(&seal_name(&resource.meta), data)));
        }
        resource
    }

    /// The data of a Secret or GlobalSecret read from the store.
    pub fn open(&self, resource: &Resource) -> Result<Vec<u8>, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { key: resource.meta.key(), reason };
        match &resource.spec {
            Spec::Secret(Secret::Sealed(sealed)) => {
                self.kek.open(&seal_name(&resource.meta), sealed).map_err(|e| corrupt(e.to_string()))
            }
            Spec::Secret(Secret::Data(data)) => Ok(data.clone()),
            _ => Err(corrupt("is not a Secret".into())),
        }
    }

    /// The resource with its data opened, to be shown.
    pub fn opened(&self, mut resource: Resource) -> Result<Resource, StoreError> {
        resource.spec = Spec::Secret(Secret::Data(self.open(&resource)?));
        Ok(resource)
    }

    /// The data of Secret `name` of `mesh`, when it exists.
    pub async fn data(&self, mesh: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.store.get(ResourceType::Secret, mesh, name).await? {
            Some(resource) => self.open(&resource).map(Some),
            None => Ok(None),
        }
    }

    /// Refuses new data for a Secret a Mesh's CA was built from: the CA would no longer be
    /// what the Secret says. The same data again is accepted, so that a file applies twice.
    pub async fn check_update(&self, new: &Resource) -> Result<(), UpdateRefused> {
        let (meta, Spec::Secret(Secret::Data(data))) = (&new.meta, &new.spec) else { return Ok(()) };
        if meta.ty != ResourceType::Secret {
            return Ok(());
        }
        let Some(Spec::Mesh(mesh)) = self.store.get(ResourceType::Mesh, &meta.mesh, &meta.mesh).await?.map(|r| r.spec)
        else {
            return Ok(());
        };
        let Some((field, _)) = mesh.named_secrets().into_iter().find(|(_, name)| name == &meta.name) else {
            return Ok(());
        };
        match self.data(&meta.mesh, &meta.name).await? {
            Some(stored) if &stored != data => Err(UpdateRefused::InUse(ValidationError::single(
                meta.key(),
                "data",
                format!(
                    "cannot change while Mesh {:?} uses it at {field}: to replace a CA, create a new Secret \
                     and apply the Mesh naming it",
                    meta.mesh
                ),
            ))),
            _ => Ok(()),
        }
    }
}

/// Why a Secret's new data was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpdateRefused {
    /// A Mesh uses the Secret.
    #[error(transparent)]
    InUse(ValidationError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The name a Secret's data is sealed under, so that sealed data cannot move to another Secret.
fn seal_name(meta: &Meta) -> String {
    match meta.ty {
        ResourceType::GlobalSecret => format!("global-secret/{}", meta.name),
        _ => format!("secret/{}/{}", meta.mesh, meta.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Actor;

    fn resource(yaml: &str) -> Resource {
        ward_api::parse::resource(ward_api::parse::documents(yaml).unwrap().remove(0), "test").unwrap()
    }

    #[tokio::test]
    async fn data_is_stored_sealed_under_its_own_name() {
        let store = Store::in_memory().await.unwrap();
        let secrets = SecretResources::new(store.clone(), Arc::new(Kek::ephemeral()));
        let admin = Actor("admin".into());
        store.put(resource("type: Mesh\nname: m\n"), &admin).await.unwrap();
        let given = resource("type: Secret\nmesh: m\nname: s\ndata: aGVsbG8=\n");
        let err = store.put(given.clone(), &admin).await.unwrap_err().to_string();
        assert!(err.contains("must be sealed"), "unsealed data is never stored: {err}");

        store.put(secrets.seal(given), &admin).await.unwrap();
        let stored = store.get(ResourceType::Secret, "m", "s").await.unwrap().unwrap();
        assert!(matches!(stored.spec, Spec::Secret(Secret::Sealed(_))));
        assert_eq!(stored.to_json().get("data"), None, "sealed data is never shown");
        assert_eq!(secrets.data("m", "s").await.unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(secrets.data("m", "other").await.unwrap(), None);

        let mut moved = stored.clone();
        moved.meta.name = "t".into();
        assert!(secrets.open(&moved).is_err(), "sealed data does not open under another name");
        let global = secrets.seal(resource("type: GlobalSecret\nname: s\ndata: aGVsbG8=\n"));
        assert!(secrets.open(&global).is_ok());
        let mut as_mesh_secret = global;
        as_mesh_secret.meta.ty = ResourceType::Secret;
        assert!(secrets.open(&as_mesh_secret).is_err(), "nor as another kind");
    }
}
