//! The admin listener: `/ready`, `/metrics` in Prometheus' format, and `/config`.

use std::sync::Arc;

use axum::{Router, extract::State as AxumState, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::json;

use crate::Proxy;

/// The admin routes.
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .with_state(proxy)
}

/// 200 with a configuration and (under mTLS) a valid certificate, and every listener up; 503 saying what is missing.
async fn ready(AxumState(proxy): AxumState<Arc<Proxy>>) -> impl IntoResponse {
    let mut problems: Vec<String> = proxy.state().not_ready().into_iter().collect();
    if problems.is_empty() && !proxy.listening.load(std::sync::atomic::Ordering::Acquire) {
        problems.push("opening the listeners".to_string());
    }
    problems.extend(
        proxy
            .listener_errors
            .lock()
            .expect("listener errors lock")
            .iter()
            .map(|(a, e)| format!("cannot listen on {a}: {e}")),
    );
    if let Some((_, left)) = proxy.state().expiring_unrenewed() {
        problems.push(format!(
            "warning: certificate expires in {}s and the control plane is unreachable",
            left.num_seconds().max(0)
        ));
    }
    let fatal = problems.iter().any(|p| !p.starts_with("warning:"));
    let status = if fatal { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = if problems.is_empty() { "ready\n".to_string() } else { problems.join("\n") + "\n" };
    (status, body)
}

async fn metrics(AxumState(proxy): AxumState<Arc<Proxy>>) -> impl IntoResponse {
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], proxy.state().metrics.encode())
}

/// The configuration in force and the certificate's public facts; never a private key.
async fn config(AxumState(proxy): AxumState<Arc<Proxy>>) -> impl IntoResponse {
    let certificate = proxy.state().svid().map(|s| {
        json!({
            "spiffeId": s.spiffe_id.to_string(),
            "serial": s.serial,
            "notBefore": s.not_before,
            "notAfter": s.not_after,
            "backend": s.backend,
        })
    });
    axum::Json(json!({
        "controlPlaneConnected": proxy.state().cp_connected(),
        "certificate": certificate,
        "config": proxy.state().config().as_deref(),
    }))
}
