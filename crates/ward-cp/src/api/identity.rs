//! Handlers for mesh identity: CAs of a mesh, dataplane tokens, signing keys, revocation.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, State},
};
use serde::Deserialize;
use serde_json::{Value, json};
use ward_api::{dataplane::SERVICE_TAG, duration::KumaDuration, names::check_name, resource::ResourceType};

use super::{ApiError, ApiState, Caller};
use crate::identity::IdentityError;

/// `GET /meshes/{mesh}/_cas`: each backend's CA (public part only) and the trust bundle.
pub async fn mesh_cas(
    State(state): State<ApiState>,
    caller: Caller,
    Path(mesh): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.read(&mesh)?;
    let Some(resource) = state.store.get(ResourceType::Mesh, &mesh, &mesh).await? else {
        return Err(ApiError::not_found(format!("meshes/{mesh} not found")));
    };
    let ward_api::Spec::Mesh(spec) = &resource.spec else {
        return Err(ApiError::internal(format!("meshes/{mesh} does not hold a Mesh")));
    };
    let enabled = spec.enabled_backend().map(|b| b.name.clone());
    let backends: Vec<Value> = state
        .identity
        .ca_infos(&mesh)
        .await?
        .into_iter()
        .map(|(backend, info)| {
            json!({
                "backend": backend,
                "enabled": enabled.as_deref() == Some(backend.as_str()),
                "fingerprintSha256": info.fingerprint_sha256,
                "subject": info.subject,
                "notBefore": info.not_before,
                "notAfter": info.not_after,
            })
        })
        .collect();
    Ok(Json(json!({ "mesh": mesh, "enabledBackend": enabled, "backends": backends })))
}

/// A service tag given as one string or, as Kuma writes it, a list of one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TagValue {
    /// `kuma.io/service: web`.
    One(String),
    /// `kuma.io/service: [web]`.
    List(Vec<String>),
}

/// Body of `POST /tokens/dataplane`, as Kuma's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataplaneTokenRequest {
    mesh: String,
    name: String,
    tags: BTreeMap<String, TagValue>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    valid_for: String,
}

/// `POST /tokens/dataplane`: a token that lets one dataplane obtain the identities of the
/// services it names (one per service its inbounds serve).
pub async fn dataplane_token(
    State(state): State<ApiState>,
    caller: Caller,
    Json(request): Json<DataplaneTokenRequest>,
) -> Result<String, ApiError> {
    let subject = "tokens/dataplane";
    let bad = |field: &str, message: &str| ApiError::bad_field(subject, field, message);
    check_name(&request.mesh).map_err(|e| bad("mesh", &e))?;
    caller.write(&request.mesh)?;
    check_name(&request.name).map_err(|e| bad("name", &e))?;
    if let Some(kind) = request.kind.as_deref().filter(|k| *k != "dataplane") {
        return Err(bad("type", &format!("must be dataplane (got {kind:?})")));
    }
    if let Some(other) = request.tags.keys().find(|k| *k != SERVICE_TAG) {
        return Err(bad(&format!("tags.{other}"), &format!("only {SERVICE_TAG} can be granted")));
    }
    let services: Vec<&str> = match request.tags.get(SERVICE_TAG) {
        Some(TagValue::One(s)) => vec![s.as_str()],
        Some(TagValue::List(list)) => list.iter().map(String::as_str).collect(),
        None => return Err(bad("tags", &format!("tag {SERVICE_TAG:?} is required"))),
    };
    if services.is_empty() {
        return Err(bad(&format!("tags.{SERVICE_TAG}"), "must name at least one service"));
    }
    for (i, service) in services.iter().enumerate() {
        let at = format!("tags.{SERVICE_TAG}[{i}]");
        ward_api::names::check_service(service).map_err(|e| bad(&at, &e))?;
        if services[..i].contains(service) {
            return Err(bad(&at, &format!("service {service:?} is named twice")));
        }
    }
    let valid_for = KumaDuration::parse(&request.valid_for).map_err(|e| bad("validFor", &e))?;
    if valid_for.get().is_zero() {
        return Err(bad("validFor", "must be longer than 0s"));
    }
    let (token, claims) =
        state.identity.issue_token(&request.mesh, &request.name, &services, valid_for.get(), &caller.actor()).await?;
    tracing::info!(by = %caller.0.sub, mesh = %claims.mesh, dataplane = %claims.name, services = ?services, jti = %claims.jti, "issued a dataplane token");
    Ok(token)
}

/// Body of `POST /tokens/dataplane/revocations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    jti: String,
}

/// `POST /tokens/dataplane/revocations`: revoke a dataplane token by its ID (global admins).
pub async fn revoke_dataplane_token(
    State(state): State<ApiState>,
    caller: Caller,
    Json(request): Json<RevokeRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.global_admin()?;
    let jti = request.jti.trim();
    if jti.is_empty() || jti.len() > 128 || !jti.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ApiError::bad_field(
            "tokens/dataplane/revocations",
            "jti",
            "must be a token ID (letters, digits, '-')",
        ));
    }
    let newly = state.identity.revoke(jti, &caller.actor()).await?;
    Ok(Json(json!({ "jti": jti, "revoked": true, "alreadyRevoked": !newly })))
}

/// Body of `POST /meshes/{mesh}/signing-keys`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RotateRequest {
    #[serde(default)]
    retire_older: bool,
}

/// `POST /meshes/{mesh}/signing-keys`: a new key signs the mesh's dataplane tokens from now on.
pub async fn rotate_signing_key(
    State(state): State<ApiState>,
    caller: Caller,
    Path(mesh): Path<String>,
    Json(request): Json<RotateRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.write(&mesh)?;
    let kid = state.identity.rotate_signing_key(&mesh, request.retire_older, &caller.actor()).await?;
    Ok(Json(json!({ "mesh": mesh, "kid": kid, "olderKeysRetired": request.retire_older })))
}

/// `GET /meshes/{mesh}/dataplanes/{name}/_overview`: the Dataplane, whether its proxy is
/// connected, and the certificate it was issued last for each of its identities.
pub async fn dataplane_overview(
    State(state): State<ApiState>,
    caller: Caller,
    Path((mesh, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.read(&mesh)?;
    let Some(dataplane) = state.store.get(ResourceType::Dataplane, &mesh, &name).await? else {
        return Err(ApiError::not_found(format!("dataplanes/{name} not found in mesh {mesh:?}")));
    };
    let certificates = state.store.dataplane_certs(&mesh, &name).await?;
    let session = state.online.get(&mesh, &name);
    Ok(Json(json!({
        "dataplane": dataplane.to_json(),
        "online": session.is_some(),
        "session": session,
        "refused": state.online.refusal(&mesh, &name),
        "certificates": certificates,
    })))
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Store(e) => e.into(),
            other => {
                tracing::error!(error = %other, "identity failure");
                ApiError::internal(other.to_string())
            }
        }
    }
}
