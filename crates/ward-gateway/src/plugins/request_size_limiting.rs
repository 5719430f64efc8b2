//! request-size-limiting: refuses bodies larger than a limit (413, or 417 when the client
//! waits for `100 Continue`), and optionally bodies without a Content-Length (411).

use http::{StatusCode, header};
use serde::Deserialize;
use serde_json::Value;

use super::{Compile, Plugin};
use crate::exchange::{BodyError, Exchange};
use crate::reply::Reply;

fn one_hundred_twenty_eight() -> u64 {
    128
}

fn megabytes() -> String {
    "megabytes".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "one_hundred_twenty_eight")]
    allowed_payload_size: u64,
    #[serde(default = "megabytes")]
    size_unit: String,
    #[serde(default)]
    require_content_length: bool,
}

const UNITS: [(&str, u64); 3] = [("megabytes", 1 << 20), ("kilobytes", 1 << 10), ("bytes", 1)];

/// A compiled request-size-limiting configuration.
pub(crate) struct RequestSizeLimiting {
    limit: u64,
    require_content_length: bool,
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let Some((_, unit)) = UNITS.iter().find(|(name, _)| *name == c.size_unit) else {
        cx.error("size_unit", "must be one of megabytes, kilobytes, bytes");
        return None;
    };
    Some(Plugin::RequestSizeLimiting(RequestSizeLimiting {
        limit: c.allowed_payload_size.saturating_mul(*unit),
        require_content_length: c.require_content_length,
    }))
}

impl RequestSizeLimiting {
    pub(super) async fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        let too_large = |ex: &Exchange<'_>| {
            let expects_continue =
                ex.header(&header::EXPECT).is_some_and(|e| e.trim().eq_ignore_ascii_case("100-continue"));
            let status = if expects_continue { StatusCode::EXPECTATION_FAILED } else { StatusCode::PAYLOAD_TOO_LARGE };
            Reply::error(status, "Request size limit exceeded")
        };
        match ex.header(&header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()) {
            Some(length) if length > self.limit => Err(too_large(ex)),
            Some(_) => Ok(()),
            None if self.require_content_length => {
                Err(Reply::error(StatusCode::LENGTH_REQUIRED, "A valid Content-Length header is required"))
            }
            // A chunked body: read it, but never more than the limit.
            None => match ex.body_bytes(usize::try_from(self.limit).unwrap_or(usize::MAX)).await {
                Ok(_) => Ok(()),
                Err(BodyError::TooLarge(_)) => Err(too_large(ex)),
                Err(BodyError::Read(_)) => Err(Reply::status(StatusCode::BAD_REQUEST)),
            },
        }
    }
}
