//! The ports and addresses the transparent-proxy rules send traffic to, and the proxy listens
//! on. The installer takes its defaults from here, so the two cannot drift apart.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Port of the proxy's inbound listener: TCP arriving at the host is redirected here.
pub const INBOUND_PORT: u16 = 15006;

/// Port of the proxy's outbound listener: TCP the host's applications send is redirected here.
pub const OUTBOUND_PORT: u16 = 15001;

/// Port of the proxy's DNS server on loopback (UDP and TCP); `--redirect-dns` sends queries here.
pub const DNS_PORT: u16 = 15053;

/// Source address the inbound side binds to reach a local application at the host's own
/// address; the rules never redirect it, which breaks the loop back into the inbound listener.
pub const INBOUND_PASSTHROUGH_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// IPv6 counterpart of [`INBOUND_PASSTHROUGH_V4`]; not configured on `lo`, so binding it
/// needs `IPV6_FREEBIND`.
pub const INBOUND_PASSTHROUGH_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);
