//! `ward install transparent-proxy` and `ward uninstall transparent-proxy` in testbed hosts, with
//! both iptables backends where the machine has them. Small listeners stand in for the proxy:
//! on the redirect ports they answer with what they saw (which listener, and the connection's
//! original destination); an application's listener answers with its own name. Clients are real
//! processes (bash) running as the application's or the proxy's UID.

mod common;

use std::{
    io::Read,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    process::{Command, Output},
    time::Duration,
};

use common::WARD;
use ward_net::{
    original_dst,
    redirect::{DNS_PORT, INBOUND_PASSTHROUGH_V4, INBOUND_PORT, OUTBOUND_PORT},
};
use ward_testbed::{APP_UID, Host, PROXY_UID, Responder, Testbed, find_program, iptables_variants};

/// Runs `ward ARGS` inside the host as root.
fn ward(host: &Host<'_>, args: &str) -> Output {
    host.exec(Command::new(WARD).args(args.split_whitespace()))
}

#[track_caller]
fn succeeds(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ward failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[track_caller]
fn fails(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "ward should have failed: {stdout}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `ward install transparent-proxy` for the proxy's UID with this backend and further options.
fn install(host: &Host<'_>, variant: &str, options: &str) -> Output {
    ward(host, &format!("install transparent-proxy --proxy-uid {PROXY_UID} --iptables-backend {variant} {options}"))
}

/// Runs an iptables program inside the host, failing the test when it fails.
#[track_caller]
fn iptables(host: &Host<'_>, program: &str, rule: &str) {
    let output = host.exec(Command::new(program).args(rule.split_whitespace()));
    assert!(output.status.success(), "{program} {rule}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Every table of both families as the variant's `*-save` prints them, without the comments and
/// packet counters that change by themselves.
fn tables(host: &Host<'_>, variant: &str) -> String {
    let mut all = String::new();
    for program in [format!("iptables-{variant}-save"), format!("ip6tables-{variant}-save")] {
        let output = host.exec(&Command::new(&program));
        assert!(output.status.success(), "{program}: {}", String::from_utf8_lossy(&output.stderr));
        for line in String::from_utf8_lossy(&output.stdout).lines().filter(|l| !l.starts_with('#')) {
            let line =
                if line.starts_with(':') { line.rsplit_once(" [").map_or(line, |(chain, _)| chain) } else { line };
            all.push_str(line);
            all.push('\n');
        }
    }
    all
}

/// A rule of the user's own in each family's nat and filter tables, which install and uninstall
/// must leave alone.
fn add_foreign_rules(host: &Host<'_>, variant: &str) {
    for program in [format!("iptables-{variant}"), format!("ip6tables-{variant}")] {
        iptables(host, &program, "-t nat -N USER_CHAIN");
        iptables(host, &program, "-t nat -A USER_CHAIN -p tcp --dport 9999 -j RETURN");
        iptables(host, &program, "-t nat -A OUTPUT -p tcp -j USER_CHAIN");
        iptables(host, &program, "-t nat -A PREROUTING -p tcp --dport 2222 -j REDIRECT --to-ports 22");
        iptables(host, &program, "-t filter -A INPUT -p tcp --dport 7 -j DROP");
    }
}

/// A stand-in proxy listener on `port` of every address: answers "`name` <original destination>".
fn proxy_listener(host: &Host<'_>, name: &'static str, port: u16) -> Responder {
    host.respond(SocketAddr::new("::".parse().unwrap(), port), move |stream| match original_dst(stream) {
        Ok(original) => format!("{name} {original}"),
        Err(e) => format!("{name} without original destination: {e}"),
    })
}

/// A stand-in application on `port` of every address: answers with its name.
fn application(host: &Host<'_>, name: &'static str, port: u16) -> Responder {
    host.respond(SocketAddr::new("::".parse().unwrap(), port), move |_| name.to_string())
}

/// What a client running as `uid` in `host` reads from `ip:port`.
#[track_caller]
fn ask(host: &Host<'_>, uid: u32, ip: IpAddr, port: u16) -> String {
    host.tcp_read_as(uid, SocketAddr::new(ip, port)).unwrap_or_else(|e| format!("error: {e}"))
}

fn read_all(mut stream: TcpStream) -> String {
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read the answer");
    text.trim().to_string()
}

#[test]
fn outbound_tcp_goes_to_the_outbound_port_with_its_original_destination() {
    for variant in iptables_variants() {
        let testbed = Testbed::new(&format!("outbound_{variant}"));
        let (app, peer) = (testbed.host("app"), testbed.host("peer"));
        let _outbound = proxy_listener(&app, "outbound", OUTBOUND_PORT);
        let _peer_app = application(&peer, "peer", 8080);
        succeeds(install(&app, variant, ""));

        for ip in [peer.addr(), peer.addr6()] {
            let original = SocketAddr::new(ip, 8080);
            assert_eq!(ask(&app, APP_UID, ip, 8080), format!("outbound {original}"), "{variant}");
            assert_eq!(ask(&app, 0, ip, 8080), format!("outbound {original}"), "{variant}: root's applications too");
        }
        // A virtual address with no host behind it (as `.mesh` names will resolve to).
        assert!(
            app.exec(Command::new("ip").args(["route", "add", "240.0.0.0/4", "dev", app.interface()])).status.success()
        );
        assert_eq!(ask(&app, APP_UID, "240.0.0.7".parse().unwrap(), 80), "outbound 240.0.0.7:80", "{variant}");
    }
}

#[test]
fn the_proxys_own_traffic_and_loopback_are_not_redirected() {
    for variant in iptables_variants() {
        let testbed = Testbed::new(&format!("no_loops_{variant}"));
        let (app, peer) = (testbed.host("app"), testbed.host("peer"));
        let _outbound = proxy_listener(&app, "outbound", OUTBOUND_PORT);
        let _inbound = proxy_listener(&app, "inbound", INBOUND_PORT);
        let _local_app = application(&app, "local", 9090);
        let _peer_app = application(&peer, "peer", 8080);
        succeeds(install(&app, variant, ""));

        for ip in [peer.addr(), peer.addr6()] {
            assert_eq!(ask(&app, PROXY_UID, ip, 8080), "peer", "{variant}: the proxy reaches {ip} itself");
        }
        for ip in ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap(), app.addr(), app.addr6()] {
            assert_eq!(ask(&app, APP_UID, ip, 9090), "local", "{variant}: an application calling its own host at {ip}");
        }
        // The proxy calling this host's own address gets the inbound side, as a remote caller would...
        for ip in [app.addr(), app.addr6()] {
            let original = SocketAddr::new(ip, 9090);
            assert_eq!(ask(&app, PROXY_UID, ip, 9090), format!("inbound {original}"), "{variant}");
        }
        // ...and the inbound side reaches the application from the passthrough address, no loop.
        let from_passthrough = app.in_netns_as(PROXY_UID, || {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.bind(&SocketAddr::new(INBOUND_PASSTHROUGH_V4.into(), 0).into()).unwrap();
            socket.connect(&SocketAddr::new(app.addr(), 9090).into()).unwrap();
            read_all(socket.into())
        });
        assert_eq!(from_passthrough, "local", "{variant}");
    }
}

#[test]
fn inbound_tcp_goes_to_the_inbound_port_except_excluded_ports() {
    for variant in iptables_variants() {
        let testbed = Testbed::new(&format!("inbound_{variant}"));
        let (app, peer) = (testbed.host("app"), testbed.host("peer"));
        let _inbound = proxy_listener(&app, "inbound", INBOUND_PORT);
        let _ssh = application(&app, "ssh", 22);
        let _app = application(&app, "app", 8080);
        succeeds(install(&app, variant, "--exclude-inbound-ports 22"));

        for ip in [app.addr(), app.addr6()] {
            assert_eq!(ask(&peer, APP_UID, ip, 8080), format!("inbound {}", SocketAddr::new(ip, 8080)), "{variant}");
            assert_eq!(ask(&peer, APP_UID, ip, 22), "ssh", "{variant}: the excluded port stays reachable directly");
        }
    }
}

#[test]
fn excluded_outbound_ports_and_addresses_are_not_redirected() {
    for variant in iptables_variants() {
        let testbed = Testbed::new(&format!("exclusions_{variant}"));
        let (app, peer, db) = (testbed.host("app"), testbed.host("peer"), testbed.host("db"));
        let _outbound = proxy_listener(&app, "outbound", OUTBOUND_PORT);
        let _peer_app = application(&peer, "peer", 8080);
        let _peer_postgres = application(&peer, "peer postgres", 5432);
        let _db_app = application(&db, "db", 8080);
        // A network holding db alone (the hosts are .2, .3, .4, so db's /31), and db's IPv6 address.
        let db4 = ipnet::IpNet::new(db.addr(), 31).unwrap().trunc();
        assert!(db4.contains(&db.addr()) && !db4.contains(&peer.addr()));
        let exclusions = format!("--exclude-outbound-ports 5432 --exclude-outbound-ips {db4},{}", db.addr6());
        succeeds(install(&app, variant, &exclusions));

        for (peer_ip, db_ip) in [(peer.addr(), db.addr()), (peer.addr6(), db.addr6())] {
            assert_eq!(ask(&app, APP_UID, peer_ip, 5432), "peer postgres", "{variant}: excluded port");
            assert_eq!(ask(&app, APP_UID, peer_ip, 8080), format!("outbound {}", SocketAddr::new(peer_ip, 8080)));
            assert_eq!(ask(&app, APP_UID, db_ip, 8080), "db", "{variant}: excluded address {db_ip}");
        }
    }
}

/// Sends one datagram from a socket owned by `uid` inside the host and returns the answer.
fn ask_udp(host: &Host<'_>, uid: u32, to: SocketAddr) -> String {
    host.in_netns_as(uid, || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        // Guards against a hang only: a lost answer fails the test either way.
        socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        socket.connect(to).unwrap();
        socket.send(b"query").unwrap();
        let mut answer = [0; 64];
        match socket.recv(&mut answer) {
            Ok(n) => String::from_utf8_lossy(&answer[..n]).into_owned(),
            Err(e) => format!("error: {e}"),
        }
    })
}

/// A stand-in DNS server that answers the next `count` datagrams with `name`.
fn udp_server(host: &Host<'_>, name: &'static str, at: &str, count: usize) -> std::thread::JoinHandle<()> {
    let socket = host.in_netns(|| UdpSocket::bind(at)).unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0; 64];
        for _ in 0..count {
            let (_, from) = socket.recv_from(&mut buffer).unwrap();
            socket.send_to(name.as_bytes(), from).unwrap();
        }
    })
}

