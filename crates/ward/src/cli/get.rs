//! `ward get TYPE [NAME] [-m MESH] [-o table|yaml|json] [--show-data]`.

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde_json::Value;
use ward_api::ResourceType;

use super::{mesh_path, parse_type, resource_path};
use crate::client::Client;

/// Output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    /// Columns for people.
    Table,
    /// Kuma Universal YAML, ready to apply again.
    Yaml,
    /// JSON as the API returns it.
    Json,
}

/// `ward get` arguments.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Resource type, e.g. meshes, dataplanes, meshtrafficpermissions, traffic-permissions, secrets.
    #[arg(value_name = "TYPE")]
    ty: String,
    /// One resource by name; all of them when absent.
    name: Option<String>,
    /// Mesh to look in.
    #[arg(short, long, default_value = "default")]
    mesh: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
    /// With NAME and -o yaml or json: include a Secret's or GlobalSecret's data (admins only;
    /// the control plane's audit log records it).
    #[arg(long)]
    show_data: bool,
}

/// Runs `ward get`.
pub async fn run(client: &Client, args: GetArgs) -> anyhow::Result<()> {
    let ty = parse_type(&args.ty)?;
    if args.show_data {
        if !ty.is_secret() {
            bail!("--show-data: {} have no data; only secrets and global-secrets do", ty.info().plural);
        }
        if args.name.is_none() || matches!(args.output, Output::Table) {
            bail!("--show-data needs a NAME and -o yaml or -o json");
        }
    }
    let items = match &args.name {
        Some(name) => {
            let path = resource_path(ty, &args.mesh, name)?;
            let path = if args.show_data { format!("{path}?showData=true") } else { path };
            vec![client.get_json(&path).await?]
        }
        None => list_all(client, ty, &args.mesh).await?,
    };
    match args.output {
        Output::Json if args.name.is_some() => println!("{}", serde_json::to_string_pretty(&items[0])?),
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "total": items.len(), "items": items }))?)
        }
        Output::Yaml => print!("{}", serde_saphyr::to_string_multiple(&items)?),
        Output::Table if ty == ResourceType::Mesh => print!("{}", table(ty, &with_enabled_ca(client, items).await?)),
        Output::Table => print!("{}", table(ty, &items)),
    }
    Ok(())
}

/// Adds to each Mesh, as `_ca`, the enabled backend's CA (fingerprint and expiry) for the table.
async fn with_enabled_ca(client: &Client, mut meshes: Vec<Value>) -> anyhow::Result<Vec<Value>> {
    for mesh in &mut meshes {
        let name = mesh["name"].as_str().unwrap_or_default().to_string();
        let cas = client.get_json(&mesh_path(&name, "_cas")?).await?;
        let enabled = cas["backends"].as_array().into_iter().flatten().find(|b| b["enabled"] == true).cloned();
        mesh["_ca"] = enabled.unwrap_or(Value::Null);
    }
    Ok(meshes)
}

