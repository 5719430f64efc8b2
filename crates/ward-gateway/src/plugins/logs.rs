//! file-log, http-log and tcp-log: Kong's basic log entry, serialized once per request in
//! the log phase (when the response is ready), and handed to each plugin's bounded queue.
//! A background task per plugin configuration drains the queue; a full queue drops the
//! entry and counts it, so logging never holds a request up.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{Compile, Plugin};
use crate::compiled::Route;
use crate::consumers::Consumer;
use crate::upstream::Service;

/// How many entries a file-log or tcp-log queue holds (Kong's default `max_entries`).
const QUEUE_ENTRIES: usize = 10_000;

/// What a request leaves for the log entry.
pub(crate) struct Entry<'a> {
    pub method: &'a Method,
    /// The request target as the client sent it.
    pub uri: &'a Uri,
    pub https: bool,
    /// The Host the client asked for (with its port, if it gave one).
    pub authority: &'a str,
    pub port: u16,
    /// The client's request headers.
    pub request_headers: &'a HeaderMap,
    /// The path and query sent upstream, when the request went there.
    pub upstream_uri: Option<&'a str>,
    pub status: StatusCode,
    pub response_headers: &'a HeaderMap,
    pub started_at: SystemTime,
    /// From the request's arrival to its response being ready.
    pub total: Duration,
    /// How long the upstream took to answer, when it did.
    pub upstream: Option<Duration>,
    /// Whether the upstream call was made and failed (Kong's `error` source).
    pub upstream_failed: bool,
    pub client_ip: IpAddr,
    pub route: &'a Route,
    pub service: Option<&'a Service>,
    pub consumer: Option<&'a Consumer>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Headers as Kong lists them: lower-case names, a string per name or an array when repeated.
fn headers_json(headers: &HeaderMap, redact: bool) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let values: Vec<Value> =
            headers.get_all(name).iter().map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into())).collect();
        let redacted = redact && (name == http::header::AUTHORIZATION || name == http::header::PROXY_AUTHORIZATION);
        let value = if redacted {
            Value::String("REDACTED".into())
        } else if values.len() == 1 {
            values.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(values)
        };
        out.insert(name.as_str().to_string(), value);
    }
    Value::Object(out)
}

/// The query as Kong's `get_query`: a value per argument, `true` for one without `=`, an
/// array when repeated.
fn querystring(query: Option<&str>) -> Value {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (pair, None),
        };
        let decode = |s: &str| form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
        let Some(key) = decode(k).filter(|k| !k.is_empty()) else { continue };
        let value = match v {
            Some(v) => Value::String(decode(v).unwrap_or_default()),
            None => Value::Bool(true),
        };
        out.entry(key).or_default().push(value);
    }
    Value::Object(
        out.into_iter().map(|(k, mut v)| (k, if v.len() == 1 { v.remove(0) } else { Value::Array(v) })).collect(),
    )
}

