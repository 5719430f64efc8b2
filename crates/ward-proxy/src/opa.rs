//! MeshOPA in the callee's proxy: the input Envoy's ext_authz gives OPA (with what
//! opa-envoy-plugin adds: `parsed_path`, `parsed_query`, `parsed_body`), built from a request
//! a MeshTrafficPermission let through, asked of the policies compiled with the
//! configuration, and the verdict applied to the request or turned into the answer.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, request::Parts};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use serde_json::{Map, Value, json};
use ward_api::mesh_opa::{InForce, Verdict};
use ward_http::{
    Body,
    body::{BoxError, full},
};

/// The header Envoy adds to the authorization request when the body was cut.
pub const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";

/// The first bytes of a request body, read before it is decided, and the frames to replay.
#[derive(Debug, Default)]
pub struct Buffered {
    /// The frames read, to send on before the rest.
    pub frames: VecDeque<Frame<Bytes>>,
    /// At most `max` bytes of the body.
    pub bytes: Vec<u8>,
    /// Whether the body is longer than what `bytes` holds.
    pub truncated: bool,
}

/// Reads frames of `body` until more than `max` bytes or its end.
pub async fn buffer(body: &mut Incoming, max: usize) -> Result<Buffered, hyper::Error> {
    let mut out = Buffered::default();
    let mut read = 0usize;
    while read <= max && !body.is_end_stream() {
        let Some(frame) = body.frame().await.transpose()? else { break };
        if let Some(data) = frame.data_ref() {
            read += data.len();
            let room = max.saturating_sub(out.bytes.len());
            out.bytes.extend_from_slice(&data[..data.len().min(room)]);
        }
        out.frames.push_back(frame);
    }
    out.truncated = read > max;
    Ok(out)
}

/// A body that sends the frames already read, then the rest of the original.
pub struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    rest: Incoming,
}

impl Replay {
    /// The body of `frames` then `rest`.
    pub fn new(frames: VecDeque<Frame<Bytes>>, rest: Incoming) -> Self {
        Replay { frames, rest }
    }
}

impl hyper::body::Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut this.rest).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self.frames.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + queued);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + queued);
        }
        hint
    }
}

/// Who asks and where, for `input.attributes`.
#[derive(Debug, Clone, Copy)]
pub struct Peers<'a> {
    /// The caller's SPIFFE ID, when it proved one.
    pub source: Option<&'a str>,
    /// This inbound's SPIFFE ID.
    pub destination: &'a str,
    /// This inbound's address.
    pub address: SocketAddr,
}

/// The input of one request, as opa-envoy-plugin builds it from Envoy's CheckRequest.
pub fn input(parts: &Parts, body: Option<&Buffered>, raw: bool, peers: Peers<'_>) -> Value {
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts.headers.get_all(name).iter().map(|v| v.to_str().unwrap_or_default()).collect();
        headers.insert(name.as_str().to_string(), Value::String(values.join(",")));
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .unwrap_or_default();
    headers.insert(":authority".into(), Value::String(host.clone()));
    headers.insert(":method".into(), Value::String(parts.method.to_string()));
    headers.insert(":path".into(), Value::String(path.to_string()));
    let mut http = json!({
        "method": parts.method.as_str(),
        "path": path,
        "host": host,
        "scheme": "http",
        "protocol": format!("{:?}", parts.version),
    });
    let mut parsed_body = Value::Null;
    if let Some(body) = body {
        if body.truncated {
            headers.insert(PARTIAL_BODY.into(), Value::String("true".into()));
        }
        http["size"] = json!(body.bytes.len());
        if raw {
            http["raw_body"] = Value::String(base64::engine::general_purpose::STANDARD.encode(&body.bytes));
        } else {
            http["body"] = Value::String(String::from_utf8_lossy(&body.bytes).into_owned());
        }
        if !body.truncated {
            parsed_body = parse_body(&parts.headers, &body.bytes);
        }
    }
    http["headers"] = Value::Object(headers);
    let mut source = json!({});
    if let Some(principal) = peers.source {
        source["principal"] = Value::String(principal.to_string());
    }
    let mut input = json!({
        "attributes": {
            "source": source,
            "destination": {
                "principal": peers.destination,
                "address": {"socketAddress": {"address": peers.address.ip().to_string(), "portValue": peers.address.port()}},
            },
            "request": {"http": http},
        },
        "parsed_path": parsed_path(parts.uri.path()),
        "parsed_query": parsed_query(parts.uri.query().unwrap_or_default()),
        "truncated_body": body.is_some_and(|b| b.truncated),
    });
    if !parsed_body.is_null() {
        input["parsed_body"] = parsed_body;
    }
    input
}