#[test]
fn dns_goes_to_the_proxys_dns_port_except_the_proxys_own_queries() {
    for variant in iptables_variants() {
        let testbed = Testbed::new(&format!("dns_{variant}"));
        let (app, peer) = (testbed.host("app"), testbed.host("peer"));
        let _dns_tcp = proxy_listener(&app, "proxy dns", DNS_PORT);
        let dns_udp = udp_server(&app, "proxy dns", &format!("127.0.0.1:{DNS_PORT}"), 2);
        let _peer_dns_tcp = application(&peer, "peer dns", 53);
        let peer_dns_udp = udp_server(&peer, "peer dns", "0.0.0.0:53", 1);
        // DNS is captured whatever the exclusions say.
        succeeds(install(&app, variant, &format!("--redirect-dns --exclude-outbound-ips {}", peer.addr())));

        let peer_dns = SocketAddr::new(peer.addr(), 53);
        assert_eq!(ask(&app, APP_UID, peer.addr(), 53), format!("proxy dns {peer_dns}"), "{variant}");
        assert_eq!(ask(&app, PROXY_UID, peer.addr(), 53), "peer dns", "{variant}");
        assert_eq!(ask_udp(&app, APP_UID, peer_dns), "proxy dns", "{variant}");
        assert_eq!(ask_udp(&app, APP_UID, SocketAddr::new(testbed.nameserver(), 53)), "proxy dns", "{variant}");
        assert_eq!(ask_udp(&app, PROXY_UID, peer_dns), "peer dns", "{variant}");
        dns_udp.join().unwrap();
        peer_dns_udp.join().unwrap();
    }
}

