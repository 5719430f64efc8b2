//! file-log, http-log and tcp-log as a log pipeline sees them: `ward gateway run` with the
//! three plugins on one service, requests answered by the upstream and refused by key-auth,
//! and the entries read from the file, an HTTP receiver and a TCP listener of the test.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{GatewayProcess, Upstream, http_client};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Accepts HTTP/1.1 requests and hands over each body; answers 200.
async fn http_receiver() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).await.unwrap();
                    let _ = tx.send((head, String::from_utf8(body).unwrap()));
                    reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
                }
            });
        }
    });
    (addr, rx)
}

/// Accepts TCP connections and hands over each line.
async fn tcp_receiver() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
    });
    (addr, rx)
}

fn config(upstream: &Upstream, file: &Path, http: std::net::SocketAddr, tcp: std::net::SocketAddr) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {url}
  plugins:
  - name: file-log
    config:
      path: {file}
  - name: http-log
    config:
      http_endpoint: http://{http}/logs
      headers:
        X-Log-Key: secret
  - name: tcp-log
    config:
      host: 127.0.0.1
      port: {port}
  routes:
  - name: keyed
    paths: [/keyed]
    plugins:
    - name: key-auth
  - name: open
    paths: [/open]
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
"#,
        url = upstream.url(),
        file = file.display(),
        port = tcp.port(),
    )
}

/// The entries of the log file once it has `n` lines (waiting at most 10 s).
async fn file_entries(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() >= n {
            return lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        }
        assert!(Instant::now() < deadline, "{} of {n} lines in the log file:\n{text}", lines.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} in 10 s"))
        .unwrap()
}

fn check_latencies(e: &Value) {
    for k in ["kong", "proxy", "request", "receive"] {
        assert!(e["latencies"][k].is_number(), "latencies.{k} in {e}");
    }
}

#[tokio::test]
async fn each_request_is_logged_as_kong_serializes_it() {
    let upstream = Upstream::start("echo").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let (http_addr, mut http_rx) = http_receiver().await;
    let (tcp_addr, mut tcp_rx) = tcp_receiver().await;
    let gw = GatewayProcess::start(&config(&upstream, &file, http_addr, tcp_addr));
    let client = http_client();

    let resp = client.get(gw.url("/keyed/x?a=1")).header("apikey", "alice-key").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let entries = file_entries(&file, 1).await;
    let e = &entries[0];
    assert_eq!(e["request"]["method"], "GET");
    assert_eq!(e["request"]["uri"], "/keyed/x?a=1");
    assert_eq!(e["request"]["querystring"]["a"], "1");
    assert_eq!(e["response"]["status"], 200);
    assert_eq!(e["route"]["name"], "keyed");
    assert_eq!(e["service"]["name"], "echo");
    assert_eq!(e["consumer"]["username"], "alice");
    assert_eq!(e["upstream_uri"], "/x?a=1");
    assert_eq!(e["source"], "service");
    assert!(e["latencies"]["proxy"].as_i64().unwrap() >= 0, "{e}");
    check_latencies(e);

    let (head, body) = next(&mut http_rx, "http-log request").await;
    assert!(head.starts_with("POST /logs HTTP/1.1"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/json"), "{head}");
    assert!(lower.contains("x-log-key: secret"), "{head}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert!(h.is_object(), "a batch of one is the entry itself: {body}");
    assert_eq!(h["consumer"]["username"], "alice");
    assert_eq!(h["route"]["name"], "keyed");

    let line = next(&mut tcp_rx, "tcp-log line").await;
    let t: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(t["request"]["method"], "GET");
    assert_eq!(t["consumer"]["username"], "alice");

    // Refused by key-auth: logged too, without a consumer, by Kong's rules.
    let resp = client.post(gw.url("/keyed/y")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let entries = file_entries(&file, 2).await;
    let e = &entries[1];
    assert_eq!(e["request"]["method"], "POST");
    assert_eq!(e["response"]["status"], 401);
    assert_eq!(e["source"], "exit");
    assert_eq!(e["latencies"]["proxy"], -1);
    assert!(e.get("consumer").is_none(), "{e}");
    check_latencies(e);
    let (_, body) = next(&mut http_rx, "second http-log request").await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["response"]["status"], 401);
    let line = next(&mut tcp_rx, "second tcp-log line").await;
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["response"]["status"], 401);

    // A request with credentials in Authorization: logged redacted.
    let resp = client.get(gw.url("/open")).header("authorization", "Bearer t0ken").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let entries = file_entries(&file, 3).await;
    assert_eq!(entries[2]["route"]["name"], "open");
    assert_eq!(entries[2]["request"]["headers"]["authorization"], "REDACTED");
    assert!(!std::fs::read_to_string(&file).unwrap().contains("t0ken"));
}

#[test]
fn refused_configurations_name_the_field() {
    let out = common::ward_with_config(
        "_format_version: '3.0'\nplugins:\n- name: file-log\n  config:\n    path: /tmp/x.log\n    custom_fields_by_lua: {a: 'return 1'}\n",
        &["gateway", "check", "--config", "{config}"],
    );
    let text = format!("{}{}", out.stdout(), out.stderr());
    assert!(!out.0.status.success(), "{text}");
    assert!(text.contains("plugins[0].config.custom_fields_by_lua"), "{text}");
}
