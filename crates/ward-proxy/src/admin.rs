//! The admin listener: `/ready`, `/metrics` in Prometheus' format, and `/config`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};

use axum::{Router, extract::State as AxumState, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::json;
use ward_api::{Resource, Spec};

use crate::Proxy;

/// Port of the admin listener when neither `--admin-address` nor the Dataplane names one.
const DEFAULT_PORT: u16 = 9901;

/// Where the admin listener listens: `--admin-address` if given, else 127.0.0.1 and the
/// Dataplane's `networking.admin.port`, else 127.0.0.1:9901. A flag and a port that disagree
/// are refused rather than one silently ignored.
pub fn address(flag: Option<SocketAddr>, dataplane: &Resource) -> anyhow::Result<SocketAddr> {
    let port = match &dataplane.spec {
        Spec::Dataplane(dp) => dp.networking.admin.as_ref().map(|a| a.port.0),
        _ => None,
    };
    match (flag, port) {
        (Some(flag), Some(port)) if flag.port() != port => anyhow::bail!(
            "--admin-address {flag} and the Dataplane's networking.admin.port {port} disagree: set one, or the same port in both"
        ),
        (Some(flag), _) => Ok(flag),
        (None, port) => Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port.unwrap_or(DEFAULT_PORT)))),
    }
}

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

/// The configuration in force and the certificates' public facts; never a private key.
async fn config(AxumState(proxy): AxumState<Arc<Proxy>>) -> impl IntoResponse {
    let facts = |s: &crate::identity::Svid| {
        json!({
            "spiffeId": s.spiffe_id.to_string(),
            "serial": s.serial,
            "notBefore": s.not_before,
            "notAfter": s.not_after,
            "backend": s.backend,
        })
    };
    let more: Vec<_> = proxy.state().more_svids().values().map(|s| facts(s)).collect();
    axum::Json(json!({
        "controlPlaneConnected": proxy.state().cp_connected(),
        "certificate": proxy.state().svid().map(|s| facts(&s)),
        "moreCertificates": more,
        "config": proxy.state().config().as_deref(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataplane(admin: &str) -> Resource {
        let yaml = format!(
            "type: Dataplane\nmesh: m\nname: a\nnetworking:\n  address: 10.0.0.1\n{admin}  inbound:\n  - port: 8080\n    tags: {{kuma.io/service: web}}\n"
        );
        ward_api::parse::resource(ward_api::parse::documents(&yaml).unwrap().remove(0), "test").unwrap()
    }

    #[test]
    fn the_admin_address_comes_from_the_flag_else_the_dataplane_else_9901() {
        let flag: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let with_port = dataplane("  admin: {port: 7001}\n");
        let cases: Vec<(Option<SocketAddr>, &Resource, Result<&str, &str>)> = vec![
            (None, &with_port, Ok("127.0.0.1:7001")),
            (Some("0.0.0.0:7001".parse().unwrap()), &with_port, Ok("0.0.0.0:7001")),
            (
                Some(flag),
                &with_port,
                Err("--admin-address 127.0.0.1:7000 and the Dataplane's networking.admin.port 7001 disagree"),
            ),
        ];
        let without = dataplane("");
        let more: Vec<(Option<SocketAddr>, &Resource, Result<&str, &str>)> =
            vec![(Some(flag), &without, Ok("127.0.0.1:7000")), (None, &without, Ok("127.0.0.1:9901"))];
        for (flag, dp, want) in cases.into_iter().chain(more) {
            match (address(flag, dp), want) {
                (Ok(got), Ok(want)) => assert_eq!(got.to_string(), want),
                (Err(got), Err(want)) => assert!(got.to_string().starts_with(want), "{got}"),
                (got, want) => panic!("{flag:?}: got {got:?}, wanted {want:?}"),
            }
        }
    }
}
