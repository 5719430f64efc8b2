//! acl: lets a consumer through by its groups (an allow list or a deny list).

use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::{Compile, Plugin};
use crate::exchange::{Exchange, consumer_headers};
use crate::reply::Reply;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    hide_groups_header: bool,
    /// Kong: use the "authenticated groups" (which ldap-auth, openid-connect and the sessions
    /// they open give) over the consumer's, and the consumer's when there are none. No plugin
    /// of Ward gives authenticated groups, so the consumer's groups decide either way.
    #[serde(default, rename = "always_use_authenticated_groups")]
    _always_use_authenticated_groups: bool,
}

/// Which list decides.
enum Rule {
    Allow(Vec<String>),
    Deny(Vec<String>),
}

/// A compiled acl configuration.
pub(crate) struct Acl {
    rule: Rule,
    hide_groups_header: bool,
}

pub(super) fn compile(cx: &mut Compile<'_>, value: Value) -> Option<Plugin> {
    let c: Config = cx.config(value)?;
    let rule = match (c.allow.is_empty(), c.deny.is_empty()) {
        (false, true) => Rule::Allow(c.allow),
        (true, false) => Rule::Deny(c.deny),
        (false, false) => {
            cx.error("allow", "only one of these fields can be set: allow, deny");
            return None;
        }
        (true, true) => {
            cx.error("allow", "at least one of these fields must be non-empty: allow, deny");
            return None;
        }
    };
    Some(Plugin::Acl(Acl { rule, hide_groups_header: c.hide_groups_header }))
}

impl Acl {
    pub(super) fn access(&self, ex: &mut Exchange<'_>) -> Result<(), Reply> {
        let Some(consumer) = ex.consumer else { return Err(Reply::status(StatusCode::UNAUTHORIZED)) };
        let groups = &ex.consumers.list[consumer].groups;
        if self.blocks(groups) {
            return Err(Reply::error(StatusCode::FORBIDDEN, "You cannot consume this service"));
        }
        if !self.hide_groups_header
            && !groups.is_empty()
            && let Ok(value) = HeaderValue::from_str(&groups.join(", "))
        {
            ex.headers.insert(consumer_headers::GROUPS, value);
        }
        Ok(())
    }

    fn blocks(&self, groups: &[String]) -> bool {
        match &self.rule {
            Rule::Allow(allowed) => !groups.iter().any(|g| allowed.contains(g)),
            Rule::Deny(denied) => groups.iter().any(|g| denied.contains(g)),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};

    use super::*;
    use crate::compiled::compile as compile_gateway;
    use crate::plugins::transformer::testing;
    use crate::runtime::Shared;

    /// Kong's acl spec (`always_use_authenticated_groups`, "if authenticated_groups is not set,
    /// fallback to use acl groups"), and an anonymous consumer's groups, with the switch on
    /// and off: (route, apikey, status, X-Consumer-Groups upstream).
    #[tokio::test]
    async fn always_use_authenticated_groups_falls_back_to_the_consumers_groups() {
        for switch in [true, false] {
            let config = format!(
                r#"
_format_version: "3.0"
routes:
- name: members
  paths: [/members]
  plugins:
  - name: key-auth
  - name: acl
    config: {{allow: [acl_group1], always_use_authenticated_groups: {switch}}}
- name: guests
  paths: [/guests]
  plugins:
  - name: key-auth
    config: {{anonymous: guest}}
  - name: acl
    config: {{allow: [guests], always_use_authenticated_groups: {switch}}}
consumers:
- username: consumer127
  keyauth_credentials: [{{key: apikey127}}]
  acls: [{{group: acl_group1}}]
- username: consumer126
  keyauth_credentials: [{{key: apikey126}}]
- username: guest
  acls: [{{group: guests}}]
"#
            );
            let gw = compile_gateway(&config, &Shared::default()).unwrap_or_else(|e| panic!("{e}"));
            let table: &[(&str, Option<&str>, u16, Option<&str>)] = &[
                ("members", Some("apikey127"), 200, Some("acl_group1")),
                ("members", Some("apikey126"), 403, None),
                ("members", None, 401, None),
                ("guests", None, 200, Some("guests")),
                ("guests", Some("apikey127"), 403, None),
            ];
            for (name, key, status, groups) in table {
                let route = gw.routes.iter().find(|r| r.name.as_deref() == Some(*name)).unwrap();
                let conn = testing::conn();
                let mut headers = HeaderMap::new();
                if let Some(key) = key {
                    headers.insert("apikey", HeaderValue::from_static(key));
                }
                let target = format!("/{name}");
                let mut ex = testing::exchange(&conn, &gw.consumers, route, "GET", &target, headers, Bytes::new());
                let got = match route.chain.run(&mut ex).await {
                    Ok(()) => 200,
                    Err(reply) => reply.into_response().status().as_u16(),
                };
                let sent = ex.header(&consumer_headers::GROUPS).filter(|_| got == 200);
                assert_eq!((got, sent), (*status, *groups), "{name} {key:?} switch {switch}");
            }
        }
    }

    #[test]
    fn allow_and_deny() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let allow = Acl { rule: Rule::Allow(s(&["admin"])), hide_groups_header: false };
        let deny = Acl { rule: Rule::Deny(s(&["banned"])), hide_groups_header: false };
        let table: &[(&Acl, &[&str], bool)] = &[
            (&allow, &["admin"], false),
            (&allow, &["user", "admin"], false),
            (&allow, &["user"], true),
            (&allow, &[], true),
            (&deny, &["banned"], true),
            (&deny, &["user"], false),
            (&deny, &[], false),
        ];
        for (acl, groups, blocked) in table {
            assert_eq!(acl.blocks(&s(groups)), *blocked, "{groups:?}");
        }
    }
}
