//! Handlers for `/global-secrets/...`: GlobalSecrets, which belong to no mesh. Their names are
//! for tokens of every mesh; their data, and every change, for global admins.

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use serde_json::Value;
use ward_api::ResourceType;

use super::{
    ApiError, ApiState, Caller,
    resources::{self, Page, ReadOptions, WriteOptions},
};

/// `GET /global-secrets`: names and times, never data.
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    caller.read_global()?;
    resources::list(&state, ResourceType::GlobalSecret, None, page, "/global-secrets").await
}

/// `GET /global-secrets/{name}[?showData=true]`.
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(options): Query<ReadOptions>,
) -> Result<Json<Value>, ApiError> {
    caller.read_global()?;
    resources::get(&state, &caller, ResourceType::GlobalSecret, "", &name, options).await
}

/// `PUT /global-secrets/{name}[?dryRun=true]`.
pub async fn put(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(options): Query<WriteOptions>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    caller.global_admin()?;
    let doc = resources::read_document(&headers, body).await?;
    let resource = resources::resource_for_path(doc, ResourceType::GlobalSecret, "", &name)?;
    resources::write(&state, &caller, resource, &[], options).await
}

/// `DELETE /global-secrets/{name}`.
pub async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.global_admin()?;
    state.store.delete(ResourceType::GlobalSecret, "", &name, &caller.actor()).await?;
    Ok(StatusCode::OK)
}
