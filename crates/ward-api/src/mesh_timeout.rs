//! The `MeshTimeout` policy: connection and HTTP timeouts on a dataplane's inbounds (`from[]`,
//! `rules[]`) and outbounds (`to[]`), checked as Kuma 2.14's validator checks them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    duration::KumaDuration,
    error::Causes,
    permission::TargetKind,
    rules::{Inbound, Shape, Targeted},
};

/// A MeshTimeout.
pub type MeshTimeout = Targeted<Conf>;

/// One `default` of a MeshTimeout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Conf {
    /// How long connecting to the destination (outbound) or the application (inbound) may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout: Option<KumaDuration>,
    /// How long a connection may stay without traffic before it is closed (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<KumaDuration>,
    /// HTTP timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
}

/// `default.http`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Http {
    /// How long a whole request may take, until its response is complete (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<KumaDuration>,
    /// How long a request may go without moving a byte either way (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout: Option<KumaDuration>,
    /// How long a request may last at most, reset when exceeded (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stream_duration: Option<KumaDuration>,
    /// How long a connection may be used at most before it is drained and closed (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<KumaDuration>,
    /// How long receiving a request's headers may take; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_timeout: Option<KumaDuration>,
}

/// The shape Ward serves: Kuma's kinds per position, less those it has no object for.
pub fn shape() -> Shape<'static, Conf> {
    use TargetKind::*;
    Shape {
        top: &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane],
        gateways: "Ward's gateway does not apply MeshTimeout: its routes keep Kong's timeouts",
        to: &[Mesh, MeshService, MeshExternalService],
        routed_to: Some(&[Mesh, MeshExternalService]),
        from: &[Mesh],
        inbound: Inbound::Served,
        unsupported: &[
            (MeshGateway, "Ward has no MeshGateway"),
            (MeshHTTPRoute, "Ward has no MeshHTTPRoute yet"),
            (MeshMultiZoneService, "Ward runs one zone and has no MeshMultiZoneService"),
        ],
        conf: &check_conf,
        conditioned: &check_conditioned,
    }
}

/// Kuma's rule: these cannot depend on who calls, so a rule matching callers cannot set them.
fn check_conditioned(conf: &Conf, at: &str, causes: &mut Causes) {
    const WHY: &str = "can't be specified when matches contain spiffeID because this field cannot be conditioned on \
                       source identity";
    let http = conf.http.as_ref();
    for (field, set) in [
        ("connectionTimeout", conf.connection_timeout.is_some()),
        ("idleTimeout", conf.idle_timeout.is_some()),
        ("http.requestHeadersTimeout", http.is_some_and(|h| h.request_headers_timeout.is_some())),
        ("http.maxStreamDuration", http.is_some_and(|h| h.max_stream_duration.is_some())),
        ("http.maxConnectionDuration", http.is_some_and(|h| h.max_connection_duration.is_some())),
    ] {
        if set {
            causes.add(format!("{at}.{field}"), WHY);
        }
    }
}

fn check_conf(conf: &Conf, at: &str, causes: &mut Causes) {
    if conf.connection_timeout.is_none() && conf.idle_timeout.is_none() && conf.http.is_none() {
        causes.add(at, "at least one timeout should be configured");
        return;
    }
    if conf.connection_timeout.as_ref().is_some_and(|d| d.get().is_zero()) {
        causes.add(format!("{at}.connectionTimeout"), "must be greater than zero");
    }
    let Some(http) = &conf.http else { return };
    let at = format!("{at}.http");
    if http.request_timeout.is_none()
        && http.stream_idle_timeout.is_none()
        && http.max_stream_duration.is_none()
        && http.max_connection_duration.is_none()
    {
        causes.add(&at, "at least one timeout in this section should be configured");
    }
    if http.request_headers_timeout.is_some() {
        causes.unsupported(
            format!("{at}.requestHeadersTimeout"),
            "Ward's proxies bound the time to read request headers with their own listener limit",
        );
    }
}

/// The timeouts in force at one place, from a merged conf; `None` where Ward's own default holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// `connectionTimeout`.
    pub connect: Option<Duration>,
    /// `idleTimeout`; zero disables it.
    pub idle: Option<Duration>,
    /// `http.requestTimeout`; zero disables it.
    pub request: Option<Duration>,
    /// `http.streamIdleTimeout`; zero disables it.
    pub stream_idle: Option<Duration>,
    /// `http.maxStreamDuration`; zero disables it.
    pub max_stream: Option<Duration>,
    /// `http.maxConnectionDuration`; zero disables it.
    pub max_connection: Option<Duration>,
}

impl Timeouts {
    /// The timeouts of a merged conf (what the rules engine gives).
    pub fn from_conf(conf: &serde_json::Value) -> Result<Timeouts, String> {
        let conf: Conf = serde_json::from_value(conf.clone()).map_err(|e| format!("MeshTimeout conf: {e}"))?;
        let get = |d: &Option<KumaDuration>| d.as_ref().map(KumaDuration::get);
        let http = conf.http.unwrap_or_default();
        Ok(Timeouts {
            connect: get(&conf.connection_timeout),
            idle: get(&conf.idle_timeout),
            request: get(&http.request_timeout),
            stream_idle: get(&http.stream_idle_timeout),
            max_stream: get(&http.max_stream_duration),
            max_connection: get(&http.max_connection_duration),
        })
    }

    /// The idle timeout in force: this one's, or `default` when it sets none; `None` when
    /// disabled (zero).
    pub fn idle_or(&self, default: Duration) -> Option<Duration> {
        match self.idle {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(default),
        }
    }
}

/// A limit that is set and not zero (zero disables a timeout, as in Kuma).
pub fn enabled(limit: Option<Duration>) -> Option<Duration> {
    limit.filter(|d| !d.is_zero())
}
