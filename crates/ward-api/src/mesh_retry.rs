//! The `MeshRetry` policy: how a dataplane's proxy retries what it sends to each destination
//! (`to[]`), for HTTP, gRPC and TCP, checked as Kuma 2.14's validator checks it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    duration::KumaDuration,
    error::Causes,
    permission::TargetKind,
    rules::{Inbound, Shape, Targeted},
};

/// A MeshRetry.
pub type MeshRetry = Targeted<Conf>;

/// One `default` of a MeshRetry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Conf {
    /// Retries of TCP connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Tcp>,
    /// Retries of HTTP requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
    /// Retries of gRPC calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<Grpc>,
}

/// `default.tcp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tcp {
    /// How many times connecting to an instance is tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connect_attempt: Option<u32>,
}

/// `default.http`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Http {
    /// Retries after the first try (0: none; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    /// How long one try may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<KumaDuration>,
    /// The wait between tries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    /// The wait after a rate-limited answer, read from its headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    /// What makes a try fail: conditions, status codes and `HttpMethod*` restrictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<RetryOn>>,
    /// Answers with one of these headers are retried too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable_response_headers: Option<Vec<HeaderMatch>>,
    /// Only requests with one of these headers are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable_request_headers: Option<Vec<HeaderMatch>>,
    /// Which instances a retry may go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection: Option<Vec<Predicate>>,
    /// How many instances are drawn to find one the predicates allow (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection_max_attempts: Option<i64>,
}

/// `default.grpc`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Grpc {
    /// Retries after the first try (0: none; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    /// How long one try may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<KumaDuration>,
    /// The wait between tries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    /// The wait after a rate-limited answer, read from its headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    /// The gRPC statuses retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<GrpcRetryOn>>,
}

/// A `retryOn` item: a condition name, an `HttpMethod*` or a status code (as text or a number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RetryOn {
    /// A status code written as a number.
    Code(u16),
    /// A condition, method or status code written as text.
    Name(String),
}

/// The conditions an HTTP `retryOn` may name.
pub const HTTP_CONDITIONS: &[&str] = &[
    "5xx",
    "GatewayError",
    "Reset",
    "Retriable4xx",
    "ConnectFailure",
    "EnvoyRatelimited",
    "RefusedStream",
    "Http3PostConnectFailure",
];

/// The methods an HTTP `retryOn` may restrict retries to, after the `HttpMethod` prefix.
pub const HTTP_METHODS: &[&str] = &["Connect", "Delete", "Get", "Head", "Options", "Patch", "Post", "Put", "Trace"];

string_enum! {
    /// A gRPC status that is retried.
    pub enum GrpcRetryOn {
        /// CANCELLED (1).
        Canceled = "Canceled",
        /// DEADLINE_EXCEEDED (4).
        DeadlineExceeded = "DeadlineExceeded",
        /// INTERNAL (13).
        Internal = "Internal",
        /// RESOURCE_EXHAUSTED (8).
        ResourceExhausted = "ResourceExhausted",
        /// UNAVAILABLE (14).
        Unavailable = "Unavailable",
    }
}

impl GrpcRetryOn {
    /// Its `grpc-status` code.
    pub fn code(self) -> u32 {
        match self {
            GrpcRetryOn::Canceled => 1,
            GrpcRetryOn::DeadlineExceeded => 4,
            GrpcRetryOn::ResourceExhausted => 8,
            GrpcRetryOn::Internal => 13,
            GrpcRetryOn::Unavailable => 14,
        }
    }
}

/// `backOff`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackOff {
    /// The first wait (default 25ms); each retry doubles it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_interval: Option<KumaDuration>,
    /// The longest wait (default ten times the base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<KumaDuration>,
}

/// `rateLimitedBackOff`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitedBackOff {
    /// The headers that say how long to wait, first found wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_headers: Option<Vec<ResetHeader>>,
    /// The longest wait (default 300s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<KumaDuration>,
}

string_enum! {
    /// How a reset header states the wait.
    pub enum ResetFormat {
        /// A number of seconds (`Retry-After: 5`).
        Seconds = "Seconds",
        /// The moment to retry, in seconds since 1970.
        UnixTimestamp = "UnixTimestamp",
    }
}

/// A header that says how long to wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetHeader {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// How its value reads.
    pub format: ResetFormat,
}

string_enum! {
    /// How a header is matched.
    pub enum HeaderMatchType {
        /// The whole value.
        Exact = "Exact",
        /// The header is there.
        Present = "Present",
        /// The value matches a regular expression (whole).
        RegularExpression = "RegularExpression",
        /// The header is not there.
        Absent = "Absent",
        /// The value starts with this.
        Prefix = "Prefix",
    }
}

/// Kuma's `HeaderMatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// How (default Exact).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<HeaderMatchType>,
    /// The header's name.
    pub name: String,
    /// The value compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

string_enum! {
    /// A host selection predicate.
    pub enum PredicateType {
        /// A retry goes to an instance not tried yet.
        OmitPreviousHosts = "OmitPreviousHosts",
        /// A retry avoids instances with these tags.
        OmitHostsWithTags = "OmitHostsWithTags",
        /// A retry avoids the priorities tried (Ward's instances share one priority).
        OmitPreviousPriorities = "OmitPreviousPriorities",
    }
}

/// `hostSelection[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Predicate {
    /// The predicate.
    pub predicate: PredicateType,
    /// Tags (`OmitHostsWithTags`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// How often priorities are recomputed (`OmitPreviousPriorities`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub update_frequency: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The shape Ward serves: `to[]` only, Kuma's kinds less those it has no object for.
