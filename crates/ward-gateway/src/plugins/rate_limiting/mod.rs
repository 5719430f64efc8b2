//! rate-limiting: at most N requests per second, minute, hour, day, month or year.
//!
//! Counting is exact under concurrency, unlike Kong's (issue #2629), because the check
//! and the increment are one atomic step: with the `local` policy under a lock per
//! counter shard, with `redis` in one Lua script. A request that would exceed any limit
//! increments nothing, so the admitted count never exceeds the limit, even with many
//! gateway processes sharing one Redis.

mod local;
mod redis;

use std::sync::Arc;

use chrono::{Datelike, TimeZone, Utc};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::Value;

pub(crate) use self::local::LocalCounters;
pub(crate) use self::redis::RedisClients;
use self::redis::{FlatRedis, RedisConfig, RedisCounters, redis_store};
use super::{Compile, Plugin, Scope};
use crate::exchange::Exchange;
use crate::reply::Reply;

/// The empty UUID Kong puts in counter keys for a plugin without route or service.
const EMPTY_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// A rate-limiting period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

/// Periods with their names and headers, shortest first.
const PERIODS: [(Period, &str, &str, &str); 6] = [
    (Period::Second, "second", "x-ratelimit-limit-second", "x-ratelimit-remaining-second"),
    (Period::Minute, "minute", "x-ratelimit-limit-minute", "x-ratelimit-remaining-minute"),
    (Period::Hour, "hour", "x-ratelimit-limit-hour", "x-ratelimit-remaining-hour"),
    (Period::Day, "day", "x-ratelimit-limit-day", "x-ratelimit-remaining-day"),
    (Period::Month, "month", "x-ratelimit-limit-month", "x-ratelimit-remaining-month"),
    (Period::Year, "year", "x-ratelimit-limit-year", "x-ratelimit-remaining-year"),
];

impl Period {
    fn index(self) -> usize {
        PERIODS.iter().position(|(p, ..)| *p == self).expect("every period is listed")
    }

    fn name(self) -> &'static str {
        PERIODS[self.index()].1
    }

    /// Start and end (ms since the epoch, UTC) of the window holding `now_ms`.
    fn window(self, now_ms: i64) -> (i64, i64) {
        let fixed = |len: i64| {
            let start = now_ms - now_ms.rem_euclid(len);
            (start, start + len)
        };
        let calendar = |start: chrono::DateTime<Utc>, end: chrono::DateTime<Utc>| {
            (start.timestamp_millis(), end.timestamp_millis())
        };
        let now = Utc.timestamp_millis_opt(now_ms).single().unwrap_or_default();
        let month_start = |y: i32, m: u32| Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or_default();
        match self {
            Period::Second => fixed(1_000),
            Period::Minute => fixed(60_000),
            Period::Hour => fixed(3_600_000),
            Period::Day => fixed(86_400_000),
            Period::Month => {
                let (y, m) = (now.year(), now.month());
                let next = if m == 12 { month_start(y + 1, 1) } else { month_start(y, m + 1) };
                calendar(month_start(y, m), next)
            }
            Period::Year => calendar(month_start(now.year(), 1), month_start(now.year() + 1, 1)),
        }
    }
}

fn consumer() -> String {
    "consumer".into()
}

fn local() -> String {
    "local".into()
}

fn yes() -> bool {
    true
}

fn too_many_requests() -> u16 {
    429
}

fn exceeded() -> String {
    "API rate limit exceeded".into()
}

fn synchronous() -> f64 {
    -1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    second: Option<f64>,
    minute: Option<f64>,
    hour: Option<f64>,
    day: Option<f64>,
    month: Option<f64>,
    year: Option<f64>,
    #[serde(default = "consumer")]
    limit_by: String,
    header_name: Option<String>,
    path: Option<String>,
    #[serde(default = "local")]
    policy: String,
    #[serde(default = "yes")]
    fault_tolerant: bool,
    #[serde(default)]
    hide_client_headers: bool,
    #[serde(default = "too_many_requests")]
    error_code: u16,
    #[serde(default = "exceeded")]
    error_message: String,
    #[serde(default = "synchronous")]
    sync_rate: f64,
    redis: Option<RedisConfig>,
    redis_host: Option<String>,
    redis_port: Option<u16>,
    redis_username: Option<String>,
    redis_password: Option<String>,
    redis_database: Option<i64>,
    redis_timeout: Option<u64>,
    redis_ssl: Option<bool>,
    redis_ssl_verify: Option<bool>,
    redis_server_name: Option<String>,
}

/// What requests are counted together.
enum LimitBy {
    Consumer,
    Credential,
    Ip,
    Service,
    Header(HeaderName),
    Path(String),
}

