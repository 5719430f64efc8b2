//! request-transformer: changes the request before it is forwarded, as Kong's plugin of the
//! same name does. In Kong's order: the path (`replace.uri`), the method (`http_method`),
//! then headers, body and query string, each by `remove`, `rename`, `replace`, `add`,
//! `append`. Values may hold templates (see [`super::transformer::template`]), rendered
//! against the request as it was when the plugin started.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::transformer::multipart::{self, Multipart};
use super::transformer::template::{Env, Origin, Source, Template};
use super::transformer::{Pairs, appended, header_name, items, rename_headers, rename_member, truthy};
use super::{BODY_LIMIT, Compile, Plugin};
use crate::exchange::{BodyError, Exchange};
use crate::reply::Reply;
use crate::router::Captures;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Lists {
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    querystring: Vec<String>,
    #[serde(default)]
    body: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplaceLists {
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    querystring: Vec<String>,
    #[serde(default)]
    body: Vec<String>,
    uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    http_method: Option<String>,
    #[serde(default)]
    remove: Lists,
    #[serde(default)]
    rename: Lists,
    #[serde(default)]
    replace: ReplaceLists,
    #[serde(default)]
    add: Lists,
    #[serde(default)]
    append: Lists,
}

/// What is done to the headers, in Kong's order.
#[derive(Default)]
struct HeaderOps {
    remove: Vec<HeaderName>,
    rename: Vec<(HeaderName, HeaderName)>,
    /// `host` here sets the Host the upstream gets.
    replace: Vec<(HeaderName, Template)>,
    add: Vec<(HeaderName, Template)>,
    append: Vec<(HeaderName, Template)>,
}

/// What is done to query arguments or body fields, in Kong's order.
#[derive(Default)]
struct FieldOps {
    remove: Vec<String>,
    rename: Vec<(String, Template)>,
    replace: Vec<(String, Template)>,
    add: Vec<(String, Template)>,
    append: Vec<(String, Template)>,
}

impl FieldOps {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }

    fn templates(&self) -> impl Iterator<Item = &Template> {
        [&self.rename, &self.replace, &self.add, &self.append].into_iter().flatten().map(|(_, t)| t)
    }
}

/// A compiled request-transformer configuration.
pub(crate) struct RequestTransformer {
    method: Option<Method>,
    uri: Option<Template>,
    headers: HeaderOps,
    query: FieldOps,
    body: FieldOps,
    /// Which request values the templates read (the others are not copied per request).
    reads: [bool; 3],
}

const FORWARDED: [&str; 7] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-real-ip",
];

/// Why `name` cannot be changed by the plugin; `target` when the item would set it.
fn refused_header(name: &HeaderName, target: bool) -> Option<&'static str> {
    if name == header::HOST {
        Some("Kong leaves Host alone here: replace.headers host:VALUE sets the Host the upstream gets")
    } else if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
        Some("the gateway frames the body it forwards itself")
    } else if FORWARDED.contains(&name.as_str()) {
        Some("the gateway sets the X-Forwarded-* and X-Real-IP headers after the plugins run")
    } else if target && ward_http::headers::HOP_BY_HOP.contains(name) {
        Some("a hop-by-hop header is never forwarded")
    } else {
        None
    }
}

fn template(cx: &mut Compile<'_>, field: &str, text: &str) -> Option<Template> {
    match Template::parse(text) {
        Ok(t) => Some(t),
        Err(why) => {
            cx.error(field, why);
            None
        }
    }
}

/// A header name of an item, refused (with the reason) when the plugin may not change it.
fn checked_header(cx: &mut Compile<'_>, field: &str, name: &str, target: bool, host_ok: bool) -> Option<HeaderName> {
    let Some(parsed) = header_name(name) else {
        cx.error(field, format!("'{name}' is not a valid header name (letters, digits, '-' and '_')"));
        return None;
    };
    match refused_header(&parsed, target) {
        Some(_) if host_ok && parsed == header::HOST => Some(parsed),
        Some(why) => {
            cx.error(field, format!("'{name}': {why}"));
            None
        }
        None => Some(parsed),
    }
}

/// A header value template; a value without templates must be a valid header value.
fn header_template(cx: &mut Compile<'_>, field: &str, text: &str) -> Option<Template> {
    let t = template(cx, field, text)?;
    if t.literal().is_some_and(|v| HeaderValue::from_str(&v).is_err()) {
        cx.error(field, format!("'{text}' is not a valid header value"));
        return None;
    }
    Some(t)
}

fn header_values(cx: &mut Compile<'_>, field: &str, list: &[String], host_ok: bool) -> Vec<(HeaderName, Template)> {
    let mut out = Vec::new();
    for item in items(cx, field, list, true) {
        let name = checked_header(cx, &item.field, item.name, true, host_ok);
        let value = header_template(cx, &item.field, item.value);
        out.extend(name.zip(value));
    }
    out
}

fn field_values(cx: &mut Compile<'_>, field: &str, list: &[String]) -> Vec<(String, Template)> {
    let mut out = Vec::new();
    for item in items(cx, field, list, true) {
        out.extend(template(cx, &item.field, item.value).map(|t| (item.name.to_string(), t)));
    }
    out
}

