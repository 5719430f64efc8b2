//! `ward delete TYPE NAME [-m MESH]`.

use clap::Args;
use reqwest::Method;

use super::{parse_type, resource_path};
use crate::client::Client;

/// `ward delete` arguments.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Resource type, e.g. mesh, dataplane, meshtrafficpermission.
    #[arg(value_name = "TYPE")]
    ty: String,
    /// Resource name.
    name: String,
    /// Mesh of the resource.
    #[arg(short, long, default_value = "default")]
    mesh: String,
}

/// Runs `ward delete`.
pub async fn run(client: &Client, args: DeleteArgs) -> anyhow::Result<()> {
    let ty = parse_type(&args.ty)?;
    client.send(Method::DELETE, &resource_path(ty, &args.mesh, &args.name)?, None).await?;
    let place = if ty.is_mesh_scoped() { format!(" in mesh {}", args.mesh) } else { String::new() };
    println!("{} {}{place} deleted", ty.info().name, args.name);
    Ok(())
}
