//! Request path normalisation, done once before routing so that the router, the plugins
//! and the upstream all see the same path: `/public/../admin` is `/admin`, and an
//! encoded slash can never smuggle a second meaning past the router.

/// Why a request path is refused (the client gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path is not absolute")]
    NotAbsolute,
    /// `%2F`, `%5C` or a raw `\`: a separator the upstream might read differently.
    #[error("the path has an encoded slash or a backslash")]
    AmbiguousSeparator,
    /// A NUL or another control character, raw or encoded.
    #[error("the path has a control character")]
    Control,
    /// `%` not followed by two hex digits.
    #[error("the path has an invalid percent-encoding")]
    BadEscape,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes percent-escapes of unreserved characters once (others stay escaped, in upper
/// case), refuses encoded separators and control characters, collapses `//`, and resolves
/// `.` and `..` without ever leaving the root.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) =
                    (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
                else {
                    return Err(PathError::BadEscape);
                };
                let c = hi << 4 | lo;
                match c {
                    b'/' | b'\\' => return Err(PathError::AmbiguousSeparator),
                    c if c < 0x20 || c == 0x7f => return Err(PathError::Control),
                    c if is_unreserved(c) => decoded.push(c as char),
                    c => {
                        decoded.push('%');
                        decoded.push_str(&format!("{c:02X}"));
                    }
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::AmbiguousSeparator),
            b if b < 0x20 || b == 0x7f => return Err(PathError::Control),
            _ => decoded.push(b as char),
        }
        i += 1;
    }
    if !decoded.contains("//") && !decoded.contains("/.") {
        return Ok(decoded);
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = true;
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacks_and_plain_paths() {
        let table: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/items", Ok("/items")),
            ("/items/", Ok("/items/")),
            ("/public/../admin", Ok("/admin")),
            ("/public/./../admin/", Ok("/admin/")),
            ("/../../admin", Ok("/admin")),
            ("/..", Ok("/")),
            ("/a/..", Ok("/")),
            ("/a/.", Ok("/a/")),
            ("//admin", Ok("/admin")),
            ("/public//..//admin", Ok("/admin")),
            ("/public/%2e%2e/admin", Ok("/admin")),
            ("/public/%2E%2E/admin", Ok("/admin")),
            ("/public/.%2e/admin", Ok("/admin")),
            ("/%61dmin", Ok("/admin")),
            ("/a%20b", Ok("/a%20b")),
            ("/a%3fb", Ok("/a%3Fb")),
            ("/a.b/c..d", Ok("/a.b/c..d")),
            ("/public%2F..%2Fadmin", Err(PathError::AmbiguousSeparator)),
            ("/public%2f..%2fadmin", Err(PathError::AmbiguousSeparator)),
            ("/public%5C..%5Cadmin", Err(PathError::AmbiguousSeparator)),
            ("/public\\..\\admin", Err(PathError::AmbiguousSeparator)),
            ("/admin%00.json", Err(PathError::Control)),
            ("/admin%0a", Err(PathError::Control)),
            ("/admin%", Err(PathError::BadEscape)),
            ("/admin%zz", Err(PathError::BadEscape)),
            ("/%252e%252e/admin", Ok("/%252e%252e/admin")),
            ("admin", Err(PathError::NotAbsolute)),
            ("*", Err(PathError::NotAbsolute)),
        ];
        for (raw, want) in table {
            assert_eq!(normalize(raw).as_deref().map_err(|e| *e), *want, "{raw}");
        }
    }

    #[test]
    fn decoding_happens_once() {
        // %25 is '%', which is reserved: it stays encoded, so %252e never becomes '.'.
        assert_eq!(normalize("/a/%252e%252e/b").unwrap(), "/a/%252e%252e/b");
    }
}
