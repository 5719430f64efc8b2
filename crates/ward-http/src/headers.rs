//! Header rules both servers apply: which headers belong to one hop (RFC 9110, 7.6.1), and
//! header names under every spelling. Many applications (WSGI, PHP, Rack, CGI) read `X_Foo`
//! as `X-Foo`, so a header Ward sets or trusts must be cleared under each spelling, and
//! names with `_` are dropped unless a listener allows them.

use http::{HeaderMap, HeaderName, Request, Uri, Version, header};

/// Headers that describe one connection and are never forwarded. `te` is kept when it is
/// exactly `trailers` (gRPC needs it); the upgrade pair is kept on a message that switches
/// protocols.
pub const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// How an application that folds `_` into `-` reads a header name.
fn folded(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.bytes().map(|b| if b == b'_' { b'-' } else { b.to_ascii_lowercase() })
}

/// Whether `name` reads as `canonical` to an application that folds `_` into `-` and ignores case.
pub fn same_to_applications(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len() && folded(name).eq(folded(canonical))
}

/// Names present in `headers` that read as one of `names` to such an application.
fn spellings_of(headers: &HeaderMap, names: &[HeaderName]) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|present| names.iter().any(|n| same_to_applications(present.as_str(), n.as_str())))
        .cloned()
        .collect()
}

/// Removes `names` under every spelling (`X_Consumer_Username` as well as `x-consumer-username`).
pub fn remove_every_spelling(headers: &mut HeaderMap, names: &[HeaderName]) {
    for name in spellings_of(headers, names) {
        headers.remove(name);
    }
}

/// Removes the other spellings of `names`, keeping the canonical ones for the caller to judge.
pub fn remove_other_spellings(headers: &mut HeaderMap, names: &[HeaderName]) {
    for name in spellings_of(headers, names).into_iter().filter(|n| !names.contains(n)) {
        headers.remove(name);
    }
}

/// Removes every header whose name contains `_`; returns how many names went.
pub fn remove_underscored(headers: &mut HeaderMap) -> usize {
    let underscored: Vec<HeaderName> = headers.keys().filter(|n| n.as_str().contains('_')).cloned().collect();
    for name in &underscored {
        headers.remove(name);
    }
    underscored.len()
}

/// Whether `connection` lists `token`.
fn lists(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether the request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(header::UPGRADE) && lists(request.headers(), "upgrade")
}

/// Removes the headers that belong to one hop, under every spelling, including those
/// `Connection` names; keeps the upgrade pair when the message switches protocols, and
/// `te: trailers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    let trailers_only = headers.get_all(header::TE).iter().count() == 1
        && headers.get(header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let kept: &[HeaderName] = match (upgrading, trailers_only) {
        (true, true) => &[header::CONNECTION, header::UPGRADE, header::TE],
        (true, false) => &[header::CONNECTION, header::UPGRADE],
        (false, true) => &[header::TE],
        (false, false) => &[],
    };
    // One pass over the names, allocating only when something goes: a name goes when
    // `Connection` lists it (but for `upgrade` on an upgrade), or when it spells a hop-by-hop
    // header other than one kept in its canonical spelling.
    let goes = |present: &HeaderName| {
        let name = present.as_str();
        connection_tokens(headers)
            .any(|t| !(upgrading && t.eq_ignore_ascii_case("upgrade")) && same_to_applications(name, t))
            || HOP_BY_HOP.iter().any(|h| same_to_applications(name, h.as_str()) && !(kept.contains(h) && present == h))
    };
    let gone: Vec<HeaderName> = headers.keys().filter(|n| goes(n)).cloned().collect();
    for name in gone {
        headers.remove(name);
    }
}

