//! The admin listener (127.0.0.1:8001 by default): status, Prometheus metrics (`/metrics`),
//! and the configuration in force, which `POST /config` replaces after validating it whole.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::listener::Listening;
use crate::reply::{Body, Reply};
use crate::runtime::Runtime;

/// Largest configuration `POST /config` accepts.
const CONFIG_LIMIT: usize = 64 << 20;

/// Serves the admin API until `stop`, on the accept loop and server of the proxy listeners.
pub(crate) async fn serve(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    listening: Arc<Listening>,
    stop: CancellationToken,
) {
    let shared = listening.clone();
    ward_http::accept::serve(listener, &shared.limits, &shared.connections, stop, move |stream, _peer| {
        let (runtime, listening) = (runtime.clone(), listening.clone());
        async move {
            let service = service_fn(move |request| {
                let runtime = runtime.clone();
                async move { Ok::<_, Infallible>(handle(&runtime, request).await) }
            });
            ward_http::server::serve(&listening.server, stream, service, &listening.limits, &listening.draining).await;
        }
    })
    .await
}

async fn handle(runtime: &Runtime, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().trim_end_matches('/').to_string();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "") => {
            Reply::json(StatusCode::OK, &json!({ "tagline": "Welcome to ward", "version": env!("CARGO_PKG_VERSION") }))
        }
        (Method::GET, "/status") => status(runtime),
        (Method::GET, "/status/ready") => match runtime.mesh().and_then(|m| m.state.not_ready()) {
            None => Reply::error(StatusCode::OK, "ready"),
            Some(reason) => Reply::error(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: mesh: {reason}")),
        },
        (Method::GET, "/config") => {
            let gw = runtime.current();
            Reply::json(StatusCode::OK, &json!({ "config": gw.source, "configuration_hash": gw.hash }))
        }
        (Method::POST, "/config") => post_config(runtime, request).await,
        (Method::GET, "/metrics") => metrics(runtime, request.headers()),
        (_, "" | "/status" | "/status/ready" | "/config" | "/metrics") => Reply::status(StatusCode::METHOD_NOT_ALLOWED),
        _ => Reply::status(StatusCode::NOT_FOUND),
    }
    .into_response()
}

/// The prometheus plugin's metrics and the node's figures. The text is OpenMetrics, which the
/// Prometheus text format reads too: it says so to a scraper that accepts OpenMetrics, and is
/// plain text (as Kong's) to the others.
fn metrics(runtime: &Runtime, headers: &http::HeaderMap) -> Reply {
    use crate::plugins::prometheus::{Node, exposition};
    let s = &runtime.stats;
    let gw = runtime.current();
    let node = Node {
        connections_accepted: s.connections_accepted.load(Ordering::Relaxed),
        connections_active: s.connections_active.load(Ordering::Relaxed),
        total_requests: s.total_requests.load(Ordering::Relaxed),
        enabled: gw.prometheus,
        health: gw.upstream_health_metrics.then(|| gw.target_health()),
    };
    let text = exposition(runtime.metrics(), &node);
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("application/openmetrics-text"));
    let content_type = HeaderValue::from_static(if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    });
    Reply::raw(StatusCode::OK, Some(content_type), Bytes::from(text))
}

fn status(runtime: &Runtime) -> Reply {
    let s = &runtime.stats;
    let gw = runtime.current();
    let mesh = runtime.mesh().map(|member| {
        let state = &member.state;
        json!({
            "identity": state.svid().map(|svid| svid.spiffe_id.to_string()),
            "certificate_expires": state.svid().map(|svid| svid.not_after.to_rfc3339()),
            "control_plane_connected": state.cp_connected(),
            "ready": state.not_ready().is_none(),
            "not_ready": state.not_ready(),
        })
    });
    Reply::json(
        StatusCode::OK,
        &json!({
            "database": { "reachable": true },
            "server": {
                "connections_accepted": s.connections_accepted.load(Ordering::Relaxed),
                "connections_active": s.connections_active.load(Ordering::Relaxed),
                "total_requests": s.total_requests.load(Ordering::Relaxed),
            },
            "configuration_hash": gw.hash,
            "mesh": mesh,
        }),
    )
}

/// The declarative text of a `POST /config`: the raw body, or its `config` field in a
/// form (`--data config=...`) or a multipart form (Kong's `-F config=@kong.yml`).
pub(crate) fn config_text(content_type: Option<&str>, body: &Bytes) -> Result<String, Reply> {
    let ct = content_type.unwrap_or_default().to_ascii_lowercase();
    let text = if ct.starts_with("application/x-www-form-urlencoded") {
        form_urlencoded::parse(body).find(|(k, _)| k == "config").map(|(_, v)| v.into_owned())
    } else if let Some(boundary) =
        ct.starts_with("multipart/form-data").then(|| multipart_boundary(content_type?)).flatten()
    {
        multipart_field(body, &boundary, "config")
    } else {
        String::from_utf8(body.to_vec()).ok()
    };
    text.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
        Reply::error(
            StatusCode::BAD_REQUEST,
            "expected a declarative configuration (YAML or JSON) in the body or its config field",
        )
    })
}

fn multipart_boundary(content_type: &str) -> Option<String> {
    let (_, rest) = content_type.split_once("boundary=")?;
    Some(rest.split(';').next()?.trim().trim_matches('"').to_string())
}

/// The value of field `name` in a multipart/form-data body.
fn multipart_field(body: &[u8], boundary: &str, name: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    let wanted = format!("name=\"{name}\"");
    body.split(&format!("--{boundary}")).find_map(|part| {
        let (head, content) = part.split_once("\r\n\r\n")?;
        head.contains(&wanted).then(|| content.strip_suffix("\r\n").unwrap_or(content).to_string())
    })
}

async fn post_config(runtime: &Runtime, request: Request<Incoming>) -> Reply {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = match Limited::new(request.into_body(), CONFIG_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "the configuration is larger than 64 MiB"),
    };
    let text = match config_text(content_type.as_deref(), &body) {
        Ok(t) => t,
        Err(reply) => return reply,
    };
    match runtime.reload(&text).await {
        Ok(gw) => {
            tracing::info!(hash = %gw.hash, "configuration loaded through the admin API");
            Reply::json(
                StatusCode::CREATED,
                &json!({ "message": "configuration loaded", "configuration_hash": gw.hash }),
            )
        }
        Err(errors) => {
            tracing::warn!("configuration refused through the admin API:\n{errors}");
            Reply::json(
                StatusCode::BAD_REQUEST,
                &json!({
                    "code": 14,
                    "name": "invalid declarative configuration",
                    "message": format!("declarative config is invalid: {} error(s); the configuration in force is unchanged", errors.0.len()),
                    "errors": errors.0,
                }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_raw_form_and_multipart_bodies() {
        let yaml = "_format_version: \"3.0\"\n";
        let multipart = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"config\"; filename=\"kong.yml\"\r\n\r\n{yaml}\r\n--XyZ--\r\n"
        );
        let table = [
            (None, yaml.to_string()),
            (Some("application/yaml"), yaml.to_string()),
            (
                Some("application/x-www-form-urlencoded"),
                format!("config={}", form_urlencoded::byte_serialize(yaml.as_bytes()).collect::<String>()),
            ),
            (Some("multipart/form-data; boundary=XyZ"), multipart),
        ];
        for (ct, body) in table {
            assert_eq!(config_text(ct, &Bytes::from(body)).unwrap(), yaml, "{ct:?}");
        }
        assert!(config_text(Some("application/x-www-form-urlencoded"), &Bytes::from("other=1")).is_err());
    }
}