fn field_ops(cx: &mut Compile<'_>, of: &str, lists: [&[String]; 5]) -> FieldOps {
    let [remove, rename, replace, add, append] = lists;
    FieldOps {
        remove: items(cx, &format!("remove.{of}"), remove, false).iter().map(|i| i.name.to_string()).collect(),
        rename: field_values(cx, &format!("rename.{of}"), rename),
        replace: field_values(cx, &format!("replace.{of}"), replace),
        add: field_values(cx, &format!("add.{of}"), add),
        append: field_values(cx, &format!("append.{of}"), append),
    }
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let errors_before = cx.errors.0.len();
    let method = match &c.http_method {
        None => None,
        Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Method::from_bytes(m.as_bytes()).ok(),
        Some(m) => {
            cx.error("http_method", format!("'{m}' is not a method: use upper-case letters"));
            None
        }
    };
    let uri = c.replace.uri.as_deref().and_then(|text| {
        let t = template(cx, "replace.uri", text)?;
        if text.contains(['?', '#']) {
            cx.error("replace.uri", "is a path: the query string is kept, and changed with querystring");
            return None;
        }
        if !text.starts_with('/') && !text.starts_with("$(") {
            cx.error("replace.uri", "must start with /");
            return None;
        }
        Some(t)
    });

    let mut headers = HeaderOps::default();
    for item in items(cx, "remove.headers", &c.remove.headers, false) {
        headers.remove.extend(checked_header(cx, &item.field, item.name, false, false));
    }
    for item in items(cx, "rename.headers", &c.rename.headers, true) {
        let old = checked_header(cx, &item.field, item.name, false, false);
        let new = checked_header(cx, &item.field, item.value, true, false);
        headers.rename.extend(old.zip(new));
    }
    headers.replace = header_values(cx, "replace.headers", &c.replace.headers, true);
    headers.add = header_values(cx, "add.headers", &c.add.headers, false);
    headers.append = header_values(cx, "append.headers", &c.append.headers, false);

    let query = field_ops(
        cx,
        "querystring",
        [
            c.remove.querystring.as_slice(),
            &c.rename.querystring,
            &c.replace.querystring,
            &c.add.querystring,
            &c.append.querystring,
        ],
    );
    let body =
        field_ops(cx, "body", [c.remove.body.as_slice(), &c.rename.body, &c.replace.body, &c.add.body, &c.append.body]);
    if cx.errors.0.len() > errors_before {
        return None;
    }
    let all: Vec<&Template> = uri
        .iter()
        .chain([&headers.replace, &headers.add, &headers.append].into_iter().flatten().map(|(_, t)| t))
        .chain(query.templates())
        .chain(body.templates())
        .collect();
    let reads = [Source::Headers, Source::QueryParams, Source::UriCaptures].map(|s| all.iter().any(|t| t.reads(s)));
    Some(Plugin::RequestTransformer(RequestTransformer { method, uri, headers, query, body, reads }))
}

/// How Kong's plugin reads a request body, by a Content-Type it looks into.
#[derive(Debug, PartialEq, Eq)]
enum BodyKind {
    Json,
    Multipart,
    Form,
}

fn body_kind(content_type: Option<&str>) -> Option<BodyKind> {
    let ct = content_type?.to_ascii_lowercase();
    if ct.contains("application/json") {
        Some(BodyKind::Json)
    } else if ct.contains("multipart/form-data") {
        Some(BodyKind::Multipart)
    } else if ct.contains("application/x-www-form-urlencoded") {
        Some(BodyKind::Form)
    } else {
        None
    }
}

/// The whole request body, refused past the gateway's limit on what a plugin holds.
async fn read_body(ex: &mut Exchange<'_>) -> Result<Bytes, Reply> {
    let declared = ex.header(&header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|l| l > BODY_LIMIT as u64) {
        return Err(Reply::status(StatusCode::PAYLOAD_TOO_LARGE));
    }
    match ex.body_bytes(BODY_LIMIT).await {
        Ok(b) => Ok(b),
        Err(BodyError::TooLarge(_)) => Err(Reply::status(StatusCode::PAYLOAD_TOO_LARGE)),
        Err(BodyError::Read(_)) => Err(Reply::status(StatusCode::BAD_REQUEST)),
    }
}