/// The request as an HTTP/2 client sends it: the Host header becomes `:authority` (RFC 9113,
/// 8.3.1: a Host beside a differing `:authority` is malformed, and strict servers refuse it);
/// `fallback` is the authority when there is no usable Host.
pub fn to_http2_form<B>(mut request: Request<B>, fallback: &str) -> Request<B> {
    let host = request.headers_mut().remove(header::HOST);
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let authority =
        host.as_ref().and_then(|h| h.to_str().ok()).or_else(|| request.uri().authority().map(|a| a.as_str()));
    let uri = authority
        .and_then(|a| format!("http://{a}{path}").parse::<Uri>().ok())
        .or_else(|| format!("http://{fallback}{path}").parse::<Uri>().ok());
    if let Some(uri) = uri {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
    request
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// The names left, sorted (removal reorders a map).
    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        names
    }

    #[test]
    fn hop_by_hop_headers_go_end_to_end_ones_stay() {
        let h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("x_secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("transfer_encoding", "chunked"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "basic x"),
            ("x-app", "kept"),
        ]);
        let mut plain = h.clone();
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(names(&plain), ["te", "x-app"]);

        let mut upgrade = h;
        upgrade.insert("connection", HeaderValue::from_static("upgrade"));
        strip_hop_by_hop(&mut upgrade, true);
        assert_eq!(upgrade.get("upgrade").unwrap(), "websocket");
        assert_eq!(upgrade.get("connection").unwrap(), "upgrade");
        assert_eq!(names(&upgrade), ["connection", "te", "upgrade", "x-app", "x-secret", "x_secret"]);
    }

    #[test]
    fn te_other_than_trailers_goes() {
        for value in ["gzip", "trailers, gzip"] {
            let mut h = map(&[("te", value)]);
            strip_hop_by_hop(&mut h, false);
            assert!(h.is_empty(), "{value}");
        }
        let mut twice = map(&[("te", "trailers"), ("te", "gzip")]);
        strip_hop_by_hop(&mut twice, false);
        assert!(twice.is_empty());
    }

    #[test]
    fn a_header_connection_names_goes_even_when_it_would_be_kept() {
        let mut h = map(&[("connection", "te, x-hop"), ("te", "trailers"), ("x-hop", "1"), ("x-app", "kept")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["x-app"]);
        let mut h = map(&[("connection", "Upgrade, keep-alive"), ("upgrade", "websocket"), ("te", "trailers")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(names(&h), ["connection", "te", "upgrade"]);
    }

    #[test]
    fn every_spelling_of_a_name_goes() {
        let mut h = map(&[
            ("x-consumer-username", "a"),
            ("x_consumer_username", "root"),
            ("x_consumer-username", "root"),
            ("x-consumer-usernamex", "kept"),
            ("x-ward-peer-identity", "spiffe://default/admin"),
            ("x_ward_peer_identity", "spiffe://default/admin"),
        ]);
        let ours = [HeaderName::from_static("x-consumer-username"), HeaderName::from_static("x-ward-peer-identity")];
        let mut others_only = h.clone();
        remove_other_spellings(&mut others_only, &ours);
        assert_eq!(names(&others_only), ["x-consumer-username", "x-consumer-usernamex", "x-ward-peer-identity"]);
        remove_every_spelling(&mut h, &ours);
        assert_eq!(names(&h), ["x-consumer-usernamex"]);
    }

    #[test]
    fn http2_form_says_the_host_once_as_authority() {
        let table = [
            (Some("shop.example:8080"), "/a?b=1", "http://shop.example:8080/a?b=1"),
            (None, "/a", "http://127.0.0.1:9000/a"),
            (Some("not an authority"), "/", "http://127.0.0.1:9000/"),
        ];
        for (host, path, want) in table {
            let mut request = Request::builder().uri(path);
            if let Some(host) = host {
                request = request.header("host", host);
            }
            let request = to_http2_form(request.body(()).unwrap(), "127.0.0.1:9000");
            assert_eq!(request.uri().to_string(), want, "{host:?}");
            assert!(request.headers().get(header::HOST).is_none(), "{host:?}");
            assert_eq!(request.version(), Version::HTTP_2);
        }
    }

    #[test]
    fn underscored_names_go() {
        let mut h = map(&[("x_consumer_username", "root"), ("transfer_encoding", "chunked"), ("x-ok", "1")]);
        assert_eq!(remove_underscored(&mut h), 2);
        assert_eq!(names(&h), ["x-ok"]);
    }
}
