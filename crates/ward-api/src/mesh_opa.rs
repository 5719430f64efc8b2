//! The `MeshOPA` policy, in Kong Mesh's format: Rego policies the callee's proxy evaluates for
//! every HTTP request to the inbounds it selects, after MeshTrafficPermission allowed it.
//!
//! Kong Mesh runs an OPA agent beside Envoy and asks it over ext_authz; Ward compiles the Rego
//! with an embedded engine ([`regorus`]) when a configuration arrives, and evaluates it in the
//! proxy. So `agentConfig` (the agent's own configuration) and `authConfig.timeout` (the call
//! to the agent) have nothing to configure and are refused as not supported.
//!
//! As in Kong Mesh, every policy's `appendPolicies` are appended (a dataplane selected by a
//! Mesh-wide and a Dataplane policy gets both), and the decision is every policy's that does
//! not set `ignoreDecision`: its package's `allow` must hold and its `deny`, when it has one,
//! must not.

use std::sync::Arc;

use base64::Engine as _;
use regorus::{CompiledPolicy, Engine, languages::rego::compiler::Compiler};
use serde::{Deserialize, Serialize};

use crate::{
    error::Causes,
    permission::{TargetKind, TargetRef},
    rules::Entries,
};

/// A MeshOPA's spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshOpa {
    /// The dataplanes it configures (default: the whole mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// The conf.
    pub default: Conf,
}

/// `default` of a MeshOPA.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Conf {
    /// The OPA agent's configuration; Ward runs no agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_config: Option<serde_json::Value>,
    /// Rego policies appended to the ones of other MeshOPAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_policies: Option<Vec<AppendPolicy>>,
    /// How requests are asked about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_config: Option<AuthConfig>,
}

/// One `appendPolicies[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppendPolicy {
    /// The Rego module.
    pub rego: DataSource,
    /// Whether the module only offers rules to others and takes no part in the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_decision: Option<bool>,
}

/// Where a Rego module comes from: Kong Mesh's DataSource (`inlineString`, `inline` in
/// base64, `secret`) or its newer SecureDataSource (`type` with `insecureInline` or
/// `secretRef`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataSource {
    /// The text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_string: Option<String>,
    /// The text, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// A Secret of the mesh holding the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `InsecureInline` or `Secret` (SecureDataSource).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// The text, for `type: InsecureInline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_inline: Option<InsecureInline>,
    /// The Secret, for `type: Secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<serde_json::Value>,
}

/// `insecureInline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InsecureInline {
    /// The text.
    pub value: String,
}

/// `authConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthConfig {
    /// The status of a request whose evaluation failed, when failures deny (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<u32>,
    /// `Allow` or `Deny` (default): what an evaluation that fails decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_agent_failure: Option<String>,
    /// How long Envoy waits for the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<serde_json::Value>,
    /// Whether, and how much of, the request body the policies see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<RequestBody>,
}

/// `authConfig.requestBody`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestBody {
    /// At most this many bytes of the body are given; a longer body is cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u32>,
    /// Give the body as `raw_body` (bytes) instead of `body` (text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_raw_body: Option<bool>,
}

/// The largest `maxSize` Ward buffers: a request body is held in memory while it is decided.
pub const MAX_BODY: u32 = 4 * 1024 * 1024;

impl MeshOpa {
    /// The policy's parts as the rules engine reads them: one inbound conf.
    pub fn entries(&self) -> Entries<'_> {
        Entries {
            top: self.target_ref.as_ref(),
            to: Vec::new(),
            inbound: vec![serde_json::to_value(&self.default).expect("confs serialize")],
        }
    }
}

