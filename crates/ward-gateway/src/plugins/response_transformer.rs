//! response-transformer: changes the response the client gets, as Kong's plugin of the same
//! name does: its headers, then, for a JSON response, the members of its top-level object,
//! each by `remove`, `rename`, `replace`, `add`, `append`. It acts on every response of the
//! route, the upstream's and the gateway's own (a plugin's refusal, an upstream error).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Number, Value};

use super::transformer::{
    Bounded, appended, header_name, is_json_media_type, items, read_bounded, rename_headers, rename_member, truthy,
};
use super::{BODY_LIMIT, Compile, Plugin};
use crate::reply::Body;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Names {
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    json: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Values {
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    json: Vec<String>,
    #[serde(default)]
    json_types: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    remove: Names,
    #[serde(default)]
    rename: Names,
    #[serde(default)]
    replace: Values,
    #[serde(default)]
    add: Values,
    #[serde(default)]
    append: Values,
}

/// A compiled response-transformer configuration.
pub(crate) struct ResponseTransformer {
    remove_headers: Vec<HeaderName>,
    rename_headers: Vec<(HeaderName, HeaderName)>,
    replace_headers: Vec<(HeaderName, HeaderValue)>,
    add_headers: Vec<(HeaderName, HeaderValue)>,
    append_headers: Vec<(HeaderName, HeaderValue)>,
    remove_json: Vec<String>,
    rename_json: Vec<(String, String)>,
    replace_json: Vec<(String, Value)>,
    add_json: Vec<(String, Value)>,
    append_json: Vec<(String, Value)>,
}

/// A header name of an item, refused (with the reason) when the plugin may not change it.
fn checked_header(cx: &mut Compile<'_>, field: &str, name: &str, target: bool) -> Option<HeaderName> {
    let Some(parsed) = header_name(name) else {
        cx.error(field, format!("'{name}' is not a valid header name (letters, digits, '-' and '_')"));
        return None;
    };
    let why = if parsed == header::CONTENT_LENGTH || parsed == header::TRANSFER_ENCODING {
        Some("the gateway frames the body it sends itself")
    } else if target && ward_http::headers::HOP_BY_HOP.contains(&parsed) {
        Some("a hop-by-hop header is never forwarded")
    } else {
        None
    };
    match why {
        Some(why) => {
            cx.error(field, format!("'{name}': {why}"));
            None
        }
        None => Some(parsed),
    }
}

fn header_values(cx: &mut Compile<'_>, field: &str, list: &[String]) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for item in items(cx, field, list, true) {
        let name = checked_header(cx, &item.field, item.name, true);
        let value = match HeaderValue::from_str(item.value) {
            Ok(v) => Some(v),
            Err(_) => {
                cx.error(&item.field, format!("'{}' is not a valid header value", item.value));
                None
            }
        };
        out.extend(name.zip(value));
    }
    out
}

/// A number as Lua's `tonumber` reads one (decimal, exponent, `0x` hex, blanks around),
/// written as Kong's JSON encoder writes it (integral values without a fraction).
pub(crate) fn lua_number(text: &str) -> Option<Number> {
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        let n = i64::from_str_radix(hex, 16).ok()?;
        return Some(Number::from(if negative { -n } else { n }));
    }
    if let Ok(n) = t.parse::<i64>() {
        return Some(Number::from(n));
    }
    // Rust reads `inf` and `nan`, Lua does not (and JSON cannot hold them).
    if !digits.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let f = t.parse::<f64>().ok().filter(|f| f.is_finite())?;
    if f.fract() == 0.0 && f.abs() < 1e15 {
        return Some(Number::from(f as i64));
    }
    Number::from_f64(f)
}

/// A JSON value of an item: a string, or, by its `json_types` entry, a number or a boolean.
fn typed(value: &str, json_type: Option<&str>) -> Result<Value, String> {
    match json_type {
        Some("number") => lua_number(value).map(Value::Number).ok_or_else(|| format!("'{value}' is not a number")),
        Some("boolean") => match value {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("'{value}' is not a boolean: write true or false")),
        },
        _ => Ok(Value::String(value.to_string())),
    }
}

const JSON_TYPES: [&str; 3] = ["boolean", "number", "string"];

