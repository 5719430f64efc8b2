//! `ward inspect dataplane NAME -m MESH`.

use clap::Subcommand;

use crate::client::{Client, Segment, api_path};

/// `ward inspect ...`.
#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// A dataplane's connection and the certificates it holds, one per identity.
    Dataplane {
        /// The dataplane.
        name: String,
        /// Its mesh.
        #[arg(short, long, default_value = "default")]
        mesh: String,
    },
}

/// Runs `ward inspect ...`.
pub async fn run(client: &Client, command: InspectCommand) -> anyhow::Result<()> {
    let InspectCommand::Dataplane { name, mesh } = command;
    let path = api_path(&[
        Segment::Fixed("meshes"),
        Segment::Name { what: "mesh", value: &mesh },
        Segment::Fixed("dataplanes"),
        Segment::Name { what: "dataplane", value: &name },
        Segment::Fixed("_overview"),
    ])?;
    let overview = client.get_json(&path).await?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let session = &overview["session"];
    let status = if overview["online"] == true {
        format!(
            "online since {} (proxy {}, token {})",
            text(&session["connectedAt"]),
            text(&session["proxyVersion"]),
            text(&session["tokenId"])
        )
    } else if overview["refused"].is_object() {
        let refused = &overview["refused"];
        format!("offline: the control plane refused it at {}: {}", text(&refused["at"]), text(&refused["reason"]))
    } else {
        "offline".into()
    };
    println!("dataplane:   {mesh}/{name}");
    println!("status:      {status}");
    let certs = overview["certificates"].as_array().map(Vec::as_slice).unwrap_or_default();
    if certs.is_empty() {
        println!("certificate: none issued");
    }
    for cert in certs {
        println!();
        println!("spiffe id:   {}", text(&cert["spiffeId"]));
        println!("serial:      {}", text(&cert["serial"]));
        println!("not before:  {}", text(&cert["notBefore"]));
        println!("not after:   {}", text(&cert["notAfter"]));
        println!("issued by:   backend {}", text(&cert["backend"]));
    }
    Ok(())
}