/// Checks a MeshOPA, compiling its Rego as the proxies will.
pub fn check(policy: &MeshOpa, causes: &mut Causes) {
    use TargetKind::*;
    if let Some(target) = &policy.target_ref {
        match target.kind {
            MeshGateway => {
                target.check("spec.targetRef", &[MeshGateway], true, causes);
                causes.unsupported("spec.targetRef.kind", "kind MeshGateway: Ward has no MeshGateway");
            }
            _ => target.check(
                "spec.targetRef",
                &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane],
                true,
                causes,
            ),
        }
        if target.proxy_types.as_ref().is_some_and(|t| t.contains(&crate::permission::ProxyType::Gateway)) {
            causes.unsupported("spec.targetRef.proxyTypes", "Ward's gateway does not apply MeshOPA");
        }
    }
    let conf = &policy.default;
    if conf.agent_config.is_some() {
        causes.unsupported(
            "spec.default.agentConfig",
            "Ward evaluates Rego inside the proxy and runs no OPA agent to configure",
        );
    }
    if let Some(auth) = &conf.auth_config {
        if let Some(status) = auth.status_on_error
            && !(100..600).contains(&status)
        {
            causes.add("spec.default.authConfig.statusOnError", "must be in inclusive range [100, 599]");
        }
        if let Some(on) = &auth.on_agent_failure
            && !matches!(on.as_str(), "Allow" | "Deny")
        {
            causes.add("spec.default.authConfig.onAgentFailure", "must be one of Allow, Deny");
        }
        if auth.timeout.is_some() {
            causes.unsupported(
                "spec.default.authConfig.timeout",
                "Ward evaluates Rego inside the proxy: there is no call to an agent to time out",
            );
        }
        if let Some(size) = auth.request_body.as_ref().and_then(|b| b.max_size)
            && size > MAX_BODY
        {
            causes.add("spec.default.authConfig.requestBody.maxSize", format!("must be at most {MAX_BODY}"));
        }
    }
    let mut modules = Vec::new();
    for (i, append) in conf.append_policies.iter().flatten().enumerate() {
        let at = format!("spec.default.appendPolicies[{i}].rego");
        match append.rego.text(&at) {
            Ok(text) => {
                modules.push(Module { origin: String::new(), at, text, decides: append.ignore_decision != Some(true) })
            }
            Err((field, reason)) => causes.0.push(crate::error::Cause::new(field, reason)),
        }
    }
    if let Err((field, reason)) = Decider::compile(&modules) {
        causes.add(field, reason);
    }
}

impl DataSource {
    /// The module's text, or the field at fault (under `at`) and why.
    pub fn text(&self, at: &str) -> Result<String, (String, String)> {
        let unsupported =
            |field: &str, why: &str| Err((format!("{at}.{field}"), format!("{}{why}", crate::error::UNSUPPORTED)));
        let given = [self.inline_string.is_some(), self.inline.is_some(), self.secret.is_some(), self.ty.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err((at.to_string(), "must have exactly one defined: inlineString, inline, secret, type".into()));
        }
        if let Some(text) = &self.inline_string {
            return Ok(text.clone());
        }
        if let Some(encoded) = &self.inline {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| (format!("{at}.inline"), format!("must be base64: {e}")))?;
            return String::from_utf8(bytes).map_err(|_| (format!("{at}.inline"), "must be UTF-8 text".to_string()));
        }
        if self.secret.is_some() {
            return unsupported("secret", "Rego in a Secret is not served yet; give it inline");
        }
        match self.ty.as_deref() {
            Some("InsecureInline") => match &self.insecure_inline {
                Some(inline) if self.secret_ref.is_none() => Ok(inline.value.clone()),
                _ => Err((
                    format!("{at}.insecureInline"),
                    "must be the only one defined with type InsecureInline".into(),
                )),
            },
            Some("Secret") => unsupported("secretRef", "Rego in a Secret is not served yet; give it inline"),
            _ => Err((format!("{at}.type"), "must be one of InsecureInline, Secret".into())),
        }
    }
}

/// One Rego module to compile.
#[derive(Debug, Clone)]
pub struct Module {
    /// The MeshOPA it came from.
    pub origin: String,
    /// Its field, in errors.
    pub at: String,
    /// Its text.
    pub text: String,
    /// Whether its package's `allow` and `deny` take part in the decision.
    pub decides: bool,
}

