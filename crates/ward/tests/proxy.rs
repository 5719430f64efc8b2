//! The data-plane proxy as a user meets it: `ward dp run` processes in front of unmodified
//! applications on loopback, the control plane deciding who may call whom.

mod common;

use std::{sync::Arc, time::Duration};

use common::marketplace::{ALLOWED, CALLERS, Marketplace, SERVICES};
use common::mtls::{TestCa, mtls_get, mtls_get_versions, mtls_get_with};
use rustls_pki_types::pem::PemObject;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn marketplace_allows_exactly_what_its_permissions_say() {
    let root = tempfile::tempdir().unwrap();
    let market = Marketplace::start(root.path(), None, &[]).await;
    for caller in CALLERS {
        for service in SERVICES {
            let (status, body) = market.call(caller, service, "/orders").await;
            if ALLOWED.contains(&(caller, service)) {
                assert_eq!(status, 200, "{caller} -> {service}: {body}");
                let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(seen["service"], service);
                assert_eq!(seen["path"], "/orders");
                assert_eq!(seen["headers"]["x-ward-peer-identity"], format!("spiffe://marketplace/{caller}"), "{body}");
            } else {
                assert_eq!((status, body.as_str()), (403, "RBAC: access denied"), "{caller} -> {service}");
            }
        }
    }
}

/// A mesh CA the test holds the key of, so it can make certificates of every kind.
impl TestCa {
    /// The marketplace Mesh with this CA as its provided backend.
    fn mesh_yaml(&self) -> String {
        serde_json::json!({"type": "Mesh", "name": "marketplace", "mtls": {"enabledBackend": "ca-1", "backends": [
            {"name": "ca-1", "type": "provided", "conf": {
                "cert": {"inlineString": self.material.cert_pem}, "key": {"inlineString": self.material.key_pem}}}]}})
        .to_string()
    }
}

/// A self-signed certificate naming `spiffe_id`, and its key.
fn self_signed(spiffe_id: &str) -> (ward_pki::WorkloadKey, String) {
    let ca = TestCa::new("marketplace");
    let id = ward_pki::SpiffeId::parse(spiffe_id).unwrap();
    let (key, _) = ward_pki::generate_key_and_csr(&id).unwrap();
    // Sign the leaf with its own key: an issuer nobody trusts.
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe_id.to_string().try_into().unwrap())];
    let pair = rcgen::KeyPair::try_from(key.private_key_der().secret_der()).unwrap();
    drop(ca);
    (key, params.self_signed(&pair).unwrap().pem())
}

