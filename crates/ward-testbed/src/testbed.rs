//! A testbed: one private bridge, in a namespace of its own, that the test's hosts plug into.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use crate::{host::Host, netns};

/// The bridge joining the hosts, inside the testbed's own namespace.
const BRIDGE: &str = "br0";

/// Hosts get the addresses .2 to .254 (and `::2`...) of the testbed's subnets; .1 is the bridge.
const FIRST_HOST: u8 = 2;

/// A set of hosts on one private layer-2 segment: every host is a network namespace with a veth
/// to the bridge, an IPv4 address from a /24 of 198.18.0.0/15 (set aside for network tests) and
/// an IPv6 address from a ULA /64, and no default route. Dropping it (also while a test panics)
/// deletes the bridge and everything plugged into it.
pub struct Testbed {
    name: String,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    next_host: Mutex<u8>,
    dir: Option<tempfile::TempDir>,
}

impl Testbed {
    /// Builds an empty testbed for the named test, after deleting what killed runs left behind.
    /// Fails the test loudly when not root or when `ip`, `setpriv` or `iptables` is missing.
    pub fn new(test: &str) -> Testbed {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        netns::programs();
        netns::sweep_stale();
        let pid = std::process::id();
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let test: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(32)
            .collect();
        // Each testbed is an island, so subnets may repeat; they differ anyway so that an address
        // in a log or capture says which testbed it came from.
        let index = (pid.wrapping_mul(131).wrapping_add(sequence)) % 512;
        let v4 = Ipv4Addr::new(198, 18 + (index / 256) as u8, (index % 256) as u8, 0);
        let v6 = Ipv6Addr::new(0xfd77, 0x6172, 0x6474, index as u16, 0, 0, 0, 0);
        let name = format!("{}{pid}-{sequence}-{test}", netns::PREFIX);
        let dir = tempfile::Builder::new().prefix(&format!("ward-testbed-{test}-")).tempdir().expect("log directory");
        netns::add(&name);
        let testbed = Testbed { name, v4, v6, next_host: Mutex::new(FIRST_HOST), dir: Some(dir) };
        testbed.ip(&["link", "add", BRIDGE, "type", "bridge"]);
        testbed.ip(&["addr", "add", &format!("{}/24", testbed.nameserver_v4()), "dev", BRIDGE]);
        testbed.ip(&["addr", "add", &format!("{}/64", testbed.v6_address(1)), "dev", BRIDGE, "nodad"]);
        testbed.ip(&["link", "set", BRIDGE, "up"]);
        testbed
    }

    /// Adds a host: a namespace named after the testbed and `name` (lowercase letters and digits,
    /// at most 12), joined to the bridge by a veth that is `eth0` inside the host.
    pub fn host(&self, name: &str) -> Host<'_> {
        assert!(
            !name.is_empty() && name.len() <= 12 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "ward-testbed: host name {name:?} must be 1 to 12 lowercase letters or digits"
        );
        let index = {
            let mut next = self.next_host.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            assert!(*next < 255, "ward-testbed: at most {} hosts per testbed", 255 - FIRST_HOST);
            *next += 1;
            *next - 1
        };
        let v4 = Ipv4Addr::from(u32::from(self.v4) + u32::from(index));
        Host::create(self, name, index, v4, self.v6_address(index.into()))
    }

    /// The address every host's `/etc/resolv.conf` names: the bridge's own, where nothing answers
    /// unless a test puts a resolver there, so no query can reach the machine's real resolver.
    pub fn nameserver(&self) -> std::net::IpAddr {
        self.nameserver_v4().into()
    }

    /// The directory for this testbed's logs and captures; kept (and printed) when the test fails.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("directory lives until drop").path()
    }

    /// The testbed's namespace name, which every host's namespace name starts with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip ARGS` in the bridge's namespace.
    pub(crate) fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        netns::ip(&full);
    }

    /// The bridge's name inside the testbed's namespace.
    pub(crate) fn bridge(&self) -> &'static str {
        BRIDGE
    }

    fn nameserver_v4(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.v4) + 1)
    }

    fn v6_address(&self, index: u16) -> Ipv6Addr {
        let mut segments = self.v6.segments();
        segments[7] = index;
        Ipv6Addr::from(segments)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        netns::delete(&self.name);
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("ward-testbed: logs of the failed test kept in {}", dir.keep().display());
        }
    }
}
