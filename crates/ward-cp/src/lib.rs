//! Ward's control plane: the resource store, the REST API and its access control.

pub mod api;
pub mod auth;
pub mod data_dir;
pub mod discovery;
pub mod identity;
mod mesh_service_generator;
pub mod provided_files;
pub mod run;
pub mod secret_resources;
pub mod secrets;
pub mod store;
