//! `ward install transparent-proxy` and `ward uninstall transparent-proxy`: nat rules that send
//! the host's TCP (and, if asked, its DNS) through the local proxy, with applications unchanged.
//!
//! Install reads each family's nat table, compares Ward's part with the rules the options ask
//! for, and commits the difference as one `iptables-restore --noflush` transaction per family
//! (remove the old Ward chains, add the new ones), so an unchanged install changes nothing and a
//! failed one leaves nothing. When IPv6 fails after IPv4 was committed, IPv4 is put back.
//! Uninstall removes Ward's chains and the rules that jump into them from every backend.

mod iptables;
mod rules;
mod saved;

use anyhow::{bail, ensure};
use clap::{ArgGroup, Args, Subcommand};
use ipnet::IpNet;
use ward_net::redirect::{DNS_PORT, INBOUND_PORT, OUTBOUND_PORT};

use self::{
    iptables::Backend,
    rules::{Family, Redirect, RuleSet},
};

/// What `ward install` sets up.
#[derive(Debug, Subcommand)]
pub enum InstallCommand {
    /// Redirect the host's TCP through the local proxy with iptables (nat table, IPv4 and IPv6).
    TransparentProxy(TransparentProxyArgs),
}

/// What `ward uninstall` removes.
#[derive(Debug, Subcommand)]
pub enum UninstallCommand {
    /// Remove the transparent proxy's chains, and the rules that jump into them, from every backend.
    TransparentProxy,
}

/// Options of `ward install transparent-proxy`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("proxy").required(true).args(["proxy_uid", "proxy_user"])))]
pub struct TransparentProxyArgs {
    /// Port of the proxy's inbound listener, where TCP arriving at the host is sent.
    #[arg(long, value_name = "PORT", default_value_t = INBOUND_PORT, value_parser = port())]
    redirect_inbound_port: u16,
    /// Port of the proxy's outbound listener, where TCP leaving the host's applications is sent.
    #[arg(long, value_name = "PORT", default_value_t = OUTBOUND_PORT, value_parser = port())]
    redirect_outbound_port: u16,
    /// UID the proxy runs as; its own traffic is never redirected.
    #[arg(long, value_name = "UID", value_parser = proxy_uid)]
    proxy_uid: Option<u32>,
    /// User the proxy runs as, instead of --proxy-uid.
    #[arg(long, value_name = "NAME", value_parser = proxy_user)]
    proxy_user: Option<u32>,
    /// Inbound ports that reach the host directly, e.g. 22 for SSH.
    #[arg(long, value_name = "PORT,...", value_delimiter = ',', value_parser = port())]
    exclude_inbound_ports: Vec<u16>,
    /// Outbound ports that are not redirected.
    #[arg(long, value_name = "PORT,...", value_delimiter = ',', value_parser = port())]
    exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations that are not redirected: addresses or networks, IPv4 or IPv6.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',', value_parser = cidr)]
    exclude_outbound_ips: Vec<IpNet>,
    /// Also send every process's DNS queries (UDP and TCP port 53), but the proxy's, to the proxy
    /// on port 15053.
    #[arg(long)]
    redirect_dns: bool,
    /// Print the rules and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Install with this backend instead of detecting it (where the host's rules are, else nft).
    #[arg(long, value_enum, value_name = "BACKEND")]
    iptables_backend: Option<Backend>,
}

impl TransparentProxyArgs {
    fn redirect(&self) -> anyhow::Result<Redirect> {
        let ports = [self.redirect_inbound_port, self.redirect_outbound_port, DNS_PORT];
        ensure!(
            ports[0] != ports[1] && !ports[..2].contains(&DNS_PORT),
            "--redirect-inbound-port ({}) and --redirect-outbound-port ({}) must differ from each other and \
             from the proxy's DNS port {DNS_PORT}",
            ports[0],
            ports[1]
        );
        Ok(Redirect {
            inbound_port: self.redirect_inbound_port,
            outbound_port: self.redirect_outbound_port,
            proxy_uid: self.proxy_uid.or(self.proxy_user).expect("clap requires --proxy-uid or --proxy-user"),
            exclude_inbound_ports: deduplicated(&self.exclude_inbound_ports),
            exclude_outbound_ports: deduplicated(&self.exclude_outbound_ports),
            exclude_outbound_ips: deduplicated(&self.exclude_outbound_ips),
            redirect_dns: self.redirect_dns,
        })
    }
}

