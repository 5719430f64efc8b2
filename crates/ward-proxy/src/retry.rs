//! MeshRetry in the caller's proxy: which failed tries of a request are tried again, after how
//! long, and on which instance. A request is retried only when its whole body was buffered
//! first (empty, or a declared length up to [`BUFFER_LIMIT`]); one whose body streams goes once.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use rand::Rng;
use regex::Regex;
use ward_api::mesh_retry::{self, Conf, GrpcRetryOn, HeaderMatchType, PredicateType, ResetFormat, RetryOn};
use ward_http::{Body, body::boxed};

use crate::member::{Member, SendError, Try};

/// The largest request body buffered so that the request can be retried.
pub const BUFFER_LIMIT: u64 = 64 * 1024;

/// Envoy's and Kuma's first wait between tries.
const BASE_INTERVAL: Duration = Duration::from_millis(25);
/// The longest wait a rate-limit header may ask for, unless the policy says.
const RATE_LIMITED_MAX: Duration = Duration::from_secs(300);

/// What makes a try fail, compiled from `retryOn`.
#[derive(Debug, Default)]
struct Conditions {
    five_xx: bool,
    gateway_error: bool,
    reset: bool,
    connect_failure: bool,
    retriable_4xx: bool,
    refused_stream: bool,
    rate_limited: bool,
    statuses: Vec<u16>,
    grpc: Vec<u32>,
}

/// A header test of `retriableRequestHeaders` / `retriableResponseHeaders`, or of a method.
#[derive(Debug)]
enum HeaderTest {
    Method(http::Method),
    Header { name: http::HeaderName, ty: HeaderMatchType, value: String, regex: Option<Regex> },
}

impl HeaderTest {
    fn passes(&self, method: Option<&http::Method>, headers: &HeaderMap) -> bool {
        match self {
            HeaderTest::Method(m) => method == Some(m),
            HeaderTest::Header { name, ty, value, regex } => {
                let found = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
                match ty {
                    HeaderMatchType::Present => !found.is_empty(),
                    HeaderMatchType::Absent => found.is_empty(),
                    HeaderMatchType::Exact => found.iter().any(|v| *v == value),
                    HeaderMatchType::Prefix => found.iter().any(|v| v.starts_with(value.as_str())),
                    HeaderMatchType::RegularExpression => {
                        found.iter().any(|v| regex.as_ref().is_some_and(|r| r.is_match(v)))
                    }
                }
            }
        }
    }
}

/// A destination's retry policy.
#[derive(Debug)]
pub struct RetryPolicy {
    retries: u32,
    per_try: Option<Duration>,
    base: Duration,
    max: Duration,
    conditions: Conditions,
    /// A request is retried only if it passes one of these (none: every request).
    request: Vec<HeaderTest>,
    /// An answer passing one of these is retried too.
    response: Vec<HeaderTest>,
    /// Headers stating the wait after a rate-limited answer, and the longest such wait.
    reset_headers: Vec<(http::HeaderName, ResetFormat)>,
    rate_limited_max: Duration,
    omit_previous_hosts: bool,
    /// TCP: how many times connecting is tried (1: no retry).
    pub connect_attempts: u32,
}

