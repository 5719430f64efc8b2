//! `ward generate user-token` and `ward generate dataplane-token`.

use anyhow::bail;
use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::json;

use ward_api::dataplane::SERVICE_TAG;

use crate::client::Client;

/// Role of a user token.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Read and write.
    Admin,
    /// Read only.
    Viewer,
}

/// `ward generate ...`.
#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Issue an API token (needs an admin token).
    UserToken {
        /// Name recorded in the audit log.
        #[arg(long)]
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Limit the token to these meshes (repeatable); default: every mesh.
        #[arg(long = "mesh")]
        meshes: Vec<String>,
        /// Lifetime, e.g. 24h, 30d.
        #[arg(long, default_value = "24h")]
        valid_for: String,
    },
    /// Issue the token a proxy needs to join a mesh as its services (needs an admin token).
    DataplaneToken {
        /// Mesh the dataplane joins.
        #[arg(short, long)]
        mesh: String,
        /// Name of the dataplane (its Dataplane resource's name).
        #[arg(long)]
        name: String,
        /// The identities granted, as `kuma.io/service=SERVICE` or, for a dataplane whose
        /// inbounds serve several, `kuma.io/service=A,B`.
        #[arg(long)]
        tag: String,
        /// Lifetime, e.g. 720h.
        #[arg(long, default_value = "720h")]
        valid_for: String,
    },
}

/// Runs `ward generate ...` and prints the token.
pub async fn run(client: &Client, command: GenerateCommand) -> anyhow::Result<()> {
    let (path, body) = match command {
        GenerateCommand::UserToken { name, role, meshes, valid_for } => {
            let role = match role {
                RoleArg::Admin => "admin",
                RoleArg::Viewer => "viewer",
            };
            let meshes = (!meshes.is_empty()).then_some(meshes);
            ("/tokens/user", json!({ "name": name, "role": role, "meshes": meshes, "validFor": valid_for }))
        }
        GenerateCommand::DataplaneToken { mesh, name, tag, valid_for } => {
            let services: Vec<&str> = match tag.split_once('=') {
                Some((SERVICE_TAG, services)) if !services.split(',').any(str::is_empty) => {
                    services.split(',').collect()
                }
                _ => {
                    bail!("--tag {tag:?}: must be {SERVICE_TAG}=SERVICE[,SERVICE...] (the identities the token grants)")
                }
            };
            let body = json!({ "mesh": mesh, "name": name, "tags": { SERVICE_TAG: services }, "validFor": valid_for });
            ("/tokens/dataplane", body)
        }
    };
    let reply = client.send(Method::POST, path, Some(&body)).await?;
    let token = reply.body.trim();
    if let Some(claims) = token_claims(token) {
        let field = |name: &str| claims[name].as_str().map(String::from).unwrap_or_default();
        let expires = claims["exp"].as_i64().and_then(|t| chrono::DateTime::from_timestamp(t, 0));
        let expires = expires.map_or("?".into(), |t| t.to_rfc3339());
        eprintln!("token {} expires {expires}", field("jti"));
    }
    println!("{token}");
    Ok(())
}

/// The claims of a JWT, read without checking it (to tell the user its ID and expiry).
fn token_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    serde_json::from_slice(&payload).ok()
}