/// The compiled rules of one package that decides.
#[derive(Debug, Clone)]
pub struct Deciding {
    /// The MeshOPA the package came from.
    pub origin: String,
    /// The package, as `data.x.y`.
    pub package: String,
    /// Its `allow`.
    pub allow: CompiledPolicy,
    /// Its `deny`, when it has one.
    pub deny: Option<CompiledPolicy>,
}

/// Every deciding package of a set of modules, compiled once.
#[derive(Debug, Clone, Default)]
pub struct Decider {
    /// In the order applied.
    pub deciding: Vec<Deciding>,
}

/// Rego as Kong Mesh's examples write it: OPA's v0 syntax, unless a module imports rego.v1.
fn engine() -> Engine {
    let mut engine = Engine::new();
    engine.set_rego_v0(true);
    engine
}

impl Decider {
    /// Compiles `modules` together; on failure, the field at fault and the engine's reason
    /// (which names the line).
    pub fn compile(modules: &[Module]) -> Result<Decider, (String, String)> {
        let mut engine = engine();
        let mut packages = Vec::new();
        for (i, module) in modules.iter().enumerate() {
            let path = format!("appendPolicies[{i}].rego");
            let package =
                engine.add_policy(path.clone(), module.text.clone()).map_err(|e| (module.at.clone(), reason(&e)))?;
            if module.decides && !packages.iter().any(|(_, p, _)| *p == package) {
                let has = |rule: &str| engine.has_declared_rule_rooted_at(&path, rule).unwrap_or(false);
                if !has("allow") {
                    return Err((module.at.clone(), format!("package {package} must define allow, which decides")));
                }
                packages.push((module, package, has("deny")));
            }
        }
        let mut deciding = Vec::new();
        for (module, package, has_deny) in packages {
            let mut compile = |rule: &str| {
                let entry = format!("{package}.{rule}");
                let compiled = engine.compile_with_entrypoint(&Arc::from(entry.as_str())).map_err(|e| reason(&e))?;
                // The engine's own evaluator finds a call to a function it lacks only when the
                // call is reached; its program compiler finds every one, here.
                Compiler::compile_from_policy(&compiled, &[entry.as_str()]).map_err(|e| reason(&e)).map(|_| compiled)
            };
            let allow = compile("allow").map_err(|r| (module.at.clone(), r))?;
            let deny = if has_deny { Some(compile("deny").map_err(|r| (module.at.clone(), r))?) } else { None };
            deciding.push(Deciding { origin: module.origin.clone(), package, allow, deny });
        }
        Ok(Decider { deciding })
    }
}

/// What the deciding packages answered for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may pass.
    pub allowed: bool,
    /// The MeshOPA whose package denied.
    pub denied_by: Option<String>,
    /// `headers`: added to the request passed on, or to the denial.
    pub headers: Vec<(String, String)>,
    /// `response_headers_to_add`: added to the application's response.
    pub response_headers_to_add: Vec<(String, String)>,
    /// `request_headers_to_remove`: removed from the request passed on.
    pub request_headers_to_remove: Vec<String>,
    /// `body` of the denial.
    pub body: Option<String>,
    /// `http_status` of the denial.
    pub http_status: Option<u16>,
}

/// Why an evaluation failed, and in which MeshOPA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The MeshOPA.
    pub origin: String,
    /// The reason.
    pub reason: String,
}

impl Decider {
    /// Asks every deciding package about `input`, in order, until one denies: `allow`
    /// (a boolean, or an object as opa-envoy-plugin reads it; undefined denies), then `deny`.
    pub fn decide(&self, input: &serde_json::Value) -> Result<Verdict, Failure> {
        let mut verdict = Verdict { allowed: true, ..Verdict::default() };
        let input = regorus::Value::from(input.clone());
        for d in &self.deciding {
            let fail = |reason: String| Failure { origin: d.origin.clone(), reason };
            let allow = d.allow.eval_with_input(input.clone()).map_err(|e| fail(one_line(&e)))?;
            let answer = interpret(&allow).map_err(|why| fail(format!("{}.allow {why}", d.package)))?;
            let denied = !answer.allowed
                || match &d.deny {
                    Some(deny) => {
                        deny.eval_with_input(input.clone()).map_err(|e| fail(one_line(&e)))?
                            == regorus::Value::Bool(true)
                    }
                    None => false,
                };
            verdict.headers.extend(answer.headers);
            if denied {
                return Ok(Verdict {
                    allowed: false,
                    denied_by: Some(d.origin.clone()),
                    headers: verdict.headers,
                    body: answer.body,
                    http_status: answer.http_status,
                    ..Verdict::default()
                });
            }
            verdict.response_headers_to_add.extend(answer.response_headers_to_add);
            verdict.request_headers_to_remove.extend(answer.request_headers_to_remove);
        }
        Ok(verdict)
    }
}

