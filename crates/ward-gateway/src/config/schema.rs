//! The entities of Kong's declarative format 3.0 as they are written, before references
//! are resolved. Every struct refuses fields it does not know, so nothing is ignored.
//! Absent and `null` fields take Kong's defaults. Fields whose Rust names start with `_`
//! (tags, timestamps, tuning that has no effect in Ward) are accepted so that exported
//! files load, and are otherwise unused.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A reference to another entity: its name (or username) or id, or `{id: ...}` / `{name: ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Reference {
    /// `service: my-service`.
    Key(String),
    /// `service: {id: ...}` or `{name: ...}` or `{username: ...}`.
    Object {
        /// The referenced entity's id.
        id: Option<String>,
        /// The referenced entity's name.
        name: Option<String>,
        /// The referenced consumer's username.
        username: Option<String>,
    },
}

impl Reference {
    /// The name, username or id this reference uses.
    pub fn key(&self) -> Option<&str> {
        match self {
            Reference::Key(k) => Some(k),
            Reference::Object { id, name, username } => id.as_deref().or(name.as_deref()).or(username.as_deref()),
        }
    }
}

fn yes() -> bool {
    true
}

fn kong_timeout() -> u64 {
    60_000
}

fn five() -> u32 {
    5
}

/// `services[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub id: Option<String>,
    pub name: Option<String>,
    /// Shorthand for protocol, host, port and path.
    pub url: Option<String>,
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub port: Option<u32>,
    pub path: Option<String>,
    #[serde(default = "five")]
    pub retries: u32,
    #[serde(default = "kong_timeout")]
    pub connect_timeout: u64,
    #[serde(default = "kong_timeout")]
    pub write_timeout: u64,
    #[serde(default = "kong_timeout")]
    pub read_timeout: u64,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub tls_verify: Option<bool>,
    #[serde(default)]
    pub ca_certificates: Vec<String>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
    #[serde(rename = "updated_at")]
    _updated_at: Option<i64>,
}

fn http_and_https() -> Vec<String> {
    vec!["http".into(), "https".into()]
}

fn upgrade_required() -> u16 {
    426
}

/// `routes[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(default = "http_and_https")]
    pub protocols: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub snis: Vec<String>,
    #[serde(default = "upgrade_required")]
    pub https_redirect_status_code: u16,
    #[serde(default)]
    pub regex_priority: i64,
    #[serde(default = "yes")]
    pub strip_path: bool,
    pub path_handling: Option<String>,
    #[serde(default)]
    pub preserve_host: bool,
    /// Ward streams bodies either way.
    #[serde(rename = "request_buffering")]
    _request_buffering: Option<bool>,
    /// Ward streams bodies either way.
    #[serde(rename = "response_buffering")]
    _response_buffering: Option<bool>,
    pub service: Option<Reference>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
    #[serde(rename = "updated_at")]
    _updated_at: Option<i64>,
}

/// `consumers[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    pub id: Option<String>,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
    #[serde(rename = "updated_at")]
    _updated_at: Option<i64>,
}

/// `keyauth_credentials[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthCredential {
    pub id: Option<String>,
    pub key: Option<String>,
    pub consumer: Option<Reference>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
}

/// `basicauth_credentials[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthCredential {
    pub id: Option<String>,
    pub username: String,
    pub password: String,
    pub consumer: Option<Reference>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
}

/// `hmacauth_credentials[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacAuthCredential {
    pub id: Option<String>,
    pub username: String,
    /// Made up (random) when absent, as Kong does.
    pub secret: Option<String>,
    pub consumer: Option<Reference>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
}

/// `jwt_secrets[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSecret {
    pub id: Option<String>,
    pub key: Option<String>,
    pub secret: Option<String>,
    pub algorithm: Option<String>,
    pub rsa_public_key: Option<String>,
    pub consumer: Option<Reference>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
}

/// `acls[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    pub id: Option<String>,
    pub group: String,
    pub consumer: Option<Reference>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// `plugins[]`; `config` is checked by the plugin named.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    pub id: Option<String>,
    pub name: String,
    pub instance_name: Option<String>,
    #[serde(default = "empty_object")]
    pub config: Value,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub protocols: Option<Vec<String>>,
    pub route: Option<Reference>,
    pub service: Option<Reference>,
    pub consumer: Option<Reference>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
    #[serde(rename = "updated_at")]
    _updated_at: Option<i64>,
}

/// `certificates[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub id: Option<String>,
    pub cert: String,
    pub key: String,
    pub cert_alt: Option<String>,
    pub key_alt: Option<String>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
}

/// `snis[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sni {
    pub id: Option<String>,
    pub name: String,
    pub certificate: Option<Reference>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
}

/// `ca_certificates[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaCertificate {
    pub id: Option<String>,
    pub cert: String,
    #[serde(rename = "cert_digest")]
    _cert_digest: Option<String>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
}

fn round_robin() -> String {
    "round-robin".into()
}

fn none() -> String {
    "none".into()
}