#[test]
fn installing_twice_changes_nothing_and_uninstall_removes_exactly_what_install_added() {
    for variant in iptables_variants() {
        let testbed = Testbed::new(&format!("idempotent_{variant}"));
        let app = testbed.host("app");
        add_foreign_rules(&app, variant);
        let before = tables(&app, variant);

        // Every kind of option, so every kind of rule is compared with what iptables-save prints.
        let options = "--exclude-inbound-ports 22,8443 --exclude-outbound-ports 5432 \
                       --exclude-outbound-ips 192.0.2.0/24,198.51.100.7,2001:db8::/32 --redirect-dns";
        assert!(succeeds(install(&app, variant, options)).starts_with("Installed"), "{variant}");
        let installed = tables(&app, variant);
        assert_ne!(installed, before);
        assert!(succeeds(install(&app, variant, options)).contains("already installed"), "{variant}");
        assert_eq!(tables(&app, variant), installed, "{variant}: a second install changed the rules");

        assert!(succeeds(install(&app, variant, "")).starts_with("Updated"), "{variant}");
        assert!(!tables(&app, variant).contains("WARD_DNS"), "{variant}");
        assert!(succeeds(install(&app, variant, options)).starts_with("Updated"), "{variant}");
        assert_eq!(tables(&app, variant), installed, "{variant}: installing the first options again");

        let removed = succeeds(ward(&app, "uninstall transparent-proxy"));
        assert_eq!(
            removed.trim(),
            format!("Removed the transparent proxy's rules from iptables-{variant} (IPv4, IPv6).")
        );
        assert_eq!(tables(&app, variant), before, "{variant}: uninstall left a difference");
        assert!(succeeds(ward(&app, "uninstall transparent-proxy")).contains("nothing changed"), "{variant}");
        assert_eq!(tables(&app, variant), before, "{variant}");
    }
}

