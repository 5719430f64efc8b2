//! `ward demo --check`: the marketplace tour must match on every row.

mod common;

use std::process::{Command, Output};

/// Runs `ward demo ARGS` with a port base whose ports are free, retrying when one is busy.
/// Bases lie below the ephemeral range (32768 and up), where other tests' connections and
/// listeners come and go.
fn demo(args: &[&str]) -> Output {
    for attempt in 0..20u16 {
        let base = 10_000 + (std::process::id() as u16 % 200 + attempt * 997) % 20_000;
        let out = Command::new(common::WARD).args(args).args(["--port-base", &base.to_string()]).output().unwrap();
        if !String::from_utf8_lossy(&out.stderr).contains("is busy") {
            return out;
        }
    }
    panic!("no free port range for the demo after 5 tries");
}

#[test]
fn demo_check_matches_every_row() {
    let out = demo(&["demo", "--check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains("  ok  ")).collect();
    assert_eq!(rows.len(), 17, "{stdout}");
    let no_key = stdout.lines().find(|l| l.contains("GET /users, no key")).expect("a row without the key");
    assert!(
        no_key
            .split_whitespace()
            .collect::<Vec<_>>()
            .ends_with(&["401", "401", "ok", "No", "API", "key", "found", "in", "request"]),
        "{no_key}"
    );
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    assert!(stdout.contains("invoice for Ada Lovelace built from users and items"), "{stdout}");
    assert!(stdout.contains("every row matched"), "{stdout}");
    for progress in [
        "control plane is up",
        "the proxy has its certificate (spiffe://marketplace/items)",
        "gateway: has its certificate (spiffe://marketplace/edge-gateway)",
        "[6/6] touring",
    ] {
        assert!(stderr.contains(progress), "progress is shown ({progress}): {stderr}");
    }
}

#[test]
fn demo_names_a_busy_port() {
    for attempt in 0..20u16 {
        let base = 30_000 - (std::process::id() as u16 % 200 + attempt * 991) % 19_000;
        // The control plane's API is base + 681; hold it.
        let Ok(busy) = std::net::TcpListener::bind(("127.0.0.1", base + 681)) else { continue };
        let out =
            Command::new(common::WARD).args(["demo", "--check", "--port-base", &base.to_string()]).output().unwrap();
        drop(busy);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        if !stderr.contains(&format!("port {} (control plane API) is busy", base + 681)) {
            continue; // another port of the range was busy first
        }
        assert!(stderr.contains("--port-base"), "{stderr}");
        return;
    }
    panic!("no port range where only the held port was busy");
}