/// An engine error on one line.
fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Reads one package's `allow` result.
fn interpret(value: &regorus::Value) -> Result<Verdict, String> {
    use regorus::Value as V;
    let object = match value {
        V::Undefined => return Ok(Verdict::default()),
        V::Bool(b) => return Ok(Verdict { allowed: *b, ..Verdict::default() }),
        V::Object(object) => object,
        _ => return Err("must be a boolean or an object".into()),
    };
    let field = |name: &str| object.get(&V::from(name)).filter(|v| **v != V::Undefined);
    let string = |v: &V, at: &str| v.as_string().map(|s| s.to_string()).map_err(|_| format!("{at} must be a string"));
    let headers = |name: &str| -> Result<Vec<(String, String)>, String> {
        let Some(value) = field(name) else { return Ok(Vec::new()) };
        let map = value.as_object().map_err(|_| format!("{name} must be an object"))?;
        let mut out = Vec::new();
        for (k, v) in map.iter() {
            let key = string(k, name)?;
            match v {
                V::Array(values) => {
                    for v in values.iter() {
                        out.push((key.clone(), string(v, &format!("{name}.{key}"))?));
                    }
                }
                v => out.push((key.clone(), string(v, &format!("{name}.{key}"))?)),
            }
        }
        Ok(out)
    };
    let allowed = match field("allowed") {
        Some(V::Bool(b)) => *b,
        _ => return Err("allowed must be a boolean".into()),
    };
    let request_headers_to_remove = match field("request_headers_to_remove") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .map_err(|_| "request_headers_to_remove must be an array".to_string())?
            .iter()
            .map(|v| string(v, "request_headers_to_remove[]"))
            .collect::<Result<_, _>>()?,
    };
    let http_status = match field("http_status") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok()
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| (100..600).contains(s))
                .ok_or("http_status must be a status from 100 to 599")?,
        ),
    };
    Ok(Verdict {
        allowed,
        denied_by: None,
        headers: headers("headers")?,
        response_headers_to_add: headers("response_headers_to_add")?,
        request_headers_to_remove,
        body: field("body").map(|b| string(b, "body")).transpose()?,
        http_status,
    })
}

/// The engine's error on one line: where, then why.
fn reason(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // `--> file:line:col`, the source line, the caret, then `error: why`.
    let place = lines.iter().find_map(|l| l.strip_prefix("--> "));
    let why = lines.iter().rev().find_map(|l| l.strip_prefix("error: ")).unwrap_or_else(|| lines.last().unwrap_or(&""));
    let at = place.and_then(|p| p.split_once(':')).map(|(_, at)| format!(" at line {}", at.replace(':', ", column ")));
    let at = at.unwrap_or_default();
    // OPA has functions the embedded engine lacks (io.jwt.*, http.send, ...): valid Rego that
    // Ward cannot run.
    if let Some(name) = why.strip_prefix("Unknown function: ") {
        return format!("{}Ward's Rego engine has no function {name}{at}", crate::error::UNSUPPORTED);
    }
    format!("Rego does not compile{at}: {why}")
}

/// One appended policy as the rules engine merges it: its conf and the MeshOPA it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Appended {
    /// The MeshOPA.
    pub origin: String,
    /// The Rego module.
    pub rego: DataSource,
    /// Whether it takes no part in the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_decision: Option<bool>,
}