pub fn shape() -> Shape<'static, Conf> {
    use TargetKind::*;
    Shape {
        top: &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane],
        gateways: "Ward's gateway does not apply MeshRetry: its upstreams keep Kong's retries",
        to: &[Mesh, MeshService, MeshExternalService],
        routed_to: Some(&[Mesh, MeshExternalService]),
        from: &[],
        inbound: Inbound::None,
        unsupported: &[
            (MeshGateway, "Ward has no MeshGateway"),
            (MeshHTTPRoute, "Ward has no MeshHTTPRoute yet"),
            (MeshMultiZoneService, "Ward runs one zone and has no MeshMultiZoneService"),
        ],
        conf: &check_conf,
        conditioned: &|_, _, _| {},
    }
}

fn check_conf(conf: &Conf, at: &str, causes: &mut Causes) {
    if conf.tcp.is_none() && conf.http.is_none() && conf.grpc.is_none() {
        causes.add(at, "at least one of the 'tcp', 'http', 'grpc' must be specified");
    }
    if let Some(tcp) = &conf.tcp {
        match tcp.max_connect_attempt {
            None => causes.add(format!("{at}.tcp"), "must not be empty"),
            Some(0) => causes.add(format!("{at}.tcp.maxConnectAttempt"), "has to be greater than 0"),
            Some(_) => {}
        }
    }
    if let Some(http) = &conf.http {
        let at = format!("{at}.http");
        if http == &Http::default() {
            causes.add(&at, "must not be empty");
        }
        check_back_off(&at, http.back_off.as_ref(), http.rate_limited_back_off.as_ref(), causes);
        for (i, item) in http.retry_on.iter().flatten().enumerate() {
            let known = match item {
                RetryOn::Code(code) => is_status(*code),
                RetryOn::Name(name) => {
                    HTTP_CONDITIONS.contains(&name.as_str())
                        || name.strip_prefix("HttpMethod").is_some_and(|m| HTTP_METHODS.contains(&m))
                        || name.parse::<u16>().is_ok_and(is_status)
                }
            };
            if !known {
                let shown = match item {
                    RetryOn::Code(code) => code.to_string(),
                    RetryOn::Name(name) => name.clone(),
                };
                causes.add(format!("{at}.retryOn[{i}]"), format!("unknown item '{shown}'"));
            }
        }
        for (field, list) in [
            ("retriableResponseHeaders", &http.retriable_response_headers),
            ("retriableRequestHeaders", &http.retriable_request_headers),
        ] {
            for (i, m) in list.iter().flatten().enumerate() {
                check_header_match(&format!("{at}.{field}[{i}]"), m, causes);
            }
        }
        let mut priorities = false;
        for (i, p) in http.host_selection.iter().flatten().enumerate() {
            let at = format!("{at}.hostSelection[{i}]");
            match p.predicate {
                PredicateType::OmitHostsWithTags if p.tags.is_none() => {
                    causes.add(format!("{at}.tags"), "must be defined");
                }
                PredicateType::OmitHostsWithTags => causes.unsupported(
                    format!("{at}.predicate"),
                    "retries are not steered by instance tags; use OmitPreviousHosts",
                ),
                PredicateType::OmitPreviousPriorities => {
                    if priorities {
                        causes.add(format!("{at}.predicate"), "OmitPreviousPriorities must only be specified once");
                    }
                    if p.update_frequency <= 0 {
                        causes.add(format!("{at}.updateFrequency"), "must be defined and greater than zero");
                    }
                    priorities = true;
                }
                PredicateType::OmitPreviousHosts => {}
            }
        }
    }
    if let Some(grpc) = &conf.grpc {
        let at = format!("{at}.grpc");
        if grpc == &Grpc::default() {
            causes.add(&at, "must not be empty");
        }
        check_back_off(&at, grpc.back_off.as_ref(), grpc.rate_limited_back_off.as_ref(), causes);
    }
}

/// Whether `code` is an HTTP status code with a name (Kuma's test).
fn is_status(code: u16) -> bool {
    matches!(
        code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451
            | 500..=508 | 510 | 511
    )
}

fn check_back_off(at: &str, back_off: Option<&BackOff>, limited: Option<&RateLimitedBackOff>, causes: &mut Causes) {
    if let Some(b) = back_off
        && b.base_interval.is_none()
        && b.max_interval.is_none()
    {
        causes.add(format!("{at}.backOff"), "must not be empty");
    }
    if let Some(limited) = limited {
        let at = format!("{at}.rateLimitedBackOff");
        if limited.max_interval.as_ref().is_some_and(|d| d.get().is_zero()) {
            causes.add(format!("{at}.maxInterval"), "must be greater than zero");
        }
        match &limited.reset_headers {
            None => causes.add(format!("{at}.resetHeaders"), "must be defined"),
            Some(headers) => {
                for (i, h) in headers.iter().enumerate() {
                    if h.name.is_empty() {
                        causes.add(format!("{at}.resetHeaders[{i}].name"), "must not be empty");
                    }
                }
            }
        }
    }
}

fn check_header_match(at: &str, m: &HeaderMatch, causes: &mut Causes) {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if m.name.is_empty() || !m.name.chars().all(token) {
        causes.add(format!("{at}.name"), "must be a header name");
    }
    match m.ty.unwrap_or(HeaderMatchType::Exact) {
        HeaderMatchType::RegularExpression => {
            if let Err(e) = regex::Regex::new(m.value.as_deref().unwrap_or_default()) {
                causes.add(format!("{at}.value"), format!("must be a regular expression: {e}"));
            }
        }
        HeaderMatchType::Exact | HeaderMatchType::Prefix if m.value.is_none() => {
            causes.add(format!("{at}.value"), "must be set for this type");
        }
        _ => {}
    }
}
