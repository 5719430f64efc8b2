//! The limits every server connection and listener is held to.

use std::time::Duration;

/// Limits of one listener and each of its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (HTTP/1) or header list (HTTP/2), bytes.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// Time a client has to send a request head (and a TLS handshake): the whole HTTP/1 head,
    /// or an HTTP/2 header block from its HEADERS frame to its last CONTINUATION.
    pub header_read_timeout: Duration,
    /// A connection moving no byte for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once on one listener.
    pub max_connections: usize,
    /// Most connections open at once from one client address on one listener (none: no cap).
    pub max_connections_per_client: Option<usize>,
    /// Whether request headers whose names contain `_` are passed on; by default they are
    /// dropped, as nginx does, since many applications read `X_Foo` as `X-Foo`.
    pub allow_underscores_in_headers: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            max_connections_per_client: None,
            allow_underscores_in_headers: false,
        }
    }
}
