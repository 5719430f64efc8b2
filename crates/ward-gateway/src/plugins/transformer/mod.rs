//! What request-transformer and response-transformer share: Kong's `name:value` items, the
//! ordered name/value pairs of query strings and url-encoded forms, Kong's rules for JSON
//! members, and reading a body without holding more than a limit of it.

pub(crate) mod multipart;
pub(crate) mod template;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderName;
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde_json::Value;

use super::Compile;
use crate::reply::{Body, BoxError};

/// Splits an item as Kong's `^([^:]+):*(.-)$` does: the name runs to the first colon, every
/// colon right after it is skipped, and the rest is the value (`h2:value:2` is `h2` and
/// `value:2`). `None` when the name is empty.
pub(crate) fn split_item(item: &str) -> Option<(&str, &str)> {
    let (name, rest) = match item.find(':') {
        Some(i) => (&item[..i], &item[i..]),
        None => (item, ""),
    };
    (!name.is_empty()).then(|| (name, rest.trim_start_matches(':')))
}

/// A header name as Kong's schema allows it (`^[a-zA-Z0-9-_]+$`), lower-cased.
pub(crate) fn header_name(name: &str) -> Option<HeaderName> {
    let allowed = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    allowed.then(|| HeaderName::from_bytes(name.as_bytes()).ok()).flatten()
}

/// What a list of items holds after parsing, with the path of each item for errors.
pub(crate) struct Item<'a> {
    /// `remove.headers[2]`, relative to the plugin's `config`.
    pub field: String,
    /// Its place in the list.
    pub index: usize,
    pub name: &'a str,
    pub value: &'a str,
}

/// The items of `list` (written at `field`), each split into name and value; an item without
/// a name, or without a value when `needs_value`, is an error and left out.
pub(crate) fn items<'a>(cx: &mut Compile<'_>, field: &str, list: &'a [String], needs_value: bool) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match split_item(item) {
            None => cx.error(&at, format!("'{item}' has no name before the ':'")),
            Some((name, "")) if needs_value => cx.error(&at, format!("'{name}' has no value: write name:value")),
            Some((name, value)) => out.push(Item { field: at, index: i, name, value }),
        }
    }
    out
}

/// Lua's truth, which Kong's checks on JSON members follow: absent and `false` are false,
/// everything else (`null` too) is true.
pub(crate) fn truthy(value: Option<&Value>) -> bool {
    !matches!(value, None | Some(Value::Bool(false)))
}

/// A member after Kong's `append`: an array gets `value` at its end, an absent member
/// becomes `[value]`, any other value becomes `[value before, value]`.
pub(crate) fn appended(before: Option<Value>, value: Value) -> Value {
    match before {
        Some(Value::Array(mut items)) => {
            items.push(value);
            Value::Array(items)
        }
        Some(other) => Value::Array(vec![other, value]),
        None => Value::Array(vec![value]),
    }
}

/// Renames each header `old` of `renames` to `new`, keeping its values in order (a name the
/// message lacks is skipped; one renamed to itself is left alone, since names compare without case).
pub(crate) fn rename_headers(headers: &mut http::HeaderMap, renames: &[(HeaderName, HeaderName)]) {
    for (old, new) in renames.iter().filter(|(old, new)| old != new) {
        let values: Vec<http::HeaderValue> = headers.get_all(old).iter().cloned().collect();
        if values.is_empty() {
            continue;
        }
        headers.remove(old);
        headers.remove(new);
        for v in values {
            headers.append(new.clone(), v);
        }
    }
}

/// Renames member `old` to `new` (replacing a member `new`), as Kong does; false when there
/// was nothing to rename (or no new name).
pub(crate) fn rename_member(object: &mut serde_json::Map<String, Value>, old: &str, new: &str) -> bool {
    if old == new || new.is_empty() {
        return false;
    }
    match object.shift_remove(old) {
        Some(value) => {
            object.insert(new.to_string(), value);
            true
        }
        None => false,
    }
}

/// Decodes one component of a query string or form: `+` is a space, `%XX` a byte, and a
/// `%` not followed by two hex digits stays as it is.
pub(crate) fn decode_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but unreserved characters, as nginx's `ngx.encode_args` does.
pub(crate) fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One argument of a query string or form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair {
    name: String,
    /// None: a bare name without `=` (Lua's `true` to Kong).
    value: Option<String>,
    /// The bytes it was sent as, while nobody changed it.
    raw: Option<String>,
}

/// The arguments of a query string or url-encoded form, in order. Kong turns them into a
/// Lua table and back; Ward keeps their order, and the bytes of those no item touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pairs {
    pairs: Vec<Pair>,
}

