//! basic-auth: `Authorization: Basic` (or `Proxy-Authorization`) with a consumer's
//! username and password. Passwords are kept as Kong keeps them, SHA-1 of the password
//! and the consumer id, and compared in constant time.

use std::sync::LazyLock;

use base64::Engine;
use http::{HeaderName, HeaderValue, StatusCode, header};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::{Compile, Plugin, already_authenticated, conclude};
use crate::exchange::Exchange;
use crate::reply::Reply;

fn service() -> String {
    "service".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    anonymous: Option<String>,
    #[serde(default)]
    hide_credentials: bool,
    #[serde(default = "service")]
    realm: String,
}

/// A basic-auth credential: whose it is, its username, and Kong's digest of its password.
#[derive(Debug)]
pub(crate) struct Credential {
    pub consumer: usize,
    digest: String,
}

/// Kong's password digest: hex SHA-1 of the password followed by the consumer id.
fn kong_digest(password: &str, consumer_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{password}{consumer_id}").as_bytes(),
    );
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Credential {
    /// A credential whose `password` is plain text (`transform`, Kong's default) or already Kong's digest.
    pub fn new(consumer: usize, consumer_id: &str, password: &str, transform: bool) -> Self {
        let digest = if transform { kong_digest(password, consumer_id) } else { password.to_ascii_lowercase() };
        Credential { consumer, digest }
    }

    fn accepts(&self, password: &str, consumer_id: &str) -> bool {
        let given = kong_digest(password, consumer_id);
        aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), self.digest.as_bytes()).is_ok()
    }
}

/// A compiled basic-auth configuration.
pub(crate) struct BasicAuth {
    anonymous: Option<usize>,
    hide_credentials: bool,
    www_authenticate: HeaderValue,
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let Ok(www_authenticate) = HeaderValue::from_str(&format!("Basic realm=\"{}\"", c.realm)) else {
        cx.error("realm", "must be printable text");
        return None;
    };
    let anonymous = cx.anonymous(c.anonymous.as_deref());
    Some(Plugin::BasicAuth(BasicAuth { anonymous, hide_credentials: c.hide_credentials, www_authenticate }))
}

static BASIC: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\s*[Bb]asic\s*(.+)").expect("valid regex"));

/// Username and password from one header, as Kong parses them.
fn credentials(ex: &Exchange<'_>, name: &HeaderName) -> Option<(String, String)> {
    let value = ex.header(name)?;
    let encoded = BASIC.captures(value)?.get(1)?.as_str().trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (!user.is_empty()).then(|| (user.to_string(), password.to_string()))
}

impl BasicAuth {
    pub(super) fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        if already_authenticated(ex, self.anonymous) {
            return Ok(());
        }
        let attempt = self.identify(ex);
        conclude(ex, self.anonymous, attempt)
    }

    fn identify(&self, ex: &mut Exchange<'_>) -> Result<(usize, String), Reply> {
        let unauthorized = || {
            Reply::error(StatusCode::UNAUTHORIZED, "Unauthorized")
                .header(header::WWW_AUTHENTICATE, self.www_authenticate.clone())
        };
        let headers = [header::PROXY_AUTHORIZATION, header::AUTHORIZATION];
        if headers.iter().all(|h| !ex.headers.contains_key(h)) {
            return Err(unauthorized());
        }
        let mut found = None;
        for name in &headers {
            let given = credentials(ex, name);
            if self.hide_credentials {
                ex.headers.remove(name);
            }
            if let Some((user, password)) = given
                && let Some(c) = ex.consumers.basic.get(&user)
            {
                found = Some((c, user, password));
                break;
            }
        }
        let Some((credential, user, password)) = found else { return Err(unauthorized()) };
        if !credential.accepts(&password, &ex.consumers.list[credential.consumer].id) {
            return Err(unauthorized());
        }
        Ok((credential.consumer, user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_compatible_digest() {
        // Kong stores sha1(password .. consumer_id); a file written with _transform: false carries it.
        let c = Credential::new(0, "4d924084-1adb-40a5-c042-63b19db421d1", "kong", true);
        assert_eq!(c.digest, kong_digest("kong", "4d924084-1adb-40a5-c042-63b19db421d1"));
        assert!(c.accepts("kong", "4d924084-1adb-40a5-c042-63b19db421d1"));
        assert!(!c.accepts("kong ", "4d924084-1adb-40a5-c042-63b19db421d1"));
        let hashed = Credential::new(0, "x", &kong_digest("secret", "x").to_uppercase(), false);
        assert!(hashed.accepts("secret", "x"));
    }
}
