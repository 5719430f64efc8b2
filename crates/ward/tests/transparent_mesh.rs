//! The marketplace across network namespaces with transparent proxying: hosts `cp`, `users`,
//! `items`, `invoices` and `outsider`; each service host has `ward install transparent-proxy`,
//! an unmodified application (`ward demo-app`, listening on its own port 8080 as an ordinary
//! user) and `ward dp run` under the proxy's UID. Clients are real programs (curl, bash).

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::WARD;
use ward_testbed::{APP_UID, Host, PROXY_UID, Process, Testbed, find_program};

/// Every application's port, and the inbound port of its Dataplane.
const APP_PORT: u16 = 8080;
/// The port the "SSH" stand-in listens on, excluded from redirection.
const SSH_PORT: u16 = 22;
const CP_API: &str = "http://127.0.0.1:5681";

/// Files the proxies (another UID) must read: a directory anyone may traverse.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn write_shared(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

#[track_caller]
fn succeeds(what: &str, output: Output) -> String {
    assert!(output.status.success(), "{what} failed: {}{}", stdout(&output), String::from_utf8_lossy(&output.stderr));
    stdout(&output)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `check` every 100 ms until it holds, failing the test with `what` after `limit`.
#[track_caller]
fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `curl` as the application's user: the status code and body, or curl's exit code on failure.
fn curl(host: &Host<'_>, url: &str) -> Result<(u16, String), i32> {
    let output = host.exec_as(
        APP_UID,
        Command::new("curl").args(["-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}", url]),
    );
    if !output.status.success() {
        return Err(output.status.code().unwrap_or(-1));
    }
    let text = stdout(&output);
    let (body, code) = text.rsplit_once('\n').unwrap();
    Ok((code.parse().unwrap(), body.to_string()))
}

/// The control plane in host `cp`, with the marketplace's Mesh and permissions applied.
struct ControlPlane {
    _process: Process,
    data_dir: tempfile::TempDir,
    token: String,
}

impl ControlPlane {
    fn start(cp: &Host<'_>) -> ControlPlane {
        let data_dir = tempfile::tempdir().unwrap();
        let process = cp.spawn(Command::new(WARD).args([
            "cp",
            "run",
            "--data-dir",
            &data_dir.path().display().to_string(),
            "--api-address",
            "127.0.0.1:5681",
            "--dp-server-address",
            "0.0.0.0:5678",
        ]));
        let token_file = data_dir.path().join("admin-token");
        wait_until("the control plane writes its admin token", Duration::from_secs(20), || {
            token_file.exists() && data_dir.path().join("cp-ca.pem").exists()
        });
        let token = std::fs::read_to_string(token_file).unwrap().trim().to_string();
        let control_plane = ControlPlane { _process: process, data_dir, token };
        wait_until("the control plane's API answers", Duration::from_secs(20), || {
            control_plane.ward(cp, &["get", "meshes"]).status.success()
        });
        control_plane
    }

    fn ward(&self, cp: &Host<'_>, args: &[&str]) -> Output {
        cp.exec(Command::new(WARD).args(args).env("WARD_CP_ADDRESS", CP_API).env("WARD_API_TOKEN", &self.token))
    }

    fn apply(&self, cp: &Host<'_>, shared: &Path, yaml: &str) {
        let file = write_shared(shared, "apply.yaml", yaml);
        succeeds("ward apply", self.ward(cp, &["apply", "-f", &file.display().to_string()]));
    }
}

/// A service host: its application, its transparent-proxy rules and its proxy.
struct ServiceHost<'tb> {
    host: Host<'tb>,
    _app: Process,
    proxy: Process,
    _ssh: Option<ward_testbed::Responder>,
}

/// A second address of users' host, where its proxy reaches its application: the host's own
/// address rather than loopback, which the rules must not capture again (and not the address
/// the proxy is reached at, which Kuma's validation refuses for the same port).
fn app_address(address: IpAddr) -> Option<IpAddr> {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(IpAddr::from([a, b, c, 250]))
        }
        IpAddr::V6(_) => None,
    }
}

