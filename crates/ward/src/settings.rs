//! Where the CLI finds the control plane: flags, then environment, then the config file.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::PathBuf,
};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::{Deserialize, Serialize};

/// Address used when nothing else names one.
pub const DEFAULT_CP_ADDRESS: &str = "http://127.0.0.1:5681";

/// `ward config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Save the control plane's address and token in ~/.config/ward/config.yaml.
    SetCp {
        /// API address, e.g. http://127.0.0.1:5681.
        #[arg(long)]
        address: String,
        /// Bearer token (e.g. the content of <data-dir>/admin-token).
        #[arg(long)]
        token: String,
    },
    /// Print the configuration in force (the token shortened).
    View,
}

/// The configuration file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cp_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_token: Option<String>,
}

fn config_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set: cannot find ~/.config/ward")?)
            .join(".config"),
    };
    Ok(base.join("ward").join("config.yaml"))
}

fn load() -> anyhow::Result<ConfigFile> {
    let path = config_path()?;
    match fs::read_to_string(&path) {
        Ok(text) if text.trim().is_empty() => Ok(ConfigFile::default()),
        Ok(text) => {
            serde_saphyr::from_str(&text).with_context(|| format!("{}: not a valid Ward CLI config", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The address and token a command talks to.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Base URL of the API.
    pub address: String,
    /// Bearer token, if any.
    pub token: Option<String>,
}

impl Connection {
    /// Flags and environment first, then the config file, then the default address.
    pub fn resolve(address: Option<String>, token: Option<String>) -> anyhow::Result<Self> {
        let file = load()?;
        let address = address.or(file.cp_address).unwrap_or_else(|| DEFAULT_CP_ADDRESS.into());
        Ok(Connection { address: normalize_address(&address)?, token: token.or(file.api_token) })
    }
}

/// Adds `http://` to a bare `host:port` and refuses anything that is not an http(s) URL with a host.
fn normalize_address(address: &str) -> anyhow::Result<String> {
    let address = address.trim();
    let url = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    let parsed = reqwest::Url::parse(&url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()));
    if parsed.is_none() {
        bail!("--cp-address {address:?}: must be an http:// or https:// URL such as {DEFAULT_CP_ADDRESS}");
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Runs `ward config ...`.
pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::SetCp { address, token } => {
            let address = normalize_address(&address)?;
            if token.trim().is_empty() {
                bail!("--token: must not be empty");
            }
            let path = config_path()?;
            let dir = path.parent().expect("config path has a parent");
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            let text = serde_saphyr::to_string(&ConfigFile {
                cp_address: Some(address.clone()),
                api_token: Some(token.trim().into()),
            })?;
            let tmp = path.with_extension("tmp");
            let _ = fs::remove_file(&tmp);
            let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            file.write_all(text.as_bytes())?;
            fs::rename(&tmp, &path)?;
            println!("saved control plane {address} in {}", path.display());
            Ok(())
        }
        ConfigCommand::View => {
            let connection = Connection::resolve(None, None)?;
            let token =
                connection.token.as_deref().map_or("(none)".to_string(), |t| format!("{}...", &t[..t.len().min(12)]));
            println!(
                "config file: {}\ncp address: {}\napi token:  {token}",
                config_path()?.display(),
                connection.address
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(normalize_address("127.0.0.1:5681").unwrap(), "http://127.0.0.1:5681");
        assert_eq!(normalize_address("https://cp.example:5682/").unwrap(), "https://cp.example:5682");
        assert!(normalize_address("ftp://x").is_err());
        assert!(normalize_address("http://").is_err());
    }
}
