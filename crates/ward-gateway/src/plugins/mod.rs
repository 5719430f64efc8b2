//! Kong's plugins: configuration, execution order (PRIORITY) and scoping precedence.
//!
//! Each plugin entity is compiled once per configuration. For every route a chain is
//! built with one slot per plugin name, in descending priority; a slot holds the most
//! specific configuration without consumer and, per consumer, the most specific
//! consumer-scoped one. Kong's precedence decides between them: consumer+route+service,
//! consumer+route, consumer+service, route+service, consumer, route, service, global.
//! Authentication plugins run first, so a consumer-scoped configuration applies as soon as
//! a consumer is known.

pub(crate) mod acl;
pub(crate) mod basic_auth;
pub(crate) mod bot_detection;
pub(crate) mod correlation_id;
pub(crate) mod cors;
pub(crate) mod hmac_auth;
pub(crate) mod ip_restriction;
pub(crate) mod jwt;
pub(crate) mod key_auth;
pub(crate) mod logs;
pub(crate) mod mtls_auth;
pub(crate) mod openid_connect;
pub(crate) mod prometheus;
pub(crate) mod rate_limiting;
pub(crate) mod request_size_limiting;
pub(crate) mod request_termination;
pub(crate) mod request_transformer;
pub(crate) mod response_transformer;
pub(crate) mod session;
pub(crate) mod transformer;

use std::collections::HashMap;
use std::sync::Arc;

use http::Response;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::Declaration;
use crate::consumers::Consumers;
use crate::error::ConfigErrors;
use crate::exchange::Exchange;
use crate::reply::{Body, Reply};
use crate::runtime::Shared;
use crate::tls::CaStore;

/// A compiled plugin configuration.
pub(crate) enum Plugin {
    CorrelationId(correlation_id::CorrelationId),
    BotDetection(bot_detection::BotDetection),
    Cors(cors::Cors),
    MtlsAuth(mtls_auth::MtlsAuth),
    Jwt(jwt::Jwt),
    KeyAuth(key_auth::KeyAuth),
    BasicAuth(basic_auth::BasicAuth),
    HmacAuth(hmac_auth::HmacAuth),
    /// Boxed: it is much larger than the others.
    OpenidConnect(Box<openid_connect::OpenidConnect>),
    IpRestriction(ip_restriction::IpRestriction),
    RequestSizeLimiting(request_size_limiting::RequestSizeLimiting),
    Acl(acl::Acl),
    RateLimiting(rate_limiting::RateLimiting),
    RequestTransformer(request_transformer::RequestTransformer),
    ResponseTransformer(response_transformer::ResponseTransformer),
    Prometheus(prometheus::Prometheus),
    RequestTermination(request_termination::RequestTermination),
    Session(session::Session),
    /// file-log, http-log or tcp-log.
    Log(logs::Log),
}

/// The most of a body a plugin reads into memory (key-auth and hmac-auth reading a body,
/// request-transformer and response-transformer rewriting one).
pub(crate) const BODY_LIMIT: usize = 8 << 20;

impl Plugin {
    async fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        match self {
            Plugin::CorrelationId(p) => {
                p.access(ex);
                Ok(())
            }
            Plugin::BotDetection(p) => p.access(ex),
            Plugin::Cors(p) => p.access(ex),
            Plugin::MtlsAuth(p) => p.access(ex),
            Plugin::Jwt(p) => p.access(ex),
            Plugin::KeyAuth(p) => p.access(ex).await,
            Plugin::BasicAuth(p) => p.access(ex),
            Plugin::HmacAuth(p) => p.access(ex).await,
            Plugin::OpenidConnect(p) => p.access(ex).await,
            Plugin::IpRestriction(p) => p.access(ex),
            Plugin::RequestSizeLimiting(p) => p.access(ex).await,
            Plugin::Acl(p) => p.access(ex),
            Plugin::RateLimiting(p) => p.access(ex).await,
            Plugin::RequestTransformer(p) => p.access(ex).await,
            Plugin::ResponseTransformer(_) | Plugin::Prometheus(_) | Plugin::Log(_) => Ok(()),
            Plugin::RequestTermination(p) => p.access(ex).await,
            Plugin::Session(p) => p.access(ex).await,
        }
    }

    /// Whether the plugin acts on the response too (prometheus records it).
    fn responds(&self) -> bool {
        matches!(self, Plugin::ResponseTransformer(_) | Plugin::Session(_) | Plugin::Prometheus(_) | Plugin::Log(_))
    }
}

/// The ids of the route and service a plugin is attached to (Kong keys counters by them).
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    pub route_id: Option<String>,
    pub service_id: Option<String>,
}