/// A merged MeshOPA conf at one inbound, as the rules engine gives it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Merged {
    /// Every MeshOPA's appended policies, in the order applied.
    #[serde(default)]
    pub append_policies: Vec<Appended>,
    /// The last `authConfig` fields set.
    #[serde(default)]
    pub auth_config: AuthConfig,
}

/// What the proxy needs of a merged conf: the compiled decider and the auth settings.
#[derive(Debug, Clone, Default)]
pub struct InForce {
    /// The compiled policies.
    pub decider: Decider,
    /// The status of a failed evaluation (default 403).
    pub status_on_error: u16,
    /// Whether a failed evaluation lets the request through.
    pub allow_on_failure: bool,
    /// The body bytes the policies see, when they see it.
    pub max_body: Option<usize>,
    /// Whether the body is given as `raw_body`.
    pub raw_body: bool,
}

impl InForce {
    /// Compiles a merged conf (what the rules engine gives for MeshOPA).
    pub fn from_conf(conf: &serde_json::Value) -> Result<InForce, String> {
        let merged: Merged = serde_json::from_value(conf.clone()).map_err(|e| format!("MeshOPA conf: {e}"))?;
        let modules = merged
            .append_policies
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let at = format!("MeshOPA {} appendPolicies[{i}].rego", a.origin);
                Ok(Module {
                    origin: a.origin.clone(),
                    text: a.rego.text(&at)?,
                    at,
                    decides: a.ignore_decision != Some(true),
                })
            })
            .collect::<Result<Vec<_>, (String, String)>>()
            .and_then(|m| Decider::compile(&m))
            .map_err(|(at, why)| format!("{at}: {why}"))?;
        let auth = merged.auth_config;
        let body = auth.request_body.unwrap_or_default();
        Ok(InForce {
            decider: modules,
            status_on_error: auth.status_on_error.map_or(Ok(403), u16::try_from).map_err(|e| e.to_string())?,
            allow_on_failure: auth.on_agent_failure.as_deref() == Some("Allow"),
            max_body: body.max_size.map(|s| s as usize),
            raw_body: body.send_raw_body == Some(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(text: &str) -> Module {
        Module {
            origin: "p".into(),
            at: "spec.default.appendPolicies[0].rego".into(),
            text: text.into(),
            decides: true,
        }
    }

    #[test]
    fn compile_errors_name_the_line_and_reason() {
        let err = Decider::compile(&[module("package x\nallow {\n  input.a ==\n}\n")]).unwrap_err();
        assert_eq!(err.0, "spec.default.appendPolicies[0].rego");
        assert!(err.1.starts_with("Rego does not compile at line 2, column 7: "), "{}", err.1);
        let err =
            Decider::compile(&[module("package x\nallow {\n  io.jwt.decode_verify(input.a, {})\n}\n")]).unwrap_err();
        assert_eq!(
            err.1,
            format!(
                "{}Ward's Rego engine has no function 'io.jwt.decode_verify' at line 3, column 3",
                crate::error::UNSUPPORTED
            )
        );
        let err = Decider::compile(&[module("package x\nallow { y }\n")]).unwrap_err();
        assert!(err.1.contains("line 2") && err.1.contains("unsafe"), "{}", err.1);
        let err = Decider::compile(&[module("package x\ndeny { true }\n")]).unwrap_err();
        assert_eq!(err.1, "package data.x must define allow, which decides");
    }

    #[test]
    fn deciding_packages_keep_allow_and_deny() {
        let mut helper = module("package lib\nis_get { input.method == \"GET\" }\n");
        helper.decides = false;
        let rules = module(
            "package envoy.authz\nimport data.lib\ndefault allow = false\nallow { lib.is_get }\ndeny { input.path == \"/x\" }\n",
        );
        let decider = Decider::compile(&[helper, rules]).unwrap();
        assert_eq!(decider.deciding.len(), 1);
        assert_eq!(decider.deciding[0].package, "data.envoy.authz");
        assert!(decider.deciding[0].deny.is_some());
    }

    fn decide(text: &str, input: serde_json::Value) -> Result<Verdict, Failure> {
        Decider::compile(&[module(text)]).unwrap().decide(&input)
    }

    #[test]
    fn results_are_booleans_or_objects() {
        let get = "package envoy.authz\ndefault allow = false\nallow { input.method == \"GET\" }\n";
        assert!(decide(get, serde_json::json!({"method": "GET"})).unwrap().allowed);
        let denied = decide(get, serde_json::json!({"method": "POST"})).unwrap();
        assert_eq!((denied.allowed, denied.denied_by.as_deref()), (false, Some("p")));
        // Undefined denies.
        assert!(!decide("package x\nallow { input.a }\n", serde_json::json!({})).unwrap().allowed);
        let object = r#"package x
allow = {"allowed": false, "http_status": 401, "body": "who?", "headers": {"x-a": "1", "x-b": ["2", "3"]}} { true }
"#;
        let v = decide(object, serde_json::json!({})).unwrap();
        assert_eq!(v.http_status, Some(401));
        assert_eq!(v.body.as_deref(), Some("who?"));
        assert_eq!(v.headers, [("x-a".into(), "1".into()), ("x-b".into(), "2".into()), ("x-b".into(), "3".into())]);
        let passing = r#"package x
allow = {"allowed": true, "headers": {"x-user": "u"}, "response_headers_to_add": {"x-r": "r"}, "request_headers_to_remove": ["cookie"]} { true }
"#;
        let v = decide(passing, serde_json::json!({})).unwrap();
        assert!(v.allowed);
        assert_eq!(v.headers, [("x-user".into(), "u".into())]);
        assert_eq!(v.response_headers_to_add, [("x-r".into(), "r".into())]);
        assert_eq!(v.request_headers_to_remove, ["cookie"]);
        let wrong = decide("package x\nallow = 3 { true }\n", serde_json::json!({})).unwrap_err();
        assert_eq!(wrong.reason, "data.x.allow must be a boolean or an object");
        let wrong =
            decide("package x\nallow = {\"allowed\": true, \"http_status\": 99} { true }\n", serde_json::json!({}));
        assert_eq!(wrong.unwrap_err().reason, "data.x.allow http_status must be a status from 100 to 599");
        let failing = decide("package x\nallow { 1 / input.zero }\n", serde_json::json!({"zero": 0})).unwrap_err();
        assert!(failing.reason.contains("divide by zero"), "{}", failing.reason);
    }

    #[test]
    fn deny_overrides_allow_and_every_package_must_allow() {
        let owner = "package serviceowner\ndefault allow = true\ndeny { input.parsed_path == [\"blocked\"] }\n";
        assert!(!decide(owner, serde_json::json!({"parsed_path": ["blocked"]})).unwrap().allowed);
        assert!(decide(owner, serde_json::json!({"parsed_path": ["open"]})).unwrap().allowed);
        let mut second = module("package b\nallow { input.method == \"GET\" }\n");
        second.origin = "q".into();
        let both = Decider::compile(&[module(owner), second]).unwrap();
        let v = both.decide(&serde_json::json!({"parsed_path": ["open"], "method": "POST"})).unwrap();
        assert_eq!(v.denied_by.as_deref(), Some("q"));
        assert!(both.decide(&serde_json::json!({"parsed_path": ["open"], "method": "GET"})).unwrap().allowed);
    }

    #[test]
    fn data_sources() {
        let inline = DataSource { inline: Some("cGFja2FnZSB4".into()), ..Default::default() };
        assert_eq!(inline.text("r").unwrap(), "package x");
        let none = DataSource::default();
        assert_eq!(none.text("r").unwrap_err().1, "must have exactly one defined: inlineString, inline, secret, type");
        let secret = DataSource { secret: Some("s".into()), ..Default::default() };
        assert!(secret.text("r").unwrap_err().1.starts_with(crate::error::UNSUPPORTED));
        let secure = DataSource {
            ty: Some("InsecureInline".into()),
            insecure_inline: Some(InsecureInline { value: "package y".into() }),
            ..Default::default()
        };
        assert_eq!(secure.text("r").unwrap(), "package y");
    }
}
