//! `ward apply -f FILE [--dry-run]`: check every document first, then apply them one by one,
//! or with `--dry-run` have the control plane check each as it would apply it, storing nothing.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    path::PathBuf,
};

use anyhow::{Context, bail};
use clap::Args;
use reqwest::{Method, StatusCode};
use ward_api::{Resource, ResourceType, parse};

use super::resource_path;
use crate::client::Client;

/// `ward apply` arguments.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// YAML file of one or more `---` documents; `-` reads standard input.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Have the control plane make every check of the apply and say what would be created or
    /// updated, storing nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Reads and checks every document; nothing is sent when any of them is wrong.
fn load(text: &str) -> Result<Vec<Resource>, Vec<String>> {
    let docs = parse::documents(text).map_err(|e| vec![e.to_string()])?;
    if docs.is_empty() {
        return Err(vec!["input: holds no document".into()]);
    }
    let mut errors = Vec::new();
    let mut resources = Vec::new();
    let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let label = format!("document {}", i + 1);
        match parse::resource(doc, &label) {
            Ok(r) => {
                let key = (r.meta.ty.info().name.to_string(), r.meta.mesh.clone(), r.meta.name.clone());
                if let Some(first) = seen.insert(key, i + 1) {
                    errors.push(format!(
                        "{}: {label} repeats document {first}; each resource may appear once",
                        r.meta.key()
                    ));
                }
                resources.push(r);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() { Ok(resources) } else { Err(errors) }
}

/// Runs `ward apply`.
pub async fn run(client: &Client, args: ApplyArgs) -> anyhow::Result<()> {
    let text = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
        text
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("-f {}", args.file.display()))?
    };
    let mut resources = match load(&text) {
        Ok(r) => r,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!("{} error(s) in {}; nothing was applied", errors.len(), args.file.display());
        }
    };
    // Meshes first, so that a file may define a mesh and what goes in it in any order.
    resources.sort_by_key(|r| r.meta.ty);
    if args.dry_run {
        return dry_run(client, &resources).await;
    }
    let total = resources.len();
    for (done, resource) in resources.iter().enumerate() {
        let meta = &resource.meta;
        let path = resource_path(meta.ty, &meta.mesh, &meta.name)?;
        match client.send(Method::PUT, &path, Some(&resource.to_json())).await {
            Ok(reply) => {
                println!("{} {}", describe(resource), verb(reply.status));
                print_warnings(resource, &reply.warnings);
            }
            Err(e) => bail!("{e:#}\n{done} of {total} resources applied; stopped at {}", meta.key()),
        }
    }
    Ok(())
}

/// Sends each resource with `?dryRun=true` and reports every refusal. What goes into a mesh
/// the same run would create cannot be checked by the control plane, which has no such mesh
/// yet: it is checked here only, and says so.
async fn dry_run(client: &Client, resources: &[Resource]) -> anyhow::Result<()> {
    let mut new_meshes = HashSet::new();
    let mut refused = 0;
    for resource in resources {
        let meta = &resource.meta;
        if meta.ty.is_mesh_scoped() && new_meshes.contains(&meta.mesh) {
            println!("{} created (dry run; checked without the control plane: the mesh is new)", describe(resource));
            continue;
        }
        let path = format!("{}?dryRun=true", resource_path(meta.ty, &meta.mesh, &meta.name)?);
        match client.send(Method::PUT, &path, Some(&resource.to_json())).await {
            Ok(reply) => {
                if meta.ty == ResourceType::Mesh && reply.status == StatusCode::CREATED {
                    new_meshes.insert(meta.name.clone());
                }
                println!("{} {} (dry run)", describe(resource), verb(reply.status));
                print_warnings(resource, &reply.warnings);
            }
            Err(e) => {
                refused += 1;
                eprintln!("{e:#}");
            }
        }
    }
    if refused > 0 {
        bail!("dry run: {refused} of {} resources would be refused; nothing was applied", resources.len());
    }
    Ok(())
}

/// `Type name` or `Type name in mesh M`, as apply reports it.
fn describe(resource: &Resource) -> String {
    let meta = &resource.meta;
    let place = if meta.ty.is_mesh_scoped() { format!(" in mesh {}", meta.mesh) } else { String::new() };
    format!("{} {}{place}", meta.ty.info().name, meta.name)
}

/// One line on stderr per field the control plane accepted without effect.
fn print_warnings(resource: &Resource, warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {}/{}: {warning}", resource.meta.ty.info().name, resource.meta.name);
    }
}

fn verb(status: StatusCode) -> &'static str {
    if status == StatusCode::CREATED { "created" } else { "updated" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_all_errors_are_reported_before_anything_is_sent() {
        let errors = load("type: Mesh\nname: a\n---\ntype: Mesh\nname: a\n---\ntype: Bogus\nname: b\n").unwrap_err();
        assert_eq!(
            errors,
            [
                "meshes/a: document 2 repeats document 1; each resource may appear once",
                "document 3: type: must be one of Mesh, Dataplane, MeshTrafficPermission, TrafficPermission, MeshService, MeshExternalService, MeshTimeout, MeshRetry, MeshCircuitBreaker, MeshFaultInjection, MeshRateLimit, MeshIdentity, MeshTrust, MeshHealthCheck, MeshLoadBalancingStrategy, MeshHTTPRoute, MeshTCPRoute, MeshOPA, Secret, GlobalSecret"
            ]
        );
        assert_eq!(load("").unwrap_err(), ["input: holds no document"]);
    }
}