/// The path's segments, percent-decoded, without the leading slash: `/a/b%20c` is
/// `["a", "b c"]`.
fn parsed_path(path: &str) -> Value {
    let path = path.strip_prefix('/').unwrap_or(path);
    let segments = path.split('/').map(|s| Value::String(percent_decode(s)));
    Value::Array(segments.collect())
}

fn percent_decode(s: &str) -> String {
    let pair = format!("x={}", s.replace('+', "%2B"));
    form_urlencoded::parse(pair.as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// The query's parameters, each with its values in order.
fn parsed_query(query: &str) -> Value {
    let mut out = Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let values = out.entry(k.into_owned()).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = values {
            values.push(Value::String(v.into_owned()));
        }
    }
    Value::Object(out)
}

/// A JSON body parsed, and a form's fields with their values; nothing for other types.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Value {
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match media.as_str() {
        "application/json" => serde_json::from_slice(body).unwrap_or(Value::Null),
        "application/x-www-form-urlencoded" => parsed_query(&String::from_utf8_lossy(body)),
        _ => Value::Null,
    }
}

/// What to do with a request after the policies in force were asked.
#[derive(Debug)]
pub enum Outcome {
    /// Send it on, with these headers added to the application's response.
    Pass(Vec<(String, String)>),
    /// Answer this, refused by this MeshOPA (`None`: the evaluation failed and failures deny).
    Deny(Response<Body>, Option<String>),
}

/// Asks `opa` about the request of `parts`, and changes its headers as an allowing verdict says.
pub fn decide(opa: &InForce, parts: &mut Parts, body: Option<&Buffered>, peers: Peers<'_>) -> Outcome {
    let input = input(parts, body, opa.raw_body, peers);
    let verdict = match opa.decider.decide(&input) {
        Ok(verdict) => verdict,
        Err(failure) if opa.allow_on_failure => {
            tracing::warn!(policy = %failure.origin, reason = %failure.reason, "MeshOPA evaluation failed; onAgentFailure: Allow lets the request through");
            return Outcome::Pass(Vec::new());
        }
        Err(failure) => {
            tracing::warn!(policy = %failure.origin, reason = %failure.reason, "MeshOPA evaluation failed; the request is refused");
            let status = StatusCode::from_u16(opa.status_on_error).unwrap_or(StatusCode::FORBIDDEN);
            return Outcome::Deny(answer(status, Bytes::new(), &[]), Some(failure.origin));
        }
    };
    if verdict.allowed {
        apply(parts, &verdict);
        return Outcome::Pass(verdict.response_headers_to_add);
    }
    let status = verdict.http_status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::FORBIDDEN);
    let body = verdict.body.map(Bytes::from).unwrap_or_default();
    Outcome::Deny(answer(status, body, &verdict.headers), verdict.denied_by)
}

/// Sets the verdict's `headers` on the request (a name's first value replaces, others add)
/// and removes `request_headers_to_remove`.
fn apply(parts: &mut Parts, verdict: &Verdict) {
    for name in &verdict.request_headers_to_remove {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            parts.headers.remove(name);
        }
    }
    add_headers(&mut parts.headers, &verdict.headers, false);
}

/// Adds `pairs` to `headers`: appended, or a name's first value replacing what is there.
pub fn add_headers(headers: &mut HeaderMap, pairs: &[(String, String)], append: bool) {
    let mut seen = Vec::new();
    for (name, value) in pairs {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) else {
            tracing::warn!(header = %name, "a MeshOPA result names a header that is not valid HTTP; left out");
            continue;
        };
        if append || seen.contains(&name) {
            headers.append(name, value);
        } else {
            headers.insert(name.clone(), value);
            seen.push(name);
        }
    }
}

fn answer(status: StatusCode, body: Bytes, headers: &[(String, String)]) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    add_headers(response.headers_mut(), headers, false);
    response
}

