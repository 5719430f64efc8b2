//! Rules for names of resources, meshes and tag values.

/// Longest resource name accepted.
pub const MAX_NAME_LEN: usize = 253;

/// Checks a resource or mesh name: letters, digits, `-`, `_` and `.`, starting and
/// ending with a letter or digit, at most 253 characters. Names appear in URL paths and
/// SPIFFE IDs, so nothing else is allowed.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("must be at most {MAX_NAME_LEN} characters"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(format!("must contain only letters, digits, '-', '_' and '.' (found {bad:?})"));
    }
    Ok(())
}

/// Checks a service name, which becomes the path of a SPIFFE ID: like a resource name.
pub fn check_service(name: &str) -> Result<(), String> {
    check_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        for good in ["default", "web-1", "a", "backend_v2", "x.y"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a/b", "a b", "ü", ".a", &"a".repeat(254)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