/// The Dataplane of `service` on a host with `address`.
fn dataplane(service: &str, address: IpAddr) -> String {
    let service_address = match app_address(address) {
        Some(app) if service == "users" => format!("\n    serviceAddress: {app}"),
        _ => String::new(),
    };
    format!(
        "type: Dataplane\nmesh: marketplace\nname: {service}-1\nnetworking:\n  address: {address}\n  inbound:\n  \
         - port: {APP_PORT}{service_address}\n    tags:\n      kuma.io/service: {service}\n      kuma.io/protocol: http\n  \
         transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n"
    )
}

fn start_service<'tb>(
    testbed: &'tb Testbed,
    service: &str,
    cp_host: &Host<'_>,
    cp: &ControlPlane,
    shared: &Path,
) -> ServiceHost<'tb> {
    let host = testbed.host(service);
    // A real host reaches virtual IPs by its default route (the nat rules redirect them before
    // they leave); testbed hosts have none, so they get a route for the range alone.
    succeeds(
        "ip route add",
        host.exec(Command::new("ip").args(["route", "add", "240.0.0.0/4", "dev", host.interface()])),
    );
    if let Some(app) = app_address(host.addr()).filter(|_| service == "users") {
        succeeds(
            "ip addr add",
            host.exec(Command::new("ip").args(["addr", "add", &format!("{app}/32"), "dev", host.interface()])),
        );
    }
    let mut app = Command::new(WARD);
    app.args(["demo-app", "--name", service, "--listen", &format!("0.0.0.0:{APP_PORT}")]);
    if service == "invoices" {
        // The application calls its peers by name, through the proxy's DNS and virtual IPs.
        app.args(["--users-url", "http://users.mesh", "--items-url", "http://items.mesh"]);
    }
    let app = host.spawn_as(APP_UID, &app);
    let ssh = (service == "items")
        .then(|| host.respond(SocketAddr::new("0.0.0.0".parse().unwrap(), SSH_PORT), |_| "ssh".to_string()));
    succeeds(
        "ward install transparent-proxy",
        host.exec(Command::new(WARD).args([
            "install",
            "transparent-proxy",
            "--proxy-uid",
            &PROXY_UID.to_string(),
            "--redirect-dns",
            "--exclude-inbound-ports",
            &SSH_PORT.to_string(),
        ])),
    );
    let tag = format!("kuma.io/service={service}");
    let name = format!("{service}-1");
    let token = succeeds(
        "ward generate dataplane-token",
        cp.ward(cp_host, &["generate", "dataplane-token", "-m", "marketplace", "--name", &name, "--tag", &tag]),
    );
    let token_file = write_shared(shared, &format!("{service}.token"), token.trim());
    let dataplane_file = write_shared(shared, &format!("{service}.yaml"), &dataplane(service, host.addr()));
    let ca = write_shared(shared, "cp-ca.pem", &std::fs::read_to_string(cp.data_dir.path().join("cp-ca.pem")).unwrap());
    let proxy = host.spawn_as(
        PROXY_UID,
        Command::new(WARD)
            .args([
                "dp",
                "run",
                "--cp-address",
                &format!("https://{}:5678", cp_host.addr()),
                "--ca-cert",
                &ca.display().to_string(),
                "--dataplane-file",
                &dataplane_file.display().to_string(),
                "--dataplane-token-file",
                &token_file.display().to_string(),
            ])
            .env("WARD_LOG", "info,ward_proxy=debug"),
    );
    ServiceHost { host, _app: app, proxy, _ssh: ssh }
}

impl ServiceHost<'_> {
    fn wait_ready(&self) {
        wait_until(
            &format!("{}'s proxy is ready:\n{}", self.host.name(), self.proxy.log()),
            Duration::from_secs(30),
            || {
                self.host
                    .exec(Command::new("curl").args(["-sf", "--max-time", "2", "http://127.0.0.1:9901/ready"]))
                    .status
                    .success()
            },
        );
    }
}

