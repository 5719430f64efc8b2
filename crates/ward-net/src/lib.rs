//! Host networking that `ward install transparent-proxy` and the proxy must agree on: the
//! ports and addresses of the redirect rules, and the lookup of a redirected connection's
//! original destination.

#![warn(missing_docs)]

mod original_dst;
pub mod redirect;

pub use original_dst::original_dst;
