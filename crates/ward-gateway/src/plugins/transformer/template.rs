//! request-transformer's templates. In Kong a value may hold `$(...)`: a Lua expression,
//! evaluated per request in a sandbox that sees the request's `headers`, `query_params`,
//! `uri_captures` and `shared`. Ward evaluates the expressions Kong documents and people
//! write, and refuses every other one when the configuration is loaded:
//!
//! - `headers.NAME`, `headers["NAME"]`: the request header (an `_` in NAME may stand for
//!   `-`, as nginx reads it); several values are joined with `, `.
//! - `query_params.NAME`, `query_params["NAME"]`: the first value of the query argument, and
//!   `true` for a bare name.
//! - `uri_captures.NAME`, `uri_captures["NAME"]`, `uri_captures[N]`: a group the route's
//!   regex path captured, 0 being the whole match.
//! - `'text'` or `"text"`: the text itself, which is how Kong escapes a template:
//!   `$('$(uri_captures.user)')` is the literal `$(uri_captures.user)`.
//! - `A or B`: the first of them that has a value (Lua's `or`).
//!
//! As in Kong, an expression without a value renders as nothing.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};

use super::Pairs;
use crate::router::Captures;

/// What an expression reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Headers,
    QueryParams,
    UriCaptures,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Name(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Literal(String),
    Lookup(Source, Key),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// The terms of `a or b or c`.
    Expr(Vec<Term>),
}

/// A value of the configuration with its templates compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

/// Where a piece of a rendered value came from: the configuration, or the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Text written in the configuration (outside `$(...)` or quoted inside it).
    Config,
    /// A value read from the request.
    Request(Source),
}

/// What templates read: the request as it was when the plugin started.
pub(crate) struct Env<'a> {
    pub headers: &'a HeaderMap,
    pub query: &'a Pairs,
    pub captures: &'a Captures,
}

const SUPPORTED: &str = "Ward evaluates only headers.NAME, headers[\"NAME\"], query_params.NAME, \
    query_params[\"NAME\"], uri_captures.NAME, uri_captures[\"NAME\"], uri_captures[N], quoted \
    text and `or` between them, and no other Lua";

impl Template {
    /// Compiles `text`; the error says which expression Ward cannot evaluate, and why.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("$(") {
            if rest[..at].ends_with('\\') {
                return Err("'\\$(' is not an escape in Kong (it sends the backslash, then the template's value); \
                     write $('$(...)') for a literal '$('"
                    .into());
            }
            literal.push_str(&rest[..at]);
            // Lua's %b(): parentheses balance, quotes or not.
            let mut depth = 0usize;
            let close = rest[at + 1..].char_indices().find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1 + i);
                        }
                    }
                    _ => {}
                }
                None
            });
            let Some(close) = close else {
                return Err(format!(
                    "'{}' has no closing ')': write $('$(') for a literal '$('",
                    &rest[at..].chars().take(40).collect::<String>()
                ));
            };
            let expression = &rest[at + 2..close];
            let terms = parse_expression(expression).map_err(|why| format!("$({expression}): {why}"))?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Expr(terms));
            rest = &rest[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The value itself when it has no `$(...)`.
    pub fn literal(&self) -> Option<Cow<'_, str>> {
        match self.parts.as_slice() {
            [] => Some(Cow::Borrowed("")),
            [Part::Text(t)] => Some(Cow::Borrowed(t)),
            _ => None,
        }
    }

    /// Whether an expression reads `source`.
    pub fn reads(&self, source: Source) -> bool {
        self.parts.iter().any(|p| match p {
            Part::Expr(terms) => terms.iter().any(|t| matches!(t, Term::Lookup(s, _) if *s == source)),
            Part::Text(_) => false,
        })
    }

    /// The value for this request.
    pub fn render(&self, env: &Env<'_>) -> String {
        match self.render_with(env, |piece, _| Ok::<_, std::convert::Infallible>(piece.to_string())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// The value for this request, each piece passed through `piece` with where it came from.
    pub fn render_with<E>(
        &self,
        env: &Env<'_>,
        mut piece: impl FnMut(&str, Origin) -> Result<String, E>,
    ) -> Result<String, E> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(&piece(t, Origin::Config)?),
                Part::Expr(terms) => {
                    let found = terms.iter().find_map(|t| match t {
                        Term::Literal(l) => Some((Cow::Borrowed(l.as_str()), Origin::Config)),
                        Term::Lookup(source, key) => lookup(env, *source, key).map(|v| (v, Origin::Request(*source))),
                    });
                    if let Some((value, origin)) = found {
                        out.push_str(&piece(&value, origin)?);
                    }
                }
            }
        }
        Ok(out)
    }
}