/// Kong's basic log entry (`kong.log.serialize()`), less the fields Ward cannot fill.
pub(crate) fn serialize(e: &Entry<'_>) -> Value {
    let scheme = if e.https { "https" } else { "http" };
    let host = e.authority.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(e.authority, |(h, _)| h);
    let request_uri = e.uri.path_and_query().map_or("/", |p| p.as_str());
    let total = millis(e.total);
    let proxy = e.upstream.map(millis);
    let source = match (e.upstream, e.upstream_failed) {
        (Some(_), _) => "service",
        (None, true) => "error",
        (None, false) => "exit",
    };
    let mut entry = json!({
        "request": {
            "uri": request_uri,
            "url": format!("{scheme}://{host}:{}{request_uri}", e.port),
            "querystring": querystring(e.uri.query()),
            "method": e.method.as_str(),
            "headers": headers_json(e.request_headers, true),
        },
        "response": {
            "status": e.status.as_u16(),
            "headers": headers_json(e.response_headers, false),
        },
        "latencies": {
            "kong": total.saturating_sub(proxy.unwrap_or(0)),
            "proxy": proxy.map_or(json!(-1), |p| json!(p)),
            "request": total,
            "receive": 0,
        },
        "client_ip": e.client_ip.to_string(),
        "started_at": e.started_at.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0),
        "route": {
            "id": e.route.id,
            "name": e.route.name,
            "strip_path": e.route.strip_path,
            "preserve_host": e.route.preserve_host,
            "https_redirect_status_code": e.route.https_redirect_status_code.as_u16(),
        },
        "source": source,
    });
    let obj = entry.as_object_mut().expect("an object");
    if let Some(u) = e.upstream_uri {
        obj.insert("upstream_uri".into(), json!(u));
    }
    if e.upstream.is_some() {
        obj.insert("upstream_status".into(), json!(e.status.as_u16().to_string()));
    }
    if let Some(s) = e.service {
        obj.insert(
            "service".into(),
            json!({
                "id": s.id,
                "name": s.name,
                "protocol": if s.https { "https" } else { "http" },
                "path": s.path,
                "retries": s.retries,
            }),
        );
    }
    if let Some(c) = e.consumer {
        let mut consumer = json!({ "id": c.id });
        if let Some(u) = &c.username {
            consumer["username"] = json!(u);
        }
        if let Some(u) = &c.custom_id {
            consumer["custom_id"] = json!(u);
        }
        obj.insert("consumer".into(), consumer);
    }
    entry
}

/// Where a log plugin's entries go.
enum Sink {
    File { path: String, reopen: bool },
    Tcp { host: String, port: u16, timeout: Duration, keepalive: Duration, tls: Option<String> },
    Http(Box<HttpSink>),
}

/// http-log's destination and queue settings.
struct HttpSink {
    uri: Uri,
    method: Method,
    content_type: String,
    timeout: Duration,
    keepalive: Duration,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    max_batch_size: usize,
    max_coalescing_delay: Duration,
    max_retry_time: Duration,
    initial_retry_delay: Duration,
    max_retry_delay: Duration,
}

/// A compiled log plugin: the sending end of its queue.
pub(crate) struct Log {
    name: &'static str,
    queue: mpsc::Sender<Arc<str>>,
    dropped: Arc<AtomicU64>,
    /// The node's `kong_log_entries_dropped_total` for this plugin.
    counter: prometheus_client::metrics::counter::Counter,
}

impl Log {
    /// Queues one serialized entry; a full queue drops it and counts it.
    pub fn push(&self, line: &Arc<str>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(line.clone()) {
            self.counter.inc();
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_power_of_two() {
                tracing::warn!(plugin = self.name, dropped = n, "log queue full: entries dropped");
            }
        }
    }

    /// How many entries this configuration has dropped for a full queue.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the background task of a sink (outside a runtime, as when a configuration is only
/// checked, nothing is started and entries go nowhere).
fn start(cx: &Compile<'_>, name: &'static str, sink: Sink, capacity: usize) -> Option<Plugin> {
    let labels = super::prometheus::LogLabels { plugin: name };
    let counter = cx.shared.metrics.log_dropped.get_or_create(&labels).clone();
    let (queue, rx) = mpsc::channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(drain(name, sink, rx));
    }
    Some(Plugin::Log(Log { name, queue, dropped, counter }))
}

/// Kong's `lua_code` fields: Ward runs no Lua, so any code is refused.
fn refuse_lua(cx: &mut Compile<'_>, code: &Option<Value>) {
    let empty = match code {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(_) => false,
    };
    if !empty {
        cx.error("custom_fields_by_lua", "Ward runs no Lua: custom fields by Lua code are not supported");
    }
}

/// A millisecond setting (Kong's `number`) as a duration; negative or not finite is refused.
fn ms(cx: &mut Compile<'_>, field: &str, value: f64) -> Duration {
    seconds(cx, field, value / 1000.0)
}

fn seconds(cx: &mut Compile<'_>, field: &str, value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or_else(|_| {
        cx.error(field, format!("{value} is not a valid duration"));
        Duration::ZERO
    })
}

