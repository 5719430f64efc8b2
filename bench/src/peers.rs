//! The peers Ward is compared with, started by the harness with configurations of its own in
//! a temporary directory (never the system services): two HAProxy processes as the same mTLS
//! hop as a pair of Ward proxies, and nginx as a plain TLS reverse proxy.
//!
//! Both are held to TLS 1.3 with TLS_AES_256_GCM_SHA384, the suite rustls picks first.

use std::path::{Path, PathBuf};

use crate::{Proc, discovery::Svid, pki::ServerCert};

/// The only TLS 1.3 cipher suite the peers may use.
pub const CIPHER_SUITE: &str = "TLS_AES_256_GCM_SHA384";

/// Where a program is: on the PATH, or in /usr/sbin.
pub fn find(program: &str) -> anyhow::Result<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/sbin"]) {
        let candidate = Path::new(dir).join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!("{program} is not installed (Debian package {program}); bench/run installs it")
}

fn global_tls() -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 8000\n  ssl-default-bind-ciphersuites {CIPHER_SUITE}\n  ssl-default-server-ciphersuites {CIPHER_SUITE}\n  ssl-default-bind-options ssl-min-ver TLSv1.3\n  ssl-default-server-options ssl-min-ver TLSv1.3\n\
defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n"
    )
}

/// The HAProxy pair's listening ports.
pub struct HaproxyPorts {
    /// Outbound, HTTP/1.1.
    pub out_h1: u16,
    /// Outbound, h2c (prior knowledge).
    pub out_h2c: u16,
    /// Inbound, mTLS.
    pub inbound: u16,
}

/// Starts the two HAProxy processes on the cores `cpus`: the outbound presents `client` and
/// carries requests over HTTP/2 in mTLS (like Ward's shared connection between proxies) to
/// the inbound, which presents `server`, requires a certificate of the mesh, and forwards to
/// the application on `app`.
pub fn start_haproxy_pair(
    dir: &Path,
    cpus: Option<&str>,
    client: &Svid,
    server: &Svid,
    ports: &HaproxyPorts,
    app: u16,
) -> anyhow::Result<(Proc, Proc)> {
    let haproxy = find("haproxy")?;
    let write = |name: &str, text: String| -> anyhow::Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    };
    let ca = write("mesh-ca.pem", client.bundle_pem.clone())?;
    let client_pem = write("client.pem", format!("{}{}", client.chain_pem, client.key_pem))?;
    let server_pem = write("server.pem", format!("{}{}", server.chain_pem, server.key_pem))?;
    let outbound = format!(
        "{}frontend out_h1\n  bind 127.0.0.1:{}\n  default_backend mesh\nfrontend out_h2c\n  bind 127.0.0.1:{} proto h2\n  default_backend mesh\n\
backend mesh\n  http-reuse always\n  server inbound 127.0.0.1:{} ssl verify required ca-file {ca} crt {client_pem} alpn h2\n",
        global_tls(),
        ports.out_h1,
        ports.out_h2c,
        ports.inbound
    );
    let inbound = format!(
        "{}frontend inbound\n  bind 127.0.0.1:{} ssl crt {server_pem} ca-file {ca} verify required alpn h2,http/1.1\n  default_backend app\n\
backend app\n  http-reuse always\n  server app 127.0.0.1:{app}\n",
        global_tls(),
        ports.inbound
    );
    let (out_cfg, in_cfg) = (write("haproxy-out.cfg", outbound)?, write("haproxy-in.cfg", inbound)?);
    let (out_log, in_log) = (dir.join("haproxy-out.log"), dir.join("haproxy-in.log"));
    let mut out = Proc::spawn_on(cpus, &haproxy, &["-db", "-f", &out_cfg], &[], &out_log)?;
    let mut inb = Proc::spawn_on(cpus, &haproxy, &["-db", "-f", &in_cfg], &[], &in_log)?;
    wait_listening(&mut out, &out_log, &[ports.out_h1, ports.out_h2c])?;
    wait_listening(&mut inb, &in_log, &[ports.inbound])?;
    Ok((out, inb))
}

/// Starts nginx (master and one worker) on the cores `cpus` as a TLS reverse proxy on `port`
/// to the application on `app`, with keep-alive connections to it.
pub fn start_nginx(dir: &Path, cpus: Option<&str>, cert: &ServerCert, port: u16, app: u16) -> anyhow::Result<Proc> {
    let nginx = find("nginx")?;
    let d = dir.display();
    let tmp = dir.join("nginx-tmp");
    std::fs::create_dir_all(&tmp)?;
    let config = format!(
        "worker_processes 1;\ndaemon off;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
events {{ worker_connections 8192; }}\n\
http {{\n  access_log off;\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n\
  upstream app {{ server 127.0.0.1:{app}; keepalive 256; }}\n\
  server {{\n    listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate {c};\n    ssl_certificate_key {k};\n    ssl_protocols TLSv1.3;\n    ssl_conf_command Ciphersuites {CIPHER_SUITE};\n    keepalive_requests 1000000;\n\
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
        t = tmp.display(),
        c = cert.cert_file.display(),
        k = cert.key_file.display(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config)?;
    let args = ["-p", &d.to_string(), "-c", path.to_str().unwrap_or_default(), "-e", &format!("{d}/nginx-error.log")];
    let log = dir.join("nginx.log");
    let mut proc = Proc::spawn_on(cpus, &nginx, &args, &[], &log)?;
    wait_listening(&mut proc, &dir.join("nginx-error.log"), &[port])?;
    Ok(proc)
}

/// Waits until `proc` listens on every port of `ports`, failing with its log if it exits.
fn wait_listening(proc: &mut Proc, log: &Path, ports: &[u16]) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ports.iter().all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok()) {
        proc.check_alive(log)?;
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "not listening on {ports:?} after 10s: see {}",
            log.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}
