//! A small mesh for the traffic-policy tests: a control plane, `web-1` (`version: v1`) in front
//! of the echo application, optionally more `web` instances whose application is gone (their
//! proxies answer 502) or that answer with their own name, a `db` TCP echo, a gRPC health
//! service, and route targets (a `web-v2` instance, an `api` service, a recording `shadow`
//! service and a `cache` TCP greeter), and a `client-1` proxy with an outbound to each service.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{ControlPlane, apps, free_port, mesh::Proxy};

/// Mesh `lab` with mutual TLS, where `client` may call every service.
pub const MESH: &str = "type: Mesh\nname: lab\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n---\ntype: MeshTrafficPermission\nmesh: lab\nname: client-calls-web\nspec:\n  targetRef: {kind: Mesh}\n  from:\n  - targetRef: {kind: MeshService, name: client}\n    default: {action: Allow}\n";

/// What a lab holds besides `web-1` and the client.
#[derive(Default)]
pub struct Extras {
    /// How many more `web` instances, each in front of a port nobody listens on.
    pub broken_webs: usize,
    /// Whether a `db` TCP echo service runs, reached at [`Lab::db_outbound`].
    pub db: bool,
    /// The Mesh `lab` and its permissions, instead of [`MESH`].
    pub mesh: Option<&'static str>,
    /// How many more `web` instances in front of [`apps::named`] applications, after the
    /// broken ones.
    pub named_webs: usize,
    /// Whether a `grpc` service (the standard health service) runs, reached at
    /// [`Lab::grpc_outbound`].
    pub grpc: bool,
    /// Whether the route targets run: `web-v2` (a `web` instance tagged `version: v2`, whose
    /// echo answers as `web-v2`), `api`, `shadow` (recording what it answers) and, with `db`, a
    /// `cache` TCP service that greets with `cache`.
    pub routes: bool,
}

/// A `web` instance whose application answers with its name and whose health can be switched.
pub struct Named {
    /// Its Dataplane's name, which its application answers with.
    pub name: String,
    /// Its proxy.
    pub proxy: Proxy,
    healthy: Arc<AtomicBool>,
}

impl Named {
    /// Makes its application's `/health` answer 200 (`true`) or 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

/// The running lab; every process stops when it is dropped.
pub struct Lab {
    _root: tempfile::TempDir,
    _apps: Vec<apps::App>,
    /// The control plane.
    pub cp: ControlPlane,
    /// The proxy of `web-1`.
    pub web: Proxy,
    /// The proxies of the broken `web` instances.
    pub broken: Vec<Proxy>,
    /// The `web` instances that answer with their names.
    pub named: Vec<Named>,
    /// The proxy of `db-1`, when asked for.
    pub db: Option<Proxy>,
    /// The proxies of the route targets, when asked for.
    pub targets: Vec<Proxy>,
    /// What the `shadow` service answered, when it runs.
    pub shadow: Option<apps::Seen>,
    /// The client's proxy.
    pub client: Proxy,
    _grpc: Option<Proxy>,
    /// The client's outbound to `web`.
    pub outbound: u16,
    /// The client's outbound to `db`.
    pub db_outbound: u16,
    /// The client's outbound to `grpc`.
    pub grpc_outbound: u16,
    /// The health service of `grpc-1`'s application, when asked for.
    pub grpc_health: Option<tonic_health::server::HealthReporter>,
}

/// The Dataplane of instance `name` of `service` speaking `protocol`, in front of `app_port`.
fn server_dataplane(name: &str, service: &str, protocol: &str, app_port: u16) -> String {
    tagged_dataplane(name, service, protocol, app_port, "")
}

/// The same with `more` tags (`, key: value` each).
fn tagged_dataplane(name: &str, service: &str, protocol: &str, app_port: u16, more: &str) -> String {
    format!(
        "type: Dataplane\nmesh: lab\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
         servicePort: {app_port}\n    tags: {{kuma.io/service: {service}, kuma.io/protocol: {protocol}{more}}}\n",
        free_port()
    )
}

impl Lab {
    /// `web-1` and the client.
    pub async fn start() -> Lab {
        Lab::start_with(Extras::default()).await
    }

