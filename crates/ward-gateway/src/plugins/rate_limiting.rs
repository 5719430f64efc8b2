//! rate-limiting: at most N requests per second, minute, hour, day, month or year.
//!
//! Counting is exact under concurrency, unlike Kong's (issue #2629), because the check
//! and the increment are one atomic step: with the `local` policy under a lock per
//! counter shard, with `redis` in one Lua script. A request that would exceed any limit
//! increments nothing, so the admitted count never exceeds the limit, even with many
//! gateway processes sharing one Redis.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use http::{HeaderName, HeaderValue, StatusCode};
use redis::IntoConnectionInfo;
use serde::Deserialize;
use serde_json::Value;

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

fn redis_port() -> u16 {
    6379
}

fn two_seconds() -> u64 {
    2000
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

/// `config.redis` (Kong 3.6 and later); the flat `redis_*` fields are its older spelling.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisConfig {
    host: Option<String>,
    #[serde(default = "redis_port")]
    port: u16,
    username: Option<String>,
    password: Option<String>,
    #[serde(default)]
    database: i64,
    #[serde(default = "two_seconds")]
    timeout: u64,
    connect_timeout: Option<u64>,
    send_timeout: Option<u64>,
    read_timeout: Option<u64>,
    #[serde(default)]
    ssl: bool,
    #[serde(default)]
    ssl_verify: bool,
    server_name: Option<String>,
    /// Accepted for compatibility: Ward multiplexes one connection per Redis.
    #[serde(rename = "keepalive_pool_size")]
    _keepalive_pool_size: Option<u64>,
    /// Accepted for compatibility: Ward multiplexes one connection per Redis.
    #[serde(rename = "keepalive_backlog")]
    _keepalive_backlog: Option<u64>,
}

