//! The REST API on Kuma's paths: resources, global secrets, types, version, audit log and user tokens.

mod admin;
mod caller;
mod error;
mod global_secrets;
mod identity;
mod path_names;
mod resources;

use axum::{
    Router,
    routing::{get, post},
};

use crate::{
    auth::Tokens,
    discovery::{builder::Snapshots, online::Online},
    identity::Identity,
    store::Store,
};

pub use caller::Caller;
pub use error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    /// The resource store.
    pub store: Store,
    /// Verifies and issues API tokens.
    pub tokens: Tokens,
    /// Mesh CAs and dataplane tokens.
    pub identity: Identity,
    /// The proxies connected to the discovery server.
    pub online: Online,
    /// The live snapshot of each mesh, for what the API shows computed (a MeshService's status).
    pub snapshots: Snapshots,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(admin::index))
        .route("/_resources", get(admin::resource_types))
        .route("/audit", get(admin::audit))
        .route("/tokens/user", post(admin::user_token))
        .route("/tokens/dataplane", post(identity::dataplane_token))
        .route("/tokens/dataplane/revocations", post(identity::revoke_dataplane_token))
        .route("/global-secrets", get(global_secrets::list))
        .route(
            "/global-secrets/{name}",
            get(global_secrets::get).put(global_secrets::put).delete(global_secrets::delete),
        )
        .route("/meshes", get(resources::list_meshes))
        .route("/meshes/{mesh}/_cas", get(identity::mesh_cas))
        .route("/meshes/{mesh}/signing-keys", post(identity::rotate_signing_key))
        .route("/meshes/{name}", get(resources::get_mesh).put(resources::put_mesh).delete(resources::delete_mesh))
        .route("/meshes/{mesh}/{plural}", get(resources::list_in_mesh))
        .route(
            "/meshes/{mesh}/{plural}/{name}",
            get(resources::get_in_mesh).put(resources::put_in_mesh).delete(resources::delete_in_mesh),
        )
        .route("/meshes/{mesh}/dataplanes/{name}/_authorization", get(resources::authorization))
        .route("/meshes/{mesh}/dataplanes/{name}/_rules", get(resources::rules))
        .route("/meshes/{mesh}/meshexternalservices/{name}/_authorization", get(resources::external_authorization))
        .route("/meshes/{mesh}/dataplanes/{name}/_overview", get(identity::dataplane_overview))
        .route_layer(axum::middleware::from_fn(path_names::check))
        .fallback(|| async { ApiError::not_found("no such API path") })
        .with_state(state)
}
