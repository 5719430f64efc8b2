//! Counters of the `redis` policy: in a Redis shared by every gateway process, checked and
//! counted in one Lua script, through one multiplexed connection per Redis; and the
//! `config.redis` (or older flat `redis_*`) settings that name it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::Deserialize;

use super::{Outcome, Period, Usage};
use crate::plugins::Compile;

fn redis_port() -> u16 {
    6379
}

fn two_seconds() -> u64 {
    2000
}

/// `config.redis` (Kong 3.6 and later); the flat `redis_*` fields are its older spelling.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedisConfig {
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

/// The older flat `redis_*` fields.
pub(super) struct FlatRedis {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: Option<i64>,
    pub timeout: Option<u64>,
    pub ssl: Option<bool>,
    pub ssl_verify: Option<bool>,
    pub server_name: Option<String>,
}

pub(super) fn redis_store(
    cx: &mut Compile<'_>,
    nested: Option<RedisConfig>,
    flat: FlatRedis,
) -> Option<Arc<RedisCounters>> {
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

    /// Counts one request for `key` unless that would exceed a limit.
    pub(super) async fn hit(&self, key: &str, limits: &[(Period, u64)], now: i64) -> Result<Outcome, RedisFailure> {
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
}
