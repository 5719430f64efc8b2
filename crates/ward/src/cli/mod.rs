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

use crate::{
    client::{BadName, Client, Segment, api_path},
    settings::Connection,
};

/// API path of one resource; refused when the mesh or the name is not a valid name.
pub fn resource_path(ty: ResourceType, mesh: &str, name: &str) -> Result<String, BadName> {
    let name = Segment::Name { what: "name", value: name };
    if ty.is_mesh_scoped() {
        api_path(&[
            Segment::Fixed("meshes"),
            Segment::Name { what: "mesh", value: mesh },
            Segment::Fixed(ty.info().plural),
            name,
        ])
    } else {
        api_path(&[Segment::Fixed(ty.info().plural), name])
    }
}

/// API path of a mesh's collection or sub-resource `word` (e.g. `_cas`, `signing-keys`).
pub fn mesh_path(mesh: &str, word: &str) -> Result<String, BadName> {
    api_path(&[Segment::Fixed("meshes"), Segment::Name { what: "mesh", value: mesh }, Segment::Fixed(word)])
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
