//! `ward apply -f FILE`: check every document first, then apply them one by one.

use std::{collections::HashMap, io::Read, path::PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use reqwest::{Method, StatusCode};
use ward_api::{Resource, parse};

use super::resource_path;
use crate::client::Client;

/// `ward apply` arguments.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// YAML file of one or more `---` documents; `-` reads standard input.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
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
    let total = resources.len();
    for (done, resource) in resources.iter().enumerate() {
        let meta = &resource.meta;
        let path = resource_path(meta.ty, &meta.mesh, &meta.name)?;
        match client.send(Method::PUT, &path, Some(&resource.to_json())).await {
            Ok(reply) => {
                let verb = if reply.status == StatusCode::CREATED { "created" } else { "updated" };
                let place = if meta.ty.is_mesh_scoped() { format!(" in mesh {}", meta.mesh) } else { String::new() };
                println!("{} {}{place} {verb}", meta.ty.info().name, meta.name);
                for warning in &reply.warnings {
                    eprintln!("warning: {}/{}: {warning}", meta.ty.info().name, meta.name);
                }
            }
            Err(e) => bail!("{e:#}\n{done} of {total} resources applied; stopped at {}", meta.key()),
        }
    }
    Ok(())
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
                "document 3: type: must be one of Mesh, Dataplane, MeshTrafficPermission, TrafficPermission"
            ]
        );
        assert_eq!(load("").unwrap_err(), ["input: holds no document"]);
    }
}
