//! Where a redirected connection was going before the nat table's REDIRECT sent it here.

use std::{io, net::SocketAddr, os::fd::AsFd};

use socket2::SockRef;

/// The address the peer of an accepted TCP connection originally connected to, as connection
/// tracking remembers it: `SO_ORIGINAL_DST` for IPv4 (also for IPv4 reaching a dual-stack
/// socket) and `IP6T_SO_ORIGINAL_DST` for IPv6. For a connection that was not redirected this
/// is the socket's own local address; where connection tracking is not running it fails with
/// `ENOENT`.
pub fn original_dst(socket: &impl AsFd) -> io::Result<SocketAddr> {
    let socket = SockRef::from(socket);
    let local = ip_address(socket.local_addr()?)?;
    let original = match local {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => socket.original_dst_v6()?,
        _ => socket.original_dst_v4()?,
    };
    ip_address(original)
}

fn ip_address(address: socket2::SockAddr) -> io::Result<SocketAddr> {
    address.as_socket().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IPv4 or IPv6 socket"))
}