impl Default for RedisConfig {
    /// Kong's defaults, as for an empty `redis: {}`.
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
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

/// The older flat `redis_*` fields.
struct FlatRedis {
    host: Option<String>,
    port: Option<u16>,
    username: Option<String>,
    password: Option<String>,
    database: Option<i64>,
    timeout: Option<u64>,
    ssl: Option<bool>,
    ssl_verify: Option<bool>,
    server_name: Option<String>,
}

fn redis_store(cx: &mut Compile<'_>, nested: Option<RedisConfig>, flat: FlatRedis) -> Option<Arc<RedisCounters>> {
    let mut r = nested.unwrap_or_default();
    if r.host.is_none() {
        r.host = flat.host;
    }
    r.port = flat.port.unwrap_or(r.port);
    r.username = r.username.or(flat.username);
    r.password = r.password.or(flat.password);
    r.database = flat.database.unwrap_or(r.database);
    r.timeout = flat.timeout.unwrap_or(r.timeout);
    r.ssl |= flat.ssl.unwrap_or(false) || flat.ssl_verify.unwrap_or(false) || flat.server_name.is_some();
    if r.ssl || r.ssl_verify || r.server_name.is_some() {
        cx.error("redis.ssl", "TLS to Redis is not supported yet");
        return None;
    }
    let Some(host) = r.host.filter(|h| !h.is_empty()) else {
        cx.error("redis.host", "is required when policy is redis");
        return None;
    };
    let timeout = Duration::from_millis(r.timeout.max(1));
    let target = RedisTarget {
        host,
        port: r.port,
        username: r.username,
        password: r.password,
        database: r.database,
        connect_timeout: r.connect_timeout.map(Duration::from_millis).unwrap_or(timeout),
        response_timeout: r.read_timeout.or(r.send_timeout).map(Duration::from_millis).unwrap_or(timeout),
    };
    match cx.shared.redis.get(target) {
        Ok(counters) => Some(counters),
        Err(e) => {
            cx.error("redis", format!("invalid Redis address: {e}"));
            None
        }
    }
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

/// One counter's windows, by period: (window start in ms, requests counted).
type Windows = [(i64, u64); 6];

/// Counters in this process, shared by every configuration (a reload keeps the counts).
#[derive(Debug)]
pub(crate) struct LocalCounters {
    shards: Vec<Mutex<HashMap<String, Windows>>>,
}

/// Entries a shard holds before expired ones are dropped.
const SHARD_SWEEP_AT: usize = 4096;

impl Default for LocalCounters {
    fn default() -> Self {
        LocalCounters { shards: (0..64).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

impl LocalCounters {
    /// Counts one request for `key` unless that would exceed a limit.
    fn hit(&self, key: &str, limits: &[(Period, u64)], now: i64) -> Outcome {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let shard = &self.shards[hasher.finish() as usize % self.shards.len()];
        let mut map = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= SHARD_SWEEP_AT && !map.contains_key(key) {
            map.retain(|_, windows| {
                windows
                    .iter()
                    .zip(PERIODS)
                    .any(|((start, count), (period, ..))| *count > 0 && period.window(*start).1 > now)
            });
        }
        if !map.contains_key(key) {
            map.insert(key.to_string(), [(0, 0); 6]);
        }
        let windows = map.get_mut(key).expect("inserted above");
        let mut usage = Vec::with_capacity(limits.len());
        let mut refused_by = None;
        for &(period, limit) in limits {
            let slot = &mut windows[period.index()];
            let (start, _) = period.window(now);
            if slot.0 != start {
                *slot = (start, 0);
            }
            if refused_by.is_none() && slot.1 + 1 > limit {
                refused_by = Some(period);
            }
            usage.push(Usage { period, limit, count: slot.1 });
        }
        if refused_by.is_none() {
            for u in &mut usage {
                windows[u.period.index()].1 += 1;
                u.count += 1;
            }
        }
        Outcome { usage, refused_by }
    }
}

/// Where a Redis is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RedisTarget {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    database: i64,
    connect_timeout: Duration,
    response_timeout: Duration,
}

/// Counters in one Redis, through one multiplexed connection made on first use and made
/// again after a failure.
pub(crate) struct RedisCounters {
    client: redis::Client,
    target: RedisTarget,
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

/// Checks every period's counter and, only if all have room, increments them all.
/// KEYS: one counter per period; ARGV: the limits, then each key's time to live (ms).
/// Returns {refusing period (1-based, 0 if admitted), count per period}.
const HIT_SCRIPT: &str = r"
local n = #KEYS
local counts = {}
for i = 1, n do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
end
for i = 1, n do
  if counts[i] + 1 > tonumber(ARGV[i]) then
    table.insert(counts, 1, i)
    return counts
  end
end
for i = 1, n do
  counts[i] = redis.call('INCR', KEYS[i])
  if counts[i] == 1 then
    redis.call('PEXPIRE', KEYS[i], ARGV[n + i])
  end
end
table.insert(counts, 1, 0)
return counts
";

/// The script with its digest computed once (it is sent by digest, and loaded when missing).
static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(HIT_SCRIPT));

/// Why a Redis could not count a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisFailure {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply {0:?}")]
    Reply(Vec<i64>),
}

impl RedisCounters {
    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, RedisFailure> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.target.connect_timeout))
            .set_response_timeout(Some(self.target.response_timeout));
        let c = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn hit(&self, key: &str, limits: &[(Period, u64)], now: i64) -> Result<Outcome, RedisFailure> {
        let deadline = self.target.connect_timeout + self.target.response_timeout;
        let result = tokio::time::timeout(deadline, self.run_script(key, limits, now)).await;
        let result = result.unwrap_or(Err(RedisFailure::Timeout(deadline)));
        if result.is_err() {
            // Connect again next time.
            *self.connection.lock().await = None;
        }
        result
    }

    async fn run_script(&self, key: &str, limits: &[(Period, u64)], now: i64) -> Result<Outcome, RedisFailure> {
        let mut connection = self.connection().await?;
        let mut invocation = SCRIPT.prepare_invoke();
        for (period, _) in limits {
            let (start, _) = period.window(now);
            invocation.key(format!("ratelimit:{key}:{start}:{}", period.name()));
        }
        for (_, limit) in limits {
            invocation.arg(*limit);
        }
        for (period, _) in limits {
            let (_, end) = period.window(now);
            invocation.arg((end - now).max(1));
        }
        let reply: Vec<i64> = invocation.invoke_async(&mut connection).await?;
        outcome(reply, limits)
    }
}

/// The outcome the script's reply says: {refusing period (1-based, 0 if admitted), count
/// per period}; anything else is a failure (a Redis that is not ours answers anything).
fn outcome(reply: Vec<i64>, limits: &[(Period, u64)]) -> Result<Outcome, RedisFailure> {
    let [refusing, counts @ ..] = reply.as_slice() else { return Err(RedisFailure::Reply(reply)) };
    let refused_by = match usize::try_from(*refusing) {
        Ok(0) => None,
        Ok(i) => limits.get(i - 1).map(|(period, _)| *period),
        Err(_) => None,
    };
    if counts.len() != limits.len() || (*refusing != 0 && refused_by.is_none()) {
        return Err(RedisFailure::Reply(reply));
    }
    let usage = limits
        .iter()
        .zip(counts)
        .map(|(&(period, limit), &count)| Usage { period, limit, count: count.max(0) as u64 })
        .collect();
    Ok(Outcome { usage, refused_by })
}

/// Redis connections by target, shared by every configuration so a reload reuses them.
#[derive(Default)]
pub(crate) struct RedisClients {
    by_target: Mutex<HashMap<RedisTarget, Arc<RedisCounters>>>,
}

impl RedisClients {
    fn get(&self, target: RedisTarget) -> Result<Arc<RedisCounters>, redis::RedisError> {
        let mut map = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&target) {
            return Ok(c.clone());
        }
        let mut settings = redis::RedisConnectionInfo::default().set_db(target.database);
        if let Some(u) = &target.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &target.password {
            settings = settings.set_password(p);
        }
        let info = redis::ConnectionAddr::Tcp(target.host.clone(), target.port)
            .into_connection_info()?
            .set_redis_settings(settings);
        let client = redis::Client::open(info)?;
        let counters = Arc::new(RedisCounters { client, target: target.clone(), connection: Default::default() });
        map.insert(target, counters.clone());
        Ok(counters)
    }
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
    fn local_counts_never_exceed_and_report_remaining() {
        let counters = LocalCounters::default();
        let limits = [(Period::Minute, 6), (Period::Hour, 100)];
        let now = 1_700_000_000_000;
        let mut remaining = Vec::new();
        for _ in 0..7 {
            let outcome = counters.hit("k", &limits, now);
            let (h, _) = headers(&outcome, now);
            remaining.push((outcome.refused_by, h["ratelimit-remaining"].to_str().unwrap().to_string()));
        }
        let want: Vec<(Option<Period>, String)> = ["5", "4", "3", "2", "1", "0"]
            .iter()
            .map(|r| (None, r.to_string()))
            .chain([(Some(Period::Minute), "0".to_string())])
            .collect();
        assert_eq!(remaining, want);
        // The refused request counted nowhere: the hour still shows six.
        let outcome = counters.hit("k", &limits, now);
        assert_eq!(outcome.usage[1].count, 6);
        // A new minute starts afresh.
        assert_eq!(counters.hit("k", &limits, now + 60_000).usage[0].count, 1);
    }