/// Kong's file-log path rule: no `*`, `&`, `%` or backquote, and no whitespace at either end.
pub(crate) fn valid_log_path(path: &str) -> bool {
    let bad = |c: char| matches!(c, '*' | '&' | '%' | '`');
    let chars: Vec<char> = path.chars().collect();
    chars.len() >= 2
        && !chars.iter().any(|c| bad(*c))
        && !chars[0].is_whitespace()
        && !chars[chars.len() - 1].is_whitespace()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    path: String,
    #[serde(default)]
    reopen: bool,
    #[serde(default)]
    custom_fields_by_lua: Option<Value>,
}

pub(super) fn compile_file(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: FileConfig = cx.config(value)?;
    refuse_lua(cx, &c.custom_fields_by_lua);
    if !valid_log_path(&c.path) {
        cx.error("path", format!("'{}': not a valid filename", c.path));
        return None;
    }
    start(cx, "file-log", Sink::File { path: c.path, reopen: c.reopen }, QUEUE_ENTRIES)
}

fn default_timeout() -> f64 {
    10_000.0
}
fn default_keepalive() -> f64 {
    60_000.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpConfig {
    host: String,
    port: u16,
    #[serde(default = "default_timeout")]
    timeout: f64,
    #[serde(default = "default_keepalive")]
    keepalive: f64,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    tls_sni: Option<String>,
    #[serde(default)]
    custom_fields_by_lua: Option<Value>,
}

pub(super) fn compile_tcp(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: TcpConfig = cx.config(value)?;
    refuse_lua(cx, &c.custom_fields_by_lua);
    if c.host.is_empty() || c.host.contains(['/', ' ', '@']) {
        cx.error("host", format!("'{}' is not a valid host", c.host));
    }
    let timeout = ms(cx, "timeout", c.timeout);
    let keepalive = ms(cx, "keepalive", c.keepalive);
    if c.tls_sni.is_some() && !c.tls {
        cx.error("tls_sni", "is only used with tls: true (Ward refuses a setting it would ignore)");
    }
    let tls = c.tls.then(|| c.tls_sni.clone().unwrap_or_else(|| c.host.clone()));
    let sink = Sink::Tcp { host: c.host, port: c.port, timeout, keepalive, tls };
    start(cx, "tcp-log", sink, QUEUE_ENTRIES)
}

fn default_method() -> String {
    "POST".into()
}
fn default_content_type() -> String {
    "application/json".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct QueueConfig {
    max_batch_size: Option<u64>,
    max_coalescing_delay: Option<f64>,
    max_entries: Option<u64>,
    max_bytes: Option<Value>,
    max_retry_time: Option<f64>,
    initial_retry_delay: Option<f64>,
    max_retry_delay: Option<f64>,
    concurrency_limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfig {
    http_endpoint: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_content_type")]
    content_type: String,
    #[serde(default = "default_timeout")]
    timeout: f64,
    #[serde(default = "default_keepalive")]
    keepalive: f64,
    /// Deprecated in Kong 3.x and without effect there either.
    #[serde(default)]
    retry_count: Option<u64>,
    #[serde(default)]
    queue_size: Option<u64>,
    #[serde(default)]
    flush_timeout: Option<f64>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    queue: Option<QueueConfig>,
    #[serde(default)]
    custom_fields_by_lua: Option<Value>,
}

pub(super) fn compile_http(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: HttpConfig = cx.config(value)?;
    refuse_lua(cx, &c.custom_fields_by_lua);
    let _ = c.retry_count;
    let mut ok = true;
    let uri: Option<Uri> =
        c.http_endpoint.parse().ok().filter(|u: &Uri| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
        });
    let Some(uri) = uri else {
        cx.error("http_endpoint", format!("'{}' is not a valid http or https URL", c.http_endpoint));
        return None;
    };
    let userinfo = uri.authority().and_then(|a| a.as_str().rsplit_once('@')).map(|(u, _)| u.to_string());
    let method = match c.method.as_str() {
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        other => {
            cx.error("method", format!("expected one of: POST, PUT, PATCH (got '{other}')"));
            ok = false;
            Method::POST
        }
    };
    if !matches!(c.content_type.as_str(), "application/json" | "application/json; charset=utf-8") {
        cx.error("content_type", "expected one of: application/json, application/json; charset=utf-8");
        ok = false;
    }
    let mut headers = Vec::new();
    for (name, value) in c.headers.unwrap_or_default() {
        let lower = name.to_ascii_lowercase();
        if matches!(lower.as_str(), "host" | "content-length" | "content-type") {
            cx.error(&format!("headers.{name}"), format!("cannot contain '{name}' header"));
            ok = false;
            continue;
        }
        if lower == "authorization" && userinfo.is_some() {
            cx.error(
                "headers",
                "specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed",
            );
            ok = false;
        }
        match (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(&value)) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => {
                cx.error(&format!("headers.{name}"), "not a valid header");
                ok = false;
            }
        }
    }
    if let Some(u) = &userinfo {
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(u));
        if let Ok(v) = http::HeaderValue::from_str(&basic) {
            headers.push((http::header::AUTHORIZATION, v));
        }
    }
    let q = c.queue.unwrap_or_default();
    if q.max_bytes.as_ref().is_some_and(|v| !v.is_null()) {
        cx.error("queue.max_bytes", "not supported: Ward's queues are bounded by max_entries only");
        ok = false;
    }
    if q.concurrency_limit.is_some_and(|l| l != 1) {
        cx.error("queue.concurrency_limit", "only 1 is supported (one sender per plugin, entries in order)");
        ok = false;
    }
    // Kong's deprecated fields stand in for the queue's when those are not set.
    let max_batch_size = q.max_batch_size.or(c.queue_size).unwrap_or(1);
    if !(1..=1_000_000).contains(&max_batch_size) {
        cx.error("queue.max_batch_size", "value should be between 1 and 1000000");
        ok = false;
    }
    let max_entries = q.max_entries.unwrap_or(10_000);
    if !(1..=1_000_000).contains(&max_entries) {
        cx.error("queue.max_entries", "value should be between 1 and 1000000");
        ok = false;
    }
    let coalescing = q.max_coalescing_delay.or(c.flush_timeout).unwrap_or(1.0);
    if !(0.0..=3600.0).contains(&coalescing) {
        cx.error("queue.max_coalescing_delay", "value should be between 0 and 3600");
        ok = false;
    }
    let initial = q.initial_retry_delay.unwrap_or(0.01);
    let max_delay = q.max_retry_delay.unwrap_or(60.0);
    for (field, v) in [("queue.initial_retry_delay", initial), ("queue.max_retry_delay", max_delay)] {
        if !(0.001..=1_000_000.0).contains(&v) {
            cx.error(field, "value should be between 0.001 and 1000000");
            ok = false;
        }
    }
    let sink = HttpSink {
        method,
        content_type: c.content_type,
        timeout: ms(cx, "timeout", c.timeout),
        keepalive: ms(cx, "keepalive", c.keepalive),
        headers,
        max_batch_size: usize::try_from(max_batch_size).unwrap_or(1),
        max_coalescing_delay: seconds(cx, "queue.max_coalescing_delay", coalescing),
        max_retry_time: seconds(cx, "queue.max_retry_time", q.max_retry_time.unwrap_or(60.0)),
        initial_retry_delay: seconds(cx, "queue.initial_retry_delay", initial),
        max_retry_delay: seconds(cx, "queue.max_retry_delay", max_delay),
        uri,
    };
    if !ok {
        return None;
    }
    start(cx, "http-log", Sink::Http(Box::new(sink)), usize::try_from(max_entries).unwrap_or(10_000))
}

