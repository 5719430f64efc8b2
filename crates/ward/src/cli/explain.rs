//! `ward explain DATAPLANE --caller X`: would this caller get through, and why; with
//! `--external`, the same for a MeshExternalService.

use clap::Args;
use ward_api::names::check_name;

use crate::client::{BadName, Client, Segment, api_path, query_value};

/// `ward explain` arguments.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The dataplane being called (with `--external`, the MeshExternalService).
    dataplane: String,
    /// The name is a MeshExternalService's: would the caller's proxy be let out to it.
    #[arg(long)]
    external: bool,
    /// The caller: a service name (e.g. `web`) or a SPIFFE ID.
    #[arg(long)]
    caller: String,
    /// A Dataplane of the caller, whose tags decide permissions that look at more than the service.
    #[arg(long)]
    caller_dataplane: Option<String>,
    /// The inbound called, by name or port (decided as that inbound's proxy decides); without
    /// it, a dataplane of several inbounds is decided as a whole (only a Deny of a policy
    /// selecting some of them counts).
    #[arg(long)]
    inbound: Option<String>,
    /// Mesh of the dataplane.
    #[arg(short, long, default_value = "default")]
    mesh: String,
}

/// Runs `ward explain` and prints e.g. `Allow by MeshTrafficPermission/allow-web`.
pub async fn run(client: &Client, args: ExplainArgs) -> anyhow::Result<()> {
    let mut path = match args.external {
        false => authorization_path(&args.mesh, &args.dataplane, &args.caller)?,
        true => {
            if args.inbound.is_some() {
                anyhow::bail!("--inbound: a MeshExternalService has no inbounds; leave it out with --external");
            }
            external_authorization_path(&args.mesh, &args.dataplane, &args.caller)?
        }
    };
    if let Some(name) = &args.caller_dataplane {
        check_name(name).map_err(|reason| BadName { what: "caller dataplane", value: name.clone(), reason })?;
        path += &format!("&callerDataplane={}", query_value(name));
    }
    if let Some(inbound) = &args.inbound {
        path += &format!("&inbound={}", query_value(inbound));
    }
    let answer = client.get_json(&path).await?;
    println!("{}", answer["explanation"].as_str().unwrap_or("?"));
    if let Some(selectors) = answer["dependsOnCallerTags"].as_array().filter(|s| !s.is_empty()) {
        let list: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
        println!(
            "  (decided without the caller's tags, as a proxy does before it knows them: it depends on {}; \
             name a dataplane with --caller-dataplane for its exact answer)",
            list.join(", ")
        );
    }
    Ok(())
}

/// API path of the question "may `caller`'s proxy reach the MeshExternalService `name`?".
fn external_authorization_path(mesh: &str, name: &str, caller: &str) -> Result<String, BadName> {
    let path = api_path(&[
        Segment::Fixed("meshes"),
        Segment::Name { what: "mesh", value: mesh },
        Segment::Fixed("meshexternalservices"),
        Segment::Name { what: "meshexternalservice", value: name },
        Segment::Fixed("_authorization"),
    ])?;
    Ok(format!("{path}?caller={}", query_value(caller)))
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