/// Accepts any server certificate: the tests below check what the *server* refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn impostors_are_refused_on_both_sides() {
    let root = tempfile::tempdir().unwrap();
    let mesh_ca = TestCa::new("marketplace");
    let market = Marketplace::start(root.path(), Some(&mesh_ca.mesh_yaml()), &[]).await;
    let items = market.inbound["items"];

    // The control: a certificate from the mesh's CA for a caller items admits.
    let good = mtls_get(items, Some(mesh_ca.issue("spiffe://marketplace/invoices"))).await;
    assert_eq!(good.as_deref(), Ok("HTTP/1.1 200 OK"));
    // The same caller with no permission is refused by authorization, not TLS.
    let denied = mtls_get(items, Some(mesh_ca.issue("spiffe://marketplace/users"))).await;
    assert_eq!(denied.as_deref(), Ok("HTTP/1.1 403 Forbidden"));
    // TLS 1.3 only, unless the proxy is told to accept 1.2.
    let (key, chain) = mesh_ca.issue("spiffe://marketplace/invoices");
    let tls12 = mtls_get_versions(items, Some((key.private_key_der(), chain)), &[&rustls::version::TLS12]).await;
    assert!(tls12.is_err(), "a TLS 1.2 client is refused by default: {tls12:?}");

    let impostors = [
        ("plaintext", None),
        ("TLS without a client certificate", Some(None)),
        ("self-signed certificate naming invoices", Some(Some(self_signed("spiffe://marketplace/invoices")))),
        ("another mesh's CA", Some(Some(TestCa::new("other").issue("spiffe://other/invoices")))),
        (
            "a CA of the same name that the mesh does not trust",
            Some(Some(TestCa::new("marketplace").issue("spiffe://marketplace/invoices"))),
        ),
    ];
    for (what, tls) in impostors {
        let answer = match tls {
            None => {
                let client = reqwest::Client::builder().no_proxy().build().unwrap();
                client
                    .get(format!("http://127.0.0.1:{items}/"))
                    .send()
                    .await
                    .map(|r| r.status().to_string())
                    .map_err(|e| e.to_string())
            }
            Some(identity) => mtls_get(items, identity).await,
        };
        assert!(answer.is_err(), "{what} must not get an answer, got {answer:?}");
    }
    let metrics = market.proxies["items"].admin_get("/metrics").1;
    for reason in ["unknown_issuer", "no_client_certificate", "not_tls"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "handshake failures counted by reason ({reason}):\n{metrics}"
        );
    }

    // An endpoint registered as items that proves to be users is refused by the caller's outbound.
    let fake_port = common::free_port();
    let token = market.cp.dataplane_token("marketplace", "items-2", "items", "1h");
    let fake_dp =
        common::marketplace::dataplane("items", fake_port, common::free_port(), &[]).replace("items-1", "items-2");
    let _stream = common::mesh::raw_stream(&market.cp, &token, &fake_dp).await.expect("the fake items registers");
    let (key, chain) = mesh_ca.issue("spiffe://marketplace/users");
    let fake_server = tokio::spawn(serve_tls_once_forever(fake_port, key, chain));
    let mut outcomes = std::collections::BTreeMap::new();
    for _ in 0..12 {
        let (status, body) = market.call("invoices", "items", "/").await;
        assert!(!body.contains("impostor"), "no request reaches the impostor: {body}");
        if status == 503 {
            assert!(
                body.contains("server presented spiffe://marketplace/users, expected spiffe://marketplace/items"),
                "{body}"
            );
        } else {
            assert_eq!(status, 200, "{body}");
        }
        *outcomes.entry(status).or_insert(0) += 1;
    }
    assert_eq!(outcomes.len(), 2, "round robin met both the real and the fake endpoint: {outcomes:?}");
    let metrics = market.proxies["invoices"].admin_get("/metrics").1;
    assert!(metrics.contains("reason=\"wrong_identity\""), "{metrics}");
    fake_server.abort();
}

/// A TLS server presenting `chain` that answers every request with "impostor".
async fn serve_tls_once_forever(port: u16, key: ward_pki::WorkloadKey, chain: String) {
    let certs =
        rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key.private_key_der())
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from("impostor"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            }
        });
    }
}

