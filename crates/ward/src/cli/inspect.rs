//! `ward inspect dataplane NAME -m MESH`.

use clap::Subcommand;

use crate::client::{Client, Segment, api_path};

/// `ward inspect ...`.
#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// A dataplane's connection and the certificates it holds, one per identity; with
    /// `--rules`, the merged policies of its inbounds and outbounds instead.
    Dataplane {
        /// The dataplane.
        name: String,
        /// Its mesh.
        #[arg(short, long, default_value = "default")]
        mesh: String,
        /// Show each policy kind's merged configuration per inbound and outbound, and the
        /// policies it came from.
        #[arg(long)]
        rules: bool,
    },
}

/// Runs `ward inspect ...`.
pub async fn run(client: &Client, command: InspectCommand) -> anyhow::Result<()> {
    let InspectCommand::Dataplane { name, mesh, rules } = command;
    let path = |last: &'static str| {
        api_path(&[
            Segment::Fixed("meshes"),
            Segment::Name { what: "mesh", value: &mesh },
            Segment::Fixed("dataplanes"),
            Segment::Name { what: "dataplane", value: &name },
            Segment::Fixed(last),
        ])
    };
    if rules {
        let shown = client.get_json(&path("_rules")?).await?;
        print_rules(&mesh, &name, &shown["rules"]);
        return Ok(());
    }
    let path = path("_overview")?;
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

/// Prints each inbound's and outbound's merged policies, as `kumactl inspect dataplane
/// --type=rules` lists them: the place, then per kind the policies applied and the result.
fn print_rules(mesh: &str, name: &str, rules: &serde_json::Value) {
    println!("dataplane: {mesh}/{name}");
    let list = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
    let policies = |place: &serde_json::Value| {
        let kinds = place["policies"].as_object().cloned().unwrap_or_default();
        if kinds.is_empty() {
            println!("  (no policy)");
        }
        for (kind, merged) in kinds {
            let origins: Vec<String> =
                list(&merged["origins"]).iter().filter_map(|o| o.as_str().map(String::from)).collect();
            println!("  {kind} (from {}):", origins.join(", "));
            let conf = serde_json::to_string_pretty(&merged["conf"]).unwrap_or_default();
            for line in conf.lines() {
                println!("    {line}");
            }
        }
    };
    for inbound in list(&rules["inbounds"]) {
        let label = inbound["name"].as_str().map(|n| format!(" ({n})")).unwrap_or_default();
        println!("inbound :{}{label}", inbound["port"]);
        policies(&inbound);
    }
    for outbound in list(&rules["outbounds"]) {
        let d = &outbound["destination"];
        println!("outbound {} {}", d["kind"].as_str().unwrap_or("-"), d["key"].as_str().unwrap_or("-"));
        policies(&outbound);
    }
}