/// A byte stream to a log server: plain TCP or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Connects to `host:port` within `timeout`, with TLS (Kong's: certificate not verified)
/// when `sni` is given.
async fn connect(host: &str, port: u16, timeout: Duration, sni: Option<&str>) -> std::io::Result<Box<dyn Stream>> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    let tcp = tokio::time::timeout(timeout, TcpStream::connect((host, port))).await.map_err(|_| timed_out())??;
    let Some(sni) = sni else { return Ok(Box::new(tcp)) };
    let name = rustls_pki_types::ServerName::try_from(sni.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tls = crate::upstream::connect::client_tls(None);
    let stream = tokio::time::timeout(timeout, tls.connect(name, tcp)).await.map_err(|_| timed_out())??;
    Ok(Box::new(stream))
}

/// Drains a queue into its sink until the plugin configuration is gone.
async fn drain(name: &'static str, sink: Sink, mut rx: mpsc::Receiver<Arc<str>>) {
    match sink {
        Sink::File { path, reopen } => {
            // Through tokio's file, which writes on its blocking pool: a slow disk holds this
            // queue, never a worker serving requests.
            let mut file: Option<tokio::fs::File> = None;
            while let Some(line) = rx.recv().await {
                if file.is_none() || reopen {
                    let mut options = tokio::fs::OpenOptions::new();
                    options.append(true).create(true);
                    #[cfg(unix)]
                    options.mode(0o644);
                    match options.open(&path).await {
                        Ok(f) => file = Some(f),
                        Err(e) => {
                            tracing::error!(plugin = name, path, "failed to open the log file: {e}");
                            continue;
                        }
                    }
                }
                let mut text = String::with_capacity(line.len() + 1);
                text.push_str(&line);
                text.push('\n');
                if let Some(f) = file.as_mut()
                    && let Err(e) = async {
                        f.write_all(text.as_bytes()).await?;
                        f.flush().await
                    }
                    .await
                {
                    tracing::error!(plugin = name, path, "failed to write the log file: {e}");
                    file = None;
                }
            }
        }
        Sink::Tcp { host, port, timeout, keepalive, tls } => {
            let mut conn: Option<(Box<dyn Stream>, Instant)> = None;
            while let Some(line) = rx.recv().await {
                if conn.as_ref().is_some_and(|(_, used)| used.elapsed() > keepalive) {
                    conn = None;
                }
                if conn.is_none() {
                    match connect(&host, port, timeout, tls.as_deref()).await {
                        Ok(s) => conn = Some((s, Instant::now())),
                        Err(e) => {
                            tracing::error!(plugin = name, host, port, "failed to connect: {e}");
                            continue;
                        }
                    }
                }
                let Some((stream, used)) = conn.as_mut() else { continue };
                let mut text = String::with_capacity(line.len() + 1);
                text.push_str(&line);
                text.push('\n');
                let sent = tokio::time::timeout(timeout, async {
                    stream.write_all(text.as_bytes()).await?;
                    stream.flush().await
                })
                .await;
                match sent {
                    Ok(Ok(())) => *used = Instant::now(),
                    Ok(Err(e)) => {
                        tracing::error!(plugin = name, host, port, "failed to send: {e}");
                        conn = None;
                    }
                    Err(_) => {
                        tracing::error!(plugin = name, host, port, "timed out sending");
                        conn = None;
                    }
                }
            }
        }
        Sink::Http(sink) => drain_http(name, *sink, rx).await,
    }
}