/// What compiling one plugin configuration may use.
pub(crate) struct Compile<'a> {
    /// Path of the plugin's `config`, e.g. `plugins[2].config`.
    pub path: String,
    pub errors: &'a mut ConfigErrors,
    pub consumers: &'a Consumers,
    pub ca_certificates: &'a CaStore,
    pub shared: &'a Shared,
    pub scope: Scope,
}

impl Compile<'_> {
    /// Reads the configuration as `T`, refusing unknown fields.
    pub fn config<T: DeserializeOwned>(&mut self, value: Value) -> Option<T> {
        crate::config::typed(value, &self.path, self.errors)
    }

    /// Records that `field` of the configuration is wrong.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.add(format!("{}.{field}", self.path), message);
    }

    /// Resolves `anonymous` (a consumer id or username) to a consumer.
    pub fn anonymous(&mut self, anonymous: Option<&str>) -> Option<usize> {
        let name = anonymous.filter(|a| !a.is_empty())?;
        let found = self.consumers.find(name);
        if found.is_none() {
            self.error("anonymous", format!("no consumer has the id or username '{name}'"));
        }
        found
    }
}

/// One kind of plugin: its name, Kong's PRIORITY, whether it may be scoped to a consumer,
/// and how to compile its configuration.
struct Kind {
    name: &'static str,
    priority: u32,
    consumer_scoped: bool,
    compile: fn(&mut Compile<'_>, Value) -> Option<Plugin>,
}

/// Every plugin Ward has, as Kong orders them.
const KINDS: [Kind; 21] = [
    Kind { name: "correlation-id", priority: 100_001, consumer_scoped: false, compile: correlation_id::compile },
    Kind { name: "bot-detection", priority: 2500, consumer_scoped: false, compile: bot_detection::compile },
    Kind { name: "cors", priority: 2000, consumer_scoped: false, compile: cors::compile },
    Kind { name: "session", priority: 1900, consumer_scoped: false, compile: session::compile },
    Kind { name: "mtls-auth", priority: 1600, consumer_scoped: false, compile: mtls_auth::compile },
    Kind { name: "jwt", priority: 1450, consumer_scoped: false, compile: jwt::compile },
    Kind { name: "key-auth", priority: 1250, consumer_scoped: false, compile: key_auth::compile },
    Kind { name: "basic-auth", priority: 1100, consumer_scoped: false, compile: basic_auth::compile },
    Kind { name: "openid-connect", priority: 1050, consumer_scoped: false, compile: openid_connect::compile },
    Kind { name: "hmac-auth", priority: 1030, consumer_scoped: false, compile: hmac_auth::compile },
    Kind { name: "ip-restriction", priority: 990, consumer_scoped: true, compile: ip_restriction::compile },
    Kind {
        name: "request-size-limiting",
        priority: 951,
        consumer_scoped: true,
        compile: request_size_limiting::compile,
    },
    Kind { name: "acl", priority: 950, consumer_scoped: false, compile: acl::compile },
    Kind { name: "rate-limiting", priority: 910, consumer_scoped: true, compile: rate_limiting::compile },
    Kind { name: "request-transformer", priority: 801, consumer_scoped: true, compile: request_transformer::compile },
    Kind { name: "response-transformer", priority: 800, consumer_scoped: true, compile: response_transformer::compile },
    Kind { name: "prometheus", priority: 13, consumer_scoped: true, compile: prometheus::compile },
    Kind { name: "http-log", priority: 12, consumer_scoped: true, compile: logs::compile_http },
    Kind { name: "file-log", priority: 9, consumer_scoped: true, compile: logs::compile_file },
    Kind { name: "tcp-log", priority: 7, consumer_scoped: true, compile: logs::compile_tcp },
    Kind { name: "request-termination", priority: 2, consumer_scoped: true, compile: request_termination::compile },
];

/// A compiled plugin with the protocols it runs on.
pub(crate) struct Instance {
    plugin: Plugin,
    http: bool,
    https: bool,
}

/// A plugin entity after compiling: its kind, what it is attached to, and the plugin.
struct Attached {
    kind: usize,
    route: Option<usize>,
    service: Option<usize>,
    consumer: Option<usize>,
    instance: Arc<Instance>,
}

/// Every enabled plugin of a configuration.
pub(crate) struct Plugins {
    attached: Vec<Attached>,
    /// Whether any mtls-auth plugin is configured (then every TLS handshake asks for a client certificate).
    pub wants_client_certificates: bool,
    /// Whether any prometheus plugin is configured (then `/metrics` has the per-request metrics).
    pub prometheus: bool,
    /// Whether any prometheus plugin asks for `kong_upstream_target_health` (Kong: a node-wide switch).
    pub upstream_health_metrics: bool,
}

/// Compiles every plugin entity; problems go to `errors` under the plugin's path.
pub(crate) fn compile_all(
    decl: &Declaration,
    consumers: &Consumers,
    ca_certificates: &CaStore,
    shared: &Shared,
    errors: &mut ConfigErrors,
) -> Plugins {
    let mut attached = Vec::new();
    // (kind, route, service, consumer) -> where that plugin was written.
    let mut seen: HashMap<(usize, [Option<usize>; 3]), &str> = HashMap::new();
    for e in &decl.plugins {
        let Some(kind) = KINDS.iter().position(|k| k.name == e.item.name) else {
            let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
            errors.add(
                format!("{}.name", e.path),
                format!("plugin '{}' is not supported ({})", e.item.name, names.join(", ")),
            );
            continue;
        };
        let links = e.links;
        if links.consumer.is_some() && !KINDS[kind].consumer_scoped {
            errors.add(
                format!("{}.consumer", e.path),
                format!("the {} plugin cannot be scoped to a consumer", e.item.name),
            );
        }
        if let Some(previous) = seen.insert((kind, [links.route, links.service, links.consumer]), &e.path) {
            errors.add(&e.path, format!("a {} plugin is already configured for this scope at {previous}", e.item.name));
        }
        let (mut http, mut https) = (true, true);
        if let Some(protocols) = &e.item.protocols {
            http = false;
            https = false;
            for (i, p) in protocols.iter().enumerate() {
                match p.as_str() {
                    "http" => http = true,
                    "https" => https = true,
                    "grpc" | "grpcs" => {}
                    other => errors
                        .add(format!("{}.protocols[{i}]", e.path), format!("'{other}' is not supported (http, https)")),
                }
            }
        }
        let scope = Scope {
            route_id: links.route.map(|r| decl.routes[r].id.clone()),
            service_id: links.service.map(|s| decl.services[s].id.clone()),
        };
        let mut cx = Compile { path: format!("{}.config", e.path), errors, consumers, ca_certificates, shared, scope };
        let Some(plugin) = (KINDS[kind].compile)(&mut cx, e.item.config.clone()) else { continue };
        if !e.item.enabled {
            continue;
        }
        attached.push(Attached {
            kind,
            route: links.route,
            service: links.service,
            consumer: links.consumer,
            instance: Arc::new(Instance { plugin, http, https }),
        });
    }
    let wants_client_certificates = attached.iter().any(|a| matches!(a.instance.plugin, Plugin::MtlsAuth(_)));
    let prometheus = attached.iter().any(|a| matches!(a.instance.plugin, Plugin::Prometheus(_)));
    let upstream_health_metrics =
        attached.iter().any(|a| matches!(&a.instance.plugin, Plugin::Prometheus(p) if p.upstream_health_metrics));
    Plugins { attached, wants_client_certificates, prometheus, upstream_health_metrics }
}

/// One plugin name in a route's chain: each configuration with its precedence (lower wins).
struct Slot {
    base: Option<(u8, Arc<Instance>)>,
    by_consumer: HashMap<usize, (u8, Arc<Instance>)>,
}

/// Kong's precedence of a configuration: `scope` ranks route+service, route, service, global
/// as 0 to 3; a consumer-scoped configuration beats route+service only when it names the
/// route or the service too.
fn precedence(consumer: bool, scope: u8) -> u8 {
    match (consumer, scope) {
        (true, 0..=2) => scope,
        (false, 0) => 3,
        (true, _) => 4,
        (false, _) => 4 + scope,
    }
}

/// The plugins that run for one route, in execution order.
#[derive(Default)]
pub(crate) struct Chain {
    slots: Vec<Slot>,
}

impl Plugins {
    /// The chain of `route` (attached to `service`).
    pub fn chain(&self, route: usize, service: Option<usize>) -> Chain {
        // Rank of an attachment for this route: lower is more specific, None if it does not apply.
        let rank = |a: &Attached| -> Option<u8> {
            match (a.route, a.service) {
                (Some(r), Some(s)) if r == route && Some(s) == service => Some(0),
                (Some(r), None) if r == route => Some(1),
                (None, Some(s)) if Some(s) == service => Some(2),
                (None, None) => Some(3),
                _ => None,
            }
        };
        let mut slots = Vec::new();
        for kind in 0..KINDS.len() {
            let mut base: Option<(u8, &Attached)> = None;
            let mut by_consumer: HashMap<usize, (u8, &Attached)> = HashMap::new();
            for a in self.attached.iter().filter(|a| a.kind == kind) {
                let Some(r) = rank(a) else { continue };
                match a.consumer {
                    None if base.is_none_or(|(b, _)| r < b) => base = Some((r, a)),
                    None => {}
                    Some(c) => {
                        let best = by_consumer.entry(c).or_insert((r, a));
                        if r < best.0 {
                            *best = (r, a);
                        }
                    }
                }
            }
            if base.is_none() && by_consumer.is_empty() {
                continue;
            }
            slots.push(Slot {
                base: base.map(|(r, a)| (precedence(false, r), a.instance.clone())),
                by_consumer: by_consumer
                    .into_iter()
                    .map(|(c, (r, a))| (c, (precedence(true, r), a.instance.clone())))
                    .collect(),
            });
        }
        // KINDS is in descending priority already.
        debug_assert!(KINDS.windows(2).all(|w| w[0].priority > w[1].priority));
        Chain { slots }
    }
}

impl Chain {
    /// Whether any log plugin may run on this chain (then the request's headers are kept for it).
    pub fn logs(&self) -> bool {
        let is_log = |i: &Arc<Instance>| matches!(i.plugin, Plugin::Log(_));
        self.slots
            .iter()
            .any(|s| s.base.iter().any(|(_, i)| is_log(i)) || s.by_consumer.values().any(|(_, i)| is_log(i)))
    }