impl RetryPolicy {
    /// The policy of a merged MeshRetry conf for a destination speaking gRPC or not; `None`
    /// when it retries nothing.
    pub fn from_conf(conf: &serde_json::Value, grpc: bool) -> Result<Option<RetryPolicy>, String> {
        let conf: Conf = serde_json::from_value(conf.clone()).map_err(|e| format!("MeshRetry conf: {e}"))?;
        let connect_attempts = conf.tcp.as_ref().and_then(|t| t.max_connect_attempt).unwrap_or(1).max(1);
        let mut policy = RetryPolicy {
            retries: 0,
            per_try: None,
            base: BASE_INTERVAL,
            max: BASE_INTERVAL * 10,
            conditions: Conditions::default(),
            request: Vec::new(),
            response: Vec::new(),
            reset_headers: Vec::new(),
            rate_limited_max: RATE_LIMITED_MAX,
            omit_previous_hosts: false,
            connect_attempts,
        };
        let (retries, per_try, back_off, limited) = match (&conf.grpc, &conf.http) {
            (Some(g), _) if grpc => {
                policy.conditions = grpc_conditions(g.retry_on.as_deref());
                (g.num_retries, &g.per_try_timeout, &g.back_off, &g.rate_limited_back_off)
            }
            (_, Some(h)) => {
                policy.conditions = http_conditions(h.retry_on.as_deref(), &mut policy.request)?;
                for m in h.retriable_request_headers.iter().flatten() {
                    policy.request.push(header_test(m)?);
                }
                for m in h.retriable_response_headers.iter().flatten() {
                    policy.response.push(header_test(m)?);
                }
                policy.omit_previous_hosts =
                    h.host_selection.iter().flatten().any(|p| p.predicate == PredicateType::OmitPreviousHosts);
                (h.num_retries, &h.per_try_timeout, &h.back_off, &h.rate_limited_back_off)
            }
            _ => return Ok((connect_attempts > 1).then_some(policy)),
        };
        policy.retries = retries.unwrap_or(1);
        policy.per_try = per_try.as_ref().map(|d| d.get()).filter(|d| !d.is_zero());
        if let Some(b) = back_off {
            policy.base = b.base_interval.as_ref().map_or(BASE_INTERVAL, |d| d.get());
            policy.max = b.max_interval.as_ref().map_or(policy.base * 10, |d| d.get());
        }
        if let Some(l) = limited {
            for h in l.reset_headers.iter().flatten() {
                let name = http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| format!("reset header: {e}"))?;
                policy.reset_headers.push((name, h.format));
            }
            policy.rate_limited_max = l.max_interval.as_ref().map_or(RATE_LIMITED_MAX, |d| d.get());
        }
        Ok((policy.retries > 0 || connect_attempts > 1).then_some(policy))
    }

    /// Whether `request` may be retried at all (its method and headers).
    fn takes(&self, request: &Request<Body>) -> bool {
        self.request.is_empty() || self.request.iter().any(|t| t.passes(Some(request.method()), request.headers()))
    }

    /// Whether a try that got no answer, for `failure`, is tried again.
    fn fails_without_answer(&self, failure: &Failure) -> bool {
        let c = &self.conditions;
        match failure {
            Failure::Connect => c.connect_failure || c.five_xx || c.gateway_error,
            Failure::Refused => c.refused_stream || c.five_xx || c.reset,
            Failure::Reset | Failure::PerTry => c.reset || c.five_xx || c.gateway_error,
            Failure::Other => false,
        }
    }

    /// Whether a try answered with `status` and `headers` is tried again.
    fn fails_with(&self, status: http::StatusCode, headers: &HeaderMap) -> bool {
        let c = &self.conditions;
        let status = status.as_u16();
        let grpc_status = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u32>().ok());
        (c.five_xx && (500..600).contains(&status))
            || (c.gateway_error && matches!(status, 502..=504))
            || (c.retriable_4xx && status == 409)
            || (c.rate_limited && headers.contains_key("x-envoy-ratelimited"))
            || c.statuses.contains(&status)
            || grpc_status.is_some_and(|g| c.grpc.contains(&g))
            || self.response.iter().any(|t| t.passes(None, headers))
    }

    /// The wait before retry number `n` (from 1): what a reset header of the failed answer
    /// asks, capped, or a jittered exponential back-off.
    fn wait(&self, n: u32, answer: Option<&HeaderMap>) -> Duration {
        if let Some(headers) = answer {
            for (name, format) in &self.reset_headers {
                let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else { continue };
                let Ok(number) = value.trim().parse::<u64>() else { continue };
                let wait = match format {
                    ResetFormat::Seconds => Duration::from_secs(number),
                    ResetFormat::UnixTimestamp => {
                        let now =
                            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                        Duration::from_secs(number).saturating_sub(now)
                    }
                };
                return wait.min(self.rate_limited_max);
            }
        }
        let ceiling = self.base.saturating_mul(1u32 << n.min(16)).min(self.max);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(rand::rng().random_range(0..millis))
    }
}

/// Why a try got no answer.
enum Failure {
    /// Connecting (TCP or mTLS) failed.
    Connect,
    /// The peer refused the stream (HTTP/2 REFUSED_STREAM).
    Refused,
    /// The exchange broke off.
    Reset,
    /// The per-try timeout passed.
    PerTry,
    /// Anything else (no instance at all): not retried.
    Other,
}

fn http_conditions(retry_on: Option<&[RetryOn]>, methods: &mut Vec<HeaderTest>) -> Result<Conditions, String> {
    let Some(items) = retry_on else {
        // Kuma's default: gateway-error, connect-failure, refused-stream.
        return Ok(Conditions {
            gateway_error: true,
            connect_failure: true,
            refused_stream: true,
            ..Default::default()
        });
    };
    let mut c = Conditions::default();
    for item in items {
        let name = match item {
            RetryOn::Code(code) => {
                c.statuses.push(*code);
                continue;
            }
            RetryOn::Name(name) => name.as_str(),
        };
        match name {
            "5xx" => c.five_xx = true,
            "GatewayError" => c.gateway_error = true,
            "Reset" => c.reset = true,
            "Retriable4xx" => c.retriable_4xx = true,
            "ConnectFailure" => c.connect_failure = true,
            "EnvoyRatelimited" => c.rate_limited = true,
            "RefusedStream" => c.refused_stream = true,
            // Ward's proxies speak no HTTP/3: the condition never arises.
            "Http3PostConnectFailure" => {}
            other => {
                if let Some(method) = other.strip_prefix("HttpMethod") {
                    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                        .map_err(|e| format!("retryOn {other}: {e}"))?;
                    methods.push(HeaderTest::Method(method));
                } else {
                    c.statuses.push(other.parse().map_err(|_| format!("retryOn: unknown item {other}"))?);
                }
            }
        }
    }
    Ok(c)
}