impl Pairs {
    /// Reads `text` (`a=1&b=2`); empty arguments (`&&`) are skipped, as nginx does.
    pub fn parse(text: &str) -> Self {
        let pairs = text
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (name, value) = match p.split_once('=') {
                    Some((n, v)) => (n, Some(decode_component(v))),
                    None => (p, None),
                };
                Pair { name: decode_component(name), value, raw: Some(p.to_string()) }
            })
            .collect();
        Pairs { pairs }
    }

    /// The text again: untouched arguments as they came, the others encoded.
    pub fn to_text(&self) -> String {
        let parts: Vec<String> = self
            .pairs
            .iter()
            .map(|p| match (&p.raw, &p.value) {
                (Some(raw), _) => raw.clone(),
                (None, Some(v)) => format!("{}={}", encode_component(&p.name), encode_component(v)),
                (None, None) => encode_component(&p.name),
            })
            .collect();
        parts.join("&")
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether an argument is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|p| p.name == name)
    }

    /// The first value of `name`, a bare name reading as `true` (as Lua writes Kong's value).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|p| p.name == name).map(|p| p.value.as_deref().unwrap_or("true"))
    }

    /// Every argument in order, a bare name with no value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.pairs.iter().map(|p| (p.name.as_str(), p.value.as_deref()))
    }

    /// Removes every argument named `name`.
    pub fn remove(&mut self, name: &str) {
        self.pairs.retain(|p| p.name != name);
    }

    /// Renames `old` to `new`, replacing the arguments named `new`; false when there is no
    /// `old` (or no new name).
    pub fn rename(&mut self, old: &str, new: &str) -> bool {
        if old == new || new.is_empty() || !self.has(old) {
            return false;
        }
        self.remove(new);
        for p in self.pairs.iter_mut().filter(|p| p.name == old) {
            p.name = new.to_string();
            p.raw = None;
        }
        true
    }

    /// Gives `name` the single value `value`, in the place of its first occurrence; false
    /// when there is no such argument.
    pub fn replace(&mut self, name: &str, value: &str) -> bool {
        let Some(first) = self.pairs.iter().position(|p| p.name == name) else { return false };
        self.pairs[first] = Pair { name: name.to_string(), value: Some(value.to_string()), raw: None };
        let mut seen = 0;
        self.pairs.retain(|p| {
            if p.name != name {
                return true;
            }
            seen += 1;
            seen == 1
        });
        true
    }

    /// Adds `name=value` at the end.
    pub fn push(&mut self, name: &str, value: Option<&str>) {
        self.pairs.push(Pair { name: name.to_string(), value: value.map(str::to_string), raw: None });
    }
}

/// Whether a response's Content-Type is JSON to Kong's response-transformer: one of its
/// comma-separated media types is `application/json` or `application/<anything>+json`,
/// parsed as RFC 2045 writes them (a malformed one does not count).
pub(crate) fn is_json_media_type(content_type: &str) -> bool {
    content_type.split(',').any(|ct| {
        matches!(media_type(ct.trim()), Some((t, s)) if t == "application" && (s == "json" || s.ends_with("+json")))
    })
}

/// RFC 2045 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b > 32 && b < 127 && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Type and subtype (lower case) of a well-formed `type/subtype *(; attribute=value)`.
fn media_type(text: &str) -> Option<(String, String)> {
    let (types, mut params) = match text.find(';') {
        Some(i) => (text[..i].trim_end_matches([' ', '\t']), &text[i..]),
        None => (text, ""),
    };
    let (t, s) = types.split_once('/')?;
    if !is_token(t) || !is_token(s) {
        return None;
    }
    while !params.is_empty() {
        let rest = params.strip_prefix(';')?.trim_start_matches([' ', '\t']);
        let (attribute, value) = rest.split_once('=')?;
        if !is_token(attribute) {
            return None;
        }
        params = if let Some(quoted) = value.strip_prefix('"') {
            let mut escaped = false;
            let end = quoted.char_indices().find(|&(_, c)| {
                let close = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                close
            })?;
            &quoted[end.0 + 1..]
        } else {
            let end = value.find([';', ' ', '\t']).unwrap_or(value.len());
            if !is_token(&value[..end]) {
                return None;
            }
            &value[end..]
        };
        params = params.trim_start_matches([' ', '\t']);
    }
    Some((t.to_ascii_lowercase(), s.to_ascii_lowercase()))
}

/// A body read up to a limit: whole, or, past the limit or on an error, the same body again
/// for sending on unchanged.
pub(crate) enum Bounded {
    Whole(Bytes),
    Unread(Body),
}

