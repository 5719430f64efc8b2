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
