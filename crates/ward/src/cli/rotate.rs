//! `ward rotate signing-key --mesh M`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use crate::client::Client;

/// `ward rotate ...`.
#[derive(Debug, Subcommand)]
pub enum RotateCommand {
    /// Add a new key that signs the mesh's dataplane tokens from now on; older keys keep
    /// verifying the tokens they signed unless --retire-older is given.
    SigningKey {
        /// The mesh.
        #[arg(short, long)]
        mesh: String,
        /// Remove the older keys too: every token they signed stops working.
        #[arg(long)]
        retire_older: bool,
    },
}

/// Runs `ward rotate ...`.
pub async fn run(client: &Client, command: RotateCommand) -> anyhow::Result<()> {
    let RotateCommand::SigningKey { mesh, retire_older } = command;
    let path = super::mesh_path(&mesh, "signing-keys")?;
    let reply = client.send(Method::POST, &path, Some(&json!({ "retireOlder": retire_older }))).await?;
    let answer: serde_json::Value = serde_json::from_str(&reply.body)?;
    let kid = answer["kid"].as_str().unwrap_or("?");
    let older = if retire_older { "older keys retired" } else { "older keys still verify their tokens" };
    println!("mesh {mesh}: new signing key {kid} signs new dataplane tokens; {older}");
    Ok(())
}