#[test]
fn uninstall_keeps_rules_added_after_install() {
    for variant in iptables_variants() {
        let testbed = Testbed::new(&format!("later_rules_{variant}"));
        let app = testbed.host("app");
        succeeds(install(&app, variant, "--redirect-dns"));
        let later = "-A OUTPUT -p tcp -m tcp --dport 9998 -j ACCEPT";
        iptables(&app, &format!("iptables-{variant}"), &format!("-t nat {later}"));
        succeeds(ward(&app, "uninstall transparent-proxy"));
        let after = tables(&app, variant);
        assert!(after.contains(later), "{variant}: {after}");
        assert!(!after.contains("WARD_"), "{variant}: {after}");
    }
}

#[test]
fn dry_run_prints_the_rules_and_changes_nothing() {
    for variant in iptables_variants() {
        let testbed = Testbed::new(&format!("dry_run_{variant}"));
        let app = testbed.host("app");
        add_foreign_rules(&app, variant);
        let before = tables(&app, variant);
        let printed = succeeds(install(&app, variant, "--dry-run --redirect-dns"));
        assert!(printed.contains(&format!("-A WARD_OUTBOUND -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}")));
        assert!(printed.contains("-A OUTPUT -p udp -m udp --dport 53 -j WARD_DNS"), "{printed}");
        assert_eq!(tables(&app, variant), before, "{variant}: --dry-run changed the rules");
    }
    // It needs no privileges; the real thing does, and says so.
    let testbed = Testbed::new("dry_run_unprivileged");
    let app = testbed.host("app");
    let as_user = |extra: &str| {
        let args = format!("install transparent-proxy --proxy-uid {PROXY_UID}{extra}");
        app.exec_as(APP_UID, Command::new(WARD).args(args.split_whitespace()))
    };
    assert!(succeeds(as_user(" --dry-run")).contains("*nat"));
    assert!(fails(as_user("")).contains("must run as root"));
}