    /// `web-1`, the client and `extras`, every proxy ready.
    pub async fn start_with(extras: Extras) -> Lab {
        let root = tempfile::tempdir().unwrap();
        let cp = ControlPlane::start(root.path());
        cp.apply(extras.mesh.unwrap_or(MESH));
        let app = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "web").await;
        let web_yaml = tagged_dataplane("web-1", "web", "http", app.address.port(), ", version: v1");
        let web = cp.spawn_proxy(root.path(), "web-1", &web_yaml, &[]);
        let mut apps = vec![app];
        let broken = (2..2 + extras.broken_webs)
            .map(|i| {
                let name = format!("web-{i}");
                cp.spawn_proxy(root.path(), &name, &server_dataplane(&name, "web", "http", free_port()), &[])
            })
            .collect::<Vec<_>>();
        let mut named = Vec::new();
        for i in 2 + extras.broken_webs..2 + extras.broken_webs + extras.named_webs {
            let name = format!("web-{i}");
            let healthy = Arc::new(AtomicBool::new(true));
            let app = apps::named(([127, 0, 0, 1], free_port()).into(), name.clone(), healthy.clone()).await;
            let yaml = server_dataplane(&name, "web", "http", app.address.port());
            apps.push(app);
            let proxy = cp.spawn_proxy(root.path(), &name, &yaml, &[]);
            named.push(Named { name, proxy, healthy });
        }
        let db = if extras.db {
            let db_app = apps::tcp_echo(([127, 0, 0, 1], free_port()).into()).await;
            let yaml = server_dataplane("db-1", "db", "tcp", db_app.address.port());
            apps.push(db_app);
            Some(cp.spawn_proxy(root.path(), "db-1", &yaml, &[]))
        } else {
            None
        };
        let (grpc, grpc_health) = if extras.grpc {
            let (app, reporter) = apps::grpc_health(([127, 0, 0, 1], free_port()).into()).await;
            let yaml = server_dataplane("grpc-1", "grpc", "grpc", app.address.port());
            apps.push(app);
            (Some(cp.spawn_proxy(root.path(), "grpc-1", &yaml, &[])), Some(reporter))
        } else {
            (None, None)
        };
        let (mut targets, mut shadow) = (Vec::new(), None);
        if extras.routes {
            let v2 = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "web-v2").await;
            let yaml = tagged_dataplane("web-v2", "web", "http", v2.address.port(), ", version: v2");
            targets.push(cp.spawn_proxy(root.path(), "web-v2", &yaml, &[]));
            let api = apps::http_echo(([127, 0, 0, 1], free_port()).into(), "api").await;
            targets.push(cp.spawn_proxy(
                root.path(),
                "api-1",
                &server_dataplane("api-1", "api", "http", api.address.port()),
                &[],
            ));
            let (mirror, seen) = apps::http_echo_seen(([127, 0, 0, 1], free_port()).into(), "shadow").await;
            let yaml = server_dataplane("shadow-1", "shadow", "http", mirror.address.port());
            targets.push(cp.spawn_proxy(root.path(), "shadow-1", &yaml, &[]));
            apps.extend([v2, api, mirror]);
            shadow = Some(seen);
            if extras.db {
                let cache = apps::tcp_greeter(([127, 0, 0, 1], free_port()).into(), "cache").await;
                let yaml = server_dataplane("cache-1", "cache", "tcp", cache.address.port());
                targets.push(cp.spawn_proxy(root.path(), "cache-1", &yaml, &[]));
                apps.push(cache);
            }
        }
        let (outbound, db_outbound, grpc_outbound) = (free_port(), free_port(), free_port());
        let db_line = if extras.db {
            format!("  - port: {db_outbound}\n    tags: {{kuma.io/service: db}}\n")
        } else {
            String::new()
        };
        let grpc_line = if extras.grpc {
            format!("  - port: {grpc_outbound}\n    tags: {{kuma.io/service: grpc}}\n")
        } else {
            String::new()
        };
        let client_yaml = format!(
            "type: Dataplane\nmesh: lab\nname: client-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {}\n    \
             tags: {{kuma.io/service: client}}\n  outbound:\n  - port: {outbound}\n    tags: {{kuma.io/service: web}}\n{db_line}{grpc_line}",
            free_port()
        );
        let client = cp.spawn_proxy(root.path(), "client-1", &client_yaml, &[]);
        tokio::task::block_in_place(|| {
            let named_proxies = named.iter().map(|n| &n.proxy);
            for p in std::iter::once(&web)
                .chain(&broken)
                .chain(named_proxies)
                .chain(&db)
                .chain(&grpc)
                .chain(&targets)
                .chain([&client])
            {
                p.wait_ready();
            }
        });
        Lab {
            _root: root,
            _apps: apps,
            _grpc: grpc,
            cp,
            web,
            broken,
            named,
            targets,
            shadow,
            db,
            client,
            outbound,
            db_outbound,
            grpc_outbound,
            grpc_health,
        }
    }

    /// Applies `policy` and waits until `proxy` runs with rules where `seen` holds.
    pub async fn apply(&self, policy: &str, proxy: &Proxy, seen: impl Fn(&Value) -> bool) {
        self.cp.apply(policy);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let config = tokio::task::block_in_place(|| proxy.config());
            if seen(&config["config"]["rules"]) {
                return;
            }
            assert!(Instant::now() < deadline, "the proxy never received the policy: {}", config["config"]["rules"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The URL of `path` through the client's outbound to `web`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.outbound)
    }
}

/// Whether the rules hold a `kind` conf mentioning `text` at the first inbound.
pub fn inbound_has(rules: &Value, kind: &str, text: &str) -> bool {
    rules["inbounds"][0]["policies"][kind]["conf"].to_string().contains(text)
}

/// Whether the rules hold a `kind` conf mentioning `text` for some outbound.
pub fn outbound_has(rules: &Value, kind: &str, text: &str) -> bool {
    rules["outbounds"].as_array().into_iter().flatten().any(|o| o["policies"][kind]["conf"].to_string().contains(text))
}

/// Which `web` instance answered `body`: a named one's name, else `web-1` (the echo).
pub fn answered_by(body: &str) -> String {
    if body.starts_with("web-") { body.to_string() } else { "web-1".to_string() }
}
