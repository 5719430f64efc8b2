//! What Ward's data-plane proxy and edge gateway share to serve HTTP safely: the request
//! framing guard in front of every server connection, one accept loop with connection caps
//! and a graceful drain, one set of limits, one body type, the hop-by-hop and header-spelling
//! rules, and the part of a rustls certificate verifier that checks handshake signatures.

pub mod accept;
pub mod body;
pub mod client;
pub mod framing;
pub mod headers;
pub mod limits;
pub mod server;
pub mod tls;

pub use body::{Body, BoxError};
pub use limits::Limits;
