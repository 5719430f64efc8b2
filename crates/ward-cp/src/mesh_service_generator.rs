//! MeshServices generated from `kuma.io/service` tags, as Kuma's control plane makes them when a
//! Mesh's `meshServices.mode` is not `Disabled`: one per service value that is a DNS label,
//! selecting the dataplanes tagged with it, with a port per inbound port. They are stored like any
//! resource, labelled `kuma.io/managed-by: meshservice-generator`, and follow the dataplanes:
//! updated when their inbounds change, deleted when no dataplane carries the tag any more or the
//! mode goes back to `Disabled`. A MeshService someone wrote is never touched, and its name is
//! never generated.

use std::collections::BTreeMap;

use ward_api::{
    Meta, Resource, ResourceType, Spec,
    dataplane::SERVICE_TAG,
    membership,
    mesh::{Mesh, MeshServicesMode},
    mesh_service::{MAX_NAME_LEN, MeshService, Selector, ServicePort, TargetPort},
};

use crate::store::{Actor, Store, StoreError};

/// The label marking a generated MeshService, and its value (Kuma's).
pub const MANAGED_BY: (&str, &str) = ("kuma.io/managed-by", "meshservice-generator");

/// Who the audit log says wrote a generated MeshService.
const GENERATOR: &str = "system:meshservice-generator";

/// Whether `name` is a DNS-1035 label, which Kuma requires of a generated MeshService's name.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && name.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

/// The MeshServices `mesh` (named `mesh_name`) should have generated from its `resources`, by name.
pub fn wanted(mesh_name: &str, mesh: &Mesh, resources: &[Resource]) -> BTreeMap<String, MeshService> {
    let mut wanted: BTreeMap<String, BTreeMap<u16, ServicePort>> = BTreeMap::new();
    if mesh.mesh_services_mode() == MeshServicesMode::Disabled {
        return BTreeMap::new();
    }
    for resource in resources {
        let Spec::Dataplane(dp) = &resource.spec else { continue };
        if membership::check(mesh_name, mesh, dp).is_err() {
            continue;
        }
        for inbound in &dp.networking.inbound {
            let Some(service) = inbound.service().filter(|s| is_dns_label(s)) else { continue };
            let port = inbound.port.0;
            wanted.entry(service.to_string()).or_default().entry(port).or_insert_with(|| ServicePort {
                name: Some(inbound.name.clone().unwrap_or_else(|| port.to_string())),
                port: inbound.port,
                target_port: Some(TargetPort::Number(u32::from(port))),
                app_protocol: Some(inbound.protocol().map_or_else(|| "tcp".to_string(), |p| p.to_string())),
            });
        }
    }
    wanted
        .into_iter()
        .map(|(service, ports)| {
            let selector = Selector {
                dataplane_tags: Some([(SERVICE_TAG.to_string(), service.clone())].into()),
                ..Default::default()
            };
            (service, MeshService { selector, ports: ports.into_values().collect(), ..Default::default() })
        })
        .collect()
}

/// Brings the generated MeshServices of mesh `mesh_name` in line with its dataplanes: creates,
/// updates and deletes only MeshServices it generated. An update races no one: it names the
/// version it read, and a conflict leaves the resource to the next change.
pub async fn sync(store: &Store, mesh_name: &str) -> Result<(), StoreError> {
    let Some(Spec::Mesh(mesh)) = store.get(ResourceType::Mesh, mesh_name, mesh_name).await?.map(|r| r.spec) else {
        return Ok(());
    };
    let resources = store.mesh_resources(mesh_name).await?;
    let mut wanted = wanted(mesh_name, &mesh, &resources);
    let actor = Actor(GENERATOR.to_string());
    for resource in &resources {
        let Spec::MeshService(current) = &resource.spec else { continue };
        let generated = resource.meta.labels.get(MANAGED_BY.0).is_some_and(|v| v == MANAGED_BY.1);
        let Some(spec) = wanted.remove(&resource.meta.name) else {
            if generated {
                delete(store, mesh_name, &resource.meta.name, &actor).await?;
            }
            continue;
        };
        if generated && *current != spec {
            let mut updated = generated_resource(mesh_name, &resource.meta.name, spec);
            updated.meta.version = resource.meta.version;
            write(store, updated, &actor).await?;
        }
    }
    for (name, spec) in wanted {
        write(store, generated_resource(mesh_name, &name, spec), &actor).await?;
    }
    Ok(())
}

/// A generated MeshService as it is stored.
fn generated_resource(mesh: &str, name: &str, spec: MeshService) -> Resource {
    let labels = [(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into();
    let meta = Meta {
        ty: ResourceType::MeshService,
        mesh: mesh.to_string(),
        name: name.to_string(),
        labels,
        version: 0,
        creation_time: None,
        modification_time: None,
    };
    Resource { meta, spec: Spec::MeshService(spec) }
}

/// Stores a generated MeshService; a write that lost a race is left to the next change.
async fn write(store: &Store, resource: Resource, actor: &Actor) -> Result<(), StoreError> {
    match store.put(resource, actor).await {
        Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes a generated MeshService no dataplane needs any more.
async fn delete(store: &Store, mesh: &str, name: &str, actor: &Actor) -> Result<(), StoreError> {
    match store.delete(ResourceType::MeshService, mesh, name, actor).await {
        Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