fn deduplicated<T: PartialEq + Clone>(items: &[T]) -> Vec<T> {
    items.iter().enumerate().filter(|(i, item)| !items[..*i].contains(item)).map(|(_, item)| item.clone()).collect()
}

fn port() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..)
}

fn cidr(text: &str) -> Result<IpNet, String> {
    let net = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| "not an IP address or network (e.g. 10.0.0.0/8, fd00::/8, 192.0.2.7)".to_string())?;
    if net.trunc() != net {
        return Err(format!("host bits are set; the network is {}", net.trunc()));
    }
    Ok(net)
}

fn proxy_uid(text: &str) -> Result<u32, String> {
    let uid = text.parse::<u32>().map_err(|_| "not a numeric user id".to_string())?;
    not_root(uid)
}

fn proxy_user(name: &str) -> Result<u32, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => not_root(user.uid.as_raw()),
        Ok(None) => Err("no such user on this host".into()),
        Err(e) => Err(format!("cannot look the user up: {e}")),
    }
}

fn not_root(uid: u32) -> Result<u32, String> {
    if uid == 0 {
        return Err(
            "the proxy must not run as root: the rules exempt its user, and would exempt every root process".into()
        );
    }
    Ok(uid)
}

/// One backend and family's change: Ward's rules `before` replaced by `after`.
struct Change {
    backend: Backend,
    family: Family,
    before: RuleSet,
    after: RuleSet,
}

impl Change {
    fn forward(&self) -> String {
        rules::transaction(&[self.before.removals(), self.after.additions()].concat())
    }

    fn backward(&self) -> String {
        rules::transaction(&[self.after.removals(), self.before.additions()].concat())
    }
}

/// Commits the changes in order; when one fails, takes back those already committed, so the host
/// ends as it started.
fn apply(changes: &[Change]) -> anyhow::Result<()> {
    for (i, change) in changes.iter().enumerate() {
        let Err(error) = iptables::restore(change.backend, change.family, &change.forward()) else { continue };
        let undo_failures: Vec<String> = changes[..i]
            .iter()
            .rev()
            .filter_map(|done| iptables::restore(done.backend, done.family, &done.backward()).err())
            .map(|e| e.to_string())
            .collect();
        if undo_failures.is_empty() {
            bail!("{error}; nothing was changed");
        }
        bail!(
            "{error}; undoing what was already committed failed too: {}; compare `iptables-save` with what you expect",
            undo_failures.join("; ")
        );
    }
    Ok(())
}

fn require_root(action: &str, hint: &str) -> anyhow::Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "ward {action} transparent-proxy changes the host's nat table and must run as root{hint}"
    );
    Ok(())
}

fn names(families: &[Family]) -> String {
    families.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
}

