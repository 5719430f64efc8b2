//! Ward's resource model: Kuma-format resources, their parsing and validation, and
//! the authorization decision. Pure: no I/O, no network.

#[macro_use]
mod string_enum;
pub mod dataplane;
pub mod duration;
pub mod error;
pub mod identity_template;
pub mod labels;
pub mod membership;
pub mod mesh;
pub mod mesh_circuit_breaker;
pub mod mesh_external_service;
pub mod mesh_fault_injection;
pub mod mesh_health_check;
pub mod mesh_http_route;
pub mod mesh_identity;
pub mod mesh_load_balancing_strategy;
pub mod mesh_opa;
pub mod mesh_rate_limit;
pub mod mesh_retry;
pub mod mesh_service;
pub mod mesh_tcp_route;
pub mod mesh_timeout;
pub mod mesh_trust;
pub mod metrics;
pub mod names;
pub mod parse;
pub mod permission;
pub mod policy;
pub mod resource;
pub mod route_backend;
pub mod rules;
pub mod secret;
pub mod secure_data_source;
pub mod spiffe;
mod targeting;
pub mod traffic_permission;
mod yaml;

pub use error::{Cause, ValidationError};
pub use resource::{Meta, Resource, ResourceType, Spec};
pub use spiffe::{SpiffeId, SpiffeIdError};