fn grpc_conditions(retry_on: Option<&[GrpcRetryOn]>) -> Conditions {
    match retry_on {
        Some(codes) => Conditions { grpc: codes.iter().map(|c| c.code()).collect(), ..Default::default() },
        // Kuma's default: cancelled, connect-failure, gateway-error, refused-stream, reset,
        // resource-exhausted, unavailable.
        None => Conditions {
            connect_failure: true,
            gateway_error: true,
            refused_stream: true,
            reset: true,
            grpc: [GrpcRetryOn::Canceled, GrpcRetryOn::ResourceExhausted, GrpcRetryOn::Unavailable]
                .iter()
                .map(|c| c.code())
                .collect(),
            ..Default::default()
        },
    }
}

fn header_test(m: &mesh_retry::HeaderMatch) -> Result<HeaderTest, String> {
    let name = http::HeaderName::from_bytes(m.name.as_bytes()).map_err(|e| format!("header {}: {e}", m.name))?;
    let ty = m.ty.unwrap_or(HeaderMatchType::Exact);
    let value = m.value.clone().unwrap_or_default();
    let regex = match ty {
        HeaderMatchType::RegularExpression => {
            Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("header {}: {e}", m.name))?)
        }
        _ => None,
    };
    Ok(HeaderTest::Header { name, ty, value, regex })
}

/// Sends `request` to `service` as `how` says, under `policy`: tries again, on another
/// instance when the policy omits previous hosts, while a try fails as the policy says, retries
/// are left and the circuit breaker's `maxRetries` allows one more.
pub async fn send(
    member: &Member,
    service: &str,
    request: Request<Body>,
    how: Try<'_>,
    policy: &RetryPolicy,
) -> Result<Response<Incoming>, SendError> {
    let buffered =
        request.body().is_end_stream() || request.body().size_hint().exact().is_some_and(|n| n <= BUFFER_LIMIT);
    if policy.retries == 0 || !buffered || !policy.takes(&request) {
        return member.send(service, request, how).await.map(|(r, _)| r);
    }
    let (parts, body) = request.into_parts();
    let body: Bytes = body.collect().await.map_err(SendError::Request)?.to_bytes();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut n = 0;
    // Held while a retry runs, counted against the circuit breaker's maxRetries.
    let mut _retrying = None;
    loop {
        let mut attempt = Request::new(boxed(Full::new(body.clone())));
        *attempt.method_mut() = parts.method.clone();
        *attempt.uri_mut() = parts.uri.clone();
        *attempt.version_mut() = parts.version;
        *attempt.headers_mut() = parts.headers.clone();
        let avoid = if policy.omit_previous_hosts { tried.as_slice() } else { &[] };
        let sent = member.send(service, attempt, Try { avoid, ..how });
        let outcome = match policy.per_try {
            Some(limit) => tokio::time::timeout(limit, sent).await.unwrap_or(Err(SendError::PerTryTimeout)),
            None => sent.await,
        };
        let (result, endpoint) = match outcome {
            Ok((response, endpoint)) => (Ok(response), Some(endpoint)),
            Err(e) => {
                let endpoint = e.endpoint();
                (Err(e), endpoint)
            }
        };
        let fails = match &result {
            Ok(response) => policy.fails_with(response.status(), response.headers()),
            Err(e) => policy.fails_without_answer(&failure(e)),
        };
        if n >= policy.retries || !fails {
            return result;
        }
        match how.breaker.map(|b| b.admit_retry()) {
            Some(None) => {
                tracing::debug!(%service, "no retry: the circuit breaker's maxRetries run already");
                return result;
            }
            Some(slot) => _retrying = slot,
            None => {}
        }
        n += 1;
        tried.extend(endpoint);
        let wait = policy.wait(n, result.as_ref().ok().map(Response::headers));
        tracing::debug!(%service, retry = n, ?wait, "retrying a failed try");
        drop(result);
        tokio::time::sleep(wait).await;
    }
}

