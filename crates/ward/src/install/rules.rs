//! The transparent proxy's nat rules as data: built from the options, written in the form
//! `iptables-save` prints them back (so what is installed compares line by line with what would
//! be), and turned into `iptables-restore --noflush` transactions.
//!
//! For each IP family, with the defaults:
//!
//! ```text
//! WARD_INBOUND   TCP arriving at the host (PREROUTING, and the proxy's own calls to this host)
//!   -p tcp -m tcp --dport 22 -j RETURN              one per --exclude-inbound-ports
//!   -p tcp -j REDIRECT --to-ports 15006
//! WARD_OUTBOUND  TCP the host's processes send (OUTPUT)
//!   -d 10.0.0.0/8 -j RETURN                         one per --exclude-outbound-ips of the family
//!   -p tcp -m tcp --dport 5432 -j RETURN            one per --exclude-outbound-ports
//!   -s 127.0.0.6/32 -o lo -j RETURN                 the inbound side reaching a local application
//!   ! -d 127.0.0.0/8 -o lo -p tcp -m tcp ! --dport 53 -m owner --uid-owner P -j WARD_INBOUND
//!   -m owner --uid-owner P -j RETURN                the proxy's own traffic
//!   -o lo -j RETURN                                 anything to the host itself
//!   -p tcp -j REDIRECT --to-ports 15001
//! WARD_DNS       UDP and TCP to port 53 (OUTPUT), with --redirect-dns
//!   -m owner --uid-owner P -j RETURN
//!   -p udp -j REDIRECT --to-ports 15053             and the same for tcp
//! ```
//!
//! Loops, and why the loopback rules are what they are (the same choices as Istio and Kuma):
//! - The proxy's own connections (UID P) are never sent to the outbound port, or its
//!   connections to the destinations would come back to it.
//! - Connections a process makes to its own host never pass PREROUTING, so the inbound
//!   redirect would not see them. When the *proxy* connects over `lo` to a non-loopback address
//!   of this host (a mesh destination that happens to be local), the connection goes through
//!   WARD_INBOUND, so it still gets the inbound side's mTLS and permission check, and excluded
//!   inbound ports stay excluded. The inbound side then reaches the application from
//!   127.0.0.6 (`ward_net::redirect::INBOUND_PASSTHROUGH_V4`), which the third rule lets
//!   through: that breaks the loop. Port 53 is left out so the proxy's own DNS queries to a
//!   resolver on this host stay plain.
//! - An application's connection to its own host (`-o lo`, loopback or one of the host's
//!   addresses) is left alone: it never crosses the network, and on one host the caller and the
//!   callee share the proxy's identity, so there is nothing for mTLS to prove.
//! - `--redirect-dns` captures every process's DNS except the proxy's, whatever the exclusions;
//!   the proxy answers `.mesh` names and forwards the rest as itself.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use ward_net::redirect::{DNS_PORT, INBOUND_PASSTHROUGH_V4, INBOUND_PASSTHROUGH_V6};

/// The chain for TCP arriving at the host.
pub const INBOUND: &str = "WARD_INBOUND";
/// The chain for TCP leaving the host's processes.
pub const OUTBOUND: &str = "WARD_OUTBOUND";
/// The chain for DNS queries leaving the host's processes.
pub const DNS: &str = "WARD_DNS";
/// Every chain Ward owns; uninstall removes these, the rules that jump into them, and nothing else.
pub const CHAINS: [&str; 3] = [INBOUND, OUTBOUND, DNS];

/// An IP version: one nat table, and one rule set, each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4, `iptables`.
    V4,
    /// IPv6, `ip6tables`.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// "IPv4" or "IPv6".
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }

    fn passthrough(self) -> String {
        match self {
            Family::V4 => format!("{INBOUND_PASSTHROUGH_V4}/32"),
            Family::V6 => format!("{INBOUND_PASSTHROUGH_V6}/128"),
        }
    }

    fn holds(self, net: &IpNet) -> bool {
        matches!((self, net), (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_)))
    }
}

/// What the rules redirect and what they leave alone, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Redirect {
    /// Where TCP arriving at the host goes.
    pub inbound_port: u16,
    /// Where TCP leaving the host's processes goes.
    pub outbound_port: u16,
    /// The proxy's user, whose own traffic is never redirected.
    pub proxy_uid: u32,
    /// Inbound ports that reach the host directly.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports that are not redirected.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations that are not redirected, both families.
    pub exclude_outbound_ips: Vec<IpNet>,
    /// Whether DNS goes to the proxy's DNS port.
    pub redirect_dns: bool,
}

