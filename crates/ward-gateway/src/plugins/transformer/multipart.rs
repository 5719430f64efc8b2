//! `multipart/form-data` bodies (RFC 7578) as request-transformer changes them: the parts
//! are found by the `name` of their `Content-Disposition`; parts no item names are sent
//! again byte for byte.

/// One part: its header lines as sent, its name, and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    headers: Vec<String>,
    name: Option<String>,
    content: Vec<u8>,
}

/// A multipart body read into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Multipart {
    boundary: String,
    parts: Vec<Part>,
}

/// The `boundary` parameter of a multipart Content-Type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    params(content_type).into_iter().skip(1).find_map(|p| {
        let (key, value) = p.split_once('=')?;
        key.trim().eq_ignore_ascii_case("boundary").then(|| unquote(value.trim())).filter(|b| !b.is_empty())
    })
}

/// `text` split at the `;` outside quotes, each piece trimmed.
fn params(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(text[start..].trim());
    out
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.extend(if c == '\\' { chars.next() } else { Some(c) });
            }
            out
        }
        None => value.to_string(),
    }
}

/// The `name` of a part, from its Content-Disposition header line.
fn part_name(headers: &[String]) -> Option<String> {
    let disposition = headers.iter().find_map(|h| {
        let (name, value) = h.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-disposition").then_some(value)
    })?;
    params(disposition).into_iter().skip(1).find_map(|p| {
        let (key, value) = p.split_once('=')?;
        key.trim().eq_ignore_ascii_case("name").then(|| unquote(value.trim()))
    })
}

/// A field name as a quoted-string of Content-Disposition (HTML's escaping of `"`, CR, LF).
fn quoted_name(name: &str) -> String {
    let escaped = name.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A");
    format!("\"{escaped}\"")
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

impl Multipart {
    /// Reads `body`; `None` when it is not a well-formed multipart body with this boundary.
    /// An empty body has no parts.
    pub fn parse(body: &[u8], boundary: &str) -> Option<Self> {
        let mut parts = Vec::new();
        if body.is_empty() {
            return Some(Multipart { boundary: boundary.to_string(), parts });
        }
        let delimiter = format!("--{boundary}").into_bytes();
        let mut crlf_delimiter = b"\r\n".to_vec();
        crlf_delimiter.extend_from_slice(&delimiter);
        // The first delimiter opens the body or ends a line of the preamble.
        let mut at = if body.starts_with(&delimiter) { 0 } else { find(body, &crlf_delimiter, 0)? + 2 };
        loop {
            let mut i = at + delimiter.len();
            if body.get(i..i + 2) == Some(b"--") {
                return Some(Multipart { boundary: boundary.to_string(), parts });
            }
            while matches!(body.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            if body.get(i..i + 2) != Some(b"\r\n") {
                return None;
            }
            i += 2;
            let (headers, content_start) = if body.get(i..i + 2) == Some(b"\r\n") {
                (Vec::new(), i + 2)
            } else {
                let end = find(body, b"\r\n\r\n", i)?;
                let block = std::str::from_utf8(&body[i..end]).ok()?;
                (block.split("\r\n").map(str::to_string).collect::<Vec<_>>(), end + 4)
            };
            let content_end = find(body, &crlf_delimiter, content_start)?;
            parts.push(Part { name: part_name(&headers), headers, content: body[content_start..content_end].to_vec() });
            at = content_end + 2;
        }
    }

    /// Whether a part is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.parts.iter().any(|p| p.name.as_deref() == Some(name))
    }

    /// Removes every part named `name`.
    pub fn remove(&mut self, name: &str) {
        self.parts.retain(|p| p.name.as_deref() != Some(name));
    }

    /// Renames the parts named `old` to `new` (replacing parts named `new`), keeping their
    /// other headers and parameters (a file stays a file); false when there is no `old`.
    pub fn rename(&mut self, old: &str, new: &str) -> bool {
        if old == new || new.is_empty() || !self.has(old) {
            return false;
        }
        self.remove(new);
        for part in self.parts.iter_mut().filter(|p| p.name.as_deref() == Some(old)) {
            for header in part.headers.iter_mut() {
                let Some((field, value)) = header.split_once(':') else { continue };
                if !field.trim().eq_ignore_ascii_case("content-disposition") {
                    continue;
                }
                let mut rebuilt = format!("{field}: ");
                for (i, p) in params(value).into_iter().enumerate() {
                    let is_name = p.split_once('=').is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("name"));
                    match (i, is_name) {
                        (0, _) => rebuilt.push_str(p),
                        (_, true) => rebuilt.push_str(&format!("; name={}", quoted_name(new))),
                        (_, false) => rebuilt.push_str(&format!("; {p}")),
                    }
                }
                *header = rebuilt;
            }
            part.name = Some(new.to_string());
        }
        true
    }

    /// Makes `name` a single plain field holding `value`, in the place of its first part;
    /// false when there is no such part.
    pub fn replace(&mut self, name: &str, value: &str) -> bool {
        let Some(first) = self.parts.iter().position(|p| p.name.as_deref() == Some(name)) else { return false };
        self.parts[first] = simple(name, value);
        let mut seen = 0;
        self.parts.retain(|p| {
            if p.name.as_deref() != Some(name) {
                return true;
            }
            seen += 1;
            seen == 1
        });
        true
    }

    /// Adds a plain field at the end.
    pub fn push(&mut self, name: &str, value: &str) {
        self.parts.push(simple(name, value));
    }

    /// The body again; `None` when a part's content holds the delimiter, which would end it
    /// early for whoever reads the body next.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let delimiter = format!("--{}", self.boundary).into_bytes();
        let mut out = Vec::new();
        for part in &self.parts {
            if find(&part.content, &delimiter, 0).is_some() {
                return None;
            }
            out.extend_from_slice(&delimiter);
            out.extend_from_slice(b"\r\n");
            for h in &part.headers {
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&part.content);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&delimiter);
        out.extend_from_slice(b"--\r\n");
        Some(out)
    }
}