/// Where counters live.
enum Store {
    Local(Arc<LocalCounters>),
    Redis(Arc<RedisCounters>),
}

/// A compiled rate-limiting configuration.
pub(crate) struct RateLimiting {
    limits: Vec<(Period, u64)>,
    limit_by: LimitBy,
    /// `route_id:service_id` of the plugin, the start of every counter key.
    scope: String,
    store: Store,
    fault_tolerant: bool,
    hide_client_headers: bool,
    error_status: StatusCode,
    error_message: String,
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let given = [c.second, c.minute, c.hour, c.day, c.month, c.year];
    let mut limits = Vec::new();
    for ((period, name, ..), limit) in PERIODS.iter().zip(given) {
        let Some(limit) = limit else { continue };
        if limit <= 0.0 || limit.fract() != 0.0 {
            cx.error(name, "must be a whole number greater than 0");
            continue;
        }
        if let Some((shorter, lower)) = limits.iter().find(|(_, l)| (*l as f64) > limit) {
            let shorter: &Period = shorter;
            cx.error(
                name,
                format!(
                    "The limit for {name}({limit:.1}) cannot be lower than the limit for {}({:.1})",
                    shorter.name(),
                    *lower as f64
                ),
            );
        }
        limits.push((*period, limit as u64));
    }
    if limits.is_empty() {
        cx.error("second", "at least one of these fields must be non-empty: second, minute, hour, day, month, year");
    }
    let limit_by = match (c.limit_by.as_str(), &c.header_name, &c.path) {
        ("consumer", ..) => LimitBy::Consumer,
        ("credential", ..) => LimitBy::Credential,
        ("ip", ..) => LimitBy::Ip,
        ("service", ..) => LimitBy::Service,
        ("header", Some(h), _) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => LimitBy::Header(name),
            Err(_) => {
                cx.error("header_name", "must be a valid header name");
                return None;
            }
        },
        ("header", None, _) => {
            cx.error("header_name", "is required when limit_by is header");
            return None;
        }
        ("path", _, Some(p)) => LimitBy::Path(p.clone()),
        ("path", _, None) => {
            cx.error("path", "is required when limit_by is path");
            return None;
        }
        (other, ..) => {
            cx.error("limit_by", format!("'{other}' is not one of consumer, credential, ip, service, header, path"));
            return None;
        }
    };
    if c.sync_rate != -1.0 {
        cx.error("sync_rate", "only -1 (synchronous counting) is supported: Ward's counts are always exact");
    }
    let Ok(error_status) = StatusCode::from_u16(c.error_code) else {
        cx.error("error_code", "must be an HTTP status code");
        return None;
    };
    let store = match c.policy.as_str() {
        "local" => Store::Local(cx.shared.local_counters.clone()),
        "redis" => Store::Redis(redis_store(
            cx,
            c.redis,
            FlatRedis {
                host: c.redis_host,
                port: c.redis_port,
                username: c.redis_username,
                password: c.redis_password,
                database: c.redis_database,
                timeout: c.redis_timeout,
                ssl: c.redis_ssl,
                ssl_verify: c.redis_ssl_verify,
                server_name: c.redis_server_name,
            },
        )?),
        "cluster" => {
            cx.error("policy", "cluster needs Kong's database: use local or redis");
            return None;
        }
        other => {
            cx.error("policy", format!("'{other}' is not one of local, redis"));
            return None;
        }
    };
    let Scope { route_id, service_id } = cx.scope.clone();
    let scope =
        format!("{}:{}", route_id.as_deref().unwrap_or(EMPTY_UUID), service_id.as_deref().unwrap_or(EMPTY_UUID));
    Some(Plugin::RateLimiting(RateLimiting {
        limits,
        limit_by,
        scope,
        store,
        fault_tolerant: c.fault_tolerant,
        hide_client_headers: c.hide_client_headers,
        error_status,
        error_message: c.error_message,
    }))
}

/// One request's count in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    period: Period,
    limit: u64,
    /// Requests counted in the window: including this one when admitted, before it when not.
    count: u64,
}

