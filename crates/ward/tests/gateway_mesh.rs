//! The marketplace of DESIGN.md behind the edge gateway: API keys checked at the edge, then
//! the gateway's own mesh identity checked by each service's permissions.

mod common;

use std::time::{Duration, Instant};

use common::{GatewayProcess, marketplace::Marketplace};

const GATEWAY: &str = include_str!("../../../examples/marketplace-gateway.yml");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_reaches_the_marketplace_over_mtls_under_its_permissions() {
    let root = tempfile::tempdir().unwrap();
    let market = Marketplace::start(root.path(), None, &[]).await;
    let token = root.path().join("gateway.token");
    std::fs::write(&token, market.cp.dataplane_token("marketplace", "edge-gateway-gw", "edge-gateway", "1h")).unwrap();
    let (ca, cp) = (market.cp.ca_cert().display().to_string(), market.cp.dp_address());
    let gw = tokio::task::block_in_place(|| {
        GatewayProcess::start_with(
            GATEWAY,
            &[
                "--mesh",
                "marketplace",
                "--cp-address",
                &cp,
                "--ca-cert",
                &ca,
                "--dataplane-token-file",
                &token.display().to_string(),
                "--dataplane-name",
                "edge-gateway-gw",
            ],
        )
    });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(gw.admin_url("/status/ready")).send().await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "the gateway did not join the mesh:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let get = |path: &str, key: Option<&str>| {
        let mut request = http.get(gw.url(path));
        if let Some(key) = key {
            request = request.header("apikey", key);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    for service in ["users", "items", "invoices"] {
        let (status, body) = get(&format!("/{service}"), Some("demo-key")).await;
        assert_eq!(status, 200, "{service}: {body}");
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["service"], service);
        assert_eq!(
            seen["headers"]["x-ward-peer-identity"], "spiffe://marketplace/edge-gateway",
            "over mTLS as the gateway"
        );
        assert!(seen["headers"].get("apikey").is_none(), "hide_credentials keeps the key at the edge");
    }
    assert_eq!(get("/items", None).await, (401, r#"{"message":"No API key found in request"}"#.to_string()));
    assert_eq!(get("/items", Some("wrong")).await.0, 401);

    // The mesh decides what the gateway itself may reach.
    market.cp.ward(&["delete", "mtp", "items-callers", "-m", "marketplace"]).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get("/items", Some("demo-key")).await;
        if status == 403 {
            assert_eq!(body, "RBAC: access denied");
            break;
        }
        assert!(Instant::now() < deadline, "still {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get("/users", Some("demo-key")).await.0, 200, "the other permissions stand");
    let status: serde_json::Value = http.get(gw.admin_url("/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["mesh"]["identity"], "spiffe://marketplace/edge-gateway");
}

#[test]
fn a_mesh_service_needs_a_gateway_that_joined_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kong.yml");
    std::fs::write(&file, GATEWAY).unwrap();
    let file = file.display().to_string();
    let out = std::process::Command::new(common::WARD).args(["gateway", "check", "--config", &file]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("services[1].host: 'items.mesh': a mesh service; the gateway must join the mesh"),
        "{stderr}"
    );
    let out = std::process::Command::new(common::WARD)
        .args(["gateway", "check", "--mesh", "--config", &file])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