const SHARED: &str = "kong.ctx.shared holds what other plugins' Lua code put there, and Ward runs no Lua";

/// A value of the request, if it has one.
fn lookup<'a>(env: &Env<'a>, source: Source, key: &Key) -> Option<Cow<'a, str>> {
    match (source, key) {
        (Source::Headers, Key::Name(name)) => {
            let lower = name.to_ascii_lowercase();
            let values = |n: &str| -> Option<String> {
                let name = HeaderName::from_bytes(n.as_bytes()).ok()?;
                let all: Vec<Cow<'_, str>> =
                    env.headers.get_all(&name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
                (!all.is_empty()).then(|| all.join(", "))
            };
            values(&lower)
                .or_else(|| lower.contains('_').then(|| values(&lower.replace('_', "-"))).flatten())
                .map(Cow::Owned)
        }
        (Source::QueryParams, Key::Name(name)) => env.query.first(name).map(Cow::Borrowed),
        (Source::UriCaptures, Key::Name(name)) => {
            env.captures.named.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref()).map(Cow::Borrowed)
        }
        (Source::UriCaptures, Key::Index(i)) => env.captures.numbered.get(*i)?.as_deref().map(Cow::Borrowed),
        // Refused when compiling.
        (_, Key::Index(_)) => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Str(String),
    Int(usize),
    Dot,
    Open,
    Close,
}

fn tokens(expression: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = expression.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '.' => {
                chars.next();
                out.push(Token::Dot);
            }
            '[' => {
                chars.next();
                out.push(Token::Open);
            }
            ']' => {
                chars.next();
                out.push(Token::Close);
            }
            '\'' | '"' => {
                chars.next();
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, c2)) = chars.next() {
                    match c2 {
                        q if q == c => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next().map(|(_, e)| e) {
                            Some('n') => text.push('\n'),
                            Some('t') => text.push('\t'),
                            Some('r') => text.push('\r'),
                            Some(e @ ('\\' | '\'' | '"')) => text.push(e),
                            Some(e) => return Err(format!("the escape \\{e} in a quoted text is not supported")),
                            None => break,
                        },
                        '\n' => break,
                        other => text.push(other),
                    }
                }
                if !closed {
                    return Err("a quoted text is not closed".into());
                }
                out.push(Token::Str(text));
            }
            c if c.is_ascii_digit() => {
                let mut end = start;
                while let Some(&(i, d)) = chars.peek() {
                    if !d.is_ascii_digit() {
                        break;
                    }
                    end = i + 1;
                    chars.next();
                }
                let n = expression[start..end].parse().map_err(|_| "the number is too large".to_string())?;
                out.push(Token::Int(n));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = start;
                while let Some(&(i, d)) = chars.peek() {
                    if !(d.is_ascii_alphanumeric() || d == '_') {
                        break;
                    }
                    end = i + 1;
                    chars.next();
                }
                out.push(Token::Ident(expression[start..end].to_string()));
            }
            other => return Err(format!("'{other}': {SUPPORTED}")),
        }
    }
    Ok(out)
}

/// `term (or term)*`.
fn parse_expression(expression: &str) -> Result<Vec<Term>, String> {
    let shared = expression.trim_start().strip_prefix("shared");
    if shared.is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')) {
        return Err(SHARED.into());
    }
    let tokens = tokens(expression)?;
    if tokens.is_empty() {
        return Err("an empty expression".into());
    }
    let mut terms = Vec::new();
    for (i, group) in tokens.split(|t| *t == Token::Ident("or".into())).enumerate() {
        if group.is_empty() {
            return Err(format!(
                "`or` needs a value on each side ({} or more)",
                if i == 0 { "before" } else { "after" }
            ));
        }
        terms.push(parse_term(group)?);
    }
    Ok(terms)
}