/// `ward install ...`.
pub fn install(command: InstallCommand) -> anyhow::Result<()> {
    let InstallCommand::TransparentProxy(args) = command;
    let redirect = args.redirect()?;
    if args.dry_run {
        print!("{}", dry_run(&redirect));
        return Ok(());
    }
    require_root("install", " (--dry-run shows the rules without root)")?;
    let backend = match args.iptables_backend {
        Some(backend) => backend,
        None => iptables::detect()?,
    };
    // Rules in both backends would both apply, in no defined order.
    for other in Backend::ALL.into_iter().filter(|other| *other != backend) {
        let elsewhere = Family::ALL.into_iter().filter_map(|family| iptables::save(other, family).ok());
        if elsewhere.map(|saved| saved::installed(&saved)).any(|found| !found.is_empty()) {
            bail!(
                "the transparent proxy is installed with {}; run `ward uninstall transparent-proxy` before \
                 installing with {}",
                other.name(),
                backend.name()
            );
        }
    }
    let mut families = Vec::new();
    let mut changes = Vec::new();
    for family in Family::ALL {
        if family == Family::V6 && !host_has_ipv6() {
            continue;
        }
        let saved = match iptables::save(backend, family) {
            Ok(saved) => saved,
            Err(e) if family == Family::V6 => {
                eprintln!("warning: IPv6 traffic will not be redirected: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let before = saved::installed(&saved);
        let after = rules::rule_set(&redirect, family);
        if !before.same_as(&after) {
            changes.push(Change { backend, family, before, after });
        }
        families.push(family);
    }
    let (backend, families) = (backend.name(), names(&families));
    if changes.is_empty() {
        println!(
            "The transparent proxy is already installed with these options ({backend}: {families}); nothing changed."
        );
        return Ok(());
    }
    apply(&changes)?;
    let verb = if changes.iter().any(|c| !c.before.is_empty()) { "Updated" } else { "Installed" };
    let dns = if redirect.redirect_dns { format!(", DNS to 127.0.0.1:{DNS_PORT}") } else { String::new() };
    println!(
        "{verb} the transparent proxy with {backend} ({families}): inbound TCP to port {}, outbound TCP to port {}{dns}; \
         traffic of UID {} is not redirected.",
        redirect.inbound_port, redirect.outbound_port, redirect.proxy_uid
    );
    Ok(())
}

/// `ward uninstall ...`: reads every backend and family first, then removes all of Ward's rules
/// or, if one removal fails, none.
pub fn uninstall(command: UninstallCommand) -> anyhow::Result<()> {
    let UninstallCommand::TransparentProxy = command;
    require_root("uninstall", "")?;
    let mut changes = Vec::new();
    let mut readable = 0;
    for backend in Backend::ALL {
        for family in Family::ALL {
            let saved = match iptables::save(backend, family) {
                Ok(saved) => saved,
                Err(iptables::Error::Missing { .. }) => continue,
                Err(e) => bail!("{e}; nothing was changed"),
            };
            readable += 1;
            let before = saved::installed(&saved);
            if !before.is_empty() {
                changes.push(Change { backend, family, before, after: RuleSet::default() });
            }
        }
    }
    ensure!(
        readable > 0,
        "no iptables programs found (iptables-nft-save, iptables-legacy-save): install the iptables package"
    );
    if changes.is_empty() {
        println!("No transparent-proxy rules found; nothing changed.");
        return Ok(());
    }
    apply(&changes)?;
    for backend in Backend::ALL {
        let families: Vec<Family> = changes.iter().filter(|c| c.backend == backend).map(|c| c.family).collect();
        if !families.is_empty() {
            println!("Removed the transparent proxy's rules from {} ({}).", backend.name(), names(&families));
        }
    }
    Ok(())
}

fn host_has_ipv6() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
}

/// What `--dry-run` prints: each family's rules as the transaction install would commit on a
/// host without them.
fn dry_run(redirect: &Redirect) -> String {
    let mut text = String::from("# The rules `ward install transparent-proxy` adds; nothing was changed.\n");
    for (family, program) in [(Family::V4, "iptables-restore"), (Family::V6, "ip6tables-restore")] {
        text.push_str(&format!("# {}, for {program} --noflush:\n", family.name()));
        text.push_str(&rules::transaction(&rules::rule_set(redirect, family).additions()));
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: TransparentProxyArgs,
    }

    fn parse(line: &str) -> Result<Redirect, String> {
        let words = std::iter::once("transparent-proxy").chain(line.split_whitespace());
        let cli = Cli::try_parse_from(words).map_err(|e| e.to_string())?;
        cli.args.redirect().map_err(|e| e.to_string())
    }

    #[test]
    fn options_become_a_redirect() {
        let redirect = parse(
            "--proxy-uid 5678 --redirect-inbound-port 16006 --exclude-inbound-ports 22,8443,22 \
             --exclude-outbound-ports 5432 --exclude-outbound-ips 10.0.0.0/8,192.0.2.7,fd00::/8 --redirect-dns",
        )
        .unwrap();
        assert_eq!(
            redirect,
            Redirect {
                inbound_port: 16006,
                outbound_port: OUTBOUND_PORT,
                proxy_uid: 5678,
                exclude_inbound_ports: vec![22, 8443],
                exclude_outbound_ports: vec![5432],
                exclude_outbound_ips: ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"].map(|n| n.parse().unwrap()).to_vec(),
                redirect_dns: true,
            }
        );
        assert_eq!(parse("--proxy-uid 1").unwrap().inbound_port, INBOUND_PORT);
    }

    #[test]
    fn bad_options_are_refused_naming_the_flag_and_the_reason() {
        let cases = [
            ("", "--proxy-uid <UID>|--proxy-user <NAME>"),
            ("--proxy-uid 7 --proxy-user nobody", "'--proxy-uid <UID>' cannot be used with '--proxy-user <NAME>'"),
            ("--proxy-uid 0", "'--proxy-uid <UID>': the proxy must not run as root"),
            ("--proxy-uid seven", "'--proxy-uid <UID>': not a numeric user id"),
            ("--proxy-user root", "'--proxy-user <NAME>': the proxy must not run as root"),
            ("--proxy-user no-such-user-here", "'--proxy-user <NAME>': no such user on this host"),
            (
                "--proxy-uid 7 --redirect-inbound-port 70000",
                "'--redirect-inbound-port <PORT>': 70000 is not in 1..=65535",
            ),
            ("--proxy-uid 7 --redirect-outbound-port 0", "'--redirect-outbound-port <PORT>': 0 is not in 1..=65535"),
            ("--proxy-uid 7 --exclude-inbound-ports 22,x", "'--exclude-inbound-ports <PORT,...>'"),
            ("--proxy-uid 7 --exclude-outbound-ports 99999", "'--exclude-outbound-ports <PORT,...>': 99999 is not in"),
            (
                "--proxy-uid 7 --exclude-outbound-ips 10.0.0.0/33",
                "'--exclude-outbound-ips <CIDR,...>': not an IP address",
            ),
            ("--proxy-uid 7 --exclude-outbound-ips 10.1.2.3/8", "host bits are set; the network is 10.0.0.0/8"),
            ("--proxy-uid 7 --iptables-backend iptables", "'--iptables-backend <BACKEND>'"),
            (
                "--proxy-uid 7 --redirect-outbound-port 15006",
                "--redirect-inbound-port (15006) and --redirect-outbound-port (15006) must differ",
            ),
            ("--proxy-uid 7 --redirect-inbound-port 15053", "from the proxy's DNS port 15053"),
        ];
        for (line, expected) in cases {
            let error = parse(line).expect_err(line);
            assert!(error.contains(expected), "{line:?}: {error}");
        }
    }

    #[test]
    fn dry_run_shows_both_families_as_restore_input() {
        let text = dry_run(&parse("--proxy-uid 5678").unwrap());
        assert!(text.starts_with("# The rules `ward install transparent-proxy` adds; nothing was changed.\n"));
        assert!(text.contains("# IPv4, for iptables-restore --noflush:\n*nat\n-N WARD_INBOUND\n"));
        assert!(text.contains("# IPv6, for ip6tables-restore --noflush:\n*nat\n-N WARD_INBOUND\n"));
        assert_eq!(text.matches("COMMIT\n").count(), 2);
    }

    #[test]
    fn a_change_and_its_undo_are_mirror_transactions() {
        let old = rules::rule_set(&parse("--proxy-uid 5678").unwrap(), Family::V4);
        let new = rules::rule_set(&parse("--proxy-uid 5678 --redirect-dns").unwrap(), Family::V4);
        let change = Change { backend: Backend::Nft, family: Family::V4, before: old.clone(), after: new.clone() };
        assert_eq!(change.forward(), rules::transaction(&[old.removals(), new.additions()].concat()));
        assert_eq!(change.backward(), rules::transaction(&[new.removals(), old.additions()].concat()));
        let fresh =
            Change { backend: Backend::Nft, family: Family::V4, before: RuleSet::default(), after: new.clone() };
        assert_eq!(fresh.forward(), rules::transaction(&new.additions()));
    }
}
