//! The `MeshFaultInjection` policy: delays, aborts and slowed responses that the callee's proxy
//! injects into a share of the HTTP requests reaching an inbound (`from[]`, `rules[]`), checked
//! as Kuma 2.14's validator checks them.
//!
//! Kuma accepts `to[]` only when the top-level targetRef includes gateways, and `from[]`
//! entries naming particular callers: Ward's gateway applies no fault and its inbound faults
//! apply to every caller, so both are refused as not supported.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    duration::KumaDuration,
    error::Causes,
    permission::{ProxyType, TargetKind},
    rules::{Inbound, Shape, Targeted},
};

/// A MeshFaultInjection.
pub type MeshFaultInjection = Targeted<Conf>;

/// One `default` of a MeshFaultInjection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Conf {
    /// The faults, each applied on its own to a share of the requests, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<Fault>>,
}

/// One `http[]` fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fault {
    /// Answers a share of the requests with a status, without reaching the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
    /// Delays a share of the requests before they reach the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    /// Slows the response body of a share of the requests to a bandwidth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bandwidth: Option<ResponseBandwidth>,
}

/// `abort`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Abort {
    /// The status answered.
    pub http_status: i32,
    /// The share of requests, 0 to 100 (as in Kuma, none when left out).
    #[serde(default)]
    pub percentage: Percentage,
}

/// `delay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Delay {
    /// How long.
    pub value: KumaDuration,
    /// The share of requests, 0 to 100 (as in Kuma, none when left out).
    #[serde(default)]
    pub percentage: Percentage,
}

/// `responseBandwidth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseBandwidth {
    /// The bandwidth: a number and `kbps`, `Mbps` or `Gbps`.
    pub limit: String,
    /// The share of requests, 0 to 100 (as in Kuma, none when left out).
    #[serde(default)]
    pub percentage: Percentage,
}

/// A percentage as Kuma takes it (an `IntOrString`): a whole number, or a decimal in a string
/// such as `"50.5"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Percentage {
    /// A whole number.
    Int(i64),
    /// A decimal number in a string.
    Text(String),
}

impl Default for Percentage {
    fn default() -> Self {
        Percentage::Int(0)
    }
}

impl Percentage {
    /// Its value, if it is a number.
    pub fn value(&self) -> Option<f64> {
        match self {
            Percentage::Int(n) => Some(*n as f64),
            Percentage::Text(t) => {
                let plain = !t.is_empty()
                    && t.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
                    && t.chars().any(|c| c.is_ascii_digit());
                t.parse::<f64>().ok().filter(|v| plain && v.is_finite())
            }
        }
    }
}

/// Checks a percentage as Kuma's `ValidatePercentage` (zero allowed).
pub fn check_percentage(p: &Percentage, at: &str, causes: &mut Causes) {
    match p.value() {
        None => causes.add(at, "string must be a valid number"),
        Some(v) if !(0.0..=100.0).contains(&v) => causes.add(at, "must be in inclusive range [0.0, 100.0]"),
        Some(_) => {}
    }
}

/// A bandwidth in bytes per second, as Envoy's fault filter reads Kuma's `limit`: Kuma turns
/// `N kbps`, `N Mbps`, `N Gbps` into N, N*1000, N*1000000 "kbps", which Envoy takes as KiB/s.
pub fn bandwidth_bytes_per_sec(limit: &str) -> Result<u64, String> {
    let digits = limit.find(|c: char| !c.is_ascii_digit()).unwrap_or(limit.len());
    let (number, unit) = limit.split_at(digits);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let factor: u64 = match unit {
        "kbps" => 1,
        "Mbps" => 1_000,
        "Gbps" => 1_000_000,
        _ => return Err("must be in kbps/Mbps/Gbps units".into()),
    };
    let n: u64 = number.parse().map_err(|_| "must be a number followed by kbps, Mbps or Gbps".to_string())?;
    n.checked_mul(factor).and_then(|k| k.checked_mul(1024)).ok_or_else(|| "is too large".to_string())
}

/// Kuma's pattern for a bandwidth: `^(\d*)\s?([GMk]+bps)$`.
fn kuma_bandwidth(limit: &str) -> bool {
    let digits = limit.find(|c: char| !c.is_ascii_digit()).unwrap_or(limit.len());
    let rest = &limit[digits..];
    let rest = rest.strip_prefix(|c: char| c.is_whitespace()).unwrap_or(rest);
    let Some(prefix) = rest.strip_suffix("bps") else { return false };
    !prefix.is_empty() && prefix.chars().all(|c| matches!(c, 'G' | 'M' | 'k'))
}

/// The shape Ward serves: inbound faults from every caller.
pub fn shape() -> Shape<'static, Conf> {
    use TargetKind::*;
    Shape {
        top: &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane],
        gateways: "Ward's gateway does not apply MeshFaultInjection",
        to: &[Mesh],
        routed_to: None,
        // Checked here, then refused below unless Mesh: Ward's faults do not depend on the caller.
        from: &[Mesh, MeshSubset, MeshService, MeshServiceSubset],
        inbound: Inbound::Served,
        unsupported: &[(MeshGateway, "Ward has no MeshGateway"), (MeshHTTPRoute, "Ward has no MeshHTTPRoute yet")],
        conf: &check_conf,
        conditioned: &|_, _, _| {},
    }
}

