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
    #[serde(default)]
    always_use_authenticated_groups: bool,
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
    if c.always_use_authenticated_groups {
        cx.error("always_use_authenticated_groups", "is not supported: groups come from the consumer's acls");
    }
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
    use super::*;

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