/// Captures the host's traffic on its veth (`tcpdump -w`) until dropped.
struct Capture {
    process: Process,
    file: PathBuf,
}

impl Capture {
    fn start(host: &Host<'_>, dir: &Path) -> Capture {
        let file = dir.join(format!("{}.pcap", host.name()));
        let process = host.spawn(
            Command::new("tcpdump").args(["-i", host.interface(), "--immediate-mode", "-U", "-n", "-w"]).arg(&file),
        );
        wait_until("tcpdump is listening", Duration::from_secs(10), || process.log().contains("listening on"));
        Capture { process, file }
    }

    /// Stops the capture (SIGINT, so tcpdump writes out what it holds) and returns the packets
    /// as raw bytes.
    fn finish(mut self) -> Vec<u8> {
        std::thread::sleep(Duration::from_millis(500));
        let interrupted = Command::new("kill").args(["-INT", &self.process.id().to_string()]).status().unwrap();
        assert!(interrupted.success(), "cannot stop tcpdump");
        self.process.wait();
        std::fs::read(&self.file).unwrap()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_marketplace_runs_transparently_across_hosts() {
    for program in ["curl", "tcpdump", "iptables"] {
        assert!(find_program(program).is_some(), "{program} is missing: install it (.ci/run does)");
    }
    let testbed = Testbed::new("transparent_mesh");
    let shared = shared_dir();
    let cp_host = testbed.host("cp");
    let cp = ControlPlane::start(&cp_host);
    cp.apply(&cp_host, shared.path(), &common::marketplace::policies(None));
    let hosts: Vec<ServiceHost<'_>> = ["users", "items", "invoices"]
        .iter()
        .map(|s| start_service(&testbed, s, &cp_host, &cp, shared.path()))
        .collect();
    let [users, items, invoices] = &hosts[..] else { unreachable!() };
    for host in &hosts {
        host.wait_ready();
    }
    let outsider = testbed.host("outsider");
    let _outside_service = outsider.respond(SocketAddr::new("0.0.0.0".parse().unwrap(), 9000), |_| "outsider".into());

    // Names of the mesh resolve to virtual IPs from the default range, through the proxy's DNS.
    let resolved = succeeds(
        "getent hosts items.mesh",
        invoices.host.exec_as(APP_UID, Command::new("getent").args(["ahostsv4", "items.mesh"])),
    );
    let vip: IpAddr = resolved.split_whitespace().next().unwrap().parse().unwrap();
    assert!("240.0.0.0/4".parse::<ipnet::IpNet>().unwrap().contains(&vip), "{resolved}");

    // invoices calls items by name and users by its plain address, and its application builds an
    // invoice from both by name; the wire between hosts carries only TLS.
    let capture = Capture::start(&invoices.host, testbed.dir());
    let by_name = curl(&invoices.host, "http://items.mesh/items").expect("invoices -> items.mesh");
    assert_eq!(by_name.0, 200, "{}", by_name.1);
    let by_address = curl(&invoices.host, &format!("http://{}:{APP_PORT}/users", users.host.addr()))
        .expect("invoices -> users by address");
    assert_eq!(by_address.0, 200, "{}", by_address.1);
    let invoice = curl(&invoices.host, &format!("http://127.0.0.1:{APP_PORT}/invoices/1")).expect("invoice");
    assert_eq!(invoice.0, 200, "the invoices application reaches users.mesh and items.mesh: {}", invoice.1);
    let wire = capture.finish();
    assert!(contains(&wire, &[0x16, 0x03, 0x01]), "the capture holds no TLS ClientHello ({} bytes)", wire.len());
    assert!(contains(&wire, &[0x17, 0x03, 0x03]), "the capture holds no TLS application data");
    for plaintext in [&b"GET /"[..], b"HTTP/1.1", b"Host: ", b"items.mesh"] {
        assert!(!contains(&wire, plaintext), "plaintext {:?} on the wire", String::from_utf8_lossy(plaintext));
    }

    // items may not call invoices: the destination's permissions answer.
    let denied = curl(&items.host, "http://invoices.mesh/").expect("items -> invoices.mesh");
    assert_eq!(denied, (403, "RBAC: access denied".to_string()));

    // A host without a proxy cannot reach an application in plaintext, but the excluded port
    // (the "SSH" case) stays reachable.
    let direct = curl(&outsider, &format!("http://{}:{APP_PORT}/items", items.host.addr()));
    assert!(direct.is_err(), "plaintext from outside the mesh reached items: {direct:?}");
    assert_eq!(outsider.tcp_read_as(APP_UID, SocketAddr::new(items.host.addr(), SSH_PORT)).as_deref(), Ok("ssh"));

    // Destinations outside the mesh: refused while the Mesh forbids passthrough (but through a
    // MeshExternalService), reached once it allows it.
    let outside = SocketAddr::new(outsider.addr(), 9000);
    let refused = invoices.host.tcp_read_as(APP_UID, outside);
    assert!(refused.as_deref() != Ok("outsider"), "passthrough is off, yet: {refused:?}");

    // A MeshExternalService is then the one way out: its name resolves to a virtual IP, and the
    // proxy of a service a permission lets through carries the connection to the endpoint.
    let external = format!(
        "type: MeshExternalService\nmesh: marketplace\nname: outsider\nspec:\n  match: {{port: 9000}}\n  \
         endpoints:\n  - {{address: {}, port: 9000}}\n---\ntype: MeshTrafficPermission\nmesh: marketplace\n\
         name: invoices-to-outsider\nspec:\n  targetRef: {{kind: MeshExternalService, name: outsider}}\n  from:\n  \
         - targetRef: {{kind: MeshService, name: invoices}}\n    default: {{action: Allow}}\n",
        outsider.addr()
    );
    cp.apply(&cp_host, shared.path(), &external);
    let resolve = |host: &Host<'_>| -> Option<IpAddr> {
        let found = host.exec_as(APP_UID, Command::new("getent").args(["ahostsv4", "outsider.extsvc.mesh.local"]));
        stdout(&found).split_whitespace().next()?.parse().ok()
    };
    let mut external_vip = None;
    wait_until("outsider.extsvc.mesh.local resolves", Duration::from_secs(10), || {
        external_vip = resolve(&invoices.host);
        external_vip.is_some()
    });
    let through_mes = SocketAddr::new(external_vip.unwrap(), 9000);
    wait_until("invoices reaches the outsider through the MeshExternalService", Duration::from_secs(10), || {
        invoices.host.tcp_read_as(APP_UID, through_mes).as_deref() == Ok("outsider")
    });
    let unpermitted = items.host.tcp_read_as(APP_UID, through_mes);
    assert!(unpermitted.as_deref() != Ok("outsider"), "items has no permission, yet: {unpermitted:?}");
    let direct = invoices.host.tcp_read_as(APP_UID, outside);
    assert!(direct.as_deref() != Ok("outsider"), "the outsider's own address stays closed: {direct:?}");
    let mesh = common::MARKETPLACE.split("---").next().unwrap().replace("passthrough: false", "passthrough: true");
    cp.apply(&cp_host, shared.path(), &mesh);
    wait_until("passthrough reaches the outsider once allowed", Duration::from_secs(10), || {
        invoices.host.tcp_read_as(APP_UID, outside).as_deref() == Ok("outsider")
    });

    // Uninstalled, items is a plain host again: the outsider reaches its application directly,
    // and no chain of Ward's is left.
    succeeds(
        "ward uninstall transparent-proxy",
        items.host.exec(Command::new(WARD).args(["uninstall", "transparent-proxy"])),
    );
    let plain =
        curl(&outsider, &format!("http://{}:{APP_PORT}/items", items.host.addr())).expect("direct after uninstall");
    assert_eq!(plain.0, 200, "{}", plain.1);
    for save in ["iptables-save", "ip6tables-save"] {
        let rules = succeeds(save, items.host.exec(Command::new(save).args(["-t", "nat"])));
        assert!(!rules.contains("WARD_"), "{save} after uninstall:\n{rules}");
    }
}