/// One rule: its chain and the rest of its `-A` line, as `iptables-save` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The chain it is appended to.
    pub chain: String,
    /// Matches and target, e.g. `-p tcp -j WARD_INBOUND`.
    pub spec: String,
}

/// Ward's part of a nat table: its chains, their rules, and the rules elsewhere that jump into them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// Ward's chains.
    pub chains: Vec<String>,
    /// Their rules, and the rules elsewhere that jump into them.
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// Nothing of Ward's.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.rules.is_empty()
    }

    /// Same chains and, chain by chain, the same rules in the same order (`iptables-save` orders
    /// chains its own way).
    pub fn same_as(&self, other: &RuleSet) -> bool {
        self.by_chain() == other.by_chain()
    }

    /// Lines that create it: the chains, then the rules in order.
    pub fn additions(&self) -> Vec<String> {
        let chains = self.chains.iter().map(|chain| format!("-N {chain}"));
        chains.chain(self.rules.iter().map(|rule| format!("-A {} {}", rule.chain, rule.spec))).collect()
    }

    /// Lines that remove it: the jumps from other chains deleted, then Ward's chains flushed and deleted.
    pub fn removals(&self) -> Vec<String> {
        let jumps = self.rules.iter().filter(|rule| !self.chains.contains(&rule.chain));
        let deletes = jumps.map(|rule| format!("-D {} {}", rule.chain, rule.spec));
        let flushes = self.chains.iter().map(|chain| format!("-F {chain}"));
        let removes = self.chains.iter().map(|chain| format!("-X {chain}"));
        deletes.chain(flushes).chain(removes).collect()
    }

    fn by_chain(&self) -> (BTreeSet<&str>, BTreeMap<&str, Vec<&str>>) {
        let mut rules: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for rule in &self.rules {
            rules.entry(&rule.chain).or_default().push(&rule.spec);
        }
        (self.chains.iter().map(String::as_str).collect(), rules)
    }
}

/// One all-or-nothing change of the nat table, for `iptables-restore --noflush`.
pub fn transaction(lines: &[String]) -> String {
    let mut payload = String::from("*nat\n");
    for line in lines {
        payload.push_str(line);
        payload.push('\n');
    }
    payload.push_str("COMMIT\n");
    payload
}

