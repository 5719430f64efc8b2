//! The control plane's REST API, driven in-process through its real axum router over a fresh
//! in-memory SQLite store: authentication, the handlers and every body they read.
//!
//! An input is up to four requests separated by a line `%%`. Each request is a line
//! `METHOD PATH TOKEN [CONTENT-TYPE]` and then its body; TOKEN is `admin`, `viewer`, `limited`
//! (an admin of mesh `default` only), `none` or any other text, sent as a bearer token as is.

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use tower::ServiceExt;
use ward_cp::{
    api::{self, ApiState},
    auth::{Role, Tokens},
    identity::Identity,
    secrets::Kek,
    store::Store,
};

/// Requests read from one input at most.
const MAX_REQUESTS: usize = 4;

/// Sends the requests of `data` in order to a new control plane. Invariant: no request gets
/// a 500; a client's mistake is a 4xx that says what is wrong.
pub fn run(data: &[u8]) {
    let requests: Vec<&[u8]> = split(data, b"\n%%\n").take(MAX_REQUESTS).collect();
    runtime().block_on(async {
        let kek = Arc::new(Kek::ephemeral());
        let store = Store::in_memory().await.expect("an in-memory store");
        let (tokens, _) = Tokens::load_or_create(&store, &kek).await.expect("API token key");
        let identity = Identity::load(store.clone(), kek, ward_cp::provided_files::ProvidedCaDir::default())
            .await
            .expect("identity");
        let discovery = ward_cp::discovery::Discovery::start(
            store.clone(),
            identity.clone(),
            "240.0.0.0/16".parse().expect("a range"),
        );
        let day = Duration::from_secs(86_400);
        let token = |name: &str| match name {
            "admin" => Some(tokens.issue("admin", Role::Admin, None, day)),
            "viewer" => Some(tokens.issue("viewer", Role::Viewer, None, day)),
            "limited" => Some(tokens.issue("limited", Role::Admin, Some(vec!["default".into()]), day)),
            "none" => None,
            other => Some(other.to_string()),
        };
        let router = api::router(ApiState {
            store: store.clone(),
            tokens: tokens.clone(),
            identity,
            online: discovery.online.clone(),
            snapshots: discovery.snapshots.clone(),
        });
        for raw in requests {
            let Some(request) = request(raw, &token) else { continue };
            let description = format!("{} {}", request.method(), request.uri());
            let response = router.clone().oneshot(request).await.expect("the router is infallible");
            if response.status() == StatusCode::INTERNAL_SERVER_ERROR {
                let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
                panic!("{description}: 500 {}", String::from_utf8_lossy(&body));
            }
        }
    });
}

/// The request `raw` describes; `None` when its first line is not a method, a path and a token.
fn request(raw: &[u8], token: &dyn Fn(&str) -> Option<String>) -> Option<Request<Body>> {
    let (line, body) = match raw.iter().position(|&b| b == b'\n') {
        Some(at) => (&raw[..at], &raw[at + 1..]),
        None => (raw, &[][..]),
    };
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    let method = Method::from_bytes(words.next()?.as_bytes()).ok()?;
    let path = words.next()?;
    let bearer = token(words.next()?);
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(bearer) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
    }
    if let Some(content_type) = words.next() {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fn split<'a>(data: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.windows(separator.len()).position(|w| w == separator) {
            Some(at) => {
                rest = Some(&current[at + separator.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime")
    })
}
