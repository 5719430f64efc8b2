//! ip-restriction: allow or deny client addresses by IPv4 and IPv6 CIDR; deny wins.

use std::net::IpAddr;

use http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use super::{Compile, Plugin};
use crate::exchange::Exchange;
use crate::reply::Reply;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    status: Option<u16>,
    message: Option<String>,
}

/// A compiled ip-restriction configuration.
pub(crate) struct IpRestriction {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    status: StatusCode,
    message: Option<String>,
}

/// An address or a CIDR block.
pub(crate) fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>().ok().or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let mut nets = |field: &str, list: &[String]| -> Vec<IpNet> {
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match parse_net(text) {
                Some(net) => out.push(net.trunc()),
                None => cx.error(&format!("{field}[{i}]"), format!("'{text}' is not an IP address or CIDR block")),
            }
        }
        out
    };
    let allow = nets("allow", &c.allow);
    let deny = nets("deny", &c.deny);
    if c.allow.is_empty() && c.deny.is_empty() {
        cx.error("allow", "at least one of these fields must be non-empty: allow, deny");
    }
    let status = match c.status.map(StatusCode::from_u16) {
        None => StatusCode::FORBIDDEN,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            cx.error("status", "must be an HTTP status code");
            return None;
        }
    };
    Some(Plugin::IpRestriction(IpRestriction { allow, deny, status, message: c.message }))
}

impl IpRestriction {
    pub(super) fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        if self.refuses(ex.client_ip) {
            let message = match &self.message {
                Some(m) => m.clone(),
                None => format!("IP address not allowed: {}", ex.client_ip),
            };
            return Err(Reply::error(self.status, message));
        }
        Ok(())
    }

    fn refuses(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.deny.iter().any(|n| n.contains(&ip))
            || (!self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_and_families_match() {
        let nets = |v: &[&str]| v.iter().map(|t| parse_net(t).unwrap().trunc()).collect::<Vec<_>>();
        let plugin = IpRestriction {
            allow: nets(&["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"]),
            deny: nets(&["10.1.0.0/16", "2001:db8:bad::1"]),
            status: StatusCode::FORBIDDEN,
            message: None,
        };
        let table = [
            ("10.2.3.4", false),
            ("10.1.2.3", true),
            ("11.0.0.1", true),
            ("127.0.0.1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.1.0.1", true),
            ("2001:db8::1", false),
            ("2001:db8:bad::1", true),
            ("2001:db9::1", true),
        ];
        for (ip, refused) in table {
            assert_eq!(plugin.refuses(ip.parse().unwrap()), refused, "{ip}");
        }
    }
}