/// How a failed send reads as a retry condition.
fn failure(error: &SendError) -> Failure {
    match error {
        SendError::NoEndpoint(_) | SendError::Request(_) => Failure::Other,
        SendError::PerTryTimeout => Failure::PerTry,
        SendError::Mesh(crate::mesh_client::MeshError::Connect { .. }) => Failure::Connect,
        SendError::Mesh(crate::mesh_client::MeshError::Http { source, .. }) => {
            let refused = std::error::Error::source(source)
                .and_then(|s| s.downcast_ref::<h2::Error>())
                .is_some_and(|h| h.reason() == Some(h2::Reason::REFUSED_STREAM));
            if refused { Failure::Refused } else { Failure::Reset }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(conf: serde_json::Value, grpc: bool) -> RetryPolicy {
        RetryPolicy::from_conf(&conf, grpc).unwrap().expect("a policy that retries")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn retry_on_names_statuses_conditions_and_response_headers() {
        let p = policy(
            json!({"http": {"retryOn": ["GatewayError", 409, "429"],
                            "retriableResponseHeaders": [{"name": "x-retry", "type": "Present"}]}}),
            false,
        );
        let none = HeaderMap::new();
        for (status, fails) in [(503, true), (504, true), (500, false), (409, true), (429, true), (200, false)] {
            assert_eq!(p.fails_with(http::StatusCode::from_u16(status).unwrap(), &none), fails, "{status}");
        }
        assert!(p.fails_with(http::StatusCode::OK, &headers(&[("x-retry", "1")])));
        assert!(p.fails_without_answer(&Failure::Reset), "a broken exchange is a gateway error, as in Envoy");
        assert!(p.fails_without_answer(&Failure::Connect), "so is a connect failure");
        let codes_only = policy(json!({"http": {"retryOn": [409]}}), false);
        assert!(!codes_only.fails_without_answer(&Failure::Reset), "Reset is not listed");
        assert!(!codes_only.fails_without_answer(&Failure::Connect), "ConnectFailure is not listed");
    }

    #[test]
    fn kumas_defaults_apply_without_retry_on_and_zero_retries_is_no_policy() {
        let p = policy(json!({"http": {"numRetries": 2}}), false);
        assert!(p.fails_with(http::StatusCode::BAD_GATEWAY, &HeaderMap::new()));
        assert!(!p.fails_with(http::StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new()));
        assert!(p.fails_without_answer(&Failure::Refused));
        assert!(RetryPolicy::from_conf(&json!({"http": {"numRetries": 0}}), false).unwrap().is_none());
    }

    #[test]
    fn grpc_statuses_are_read_from_the_answer_for_grpc_destinations_only() {
        let conf = json!({"grpc": {"retryOn": ["Unavailable"]}, "http": {"retryOn": ["5xx"]}});
        let grpc = policy(conf.clone(), true);
        assert!(grpc.fails_with(http::StatusCode::OK, &headers(&[("grpc-status", "14")])));
        assert!(!grpc.fails_with(http::StatusCode::OK, &headers(&[("grpc-status", "13")])));
        let http = policy(conf, false);
        assert!(!http.fails_with(http::StatusCode::OK, &headers(&[("grpc-status", "14")])));
        assert!(http.fails_with(http::StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new()));
    }

    #[test]
    fn methods_and_request_headers_choose_which_requests_are_retried() {
        let p = policy(
            json!({"http": {"retryOn": ["5xx", "HttpMethodGet"],
                            "retriableRequestHeaders": [{"name": "x-idempotent", "value": "yes"}]}}),
            false,
        );
        let request = |method: &str, idempotent: bool| {
            let mut r = Request::builder().method(method).uri("/");
            if idempotent {
                r = r.header("x-idempotent", "yes");
            }
            r.body(ward_http::body::full("")).unwrap()
        };
        assert!(p.takes(&request("GET", false)));
        assert!(!p.takes(&request("POST", false)));
        assert!(p.takes(&request("POST", true)));
    }

    #[test]
    fn waits_follow_reset_headers_capped_or_a_jittered_back_off() {
        let p = policy(
            json!({"http": {"numRetries": 3, "backOff": {"baseInterval": "100ms", "maxInterval": "300ms"},
                            "rateLimitedBackOff": {"maxInterval": "2s",
                                "resetHeaders": [{"name": "retry-after", "format": "Seconds"}]}}}),
            false,
        );
        assert_eq!(p.wait(1, Some(&headers(&[("retry-after", "1")]))), Duration::from_secs(1));
        assert_eq!(p.wait(1, Some(&headers(&[("retry-after", "60")]))), Duration::from_secs(2), "capped");
        for n in 1..6 {
            let wait = p.wait(n, None);
            assert!(wait < Duration::from_millis(300), "retry {n}: {wait:?} under the maximum");
        }
    }
}
