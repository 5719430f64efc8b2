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

#[test]
fn the_demo_prints_where_the_admin_token_is_never_the_token() {
    use std::io::BufRead;
    for attempt in 0..20u16 {
        // Below the ephemeral range, as in `demo`.
        let base = 11_000 + (std::process::id() as u16 % 200 + attempt * 983) % 20_000;
        let mut child = Command::new(common::WARD)
            .args(["demo", "--port-base", &base.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Read stdout on a thread, so that a demo that never prints cannot hang the test.
        let (lines, received) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut printed = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !printed.contains("ward delete meshtrafficpermission") {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match received.recv_timeout(left) {
                Ok(line) => printed += &(line + "\n"),
                Err(_) => break,
            }
        }
        let stop =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("is busy") {
            continue;
        }
        assert!(
            stop.is_ok() && printed.contains("ward delete meshtrafficpermission"),
            "stdout:\n{printed}\nstderr:\n{stderr}"
        );
        let path = printed
            .split(|c: char| c.is_whitespace() || c == '"' || c == ')')
            .find(|word| word.ends_with("admin-token"))
            .unwrap_or_else(|| panic!("the token file is named:\n{printed}"));
        assert!(printed.contains(&format!("WARD_API_TOKEN=\"$(cat {path})\"")), "{printed}");
        // The demo removes its directory when it stops; the token was in it while it ran, so
        // compare with what a token looks like instead: a JWT has two dots and starts with eyJ.
        assert!(!printed.contains("eyJ"), "no token is printed:\n{printed}");
        assert!(output.status.success(), "the demo stops cleanly on SIGTERM:\n{stderr}");
        return;
    }
    panic!("no free port range for the demo after 20 tries");
}

#[test]
fn a_port_taken_while_the_demo_starts_is_named_with_the_way_out() {
    use std::io::BufRead;
    for attempt in 0..20u16 {
        let base = 12_000 + (std::process::id() as u16 % 200 + attempt * 977) % 19_000;
        let mut child = Command::new(common::WARD)
            .args(["demo", "--check", "--port-base", &base.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        // The ports were free when the demo checked them; take the users proxy's admin port now.
        while !seen.contains("[1/6]") && stderr.read_line(&mut seen).unwrap() > 0 {}
        let taken = base + 901;
        let Ok(_held) = std::net::TcpListener::bind(("127.0.0.1", taken)) else {
            let _ = child.kill();
            let _ = child.wait();
            continue;
        };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        let status = child.wait().unwrap();
        seen += &rest;
        if seen.contains("is busy") && !seen.contains(&format!("port {taken} ")) {
            continue; // another port of the range was busy first
        }
        assert!(!status.success(), "{seen}");
        assert!(
            seen.contains(&format!("port {taken} (users proxy admin) is busy")) && seen.contains("--port-base N"),
            "the port is named with how to move every port:\n{seen}"
        );
        return;
    }
    panic!("no port range where the demo could start");
}