fn json_values(cx: &mut Compile<'_>, of: &str, values: &Values) -> Vec<(String, Value)> {
    for (i, t) in values.json_types.iter().enumerate() {
        if !JSON_TYPES.contains(&t.as_str()) {
            cx.error(&format!("{of}.json_types[{i}]"), format!("'{t}' must be one of boolean, number, string"));
        } else if i >= values.json.len() {
            cx.error(&format!("{of}.json_types[{i}]"), format!("there is no {of}.json[{i}] for it to give a type"));
        }
    }
    let mut out = Vec::new();
    for item in items(cx, &format!("{of}.json"), &values.json, true) {
        let i = item.index;
        match typed(item.value, values.json_types.get(i).map(String::as_str)) {
            Ok(v) => out.push((item.name.to_string(), v)),
            Err(why) => cx.error(&item.field, format!("{why} ({of}.json_types[{i}] is {})", values.json_types[i])),
        }
    }
    out
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let errors_before = cx.errors.0.len();
    let mut remove_headers = Vec::new();
    for item in items(cx, "remove.headers", &c.remove.headers, false) {
        remove_headers.extend(checked_header(cx, &item.field, item.name, false));
    }
    let mut rename_headers = Vec::new();
    for item in items(cx, "rename.headers", &c.rename.headers, true) {
        let old = checked_header(cx, &item.field, item.name, false);
        let new = checked_header(cx, &item.field, item.value, true);
        rename_headers.extend(old.zip(new));
    }
    let replace_headers = header_values(cx, "replace.headers", &c.replace.headers);
    let add_headers = header_values(cx, "add.headers", &c.add.headers);
    let append_headers = header_values(cx, "append.headers", &c.append.headers);
    let remove_json = items(cx, "remove.json", &c.remove.json, false).iter().map(|i| i.name.to_string()).collect();
    let rename_json = items(cx, "rename.json", &c.rename.json, true)
        .iter()
        .map(|i| (i.name.to_string(), i.value.to_string()))
        .collect();
    let replace_json = json_values(cx, "replace", &c.replace);
    let add_json = json_values(cx, "add", &c.add);
    let append_json = json_values(cx, "append", &c.append);
    if cx.errors.0.len() > errors_before {
        return None;
    }
    Some(Plugin::ResponseTransformer(ResponseTransformer {
        remove_headers,
        rename_headers,
        replace_headers,
        add_headers,
        append_headers,
        remove_json,
        rename_json,
        replace_json,
        add_json,
        append_json,
    }))
}

/// Whether a response with this status has a body.
fn has_body(status: StatusCode) -> bool {
    !(status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED)
}

impl ResponseTransformer {
    fn changes_json(&self) -> bool {
        !(self.remove_json.is_empty()
            && self.rename_json.is_empty()
            && self.replace_json.is_empty()
            && self.add_json.is_empty()
            && self.append_json.is_empty())
    }

