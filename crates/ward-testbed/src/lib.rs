//! End-to-end test hosts for Ward, built from Linux network namespaces.
//!
//! A [`Testbed`] is a private bridge in a namespace of its own; each [`Host`] is another
//! namespace joined to it by a veth pair, with its own IPv4 and IPv6 address, a resolv.conf
//! naming the testbed's own address, and no default route: test traffic reaches only loopback
//! and the testbed's hosts, never the machine's network or resolver. Names carry the test
//! process's pid and a sequence number, so tests run in parallel; everything is deleted on drop,
//! also when the test panics, and what a killed run left behind is swept by the next one.
//!
//! It needs root, `ip` (iproute2), `setpriv` (util-linux) and `iptables`; without them it fails
//! the test with a message saying what is missing, never letting it pass without having run.
//!
//! ```no_run
//! use std::{net::SocketAddr, process::Command};
//! use ward_testbed::{APP_UID, Testbed};
//!
//! let testbed = Testbed::new("items_are_reachable");
//! let items = testbed.host("items");
//! let users = testbed.host("users");
//! let _app = items.respond("0.0.0.0:8080".parse().unwrap(), |_| "items".to_string());
//! let answer = users.tcp_read_as(APP_UID, SocketAddr::new(items.addr(), 8080));
//! assert_eq!(answer.as_deref(), Ok("items"));
//! let rules = items.exec(Command::new("iptables-save").args(["-t", "nat"]));
//! assert!(rules.status.success());
//! ```

#![warn(missing_docs)]

mod host;
mod netns;
mod process;
mod responder;
mod testbed;

pub use host::Host;
pub use netns::find_program;
pub use process::Process;
pub use responder::Responder;
pub use testbed::Testbed;

/// The user the data-plane proxy runs as in tests (Kuma's conventional kuma-dp UID).
pub const PROXY_UID: u32 = 5678;

/// The user test applications run as: neither root nor the proxy.
pub const APP_UID: u32 = 5679;

/// The iptables variants present on this machine, `"nft"` and/or `"legacy"`: those whose
/// `iptables-<variant>-save` and `ip6tables-<variant>-save` exist. Fails the test when neither does.
pub fn iptables_variants() -> Vec<&'static str> {
    let variants: Vec<&str> = ["nft", "legacy"]
        .into_iter()
        .filter(|v| ["iptables", "ip6tables"].iter().all(|t| find_program(&format!("{t}-{v}-save")).is_some()))
        .collect();
    assert!(
        !variants.is_empty(),
        "ward-testbed: neither iptables-nft nor iptables-legacy is installed; install the iptables package"
    );
    variants
}