/// The body the application gets: the frames read for the decision, then the rest.
pub fn body(request: Request<Incoming>, buffered: Option<Buffered>) -> Request<Body> {
    request.map(|rest| match buffered {
        Some(b) => Replay::new(b.frames, rest).boxed(),
        None => ward_http::body::boxed(rest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method("POST").uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    const PEERS: Peers<'static> = Peers {
        source: Some("spiffe://default/web"),
        destination: "spiffe://default/backend",
        address: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)), 8080),
    };

    #[test]
    fn input_has_ext_authz_shape() {
        let p = parts("/api/a%20b/c?x=1&x=2&y", &[("Host", "backend"), ("X-Two", "a"), ("x-two", "b")]);
        let input = input(&p, None, false, PEERS);
        let http = &input["attributes"]["request"]["http"];
        assert_eq!(http["method"], "POST");
        assert_eq!(http["path"], "/api/a%20b/c?x=1&x=2&y");
        assert_eq!(http["host"], "backend");
        assert_eq!(http["headers"]["x-two"], "a,b");
        assert_eq!(http["headers"][":method"], "POST");
        assert!(http.get("body").is_none());
        assert_eq!(input["attributes"]["source"]["principal"], "spiffe://default/web");
        assert_eq!(input["attributes"]["destination"]["principal"], "spiffe://default/backend");
        assert_eq!(input["attributes"]["destination"]["address"]["socketAddress"]["portValue"], 8080);
        assert_eq!(input["parsed_path"], json!(["api", "a b", "c"]));
        assert_eq!(input["parsed_query"], json!({"x": ["1", "2"], "y": [""]}));
        assert!(input.get("parsed_body").is_none());
        assert_eq!(parsed_path("/"), json!([""]));
    }

    #[test]
    fn bodies_text_raw_cut_and_parsed() {
        let p = parts("/", &[("content-type", "application/json; charset=utf-8")]);
        let whole = Buffered { bytes: br#"{"amount": 5}"#.to_vec(), ..Default::default() };
        let input = input(&p, Some(&whole), false, PEERS);
        assert_eq!(input["attributes"]["request"]["http"]["body"], r#"{"amount": 5}"#);
        assert_eq!(input["parsed_body"], json!({"amount": 5}));
        let raw = super::input(&p, Some(&whole), true, PEERS);
        assert_eq!(raw["attributes"]["request"]["http"]["raw_body"], "eyJhbW91bnQiOiA1fQ==");
        assert!(raw["attributes"]["request"]["http"].get("body").is_none());
        let cut = Buffered { bytes: br#"{"amou"#.to_vec(), truncated: true, ..Default::default() };
        let input = super::input(&p, Some(&cut), false, PEERS);
        assert_eq!(input["attributes"]["request"]["http"]["headers"][PARTIAL_BODY], "true");
        assert_eq!(input["truncated_body"], true);
        assert!(input.get("parsed_body").is_none());
        let form = parts("/", &[("content-type", "application/x-www-form-urlencoded")]);
        let fields = Buffered { bytes: b"a=1&a=2".to_vec(), ..Default::default() };
        assert_eq!(super::input(&form, Some(&fields), false, PEERS)["parsed_body"], json!({"a": ["1", "2"]}));
    }

    #[test]
    fn verdicts_change_the_request_or_answer() {
        let module = |text: &str| ward_api::mesh_opa::Module {
            origin: "mopa".into(),
            at: "r".into(),
            text: text.into(),
            decides: true,
        };
        let opa = |text: &str, allow_on_failure: bool| InForce {
            decider: ward_api::mesh_opa::Decider::compile(&[module(text)]).unwrap(),
            status_on_error: 503,
            allow_on_failure,
            max_body: None,
            raw_body: false,
        };
        let passing = opa(
            r#"package x
allow = {"allowed": true, "headers": {"x-user": "u"}, "request_headers_to_remove": ["cookie"], "response_headers_to_add": {"x-seen": "1"}} { true }"#,
            false,
        );
        let mut p = parts("/", &[("cookie", "c"), ("x-user", "forged")]);
        let Outcome::Pass(added) = decide(&passing, &mut p, None, PEERS) else { panic!("denied") };
        assert_eq!(added, [("x-seen".to_string(), "1".to_string())]);
        assert_eq!(p.headers.get("x-user").unwrap(), "u");
        assert!(p.headers.get("cookie").is_none());
        let denying = opa(
            r#"package x
allow = {"allowed": false, "http_status": 401, "body": "no", "headers": {"www-authenticate": "Bearer"}} { true }"#,
            false,
        );
        let Outcome::Deny(response, by) = decide(&denying, &mut parts("/", &[]), None, PEERS) else { panic!("passed") };
        assert_eq!((response.status(), by.as_deref()), (StatusCode::UNAUTHORIZED, Some("mopa")));
        assert_eq!(response.headers().get("www-authenticate").unwrap(), "Bearer");
        let failing = "package x\nallow { 1 / count(input.parsed_query) > 0 }\n";
        let Outcome::Deny(response, _) = decide(&opa(failing, false), &mut parts("/", &[]), None, PEERS) else {
            panic!("passed")
        };
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(matches!(decide(&opa(failing, true), &mut parts("/", &[]), None, PEERS), Outcome::Pass(_)));
    }
}
