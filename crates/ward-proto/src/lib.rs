//! The discovery API between the control plane and its proxies, generated from
//! `proto/discovery.proto`.

#![allow(missing_docs, clippy::all)]

/// `ward.discovery.v1`.
pub mod discovery {
    tonic::include_proto!("ward.discovery.v1");
}
