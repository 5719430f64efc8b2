//! `ward explain DATAPLANE --caller X`: would this caller get through, and why.

use clap::Args;

use crate::client::Client;

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
    let answer = client.get_json(&authorization_path(&args.mesh, &args.dataplane, &args.caller)).await?;
    println!("{}", answer["explanation"].as_str().unwrap_or("?"));
    Ok(())
}

/// API path of the question "may `caller` reach `dataplane`?".
pub fn authorization_path(mesh: &str, dataplane: &str, caller: &str) -> String {
    let caller: String = caller
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect();
    format!("/meshes/{mesh}/dataplanes/{dataplane}/_authorization?caller={caller}")
}