    #[test]
    fn local_counts_are_exact_across_threads() {
        let counters = Arc::new(LocalCounters::default());
        let admitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let now = 1_700_000_000_000;
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, a) = (counters.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if c.hit("shared", &[(Period::Hour, 1000)], now).refused_by.is_none() {
                            a.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(std::sync::atomic::Ordering::Relaxed), 1000);
    }

    #[test]
    fn redis_replies_are_read_without_trusting_them() {
        let limits = [(Period::Minute, 6), (Period::Hour, 100)];
        let usage = |minute, hour| {
            vec![
                Usage { period: Period::Minute, limit: 6, count: minute },
                Usage { period: Period::Hour, limit: 100, count: hour },
            ]
        };
        let table: &[(&[i64], Option<Outcome>)] = &[
            (&[0, 3, 40], Some(Outcome { usage: usage(3, 40), refused_by: None })),
            (&[1, 6, 40], Some(Outcome { usage: usage(6, 40), refused_by: Some(Period::Minute) })),
            (&[2, 5, 100], Some(Outcome { usage: usage(5, 100), refused_by: Some(Period::Hour) })),
            (&[3, 5, 100], None),
            (&[i64::MAX, 5, 100], None),
            (&[-1, 5, 100], None),
            (&[0, 5], None),
            (&[], None),
        ];
        for (reply, want) in table {
            assert_eq!(outcome(reply.to_vec(), &limits).ok(), *want, "{reply:?}");
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
