//! A `ward cp run` process of the benchmark's own, and the REST calls the scenarios make
//! against it (resources, dataplane tokens).

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{Proc, free_port};

/// A running control plane with its own data directory.
pub struct ControlPlane {
    /// The process.
    pub proc: Proc,
    /// Its data directory (holds `cp-ca.pem`, the discovery server's CA).
    pub data_dir: PathBuf,
    /// `http://127.0.0.1:PORT` of the REST API.
    pub api: String,
    /// Address of the discovery server.
    pub dp_ip: IpAddr,
    /// Port of the discovery server.
    pub dp_port: u16,
    /// The admin token it wrote on first start.
    pub admin_token: String,
    client: reqwest::Client,
    log: PathBuf,
}

impl ControlPlane {
    /// Starts `ward cp run` under `root` on the cores `cpus`, and waits until its API answers.
    pub fn start(ward: &Path, root: &Path, cpus: Option<&str>) -> anyhow::Result<Self> {
        Self::start_on(ward, root, cpus, Ipv4Addr::LOCALHOST.into())
    }

    /// Like [`ControlPlane::start`], with the discovery server on `dp_ip` (in the calling
    /// thread's network namespace), where proxies of other hosts can reach it.
    pub fn start_on(ward: &Path, root: &Path, cpus: Option<&str>, dp_ip: IpAddr) -> anyhow::Result<Self> {
        let data_dir = root.join("cp-data");
        let (api_port, dp_port) = (free_port()?, free_port()?);
        let log = root.join("cp.log");
        let args = [
            "cp",
            "run",
            "--data-dir",
            data_dir.to_str().context("UTF-8 path")?,
            "--api-address",
            &format!("127.0.0.1:{api_port}"),
            "--dp-server-address",
            &std::net::SocketAddr::new(dp_ip, dp_port).to_string(),
        ];
        let mut proc = Proc::spawn_on(cpus, ward, &args, &[("WARD_LOG", "warn")], &log)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let token_file = data_dir.join("admin-token");
        let admin_token = loop {
            proc.check_alive(&log)?;
            if let Ok(token) = std::fs::read_to_string(&token_file)
                && std::net::TcpStream::connect(("127.0.0.1", api_port)).is_ok()
                && std::net::TcpStream::connect((dp_ip, dp_port)).is_ok()
            {
                break token.trim().to_string();
            }
            if Instant::now() > deadline {
                bail!("control plane not ready after 30s: see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build()?;
        Ok(ControlPlane {
            proc,
            data_dir,
            api: format!("http://127.0.0.1:{api_port}"),
            dp_ip,
            dp_port,
            admin_token,
            client,
            log,
        })
    }

    /// The CA of the discovery server, PEM.
    pub fn ca_pem(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.data_dir.join("cp-ca.pem"))?)
    }

    /// `https://IP:PORT` of the discovery server.
    pub fn dp_address(&self) -> String {
        format!("https://{}", std::net::SocketAddr::new(self.dp_ip, self.dp_port))
    }

    /// Where the control plane logs.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// PUTs a resource (Kuma Universal JSON) at its path: `/meshes/NAME` or `/meshes/MESH/TYPE/NAME`.
    pub async fn put(&self, resource: &Value) -> anyhow::Result<()> {
        let (ty, name) = (resource["type"].as_str().context("type")?, resource["name"].as_str().context("name")?);
        let path = match ty {
            "Mesh" => format!("/meshes/{name}"),
            _ => {
                let mesh = resource["mesh"].as_str().context("mesh")?;
                format!("/meshes/{mesh}/{}s/{name}", ty.to_ascii_lowercase())
            }
        };
        let response =
            self.client.put(format!("{}{path}", self.api)).bearer_auth(&self.admin_token).json(resource).send().await?;
        if !response.status().is_success() {
            bail!("PUT {path}: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// A dataplane token for the Dataplane `name` of `service` in `mesh`.
    pub async fn dataplane_token(&self, mesh: &str, name: &str, service: &str) -> anyhow::Result<String> {
        let body =
            serde_json::json!({"mesh": mesh, "name": name, "tags": {"kuma.io/service": [service]}, "validFor": "24h"});
        let response = self
            .client
            .post(format!("{}/tokens/dataplane", self.api))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("POST /tokens/dataplane: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
        Ok(response.text().await?.trim().to_string())
    }
}

/// Mesh `mesh` with builtin mTLS (STRICT) and no passthrough, and a MeshTrafficPermission
/// letting service `client` call service `server`: the data-plane scenarios' mesh.
pub fn client_server_mesh(mesh: &str) -> Vec<Value> {
    vec![
        serde_json::json!({"type": "Mesh", "name": mesh, "mtls": {"enabledBackend": "ca-1", "backends": [
            {"name": "ca-1", "type": "builtin", "mode": "STRICT", "dpCert": {"rotation": {"expiration": "24h"}}}]},
            "networking": {"outbound": {"passthrough": false}}}),
        serde_json::json!({"type": "MeshTrafficPermission", "mesh": mesh, "name": "client-to-server", "spec": {
            "targetRef": {"kind": "MeshService", "name": "server"},
            "from": [{"targetRef": {"kind": "MeshService", "name": "client"}, "default": {"action": "Allow"}}]}}),
    ]
}

/// A Dataplane in Kuma Universal JSON: one HTTP inbound of `service` on `address:inbound`
/// (application on `app`), and an outbound per `(service, port)`.
pub fn dataplane(
    mesh: &str,
    name: &str,
    service: &str,
    address: &str,
    inbound: u16,
    app: u16,
    outbounds: &[(&str, u16)],
) -> Value {
    let outbound: Vec<Value> =
        outbounds.iter().map(|(s, p)| serde_json::json!({"port": p, "tags": {"kuma.io/service": s}})).collect();
    serde_json::json!({"type": "Dataplane", "mesh": mesh, "name": name, "networking": {
        "address": address,
        "inbound": [{"port": inbound, "servicePort": app, "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"}}],
        "outbound": outbound}})
}
