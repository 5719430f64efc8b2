//! Label keys and values, by Kubernetes' rules (which Kuma follows): a key is an optional
//! prefix (a DNS subdomain of at most 253 characters) and `/`, then a name of at most 63
//! characters; a value is empty or at most 63 characters. Names and values are letters,
//! digits, `-`, `_` and `.`, beginning and ending with a letter or digit.

use std::collections::BTreeMap;

use crate::error::Causes;

/// Longest label name or value.
pub const MAX_NAME_LEN: usize = 63;
/// Longest key prefix.
pub const MAX_PREFIX_LEN: usize = 253;

/// Checks every label under `at`; with `selector`, a value may also be `*` (any value).
pub fn check_labels(at: &str, labels: &BTreeMap<String, String>, selector: bool, causes: &mut Causes) {
    for (key, value) in labels {
        let field = format!("{at}.{key}");
        if let Err(e) = check_key(key) {
            causes.add(&field, format!("label name {e}"));
        } else if !(selector && value == "*")
            && let Err(e) = check_value(value)
        {
            causes.add(&field, format!("label value {e}"));
        }
    }
}

/// Checks a key: `[prefix/]name`.
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_prefix(prefix).map_err(|e| format!("prefix {e}"))?;
    }
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    check_value(name)
}

/// Checks a value: empty, or a name of at most 63 characters.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_NAME_LEN {
        return Err(format!("must be at most {MAX_NAME_LEN} characters (has {})", value.len()));
    }
    if value.is_empty() {
        return Ok(());
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(value.chars().next()) || !edge(value.chars().last()) {
        return Err("must begin and end with a letter or digit".into());
    }
    match value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        Some(bad) => Err(format!("must contain only letters, digits, '-', '_' and '.' (found {bad:?})")),
        None => Ok(()),
    }
}

/// Checks a prefix: a DNS subdomain (lowercase letters, digits, `-` and `.`, each dot-separated
/// part beginning and ending with a letter or digit), at most 253 characters.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(format!("must be at most {MAX_PREFIX_LEN} characters (has {})", prefix.len()));
    }
    let part_ok = |part: &str| {
        let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        edge(part.chars().next())
            && edge(part.chars().last())
            && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if prefix.split('.').all(part_ok) {
        Ok(())
    } else {
        Err(format!("must be a DNS subdomain such as kuma.io (got {prefix:?})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_kubernetes_rules() {
        let long_prefix = format!("{}.io", "a".repeat(251));
        for good in [
            "team",
            "kuma.io/zone",
            "k8s.kuma.io/namespace",
            "a_b.c-d",
            &"n".repeat(63),
            &format!("{}/x", "p".repeat(253)),
        ] {
            assert_eq!(check_key(good), Ok(()), "{good}");
        }
        for bad in
            ["", "/x", "kuma.io/", &"n".repeat(64), &format!("{long_prefix}/x"), "Kuma.io/zone", "a b", "-a", "a/b/c"]
        {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        for good in ["", "a", "backend_v2", "1.0", &"v".repeat(63)] {
            assert_eq!(check_value(good), Ok(()), "{good}");
        }
        for bad in [&"v".repeat(64), "a/b", "-a", "a.", "ü"] {
            assert!(check_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_bad_label_is_named_and_selectors_may_match_any_value() {
        let labels: BTreeMap<String, String> = [("ok", "x"), ("team", &*"x".repeat(64)), ("a b", "c"), ("zone", "*")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let mut causes = Causes::default();
        check_labels("labels", &labels, false, &mut causes);
        let fields: Vec<&str> = causes.0.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["labels.a b", "labels.team", "labels.zone"]);
        assert_eq!(causes.0[1].message, "label value must be at most 63 characters (has 64)");
        let mut causes = Causes::default();
        check_labels("labels", &labels, true, &mut causes);
        assert_eq!(causes.0.len(), 2, "{:?}", causes.0);
    }
}
