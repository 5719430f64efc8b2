//! Files of Kong's older formats, `_format_version` "1.1" and "2.1", read as Kong 3.x reads
//! them: before anything is checked, the route paths are rewritten into format 3.0, and
//! nothing else changes (a field that 3.x no longer has stays an unknown field).
//!
//! Before 3.0 Kong guessed which paths were regexes; 3.0 wants a `~` in front of them. Kong
//! counts a path as plain when it has only letters, digits, `.`, `-`, `_`, `~`, `/` and `%`;
//! a plain path is normalised (dot segments resolved, `//` merged, percent-escapes of
//! unreserved characters decoded), anything else becomes `~` and the path, with the
//! percent-escapes of unreserved characters decoded (`.` and `-` as `\.` and `\-`).
//! Ward keeps the other escapes in upper case as written: its router compares paths with
//! requests whose paths keep them escaped the same way.

use serde_json::{Map, Value};

/// Rewrites the paths of the routes of `top` (top-level and nested in services) from an
/// older format into format 3.0.
pub(super) fn route_paths(top: &mut Map<String, Value>) {
    if let Some(Value::Array(routes)) = top.get_mut("routes") {
        routes.iter_mut().for_each(route);
    }
    if let Some(Value::Array(services)) = top.get_mut("services") {
        for service in services {
            if let Some(Value::Array(routes)) = service.get_mut("routes") {
                routes.iter_mut().for_each(route);
            }
        }
    }
}

/// Rewrites the string paths of one route; anything else is left for the checks to refuse.
fn route(route: &mut Value) {
    let Some(Value::Array(paths)) = route.get_mut("paths") else { return };
    for p in paths {
        if let Value::String(s) = p {
            *s = path(s);
        }
    }
}

/// One path of format 1.1 or 2.1, as format 3.0 writes it.
fn path(old: &str) -> String {
    let plain = old.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_~/%".contains(&b));
    if plain {
        // A path Ward cannot normalise (an encoded slash, a control character) is kept as
        // written, for the router to refuse with its reason.
        crate::path::normalize(old).unwrap_or_else(|_| old.to_string())
    } else {
        format!("~{}", decode_unreserved(old))
    }
}

/// Decodes the percent-escapes of unreserved characters in a regex (escaping `.` and `-`),
/// and writes the others in upper case.
fn decode_unreserved(regex: &str) -> String {
    let mut out = String::with_capacity(regex.len() + 1);
    let mut rest = regex;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        let byte = escape.get(1..3).and_then(|h| u8::from_str_radix(h, 16).ok()).filter(|_| {
            // `from_str_radix` takes a sign; an escape has two hex digits.
            escape.as_bytes()[1].is_ascii_hexdigit() && escape.as_bytes()[2].is_ascii_hexdigit()
        });
        match byte {
            Some(b'.') => out.push_str(r"\."),
            Some(b'-') => out.push_str(r"\-"),
            Some(b) if b.is_ascii_alphanumeric() || b == b'_' || b == b'~' => out.push(b as char),
            Some(b) => out.push_str(&format!("%{b:02X}")),
            None => {
                out.push('%');
                rest = &escape[1..];
                continue;
            }
        }
        rest = &escape[3..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_as_kong_3_migrates_them() {
        let table = [
            // Plain paths: normalised only.
            ("/prefix", "/prefix"),
            ("/", "/"),
            ("/a//b/./c/../d", "/a/b/d"),
            ("/%7euser/%41", "/~user/A"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/with-dash_and.dot~", "/with-dash_and.dot~"),
            // Kept for the router to refuse.
            ("/a%2Fb", "/a%2Fb"),
            ("relative", "relative"),
            ("", ""),
            // Regexes: a `~` in front.
            ("/regex.+", "~/regex.+"),
            (r"/status/\d+", r"~/status/\d+"),
            ("/users/(?<id>[0-9]+)$", "~/users/(?<id>[0-9]+)$"),
            ("/a b", "~/a b"),
            // Escapes in a regex: unreserved ones decoded, `.` and `-` escaped.
            ("/v1/%2e(json|xml)", r"~/v1/\.(json|xml)"),
            ("/x%2D%7e%5f%61+", r"~/x\-~_a+"),
            ("/x%2f%3f+", "~/x%2F%3F+"),
            ("/x%20y+", "~/x%20y+"),
            // Not escapes: kept.
            ("/100%+", "~/100%+"),
            ("/x%zz+", "~/x%zz+"),
            ("/x%+1+", "~/x%+1+"),
            ("/x%é+", "~/x%é+"),
            ("/x%4", "/x%4"),
            ("/x%4+", "~/x%4+"),
        ];
        for (old, new) in table {
            assert_eq!(path(old), new, "{old}");
        }
    }

    #[test]
    fn regexes_stay_valid_for_the_router() {
        for old in ["/x%2D+", "/v1/%2e(json|xml)"] {
            let migrated = path(old);
            let re = migrated.strip_prefix('~').unwrap();
            assert!(regex::Regex::new(re).is_ok(), "{migrated}");
        }
    }

    #[test]
    fn a_kong_2_file_routes_as_kong_3_reads_it() {
        let text = |format: &str| {
            format!(
                "_format_version: \"{format}\"\nroutes:\n- name: regex\n  paths: ['/status/\\d+']\n- name: plain\n  paths: ['/a//b/../c']\n"
            )
        };
        // (format, request path, the route it reaches)
        let table = [
            ("2.1", "/status/200", Some("regex")),
            ("1.1", "/status/200/more", Some("regex")),
            ("2.1", "/status/x", None),
            ("2.1", "/a/c/d", Some("plain")),
            ("1.1", "/a/b/c", None),
        ];
        for (format, path, want) in table {
            let gw = crate::compiled::compile(&text(format), &Default::default()).unwrap_or_else(|e| panic!("{e}"));
            let (method, headers) = (http::Method::GET, http::HeaderMap::new());
            let view = crate::router::RequestView {
                method: &method,
                host: "a.test",
                port: 8000,
                path,
                headers: &headers,
                sni: None,
                https: false,
            };
            let got = gw.router.find(&view).and_then(|f| gw.routes[f.route].name.clone());
            assert_eq!(got.as_deref(), want, "{format} {path}");
        }
        // Read as format 3.0, the same paths are prefixes that could never match.
        let Err(errors) = crate::compiled::compile(&text("3.0"), &Default::default()) else { panic!("loaded") };
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["routes[0].paths[0]", "routes[1].paths[0]"], "{errors}");
    }

    #[test]
    fn only_route_paths_move() {
        let mut top: Map<String, Value> = serde_json::from_str(
            r#"{"routes": [{"paths": ["/a.+", 3]}, "x"],
                "services": [{"routes": [{"paths": ["/b.+"], "hosts": ["c.+"]}]}, 1],
                "plugins": [{"config": {"paths": ["/d.+"]}}]}"#,
        )
        .unwrap();
        route_paths(&mut top);
        let want: Value = serde_json::from_str(
            r#"{"routes": [{"paths": ["~/a.+", 3]}, "x"],
                "services": [{"routes": [{"paths": ["~/b.+"], "hosts": ["c.+"]}]}, 1],
                "plugins": [{"config": {"paths": ["/d.+"]}}]}"#,
        )
        .unwrap();
        assert_eq!(Value::Object(top), want);
    }
}
