//! `ward explain DATAPLANE --caller X`: would this caller get through, and why.

use clap::Args;

use crate::client::{BadName, Client, Segment, api_path, query_value};

/// `ward explain` arguments.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The dataplane being called.
    dataplane: String,
    /// The caller: a service name (e.g. `web`) or a SPIFFE ID.
    #[arg(long)]
    caller: String,
    /// Mesh of the dataplane.
    #[arg(short, long, default_value = "default")]
    mesh: String,
}

/// Runs `ward explain` and prints e.g. `Allow by MeshTrafficPermission/allow-web`.
pub async fn run(client: &Client, args: ExplainArgs) -> anyhow::Result<()> {
    let answer = client.get_json(&authorization_path(&args.mesh, &args.dataplane, &args.caller)?).await?;
    println!("{}", answer["explanation"].as_str().unwrap_or("?"));
    Ok(())
}

/// API path of the question "may `caller` reach `dataplane`?".
pub fn authorization_path(mesh: &str, dataplane: &str, caller: &str) -> Result<String, BadName> {
    let path = api_path(&[
        Segment::Fixed("meshes"),
        Segment::Name { what: "mesh", value: mesh },
        Segment::Fixed("dataplanes"),
        Segment::Name { what: "dataplane", value: dataplane },
        Segment::Fixed("_authorization"),
    ])?;
    Ok(format!("{path}?caller={}", query_value(caller)))
}