    /// Runs the chain's access phase; a plugin that rejects the request ends it. As Kong's
    /// collecting iterator does, the configurations after a rejection are still chosen, and
    /// those with a response phase are kept in `ex.responders`: they act on the rejection.
    pub async fn run(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        let mut outcome = Ok(());
        for slot in &self.slots {
            let for_consumer = ex.consumer.and_then(|c| slot.by_consumer.get(&c));
            let chosen = match (for_consumer, &slot.base) {
                (Some(c), Some(b)) => {
                    if c.0 < b.0 {
                        c
                    } else {
                        b
                    }
                }
                (Some(c), None) => c,
                (None, Some(b)) => b,
                (None, None) => continue,
            };
            let instance = &chosen.1;
            if !(if ex.conn.https { instance.https } else { instance.http }) {
                continue;
            }
            if instance.plugin.responds() {
                ex.responders.push(instance.clone());
            }
            if outcome.is_ok() {
                outcome = instance.plugin.access(ex).await;
            }
        }
        outcome
    }
}

/// What the access phase leaves to the response phase: who was authenticated, by which
/// credential, and what the session plugin has to finish.
pub(crate) struct AccessState<'a> {
    pub consumers: &'a Consumers,
    /// The authenticated (or anonymous) consumer.
    pub consumer: Option<usize>,
    /// The credential that authenticated it; none for an anonymous one.
    pub credential: Option<String>,
    /// The session plugin's part.
    pub session: session::Pending,
}

