//! The authenticated caller of a request, and what its token lets it do.

use axum::{extract::FromRequestParts, http::request::Parts};

use super::{ApiError, ApiState};
use crate::{
    auth::{AuthError, Role, UserClaims},
    provided_files::Requester,
    store::Actor,
};

/// The verified token of the request.
pub struct Caller(pub UserClaims);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or(AuthError::Missing)?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Malformed)?;
        Ok(Caller(state.tokens.verify(token)?))
    }
}

impl Caller {
    /// Refuses (403) unless the token covers `mesh`.
    pub fn read(&self, mesh: &str) -> Result<(), ApiError> {
        if self.0.covers(mesh) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("token {:?} is not allowed to access mesh {mesh:?}", self.0.sub)))
        }
    }

    /// Refuses (403) unless the token is an admin covering `mesh`.
    pub fn write(&self, mesh: &str) -> Result<(), ApiError> {
        self.read(mesh)?;
        self.admin_role()
    }

    /// Refuses (403) unless the token covers every mesh (what global resources need).
    pub fn read_global(&self) -> Result<(), ApiError> {
        if self.0.meshes.is_some() {
            return Err(ApiError::forbidden(format!(
                "token {:?} is limited to some meshes; global resources need a token for every mesh",
                self.0.sub
            )));
        }
        Ok(())
    }

    /// Refuses (403) unless the token is an admin for every mesh.
    pub fn global_admin(&self) -> Result<(), ApiError> {
        self.admin_role()?;
        if self.0.meshes.is_some() {
            return Err(ApiError::forbidden(format!(
                "token {:?} is limited to some meshes; this needs a global admin",
                self.0.sub
            )));
        }
        Ok(())
    }

    /// Whether the token may have files of the host read (a global admin's).
    pub fn requester(&self) -> Requester {
        if self.0.role == Role::Admin && self.0.meshes.is_none() { Requester::GlobalAdmin } else { Requester::Other }
    }

    fn admin_role(&self) -> Result<(), ApiError> {
        if self.0.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("token {:?} has role viewer, which cannot make changes", self.0.sub)))
        }
    }

    /// The name the audit log records.
    pub fn actor(&self) -> Actor {
        Actor(self.0.sub.clone())
    }
}
