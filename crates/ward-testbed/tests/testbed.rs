//! The testbed itself: hosts reach each other and nothing else, run processes as the users asked
//! for, and leave nothing behind, whether the test passes, panics or was killed.

use std::{net::SocketAddr, path::Path, process::Command};

use ward_testbed::{APP_UID, PROXY_UID, Testbed};

fn stdout(output: std::process::Output) -> String {
    assert!(output.status.success(), "command failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists() || Path::new("/etc/netns").join(name).exists()
}

/// Alive and not a zombie waiting for a parent that is not us.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

#[test]
fn hosts_reach_each_other_over_ipv4_and_ipv6() {
    let testbed = Testbed::new("hosts_reach_each_other");
    let items = testbed.host("items");
    let users = testbed.host("users");
    let _items_app = items.respond("[::]:8080".parse().unwrap(), |stream| {
        format!("items saw {}", stream.peer_addr().unwrap().ip().to_canonical())
    });
    for (from, to) in [(users.addr(), items.addr()), (users.addr6(), items.addr6())] {
        let answer = users.tcp_read_as(APP_UID, SocketAddr::new(to, 8080));
        assert_eq!(answer, Ok(format!("items saw {from}")));
    }
    assert_ne!(items.addr(), users.addr());
}

#[test]
fn hosts_have_no_default_route_and_resolve_only_at_the_testbed() {
    let testbed = Testbed::new("no_default_route");
    let host = testbed.host("lonely");
    for family in ["-4", "-6"] {
        let routes = stdout(host.exec(Command::new("ip").args([family, "route", "show", "default"])));
        assert_eq!(routes, "", "{family} default route");
    }
    let resolv = stdout(host.exec(Command::new("cat").arg("/etc/resolv.conf")));
    assert_eq!(resolv, format!("nameserver {}", testbed.nameserver()));
    let interfaces = stdout(host.exec(Command::new("ip").args(["-o", "link", "show"])));
    assert_eq!(interfaces.lines().count(), 2, "only lo and {}: {interfaces}", host.interface());
    assert!(interfaces.contains(&format!(" {}@", host.interface())), "{interfaces}");
}

#[test]
fn sockets_made_in_netns_belong_to_the_host() {
    let testbed = Testbed::new("in_netns");
    let host = testbed.host("items");
    let bound = host.in_netns(|| std::net::TcpListener::bind((host.addr(), 0)));
    assert_eq!(bound.unwrap().local_addr().unwrap().ip(), host.addr());
    // The test process itself stays outside: the host's address is not local here.
    assert!(std::net::TcpListener::bind((host.addr(), 0)).is_err());
}

#[test]
fn sockets_made_as_a_user_are_owned_by_it() {
    let testbed = Testbed::new("in_netns_as");
    let host = testbed.host("items");
    // Only packets of sockets owned by the proxy's UID may leave for port 9; the others are refused.
    let output = host.exec(Command::new("iptables").args([
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "--dport",
        "9",
        "-m",
        "owner",
        "!",
        "--uid-owner",
        &PROXY_UID.to_string(),
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let _discard = host.respond("127.0.0.1:9".parse().unwrap(), |_| "accepted".into());
    let connect = || std::net::TcpStream::connect("127.0.0.1:9").map(drop).map_err(|e| e.kind());
    assert_eq!(host.in_netns_as(PROXY_UID, connect), Ok(()));
    assert_eq!(host.in_netns_as(APP_UID, connect), Err(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(host.in_netns(connect), Err(std::io::ErrorKind::ConnectionRefused));
}

#[test]
fn processes_run_as_the_requested_user() {
    let testbed = Testbed::new("run_as_user");
    let host = testbed.host("items");
    let id = || {
        let mut command = Command::new("id");
        command.args(["-u"]);
        command
    };
    assert_eq!(stdout(host.exec(&id())), "0");
    assert_eq!(stdout(host.exec_as(PROXY_UID, &id())), PROXY_UID.to_string());
    let mut spawned = host.spawn_as(APP_UID, &id());
    assert!(spawned.wait().success());
    assert_eq!(spawned.log().trim(), APP_UID.to_string());
    let mut env = Command::new("sh");
    env.args(["-c", "echo $WARD_TESTBED_PROBE"]).env("WARD_TESTBED_PROBE", "carried over");
    assert_eq!(stdout(host.exec(&env)), "carried over");
}

#[test]
fn a_process_can_be_stopped_before_its_host() {
    let testbed = Testbed::new("kill_early");
    let host = testbed.host("items");
    let mut sleeper = host.spawn(Command::new("sleep").arg("1000"));
    let pid = sleeper.id();
    assert!(running(pid));
    sleeper.kill();
    assert!(!running(pid));
    assert!(!sleeper.wait().success());
}

#[test]
fn dropping_the_testbed_kills_processes_and_deletes_namespaces() {
    let (names, pids) = {
        let testbed = Testbed::new("cleanup");
        let host = testbed.host("items");
        // A child that leaves a grandchild the testbed never saw started.
        let mut parent = Command::new("sh");
        parent.args(["-c", "sleep 1000 & wait"]);
        let spawned = host.spawn(&parent);
        // `ip netns exec` enters the namespace after it was started: wait until it did.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let pids = loop {
            let listed = stdout(Command::new("ip").args(["netns", "pids", host.netns()]).output().unwrap());
            let pids: Vec<u32> = listed.split_whitespace().map(|p| p.parse().unwrap()).collect();
            if pids.contains(&spawned.id()) || std::time::Instant::now() > deadline {
                break pids;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(pids.contains(&spawned.id()), "{pids:?}");
        ([testbed.name().to_string(), host.netns().to_string()], pids)
    };
    for name in &names {
        assert!(!namespace_exists(name), "{name} left behind");
    }
    for pid in pids {
        assert!(!running(pid), "process {pid} survived");
    }
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let testbed = Testbed::new("panics");
        let host = testbed.host("items");
        names.lock().unwrap().extend([testbed.name().to_string(), host.netns().to_string()]);
        panic!("the test fails half-way");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 2);
    for name in &names {
        assert!(!namespace_exists(name), "{name} left behind");
    }
}

#[test]
fn leftovers_of_killed_runs_are_swept() {
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let stale = format!("wardtb-{}-0-killed_run", gone.id());
    assert!(Command::new("ip").args(["netns", "add", &stale]).status().unwrap().success());
    std::fs::create_dir_all(Path::new("/etc/netns").join(&stale)).unwrap();
    let _testbed = Testbed::new("sweeper");
    assert!(!namespace_exists(&stale), "{stale} was not swept");
}

#[test]
fn parallel_testbeds_are_separate_islands() {
    let (one, two) = (Testbed::new("island"), Testbed::new("island"));
    let (a, b) = (one.host("items"), two.host("items"));
    assert_ne!(a.netns(), b.netns());
    let _one_app = a.respond("0.0.0.0:8080".parse().unwrap(), |_| "one".into());
    let _two_app = b.respond("0.0.0.0:8080".parse().unwrap(), |_| "two".into());
    let client = one.host("client");
    assert_eq!(client.tcp_read_as(APP_UID, SocketAddr::new(a.addr(), 8080)), Ok("one".into()));
    // The other testbed's host is not on this bridge.
    assert!(client.tcp_read_as(APP_UID, SocketAddr::new(b.addr(), 8080)).is_err());
}