/// Checks a MeshFaultInjection as Kuma does, and refuses what Ward does not serve.
pub fn check(policy: &MeshFaultInjection, causes: &mut Causes) {
    policy.check(&shape(), causes);
    for (i, entry) in policy.from.iter().flatten().enumerate() {
        if entry.target_ref.kind != TargetKind::Mesh {
            causes.unsupported(
                format!("spec.from[{i}].targetRef.kind"),
                format!("kind {}: Ward injects faults for every caller; use kind Mesh", entry.target_ref.kind),
            );
        }
    }
    check_to(policy.target_ref.as_ref(), policy.to.as_deref().map_or(0, <[_]>::len), "MeshFaultInjection", causes);
}

/// Kuma's rule for `to[]` in the inbound kinds: only when the top-level targetRef includes
/// gateways, and Ward's gateway applies none of them.
pub fn check_to(top: Option<&crate::permission::TargetRef>, to_len: usize, kind: &str, causes: &mut Causes) {
    if to_len == 0 {
        return;
    }
    let includes_gateways = top.is_none_or(|t| match t.kind {
        TargetKind::MeshGateway | TargetKind::MeshHTTPRoute => true,
        TargetKind::Mesh | TargetKind::MeshSubset => {
            t.proxy_types.as_ref().is_none_or(|p| p.is_empty() || p.contains(&ProxyType::Gateway))
        }
        _ => false,
    });
    if includes_gateways {
        causes
            .unsupported("spec.to", format!("Ward's gateway does not apply {kind}; its to[] configures gateways only"));
    } else {
        causes.add("spec.to", "must not be defined");
    }
}

fn check_conf(conf: &Conf, at: &str, causes: &mut Causes) {
    for (i, fault) in conf.http.iter().flatten().enumerate() {
        let at = format!("{at}.http[{i}]");
        if let Some(abort) = &fault.abort {
            if !(100..600).contains(&abort.http_status) {
                causes.add(format!("{at}.abort.httpStatus"), "must be in inclusive range [100, 599]");
            }
            check_percentage(&abort.percentage, &format!("{at}.abort.percentage"), causes);
        }
        if let Some(delay) = &fault.delay {
            check_percentage(&delay.percentage, &format!("{at}.delay.percentage"), causes);
        }
        if let Some(bw) = &fault.response_bandwidth {
            let field = format!("{at}.responseBandwidth.limit");
            if bw.limit.is_empty() {
                causes.add(&field, "must be defined");
            } else if !kuma_bandwidth(&bw.limit) {
                causes.add(&field, "must be in kbps/Mbps/Gbps units");
            } else if let Err(why) = bandwidth_bytes_per_sec(&bw.limit) {
                causes.unsupported(&field, format!("Ward reads N kbps, N Mbps or N Gbps: {why}"));
            }
            check_percentage(&bw.percentage, &format!("{at}.responseBandwidth.percentage"), causes);
        }
    }
}

/// One fault ready to apply: shares as fractions of 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    /// Status and share of aborted requests.
    pub abort: Option<(u16, f64)>,
    /// Delay and share of delayed requests.
    pub delay: Option<(Duration, f64)>,
    /// Bytes per second and share of slowed responses.
    pub bandwidth: Option<(u64, f64)>,
}

/// The faults of a merged conf (what the rules engine gives), in order.
pub fn faults(conf: &serde_json::Value) -> Result<Vec<Injected>, String> {
    let conf: Conf = serde_json::from_value(conf.clone()).map_err(|e| format!("MeshFaultInjection conf: {e}"))?;
    let share = |p: &Percentage| p.value().map(|v| v.clamp(0.0, 100.0) / 100.0).ok_or("bad percentage".to_string());
    conf.http
        .unwrap_or_default()
        .iter()
        .map(|f| -> Result<Injected, String> {
            Ok(Injected {
                abort: f
                    .abort
                    .as_ref()
                    .map(|a| {
                        Ok::<_, String>((
                            u16::try_from(a.http_status).map_err(|e| e.to_string())?,
                            share(&a.percentage)?,
                        ))
                    })
                    .transpose()?,
                delay: f.delay.as_ref().map(|d| Ok::<_, String>((d.value.get(), share(&d.percentage)?))).transpose()?,
                bandwidth: f
                    .response_bandwidth
                    .as_ref()
                    .map(|b| Ok::<_, String>((bandwidth_bytes_per_sec(&b.limit)?, share(&b.percentage)?)))
                    .transpose()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidths_read_as_envoy_reads_them() {
        assert_eq!(bandwidth_bytes_per_sec("10kbps"), Ok(10 * 1024));
        assert_eq!(bandwidth_bytes_per_sec("1 Mbps"), Ok(1_000 * 1024));
        assert_eq!(bandwidth_bytes_per_sec("2Gbps"), Ok(2_000_000 * 1024));
        assert!(bandwidth_bytes_per_sec("kbps").is_err());
        assert!(kuma_bandwidth("kbps") && kuma_bandwidth("10 Mbps") && !kuma_bandwidth("10mbps"));
    }

    #[test]
    fn percentages_are_numbers_or_decimal_strings() {
        assert_eq!(Percentage::Text("50.5".into()).value(), Some(50.5));
        assert_eq!(Percentage::Int(100).value(), Some(100.0));
        assert_eq!(Percentage::Text("inf".into()).value(), None);
        assert_eq!(Percentage::Text("abc".into()).value(), None);
    }
}
