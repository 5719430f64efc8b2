//! The marketplace of DESIGN.md on loopback: the control plane, the three services as echo
//! applications, each behind its own `ward dp run`, plus an `edge-gateway` member standing in
//! for the gateway. The Mesh and permissions are the example's; each Dataplane is the
//! example's with free ports and an outbound to every service, so every pair can be tried.

use std::{collections::HashMap, path::Path};

use serde_json::{Value, json};

use super::{ControlPlane, MARKETPLACE, apps, free_port, mesh::Proxy};

/// The services whose dataplanes the example defines.
pub const SERVICES: [&str; 3] = ["users", "items", "invoices"];
/// Every member that calls: the services and the gateway.
pub const CALLERS: [&str; 4] = ["users", "items", "invoices", "edge-gateway"];
/// Who may call whom, by DESIGN.md.
pub const ALLOWED: [(&str, &str); 6] = [
    ("invoices", "users"),
    ("invoices", "items"),
    ("users", "invoices"),
    ("edge-gateway", "users"),
    ("edge-gateway", "items"),
    ("edge-gateway", "invoices"),
];

/// A running marketplace.
pub struct Marketplace {
    /// The control plane.
    pub cp: ControlPlane,
    /// Each member's proxy.
    pub proxies: HashMap<&'static str, Proxy>,
    /// The local port through which `caller` reaches `service`.
    pub outbound: HashMap<(&'static str, &'static str), u16>,
    /// Each service's inbound port (mTLS).
    pub inbound: HashMap<&'static str, u16>,
    /// The applications, kept running.
    pub apps: Vec<apps::App>,
}

/// The example's documents other than Dataplanes, with `mesh_override` replacing the Mesh when given.
pub fn policies(mesh_override: Option<&str>) -> String {
    let docs = ward_api::parse::documents(MARKETPLACE).unwrap();
    let mut out = String::new();
    for doc in docs {
        match doc["type"].as_str() {
            Some("Dataplane") => continue,
            Some("Mesh") if mesh_override.is_some() => out += mesh_override.unwrap(),
            _ => out += &doc.to_string(),
        }
        out += "\n---\n";
    }
    out
}

/// The example's Dataplane of `service` (or a gateway member), with `inbound`/`app` ports and
/// an outbound per service at the given ports.
pub fn dataplane(service: &str, inbound: u16, app: u16, outbounds: &[(&str, u16)]) -> String {
    let docs = ward_api::parse::documents(MARKETPLACE).unwrap();
    let mut dp = docs
        .into_iter()
        .find(|d| d["type"] == "Dataplane" && d["networking"]["inbound"][0]["tags"]["kuma.io/service"] == service)
        .unwrap_or_else(|| {
            json!({"type": "Dataplane", "mesh": "marketplace", "name": format!("{service}-1"), "networking": {
                "address": "127.0.0.1", "inbound": [{"port": 0, "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"}}]}})
        });
    dp["networking"]["inbound"][0]["port"] = inbound.into();
    dp["networking"]["inbound"][0]["servicePort"] = app.into();
    dp["networking"]["outbound"] =
        Value::Array(outbounds.iter().map(|(s, p)| json!({"port": p, "tags": {"kuma.io/service": s}})).collect());
    dp.to_string()
}

impl Marketplace {
    /// Starts everything under `root`; `mesh_override` replaces the example's Mesh.
    pub async fn start(root: &Path, mesh_override: Option<&str>, proxy_args: &[&str]) -> Marketplace {
        let cp = ControlPlane::start(root);
        cp.apply(&policies(mesh_override));
        let mut outbound = HashMap::new();
        let mut inbound = HashMap::new();
        let mut apps = Vec::new();
        let mut proxies = HashMap::new();
        for caller in CALLERS {
            let outbounds: Vec<(&str, u16)> = SERVICES.iter().map(|s| (*s, free_port())).collect();
            for (s, p) in &outbounds {
                outbound.insert((caller, SERVICES.iter().find(|x| *x == s).copied().unwrap()), *p);
            }
            let (inbound_port, app_port) = (free_port(), free_port());
            inbound.insert(caller, inbound_port);
            apps.push(apps::http_echo(([127, 0, 0, 1], app_port).into(), caller).await);
            let yaml = dataplane(caller, inbound_port, app_port, &outbounds);
            let proxy = cp.spawn_proxy(root, &format!("{caller}-1"), &yaml, proxy_args);
            proxies.insert(caller, proxy);
        }
        for proxy in proxies.values() {
            tokio::task::block_in_place(|| proxy.wait_ready());
        }
        Marketplace { cp, proxies, outbound, inbound, apps }
    }

    /// GET `path` from `caller` to `service` through `caller`'s outbound: status and body.
    pub async fn call(&self, caller: &str, service: &str, path: &str) -> (u16, String) {
        let port = self.outbound.iter().find(|((c, s), _)| *c == caller && *s == service).map(|(_, p)| *p).unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        match client.get(format!("http://127.0.0.1:{port}{path}")).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    }
}
