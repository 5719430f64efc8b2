//! The OpenID provider as the gateway sees it: its discovery document, its signing keys
//! (cached, fetched again for an unknown `kid` at most once per `rediscovery_lifetime`),
//! and calls to its endpoints.
//!
//! Keys are looked up without waiting: only a request whose key is missing waits for a
//! fetch, one at a time. While the provider is down, the keys already fetched keep working.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;

/// The most of a provider's answer the gateway reads.
const ANSWER_LIMIT: usize = 1 << 20;

/// Where the provider's endpoints are, from its discovery document.
#[derive(Debug, Deserialize)]
pub(super) struct Endpoints {
    /// The issuer its tokens name in `iss`.
    pub issuer: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: String,
    pub end_session_endpoint: Option<String>,
    pub introspection_endpoint: Option<String>,
}

/// One signing key of the provider.
struct Key {
    kid: Option<String>,
    family: AlgorithmFamily,
    key: DecodingKey,
}

/// Why no key could be had for a token.
#[derive(Debug, thiserror::Error)]
pub(super) enum KeyError {
    /// The provider publishes no key of that id (and family).
    #[error("no key of the provider has that kid")]
    Unknown,
    /// The provider could not be asked, and no key fetched before fits.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
}

/// What was fetched last, and when it was last tried.
#[derive(Default)]
struct Cache {
    endpoints: Option<Arc<Endpoints>>,
    keys: Arc<Vec<Key>>,
    tried: Option<Instant>,
}

/// An HTTP client for the provider's endpoints.
pub(super) struct Client {
    /// None: any certificate (Kong's `ssl_verify: false`).
    roots: Option<rustls::RootCertStore>,
    timeout: Duration,
}

/// One provider: its discovery URL, the client to call it, and what was fetched.
pub(super) struct Provider {
    discovery: String,
    pub client: Client,
    rediscovery: Duration,
    cache: Mutex<Cache>,
    fetching: tokio::sync::Mutex<()>,
}

/// `<issuer>/.well-known/openid-configuration`, or the issuer itself when it is that URL already.
pub(super) fn discovery_url(issuer: &str) -> String {
    const WELL_KNOWN: &str = "/.well-known/openid-configuration";
    if issuer.ends_with(WELL_KNOWN) {
        issuer.to_string()
    } else {
        format!("{}{WELL_KNOWN}", issuer.trim_end_matches('/'))
    }
}

impl Provider {
    /// A provider found at `issuer`; nothing is fetched until a request needs it.
    pub fn new(issuer: &str, client: Client, rediscovery: Duration) -> Self {
        Provider {
            discovery: discovery_url(issuer),
            client,
            rediscovery,
            cache: Mutex::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The provider's endpoints, discovered on first use.
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, KeyError> {
        if let Some(e) = self.cache().endpoints.clone() {
            return Ok(e);
        }
        let _one = self.fetching.lock().await;
        if let Some(e) = self.cache().endpoints.clone() {
            return Ok(e);
        }
        self.refresh().await?;
        self.cache().endpoints.clone().ok_or_else(|| KeyError::Unavailable("no discovery document".into()))
    }

    /// The key that verifies a token signed with `alg` by key `kid`.
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, KeyError> {
        if let Some(k) = find(&self.cache().keys, kid, alg) {
            return Ok(k);
        }
        let _one = self.fetching.lock().await;
        let recently = {
            let cache = self.cache();
            if let Some(k) = find(&cache.keys, kid, alg) {
                return Ok(k);
            }
            cache.endpoints.is_some() && cache.tried.is_some_and(|t| t.elapsed() < self.rediscovery)
        };
        if recently {
            return Err(KeyError::Unknown);
        }
        self.refresh().await?;
        find(&self.cache().keys, kid, alg).ok_or(KeyError::Unknown)
    }

    /// Fetches the discovery document and the keys again; what was fetched before stays
    /// when the provider cannot be reached. Called with `fetching` held.
    async fn refresh(&self) -> Result<(), KeyError> {
        {
            let cache = self.cache();
            if cache.endpoints.is_none() && cache.tried.is_some_and(|t| t.elapsed() < self.rediscovery) {
                return Err(KeyError::Unavailable("discovery failed less than rediscovery_lifetime ago".into()));
            }
        }
        self.cache().tried = Some(Instant::now());
        let fetched = async {
            let endpoints: Endpoints = self.client.get_json(&self.discovery).await?;
            let jwks: Value = self.client.get_json(&endpoints.jwks_uri).await?;
            Ok::<_, String>((endpoints, parse_jwks(&jwks)))
        }
        .await;
        match fetched {
            Ok((endpoints, keys)) => {
                tracing::debug!(issuer = %endpoints.issuer, keys = keys.len(), "openid-connect: provider discovered");
                let mut cache = self.cache();
                cache.endpoints = Some(Arc::new(endpoints));
                cache.keys = Arc::new(keys);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(discovery = %self.discovery, "openid-connect: the identity provider is unavailable: {e}");
                Err(KeyError::Unavailable(e))
            }
        }
    }
}

/// The key for `kid` (or the only key, when the token names none) of `alg`'s family.
fn find(keys: &[Key], kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let family = alg.family();
    let mut fitting = keys.iter().filter(|k| k.family == family);
    match kid {
        Some(kid) => fitting.find(|k| k.kid.as_deref() == Some(kid)).map(|k| k.key.clone()),
        None => {
            let only = fitting.next()?;
            fitting.next().is_none().then(|| only.key.clone())
        }
    }
}

/// The signature keys of a JWKS, skipping any it cannot read and every symmetric key: a
/// provider's public keys never verify HMAC.
fn parse_jwks(jwks: &Value) -> Vec<Key> {
    let Some(list) = jwks.get("keys").and_then(Value::as_array) else { return Vec::new() };
    list.iter()
        .filter(|k| k.get("use").and_then(Value::as_str).is_none_or(|u| u == "sig"))
        .filter_map(|k| {
            let jwk: Jwk = serde_json::from_value(k.clone()).ok()?;
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            let family = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
                _ => return None,
            };
            Some(Key { kid: jwk.common.key_id.clone(), family, key })
        })
        .collect()
}

impl Client {
    /// A client verifying certificates against `roots` (None: any), giving up after `timeout`.
    pub fn new(roots: Option<rustls::RootCertStore>, timeout: Duration) -> Self {
        Client { roots, timeout }
    }