/// Polls `call` until it answers `want`, up to 10 s; the last answer.
async fn eventually(market: &Marketplace, caller: &str, service: &str, want: u16) -> (u16, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = market.call(caller, service, "/").await;
        if answer.0 == want || std::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permissions_apply_and_withdraw_without_restart() {
    let root = tempfile::tempdir().unwrap();
    let market = Marketplace::start(root.path(), None, &[]).await;
    assert_eq!(market.call("users", "items", "/").await.0, 403);
    let permit = "type: MeshTrafficPermission\nmesh: marketplace\nname: users-to-items\nspec:\n  targetRef: {kind: MeshService, name: items}\n  from:\n  - targetRef: {kind: MeshService, name: users}\n    default: {action: Allow}\n";
    market.cp.apply(permit);
    assert_eq!(eventually(&market, "users", "items", 200).await.0, 200);
    // A Deny at the same specificity wins over the Allow (Kuma's issue #16873).
    market.cp.apply(&permit.replace("users-to-items", "users-not-items").replace("Allow", "Deny"));
    assert_eq!(eventually(&market, "users", "items", 403).await, (403, "RBAC: access denied".into()));
    market.cp.ward(&["delete", "mtp", "users-not-items", "-m", "marketplace"]).ok();
    assert_eq!(eventually(&market, "users", "items", 200).await.0, 200);
    market.cp.ward(&["delete", "mtp", "users-to-items", "-m", "marketplace"]).ok();
    assert_eq!(eventually(&market, "users", "items", 403).await.0, 403);
    // The decisions are counted by the policy that made them.
    let metrics = market.proxies["items"].admin_get("/metrics").1;
    assert!(metrics.contains("action=\"Deny\",policy=\"MeshTrafficPermission/users-not-items\""), "{metrics}");
    assert!(metrics.contains("action=\"Allow\",policy=\"MeshTrafficPermission/users-to-items\""), "{metrics}");
    assert!(metrics.contains("action=\"Deny\",policy=\"default-deny\""), "{metrics}");
}

/// Sends requests from `caller` to `service` in `workers` loops until `stop`; (successes, failures).
fn load(
    market: &Arc<Marketplace>,
    caller: &'static str,
    service: &'static str,
    workers: usize,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    let market = market.clone();
    tokio::spawn(async move {
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let (market, stop) = (market.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0u64, Vec::new());
                    while !stop.is_cancelled() {
                        match market.call(caller, service, "/").await {
                            (200, _) => ok += 1,
                            (status, body) => failed.push(format!("{status}: {body}")),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        let mut total = (0, Vec::new());
        for task in tasks {
            let (ok, failed) = task.await.unwrap();
            total.0 += ok;
            total.1.extend(failed);
        }
        total
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_second_certificates_rotate_under_load_without_losing_a_request() {
    let root = tempfile::tempdir().unwrap();
    let mesh = "type: Mesh\nname: marketplace\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n    dpCert:\n      rotation:\n        expiration: 10s\n";
    let market = Arc::new(Marketplace::start(root.path(), Some(mesh), &[]).await);
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = load(&market, "users", "invoices", 4, stop.clone());
    let started = std::time::Instant::now();
    let mut serials: std::collections::HashMap<&str, std::collections::BTreeSet<String>> = Default::default();
    // At least 30 s, and until both ends have renewed six times (up to a minute).
    while started.elapsed() < Duration::from_secs(30) || serials.values().any(|s| s.len() < 7) {
        assert!(started.elapsed() < Duration::from_secs(60), "renewals seen: {serials:?}");
        for side in ["users", "invoices"] {
            if let Some(serial) = market.proxies[side].serial() {
                serials.entry(side).or_default().insert(serial);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.cancel();
    let (ok, failed) = traffic.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during rotation: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "the load ran: {ok} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_outlives_the_control_plane_and_updates_resume_when_it_returns() {
    let root = tempfile::tempdir().unwrap();
    let mut market = Marketplace::start(root.path(), None, &[]).await;
    market.cp.kill();
    for _ in 0..20 {
        assert_eq!(market.call("invoices", "items", "/").await.0, 200, "traffic continues without the control plane");
        assert_eq!(market.call("users", "items", "/").await.0, 403, "and so do the permissions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, ready) = market.proxies["items"].admin_get("/ready");
    assert_eq!(status, 200, "a valid certificate and a configuration keep the proxy ready: {ready}");
    assert!(market.proxies["items"].admin_get("/metrics").1.contains("ward_control_plane_connected 0"));

    market.cp.restart(root.path());
    // Proxies reconnect on their own (backoff with jitter) and take updates again.
    market.cp.apply("type: MeshTrafficPermission\nmesh: marketplace\nname: users-to-items\nspec:\n  targetRef: {kind: MeshService, name: items}\n  from:\n  - targetRef: {kind: MeshService, name: users}\n    default: {action: Allow}\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while market.call("users", "items", "/").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "updates did not resume:\n{}", market.proxies["items"].log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(market.proxies["items"].admin_get("/metrics").1.contains("ward_control_plane_connected 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ca_rotation_drops_nothing_and_removing_a_backend_withdraws_its_trust() {
    let root = tempfile::tempdir().unwrap();
    let two = |enabled: &str, backends: &[&str]| {
        let list: String = backends.iter().map(|b| format!("  - name: {b}\n    type: builtin\n")).collect();
        format!("type: Mesh\nname: marketplace\nmtls:\n  enabledBackend: {enabled}\n  backends:\n{list}")
    };
    let market = Arc::new(Marketplace::start(root.path(), Some(&two("ca-1", &["ca-1", "ca-2"])), &[]).await);

    // A certificate from ca-1 for a member no permission admits, to tell trust from authorization.
    let id = ward_pki::SpiffeId::parse("spiffe://marketplace/auditor").unwrap();
    let (key, csr) = ward_pki::generate_key_and_csr(&id).unwrap();
    let token = market.cp.dataplane_token("marketplace", "auditor-1", "auditor", "1h");
    let auditor = common::marketplace::dataplane("auditor", common::free_port(), common::free_port(), &[]);
    let mut stream = common::mesh::raw_stream(&market.cp, &token, &auditor).await.unwrap();
    stream.request_certificate(&csr).await;
    let old = match stream.next_answer().await.unwrap() {
        ward_proto::discovery::control_message::Message::Certificate(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(old.backend, "ca-1");
    let old_identity = || Some((key.private_key_der(), old.chain_pem.clone()));
    let items = market.inbound["items"];

    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = load(&market, "invoices", "items", 2, stop.clone());
    market.cp.apply(&two("ca-2", &["ca-1", "ca-2"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for side in ["invoices", "items"] {
        while market.proxies[side].config()["certificate"]["backend"] != "ca-2" {
            assert!(std::time::Instant::now() < deadline, "{side} did not renew from ca-2");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        mtls_get_with(items, old_identity()).await.as_deref(),
        Ok("HTTP/1.1 403 Forbidden"),
        "ca-1 is still trusted"
    );

    market.cp.apply(&two("ca-2", &["ca-2"]));
    while mtls_get_with(items, old_identity()).await.is_ok() {
        assert!(std::time::Instant::now() < deadline + Duration::from_secs(10), "ca-1's trust was not withdrawn");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let (ok, failed) = traffic.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} requests failed during the rotation: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 10);

    let inspected = market.cp.ward(&["inspect", "dataplane", "items-1", "-m", "marketplace"]).ok();
    let serial = market.proxies["items"].serial().unwrap();
    assert!(inspected.contains("spiffe id:   spiffe://marketplace/items"), "{inspected}");
    assert!(inspected.contains(&format!("serial:      {serial}")), "{inspected}");
    assert!(inspected.contains("status:      online since"), "{inspected}");
    assert!(inspected.contains("issued by:   backend ca-2"), "{inspected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_that_leaves_is_withdrawn_from_its_callers() {
    let root = tempfile::tempdir().unwrap();
    let mut market = Marketplace::start(root.path(), None, &[]).await;
    assert_eq!(market.call("invoices", "items", "/").await.0, 200);
    market.proxies.remove("items");
    // At first an attempt may still reach for the dead endpoint (503, connect error); once the
    // control plane has seen the stream end, the endpoint is withdrawn from every caller.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = market.call("invoices", "items", "/").await;
        assert_eq!(status, 503, "{body}");
        if body.contains("no healthy upstream: service items has no connected instance") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the endpoint was not withdrawn: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let overview = market.cp.ward(&["inspect", "dataplane", "items-1", "-m", "marketplace"]).ok();
    assert!(overview.contains("status:      offline"), "{overview}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permissive_mesh_admits_plaintext_only_through_mesh_wide_rules() {
    let root = tempfile::tempdir().unwrap();
    let mesh = "type: Mesh\nname: marketplace\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n    mode: PERMISSIVE\n";
    let market = Marketplace::start(root.path(), Some(mesh), &[]).await;
    let plaintext = |service: &str| {
        let url = format!("http://127.0.0.1:{}/", market.inbound[service]);
        async move {
            reqwest::Client::builder().no_proxy().build().unwrap().get(url).send().await.map(|r| r.status().as_u16())
        }
    };
    // The example's permissions name callers by service: an anonymous caller matches none.
    assert_eq!(plaintext("items").await.ok(), Some(403));
    // mTLS callers are still decided by identity.
    assert_eq!(market.call("invoices", "items", "/").await.0, 200);
    assert_eq!(market.call("users", "items", "/").await.0, 403);
    market.cp.apply("type: MeshTrafficPermission\nmesh: marketplace\nname: anyone-to-items\nspec:\n  targetRef: {kind: MeshService, name: items}\n  from:\n  - targetRef: {kind: Mesh}\n    default: {action: Allow}\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while plaintext("items").await.ok() != Some(200) {
        assert!(std::time::Instant::now() < deadline, "a mesh-wide Allow admits plaintext callers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(plaintext("users").await.ok(), Some(403), "only where a mesh-wide rule allows");
}

/// Kuma's serviceProbe and admin port: the proxy listens for its admin where its Dataplane
/// says, probes its application, and the control plane withdraws the endpoint while the
/// application does not answer, then restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_probed_application_that_stops_answering_is_withdrawn_until_it_answers_again() {
    let root = tempfile::tempdir().unwrap();
    let cp = common::ControlPlane::start(root.path());
    cp.apply(
        "type: Mesh\nname: m\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n---\n\
         type: MeshTrafficPermission\nmesh: m\nname: all\nspec:\n  targetRef: {kind: Mesh}\n  from:\n  \
         - targetRef: {kind: Mesh}\n    default: {action: Allow}\n",
    );
    let app_address: std::net::SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let mut app = Some(common::apps::http_echo(app_address, "backend").await);
    let admin = common::free_port();
    let backend = cp.start_proxy(
        root.path(),
        "backend-1",
        &format!(
            "type: Dataplane\nmesh: m\nname: backend-1\nnetworking:\n  address: 127.0.0.1\n  admin: {{port: {admin}}}\n  \
             inbound:\n  - port: {}\n    servicePort: {}\n    \
             serviceProbe: {{interval: 100ms, timeout: 1s, unhealthyThreshold: 2, healthyThreshold: 2, tcp: {{}}}}\n    \
             tags: {{kuma.io/service: backend, kuma.io/protocol: http}}\n",
            common::free_port(),
            app_address.port()
        ),
        &[],
    );
    // start_proxy waited for /ready on `admin`: the port the Dataplane names, with no --admin-address.
    let outbound = common::free_port();
    let _web = cp.start_proxy(
        root.path(),
        "web-1",
        &format!(
            "type: Dataplane\nmesh: m\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
             tags: {{kuma.io/service: web}}\n  outbound:\n  - port: {outbound}\n    tags: {{kuma.io/service: backend}}\n",
            common::free_port()
        ),
        &[],
    );
    let http = common::http_client();
    let call = async || {
        let response = http.get(format!("http://127.0.0.1:{outbound}/")).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    // The inbound's health.ready as the control plane records it.
    let recorded = |want: &str| {
        let yaml = cp.ward(&["get", "dataplane", "backend-1", "-m", "m", "-o", "yaml"]).ok();
        yaml.lines().any(|l| l.trim() == format!("ready: {want}"))
    };
    let deadline = || std::time::Instant::now() + Duration::from_secs(10);

    let until = deadline();
    while !recorded("true") || call().await.0 != 200 {
        assert!(std::time::Instant::now() < until, "the first probe was not recorded:\n{}", backend.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    app.take();
    let until = deadline();
    loop {
        let (status, body) = call().await;
        if recorded("false") && status == 503 && body.contains("no healthy upstream") {
            break;
        }
        assert!(std::time::Instant::now() < until, "backend-1 was not withdrawn: {status} {body}\n{}", backend.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    app = Some(common::apps::http_echo(app_address, "backend").await);
    let until = deadline();
    while !recorded("true") || call().await.0 != 200 {
        assert!(std::time::Instant::now() < until, "backend-1 was not restored:\n{}", backend.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(app);
}

/// A Dataplane whose inbounds serve two services: each inbound presents its own service's
/// certificate (the callers' outbounds check it), and each is decided by the permissions of
/// its own service.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dataplane_serving_two_services_has_an_identity_and_permissions_per_inbound() {
    let root = tempfile::tempdir().unwrap();
    let cp = common::ControlPlane::start(root.path());
    let allow = |name: &str, service: &str| {
        format!(
            "type: MeshTrafficPermission\nmesh: m\nname: {name}\nspec:\n  targetRef: {{kind: MeshService, name: {service}}}\n  \
             from:\n  - targetRef: {{kind: MeshService, name: web}}\n    default: {{action: Allow}}\n"
        )
    };
    cp.apply(&format!(
        "type: Mesh\nname: m\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n---\n{}",
        allow("web-to-backend", "backend")
    ));
    let main_app = common::apps::http_echo(([127, 0, 0, 1], common::free_port()).into(), "backend").await;
    let api_app = common::apps::http_echo(([127, 0, 0, 1], common::free_port()).into(), "backend-api").await;
    let api_inbound = common::free_port();
    let backend = cp.start_proxy(
        root.path(),
        "backend-1",
        &format!(
            "type: Dataplane\nmesh: m\nname: backend-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  \
             - port: {}\n    name: main\n    servicePort: {}\n    tags: {{kuma.io/service: backend, kuma.io/protocol: http}}\n  \
             - port: {api_inbound}\n    servicePort: {}\n    tags: {{kuma.io/service: backend-api, kuma.io/protocol: http}}\n",
            common::free_port(),
            main_app.address.port(),
            api_app.address.port()
        ),
        &[],
    );
    let explain =
        |inbound: &str| cp.ward(&["explain", "backend-1", "-m", "m", "--caller", "web", "--inbound", inbound]).ok();
    assert!(explain("main").starts_with("Allow by MeshTrafficPermission/web-to-backend"), "{}", explain("main"));
    assert!(explain(&api_inbound.to_string()).starts_with("Deny"), "{}", explain(&api_inbound.to_string()));
    let config = backend.config();
    assert_eq!(config["certificate"]["spiffeId"], "spiffe://m/backend", "{config}");
    assert_eq!(config["moreCertificates"][0]["spiffeId"], "spiffe://m/backend-api", "{config}");
    let inspected = cp.ward(&["inspect", "dataplane", "backend-1", "-m", "m"]).ok();
    for (cert, id) in
        [(&config["certificate"], "spiffe://m/backend"), (&config["moreCertificates"][0], "spiffe://m/backend-api")]
    {
        let shown = format!("spiffe id:   {id}\nserial:      {}", cert["serial"].as_str().unwrap());
        assert!(inspected.contains(&shown), "`ward inspect` shows every identity's certificate:\n{inspected}");
    }

    let (to_backend, to_api) = (common::free_port(), common::free_port());
    let _web = cp.start_proxy(
        root.path(),
        "web-1",
        &format!(
            "type: Dataplane\nmesh: m\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
             tags: {{kuma.io/service: web}}\n  outbound:\n  - port: {to_backend}\n    tags: {{kuma.io/service: backend}}\n  \
             - port: {to_api}\n    tags: {{kuma.io/service: backend-api}}\n",
            common::free_port()
        ),
        &[],
    );
    let http = common::http_client();
    let call = async |port: u16| {
        let response = http.get(format!("http://127.0.0.1:{port}/")).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    // Each outbound checks the inbound's certificate names the service it called: a 200 or a
    // 403 from the inbound means the handshake found the right identity.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ((main_status, main_body), (api_status, api_body)) = (call(to_backend).await, call(to_api).await);
        if main_status == 200 && api_status == 403 {
            assert!(main_body.contains(r#""service":"backend""#), "{main_body}");
            assert!(api_body.contains("denied"), "{api_body}");
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "backend {main_status} {main_body}, backend-api {api_status} {api_body}\n{}",
            backend.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cp.apply(&allow("web-to-api", "backend-api"));
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = call(to_api).await;
        if status == 200 {
            assert!(body.contains(r#""service":"backend-api""#), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < until, "backend-api still {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(to_backend).await.0, 200);
    let both = explain(&api_inbound.to_string());
    assert!(both.starts_with("Allow by MeshTrafficPermission/web-to-api"), "{both}");
}

/// An application that answers every request with Prometheus text.
async fn metrics_app(port: u16, text: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut head = [0u8; 1024];
                let _ = tcp.read(&mut head).await;
                let answer =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    })
}

/// Kuma's Mesh `metrics`: every proxy serves a Prometheus endpoint, adjusted by its
/// Dataplane's own `metrics`, merging its application's metrics; under the mesh's mTLS a
/// scraper needs a mesh certificate and a permission for the endpoint's tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mesh_metrics_backend_has_each_proxy_serve_prometheus() {
    let root = tempfile::tempdir().unwrap();
    let cp = common::ControlPlane::start(root.path());
    let ca = TestCa::new("m");
    let mesh = |conf: serde_json::Value| {
        serde_json::json!({"type": "Mesh", "name": "m",
            "mtls": {"enabledBackend": "ca", "backends": [{"name": "ca", "type": "provided", "conf": {
                "cert": {"inlineString": ca.material.cert_pem}, "key": {"inlineString": ca.material.key_pem}}}]},
            "metrics": {"enabledBackend": "prom", "backends": [{"name": "prom", "type": "prometheus", "conf": conf}]}})
        .to_string()
    };
    cp.apply(&mesh(serde_json::json!({"path": "/stats", "skipMTLS": true, "envoy": {"filterRegex": "^ward_"}})));
    let (port, app_metrics) = (common::free_port(), common::free_port());
    let _app = metrics_app(app_metrics, "# TYPE app_orders counter\napp_orders_total 7\n").await;
    let backend = cp.start_proxy(
        root.path(),
        "backend-1",
        &format!(
            "type: Dataplane\nmesh: m\nname: backend-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
             tags: {{kuma.io/service: backend}}\nmetrics:\n  type: prometheus\n  conf:\n    port: {port}\n    \
             aggregate:\n    - {{name: app, port: {app_metrics}, path: /metrics}}\n",
            common::free_port()
        ),
        &[],
    );
    let http = common::http_client();
    let get = async |path: &str| {
        let response = http.get(format!("http://127.0.0.1:{port}{path}")).send().await.map_err(|e| e.to_string())?;
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        Ok::<_, String>((response.status().as_u16(), content_type.unwrap_or_default(), response.text().await.unwrap()))
    };
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let (status, content_type, body) = loop {
        match get("/stats").await {
            Ok(answer) => break answer,
            Err(e) => assert!(std::time::Instant::now() < until, "no metrics endpoint: {e}\n{}", backend.log()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8", "applications' metrics merged in");
    assert!(body.contains("ward_control_plane_connected 1"), "the proxy's metrics: {body}");
    assert!(body.contains("app_orders_total 7"), "the application's metrics: {body}");
    assert!(!body.contains("# EOF"), "one exposition, not two: {body}");
    let filtered = get("/stats?filter=control_plane").await.unwrap().2;
    assert!(filtered.contains("ward_control_plane_connected") && !filtered.contains("ward_requests"), "{filtered}");
    assert_eq!(get("/metrics").await.unwrap().0, 404, "only the configured path");

    // activeMTLSBackend, the default: plaintext gets nothing, a mesh certificate needs a permission.
    cp.apply(&mesh(serde_json::json!({"path": "/"})));
    let scraper = || ca.issue("spiffe://m/prometheus");
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = mtls_get(port, Some(scraper())).await;
        if answer.as_deref() == Ok("HTTP/1.1 403 Forbidden") {
            break;
        }
        assert!(std::time::Instant::now() < until, "no mTLS endpoint after the switch: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plaintext = get("/").await;
    assert!(plaintext.is_err(), "plaintext still answered after the switch to mTLS: {plaintext:?}");
    cp.apply(
        "type: MeshTrafficPermission\nmesh: m\nname: scrape\nspec:\n  targetRef: {kind: MeshService, name: dataplane-metrics}\n  \
         from:\n  - targetRef: {kind: MeshService, name: prometheus}\n    default: {action: Allow}\n",
    );
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = mtls_get(port, Some(scraper())).await;
        if answer.as_deref() == Ok("HTTP/1.1 200 OK") {
            break;
        }
        assert!(std::time::Instant::now() < until, "the permitted scraper still gets {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = mtls_get(port, Some(ca.issue("spiffe://m/web"))).await;
    assert_eq!(other.as_deref(), Ok("HTTP/1.1 403 Forbidden"), "the permission names the scraper only");
    // The permission for the endpoint lets nobody into backend itself.
    let inbound = backend.config()["config"]["dataplane"]["networking"]["inbound"][0]["port"].as_u64().unwrap() as u16;
    assert_eq!(mtls_get(inbound, Some(scraper())).await.as_deref(), Ok("HTTP/1.1 403 Forbidden"));
}