/// Reads `body` whole if it holds at most `limit` bytes (and no trailers); otherwise gives it
/// back unchanged, what was read first included.
pub(crate) async fn read_bounded(mut body: Body, limit: usize) -> Bounded {
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut total = 0usize;
    loop {
        match body.frame().await {
            None => {
                let mut whole = BytesMut::with_capacity(total);
                for f in frames {
                    if let Ok(data) = f.into_data() {
                        whole.extend_from_slice(&data);
                    }
                }
                return Bounded::Whole(whole.freeze());
            }
            Some(Ok(frame)) => {
                let stop = match frame.data_ref() {
                    Some(data) => {
                        total = total.saturating_add(data.len());
                        total > limit
                    }
                    None => true,
                };
                frames.push_back(frame);
                if stop {
                    return Bounded::Unread(Replay { frames, rest: Some(Ok(body)) }.boxed());
                }
            }
            Some(Err(e)) => return Bounded::Unread(Replay { frames, rest: Some(Err(e)) }.boxed()),
        }
    }
}

/// Frames already read, then the rest of the body (or the error reading it ended with).
struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<Result<Body, BoxError>>,
}

impl hyper::body::Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match this.rest.take() {
            None => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            Some(Ok(mut body)) => {
                let polled = Pin::new(&mut body).poll_frame(cx);
                this.rest = Some(Ok(body));
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && match &self.rest {
                None => true,
                Some(Ok(body)) => body.is_end_stream(),
                Some(Err(_)) => false,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_split_as_kongs_pattern_does() {
        let table = [
            ("h1:v1", Some(("h1", "v1"))),
            ("h2:value:2", Some(("h2", "value:2"))),
            ("a::b", Some(("a", "b"))),
            ("just_a_key", Some(("just_a_key", ""))),
            ("key:", Some(("key", ""))),
            ("p1:anything:1", Some(("p1", "anything:1"))),
            (":v", None),
            ("", None),
        ];
        for (item, want) in table {
            assert_eq!(split_item(item), want, "{item}");
        }
    }

    #[test]
    fn header_names_are_kongs() {
        for ok in ["x-added", "X_Under", "h1", "Content-Type"] {
            assert!(header_name(ok).is_some(), "{ok}");
        }
        for bad in ["x-requ,est-id", "a b", "", "é", "x:y"] {
            assert!(header_name(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn pairs_keep_untouched_arguments_as_sent() {
        // (query, operation, result)
        type Op = fn(&mut Pairs);
        let table: [(&str, Op, &str); 10] = [
            ("b=%20x&a=1", |p| p.push("c", Some("1 2")), "b=%20x&a=1&c=1%202"),
            ("a=1&toremove=x&b=2&toremove", |p| p.remove("toremove"), "a=1&b=2"),
            ("x=1&old=v&new=n", |p| assert!(p.rename("old", "new")), "x=1&new=v"),
            ("x=1", |p| assert!(!p.rename("old", "new")), "x=1"),
            ("same=1", |p| assert!(!p.rename("same", "same")), "same=1"),
            ("q1=v&q2=v2&q1=w", |p| assert!(p.replace("q1", "v1")), "q1=v1&q2=v2"),
            ("q2=v2", |p| assert!(!p.replace("q1", "v1")), "q2=v2"),
            ("flag&a=1", |p| assert_eq!(p.first("flag"), Some("true")), "flag&a=1"),
            ("a+b=c%2Bd&&e", |p| assert_eq!(p.first("a b"), Some("c+d")), "a+b=c%2Bd&e"),
            ("", |p| p.push("uri_param2[some_index][1]", Some("bar")), "uri_param2%5Bsome_index%5D%5B1%5D=bar"),
        ];
        for (query, op, want) in table {
            let mut pairs = Pairs::parse(query);
            op(&mut pairs);
            assert_eq!(pairs.to_text(), want, "{query}");
        }
    }

    #[test]
    fn json_media_types_as_kong_reads_them() {
        let table = [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON;charset=\"utf-8\"", true),
            ("application/problem+json", true),
            ("application/problem+json; charset=utf-8", true),
            ("application/x-www-form-urlencoded, application/json", true),
            ("application/x-www-form-urlencoded", false),
            ("text/json", false),
            ("application/jsonx", false),
            ("application/json; charset", false),
            ("application/json x", false),
            ("", false),
        ];
        for (ct, want) in table {
            assert_eq!(is_json_media_type(ct), want, "{ct}");
        }
    }

    #[test]
    fn json_members_follow_kongs_append_and_truth() {
        use serde_json::json;
        assert_eq!(appended(None, json!("v1")), json!(["v1"]));
        assert_eq!(appended(Some(json!("v0")), json!("v1")), json!(["v0", "v1"]));
        assert_eq!(appended(Some(json!(["a"])), json!("b")), json!(["a", "b"]));
        assert_eq!(appended(Some(json!(3)), json!("b")), json!([3, "b"]));
        assert!(!truthy(None));
        assert!(!truthy(Some(&json!(false))));
        assert!(truthy(Some(&json!(null))));
        assert!(truthy(Some(&json!(""))));
        let mut object = json!({"a": 1, "b": 2, "c": 3});
        let map = object.as_object_mut().unwrap();
        assert!(rename_member(map, "a", "c"));
        assert!(!rename_member(map, "b", "b"));
        assert!(!rename_member(map, "x", "y"));
        assert_eq!(object, json!({"b": 2, "c": 1}));
    }

    #[tokio::test]
    async fn bodies_past_the_limit_come_back_whole() {
        let body = ward_http::body::full(Bytes::from_static(b"0123456789"));
        let Bounded::Whole(b) = read_bounded(body, 10).await else { panic!("10 bytes fit in 10") };
        assert_eq!(&b[..], b"0123456789");
        let body = ward_http::body::full(Bytes::from_static(b"0123456789"));
        let Bounded::Unread(again) = read_bounded(body, 9).await else { panic!("10 bytes do not fit in 9") };
        assert_eq!(&again.collect().await.unwrap().to_bytes()[..], b"0123456789");
    }
}

/// Compiling a plugin, and a request for it, in the plugins' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicU64;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use serde_json::Value;

    use crate::compiled::{PathHandling, Route};
    use crate::consumers::Consumers;
    use crate::error::ConfigErrors;
    use crate::exchange::{Exchange, RequestBody};
    use crate::listener::ConnInfo;
    use crate::plugins::{Compile, Plugin, Scope};
    use crate::router::Captures;
    use crate::runtime::Shared;
    use crate::tls::CaStore;

    /// The plugin `compile` makes of `config`, or every error, one `path: message` a line.
    pub fn compiled(compile: fn(&mut Compile<'_>, Value) -> Option<Plugin>, config: Value) -> Result<Plugin, String> {
        let mut errors = ConfigErrors::default();
        let (consumers, ca, shared) = (Consumers::default(), CaStore::default(), Shared::default());
        let mut cx = Compile {
            path: "plugins[3].config".into(),
            errors: &mut errors,
            consumers: &consumers,
            ca_certificates: &ca,
            shared: &shared,
            scope: Scope::default(),
        };
        let plugin = compile(&mut cx, config);
        match plugin {
            Some(p) if errors.is_empty() => Ok(p),
            _ => Err(errors.to_string()),
        }
    }

    /// A request on `route` through `conn`, as the handler makes it before any plugin ran:
    /// `method` on `target` with `headers` and a buffered `body`.
    pub fn exchange<'a>(
        conn: &'a ConnInfo,
        consumers: &'a Consumers,
        route: &'a Route,
        method: &str,
        target: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Exchange<'a> {
        let uri: http::Uri = target.parse().expect("a request target");
        Exchange {
            method: method.parse().expect("a method"),
            headers,
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            uri,
            version: http::Version::HTTP_11,
            body: RequestBody::Buffered(body),
            client_ip: conn.peer.ip(),
            conn,
            consumers,
            route,
            service: None,
            consumer: None,
            credential: None,
            response_headers: HeaderMap::new(),
            uri_captures: Default::default(),
            upstream_path: None,
            upstream_host: None,
            responders: Vec::new(),
            session: Default::default(),
        }
    }

    /// A plain HTTP connection from 192.0.2.1 to port 8000.
    pub fn conn() -> ConnInfo {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        ConnInfo {
            peer: addr("192.0.2.1:40000"),
            local: addr("127.0.0.1:8000"),
            https: false,
            serial: 1,
            requests: AtomicU64::new(1),
            sni: None,
            client_chain: None,
        }
    }

    /// A route with no plugins.
    pub fn route() -> Route {
        Route {
            id: "r".into(),
            name: None,
            service: None,
            strip_path: true,
            path_handling: PathHandling::V0,
            preserve_host: false,
            protocols: Default::default(),
            https_redirect_status_code: StatusCode::UPGRADE_REQUIRED,
            chain: Default::default(),
        }
    }

    /// Captures with these groups by number (from 0) and by name.
    pub fn captures(numbered: &[&str], named: &[(&str, &str)]) -> Captures {
        Captures {
            numbered: numbered.iter().map(|v| Some(v.to_string())).collect(),
            named: named.iter().map(|(n, v)| (n.to_string(), Some(v.to_string()))).collect(),
        }
    }
}
