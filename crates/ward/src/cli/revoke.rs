//! `ward revoke dataplane-token JTI`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use crate::client::Client;

/// `ward revoke ...`.
#[derive(Debug, Subcommand)]
pub enum RevokeCommand {
    /// Revoke a dataplane token by its ID (printed by `ward generate dataplane-token`); the proxy
    /// using it is disconnected and gets no more certificates.
    DataplaneToken {
        /// The token's ID (its `jti` claim).
        jti: String,
    },
}

/// Runs `ward revoke ...`.
pub async fn run(client: &Client, command: RevokeCommand) -> anyhow::Result<()> {
    let RevokeCommand::DataplaneToken { jti } = command;
    let reply = client.send(Method::POST, "/tokens/dataplane/revocations", Some(&json!({ "jti": jti }))).await?;
    let answer: serde_json::Value = serde_json::from_str(&reply.body)?;
    if answer["alreadyRevoked"] == true {
        println!("dataplane token {jti} was already revoked");
    } else {
        println!("dataplane token {jti} revoked");
    }
    Ok(())
}
