//! The demo's ports: every one an offset from `--port-base` (default 8000), so one flag moves them all.

use anyhow::Context;

/// The default base: the gateway answers on 8000, as Kong's does.
pub const DEFAULT_BASE: u16 = 8000;
/// The highest offset used.
const SPAN: u16 = 903;

/// A port of the demo that something else uses.
#[derive(Debug, thiserror::Error)]
#[error("port {port} ({what}) is busy ({error}): stop what uses it or pass --port-base N to move every port")]
pub struct BusyPort {
    /// The port.
    pub port: u16,
    /// What the demo wanted it for.
    pub what: String,
    /// Why it could not be bound.
    pub error: std::io::Error,
}

/// The three services, numbered as in the example's ports (users 1, items 2, invoices 3).
pub const SERVICES: [&str; 3] = ["users", "items", "invoices"];

/// Every port of a demo run.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    base: u16,
}

impl Ports {
    /// Ports from `base`; refused when the last one would pass 65535.
    pub fn new(base: u16) -> anyhow::Result<Self> {
        base.checked_add(SPAN)
            .with_context(|| format!("--port-base {base}: too high, the demo needs {base}..{base}+{SPAN}"))?;
        Ok(Ports { base })
    }

    /// How far the example's ports (written for the default base) move.
    pub fn shift(self) -> i32 {
        i32::from(self.base) - i32::from(DEFAULT_BASE)
    }

    /// The gateway's HTTP listener.
    pub fn gateway(self) -> u16 {
        self.base
    }

    /// The gateway's admin listener.
    pub fn gateway_admin(self) -> u16 {
        self.base + 1
    }

    /// The gateway's HTTPS listener.
    pub fn gateway_tls(self) -> u16 {
        self.base + 443
    }

    /// The control plane's API.
    pub fn api(self) -> u16 {
        self.base + 681
    }

    /// The control plane's discovery server.
    pub fn discovery(self) -> u16 {
        self.base + 678
    }

    /// Service `i`'s application (1-based).
    pub fn app(self, i: usize) -> u16 {
        self.base + 100 + i as u16
    }

    /// Service `i`'s inbound.
    pub fn inbound(self, i: usize) -> u16 {
        self.base + 200 + i as u16
    }

    /// The outbound of caller `c` to service `s`.
    pub fn outbound(self, c: usize, s: usize) -> u16 {
        self.base + 300 + 10 * c as u16 + s as u16
    }

    /// The admin listener of service `i`'s proxy (4: the gateway's mesh member).
    pub fn proxy_admin(self, i: usize) -> u16 {
        self.base + 900 + i as u16
    }

    /// Every port with what uses it.
    pub fn all(self) -> Vec<(u16, String)> {
        let mut ports = vec![
            (self.gateway(), "gateway HTTP".to_string()),
            (self.gateway_admin(), "gateway admin".to_string()),
            (self.gateway_tls(), "gateway HTTPS".to_string()),
            (self.api(), "control plane API".to_string()),
            (self.discovery(), "control plane discovery".to_string()),
        ];
        for (i, s) in SERVICES.iter().enumerate().map(|(i, s)| (i + 1, s)) {
            ports.push((self.app(i), format!("{s} application")));
            ports.push((self.inbound(i), format!("{s} inbound")));
            ports.push((self.proxy_admin(i), format!("{s} proxy admin")));
            for (j, t) in SERVICES.iter().enumerate().map(|(j, t)| (j + 1, t)) {
                ports.push((self.outbound(i, j), format!("{s} outbound to {t}")));
            }
        }
        ports
    }

    /// Fails naming the first port something else already uses.
    pub fn check_free(self) -> Result<(), BusyPort> {
        self.first_busy().map_or(Ok(()), Err)
    }

    /// The first port something uses, and what the demo wanted it for.
    pub fn first_busy(self) -> Option<BusyPort> {
        self.all().into_iter().find_map(|(port, what)| {
            let error = std::net::TcpListener::bind(("127.0.0.1", port)).err()?;
            Some(BusyPort { port, what, error })
        })
    }

    /// The ports still in use (after a stop they should all be free again).
    pub fn busy(self) -> Vec<u16> {
        self.all()
            .into_iter()
            .filter(|(p, _)| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
            .map(|(p, _)| p)
            .collect()
    }
}