    /// GETs `url` and reads its JSON, which must come with 200.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let (status, body) = self.send(Method::GET, url, None, None).await?;
        if status != StatusCode::OK {
            return Err(format!("{url} answered {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
    }

    /// POSTs a form to `url` with HTTP Basic credentials if given; the status and JSON body.
    pub async fn post_form(
        &self,
        url: &str,
        form: String,
        basic: Option<(&str, &str)>,
    ) -> Result<(StatusCode, Value), String> {
        let authorization = basic.map(|(id, secret)| {
            use base64::Engine;
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(id), enc(secret));
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        });
        let (status, body) = self.send(Method::POST, url, authorization, Some(form)).await?;
        let json = serde_json::from_slice(&body).map_err(|e| format!("{url} answered {status}, not JSON: {e}"))?;
        Ok((status, json))
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        authorization: Option<String>,
        form: Option<String>,
    ) -> Result<(StatusCode, Bytes), String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{url}: not an http or https URL")),
        };
        let host = uri.host().ok_or_else(|| format!("{url}: no host"))?.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str().rsplit('@').next().unwrap_or_default().to_string());
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, authority.unwrap_or_else(|| host.to_string()))
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, concat!("ward-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(a) = authorization {
            request = request.header(header::AUTHORIZATION, a);
        }
        let body = match form {
            Some(form) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Bytes::from(form)
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let work = async {
            let tcp = TcpStream::connect((host, port)).await.map_err(|e| format!("{url}: {e}"))?;
            if https {
                let name = rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
                let tls = crate::upstream::connect::client_tls(self.roots.clone());
                let stream = tls.connect(name, tcp).await.map_err(|e| format!("{url}: {e}"))?;
                exchange(stream, request).await
            } else {
                exchange(tcp, request).await
            }
            .map_err(|e| format!("{url}: {e}"))
        };
        tokio::time::timeout(self.timeout, work).await.unwrap_or_else(|_| Err(format!("{url}: timed out")))
    }
}

/// One request on a new HTTP/1.1 connection; the status and the body.
async fn exchange<S>(stream: S, request: http::Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let outcome = async {
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), ANSWER_LIMIT).collect().await.map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes()))
    }
    .await;
    driver.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_provider_that_cannot_be_reached_is_not_asked_again_within_rediscovery_lifetime() {
        // Nothing listens on port 1 of the loopback: refused at once.
        let client = Client::new(None, Duration::from_secs(5));
        let provider = Provider::new("http://127.0.0.1:1/realm", client, Duration::from_secs(3600));
        match provider.key(Some("k1"), Algorithm::RS256).await {
            Err(KeyError::Unavailable(e)) => assert!(e.contains("127.0.0.1:1/realm/.well-known"), "{e}"),
            other => panic!("{:?}", other.map(|_| "a key")),
        }
        match provider.endpoints().await {
            Err(KeyError::Unavailable(e)) => assert!(e.contains("less than rediscovery_lifetime ago"), "{e}"),
            other => panic!("{:?}", other.map(|_| "endpoints")),
        }
    }

    #[test]
    fn discovery_is_found_under_the_issuer() {
        assert_eq!(discovery_url("http://idp/realms/a"), "http://idp/realms/a/.well-known/openid-configuration");
        assert_eq!(discovery_url("http://idp/"), "http://idp/.well-known/openid-configuration");
        let full = "http://idp/.well-known/openid-configuration";
        assert_eq!(discovery_url(full), full);
    }

    #[test]
    fn a_jwks_gives_only_its_public_signature_keys() {
        let rsa = json!({"kty": "RSA", "kid": "r1", "n": "sXch", "e": "AQAB"});
        let jwks = json!({"keys": [
            rsa,
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "XYZ", "kid": "odd"},
            "not a key",
        ]});
        let keys = parse_jwks(&jwks);
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("r1")]);
        assert!(find(&keys, Some("r1"), Algorithm::RS256).is_some());
        assert!(find(&keys, None, Algorithm::RS256).is_some(), "the only key of the family");
        assert!(find(&keys, Some("r1"), Algorithm::ES256).is_none(), "another family");
        assert!(find(&keys, Some("h1"), Algorithm::HS256).is_none(), "no symmetric key is kept");
        assert!(parse_jwks(&json!({"keys": "none"})).is_empty());
    }
}
