//! `ward dp run` processes of the benchmarks, started and waited for until ready.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{Proc, control_plane::ControlPlane, free_port, process::pinned};

/// Starts `ward dp run` for the Dataplane `dp` on the cores `cpus`, as `uid` when given, in the
/// calling thread's network namespace, and waits until its /ready says 200. Its files go to
/// `dir`, readable by anyone so that another user's proxy can read them.
pub fn start(
    ward: &Path,
    cp: &ControlPlane,
    dir: &Path,
    cpus: Option<&str>,
    uid: Option<u32>,
    dp: &serde_json::Value,
    token: &str,
) -> anyhow::Result<Proc> {
    let name = dp["name"].as_str().context("name")?;
    let file = readable(dir, &format!("{name}.json"), &dp.to_string())?;
    let token_file = readable(dir, &format!("{name}.token"), token)?;
    let ca = readable(dir, "cp-ca.pem", &cp.ca_pem()?)?;
    let admin = free_port()?;
    let mut command = pinned(cpus, ward);
    command
        .args(["dp", "run", "--cp-address", &cp.dp_address(), "--admin-address", &format!("127.0.0.1:{admin}")])
        .arg("--ca-cert")
        .arg(&ca)
        .arg("--dataplane-file")
        .arg(&file)
        .arg("--dataplane-token-file")
        .arg(&token_file)
        .env("WARD_LOG", "warn");
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let log = dir.join(format!("{name}.log"));
    let mut proc = Proc::spawn_command(command, &log)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        proc.check_alive(&log)?;
        if ready(admin) {
            return Ok(proc);
        }
        anyhow::ensure!(Instant::now() < deadline, "{name} not ready after 60s: see {}", log.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `text` to `dir/name` with mode 0644.
fn readable(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    Ok(path)
}

/// Whether the proxy whose admin listener is on 127.0.0.1:`admin` answers /ready with 200.
fn ready(admin: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", admin)) else { return false };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(tcp, "GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}