/// The prometheus configuration chosen for a request, if any.
pub(crate) fn prometheus(responders: &[Arc<Instance>]) -> Option<&prometheus::Prometheus> {
    responders.iter().find_map(|i| match &i.plugin {
        Plugin::Prometheus(p) => Some(p),
        _ => None,
    })
}

/// The log plugins chosen for a request, in order.
pub(crate) fn logs(responders: &[Arc<Instance>]) -> impl Iterator<Item = &logs::Log> {
    responders.iter().filter_map(|i| match &i.plugin {
        Plugin::Log(l) => Some(l),
        _ => None,
    })
}

/// Runs the response phase of the plugins `Chain::run` kept, in order, on whatever response
/// the client gets; `head` says the client asked with HEAD (the response has no body).
pub(crate) async fn respond(
    responders: &[Arc<Instance>],
    mut response: Response<Body>,
    head: bool,
    state: &mut AccessState<'_>,
) -> Response<Body> {
    for instance in responders {
        response = match &instance.plugin {
            Plugin::ResponseTransformer(p) => p.respond(response, head).await,
            Plugin::Session(p) => p.respond(response, state),
            _ => response,
        };
    }
    response
}

/// Kong's "logical OR" between authentication plugins: with `anonymous` set, a request
/// already authenticated by a credential skips this plugin.
pub(crate) fn already_authenticated(ex: &Exchange<'_>, anonymous: Option<usize>) -> bool {
    anonymous.is_some() && ex.credential.is_some()
}

/// Ends an authentication attempt: a success authenticates the consumer; a failure falls
/// back to the anonymous consumer when there is one, and is the response otherwise.
pub(crate) fn conclude(
    ex: &mut Exchange<'_>,
    anonymous: Option<usize>,
    attempt: Result<(usize, String), Reply>,
) -> Result<(), Reply> {
    match (attempt, anonymous) {
        (Ok((consumer, credential)), _) => {
            ex.authenticate(consumer, Some(credential));
            Ok(())
        }
        (Err(_), Some(anonymous)) => {
            ex.authenticate(anonymous, None);
            Ok(())
        }
        (Err(reply), None) => Err(reply),
    }
}
