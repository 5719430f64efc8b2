//! API errors in Kuma's shape: `{"title", "details", "causes": [{"field", "message"}]}`.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use ward_api::{Cause, ValidationError};

use crate::{auth::AuthError, secret_resources::UpdateRefused, store::StoreError};

/// An error response.
#[derive(Debug, Serialize)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// Short summary.
    pub title: String,
    /// The full explanation, naming the resource, field and reason.
    pub details: String,
    /// Each field at fault.
    pub causes: Vec<Cause>,
}

impl ApiError {
    fn new(status: StatusCode, title: &str, details: impl Into<String>) -> Self {
        ApiError { status, title: title.into(), details: details.into(), causes: vec![] }
    }

    /// 404.
    pub fn not_found(details: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Could not find a resource", details)
    }

    /// 400 about one field of `resource`.
    pub fn bad_field(resource: &str, field: &str, message: &str) -> Self {
        ValidationError::single(resource, field, message).into()
    }

    /// 400 about the request itself, not a resource.
    pub fn bad_request(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad request", details)
    }

    /// 500.
    pub fn internal(details: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", details)
    }

    /// 503: what was asked is not known yet.
    pub fn unavailable(details: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Not available yet", details)
    }

    /// 403.
    pub fn forbidden(details: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Access denied", details)
    }

    /// 413.
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large",
            format!("request body exceeds {} bytes", super::MAX_BODY_BYTES),
        )
    }

    /// 415.
    pub fn unsupported_media(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            format!("content type {content_type:?} is not supported: use application/json or application/yaml"),
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            title: "Could not process a resource".into(),
            details: e.to_string(),
            causes: e.causes,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound(_) => Self::not_found(e.to_string()),
            StoreError::UnknownMesh(mesh) => ApiError {
                status: StatusCode::BAD_REQUEST,
                title: "Could not process a resource".into(),
                details: format!("mesh: mesh {mesh:?} does not exist; create the Mesh first"),
                causes: vec![Cause::new("mesh", format!("mesh {mesh:?} does not exist"))],
            },
            StoreError::MissingSecret { key, field, name } => {
                ValidationError::single(key, field, format!("Secret {name:?} does not exist in the mesh")).into()
            }
            StoreError::MixedIdentity { key, field, reason } => ValidationError::single(key, field, reason).into(),
            StoreError::NotAMember { key, refusal } => {
                ValidationError::single(key, &refusal.field, &refusal.reason).into()
            }
            StoreError::InUse { key, by, field } => ValidationError::single(
                key,
                "name",
                format!("in use by {by} at {field}; remove the reference before deleting the Secret"),
            )
            .into(),
            StoreError::Conflict { .. } => Self::new(StatusCode::CONFLICT, "Conflict", e.to_string()),
            StoreError::Database(_) | StoreError::Corrupt { .. } => {
                tracing::error!(error = %e, "store failure");
                Self::internal(e.to_string())
            }
        }
    }
}

impl From<UpdateRefused> for ApiError {
    fn from(e: UpdateRefused) -> Self {
        match e {
            UpdateRefused::InUse(e) => e.into(),
            UpdateRefused::Store(e) => e.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthenticated", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert("www-authenticate", "Bearer".parse().expect("static header"));
        }
        response
    }
}