fn parse_term(tokens: &[Token]) -> Result<Term, String> {
    let source = match tokens.first() {
        Some(Token::Str(text)) if tokens.len() == 1 => return Ok(Term::Literal(text.clone())),
        Some(Token::Ident(name)) => match name.as_str() {
            "headers" => Source::Headers,
            "query_params" => Source::QueryParams,
            "uri_captures" => Source::UriCaptures,
            "shared" => return Err(SHARED.into()),
            _ => return Err(SUPPORTED.into()),
        },
        _ => return Err(SUPPORTED.into()),
    };
    let key = match &tokens[1..] {
        [Token::Dot, Token::Ident(name)] => Key::Name(name.clone()),
        [Token::Open, Token::Str(name), Token::Close] => Key::Name(name.clone()),
        [Token::Open, Token::Int(n), Token::Close] if source == Source::UriCaptures => Key::Index(*n),
        [Token::Open, Token::Int(_), Token::Close] => {
            return Err("headers and query_params are looked up by name, never by number".into());
        }
        _ => return Err(SUPPORTED.into()),
    };
    Ok(Term::Lookup(source, key))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn env_parts() -> (HeaderMap, Pairs, Captures) {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("test15.test"));
        headers.insert("x-remove-header", HeaderValue::from_static("its a test"));
        headers.append("x-foo", HeaderValue::from_static("1"));
        headers.append("x-foo", HeaderValue::from_static("2"));
        headers.insert("user-agent", HeaderValue::from_static("curl/8"));
        let query = Pairs::parse("q1=20&flag&user=foo123&empty=");
        let s = |v: &str| Some(v.to_string());
        let captures = Captures {
            numbered: vec![s("/user1/foo/user2/bar"), s("foo"), s("bar"), None],
            named: vec![("user1".into(), s("foo")), ("user2".into(), s("bar")), ("missing".into(), None)],
        };
        (headers, query, captures)
    }

    #[test]
    fn templates_render_as_kong_renders_them() {
        let (headers, query, captures) = env_parts();
        let env = Env { headers: &headers, query: &query, captures: &captures };
        let table = [
            ("v1", "v1"),
            ("value:2", "value:2"),
            ("#value_with_hash", "#value_with_hash"),
            ("a $ b $x", "a $ b $x"),
            ("$(uri_captures.user1)", "foo"),
            ("$(uri_captures['user2'])", "bar"),
            ("$(uri_captures[\"user2\"])", "bar"),
            ("/requests/user2/$(uri_captures.user2)/user1/$(uri_captures.user1)", "/requests/user2/bar/user1/foo"),
            ("/requests$(uri_captures[0])", "/requests/user1/foo/user2/bar"),
            ("$(uri_captures[1])-$(uri_captures[3])-$(uri_captures[9])", "foo--"),
            ("$(uri_captures.missing or 'default1')", "default1"),
            ("$(uri_captures.nope or uri_captures.user2 or 'x')", "bar"),
            ("$(headers.host)", "test15.test"),
            ("$(headers.Host)", "test15.test"),
            ("$(headers['x-remove-header'])", "its a test"),
            ("$(headers[\"User-Agent\"])", "curl/8"),
            ("$(headers.user_agent)", "curl/8"),
            ("$(headers.x_foo)", "1, 2"),
            ("$(headers.absent)", ""),
            ("$(query_params.q1)", "20"),
            ("$(query_params[\"user\"])", "foo123"),
            ("$(query_params.flag)", "true"),
            ("$(query_params.empty or 'd')", ""),
            ("$(query_params.none)", ""),
            ("$('$(uri_captures.user1)')", "$(uri_captures.user1)"),
            ("$( \"it's\" )", "it's"),
            ("pre-$('a\\'b')-post", "pre-a'b-post"),
        ];
        for (text, want) in table {
            let template = Template::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(template.render(&env), want, "{text}");
        }
    }

    #[test]
    fn lua_that_ward_cannot_evaluate_is_refused_with_the_reason() {
        let table = [
            ("$(10 * uri_captures.user1)", "no other Lua"),
            ("$(uri_captures user2)", "no other Lua"),
            ("$(ERROR())", "no other Lua"),
            ("$(type(headers[\"X-Foo\"]) == \"table\" and headers[\"X-Foo\"][1] .. \"-first\")", "no other Lua"),
            ("$(require('inspect')(string.sub(query_params.user, 1, 3)))", "no other Lua"),
            ("$(shared.my_version)", "kong.ctx.shared"),
            ("$(shared.written = true)", "kong.ctx.shared"),
            ("$(headers[1])", "by name"),
            ("$(uri_captures)", "no other Lua"),
            ("$(headers.a.b)", "no other Lua"),
            ("$()", "empty"),
            ("$(or 'a')", "`or` needs a value"),
            ("$('a' or)", "`or` needs a value"),
            ("$('open)", "not closed"),
            ("$('\\q')", "escape"),
            ("x $(headers.a", "no closing"),
            ("/status/\\$(uri_captures[\"status\"])", "not an escape"),
        ];
        for (text, want) in table {
            match Template::parse(text) {
                Ok(t) => panic!("{text} was accepted as {t:?}"),
                Err(e) => assert!(e.contains(want), "{text}: {e} does not say {want}"),
            }
        }
    }

    #[test]
    fn templates_know_what_they_read() {
        let t = Template::parse("a$(headers.x or query_params.y)").unwrap();
        assert!(t.reads(Source::Headers) && t.reads(Source::QueryParams) && !t.reads(Source::UriCaptures));
        assert_eq!(Template::parse("plain").unwrap().literal().as_deref(), Some("plain"));
        assert_eq!(Template::parse("$('x')").unwrap().literal(), None);
    }
}