/// Ward's rules for one family (the table in the module documentation).
pub fn rule_set(redirect: &Redirect, family: Family) -> RuleSet {
    let owner = format!("-m owner --uid-owner {}", redirect.proxy_uid);
    let mut chains = vec![INBOUND, OUTBOUND];
    let mut rules: Vec<(&str, String)> = Vec::new();

    for port in &redirect.exclude_inbound_ports {
        rules.push((INBOUND, format!("-p tcp -m tcp --dport {port} -j RETURN")));
    }
    rules.push((INBOUND, format!("-p tcp -j REDIRECT --to-ports {}", redirect.inbound_port)));

    for net in redirect.exclude_outbound_ips.iter().filter(|net| family.holds(net)) {
        rules.push((OUTBOUND, format!("-d {net} -j RETURN")));
    }
    for port in &redirect.exclude_outbound_ports {
        rules.push((OUTBOUND, format!("-p tcp -m tcp --dport {port} -j RETURN")));
    }
    rules.extend([
        (OUTBOUND, format!("-s {} -o lo -j RETURN", family.passthrough())),
        (OUTBOUND, format!("! -d {} -o lo -p tcp -m tcp ! --dport 53 {owner} -j {INBOUND}", family.loopback())),
        (OUTBOUND, format!("{owner} -j RETURN")),
        (OUTBOUND, "-o lo -j RETURN".to_string()),
        (OUTBOUND, format!("-p tcp -j REDIRECT --to-ports {}", redirect.outbound_port)),
    ]);

    if redirect.redirect_dns {
        chains.push(DNS);
        rules.extend([
            (DNS, format!("{owner} -j RETURN")),
            (DNS, format!("-p udp -j REDIRECT --to-ports {DNS_PORT}")),
            (DNS, format!("-p tcp -j REDIRECT --to-ports {DNS_PORT}")),
        ]);
    }

    // The hooks, last, so the rules read as the chains, then where traffic enters them.
    rules.push(("PREROUTING", format!("-p tcp -j {INBOUND}")));
    if redirect.redirect_dns {
        rules.extend([
            ("OUTPUT", format!("-p udp -m udp --dport 53 -j {DNS}")),
            ("OUTPUT", format!("-p tcp -m tcp --dport 53 -j {DNS}")),
        ]);
    }
    rules.push(("OUTPUT", format!("-p tcp -j {OUTBOUND}")));

    RuleSet {
        chains: chains.into_iter().map(String::from).collect(),
        rules: rules.into_iter().map(|(chain, spec)| Rule { chain: chain.to_string(), spec }).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Redirect {
        Redirect {
            inbound_port: 15006,
            outbound_port: 15001,
            proxy_uid: 5678,
            exclude_inbound_ports: vec![],
            exclude_outbound_ports: vec![],
            exclude_outbound_ips: vec![],
            redirect_dns: false,
        }
    }

    fn excluding() -> Redirect {
        Redirect {
            inbound_port: 16006,
            outbound_port: 16001,
            proxy_uid: 1001,
            exclude_inbound_ports: vec![22, 8443],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_ips: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            redirect_dns: true,
        }
    }

    #[test]
    fn rule_sets_by_options_and_family() {
        let cases: [(&str, Redirect, Family, &str); 4] = [
            (
                "defaults, IPv4",
                defaults(),
                Family::V4,
                "-N WARD_INBOUND
                 -N WARD_OUTBOUND
                 -A WARD_INBOUND -p tcp -j REDIRECT --to-ports 15006
                 -A WARD_OUTBOUND -s 127.0.0.6/32 -o lo -j RETURN
                 -A WARD_OUTBOUND ! -d 127.0.0.0/8 -o lo -p tcp -m tcp ! --dport 53 -m owner --uid-owner 5678 -j WARD_INBOUND
                 -A WARD_OUTBOUND -m owner --uid-owner 5678 -j RETURN
                 -A WARD_OUTBOUND -o lo -j RETURN
                 -A WARD_OUTBOUND -p tcp -j REDIRECT --to-ports 15001
                 -A PREROUTING -p tcp -j WARD_INBOUND
                 -A OUTPUT -p tcp -j WARD_OUTBOUND",
            ),
            (
                "defaults, IPv6: loopback and passthrough addresses of the family",
                defaults(),
                Family::V6,
                "-N WARD_INBOUND
                 -N WARD_OUTBOUND
                 -A WARD_INBOUND -p tcp -j REDIRECT --to-ports 15006
                 -A WARD_OUTBOUND -s ::6/128 -o lo -j RETURN
                 -A WARD_OUTBOUND ! -d ::1/128 -o lo -p tcp -m tcp ! --dport 53 -m owner --uid-owner 5678 -j WARD_INBOUND
                 -A WARD_OUTBOUND -m owner --uid-owner 5678 -j RETURN
                 -A WARD_OUTBOUND -o lo -j RETURN
                 -A WARD_OUTBOUND -p tcp -j REDIRECT --to-ports 15001
                 -A PREROUTING -p tcp -j WARD_INBOUND
                 -A OUTPUT -p tcp -j WARD_OUTBOUND",
            ),
            (
                "exclusions and DNS, IPv4: only the IPv4 networks",
                excluding(),
                Family::V4,
                "-N WARD_INBOUND
                 -N WARD_OUTBOUND
                 -N WARD_DNS
                 -A WARD_INBOUND -p tcp -m tcp --dport 22 -j RETURN
                 -A WARD_INBOUND -p tcp -m tcp --dport 8443 -j RETURN
                 -A WARD_INBOUND -p tcp -j REDIRECT --to-ports 16006
                 -A WARD_OUTBOUND -d 10.0.0.0/8 -j RETURN
                 -A WARD_OUTBOUND -p tcp -m tcp --dport 5432 -j RETURN
                 -A WARD_OUTBOUND -s 127.0.0.6/32 -o lo -j RETURN
                 -A WARD_OUTBOUND ! -d 127.0.0.0/8 -o lo -p tcp -m tcp ! --dport 53 -m owner --uid-owner 1001 -j WARD_INBOUND
                 -A WARD_OUTBOUND -m owner --uid-owner 1001 -j RETURN
                 -A WARD_OUTBOUND -o lo -j RETURN
                 -A WARD_OUTBOUND -p tcp -j REDIRECT --to-ports 16001
                 -A WARD_DNS -m owner --uid-owner 1001 -j RETURN
                 -A WARD_DNS -p udp -j REDIRECT --to-ports 15053
                 -A WARD_DNS -p tcp -j REDIRECT --to-ports 15053
                 -A PREROUTING -p tcp -j WARD_INBOUND
                 -A OUTPUT -p udp -m udp --dport 53 -j WARD_DNS
                 -A OUTPUT -p tcp -m tcp --dport 53 -j WARD_DNS
                 -A OUTPUT -p tcp -j WARD_OUTBOUND",
            ),
            (
                "exclusions and DNS, IPv6: only the IPv6 networks",
                excluding(),
                Family::V6,
                "-N WARD_INBOUND
                 -N WARD_OUTBOUND
                 -N WARD_DNS
                 -A WARD_INBOUND -p tcp -m tcp --dport 22 -j RETURN
                 -A WARD_INBOUND -p tcp -m tcp --dport 8443 -j RETURN
                 -A WARD_INBOUND -p tcp -j REDIRECT --to-ports 16006
                 -A WARD_OUTBOUND -d fd00::/8 -j RETURN
                 -A WARD_OUTBOUND -p tcp -m tcp --dport 5432 -j RETURN
                 -A WARD_OUTBOUND -s ::6/128 -o lo -j RETURN
                 -A WARD_OUTBOUND ! -d ::1/128 -o lo -p tcp -m tcp ! --dport 53 -m owner --uid-owner 1001 -j WARD_INBOUND
                 -A WARD_OUTBOUND -m owner --uid-owner 1001 -j RETURN
                 -A WARD_OUTBOUND -o lo -j RETURN
                 -A WARD_OUTBOUND -p tcp -j REDIRECT --to-ports 16001
                 -A WARD_DNS -m owner --uid-owner 1001 -j RETURN
                 -A WARD_DNS -p udp -j REDIRECT --to-ports 15053
                 -A WARD_DNS -p tcp -j REDIRECT --to-ports 15053
                 -A PREROUTING -p tcp -j WARD_INBOUND
                 -A OUTPUT -p udp -m udp --dport 53 -j WARD_DNS
                 -A OUTPUT -p tcp -m tcp --dport 53 -j WARD_DNS
                 -A OUTPUT -p tcp -j WARD_OUTBOUND",
            ),
        ];
        for (name, redirect, family, expected) in cases {
            let expected: Vec<&str> = expected.lines().map(str::trim).collect();
            assert_eq!(rule_set(&redirect, family).additions(), expected, "{name}");
        }
    }

    #[test]
    fn removal_deletes_the_jumps_then_the_chains() {
        let removals = rule_set(&defaults(), Family::V4).removals();
        assert_eq!(
            removals,
            [
                "-D PREROUTING -p tcp -j WARD_INBOUND",
                "-D OUTPUT -p tcp -j WARD_OUTBOUND",
                "-F WARD_INBOUND",
                "-F WARD_OUTBOUND",
                "-X WARD_INBOUND",
                "-X WARD_OUTBOUND",
            ]
        );
    }

    #[test]
    fn sameness_ignores_the_order_of_chains_but_not_of_rules() {
        let installed = rule_set(&excluding(), Family::V4);
        let mut listed_otherwise = installed.clone();
        listed_otherwise.chains.reverse();
        let jumps = listed_otherwise.rules.iter().position(|rule| rule.chain == "PREROUTING").unwrap();
        listed_otherwise.rules.rotate_left(jumps);
        assert!(installed.same_as(&listed_otherwise));

        let mut reordered = installed.clone();
        reordered.rules.swap(0, 1);
        assert!(!installed.same_as(&reordered));
        assert!(!installed.same_as(&rule_set(&defaults(), Family::V4)));
        assert!(!installed.same_as(&RuleSet::default()));
    }

    #[test]
    fn a_transaction_is_one_nat_commit() {
        let lines = vec!["-N WARD_INBOUND".to_string(), "-X WARD_INBOUND".to_string()];
        assert_eq!(transaction(&lines), "*nat\n-N WARD_INBOUND\n-X WARD_INBOUND\nCOMMIT\n");
    }
}
