//! correlation-id: every request carries an ID in a header, the client's own when it sent one
//! (not blank), a generated one otherwise; the upstream gets it and, with `echo_downstream`,
//! so does the client, on every response including the gateway's own refusals.
//!
//! Generators, as Kong's: `uuid` (a random UUID per request), `uuid#counter` (one UUID per
//! process and a counter, `<uuid>#<n>`), `tracker` (`<server address>-<server port>-<pid>-
//! <connection serial>-<requests on the connection>-<unix time with milliseconds>`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue, header};
use serde::Deserialize;
use serde_json::Value;

use super::{Compile, Plugin};
use crate::exchange::{Exchange, consumer_headers};

fn kong_request_id() -> String {
    "Kong-Request-ID".into()
}

fn uuid_counter() -> String {
    "uuid#counter".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "kong_request_id")]
    header_name: String,
    #[serde(default = "uuid_counter")]
    generator: String,
    #[serde(default)]
    echo_downstream: bool,
}

/// The process's `uuid#counter` IDs: one UUID, and how many IDs it has given so far. It
/// outlives configurations, as Kong's per-worker counter does.
#[derive(Debug)]
pub(crate) struct Counter {
    uuid: String,
    given: AtomicU64,
}

impl Default for Counter {
    fn default() -> Self {
        Counter { uuid: uuid::Uuid::new_v4().to_string(), given: AtomicU64::new(0) }
    }
}

/// How IDs are made.
#[derive(Debug)]
enum Generator {
    Uuid,
    UuidCounter(std::sync::Arc<Counter>),
    Tracker,
}

/// Headers that frame, route or authenticate a request: an ID written into one of them would
/// change what the request is.
const NOT_AN_ID: [HeaderName; 5] =
    [header::HOST, header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION, header::AUTHORIZATION];

/// A compiled correlation-id configuration.
#[derive(Debug)]
pub(crate) struct CorrelationId {
    header: HeaderName,
    generator: Generator,
    echo_downstream: bool,
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let generator = match c.generator.as_str() {
        "uuid" => Generator::Uuid,
        "uuid#counter" => Generator::UuidCounter(cx.shared.request_ids.clone()),
        "tracker" => Generator::Tracker,
        _ => {
            cx.error("generator", "must be one of uuid, uuid#counter, tracker");
            return None;
        }
    };
    let header = match HeaderName::from_bytes(c.header_name.as_bytes()) {
        Ok(name) if NOT_AN_ID.contains(&name) || consumer_headers::ALL.contains(&name) => {
            cx.error("header_name", format!("'{}' is a header the gateway or the upstream relies on", c.header_name));
            return None;
        }
        Ok(name) => name,
        Err(_) => {
            cx.error("header_name", format!("'{}' is not a valid header name", c.header_name));
            return None;
        }
    };
    Some(Plugin::CorrelationId(CorrelationId { header, generator, echo_downstream: c.echo_downstream }))
}

impl CorrelationId {
    pub(super) fn access(&self, ex: &mut Exchange<'_>) {
        let sent = ex.headers.get(&self.header).filter(|v| !v.as_bytes().trim_ascii().is_empty()).cloned();
        let id = match sent {
            Some(id) => id,
            None => {
                let id = HeaderValue::from_str(&self.generate(ex)).expect("generated IDs are visible ASCII");
                ex.headers.insert(self.header.clone(), id.clone());
                id
            }
        };
        if self.echo_downstream {
            ex.response_headers.insert(self.header.clone(), id);
        }
    }

    fn generate(&self, ex: &Exchange<'_>) -> String {
        match &self.generator {
            Generator::Uuid => uuid::Uuid::new_v4().to_string(),
            Generator::UuidCounter(counter) => {
                format!("{}#{}", counter.uuid, counter.given.fetch_add(1, Ordering::Relaxed) + 1)
            }
            Generator::Tracker => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                format!(
                    "{}-{}-{}-{}-{}-{}.{:03}",
                    ex.conn.local.ip().to_canonical(),
                    ex.conn.local.port(),
                    std::process::id(),
                    ex.conn.serial,
                    ex.conn.requests.load(Ordering::Relaxed),
                    now.as_secs(),
                    now.subsec_millis()
                )
            }
        }
    }
}