#[test]
fn a_failure_half_way_leaves_nothing_and_names_what_failed() {
    for variant in iptables_variants() {
        let testbed = Testbed::new(&format!("half_way_{variant}"));
        let app = testbed.host("app");
        add_foreign_rules(&app, variant);
        let before = tables(&app, variant);
        let with_path = |dir: &std::path::Path, options: &str| {
            let args = format!("install transparent-proxy --proxy-uid {PROXY_UID} {options}");
            app.exec(Command::new(WARD).args(args.split_whitespace()).env("PATH", dir))
        };

        // No iptables at all.
        let empty = testbed.dir().join(format!("no-iptables-{variant}"));
        std::fs::create_dir(&empty).unwrap();
        let error = fails(with_path(&empty, ""));
        assert!(error.contains("iptables-nft-save not found on PATH (install the iptables package)"), "{error}");
        assert!(error.contains("iptables-legacy-save not found on PATH"), "{error}");
        let error = fails(with_path(&empty, &format!("--iptables-backend {variant}")));
        assert!(error.contains(&format!("iptables-{variant}-save not found on PATH")), "{error}");

        // IPv4 commits, then ip6tables-restore breaks: the IPv4 rules must be taken back.
        let broken = testbed.dir().join(format!("broken-ip6tables-{variant}"));
        std::fs::create_dir(&broken).unwrap();
        for program in ["iptables-{}-save", "iptables-{}-restore", "ip6tables-{}-save"] {
            let program = program.replace("{}", variant);
            let real = find_program(&program).unwrap_or_else(|| panic!("{program} is not installed"));
            std::os::unix::fs::symlink(real, broken.join(&program)).unwrap();
        }
        let failing = broken.join(format!("ip6tables-{variant}-restore"));
        std::fs::write(&failing, "#!/bin/sh\necho 'ip6tables: the kernel said no' >&2\nexit 4\n").unwrap();
        std::fs::set_permissions(&failing, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let error = fails(with_path(&broken, &format!("--iptables-backend {variant}")));
        assert!(
            error.contains(&format!("ip6tables-{variant}-restore failed: ip6tables: the kernel said no")),
            "{error}"
        );
        assert!(error.contains("nothing was changed"), "{error}");
        assert_eq!(tables(&app, variant), before, "{variant}: a failed install left rules behind");
    }
}

#[test]
fn detection_installs_where_the_hosts_rules_already_are() {
    let variants = iptables_variants();
    assert_eq!(variants, ["nft", "legacy"], "this test needs both iptables backends (the iptables package has both)");
    let has_ward = |host: &Host<'_>, variant: &str| tables(host, variant).contains("WARD_OUTBOUND");

    let testbed = Testbed::new("detect_fresh");
    let fresh = testbed.host("fresh");
    assert!(
        succeeds(ward(&fresh, &format!("install transparent-proxy --proxy-uid {PROXY_UID}"))).contains("iptables-nft")
    );
    assert!(has_ward(&fresh, "nft") && !has_ward(&fresh, "legacy"));

    let legacy_host = testbed.host("legacy");
    iptables(&legacy_host, "iptables-legacy", "-t filter -A INPUT -p tcp --dport 7 -j DROP");
    let installed = succeeds(ward(&legacy_host, &format!("install transparent-proxy --proxy-uid {PROXY_UID}")));
    assert!(installed.contains("iptables-legacy"), "{installed}");
    assert!(has_ward(&legacy_host, "legacy") && !has_ward(&legacy_host, "nft"));
    // Installing again finds its own chains first, even though nft now holds more rules.
    for _ in 0..3 {
        iptables(&legacy_host, "iptables-nft", "-t filter -A INPUT -p tcp --dport 8 -j DROP");
    }
    let again = succeeds(ward(&legacy_host, &format!("install transparent-proxy --proxy-uid {PROXY_UID}")));
    assert!(again.contains("already installed") && again.contains("iptables-legacy"), "{again}");

    let forced =
        fails(ward(&legacy_host, &format!("install transparent-proxy --proxy-uid {PROXY_UID} --iptables-backend nft")));
    assert!(forced.contains("installed with iptables-legacy; run `ward uninstall transparent-proxy`"), "{forced}");
    assert!(!has_ward(&legacy_host, "nft"));

    let removed = succeeds(ward(&legacy_host, "uninstall transparent-proxy"));
    assert!(removed.contains("iptables-legacy"), "{removed}");
    assert!(!has_ward(&legacy_host, "legacy") && !has_ward(&legacy_host, "nft"));
}
