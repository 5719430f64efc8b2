//! `original_dst` on connections redirected by real nat rules in a network namespace, for an
//! IPv4 socket, IPv4 reaching a dual-stack socket, and IPv6.

use std::{net::SocketAddr, process::Command};

use ward_net::original_dst;
use ward_testbed::{APP_UID, Testbed};

fn report(stream: &std::net::TcpStream) -> String {
    original_dst(stream).map_or_else(|e| format!("error: {e}"), |a| a.to_string())
}

#[test]
fn original_destination_of_redirected_ipv4_ipv6_and_mapped_connections() {
    let testbed = Testbed::new("original_dst");
    let app = testbed.host("app");
    let peer = testbed.host("peer");
    let _v4_only = app.respond("0.0.0.0:9004".parse().unwrap(), report);
    let _dual_stack = app.respond("[::]:9046".parse().unwrap(), report);
    let redirects = [
        ("iptables", peer.addr(), 80, 9004),
        ("iptables", peer.addr(), 81, 9046),
        ("ip6tables", peer.addr6(), 80, 9046),
    ];
    for (tool, destination, port, to) in redirects {
        let rule = format!("-t nat -A OUTPUT -p tcp -d {destination} --dport {port} -j REDIRECT --to-ports {to}");
        let output = app.exec(Command::new(tool).args(rule.split(' ')));
        assert!(output.status.success(), "{tool} {rule}: {}", String::from_utf8_lossy(&output.stderr));
    }
    for (_, destination, port, _) in redirects {
        let original = SocketAddr::new(destination, port);
        assert_eq!(app.tcp_read_as(APP_UID, original), Ok(original.to_string()), "connection to {original}");
    }
    // A connection that was not redirected reports where it arrived.
    let direct = "127.0.0.1:9004".parse().unwrap();
    assert_eq!(app.tcp_read_as(APP_UID, direct), Ok(direct.to_string()));
}