async fn list_all(client: &Client, ty: ResourceType, mesh: &str) -> anyhow::Result<Vec<Value>> {
    let mut path = if ty.is_mesh_scoped() {
        format!("{}?size=1000", mesh_path(mesh, ty.info().plural)?)
    } else {
        format!("/{}?size=1000", ty.info().plural)
    };
    let mut items = Vec::new();
    loop {
        let page = client.get_json(&path).await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => path = next.to_string(),
            None => return Ok(items),
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn target(value: &Value) -> String {
    match (value["kind"].as_str(), value["name"].as_str()) {
        (None, _) => "Mesh".into(),
        (Some(kind), Some(name)) => format!("{kind}/{name}"),
        (Some(kind), None) => {
            let tags = value.get("tags").or_else(|| value.get("labels")).map(text).unwrap_or_default();
            if tags.is_empty() { kind.to_string() } else { format!("{kind}{tags}") }
        }
    }
}

/// A table's header and the function that makes one row's cells.
type Columns = (&'static [&'static str], fn(&Value) -> Vec<String>);

/// Columns per type, and each row's cells.
fn table(ty: ResourceType, items: &[Value]) -> String {
    let (header, row): Columns = match ty {
        ResourceType::Mesh => (&["NAME", "MTLS", "BACKENDS", "CA FINGERPRINT (SHA-256)", "CA EXPIRES", "AGE"], |v| {
            let mtls = &v["mtls"];
            let backends: Vec<String> = mtls["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| format!("{}({})", text(&b["name"]), text(&b["type"])))
                .collect();
            let ca = &v["_ca"];
            let fingerprint = ca["fingerprintSha256"].as_str().map_or("-".into(), |f| f.chars().take(16).collect());
            let expires = ca["notAfter"].as_str().map_or("-".into(), |t| t.chars().take(10).collect());
            let enabled = mtls["enabledBackend"].as_str().unwrap_or("off").into();
            vec![text(&v["name"]), enabled, backends.join(","), fingerprint, expires, age(v)]
        }),
        ResourceType::Dataplane => (&["MESH", "NAME", "SERVICE", "ADDRESS", "INBOUND PORTS", "AGE"], |v| {
            let net = &v["networking"];
            let inbound = net["inbound"].as_array().cloned().unwrap_or_default();
            let ports: Vec<String> = inbound.iter().map(|i| text(&i["port"])).collect();
            let service = inbound.first().map(|i| text(&i["tags"]["kuma.io/service"])).unwrap_or_default();
            vec![text(&v["mesh"]), text(&v["name"]), service, text(&net["address"]), ports.join(","), age(v)]
        }),
        ResourceType::MeshTrafficPermission => (&["MESH", "NAME", "TARGET", "FROM", "AGE"], |v| {
            let spec = &v["spec"];
            let from: Vec<String> = match spec["from"].as_array() {
                Some(list) => list
                    .iter()
                    .map(|f| format!("{}:{}", target(&f["targetRef"]), text(&f["default"]["action"])))
                    .collect(),
                None => vec![format!("{} SPIFFE rule(s)", spec["rules"].as_array().map_or(0, Vec::len))],
            };
            vec![text(&v["mesh"]), text(&v["name"]), target(&spec["targetRef"]), from.join(" "), age(v)]
        }),
        ResourceType::TrafficPermission => (&["MESH", "NAME", "SOURCES", "DESTINATIONS", "AGE"], |v| {
            let services = |list: &Value| -> String {
                list.as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| text(&s["match"]["kuma.io/service"]))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![text(&v["mesh"]), text(&v["name"]), services(&v["sources"]), services(&v["destinations"]), age(v)]
        }),
        ResourceType::MeshService => (&["MESH", "NAME", "PORTS", "VIP", "PROXIES", "STATE", "AGE"], |v| {
            let spec = &v["spec"];
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{}/{}", p["port"], p["appProtocol"].as_str().unwrap_or("tcp")))
                .collect();
            let status = &v["status"];
            let proxies = &status["dataplaneProxies"];
            vec![
                text(&v["mesh"]),
                text(&v["name"]),
                ports.join(","),
                text(&status["vips"][0]["ip"]),
                format!("{}/{}", proxies["healthy"].as_u64().unwrap_or(0), proxies["total"].as_u64().unwrap_or(0)),
                text(&status["state"]),
                age(v),
            ]
        }),
        ResourceType::MeshRetry
        | ResourceType::MeshCircuitBreaker
        | ResourceType::MeshHealthCheck
        | ResourceType::MeshLoadBalancingStrategy
        | ResourceType::MeshHTTPRoute
        | ResourceType::MeshTCPRoute => (&["MESH", "NAME", "TARGETREF", "TO", "AGE"], |v| {
            let spec = &v["spec"];
            let to: Vec<String> =
                spec["to"].as_array().into_iter().flatten().map(|t| target(&t["targetRef"])).collect();
            vec![text(&v["mesh"]), text(&v["name"]), target(&spec["targetRef"]), to.join(" "), age(v)]
        }),
        ResourceType::MeshTimeout => (&["MESH", "NAME", "TARGETREF", "TO", "INBOUND", "AGE"], |v| {
            let spec = &v["spec"];
            let to: Vec<String> =
                spec["to"].as_array().into_iter().flatten().map(|t| target(&t["targetRef"])).collect();
            let count = |field: &str| spec[field].as_array().map_or(0, Vec::len);
            let inbound = format!("{} from, {} rules", count("from"), count("rules"));
            vec![text(&v["mesh"]), text(&v["name"]), target(&spec["targetRef"]), to.join(" "), inbound, age(v)]
        }),
        ResourceType::MeshFaultInjection | ResourceType::MeshRateLimit => {
            (&["MESH", "NAME", "TARGETREF", "INBOUND", "AGE"], |v| {
                let spec = &v["spec"];
                let count = |field: &str| spec[field].as_array().map_or(0, Vec::len);
                let inbound = format!("{} from, {} rules", count("from"), count("rules"));
                vec![text(&v["mesh"]), text(&v["name"]), target(&spec["targetRef"]), inbound, age(v)]
            })
        }
        ResourceType::MeshOPA => (&["MESH", "NAME", "TARGETREF", "POLICIES", "AGE"], |v| {
            let policies = v["spec"]["default"]["appendPolicies"].as_array().map_or(0, Vec::len);
            vec![text(&v["mesh"]), text(&v["name"]), target(&v["spec"]["targetRef"]), policies.to_string(), age(v)]
        }),
        ResourceType::MeshExternalService => (&["MESH", "NAME", "MATCH", "HOSTNAME", "VIP", "TLS", "AGE"], |v| {
            let spec = &v["spec"];
            let status = &v["status"];
            let tls = if spec["tls"]["enabled"] == true { "enabled" } else { "-" };
            vec![
                text(&v["mesh"]),
                text(&v["name"]),
                format!("{}/{}", spec["match"]["port"], spec["match"]["protocol"].as_str().unwrap_or("tcp")),
                text(&status["addresses"][0]["hostname"]),
                text(&status["vip"]["ip"]),
                tls.to_string(),
                age(v),
            ]
        }),
        ResourceType::MeshIdentity => (&["MESH", "NAME", "SELECTOR", "PROVIDER", "AGE"], |v| {
            let spec = &v["spec"];
            let selector = match &spec["selector"]["dataplane"] {
                Value::Null => "-".to_string(),
                dataplane => match dataplane["matchLabels"].as_object() {
                    Some(labels) if !labels.is_empty() => {
                        labels.iter().map(|(k, l)| format!("{k}={}", text(l))).collect::<Vec<_>>().join(",")
                    }
                    _ => "all".to_string(),
                },
            };
            vec![text(&v["mesh"]), text(&v["name"]), selector, text(&spec["provider"]["type"]), age(v)]
        }),
        ResourceType::MeshTrust => (&["MESH", "NAME", "TRUST DOMAIN", "BUNDLES", "AGE"], |v| {
            let spec = &v["spec"];
            let bundles = spec["caBundles"].as_array().map_or(0, Vec::len).to_string();
            vec![text(&v["mesh"]), text(&v["name"]), text(&spec["trustDomain"]), bundles, age(v)]
        }),
        ResourceType::Secret => (&["MESH", "NAME", "AGE"], |v| vec![text(&v["mesh"]), text(&v["name"]), age(v)]),
        ResourceType::GlobalSecret => (&["NAME", "AGE"], |v| vec![text(&v["name"]), age(v)]),
    };
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out += padded.join("   ").trim_end();
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
    out
}

/// How long ago the resource was created, e.g. `5m` or `3d`.
fn age(v: &Value) -> String {
    let Some(created) = v["creationTime"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return "-".into();
    };
    let secs = (chrono::Utc::now() - created.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
