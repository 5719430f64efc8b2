//! The `MeshRateLimit` policy: local rate limits on a dataplane's inbounds (`from[]`,
//! `rules[]`), kept by the callee's proxy, checked as Kuma 2.14's validator checks them.
//!
//! Kuma accepts `to[]` only when the top-level targetRef includes gateways: Ward's gateway
//! has its own rate-limiting plugin, so `to[]` is refused as not supported.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    duration::KumaDuration,
    error::Causes,
    permission::TargetKind,
    rules::{Inbound, Shape, Targeted},
};

/// A MeshRateLimit.
pub type MeshRateLimit = Targeted<Conf>;

/// One `default` of a MeshRateLimit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Conf {
    /// Limits kept by each proxy on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Local>,
}

/// `local`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Local {
    /// Requests per interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<LocalHttp>,
    /// Connections per interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<LocalTcp>,
}

/// `local.http`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalHttp {
    /// Turns the limit off (for instance to override a wider policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// The rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<Rate>,
    /// The answer to a request over the rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rate_limit: Option<OnRateLimit>,
}

/// `local.tcp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalTcp {
    /// Turns the limit off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// The rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_rate: Option<Rate>,
}

/// `num` per `interval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rate {
    /// How many.
    pub num: u32,
    /// Per how long.
    pub interval: KumaDuration,
}

/// `onRateLimit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OnRateLimit {
    /// The status (default 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    /// Headers of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// `onRateLimit.headers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Headers {
    /// Headers set, replacing any of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<Header>>,
    /// Headers added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Vec<Header>>,
}

/// A header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Header {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// The shape Ward serves: inbound limits.
pub fn shape() -> Shape<'static, Conf> {
    use TargetKind::*;
    Shape {
        top: &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane],
        gateways: "Ward's gateway does not apply MeshRateLimit: use its rate-limiting plugin",
        to: &[Mesh],
        routed_to: None,
        from: &[Mesh],
        inbound: Inbound::Served,
        unsupported: &[(MeshGateway, "Ward has no MeshGateway"), (MeshHTTPRoute, "Ward has no MeshHTTPRoute yet")],
        conf: &check_conf,
        conditioned: &check_conditioned,
    }
}

/// Checks a MeshRateLimit as Kuma does, and refuses what Ward does not serve.
pub fn check(policy: &MeshRateLimit, causes: &mut Causes) {
    policy.check(&shape(), causes);
    let to_len = policy.to.as_deref().map_or(0, <[_]>::len);
    crate::mesh_fault_injection::check_to(policy.target_ref.as_ref(), to_len, "MeshRateLimit", causes);
}

fn check_conditioned(conf: &Conf, at: &str, causes: &mut Causes) {
    if conf.local.as_ref().is_some_and(|l| l.tcp.is_some()) {
        causes.add(
            format!("{at}.local.tcp"),
            "can't be specified when matches contain spiffeID because this field cannot be conditioned on source \
             identity",
        );
    }
}

fn check_rate(rate: &Rate, at: &str, causes: &mut Causes) {
    if rate.num == 0 {
        causes.add(format!("{at}.num"), "must be greater than 0");
    }
    if rate.interval.get() <= Duration::from_millis(50) {
        causes.add(format!("{at}.interval"), "must be greater than: 50ms");
    }
}

fn check_conf(conf: &Conf, at: &str, causes: &mut Causes) {
    let at = format!("{at}.local");
    let Some(local) = &conf.local else {
        causes.add(at, "must be defined");
        return;
    };
    if local.http.is_none() && local.tcp.is_none() {
        causes.add(&at, "must have at least one defined: tcp, http");
    }
    if let Some(http) = &local.http {
        let at = format!("{at}.http");
        if http.disabled.is_none() && http.request_rate.is_none() && http.on_rate_limit.is_none() {
            causes.add(&at, "must have at least one defined: disabled, requestRate, onRateLimit");
        } else {
            if let Some(rate) = &http.request_rate {
                check_rate(rate, &format!("{at}.requestRate"), causes);
            }
            if let Some(on) = &http.on_rate_limit {
                let at = format!("{at}.onRateLimit");
                if on.status == Some(0) {
                    causes.add(format!("{at}.status"), "must be greater than 0");
                } else if on.status.is_some_and(|s| !(100..1000).contains(&s)) {
                    causes.unsupported(format!("{at}.status"), "Ward answers with an HTTP status from 100 to 999");
                }
                let headers = on.headers.iter().flat_map(|h| {
                    let set = h.set.iter().flatten().enumerate().map(|(i, h)| (format!("set[{i}]"), h));
                    set.chain(h.add.iter().flatten().enumerate().map(|(i, h)| (format!("add[{i}]"), h)))
                });
                for (field, header) in headers {
                    if !is_header_name(&header.name) {
                        causes.add(format!("{at}.headers.{field}.name"), "must be a valid HTTP header name");
                    }
                    if header.value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                        causes.add(format!("{at}.headers.{field}.value"), "must be a valid HTTP header value");
                    }
                }
            }
        }
    }
    if let Some(tcp) = &local.tcp {
        let at = format!("{at}.tcp");
        if tcp.disabled.is_none() && tcp.connection_rate.is_none() {
            causes.add(&at, "must have at least one defined: disabled, connectionRate");
        } else if let Some(rate) = &tcp.connection_rate {
            check_rate(rate, &format!("{at}.connectionRate"), causes);
        }
    }
}

/// An HTTP token (RFC 9110), lowercased or not.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A rate in force: `num` per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// How many.
    pub num: u32,
    /// Per how long.
    pub interval: Duration,
}

/// What a merged conf limits at one inbound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests, when limited (not disabled, with a rate).
    pub requests: Option<Limit>,
    /// The status of a refused request (default 429).
    pub status: u16,
    /// Headers set on the refusal.
    pub set: Vec<(String, String)>,
    /// Headers added to the refusal.
    pub add: Vec<(String, String)>,
    /// Connections, when limited.
    pub connections: Option<Limit>,
}

impl Limits {
    /// The limits of a merged conf (what the rules engine gives).
    pub fn from_conf(conf: &serde_json::Value) -> Result<Limits, String> {
        let conf: Conf = serde_json::from_value(conf.clone()).map_err(|e| format!("MeshRateLimit conf: {e}"))?;
        let local = conf.local.unwrap_or_default();
        let limit = |r: &Rate| Limit { num: r.num, interval: r.interval.get() };
        let http = local.http.unwrap_or_default();
        let on = http.on_rate_limit.unwrap_or_default();
        let headers = on.headers.unwrap_or_default();
        let pairs = |l: Option<Vec<Header>>| l.unwrap_or_default().into_iter().map(|h| (h.name, h.value)).collect();
        let tcp = local.tcp.unwrap_or_default();
        Ok(Limits {
            requests: http.request_rate.as_ref().filter(|_| http.disabled != Some(true)).map(limit),
            status: on.status.map_or(Ok(429), u16::try_from).map_err(|e| e.to_string())?,
            set: pairs(headers.set),
            add: pairs(headers.add),
            connections: tcp.connection_rate.as_ref().filter(|_| tcp.disabled != Some(true)).map(limit),
        })
    }
}
