//! The operator's commands: apply, get, delete, generate, version.

pub mod apply;
pub mod delete;
pub mod explain;
pub mod generate;
pub mod get;
pub mod inspect;
pub mod revoke;
pub mod rotate;

use ward_api::ResourceType;

use crate::{client::Client, settings::Connection};

/// API path of one resource.
pub fn resource_path(ty: ResourceType, mesh: &str, name: &str) -> String {
    if ty.is_mesh_scoped() { format!("/meshes/{mesh}/{}/{name}", ty.info().plural) } else { format!("/meshes/{name}") }
}

/// Reads a resource type from a CLI word, listing the choices when it is unknown.
pub fn parse_type(word: &str) -> anyhow::Result<ResourceType> {
    ResourceType::from_word(word).ok_or_else(|| {
        let names: Vec<&str> = ward_api::resource::TYPES.iter().map(|t| t.plural).collect();
        anyhow::anyhow!("unknown resource type {word:?}: use one of {}", names.join(", "))
    })
}

/// `ward version`: the CLI's version and, when reachable, the control plane's.
pub async fn version(connection: Option<Connection>) -> anyhow::Result<()> {
    println!("client: ward {}", env!("CARGO_PKG_VERSION"));
    let server = match connection {
        Some(c) => match Client::new(c)?.get_json("/").await {
            Ok(v) => format!("ward {}", v["version"].as_str().unwrap_or("?")),
            Err(e) => format!("unavailable ({e:#})"),
        },
        None => "unavailable (no configuration)".into(),
    };
    println!("control plane: {server}");
    Ok(())
}