/// http-log's body of a batch: the entry itself for batches of one, a JSON array otherwise.
pub(crate) fn http_payload(max_batch_size: usize, entries: &[Arc<str>]) -> String {
    if max_batch_size == 1 && entries.len() == 1 {
        return entries[0].to_string();
    }
    let mut out = String::from("[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e);
    }
    out.push(']');
    out
}

/// A kept connection to the log server and when it was last used.
type Kept = Option<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, Instant)>;

async fn drain_http(name: &'static str, sink: HttpSink, mut rx: mpsc::Receiver<Arc<str>>) {
    let mut kept: Kept = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + sink.max_coalescing_delay;
        while batch.len() < sink.max_batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                _ => break,
            }
        }
        let payload = Bytes::from(http_payload(sink.max_batch_size, &batch));
        let started = Instant::now();
        let mut delay = sink.initial_retry_delay;
        loop {
            match send_http(&sink, &mut kept, payload.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    if started.elapsed() + delay > sink.max_retry_time {
                        tracing::error!(plugin = name, entries = batch.len(), "could not send a batch, dropped: {e}");
                        break;
                    }
                    tracing::warn!(plugin = name, "sending a batch failed, retrying in {delay:?}: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(sink.max_retry_delay);
                }
            }
        }
    }
}

