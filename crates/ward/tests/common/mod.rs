//! Helpers for tests that run the real `ward` binary: free ports, a control plane
//! process that is killed when dropped, and CLI invocations against it.

#![allow(dead_code)] // each test binary uses a different part of these helpers

pub mod apps;
pub mod marketplace;
pub mod mesh;
pub mod mtls;
pub mod policy_lab;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The `ward` binary cargo built for these tests.
pub const WARD: &str = env!("CARGO_BIN_EXE_ward");

/// The marketplace example of DESIGN.md.
pub const MARKETPLACE: &str = include_str!("../../../../examples/marketplace.yaml");

/// A port nobody listens on right now, below the kernel's ephemeral range: a port from that range
/// can be taken by any outgoing connection between this check and the bind that needs it.
/// Never the same twice in one test binary, so ports chosen together cannot collide; each binary
/// starts at its own place in the range, so binaries run one after another do not reuse ports.
pub fn free_port() -> u16 {
    static NEXT: std::sync::Mutex<Option<(u16, u16, u16)>> = std::sync::Mutex::new(None);
    let mut next = NEXT.lock().unwrap();
    let (low, high, cursor) = next.get_or_insert_with(|| {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        let (low, high) = (10_000, ephemeral_low.max(10_001 + 1000));
        let seed = std::process::id()
            ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        (low, high, low + (seed % u32::from(high - low)) as u16)
    });
    for _ in *low..*high {
        let port = *cursor;
        *cursor = if port + 1 >= *high { *low } else { port + 1 };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port left in {low}..{high}")
}

/// A `ward cp run` process with its own data directory; killed on drop.
pub struct ControlPlane {
    child: Option<Child>,
    /// Where the control plane keeps its state.
    pub data_dir: PathBuf,
    /// `http://127.0.0.1:PORT` of the API.
    pub address: String,
    /// Port of the discovery server.
    pub dp_port: u16,
    /// The admin token it wrote on first start.
    pub admin_token: String,
    /// HOME for CLI invocations, so tests never read or write the user's config.
    pub home: tempfile::TempDir,
    log: PathBuf,
}

impl ControlPlane {
    /// Starts a control plane on a free port with a new data directory under `root`.
    pub fn start(root: &Path) -> Self {
        Self::start_with(root.join("data"), root)
    }

    /// Starts (or restarts) a control plane on `data_dir`, on free ports.
    pub fn start_with(data_dir: PathBuf, root: &Path) -> Self {
        Self::start_on(data_dir, root, free_port(), free_port())
    }

    /// Starts a control plane on `data_dir` with its API on `api_port` and its discovery server on `dp_port`.
    pub fn start_on(data_dir: PathBuf, root: &Path, api_port: u16, dp_port: u16) -> Self {
        Self::start_with_args(data_dir, root, api_port, dp_port, &[])
    }

    /// Starts a control plane like [`Self::start_on`], with more arguments for `ward cp run`.
    pub fn start_with_args(data_dir: PathBuf, root: &Path, api_port: u16, dp_port: u16, extra: &[&str]) -> Self {
        let log = root.join(format!("cp-{api_port}.log"));
        let child = Command::new(WARD)
            .args(["cp", "run", "--data-dir"])
            .arg(&data_dir)
            .args(["--api-address", &format!("127.0.0.1:{api_port}")])
            .args(["--dp-server-address", &format!("127.0.0.1:{dp_port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file"))
            .spawn()
            .expect("spawn ward cp run");
        let address = format!("http://127.0.0.1:{api_port}");
        let mut cp = ControlPlane {
            child: Some(child),
            data_dir,
            address,
            dp_port,
            admin_token: String::new(),
            home: tempfile::tempdir().unwrap(),
            log,
        };
        cp.wait_ready();
        cp
    }

    /// Kills the process and starts it again on the same data directory and ports.
    pub fn restart(&mut self, root: &Path) {
        self.kill();
        let api_port: u16 = self.address.rsplit(':').next().unwrap().parse().unwrap();
        let home = std::mem::replace(&mut self.home, tempfile::tempdir().unwrap());
        let mut again = Self::start_on(self.data_dir.clone(), root, api_port, self.dp_port);
        again.home = home;
        *self = again;
    }

    /// `https://127.0.0.1:PORT` of the discovery server, for `ward dp run --cp-address`.
    pub fn dp_address(&self) -> String {
        format!("https://127.0.0.1:{}", self.dp_port)
    }

    /// The control plane's CA, for `ward dp run --ca-cert`.
    pub fn ca_cert(&self) -> PathBuf {
        self.data_dir.join("cp-ca.pem")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let token_file = self.data_dir.join("admin-token");
        let port: u16 = self.address.rsplit(':').next().unwrap().parse().unwrap();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ward cp run exited with {status}:\n{}", self.log());
            }
            if let Ok(token) = std::fs::read_to_string(&token_file)
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                self.admin_token = token.trim().to_string();
                return;
            }
            assert!(Instant::now() < deadline, "control plane not ready after 20s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the control plane logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the control plane");
    }

    /// Waits up to `timeout` for the process to exit; its exit status, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the CLI as admin.
    pub fn ward(&self, args: &[&str]) -> Run {
        self.run(Some(&self.admin_token), args, None)
    }

    /// Runs the CLI as admin with `stdin` as standard input.
    pub fn ward_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.run(Some(&self.admin_token), args, Some(stdin))
    }

    /// Runs the CLI with `token` (none: only what the config file says) and optional stdin.
    pub fn run(&self, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Run {
        self.ward_cmd(token, args, stdin)
    }

    fn ward_cmd(&self, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(WARD);
        cmd.args(args).env("HOME", self.home.path()).env_remove("XDG_CONFIG_HOME").env_remove("WARD_API_TOKEN");
        cmd.env_remove("WARD_CP_ADDRESS");
        if let Some(token) = token {
            cmd.env("WARD_CP_ADDRESS", &self.address).env("WARD_API_TOKEN", token);
        }
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ward");
        if let Some(text) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        Run(child.wait_with_output().expect("wait for ward"))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The result of one CLI invocation.
pub struct Run(pub Output);

impl Run {
    /// Standard output.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    /// Standard error.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts success and returns standard output.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert!(self.0.status.success(), "ward failed:\nstdout: {}\nstderr: {}", self.stdout(), self.stderr());
        self.stdout()
    }

    /// Asserts failure and returns standard error.
    #[track_caller]
    pub fn fails(&self) -> String {
        assert!(
            !self.0.status.success(),
            "ward should have failed:\nstdout: {}\nstderr: {}",
            self.stdout(),
            self.stderr()
        );
        self.stderr()
    }
}

/// A `ward gateway run` process on free loopback ports, with its configuration file in a
/// temporary directory; killed on drop.
pub struct GatewayProcess {
    child: Option<Child>,
    /// Holds the configuration file and the log.
    pub dir: tempfile::TempDir,
    /// The configuration file the process reads (and reads again on SIGHUP).
    pub config: PathBuf,
    /// HTTP proxy listener.
    pub proxy: std::net::SocketAddr,
    /// HTTPS proxy listener.
    pub proxy_ssl: std::net::SocketAddr,
    /// Admin listener.
    pub admin: std::net::SocketAddr,
    log: PathBuf,
}

impl GatewayProcess {
    /// Starts a gateway serving `config` and waits until it listens.
    pub fn start(config: &str) -> Self {
        Self::start_with(config, &[])
    }

    /// Starts a gateway with extra command-line arguments.
    pub fn start_with(config: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kong.yml");
        std::fs::write(&path, config).unwrap();
        let local = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let (proxy, proxy_ssl, admin) = (local(free_port()), local(free_port()), local(free_port()));
        let log = dir.path().join("gateway.log");
        let child = Command::new(WARD)
            .args(["gateway", "run", "--config"])
            .arg(&path)
            .args(["--proxy-listen", &proxy.to_string(), "--proxy-ssl-listen", &proxy_ssl.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(args)
            .env("WARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ward gateway run");
        let mut gw = GatewayProcess { child: Some(child), dir, config: path, proxy, proxy_ssl, admin, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = gw.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ward gateway run exited with {status}:\n{}", gw.log());
            }
            if [gw.proxy, gw.proxy_ssl, gw.admin].iter().all(|a| std::net::TcpStream::connect(a).is_ok()) {
                return gw;
            }
            assert!(Instant::now() < deadline, "gateway not listening after 20s:\n{}", gw.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT{path}` on the HTTP proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// `http://127.0.0.1:PORT{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// What the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Waits for the process to exit, up to `timeout`; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Replaces the configuration file and sends SIGHUP.
    pub fn reload_file(&self, config: &str) {
        std::fs::write(&self.config, config).unwrap();
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `ward` with `args` and a configuration file holding `config` (for runs that exit).
pub fn ward_with_config(config: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(WARD);
    for a in args {
        cmd.arg(if *a == "{config}" { path.to_str().unwrap() } else { a });
    }
    Run(cmd.stdin(Stdio::null()).output().expect("run ward"))
}

/// Sends raw bytes on one connection and returns the status and the whole response
/// (async, so that an upstream running in the test's runtime can answer meanwhile).
pub async fn raw_http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no complete response within 20s to {request:?}; got {:?}", String::from_utf8_lossy(&out));
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// An HTTP client that never goes through a proxy.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A test upstream: answers every request with JSON describing it (method, path, headers,
/// body, and the upstream's name). `x-echo-status` sets the status, `x-echo-delay-ms`
/// delays the answer. Stops (and closes its connections) when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// How many requests it answered.
    pub hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tasks: tokio::task::JoinSet<()>,
}

impl Upstream {
    /// Starts an upstream named `name` on a free port.
    pub async fn start(name: &str) -> Self {
        Self::start_on(name, 0).await
    }

    /// Starts an upstream named `name` on `port` (0: any free port).
    pub async fn start_on(name: &str, port: u16) -> Self {
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let (name, counter) = (name.to_string(), hits.clone());
        // Owned by the accept loop: aborting it closes every connection too.
        let conns = Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (name, counter) = (name.clone(), counter.clone());
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (name, counter) = (name.clone(), counter.clone());
                    async move { Ok::<_, std::convert::Infallible>(echo(&name, &counter, req).await) }
                });
                conns.lock().unwrap().spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, hits, tasks }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered so far.
    pub fn count(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops listening and closes every open connection.
    pub fn stop(mut self) -> u16 {
        self.tasks.abort_all();
        self.addr.port()
    }
}

async fn echo(
    name: &str,
    counter: &std::sync::atomic::AtomicUsize,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt;
    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(ms) = header("x-echo-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = header("x-echo-status").and_then(|v| v.parse().ok()).unwrap_or(200u16);
    let mut headers = serde_json::Map::new();
    for key in req.headers().keys() {
        let values: Vec<&str> = req.headers().get_all(key).iter().filter_map(|v| v.to_str().ok()).collect();
        headers.insert(key.as_str().to_string(), values.join(", ").into());
    }
    let method = req.method().to_string();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let json = serde_json::json!({
        "upstream": name,
        "method": method,
        "path": path,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream", name)
        .body(http_body_util::Full::new(bytes::Bytes::from(json.to_string())))
        .unwrap()
}

/// Fails loudly unless a Redis answers on 127.0.0.1:6379 (tests that need it never pass silently).
pub fn require_shared_redis() {
    let ok = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "ping"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG");
    assert!(
        ok,
        "this test needs Redis on 127.0.0.1:6379 (redis-server and redis-cli): install redis-server and start it \
         (.ci/run does so)"
    );
}

/// A `redis-server` of this test's own on a free port; killed on drop.
pub struct OwnRedis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl OwnRedis {
    /// Starts one and waits until it answers; fails loudly if redis-server is missing.
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("this test needs redis-server on the PATH: install it (Debian package redis-server)");
        let redis = OwnRedis { child: Some(child), port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.answers() {
            assert!(Instant::now() < deadline, "redis-server on port {port} did not answer within 10s");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    /// Whether it answers PING.
    pub fn answers(&self) -> bool {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "ping"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
    }

    /// Stops it (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Test certificates: a CA, and leaf certificates it signs (server or client).
pub struct TestPki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate in PEM.
    pub ca_pem: String,
}

/// A certificate and its key in PEM.
pub struct Leaf {
    /// Certificate.
    pub cert: String,
    /// Private key.
    pub key: String,
}

impl TestPki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        TestPki { ca_pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A server certificate for `names` (DNS SANs).
    pub fn server(&self, names: &[&str]) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with common name `cn` and DNS SANs `sans`.
    pub fn client(&self, cn: &str, sans: &[&str]) -> Leaf {
        let mut params = rcgen::CertificateParams::new(sans.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: rcgen::CertificateParams) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }
}

/// Indents a PEM block for a YAML literal (`|`) under `spaces` spaces.
pub fn yaml_block(pem: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    pem.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// Waits, if needed, so that the next few seconds stay within one clock minute (tests that
/// count requests per minute would otherwise see the window turn).
pub async fn avoid_minute_boundary() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let into_minute = now.as_secs_f64() % 60.0;
    if into_minute > 50.0 {
        tokio::time::sleep(Duration::from_secs_f64(60.5 - into_minute)).await;
    }
}

/// A UUID no other test run uses (a namespace for shared counters).
pub fn unique_uuid() -> String {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let n = (u128::from(std::process::id()) << 96) ^ (u128::from(call) << 64) ^ u128::from(nanos);
    let hex = format!("{n:032x}");
    format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}