fn ten_thousand() -> u32 {
    10_000
}

/// `upstreams[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub id: Option<String>,
    pub name: String,
    #[serde(default = "round_robin")]
    pub algorithm: String,
    #[serde(default = "none")]
    pub hash_on: String,
    #[serde(default = "none")]
    pub hash_fallback: String,
    pub hash_on_header: Option<String>,
    pub hash_fallback_header: Option<String>,
    pub hash_on_cookie: Option<String>,
    #[serde(rename = "hash_on_cookie_path")]
    _hash_on_cookie_path: Option<String>,
    pub hash_on_query_arg: Option<String>,
    pub hash_fallback_query_arg: Option<String>,
    pub hash_on_uri_capture: Option<String>,
    pub hash_fallback_uri_capture: Option<String>,
    #[serde(default = "ten_thousand")]
    pub slots: u32,
    #[serde(default)]
    pub healthchecks: Healthchecks,
    pub host_header: Option<String>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<i64>,
}

fn hundred() -> u32 {
    100
}

/// `targets[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub id: Option<String>,
    pub target: String,
    #[serde(default = "hundred")]
    pub weight: u32,
    pub upstream: Option<Reference>,
    #[serde(default)]
    #[serde(rename = "tags")]
    _tags: Vec<String>,
    #[serde(rename = "created_at")]
    _created_at: Option<f64>,
}

/// `upstreams[].healthchecks`, with Kong's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthchecks {
    #[serde(default)]
    pub active: ActiveChecks,
    #[serde(default)]
    pub passive: PassiveChecks,
    /// Percentage of healthy weight below which the whole upstream counts as down.
    #[serde(default)]
    pub threshold: f64,
}

fn http() -> String {
    "http".into()
}

fn one() -> f64 {
    1.0
}

fn ten() -> u32 {
    10
}

fn root() -> String {
    "/".into()
}

/// `healthchecks.active`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveChecks {
    #[serde(rename = "type", default = "http")]
    pub kind: String,
    /// Seconds.
    #[serde(default = "one")]
    pub timeout: f64,
    /// Ward probes every target on its own schedule.
    #[serde(default = "ten", rename = "concurrency")]
    _concurrency: u32,
    #[serde(default = "root")]
    pub http_path: String,
    #[serde(default = "yes")]
    pub https_verify_certificate: bool,
    pub https_sni: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub healthy: ActiveHealthy,
    #[serde(default)]
    pub unhealthy: ActiveUnhealthy,
}

impl Default for ActiveChecks {
    fn default() -> Self {
        serde_json::from_value(empty_object()).expect("defaults")
    }
}

/// `healthchecks.passive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveChecks {
    #[serde(rename = "type", default = "http")]
    pub kind: String,
    #[serde(default)]
    pub healthy: PassiveHealthy,
    #[serde(default)]
    pub unhealthy: PassiveUnhealthy,
}

impl Default for PassiveChecks {
    fn default() -> Self {
        serde_json::from_value(empty_object()).expect("defaults")
    }
}

fn active_healthy_statuses() -> Vec<u16> {
    vec![200, 302]
}

fn active_unhealthy_statuses() -> Vec<u16> {
    vec![429, 404, 500, 501, 502, 503, 504, 505]
}

fn passive_healthy_statuses() -> Vec<u16> {
    vec![200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 306, 307, 308]
}

fn passive_unhealthy_statuses() -> Vec<u16> {
    vec![429, 500, 503]
}

/// `healthchecks.active.healthy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthy {
    /// Seconds between probes of a healthy target; 0 disables them.
    #[serde(default)]
    pub interval: f64,
    #[serde(default = "active_healthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default)]
    pub successes: u32,
}

impl Default for ActiveHealthy {
    fn default() -> Self {
        serde_json::from_value(empty_object()).expect("defaults")
    }
}

/// `healthchecks.active.unhealthy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveUnhealthy {
    /// Seconds between probes of an unhealthy target; 0 disables them.
    #[serde(default)]
    pub interval: f64,
    #[serde(default = "active_unhealthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default)]
    pub tcp_failures: u32,
    #[serde(default)]
    pub timeouts: u32,
    #[serde(default)]
    pub http_failures: u32,
}

impl Default for ActiveUnhealthy {
    fn default() -> Self {
        serde_json::from_value(empty_object()).expect("defaults")
    }
}

/// `healthchecks.passive.healthy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthy {
    #[serde(default = "passive_healthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default)]
    pub successes: u32,
}

impl Default for PassiveHealthy {
    fn default() -> Self {
        serde_json::from_value(empty_object()).expect("defaults")
    }
}

/// `healthchecks.passive.unhealthy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveUnhealthy {
    #[serde(default = "passive_unhealthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default)]
    pub tcp_failures: u32,
    #[serde(default)]
    pub timeouts: u32,
    #[serde(default)]
    pub http_failures: u32,
}

impl Default for PassiveUnhealthy {
    fn default() -> Self {
        serde_json::from_value(empty_object()).expect("defaults")
    }
}
