//! SPIFFE ID templates of a MeshIdentity: the subset of Go's text/template syntax that Ward
//! renders. Literal text, fields (`{{ .Name }}`) and the `label` function with one quoted key
//! (`{{ label "key" }}`); every other action is refused, as is text Go cannot parse.

use std::collections::BTreeMap;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text copied as it is.
    Text(String),
    /// `{{ .Name }}`: a field of the data the template is rendered with.
    Field(String),
    /// `{{ label "key" }}`: the value of a label.
    Label(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Its pieces, in order.
    pub pieces: Vec<Piece>,
}

/// Why a template is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// Not a template Go could parse, or one that cannot render.
    Invalid(String),
    /// Valid Go template syntax outside the subset Ward renders.
    Unsupported(String),
}

/// Go's predefined functions and keywords: an action naming one is valid Go, just not Ward's.
const GO_WORDS: &[&str] = &[
    "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf", "println", "urlquery", "eq",
    "ge", "gt", "le", "lt", "ne", "if", "else", "end", "range", "with", "define", "template", "block", "break",
    "continue", "nil", "true", "false", "label",
];

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Invalid(m) | TemplateError::Unsupported(m) => f.write_str(m),
        }
    }
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(TemplateError::Invalid("couldn't parse template: unclosed action".into()));
            };
            pieces.push(action(&after[..end])?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { pieces })
    }

    /// Renders with `field` for fields and `label` for labels; either fails with its reason.
    pub fn render(
        &self,
        field: impl Fn(&str) -> Result<String, String>,
        label: impl Fn(&str) -> Result<String, String>,
    ) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => out.push_str(&field(f)?),
                Piece::Label(k) => out.push_str(&label(k)?),
            }
        }
        Ok(out)
    }

    /// Renders reading labels from `labels` (a missing label is an error) and fields from `fields`.
    pub fn render_with(&self, fields: &[(&str, &str)], labels: &BTreeMap<String, String>) -> Result<String, String> {
        self.render(
            |name| {
                fields.iter().find(|(f, _)| *f == name).map(|(_, v)| v.to_string()).ok_or_else(|| {
                    let known: Vec<String> = fields.iter().map(|(f, _)| format!(".{f}")).collect();
                    format!("has no field .{name} (fields: {})", known.join(", "))
                })
            },
            |key| labels.get(key).cloned().ok_or_else(|| format!("label {key:?} not found")),
        )
    }
}

/// Reads the inside of one `{{ }}`.
fn action(inner: &str) -> Result<Piece, TemplateError> {
    let shown = format!("{{{{{inner}}}}}");
    let unsupported = |why: &str| Err(TemplateError::Unsupported(format!("action {shown}: {why}")));
    if inner.starts_with('-') || inner.ends_with('-') {
        return unsupported("trim markers are not supported");
    }
    let body = inner.trim();
    if body.starts_with("/*") {
        return unsupported("comments are not supported");
    }
    if body.is_empty() {
        return Err(TemplateError::Invalid(format!("couldn't parse template: missing value for command in {shown}")));
    }
    if let Some(name) = body.strip_prefix('.')
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Ok(Piece::Field(name.to_string()));
    }
    if let Some(arg) = body.strip_prefix("label").filter(|a| a.starts_with(char::is_whitespace)) {
        let key = arg.trim_start().strip_prefix('"').and_then(|a| a.strip_suffix('"'));
        if let Some(key) = key.filter(|k| !k.contains(['"', '\\'])) {
            return Ok(Piece::Label(key.to_string()));
        }
    }
    // What Go itself refuses when parsing: functions it does not know, and pipeline stages
    // that are not commands.
    for (i, stage) in body.split('|').enumerate() {
        let word = stage.split_whitespace().next().unwrap_or("");
        let starts_ident = word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if starts_ident && !GO_WORDS.contains(&word) {
            return Err(TemplateError::Invalid(format!("couldn't parse template: function {word:?} not defined")));
        }
        let literal = word.starts_with(|c: char| c.is_ascii_digit() || c == '"' || c == '\'' || c == '`')
            || matches!(word, "nil" | "true" | "false");
        if i > 0 && literal {
            return Err(TemplateError::Invalid(format!(
                "couldn't parse template: non executable command in pipeline stage {}",
                i + 1
            )));
        }
    }
    unsupported("only fields such as {{ .Mesh }} and {{ label \"key\" }} are supported")
}

#[cfg(test)]
mod tests;