    /// The response with its headers and (a JSON object's) body changed; `head` says the
    /// client asked with HEAD.
    pub(super) async fn respond(&self, response: Response<Body>, head: bool) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        self.transform_headers(&mut parts.headers);
        if !self.changes_json() || head || !has_body(parts.status) || !self.is_plain_json(&parts.headers) {
            return Response::from_parts(parts, body);
        }
        let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|l| l > BODY_LIMIT as u64) {
            return Response::from_parts(parts, body);
        }
        match read_bounded(body, BODY_LIMIT).await {
            Bounded::Unread(body) => {
                tracing::debug!("response-transformer: body past {BODY_LIMIT} bytes (or unreadable) sent unchanged");
                Response::from_parts(parts, body)
            }
            Bounded::Whole(bytes) => {
                let body = match self.transform_json(&bytes) {
                    Some(new) => {
                        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(new.len()));
                        Bytes::from(new)
                    }
                    None => bytes,
                };
                Response::from_parts(parts, ward_http::body::full(body))
            }
        }
    }

    /// Whether the body is JSON by Kong's check of the Content-Type, and not compressed.
    fn is_plain_json(&self, headers: &HeaderMap) -> bool {
        let encoded = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        !encoded && content_type.is_some_and(is_json_media_type)
    }

    /// Kong's order on headers; each step sees what the ones before it did.
    fn transform_headers(&self, h: &mut HeaderMap) {
        for name in &self.remove_headers {
            h.remove(name);
        }
        rename_headers(h, &self.rename_headers);
        for (name, value) in &self.replace_headers {
            if h.contains_key(name) {
                h.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.add_headers {
            if !h.contains_key(name) {
                h.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.append_headers {
            h.append(name.clone(), value.clone());
        }
    }

    /// The body with its top-level object changed; `None` when it is not a JSON object.
    fn transform_json(&self, body: &[u8]) -> Option<Vec<u8>> {
        let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else { return None };
        for name in &self.remove_json {
            object.shift_remove(name);
        }
        for (old, new) in &self.rename_json {
            rename_member(&mut object, old, new);
        }
        for (name, value) in &self.replace_json {
            if truthy(object.get(name)) {
                object.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.add_json {
            if !truthy(object.get(name)) {
                object.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.append_json {
            let before = object.get(name).cloned();
            object.insert(name.clone(), appended(before, value.clone()));
        }
        Some(Value::Object(object).to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::json;

    use super::*;
    use crate::plugins::transformer::testing;

    fn plugin(config: Value) -> ResponseTransformer {
        match testing::compiled(compile, config) {
            Ok(Plugin::ResponseTransformer(p)) => p,
            Ok(_) => unreachable!("a response-transformer"),
            Err(e) => panic!("refused: {e}"),
        }
    }

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// Kong's spec/03-plugins/15-response-transformer/01-header_transformer_spec.lua.
    #[test]
    fn kongs_header_transformer_spec() {
        type Row<'a> = (Value, &'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]);
        let remove = json!({"remove": {"headers": ["h1", "h2", "h3"]}, "add": {"json": ["p1:v1"]}});
        let rename = json!({"rename": {"headers": ["h1:h2", "h3:h4"]}});
        let replace = json!({"replace": {"headers": ["h1:v1", "h2:value:2"]}});
        let add = json!({"add": {"headers": ["h2:v2"]}});
        let append = json!({"append": {"headers": ["h1:v2"]}});
        let together = json!({"remove": {"headers": ["h1:v1"]}, "replace": {"headers": ["h2:v3"]}, "add": {"headers": ["h3:v3"]}, "append": {"headers": ["h3:v4"]}});
        let table: Vec<Row<'_>> = vec![
            (remove.clone(), &[("h1", "value1"), ("h2", "value2a"), ("h2", "value2b")], &[]),
            (rename.clone(), &[("h1", "v1"), ("h3", "v3")], &[("h2", "v1"), ("h4", "v3")]),
            (rename.clone(), &[("h1", "")], &[("h2", "")]),
            (rename.clone(), &[], &[]),
            (rename.clone(), &[("h1", "v1"), ("h1", "v2")], &[("h2", "v1"), ("h2", "v2")]),
            (
                replace.clone(),
                &[("h1", "value1"), ("h2", "value2a"), ("h2", "value2b")],
                &[("h1", "v1"), ("h2", "value:2")],
            ),
            (replace.clone(), &[("h2", "value2a"), ("h2", "value2b")], &[("h2", "value:2")]),
            (add.clone(), &[("h1", "v1")], &[("h1", "v1"), ("h2", "v2")]),
            (add.clone(), &[("h1", "v1"), ("h2", "v3")], &[("h1", "v1"), ("h2", "v3")]),
            (append.clone(), &[], &[("h1", "v2")]),
            (append.clone(), &[("h1", "v1")], &[("h1", "v1"), ("h1", "v2")]),
            (together.clone(), &[("h1", "v1"), ("h2", "v2")], &[("h2", "v3"), ("h3", "v3"), ("h3", "v4")]),
            (json!({"rename": {"headers": ["Same:same"]}}), &[("same", "1")], &[("same", "1")]),
            (json!({"remove": {"headers": ["X-Upper"]}}), &[("x-upper", "1")], &[]),
        ];
        for (config, before, after) in table {
            let mut h = headers(before);
            plugin(config.clone()).transform_headers(&mut h);
            assert_eq!(h, headers(after), "{config} on {before:?}");
        }
    }

    /// Kong's spec/03-plugins/15-response-transformer/02-body_transformer_spec.lua, and the
    /// JSON values of 04-filter_spec.lua.
    #[test]
    fn kongs_body_transformer_spec() {
        let add = json!({"add": {
            "json": ["p1:v1", "p3:value:3", "p4:\"v1\"", "p5:-1", "p6:false", "p7:true"],
            "json_types": ["string", "string", "string", "number", "boolean", "boolean"]}});
        let added = |p2: Value| json!({"p1": "v1", "p2": p2, "p3": "value:3", "p4": "\"v1\"", "p5": -1, "p6": false, "p7": true});
        let append = json!({"append": {
            "json": ["p1:v1", "p3:\"v1\"", "p4:-1", "p5:false", "p6:true"],
            "json_types": ["string", "string", "number", "boolean", "boolean"]}});
        let rename = json!({"rename": {"json": ["p1:k1", "p2:k2", "p3:k3", "p4:k4", "p5:k5"]}});
        let replace = json!({"replace": {
            "json": ["p1:v2", "p2:\"v2\"", "p3:-1", "p4:false", "p5:true"],
            "json_types": ["string", "string", "number", "boolean", "boolean"]}});
        let together = json!({"remove": {"json": ["p1"]}, "rename": {"json": ["p4:p2"]}, "replace": {"json": ["p2:v2"]},
                              "add": {"json": ["p3:v1"]}, "append": {"json": ["p3:v2"]}});
        let remove = json!({"remove": {"json": ["p1", "p2"]}});
        let table: Vec<(Value, &str, Value)> = vec![
            (add.clone(), r#"{"p2":"v1"}"#, added(json!("v1"))),
            (add.clone(), r#"{"p2":-1}"#, added(json!(-1))),
            (add.clone(), r#"{"p2":false}"#, added(json!(false))),
            (add.clone(), r#"{"p2":"v1", "a":[]}"#, {
                let mut v = added(json!("v1"));
                v["a"] = json!([]);
                v
            }),
            (
                append.clone(),
                r#"{"p2":"v1"}"#,
                json!({"p2": "v1", "p1": ["v1"], "p3": ["\"v1\""], "p4": [-1], "p5": [false], "p6": [true]}),
            ),
            (
                append.clone(),
                r#"{"p1":"v2"}"#,
                json!({"p1": ["v2", "v1"], "p3": ["\"v1\""], "p4": [-1], "p5": [false], "p6": [true]}),
            ),
            (
                append.clone(),
                r#"{"p3":"v2"}"#,
                json!({"p1": ["v1"], "p3": ["v2", "\"v1\""], "p4": [-1], "p5": [false], "p6": [true]}),
            ),
            (
                append.clone(),
                r#"{"p4":"v2"}"#,
                json!({"p1": ["v1"], "p3": ["\"v1\""], "p4": ["v2", -1], "p5": [false], "p6": [true]}),
            ),
            (
                append.clone(),
                r#"{"p5":"v5", "p6":"v6"}"#,
                json!({"p1": ["v1"], "p3": ["\"v1\""], "p4": [-1], "p5": ["v5", false], "p6": ["v6", true]}),
            ),
            (remove.clone(), r#"{"p1" : "v1", "p2" : "v1"}"#, json!({})),
            (remove.clone(), r#"{"p1" : "v1", "p2" : "v1", "a": []}"#, json!({"a": []})),
            (rename.clone(), r#"{"p1" : "v1", "p2" : "v2"}"#, json!({"k1": "v1", "k2": "v2"})),
            (rename.clone(), r#"{"p1" : "v1", "p2" : "v2", "p3": []}"#, json!({"k1": "v1", "k2": "v2", "k3": []})),
            (rename.clone(), r#"{"p3" : -1}"#, json!({"k3": -1})),
            (rename.clone(), r#"{"p4" : false, "p5" : true}"#, json!({"k4": false, "k5": true})),
            (replace.clone(), r#"{"p1" : "v1", "p2" : "v1"}"#, json!({"p1": "v2", "p2": "\"v2\""})),
            (replace.clone(), r#"{"p1" : "v1"}"#, json!({"p1": "v2"})),
            (replace.clone(), r#"{"p2" : "v1"}"#, json!({"p2": "\"v2\""})),
            (replace.clone(), r#"{"p1" : "v1", "p2" : "v1", "a": []}"#, json!({"p1": "v2", "p2": "\"v2\"", "a": []})),
            (replace.clone(), r#"{"p3" : "v1"}"#, json!({"p3": -1})),
            (replace.clone(), r#"{"p4" : "v4", "p5" : "v5"}"#, json!({"p4": false, "p5": true})),
            (together.clone(), r#"{"p1" : "v1", "p4" : "v1"}"#, json!({"p2": "v2", "p3": ["v1", "v2"]})),
            (
                together.clone(),
                r#"{"p1" : "v1", "p4" : "v1", "a" : []}"#,
                json!({"p2": "v2", "p3": ["v1", "v2"], "a": []}),
            ),
            (
                json!({"replace": {"json": ["headers:/hello/world", "uri_args:this is a / test", "url:\"wot\""]}}),
                r#"{"headers":{"a":"b"},"uri_args":{},"url":"http://x/get"}"#,
                json!({"headers": "/hello/world", "uri_args": "this is a / test", "url": "\"wot\""}),
            ),
            // Kong's truth: `false` counts as absent to add and replace; null is present.
            (
                json!({"add": {"json": ["f:v", "n:v"]}, "replace": {"json": ["g:v"]}}),
                r#"{"f":false,"n":null,"g":false}"#,
                json!({"f": "v", "n": null, "g": false}),
            ),
        ];
        for (config, body, want) in table {
            let out =
                plugin(config.clone()).transform_json(body.as_bytes()).unwrap_or_else(|| panic!("{config} on {body}"));
            assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), want, "{config} on {body}");
        }
        // The members keep their order.
        let out = plugin(remove).transform_json(br#"{"z":1,"p1":2,"a":3}"#).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"z":1,"a":3}"#);
        for not_an_object in ["not a json value", "[1,2]", "\"text\"", "12", ""] {
            assert_eq!(plugin(add.clone()).transform_json(not_an_object.as_bytes()), None, "{not_an_object}");
        }
    }

    async fn respond(config: Value, head: bool, status: u16, list: &[(&str, &str)], body: Body) -> (HeaderMap, String) {
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        *response.headers_mut() = headers(list);
        let out = plugin(config).respond(response, head).await;
        let (parts, body) = out.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn which_responses_have_their_body_changed() {
        let full = |s: &'static str| ward_http::body::full(s);
        let add = || json!({"add": {"json": ["p1:v1"], "headers": ["x-added:1"]}});
        const JSON: (&str, &str) = ("content-type", "application/json");
        type Row = (
            Value,
            bool,
            u16,
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
            Option<&'static str>,
        );
        // (config, HEAD, status, headers, body, body after, Content-Length after)
        let table: Vec<Row> = vec![
            (
                add(),
                false,
                200,
                &[JSON, ("content-length", "11")],
                r#"{"a":"xyz"}"#,
                r#"{"a":"xyz","p1":"v1"}"#,
                Some("21"),
            ),
            (
                add(),
                false,
                200,
                &[("content-type", "application/problem+json; charset=utf-8")],
                "{}",
                r#"{"p1":"v1"}"#,
                Some("11"),
            ),
            (
                add(),
                false,
                401,
                &[("content-type", "application/json; charset=utf-8")],
                r#"{"message":"Unauthorized"}"#,
                r#"{"message":"Unauthorized","p1":"v1"}"#,
                Some("36"),
            ),
            (add(), false, 200, &[("content-type", "text/plain"), ("content-length", "2")], "{}", "{}", Some("2")),
            (add(), false, 200, &[JSON, ("content-length", "9")], "not json!", "not json!", Some("9")),
            (add(), false, 200, &[JSON, ("content-encoding", "gzip")], "{}", "{}", None),
            (add(), true, 200, &[JSON, ("content-length", "40")], "", "", Some("40")),
            (add(), false, 204, &[JSON], "", "", None),
            (add(), false, 304, &[JSON, ("content-length", "2")], "", "", Some("2")),
            // Only a header changes: the body is not read, its whitespace stays.
            (
                json!({"remove": {"headers": ["h1"]}}),
                false,
                200,
                &[JSON],
                "\n  { \"id\": 1 }\n",
                "\n  { \"id\": 1 }\n",
                None,
            ),
        ];
        for (config, head, status, list, body, want_body, want_length) in table {
            let (h, got) = respond(config.clone(), head, status, list, full(body)).await;
            let what = format!("{config} {status} {list:?} {body}");
            assert_eq!(got, want_body, "{what}");
            assert_eq!(h.get("content-length").map(|v| v.to_str().unwrap()), want_length, "{what}");
            assert_eq!(h.get("x-added").is_some(), config["add"]["headers"].is_array(), "{what}");
        }
    }

    #[tokio::test]
    async fn a_body_past_the_limit_goes_through_unchanged() {
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(BODY_LIMIT));
        let config = json!({"add": {"json": ["p1:v1"]}});
        let (_, got) = respond(
            config.clone(),
            false,
            200,
            &[("content-type", "application/json")],
            ward_http::body::full(big.clone()),
        )
        .await;
        assert!(got == big, "a body past the limit was changed");
        let length = big.len().to_string();
        let list = [("content-type", "application/json"), ("content-length", length.as_str())];
        let (h, got) = respond(config, false, 200, &list, ward_http::body::full(big.clone())).await;
        assert!(got == big && h.get("content-length").unwrap() == length.as_str());
    }

    #[test]
    fn numbers_as_lua_reads_them() {
        let table = [
            ("-1", Some(json!(-1))),
            ("10", Some(json!(10))),
            (" 12 ", Some(json!(12))),
            ("1.5", Some(json!(1.5))),
            ("1e3", Some(json!(1000))),
            (".5", Some(json!(0.5))),
            ("0x10", Some(json!(16))),
            ("+7", Some(json!(7))),
            ("abc", None),
            ("inf", None),
            ("nan", None),
            ("", None),
            ("1e400", None),
        ];
        for (text, want) in table {
            assert_eq!(lua_number(text).map(Value::Number), want, "{text}");
        }
    }

    #[test]
    fn configurations_refused_with_their_field() {
        let table = [
            (
                json!({"rename": {"headers": ["x-request-idx-custom-request-id"]}}),
                "plugins[3].config.rename.headers[0]: 'x-request-idx-custom-request-id' has no value",
            ),
            (
                json!({"rename": {"headers": ["x-requ,est-id:x-custom-request-id"]}}),
                "plugins[3].config.rename.headers[0]: 'x-requ,est-id' is not a valid header name",
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
                json!({"append": {"headers": ["ok:1", "just_a_key"]}}),
                "plugins[3].config.append.headers[1]: 'just_a_key' has no value",
            ),
            (
                json!({"add": {"json": ["p:1"], "json_types": ["int"]}}),
                "plugins[3].config.add.json_types[0]: 'int' must be one of boolean, number, string",
            ),
            (
                json!({"add": {"json": ["a:1", "p:abc"], "json_types": ["number", "number"]}}),
                "plugins[3].config.add.json[1]: 'abc' is not a number (add.json_types[1] is number)",
            ),
            (
                json!({"replace": {"json": ["p:yes"], "json_types": ["boolean"]}}),
                "plugins[3].config.replace.json[0]: 'yes' is not a boolean",
            ),
            (
                json!({"append": {"json": ["p:1"], "json_types": ["number", "string"]}}),
                "plugins[3].config.append.json_types[1]: there is no append.json[1]",
            ),
            (
                json!({"add": {"headers": ["Content-Length:5"]}}),
                "plugins[3].config.add.headers[0]: 'Content-Length': the gateway frames",
            ),
            (
                json!({"add": {"headers": ["transfer-encoding:chunked"]}}),
                "plugins[3].config.add.headers[0]: 'transfer-encoding': the gateway frames",
            ),
            (
                json!({"append": {"headers": ["upgrade:h2c"]}}),
                "plugins[3].config.append.headers[0]: 'upgrade': a hop-by-hop header",
            ),
            (json!({"rename": {"json": ["old:"]}}), "plugins[3].config.rename.json[0]: 'old' has no value"),
            (json!({"remove": {"json_types": []}}), "plugins[3].config.remove.json_types: unknown field"),
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
            json!({"remove": {"headers": ["just_a_key"], "json": ["just_a_key"]}}),
            json!({"rename": {"headers": ["x-request-id:x-custom-request-id"], "json": ["old_key:new_key"]}}),
            json!({"add": {"json": ["p1:v1", "p2:2"], "json_types": ["string"]}}),
        ] {
            assert!(testing::compiled(compile, ok.clone()).is_ok(), "{ok}");
        }
    }
}