/// Percent-encodes what Kong's `set_path` escapes (it keeps RFC 3986's reserved characters),
/// and `?` and `#` too, so that a value stays in the path.
fn escape_path(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path rendered from `template`: text of the configuration and route captures are
/// escaped as Kong escapes them; a header or query value is one segment (its `/` escaped),
/// and a `.` or `..` segment from one is refused.
fn render_path(template: &Template, env: &Env<'_>) -> Result<String, Reply> {
    let bad = || Reply::status(StatusCode::BAD_REQUEST);
    let path = template.render_with(env, |piece, origin| match origin {
        Origin::Config | Origin::Request(Source::UriCaptures) => Ok(escape_path(piece, b"!$&'()*+,/:;=@[]%")),
        Origin::Request(_) if piece == "." || piece == ".." => Err(bad()),
        Origin::Request(_) => Ok(escape_path(piece, b"!$&'()*+,;=:@")),
    })?;
    if !path.starts_with('/') {
        tracing::warn!(path, "request-transformer: replace.uri did not render to a path starting with /");
        return Err(Reply::status(StatusCode::INTERNAL_SERVER_ERROR));
    }
    Ok(path)
}

fn header_value(text: &str) -> Result<HeaderValue, Reply> {
    HeaderValue::from_str(text).map_err(|_| Reply::status(StatusCode::BAD_REQUEST))
}

impl RequestTransformer {
    pub(super) async fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        let [reads_headers, reads_query, reads_captures] = self.reads;
        let headers = if reads_headers { ex.headers.clone() } else { HeaderMap::new() };
        let query = match (&ex.query, reads_query) {
            (Some(q), true) => Pairs::parse(q),
            _ => Pairs::default(),
        };
        let captures = if reads_captures { ex.uri_captures.clone() } else { Captures::default() };
        let env = Env { headers: &headers, query: &query, captures: &captures };

        if let Some(uri) = &self.uri {
            ex.upstream_path = Some(render_path(uri, &env)?);
        }
        if let Some(method) = &self.method {
            ex.method = method.clone();
            let to_query = [Method::GET, Method::HEAD, Method::TRACE].contains(method);
            if to_query && body_kind(ex.header(&header::CONTENT_TYPE)) == Some(BodyKind::Form) {
                // Kong moves the form's fields into the query string too (the body stays).
                let body = read_body(ex).await?;
                let form = Pairs::parse(&String::from_utf8_lossy(&body));
                if !form.is_empty() {
                    let mut args = ex.query.as_deref().map(Pairs::parse).unwrap_or_default();
                    for (name, value) in form.iter() {
                        args.push(name, value);
                    }
                    ex.query = Some(args.to_text());
                }
            }
        }
        self.transform_headers(ex, &env)?;
        self.transform_body(ex, &env).await?;
        self.transform_query(ex, &env);
        Ok(())
    }

    fn transform_headers(&self, ex: &mut Exchange<'_>, env: &Env<'_>) -> Result<(), Reply> {
        let ops = &self.headers;
        let h = &mut ex.headers;
        for name in &ops.remove {
            h.remove(name);
        }
        rename_headers(h, &ops.rename);
        // As nginx does, an empty value removes a header, and is never added.
        for (name, t) in &ops.replace {
            let value = t.render(env);
            if name == header::HOST {
                if !value.is_empty() {
                    header_value(&value)?;
                    ex.upstream_host = Some(value);
                }
            } else if h.contains_key(name) {
                if value.is_empty() {
                    h.remove(name);
                } else {
                    h.insert(name.clone(), header_value(&value)?);
                }
            }
        }
        for (name, t) in &ops.add {
            let value = t.render(env);
            if !h.contains_key(name) && !value.is_empty() {
                h.insert(name.clone(), header_value(&value)?);
            }
        }
        for (name, t) in &ops.append {
            let value = t.render(env);
            if !value.is_empty() {
                h.append(name.clone(), header_value(&value)?);
            }
        }
        Ok(())
    }

    async fn transform_body(&self, ex: &mut Exchange<'_>, env: &Env<'_>) -> Result<(), Reply> {
        if self.body.is_empty() {
            return Ok(());
        }
        let content_type = ex.header(&header::CONTENT_TYPE).map(str::to_string);
        let Some(kind) = body_kind(content_type.as_deref()) else { return Ok(()) };
        let body = read_body(ex).await?;
        let changed = match kind {
            BodyKind::Json => self.json_body(&body, env),
            BodyKind::Form => self.form_body(&body, env),
            BodyKind::Multipart => match content_type.as_deref().and_then(multipart::boundary) {
                Some(boundary) => self.multipart_body(&body, &boundary, env)?,
                None => None,
            },
        };
        if let Some(new) = changed {
            let length = HeaderValue::from(new.len());
            ex.set_body(Bytes::from(new));
            ex.headers.insert(header::CONTENT_LENGTH, length);
        }
        Ok(())
    }

    /// A JSON object body changed; `None` leaves the body as it is (not an object, not JSON,
    /// or nothing to do). An empty body is an empty object.
    fn json_body(&self, body: &[u8], env: &Env<'_>) -> Option<Vec<u8>> {
        let ops = &self.body;
        let sent = !body.is_empty();
        let mut object = if sent {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => map,
                _ => return None,
            }
        } else {
            Map::new()
        };
        let mut changed = false;
        if sent {
            for name in &ops.remove {
                object.shift_remove(name);
                changed = true;
            }
            for (old, new) in &ops.rename {
                changed |= rename_member(&mut object, old, &new.render(env));
            }
            for (name, t) in &ops.replace {
                if truthy(object.get(name)) {
                    object.insert(name.clone(), Value::String(t.render(env)));
                    changed = true;
                }
            }
        }
        for (name, t) in &ops.add {
            if !truthy(object.get(name)) {
                object.insert(name.clone(), Value::String(t.render(env)));
                changed = true;
            }
        }
        for (name, t) in &ops.append {
            let before = object.get(name).cloned();
            object.insert(name.clone(), appended(before, Value::String(t.render(env))));
            changed = true;
        }
        changed.then(|| Value::Object(object).to_string().into_bytes())
    }

    /// A url-encoded body changed; `None` leaves it as it is.
    fn form_body(&self, body: &[u8], env: &Env<'_>) -> Option<Vec<u8>> {
        let ops = &self.body;
        let text = std::str::from_utf8(body).ok()?;
        let sent = !body.is_empty();
        let mut fields = Pairs::parse(text);
        let mut changed = false;
        if sent {
            for name in &ops.remove {
                fields.remove(name);
                changed = true;
            }
            for (old, new) in &ops.rename {
                changed |= fields.rename(old, &new.render(env));
            }
            for (name, t) in &ops.replace {
                changed |= fields.replace(name, &t.render(env));
            }
        }
        for (name, t) in &ops.add {
            if !fields.has(name) {
                fields.push(name, Some(&t.render(env)));
                changed = true;
            }
        }
        for (name, t) in &ops.append {
            fields.push(name, Some(&t.render(env)));
            changed = true;
        }
        changed.then(|| fields.to_text().into_bytes())
    }

    /// A multipart body changed, in Kong's order for it (rename before remove; `append` does
    /// not apply, as in Kong); `None` leaves it as it is. A value holding the boundary is refused.
    fn multipart_body(&self, body: &[u8], boundary: &str, env: &Env<'_>) -> Result<Option<Vec<u8>>, Reply> {
        let ops = &self.body;
        let Some(mut form) = Multipart::parse(body, boundary) else { return Ok(None) };
        let sent = !body.is_empty();
        let mut changed = false;
        if sent {
            for (old, new) in &ops.rename {
                changed |= form.rename(old, &new.render(env));
            }
            for name in &ops.remove {
                form.remove(name);
                changed = true;
            }
            for (name, t) in &ops.replace {
                changed |= form.replace(name, &t.render(env));
            }
        }
        for (name, t) in &ops.add {
            if !form.has(name) {
                form.push(name, &t.render(env));
                changed = true;
            }
        }
        if !changed {
            return Ok(None);
        }
        form.to_bytes().map(Some).ok_or_else(|| Reply::status(StatusCode::BAD_REQUEST))
    }

    fn transform_query(&self, ex: &mut Exchange<'_>, env: &Env<'_>) {
        let ops = &self.query;
        if ops.is_empty() {
            return;
        }
        let mut args = ex.query.as_deref().map(Pairs::parse).unwrap_or_default();
        for name in &ops.remove {
            args.remove(name);
        }
        for (old, new) in &ops.rename {
            args.rename(old, &new.render(env));
        }
        for (name, t) in &ops.replace {
            args.replace(name, &t.render(env));
        }
        for (name, t) in &ops.add {
            if !args.has(name) {
                args.push(name, Some(&t.render(env)));
            }
        }
        for (name, t) in &ops.append {
            args.push(name, Some(&t.render(env)));
        }
        ex.query = (!args.is_empty()).then(|| args.to_text());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::consumers::Consumers;
    use crate::exchange::RequestBody;
    use crate::plugins::transformer::testing;

    /// What a case checks of the request as it would be forwarded.
    enum Want {
        /// Every value of a header, joined with `, `; None: absent.
        Header(&'static str, Option<&'static str>),
        /// The whole query string.
        Query(Option<&'static str>),
        /// Every value of a query argument.
        Arg(&'static str, &'static [&'static str]),
        /// Every value of a url-encoded body field.
        Field(&'static str, &'static [&'static str]),
        /// The body, exactly.
        Body(&'static str),
        /// The body as JSON.
        Json(Value),
        Method(&'static str),
        /// The path the upstream is asked for (None: the route's own).
        Path(Option<&'static str>),
        /// The Host the upstream gets (None: the usual).
        Host(Option<&'static str>),
        /// The plugin answered instead.
        Status(u16),
    }

    struct Case {
        what: &'static str,
        config: Value,
        method: &'static str,
        /// Path and query.
        target: &'static str,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
        captures: Captures,
        want: Vec<Want>,
    }

    fn case(what: &'static str, config: Value) -> Case {
        Case {
            what,
            config,
            method: "GET",
            target: "/request",
            headers: &[],
            body: "",
            captures: Captures::default(),
            want: vec![],
        }
    }

    impl Case {
        fn send(
            mut self,
            method: &'static str,
            target: &'static str,
            headers: &'static [(&'static str, &'static str)],
            body: &'static str,
        ) -> Self {
            (self.method, self.target, self.headers, self.body) = (method, target, headers, body);
            self
        }

        fn captures(mut self, captures: Captures) -> Self {
            self.captures = captures;
            self
        }

        fn want(mut self, want: Vec<Want>) -> Self {
            self.want = want;
            self
        }
    }

    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
    const JSON: (&str, &str) = ("content-type", "application/json");
    const MULTI: (&str, &str) = ("content-type", "multipart/form-data; boundary=XXX");

    /// Runs the plugin on the case's request; a description of every unmet want.
    async fn run(c: Case) -> Vec<String> {
        let plugin = match testing::compiled(compile, c.config.clone()) {
            Ok(Plugin::RequestTransformer(p)) => p,
            Ok(_) => unreachable!("a request-transformer"),
            Err(e) => return vec![format!("{}: refused: {e}", c.what)],
        };
        let (conn, consumers, route) = (testing::conn(), Consumers::default(), testing::route());
        let mut headers = HeaderMap::new();
        for (k, v) in c.headers {
            headers.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_static(v));
        }
        if !c.body.is_empty() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(c.body.len()));
        }
        let body = Bytes::from_static(c.body.as_bytes());
        let mut ex = testing::exchange(&conn, &consumers, &route, c.method, c.target, headers, body);
        ex.uri_captures = c.captures;
        let outcome = plugin.access(&mut ex).await;
        let body = match &ex.body {
            RequestBody::Buffered(b) => String::from_utf8_lossy(b).into_owned(),
            RequestBody::Stream(_) => unreachable!("tests send buffered bodies"),
        };
        let all = |pairs: Pairs, name: &str| -> Vec<String> {
            pairs.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.unwrap_or("true").to_string()).collect()
        };
        let mut missed = Vec::new();
        for want in &c.want {
            let (ok, got) = match want {
                Want::Header(name, value) => {
                    let got: Vec<&str> = ex.headers.get_all(*name).iter().map(|v| v.to_str().unwrap()).collect();
                    let got = (!got.is_empty()).then(|| got.join(", "));
                    (got.as_deref() == *value, format!("{name}: {got:?}"))
                }
                Want::Query(q) => (ex.query.as_deref() == *q, format!("query {:?}", ex.query)),
                Want::Arg(name, values) => {
                    let got = all(ex.query.as_deref().map(Pairs::parse).unwrap_or_default(), name);
                    (got == *values, format!("argument {name}: {got:?}"))
                }
                Want::Field(name, values) => {
                    let got = all(Pairs::parse(&body), name);
                    (got == *values, format!("field {name}: {got:?}"))
                }
                Want::Body(b) => (body == *b, format!("body {body:?}")),
                Want::Json(v) => {
                    let parsed = serde_json::from_str::<Value>(&body).ok();
                    let length = ex.header(&header::CONTENT_LENGTH).map(str::to_string);
                    (
                        parsed.as_ref() == Some(v) && length == Some(body.len().to_string()),
                        format!("body {body} ({length:?})"),
                    )
                }
                Want::Method(m) => (ex.method.as_str() == *m, format!("method {}", ex.method)),
                Want::Path(p) => (ex.upstream_path.as_deref() == *p, format!("path {:?}", ex.upstream_path)),
                Want::Host(h) => (ex.upstream_host.as_deref() == *h, format!("host {:?}", ex.upstream_host)),
                Want::Status(s) => match &outcome {
                    Err(reply) => (reply.status.as_u16() == *s, format!("answered {}", reply.status)),
                    Ok(()) => (false, "forwarded".to_string()),
                },
            };
            let answered = !matches!(want, Want::Status(_)) && outcome.is_err();
            if !ok || answered {
                missed.push(format!("{}: {got}{}", c.what, if answered { " (but it answered)" } else { "" }));
            }
        }
        missed
    }

    async fn check(cases: Vec<Case>) {
        let mut missed = Vec::new();
        for c in cases {
            missed.extend(run(c).await);
        }
        assert!(missed.is_empty(), "\n{}", missed.join("\n"));
    }

    /// Kong's spec/03-plugins/36-request-transformer/02-access_spec.lua, case by case.
    #[tokio::test]
    async fn kongs_access_spec() {
        use Want::*;
        let route1 =
            || json!({"add": {"headers": ["h1:v1", "h2:value:2"], "querystring": ["q1:v1"], "body": ["p1:v1"]}});
        let route3 = || {
            json!({
                "add": {"headers": ["x-added:a1", "x-added2:b1", "x-added3:c2"],
                        "querystring": ["query-added:newvalue", "p1:anything:1"], "body": ["newformparam:newvalue"]},
                "remove": {"headers": ["x-to-remove"], "querystring": ["toremovequery"]},
                "append": {"headers": ["x-added:a2", "x-added:a3"], "querystring": ["p1:a2", "p2:b1"]},
                "replace": {"headers": ["x-to-replace:false"], "querystring": ["toreplacequery:no"]},
            })
        };
        let route4 =
            || json!({"remove": {"headers": ["x-to-remove"], "querystring": ["q1"], "body": ["toremoveform"]}});
        let route5 = || json!({"replace": {"headers": ["h1:v1"], "querystring": ["q1:v1"], "body": ["p1:v1"]}});
        let route6 = || {
            json!({"append": {"headers": ["h1:v1", "h1:v2", "h2:v1"], "querystring": ["q1:v1", "q1:v2", "q2:v1"],
                               "body": ["p1:v1", "p1:v2", "p2:value:1"]}})
        };
        let route9 = || {
            json!({"rename": {"headers": ["x-to-rename:x-is-renamed"], "querystring": ["originalparam:renamedparam"],
                               "body": ["originalparam:renamedparam"]}})
        };
        let route26 = || {
            json!({
                "add": {"headers": ["X-aDDed:a1", "x-aDDed2:b1", "x-Added3:c2"]},
                "remove": {"headers": ["X-To-Remove"]},
                "append": {"headers": ["X-aDDed:a2", "X-aDDed:a3"]},
                "replace": {"headers": ["x-to-Replace:false"]},
            })
        };
        let users = || {
            testing::captures(&["/requests/user1/foo/user2/bar", "foo", "bar"], &[("user1", "foo"), ("user2", "bar")])
        };
        let cases = vec![
            // http method
            case("GET to POST", json!({"http_method": "POST"}))
                .send("GET", "/request?hello=world&name=marco", &[], "")
                .want(vec![Method("POST"), Arg("hello", &["world"]), Arg("name", &["marco"])]),
            case("POST to GET moves the form into the query", json!({"http_method": "GET"}))
                .send("POST", "/request?hello=world", &[FORM], "name=marco")
                .want(vec![Method("GET"), Arg("hello", &["world"]), Arg("name", &["marco"]), Body("name=marco")]),
            case(
                "GET to POST with a JSON body",
                json!({"http_method": "POST", "add": {"headers": ["Content-Type:application/json"], "body": ["body:somecontent"]}}),
            )
            .want(vec![Method("POST"), Header("content-type", Some("application/json")), Json(json!({"body": "somecontent"}))]),
            // remove
            case("remove a header", route4())
                .send("GET", "/request", &[("x-to-remove", "true"), ("x-another-header", "true")], "")
                .want(vec![Header("x-to-remove", None), Header("x-another-header", Some("true"))]),
            case("remove a form field", route4())
                .send("POST", "/request", &[FORM], "toremoveform=yes&nottoremove=yes")
                .want(vec![Body("nottoremove=yes"), Header("content-length", Some("15"))]),
            case("remove a JSON member", route4())
                .send("POST", "/request", &[JSON], r#"{"toremoveform":"yes","nottoremove":"yes"}"#)
                .want(vec![Json(json!({"nottoremove": "yes"}))]),
            case("malformed JSON passes unchanged", route4())
                .send("POST", "/request", &[JSON], "malformed json body")
                .want(vec![Body("malformed json body")]),
            case("an empty JSON body becomes {}", route4())
                .send("POST", "/request", &[JSON], "")
                .want(vec![Body(""), Header("content-length", None)]),
            case("an empty body without a type", route4()).send("POST", "/request", &[], "").want(vec![Body("")]),
            case(
                "remove a multipart field",
                json!({"remove": {"body": ["toremoveform"]}}),
            )
            .send(
                "POST",
                "/request",
                &[MULTI],
                "--XXX\r\nContent-Disposition: form-data; name=\"toremoveform\"\r\n\r\nyes\r\n--XXX\r\nContent-Disposition: form-data; name=\"nottoremove\"\r\n\r\nyes\r\n--XXX--\r\n",
            )
            .want(vec![Body("--XXX\r\nContent-Disposition: form-data; name=\"nottoremove\"\r\n\r\nyes\r\n--XXX--\r\n")]),
            case("remove a query argument", route4())
                .send("GET", "/request?q1=v1&q2=v2", &[FORM], "hello=world")
                .want(vec![Query(Some("q2=v2"))]),
            case("remove keeps an empty JSON array", route4())
                .send("POST", "/request", &[JSON], r#"{"emptyarray":[]}"#)
                .want(vec![Body(r#"{"emptyarray":[]}"#)]),
            // rename
            case("rename a header", route9())
                .send("GET", "/request", &[("x-to-rename", "true"), ("x-another-header", "true")], "")
                .want(vec![Header("x-to-rename", None), Header("x-is-renamed", Some("true")), Header("x-another-header", Some("true"))]),
            case("rename without the header adds nothing", route9())
                .send("GET", "/request", &[("x-a-header", "true")], "")
                .want(vec![Header("x-is-renamed", None), Header("x-a-header", Some("true"))]),
            case("rename replaces the target header", route9())
                .send("GET", "/request", &[("x-to-rename", "new-result"), ("X-Is-Renamed", "old-result")], "")
                .want(vec![Header("x-to-rename", None), Header("x-is-renamed", Some("new-result"))]),
            case("rename a form field", route9())
                .send("POST", "/request", &[FORM], "originalparam=yes")
                .want(vec![Field("originalparam", &[]), Field("renamedparam", &["yes"])]),
            case("rename without the form field", route9())
                .send("POST", "/request", &[FORM], "x-a-header=true")
                .want(vec![Body("x-a-header=true")]),
            case("rename a JSON member", route9())
                .send("POST", "/request", &[JSON], r#"{"originalparam":"yes","nottorename":"yes"}"#)
                .want(vec![Json(json!({"renamedparam": "yes", "nottorename": "yes"}))]),
            case("rename a multipart field", route9())
                .send(
                    "POST",
                    "/request",
                    &[MULTI],
                    "--XXX\r\nContent-Disposition: form-data; name=\"originalparam\"\r\n\r\nyes\r\n--XXX--\r\n",
                )
                .want(vec![Body("--XXX\r\nContent-Disposition: form-data; name=\"renamedparam\"\r\n\r\nyes\r\n--XXX--\r\n")]),
            case("rename a query argument", route9())
                .send("GET", "/request?originalparam=true&nottorename=true", &[], "")
                .want(vec![Query(Some("renamedparam=true&nottorename=true"))]),
            case("rename to a missing argument keeps the query", json!({"rename": {"querystring": ["inexist:exist"]}}))
                .send("GET", "/request?exist=true", &[], "")
                .want(vec![Query(Some("exist=true"))]),
            case("rename to the same header keeps it", json!({"rename": {"headers": ["identical:identical", "rename:Rename"]}}))
                .send("GET", "/request", &[("identical", "true"), ("rename", "true")], "")
                .want(vec![Header("identical", Some("true")), Header("rename", Some("true"))]),
            // replace
            case("replace a header that exists", route5())
                .send("GET", "/request", &[("h1", "V"), ("h2", "v2")], "")
                .want(vec![Header("h1", Some("v1")), Header("h2", Some("v2"))]),
            case("replace adds no header", route5())
                .send("GET", "/request", &[("h2", "v2")], "")
                .want(vec![Header("h1", None), Header("h2", Some("v2"))]),
            case("replace a form field", route5())
                .send("POST", "/request", &[FORM], "p1=v&p2=v1")
                .want(vec![Body("p1=v1&p2=v1")]),
            case("replace adds no form field", route5())
                .send("POST", "/request", &[FORM], "p2=v1")
                .want(vec![Body("p2=v1")]),
            case("replace a JSON member", route5())
                .send("POST", "/request", &[JSON], r#"{"p1":"v","p2":"v1"}"#)
                .want(vec![Json(json!({"p1": "v1", "p2": "v1"}))]),
            case("replace adds no JSON member", route5())
                .send("POST", "/request", &[JSON], r#"{"p2":"v1"}"#)
                .want(vec![Body(r#"{"p2":"v1"}"#)]),
            case("replace a multipart field", route5())
                .send(
                    "POST",
                    "/request",
                    &[MULTI],
                    "--XXX\r\nContent-Disposition: form-data; name=\"p1\"\r\n\r\nv\r\n--XXX\r\nContent-Disposition: form-data; name=\"p2\"\r\n\r\nv1\r\n--XXX--\r\n",
                )
                .want(vec![Body("--XXX\r\nContent-Disposition: form-data; name=\"p1\"\r\n\r\nv1\r\n--XXX\r\nContent-Disposition: form-data; name=\"p2\"\r\n\r\nv1\r\n--XXX--\r\n")]),
            case("replace a query argument", route5())
                .send("POST", "/request?q1=v&q2=v2", &[FORM], "hello=world")
                .want(vec![Query(Some("q1=v1&q2=v2"))]),
            case("replace adds no query argument", route5())
                .send("POST", "/request?q2=v2", &[FORM], "hello=world")
                .want(vec![Query(Some("q2=v2"))]),
            case("replace keeps an empty JSON array", route5())
                .send("POST", "/request", &[JSON], r#"{"emptyarray":[], "p1":"v"}"#)
                .want(vec![Json(json!({"emptyarray": [], "p1": "v1"}))]),
            case("replace.uri with named captures", json!({"replace": {"uri": "/requests/user2/$(uri_captures.user2)/user1/$(uri_captures.user1)"}}))
                .send("GET", "/requests/user1/foo/user2/bar", &[], "")
                .captures(users())
                .want(vec![Path(Some("/requests/user2/bar/user1/foo"))]),
            case("replace.uri with the whole match", json!({"replace": {"uri": "/requests$(uri_captures[0])"}}))
                .send("GET", "/user1/foo/user2/bar", &[], "")
                .captures(testing::captures(&["/user1/foo/user2/bar", "foo", "bar"], &[]))
                .want(vec![Path(Some("/requests/user1/foo/user2/bar"))]),
            case("replace.uri with an optional capture", json!({"replace": {"uri": "/api/v2/$(uri_captures[\"subpath\"])"}}))
                .send("GET", "/gw/api/htest", &[], "")
                .captures(testing::captures(&["/gw/api/htest", "gw/", "htest"], &[("subpath", "htest")]))
                .want(vec![Path(Some("/api/v2/htest"))]),
            case("replace.uri escapes UTF-8", json!({"replace": {"uri": "/requests/tést"}}))
                .want(vec![Path(Some("/requests/t%C3%A9st"))]),
            // add
            case("add headers", route1()).want(vec![Header("h1", Some("v1")), Header("h2", Some("value:2"))]),
            case("add keeps a header", route1())
                .send("GET", "/request", &[("h1", "v3")], "")
                .want(vec![Header("h1", Some("v3")), Header("h2", Some("value:2"))]),
            case("add a form field", route1())
                .send("POST", "/request", &[FORM], "hello=world")
                .want(vec![Body("hello=world&p1=v1")]),
            case("add keeps a form field", route1())
                .send("POST", "/request", &[FORM], "p1=should%20not%20change&hello=world")
                .want(vec![Field("p1", &["should not change"]), Field("hello", &["world"])]),
            case("add a JSON member", route1())
                .send("POST", "/request", &[JSON], r#"{"hello":"world"}"#)
                .want(vec![Json(json!({"hello": "world", "p1": "v1"}))]),
            case("add keeps a JSON member", route1())
                .send("POST", "/request", &[JSON], r#"{"p1":"this should not change","hello":"world"}"#)
                .want(vec![Body(r#"{"p1":"this should not change","hello":"world"}"#)]),
            case("add to malformed JSON changes nothing", route1())
                .send("POST", "/request", &[JSON], "malformed json body")
                .want(vec![Body("malformed json body")]),
            case("add a multipart field to an empty body", route1())
                .send("POST", "/request", &[MULTI], "")
                .want(vec![Body("--XXX\r\nContent-Disposition: form-data; name=\"p1\"\r\n\r\nv1\r\n--XXX--\r\n")]),
            case("add a query argument", route1())
                .send("GET", "/request?q2=v2", &[], "")
                .want(vec![Query(Some("q2=v2&q1=v1"))]),
            case("add keeps a query argument", route1())
                .send("GET", "/request?q1=v2", &[], "")
                .want(vec![Query(Some("q1=v2"))]),
            case("add keeps an empty JSON array", route1())
                .send("POST", "/request", &[JSON], r#"{"emptyarray":[]}"#)
                .want(vec![Body(r#"{"emptyarray":[],"p1":"v1"}"#)]),
            // append
            case("append a header", route6()).want(vec![Header("h1", Some("v1, v2")), Header("h2", Some("v1"))]),
            case("append to a header", route6())
                .send("GET", "/request", &[("h1", "v0")], "")
                .want(vec![Header("h1", Some("v0, v1, v2"))]),
            case("append a value with #", json!({"append": {"headers": ["h1:v1", "h1:v2", "h1:#value_with_hash"]}}))
                .want(vec![Header("h1", Some("v1, v2, #value_with_hash"))]),
            case("append query arguments", route6())
                .send("POST", "/request", &[FORM], "hello=world")
                .want(vec![Arg("q1", &["v1", "v2"]), Arg("q2", &["v1"])]),
            case("append form fields", route6())
                .send("POST", "/request", &[FORM], "")
                .want(vec![Field("p1", &["v1", "v2"]), Field("p2", &["value:1"])]),
            case("append to a form field", route6())
                .send("POST", "/request", &[FORM], "p1=v0")
                .want(vec![Field("p1", &["v0", "v1", "v2"]), Field("p2", &["value:1"])]),
            case("append leaves multipart alone", route6())
                .send("POST", "/request", &[MULTI], "--XXX\r\nContent-Disposition: form-data; name=\"p1\"\r\n\r\nThis should not change\r\n--XXX--\r\n")
                .want(vec![Body("--XXX\r\nContent-Disposition: form-data; name=\"p1\"\r\n\r\nThis should not change\r\n--XXX--\r\n")]),
            case("append JSON members", route6())
                .send("POST", "/request", &[JSON], r#"{"emptyarray":[],"p1":"v0"}"#)
                .want(vec![Json(json!({"emptyarray": [], "p1": ["v0", "v1", "v2"], "p2": ["value:1"]}))]),
            // all together
            case("remove, replace, add and append", route3())
                .send("GET", "/request?toremovequery=yes&nottoremove=yes&toreplacequery=yes&q1=20", &[("x-to-remove", "true"), ("x-to-replace", "true"), ("x-added3", "c1")], "")
                .want(vec![
                    Header("x-to-remove", None),
                    Header("x-to-replace", Some("false")),
                    Header("x-added", Some("a1, a2, a3")),
                    Header("x-added2", Some("b1")),
                    Header("x-added3", Some("c1")),
                    Query(Some("nottoremove=yes&toreplacequery=no&q1=20&query-added=newvalue&p1=anything%3A1&p1=a2&p2=b1")),
                ]),
            case("header names without case", route26())
                .send("GET", "/request", &[("x-to-remove", "true"), ("x-to-replace", "true"), ("X-addeD", "a0")], "")
                .want(vec![
                    Header("x-to-remove", None),
                    Header("x-to-replace", Some("false")),
                    Header("x-added", Some("a0, a2, a3")),
                    Header("x-added2", Some("b1")),
                    Header("x-added3", Some("c2")),
                ]),
            case("remove then add a header", json!({"http_method": "POST", "remove": {"headers": ["Authorization"]}, "add": {"headers": ["Authorization:Basic test"]}}))
                .send("GET", "/", &[("Authorization", "Basic dGVzdDp0ZXN0"), JSON], "")
                .want(vec![Header("authorization", Some("Basic test"))]),
            case("no configuration changes nothing", json!({}))
                .send("GET", "/request?expected=$&+,/:;?@", &[], "")
                .want(vec![Query(Some("expected=$&+,/:;?@"))]),
            // templates
            case("templates as query arguments", json!({"add": {"querystring": ["uri_param1:$(uri_captures.user1)", "uri_param2[some_index][1]:$(uri_captures.user2)"]}}))
                .send("GET", "/requests/user1/foo/user2/bar?q1=20", &[FORM], "hello=world")
                .captures(users())
                .want(vec![Query(Some("q1=20&uri_param1=foo&uri_param2%5Bsome_index%5D%5B1%5D=bar"))]),
            case("templates with defaults", json!({"add": {"querystring": ["uri_param1:$(uri_captures.user1 or 'default1')", "uri_param2:$(uri_captures.user2 or 'default2')"]}}))
                .send("GET", "/requests/?q1=20", &[], "")
                .want(vec![Arg("q1", &["20"]), Arg("uri_param1", &["default1"]), Arg("uri_param2", &["default2"])]),
            case("templates read headers and the query", json!({
                "add": {"querystring": ["uri_param1:$(uri_captures.user1)", "uri_param2:$(headers.host)"], "headers": ["x-test-header:$(query_params.q1)"]},
                "remove": {"querystring": ["q1"]}}))
                .send("GET", "/requests/user1/foo/user2/bar?q1=20", &[("host", "test15.test")], "")
                .captures(users())
                .want(vec![Arg("q1", &[]), Arg("uri_param1", &["foo"]), Arg("uri_param2", &["test15.test"]), Header("x-test-header", Some("20"))]),
            case("a removed header can be a template", json!({
                "replace": {"querystring": ["q2:$(headers['x-remove-header'])"]},
                "add": {"querystring": ["q1:$(uri_captures.user1)"], "headers": ["x-test-header:$(headers['x-remove-header'])"]},
                "remove": {"headers": ["x-remove-header"]}}))
                .send("GET", "/requests/user1/foo/user2/bar?q2=20", &[("x-remove-header", "its a test")], "")
                .captures(users())
                .want(vec![Header("x-remove-header", None), Arg("q1", &["foo"]), Arg("q2", &["its a test"]), Header("x-test-header", Some("its a test"))]),
            case("templates see a replaced header's old value", json!({
                "replace": {"querystring": ["q2:$(headers['x-replace-header'])"], "headers": ["x-replace-header:the new value"]},
                "add": {"querystring": ["q1:$(uri_captures.user1)"], "headers": ["x-test-header:$(headers['x-replace-header'])"]}}))
                .send("GET", "/requests/user1/foo/user2/bar?q2=20", &[("x-replace-header", "the old value")], "")
                .captures(users())
                .want(vec![Arg("q1", &["foo"]), Arg("q2", &["the old value"]), Header("x-test-header", Some("the old value")), Header("x-replace-header", Some("the new value"))]),
            case("a template escaped Kong's way", json!({"add": {"querystring": ["q1:$('$(uri_captures.user1)')"]}}))
                .send("GET", "/requests/user1/foo/user2/bar?q2=20", &[], "")
                .captures(users())
                .want(vec![Arg("q1", &["$(uri_captures.user1)"]), Arg("q2", &["20"])]),
            // Host
            case("add never changes Host", json!({"replace": {"headers": ["x-other:1"]}}))
                .send("GET", "/get", &[("host", "test2.test")], "")
                .want(vec![Header("host", Some("test2.test")), Host(None)]),
            case("replace host sets the upstream's Host", json!({"replace": {"headers": ["host:$(headers.x_target)"]}}))
                .send("GET", "/get", &[("host", "test2.test"), ("x-target", "internal.test")], "")
                .want(vec![Host(Some("internal.test"))]),
            // Ward's own answers
            case("a header value a template cannot hold", json!({"add": {"headers": ["x-q:$(query_params.q)"]}}))
                .send("GET", "/request?q=a%0D%0Ab", &[], "")
                .want(vec![Status(400)]),
            case("a path segment from a header is one segment", json!({"replace": {"uri": "/api/$(headers.x_tenant)"}}))
                .send("GET", "/request", &[("x-tenant", "a/../b?c")], "")
                .want(vec![Path(Some("/api/a%2F..%2Fb%3Fc"))]),
            case("a dot segment from a header is refused", json!({"replace": {"uri": "/api/$(headers.x_tenant)"}}))
                .send("GET", "/request", &[("x-tenant", "..")], "")
                .want(vec![Status(400)]),
            case("a path not starting with /", json!({"replace": {"uri": "$(uri_captures.nope)x"}})).want(vec![Status(500)]),
            case("a multipart value holding the boundary", json!({"add": {"body": ["p9:$(headers.x_v)"]}}))
                .send("POST", "/request", &[MULTI, ("x-v", "a --XXX b")], "")
                .want(vec![Status(400)]),
        ];
        check(cases).await;
    }

    #[tokio::test]
    async fn bodies_past_the_limit_are_refused_not_read() {
        let big: &'static str = Box::leak("a".repeat(BODY_LIMIT + 1).into_boxed_str());
        let config = || json!({"add": {"body": ["p1:v1"]}});
        check(vec![
            case("a body past the limit", config()).send("POST", "/", &[FORM], big).want(vec![Want::Status(413)]),
            case("a body of another type is not read", config())
                .send("POST", "/", &[("content-type", "text/plain")], big)
                .want(vec![Want::Header("content-type", Some("text/plain"))]),
        ])
        .await;
    }

    #[test]
    fn configurations_kong_refuses_and_those_ward_cannot_evaluate() {
        let table = [
            (json!({"http_method": "HELLO!"}), "plugins[3].config.http_method: 'HELLO!' is not a method"),
            (
                json!({"add": {"querystring": ["uri_param2:"]}}),
                "plugins[3].config.add.querystring[0]: 'uri_param2' has no value",
            ),
            (
                json!({"add": {"headers": ["just_a_key"]}}),
                "plugins[3].config.add.headers[0]: 'just_a_key' has no value",
            ),
            (
                json!({"replace": {"headers": ["just_a_key"]}}),
                "plugins[3].config.replace.headers[0]: 'just_a_key' has no value",
            ),
            (
                json!({"append": {"headers": ["just_a_key"]}}),
                "plugins[3].config.append.headers[0]: 'just_a_key' has no value",
            ),
            (
                json!({"add": {"headers": ["ok:1", "x-requ,est-id:v"]}}),
                "plugins[3].config.add.headers[1]: 'x-requ,est-id' is not a valid header name",
            ),
            (
                json!({"rename": {"headers": ["x-a:x b"]}}),
                "plugins[3].config.rename.headers[0]: 'x b' is not a valid header name",
            ),
            (
                json!({"add": {"querystring": ["uri_param2:$(uri_captures user2)"]}}),
                "plugins[3].config.add.querystring[0]: $(uri_captures user2): Ward evaluates only",
            ),
            (
                json!({"replace": {"uri": "/requests/user2/$(10 * uri_captures.user1)"}}),
                "plugins[3].config.replace.uri: $(10 * uri_captures.user1): '*': Ward evaluates only",
            ),
            (
                json!({"add": {"querystring": ["q1:$(ERROR())"]}}),
                "plugins[3].config.add.querystring[0]: $(ERROR()): '(': Ward evaluates only",
            ),
            (
                json!({"add": {"querystring": ["shared_param1:$(shared.my_version)"]}}),
                "plugins[3].config.add.querystring[0]: $(shared.my_version): kong.ctx.shared",
            ),
            (
                json!({"add": {"headers": ["X-Write-Attempt:$(shared.written = true)"]}}),
                "plugins[3].config.add.headers[0]: $(shared.written = true): kong.ctx.shared",
            ),
            (
                json!({"add": {"headers": ["x-user-agent:$(foo(headers[\"User-Agent\"]))"]}}),
                "plugins[3].config.add.headers[0]: $(foo(headers[\"User-Agent\"])): '(': Ward evaluates only",
            ),
            (
                json!({"replace": {"uri": "/status/\\$(uri_captures[\"status\"])"}}),
                "plugins[3].config.replace.uri: '\\$(' is not an escape",
            ),
            (json!({"replace": {"uri": "/a?b=1"}}), "plugins[3].config.replace.uri: is a path"),
            (json!({"replace": {"uri": "relative"}}), "plugins[3].config.replace.uri: must start with /"),
            (
                json!({"add": {"headers": ["host:mark"]}}),
                "plugins[3].config.add.headers[0]: 'host': Kong leaves Host alone here",
            ),
            (
                json!({"remove": {"headers": ["Host"]}}),
                "plugins[3].config.remove.headers[0]: 'Host': Kong leaves Host alone here",
            ),
            (
                json!({"append": {"headers": ["content-length:5"]}}),
                "plugins[3].config.append.headers[0]: 'content-length': the gateway frames",
            ),
            (
                json!({"add": {"headers": ["connection:close"]}}),
                "plugins[3].config.add.headers[0]: 'connection': a hop-by-hop header",
            ),
            (
                json!({"add": {"headers": ["X-Forwarded-For:1.2.3.4"]}}),
                "plugins[3].config.add.headers[0]: 'X-Forwarded-For': the gateway sets",
            ),
            (
                json!({"add": {"headers": ["x-a:\u{1}"]}}),
                "plugins[3].config.add.headers[0]: '\u{1}' is not a valid header value",
            ),
            (json!({"add": {"uri": "/x"}}), "plugins[3].config.add.uri: unknown field"),
            (json!({"remove": {"headers": [":x"]}}), "plugins[3].config.remove.headers[0]: ':x' has no name"),
            (json!({"add": {"headers": "h1:v1"}}), "plugins[3].config.add.headers: invalid type"),
        ];
        let mut missed = Vec::new();
        for (config, want) in table {
            match testing::compiled(compile, config.clone()) {
                Ok(_) => missed.push(format!("{config} was accepted")),
                Err(e) if !e.contains(want) => missed.push(format!("{config}: wanted {want}\n  got {e}")),
                Err(_) => {}
            }
        }
        assert!(missed.is_empty(), "\n{}", missed.join("\n"));
        for ok in [
            json!({"http_method": "GET"}),
            json!({"add": {"querystring": ["uri_param1:$(uri_captures.user1)", "uri_param2:value"]}}),
            json!({"remove": {"headers": ["just_a_key"], "body": ["just_a_key"], "querystring": ["just_a_key"]}}),
            json!({"replace": {"headers": ["host:$(headers.x_target)"]}}),
        ] {
            assert!(testing::compiled(compile, ok.clone()).is_ok(), "{ok}");
        }
    }
}