async fn send_http(sink: &HttpSink, kept: &mut Kept, payload: Bytes) -> Result<(), String> {
    if kept.as_ref().is_some_and(|(s, used)| used.elapsed() > sink.keepalive || s.is_closed()) {
        *kept = None;
    }
    let uri = &sink.uri;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let work = async {
        if kept.is_none() {
            let stream = connect(host, port, sink.timeout, https.then_some(host)).await.map_err(|e| e.to_string())?;
            let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            *kept = Some((sender, Instant::now()));
        }
        let Some((sender, used)) = kept.as_mut() else { return Err("no connection".to_string()) };
        sender.ready().await.map_err(|e| e.to_string())?;
        let authority = uri.authority().map(|a| a.as_str().rsplit('@').next().unwrap_or_default()).unwrap_or(host);
        let mut request = http::Request::builder()
            .method(sink.method.clone())
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, &sink.content_type)
            .header(http::header::CONTENT_LENGTH, payload.len());
        for (n, v) in &sink.headers {
            request = request.header(n, v);
        }
        let request = request.body(Full::new(payload)).map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        *used = Instant::now();
        let status = response.status();
        // Reads the body so that the connection can be used again.
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        if status.is_success() { Ok(()) } else { Err(format!("the log server answered {status}")) }
    };
    let outcome = tokio::time::timeout(sink.timeout, work).await.unwrap_or_else(|_| Err("timed out".to_string()));
    if outcome.is_err() {
        *kept = None;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_file_log_paths() {
        for good in ["/tmp/log.txt", "logs/a b.log", "ab"] {
            assert!(valid_log_path(good), "{good}");
        }
        for bad in ["", "a", " /tmp/x", "/tmp/x ", "/tmp/*.log", "/tmp/a&b", "/tmp/100%", "/tmp/`x`"] {
            assert!(!valid_log_path(bad), "{bad}");
        }
    }

    #[test]
    fn query_strings_as_kong_reads_them() {
        assert_eq!(querystring(None), json!({}));
        assert_eq!(querystring(Some("a=1&b&a=2&c=%20x&=skip")), json!({"a": ["1", "2"], "b": true, "c": " x"}));
    }

    #[test]
    fn headers_are_listed_with_credentials_redacted() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Basic secret".parse().unwrap());
        h.insert("proxy-authorization", "Bearer t".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        h.insert("apikey", "k".parse().unwrap());
        assert_eq!(
            headers_json(&h, true),
            json!({"authorization": "REDACTED", "proxy-authorization": "REDACTED", "x-a": ["1", "2"], "apikey": "k"})
        );
        assert_eq!(headers_json(&h, false)["authorization"], json!("Basic secret"));
    }

    #[test]
    fn http_batches_are_an_object_alone_and_an_array_otherwise() {
        let a: Arc<str> = Arc::from(r#"{"a":1}"#);
        let b: Arc<str> = Arc::from(r#"{"b":2}"#);
        assert_eq!(http_payload(1, std::slice::from_ref(&a)), r#"{"a":1}"#);
        assert_eq!(http_payload(10, std::slice::from_ref(&a)), r#"[{"a":1}]"#);
        assert_eq!(http_payload(10, &[a, b]), r#"[{"a":1},{"b":2}]"#);
    }

    /// The errors of a configuration with one plugin on a service.
    fn errors(name: &str, config: &str) -> Vec<String> {
        let text = format!(
            "_format_version: '3.0'\nservices:\n- name: s\n  url: http://127.0.0.1:1\n  plugins:\n  - name: {name}\n    config: {config}\n"
        );
        match crate::compiled::compile(&text, &crate::runtime::Shared::default()) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn configurations_kong_accepts_and_ward_honours() {
        for (name, config) in [
            ("file-log", "{path: /tmp/ward-file-log-test.log}"),
            ("file-log", "{path: /tmp/x.log, reopen: true, custom_fields_by_lua: {}}"),
            ("tcp-log", "{host: 127.0.0.1, port: 9}"),
            ("tcp-log", "{host: logs.example, port: 9, tls: true, tls_sni: x.example, timeout: 5, keepalive: 10}"),
            ("http-log", "{http_endpoint: 'http://127.0.0.1:9/logs'}"),
            ("http-log", "{http_endpoint: 'https://u:p@logs.example/x', method: PUT, headers: {X-Key: k}}"),
            ("http-log", "{http_endpoint: 'http://h/', queue_size: 5, flush_timeout: 2, retry_count: 3}"),
            (
                "http-log",
                "{http_endpoint: 'http://h/', queue: {max_batch_size: 10, max_coalescing_delay: 0.5, max_entries: 100, \
                 max_retry_time: 5, initial_retry_delay: 0.1, max_retry_delay: 1, concurrency_limit: 1, max_bytes: null}}",
            ),
        ] {
            assert_eq!(errors(name, config), Vec::<String>::new(), "{name} {config}");
        }
    }

    #[tokio::test]
    async fn configurations_refused_with_path_and_reason() {
        let table = [
            ("file-log", "{path: '/tmp/*.log'}", "config.path", "not a valid filename"),
            ("file-log", "{path: ' /tmp/x'}", "config.path", "not a valid filename"),
            ("file-log", "{reopen: true}", "config", "path"),
            ("file-log", "{path: /tmp/x, custom_fields_by_lua: {a: 'return 1'}}", "custom_fields_by_lua", "no Lua"),
            ("file-log", "{path: /tmp/x, other: 1}", "config", "other"),
            ("tcp-log", "{host: h, port: 70000}", "config", "port"),
            ("tcp-log", "{host: h, port: 9, tls_sni: x}", "config.tls_sni", "tls: true"),
            ("tcp-log", "{host: h, port: 9, timeout: -1}", "config.timeout", "duration"),
            ("tcp-log", "{host: h, port: 9, custom_fields_by_lua: {a: x}}", "custom_fields_by_lua", "no Lua"),
            ("http-log", "{http_endpoint: 'ftp://h/'}", "config.http_endpoint", "URL"),
            ("http-log", "{http_endpoint: 'http://h/', method: GET}", "config.method", "POST, PUT, PATCH"),
            (
                "http-log",
                "{http_endpoint: 'http://h/', content_type: text/plain}",
                "config.content_type",
                "application/json",
            ),
            (
                "http-log",
                "{http_endpoint: 'http://h/', headers: {Host: x}}",
                "config.headers.Host",
                "cannot contain 'Host'",
            ),
            (
                "http-log",
                "{http_endpoint: 'http://h/', headers: {content-length: '1'}}",
                "config.headers",
                "cannot contain",
            ),
            (
                "http-log",
                "{http_endpoint: 'http://h/', headers: {Content-Type: x}}",
                "config.headers",
                "cannot contain",
            ),
            (
                "http-log",
                "{http_endpoint: 'http://u:p@h/', headers: {Authorization: x}}",
                "config.headers",
                "both an 'Authorization' header and user info",
            ),
            ("http-log", "{http_endpoint: 'http://h/', queue: {max_bytes: 100}}", "queue.max_bytes", "not supported"),
            (
                "http-log",
                "{http_endpoint: 'http://h/', queue: {concurrency_limit: -1}}",
                "queue.concurrency_limit",
                "only 1",
            ),
            ("http-log", "{http_endpoint: 'http://h/', queue: {max_batch_size: 0}}", "queue.max_batch_size", "between"),
            (
                "http-log",
                "{http_endpoint: 'http://h/', queue: {max_coalescing_delay: 4000}}",
                "max_coalescing_delay",
                "between",
            ),
            (
                "http-log",
                "{http_endpoint: 'http://h/', queue: {initial_retry_delay: 0}}",
                "initial_retry_delay",
                "between",
            ),
            (
                "http-log",
                "{http_endpoint: 'http://h/', custom_fields_by_lua: {a: x}}",
                "custom_fields_by_lua",
                "no Lua",
            ),
        ];
        for (name, config, path, reason) in table {
            let errors = errors(name, config);
            assert!(
                errors.iter().any(|e| e.contains(path) && e.contains(reason)),
                "{name} {config}: want {path} / {reason}, got {errors:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let (queue, _rx) = mpsc::channel(2);
        let counter = prometheus_client::metrics::counter::Counter::default();
        let log = Log { name: "file-log", queue, dropped: Arc::new(AtomicU64::new(0)), counter: counter.clone() };
        let line: Arc<str> = Arc::from("{}");
        for _ in 0..5 {
            log.push(&line);
        }
        assert_eq!(log.dropped(), 3);
        assert_eq!(counter.get(), 3);
    }

    #[tokio::test]
    async fn the_entry_has_kongs_fields() {
        let text = "_format_version: '3.0'\nservices:\n- name: svc\n  url: http://127.0.0.1:1/base\n  routes:\n  - name: r\n    paths: [/r]\nconsumers:\n- username: alice\n  custom_id: c1\n";
        let gw = crate::compiled::compile(text, &crate::runtime::Shared::default()).unwrap();
        let mut request_headers = HeaderMap::new();
        request_headers.insert("authorization", "Basic x".parse().unwrap());
        request_headers.insert("host", "api.example".parse().unwrap());
        let mut response_headers = HeaderMap::new();
        response_headers.insert("content-type", "text/plain".parse().unwrap());
        let uri: Uri = "/r/x?a=1&b".parse().unwrap();
        let entry = Entry {
            method: &Method::GET,
            uri: &uri,
            https: false,
            authority: "api.example",
            port: 8000,
            request_headers: &request_headers,
            upstream_uri: Some("/base/x?a=1&b"),
            status: StatusCode::OK,
            response_headers: &response_headers,
            started_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            total: Duration::from_millis(30),
            upstream: Some(Duration::from_millis(20)),
            upstream_failed: false,
            client_ip: "192.0.2.7".parse().unwrap(),
            route: &gw.routes[0],
            service: Some(&gw.services[0]),
            consumer: Some(&gw.consumers.list[0]),
        };
        let v = serialize(&entry);
        assert_eq!(v["request"]["uri"], "/r/x?a=1&b");
        assert_eq!(v["request"]["url"], "http://api.example:8000/r/x?a=1&b");
        assert_eq!(v["request"]["querystring"], json!({"a": "1", "b": true}));
        assert_eq!(v["request"]["method"], "GET");
        assert_eq!(v["request"]["headers"]["authorization"], "REDACTED");
        assert_eq!(v["upstream_uri"], "/base/x?a=1&b");
        assert_eq!(v["upstream_status"], "200");
        assert_eq!(v["response"]["status"], 200);
        assert_eq!(v["response"]["headers"]["content-type"], "text/plain");
        assert_eq!(v["latencies"], json!({"kong": 10, "proxy": 20, "request": 30, "receive": 0}));
        assert_eq!(v["client_ip"], "192.0.2.7");
        assert_eq!(v["started_at"], 1_700_000_000_123u64);
        assert_eq!(v["route"]["name"], "r");
        assert_eq!(v["service"]["name"], "svc");
        assert_eq!(v["service"]["path"], "/base");
        assert_eq!(v["consumer"], json!({"id": gw.consumers.list[0].id, "username": "alice", "custom_id": "c1"}));
        assert_eq!(v["source"], "service");

        let rejected =
            Entry { upstream: None, upstream_uri: None, status: StatusCode::UNAUTHORIZED, consumer: None, ..entry };
        let v = serialize(&rejected);
        assert_eq!(v["latencies"]["proxy"], -1);
        assert_eq!(v["source"], "exit");
        assert!(v.get("consumer").is_none() && v.get("upstream_status").is_none() && v.get("upstream_uri").is_none());
    }
}
