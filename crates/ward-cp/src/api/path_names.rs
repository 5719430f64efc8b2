//! Refuses a request whose URL names a mesh or a resource with a name no resource can have,
//! before any handler sees it.

use axum::{
    extract::{RawPathParams, Request, rejection::RawPathParamsRejection},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ward_api::names::check_name;

use super::ApiError;

/// The path parameters that hold mesh or resource names.
const NAME_PARAMS: [&str; 2] = ["mesh", "name"];

/// Checks every `{mesh}` and `{name}` of the matched route (after percent-decoding).
pub async fn check(params: Result<RawPathParams, RawPathParamsRejection>, request: Request, next: Next) -> Response {
    let params = match params {
        Ok(params) => params,
        Err(_) => return ApiError::bad_request("the URL path is not valid percent-encoded UTF-8").into_response(),
    };
    for (key, value) in &params {
        if NAME_PARAMS.contains(&key)
            && let Err(reason) = check_name(value)
        {
            return ApiError::bad_field("URL path", key, &reason).into_response();
        }
    }
    next.run(request).await
}