/// The outcome of counting one request.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    usage: Vec<Usage>,
    /// The period whose limit refused the request.
    refused_by: Option<Period>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl RateLimiting {
    pub(super) async fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        let identifier = self.identifier(ex);
        let key = format!("{}:{identifier}", self.scope);
        let now = now_ms();
        let outcome = match &self.store {
            Store::Local(counters) => Ok(counters.hit(&key, &self.limits, now)),
            Store::Redis(redis) => redis.hit(&key, &self.limits, now).await,
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) if self.fault_tolerant => {
                tracing::warn!("rate-limiting lets the request through: Redis failed: {e}");
                return Ok(());
            }
            Err(e) => {
                tracing::error!("rate-limiting refuses the request: Redis failed: {e}");
                return Err(Reply::status(StatusCode::INTERNAL_SERVER_ERROR));
            }
        };
        let (headers, reset) = headers(&outcome, now);
        if outcome.refused_by.is_some() {
            let mut reply = Reply::error(self.error_status, &self.error_message);
            if !self.hide_client_headers {
                reply.headers.extend(headers);
                reply.headers.insert(http::header::RETRY_AFTER, HeaderValue::from(reset));
            }
            return Err(reply);
        }
        if !self.hide_client_headers {
            ex.response_headers.extend(headers);
        }
        Ok(())
    }

    /// Kong's identifier: what `limit_by` names, else the client's address.
    fn identifier(&self, ex: &Exchange<'_>) -> String {
        let found = match &self.limit_by {
            LimitBy::Consumer => ex.consumer.map(|c| ex.consumers.list[c].id.clone()).or_else(|| ex.credential.clone()),
            LimitBy::Credential => ex.credential.clone(),
            LimitBy::Ip => None,
            LimitBy::Service => ex.service.map(|s| s.id.clone()),
            LimitBy::Header(name) => ex.header(name).map(str::to_string),
            LimitBy::Path(path) => (ex.path == *path).then(|| path.clone()),
        };
        found.unwrap_or_else(|| ex.client_ip.to_canonical().to_string())
    }
}

/// The RateLimit-* and X-RateLimit-* headers, and the seconds until the deciding window resets.
fn headers(outcome: &Outcome, now: i64) -> (http::HeaderMap, u64) {
    let mut headers = http::HeaderMap::new();
    // The deciding period: least remaining, then the longest window.
    let mut deciding: Option<(u64, i64, u64, u64)> = None; // (remaining, window, limit, reset)
    for u in &outcome.usage {
        let refused_here = outcome.refused_by == Some(u.period);
        let remaining = u.limit.saturating_sub(u.count + u64::from(refused_here));
        let (start, end) = u.period.window(now);
        let window = end - start;
        let reset = (window / 1000 - (now - start) / 1000).max(1) as u64;
        if deciding.is_none_or(|(r, w, ..)| remaining < r || (remaining == r && window > w)) {
            deciding = Some((remaining, window, u.limit, reset));
        }
        let (_, _, limit_name, remaining_name) = PERIODS[u.period.index()];
        headers.insert(HeaderName::from_static(limit_name), HeaderValue::from(u.limit));
        headers.insert(HeaderName::from_static(remaining_name), HeaderValue::from(remaining));
    }
    let Some((remaining, _, limit, reset)) = deciding else { return (headers, 1) };
    headers.insert(HeaderName::from_static("ratelimit-limit"), HeaderValue::from(limit));
    headers.insert(HeaderName::from_static("ratelimit-remaining"), HeaderValue::from(remaining));
    headers.insert(HeaderName::from_static("ratelimit-reset"), HeaderValue::from(reset));
    (headers, reset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_utc() {
        let t = Utc.with_ymd_and_hms(2024, 12, 31, 23, 59, 30).unwrap().timestamp_millis() + 250;
        let table = [
            (Period::Second, t - 250, t + 750),
            (Period::Minute, t - 30_250, t + 29_750),
            (Period::Day, Utc.with_ymd_and_hms(2024, 12, 31, 0, 0, 0).unwrap().timestamp_millis(), t + 29_750),
            (Period::Month, Utc.with_ymd_and_hms(2024, 12, 1, 0, 0, 0).unwrap().timestamp_millis(), t + 29_750),
            (Period::Year, Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap().timestamp_millis(), t + 29_750),
        ];
        for (period, start, end) in table {
            assert_eq!(period.window(t), (start, end), "{period:?}");
        }
    }

    #[test]
    fn deciding_period_is_the_one_with_least_room() {
        let now = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000 + 10_500;
        let outcome = Outcome {
            usage: vec![
                Usage { period: Period::Second, limit: 10, count: 1 },
                Usage { period: Period::Minute, limit: 5, count: 5 },
                Usage { period: Period::Hour, limit: 100, count: 95 },
            ],
            refused_by: None,
        };
        let (h, reset) = headers(&outcome, now);
        assert_eq!(h["ratelimit-limit"], "5");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(reset, 50);
        assert_eq!(h["x-ratelimit-remaining-hour"], "5");
        assert_eq!(h["x-ratelimit-limit-second"], "10");
    }
}