/// A plain form field, as Kong's multipart library writes one.
fn simple(name: &str, value: &str) -> Part {
    Part {
        headers: vec![format!("Content-Disposition: form-data; name={}", quoted_name(name))],
        name: Some(name.to_string()),
        content: value.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"p1\"\r\n\r\nv\r\n\
        --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a;b.txt\"\r\nContent-Type: text/plain\r\n\r\n\
        line1\r\nline2\r\n--XyZ\r\ncontent-disposition: form-data; name=p2\r\n\r\nv1\r\n--XyZ--\r\nepilogue";

    fn names(m: &Multipart) -> Vec<Option<&str>> {
        m.parts.iter().map(|p| p.name.as_deref()).collect()
    }

    #[test]
    fn boundaries_come_from_the_content_type() {
        assert_eq!(boundary("multipart/form-data; boundary=XyZ").as_deref(), Some("XyZ"));
        assert_eq!(boundary("multipart/form-data; charset=utf-8; Boundary=\"a;b c\"").as_deref(), Some("a;b c"));
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("multipart/form-data; boundary="), None);
    }

    #[test]
    fn parts_are_read_and_written_back_by_name() {
        let m = Multipart::parse(BODY.as_bytes(), "XyZ").unwrap();
        assert_eq!(names(&m), [Some("p1"), Some("file"), Some("p2")]);
        assert_eq!(m.parts[1].content, b"line1\r\nline2");
        let again = String::from_utf8(m.to_bytes().unwrap()).unwrap();
        // Preamble and epilogue go, as Kong's library drops them; the parts stay as sent.
        assert_eq!(again, BODY.trim_start_matches("preamble\r\n").trim_end_matches("epilogue"));
        assert_eq!(Multipart::parse(again.as_bytes(), "XyZ").unwrap(), m);
    }

    #[test]
    fn kongs_operations_on_parts() {
        let mut m = Multipart::parse(BODY.as_bytes(), "XyZ").unwrap();
        assert!(m.rename("file", "upload"));
        assert!(!m.rename("absent", "x"));
        assert!(!m.rename("p1", "p1"));
        assert_eq!(m.parts[1].headers[0], "Content-Disposition: form-data; name=\"upload\"; filename=\"a;b.txt\"");
        assert!(m.replace("p1", "v1"));
        assert!(!m.replace("nope", "v1"));
        m.remove("p2");
        m.push("p3", "new \"value\"");
        m.push("we\"ird", "x");
        assert_eq!(names(&m), [Some("p1"), Some("upload"), Some("p3"), Some("we\"ird")]);
        let text = String::from_utf8(m.to_bytes().unwrap()).unwrap();
        assert!(
            text.starts_with("--XyZ\r\nContent-Disposition: form-data; name=\"p1\"\r\n\r\nv1\r\n--XyZ\r\n"),
            "{text}"
        );
        assert!(text.contains("name=\"we%22ird\""), "{text}");
        assert!(text.ends_with("\r\n--XyZ--\r\n"), "{text}");
        let back = Multipart::parse(text.as_bytes(), "XyZ").unwrap();
        assert_eq!(names(&back), [Some("p1"), Some("upload"), Some("p3"), Some("we%22ird")]);
    }

    #[test]
    fn empty_and_broken_bodies() {
        let mut empty = Multipart::parse(b"", "b").unwrap();
        empty.push("p1", "v1");
        assert_eq!(
            String::from_utf8(empty.to_bytes().unwrap()).unwrap(),
            "--b\r\nContent-Disposition: form-data; name=\"p1\"\r\n\r\nv1\r\n--b--\r\n"
        );
        for broken in
            ["no delimiter at all", "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nnever closed", "--bx"]
        {
            assert_eq!(Multipart::parse(broken.as_bytes(), "b"), None, "{broken}");
        }
        let mut m = Multipart::parse(b"--b--\r\n", "b").unwrap();
        m.push("smuggle", "x\r\n--b\r\nContent-Disposition: form-data; name=admin\r\n\r\ntrue");
        assert_eq!(m.to_bytes(), None);
    }
}
