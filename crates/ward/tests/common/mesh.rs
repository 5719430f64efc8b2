//! Proxies as real processes (`ward dp run`) next to test applications, and a raw discovery
//! client for what a well-behaved proxy never sends.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio_stream::wrappers::ReceiverStream;
use ward_proto::discovery::{
    CertificateRequest, ControlMessage, ProxyMessage, Register, discovery_client::DiscoveryClient, proxy_message,
};

use super::{ControlPlane, WARD, free_port};

impl ControlPlane {
    /// A dataplane token for `name` of `service` (or `a,b`: several) in `mesh`, valid for
    /// `valid_for` (e.g. `1h`).
    pub fn dataplane_token(&self, mesh: &str, name: &str, service: &str, valid_for: &str) -> String {
        let tag = format!("kuma.io/service={service}");
        self.ward(&["generate", "dataplane-token", "-m", mesh, "--name", name, "--tag", &tag, "--valid-for", valid_for])
            .ok()
            .trim()
            .to_string()
    }

    /// Applies YAML through the CLI, as admin.
    pub fn apply(&self, yaml: &str) {
        self.ward_stdin(&["apply", "-f", "-"], yaml).ok();
    }

    /// Starts `ward dp run` for the Dataplane `yaml` (named `name`) with a fresh token, and
    /// waits until its /ready says 200.
    pub fn start_proxy(&self, root: &Path, name: &str, yaml: &str, extra: &[&str]) -> Proxy {
        let proxy = self.spawn_proxy(root, name, yaml, extra);
        proxy.wait_ready();
        proxy
    }

    /// Starts `ward dp run` without waiting for it to be ready.
    pub fn spawn_proxy(&self, root: &Path, name: &str, yaml: &str, extra: &[&str]) -> Proxy {
        let doc = ward_api::parse::documents(yaml).expect("dataplane YAML").remove(0);
        let resource = ward_api::parse::resource(doc, "dataplane").unwrap_or_else(|e| panic!("{e}"));
        let ward_api::Spec::Dataplane(dp) = &resource.spec else { panic!("not a Dataplane") };
        let (mesh, services) = (resource.meta.mesh.as_str(), dp.services().join(","));
        let token = root.join(format!("{name}.token"));
        std::fs::write(&token, self.dataplane_token(mesh, name, &services, "1h")).unwrap();
        let file = root.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let log = root.join(format!("{name}.log"));
        let mut args: Vec<String> = vec![
            "dp".into(),
            "run".into(),
            "--cp-address".into(),
            self.dp_address(),
            "--ca-cert".into(),
            self.ca_cert().display().to_string(),
            "--dataplane-file".into(),
            file.display().to_string(),
            "--dataplane-token-file".into(),
            token.display().to_string(),
        ];
        // The Dataplane's networking.admin.port, when it has one, is where the proxy listens.
        let admin = match &dp.networking.admin {
            Some(admin) => admin.port.0,
            None => {
                let port = free_port();
                args.extend(["--admin-address".into(), format!("127.0.0.1:{port}")]);
                port
            }
        };
        args.extend(extra.iter().map(|a| a.to_string()));
        let child = Command::new(WARD)
            .args(&args)
            .env("WARD_LOG", "info,ward_proxy=debug")
            .env_remove("WARD_CP_ADDRESS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ward dp run");
        Proxy { child: Some(child), name: name.to_string(), admin, log }
    }
}

/// A `ward dp run` process; killed on drop.
pub struct Proxy {
    child: Option<Child>,
    /// Its Dataplane's name.
    pub name: String,
    /// Port of its admin listener.
    pub admin: u16,
    log: PathBuf,
}

impl Proxy {
    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the admin listener: status and body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", self.admin)) else { return (0, String::new()) };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(tcp, "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        let mut response = String::new();
        let _ = tcp.read_to_string(&mut response);
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// Waits (up to 30 s) until /ready answers 200.
    #[track_caller]
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.admin_get("/ready");
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy {} not ready after 30s: {status} {body}\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The configuration and certificate the proxy shows at /config.
    pub fn config(&self) -> serde_json::Value {
        serde_json::from_str(&self.admin_get("/config").1).unwrap_or_default()
    }

    /// The serial of the certificate in use.
    pub fn serial(&self) -> Option<String> {
        self.config()["certificate"]["serial"].as_str().map(String::from)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
        }
    }

    /// Waits for the process to exit, up to `timeout`; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Peak resident memory, KiB, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A discovery stream opened by the test itself, to send what real proxies never would.
pub struct RawStream {
    /// Messages to the control plane.
    pub outbox: tokio::sync::mpsc::Sender<ProxyMessage>,
    /// Messages from the control plane.
    pub inbox: tonic::Streaming<ControlMessage>,
}

/// Opens a stream to `cp` with `token`, registering `dataplane_json`; the status when refused.
pub async fn raw_stream(cp: &ControlPlane, token: &str, dataplane_json: &str) -> Result<RawStream, tonic::Status> {
    let ca = std::fs::read_to_string(cp.ca_cert()).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", cp.dp_port))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("connect to the discovery server");
    let (outbox, outgoing) = tokio::sync::mpsc::channel(8);
    let register = Register { dataplane_json: dataplane_json.to_string(), proxy_version: "test".into() };
    outbox.send(ProxyMessage { message: Some(proxy_message::Message::Register(register)) }).await.unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let inbox = DiscoveryClient::new(channel).stream(request).await?.into_inner();
    Ok(RawStream { outbox, inbox })
}

impl RawStream {
    /// Sends a CSR.
    pub async fn request_certificate(&self, csr_pem: &str) {
        let request = CertificateRequest { csr_pem: csr_pem.to_string(), service: String::new() };
        self.outbox
            .send(ProxyMessage { message: Some(proxy_message::Message::CertificateRequest(request)) })
            .await
            .unwrap();
    }

    /// The next message other than a configuration, within 10 s.
    pub async fn next_answer(&mut self) -> Result<ward_proto::discovery::control_message::Message, tonic::Status> {
        use ward_proto::discovery::control_message::Message;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.inbox.message())
                .await
                .expect("an answer within 10s")?
                .expect("the stream is open");
            match message.message {
                Some(Message::Config(_)) => continue,
                Some(other) => return Ok(other),
                None => panic!("empty message"),
            }
        }
    }
}
