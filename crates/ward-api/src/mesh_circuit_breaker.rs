//! The `MeshCircuitBreaker` policy: how many requests and retries a dataplane's proxy lets run
//! at once toward each destination (`to[]`), and which of the destination's instances it stops
//! sending to while they fail (outlier detection), checked as Kuma 2.14's validator checks it.

use serde::{Deserialize, Serialize};

use crate::{
    duration::KumaDuration,
    error::Causes,
    permission::TargetKind,
    rules::{Inbound, Shape, Targeted},
};

/// A MeshCircuitBreaker.
pub type MeshCircuitBreaker = Targeted<Conf>;

/// One `default` of a MeshCircuitBreaker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Conf {
    /// Limits on what runs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limits: Option<ConnectionLimits>,
    /// Ejection of failing instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

/// `connectionLimits`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionLimits {
    /// Connections at once; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Connection pools at once; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_pools: Option<u32>,
    /// Requests waiting for a connection; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Retries running at once toward the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Requests running at once toward the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}

/// `outlierDetection`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// How often success rates and failure percentages are judged (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<KumaDuration>,
    /// How long a first ejection lasts; each further one lasts that much longer (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<KumaDuration>,
    /// The most of the destination's instances ejected at once, in percent (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    /// Counts failures to reach an instance apart from the failures it answers with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_and_local_errors: Option<bool>,
    /// What counts as failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectors: Option<Detectors>,
    /// Below this percentage of instances not ejected, ejections are ignored (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold: Option<Percent>,
}

/// A number written as a number or a decimal string (`50`, `"50.5"`, Kubernetes'
/// int-or-string), checked where it is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Percent {
    /// A number.
    Number(f64),
    /// A decimal string.
    Text(String),
}

impl Percent {
    /// Its value, if it reads as a number.
    pub fn number(&self) -> Option<f64> {
        match self {
            Percent::Number(n) => Some(*n),
            Percent::Text(t) => t.trim().parse::<f64>().ok(),
        }
    }

    /// Its value, if it reads as a number from 0 to 100.
    pub fn value(&self) -> Option<f64> {
        self.number().filter(|v| (0.0..=100.0).contains(v))
    }
}

/// `detectors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Detectors {
    /// Consecutive failures of any kind (5xx answers; failures to reach it unless split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_failures: Option<Consecutive>,
    /// Consecutive 502, 503 or 504 answers (and failures to reach it unless split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_failures: Option<Consecutive>,
    /// Consecutive failures to reach it (with `splitExternalAndLocalErrors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_origin_failures: Option<Consecutive>,
    /// A success rate far below the other instances'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRate>,
    /// A failure percentage above a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_percentage: Option<FailurePercentage>,
}

/// A consecutive-failures detector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consecutive {
    /// How many in a row eject (unset: the detector is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<u32>,
}

/// `successRate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuccessRate {
    /// Instances with enough requests needed to judge (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    /// Requests in an interval for an instance to count (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
    /// Ejected below mean − factor × standard deviation (default 1.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_deviation_factor: Option<Percent>,
}

/// `failurePercentage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FailurePercentage {
    /// Instances with enough requests needed to judge (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    /// Requests in an interval for an instance to count (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
    /// Ejected at or above this failure percentage (default 85).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
}

/// The shape Ward serves: outbound destinations only.
pub fn shape() -> Shape<'static, Conf> {
    use TargetKind::*;
    Shape {
        top: &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane],
        gateways: "Ward's gateway does not apply MeshCircuitBreaker: its upstreams keep Kong's health checks",
        to: &[Mesh, MeshService, MeshExternalService],
        routed_to: None,
        from: &[Mesh],
        inbound: Inbound::Refused(
            "Ward's proxies break circuits toward destinations (to[]); the local application is one instance",
        ),
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
    if conf.connection_limits.is_none() && conf.outlier_detection.is_none() {
        causes.add(at, "at least one of: 'connectionLimits' or 'outlierDetection' should be configured");
    }
    if let Some(limits) = &conf.connection_limits {
        let at = format!("{at}.connectionLimits");
        for (field, value) in [
            ("maxConnections", limits.max_connections),
            ("maxConnectionPools", limits.max_connection_pools),
            ("maxPendingRequests", limits.max_pending_requests),
            ("maxRetries", limits.max_retries),
            ("maxRequests", limits.max_requests),
        ] {
            if value == Some(0) {
                causes.add(format!("{at}.{field}"), "has to be greater than 0");
            }
        }
        for (field, set) in [
            ("maxConnections", limits.max_connections.is_some()),
            ("maxConnectionPools", limits.max_connection_pools.is_some()),
            ("maxPendingRequests", limits.max_pending_requests.is_some()),
        ] {
            if set {
                causes.unsupported(
                    format!("{at}.{field}"),
                    "Ward's proxies carry requests to each instance over one multiplexed connection; limit \
                     requests with maxRequests",
                );
            }
        }
    }
    let Some(od) = &conf.outlier_detection else { return };
    let at = format!("{at}.outlierDetection");
    for (field, d) in [("interval", &od.interval), ("baseEjectionTime", &od.base_ejection_time)] {
        if d.as_ref().is_some_and(|d| d.get().is_zero()) {
            causes.add(format!("{at}.{field}"), "must be greater than zero");
        }
    }
    if od.max_ejection_percent.is_some_and(|p| p > 100) {
        causes.add(format!("{at}.maxEjectionPercent"), "has to be in [0 - 100] range");
    }
    if od.healthy_panic_threshold.as_ref().is_some_and(|p| p.value().is_none()) {
        causes.add(format!("{at}.healthyPanicThreshold"), "has to be in [0.0 - 100.0] range");
    }
    let Some(d) = &od.detectors else {
        if od.disabled != Some(true) {
            causes.add(format!("{at}.detectors"), "must be defined");
        }
        return;
    };
    let at = format!("{at}.detectors");
    if d == &Detectors::default() {
        causes.add(
            &at,
            "must have at least one defined: totalFailures, gatewayFailures, localOriginFailures, successRate, \
             failurePercentage",
        );
    }
    for (field, c) in [
        ("totalFailures", &d.total_failures),
        ("gatewayFailures", &d.gateway_failures),
        ("localOriginFailures", &d.local_origin_failures),
    ] {
        if c.as_ref().and_then(|c| c.consecutive) == Some(0) {
            causes.add(format!("{at}.{field}.consecutive"), "has to be greater than 0");
        }
    }
    if let Some(s) = &d.success_rate {
        for (field, v) in [("minimumHosts", s.minimum_hosts), ("requestVolume", s.request_volume)] {
            if v == Some(0) {
                causes.add(format!("{at}.successRate.{field}"), "has to be greater than 0");
            }
        }
        match s.standard_deviation_factor.as_ref().map(Percent::number) {
            Some(None) => causes.add(format!("{at}.successRate.standardDeviationFactor"), "invalid number"),
            Some(Some(f)) if f <= 0.0 => {
                causes.add(format!("{at}.successRate.standardDeviationFactor"), "has to be greater than 0");
            }
            _ => {}
        }
    }
    if let Some(f) = &d.failure_percentage {
        for (field, v) in [("minimumHosts", f.minimum_hosts), ("requestVolume", f.request_volume)] {
            if v == Some(0) {
                causes.add(format!("{at}.failurePercentage.{field}"), "has to be greater than 0");
            }
        }
        if f.threshold.is_some_and(|t| t > 100) {
            causes.add(format!("{at}.failurePercentage.threshold"), "has to be in [0 - 100] range");
        }
    }
}
