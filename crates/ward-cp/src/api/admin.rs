//! Handlers for `/`, `/_resources`, `/audit` and `/tokens/user`.

use axum::{
    Json,
    extract::{Query, State},
};
use serde::Deserialize;
use serde_json::{Value, json};
use ward_api::{duration::KumaDuration, names::check_name, resource::TYPES};

use super::{ApiError, ApiState, Caller};
use crate::auth::Role;

/// `GET /`: who we are.
pub async fn index(_caller: Caller) -> Json<Value> {
    Json(json!({ "product": "Ward", "tagline": "Ward", "version": env!("CARGO_PKG_VERSION") }))
}

/// `GET /_resources`: the resource types and their paths.
pub async fn resource_types(_caller: Caller) -> Json<Value> {
    let resources: Vec<Value> = TYPES
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "path": t.plural,
                "scope": t.scope,
                "singularDisplayName": t.name,
                "pluralDisplayName": t.plural,
                "readOnly": false,
            })
        })
        .collect();
    Json(json!({ "resources": resources }))
}

/// `?size=&offset=` of the audit log.
#[derive(Debug, Deserialize)]
pub struct AuditPage {
    size: Option<u64>,
    offset: Option<u64>,
}

/// `GET /audit`: every accepted change (global admins only).
pub async fn audit(
    State(state): State<ApiState>,
    caller: Caller,
    Query(page): Query<AuditPage>,
) -> Result<Json<Value>, ApiError> {
    caller.global_admin()?;
    let (entries, total) =
        state.store.audit_log(page.offset.unwrap_or(0), page.size.unwrap_or(1000).clamp(1, 10_000)).await?;
    Ok(Json(json!({ "total": total, "items": entries })))
}

/// Body of `POST /tokens/user`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserTokenRequest {
    name: String,
    role: String,
    #[serde(default)]
    meshes: Option<Vec<String>>,
    valid_for: String,
}

/// `POST /tokens/user`: issue a user token (global admins only).
pub async fn user_token(
    State(state): State<ApiState>,
    caller: Caller,
    Json(request): Json<UserTokenRequest>,
) -> Result<String, ApiError> {
    caller.global_admin()?;
    let subject = "tokens/user";
    check_name(&request.name).map_err(|e| ApiError::bad_field(subject, "name", &e))?;
    let role = Role::parse(&request.role)
        .ok_or_else(|| ApiError::bad_field(subject, "role", "must be one of admin, viewer"))?;
    let valid_for =
        KumaDuration::parse(&request.valid_for).map_err(|e| ApiError::bad_field(subject, "validFor", &e))?;
    if valid_for.get().is_zero() {
        return Err(ApiError::bad_field(subject, "validFor", "must be longer than 0s"));
    }
    if let Some(meshes) = &request.meshes {
        if meshes.is_empty() {
            return Err(ApiError::bad_field(subject, "meshes", "must name at least one mesh when given"));
        }
        for (i, mesh) in meshes.iter().enumerate() {
            check_name(mesh).map_err(|e| ApiError::bad_field(subject, &format!("meshes[{i}]"), &e))?;
        }
    }
    tracing::info!(by = %caller.0.sub, name = %request.name, role = %request.role, "issued a user token");
    Ok(state.tokens.issue(&request.name, role, request.meshes, valid_for.get()))
}
