//! Validation errors that name the resource, the field path and the reason.

use std::fmt;

/// One thing wrong with a resource: the field path and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cause {
    /// Field path such as `spec.from[0].default.action`; empty for the whole document.
    pub field: String,
    /// Why the field is wrong.
    pub message: String,
}

impl Cause {
    /// A cause for `field` with `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause { field: field.into(), message: message.into() }
    }
}

/// Everything wrong with one resource, named `plural/name` (e.g. `meshes/default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// `plural/name` of the resource, or `document N` when it could not be named.
    pub resource: String,
    /// What is wrong, one entry per field.
    pub causes: Vec<Cause>,
}

impl ValidationError {
    /// An error about `resource` with a single cause.
    pub fn single(resource: impl Into<String>, field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError { resource: resource.into(), causes: vec![Cause::new(field, message)] }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, cause) in self.causes.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if cause.field.is_empty() {
                write!(f, "{}: {}", self.resource, cause.message)?;
            } else {
                write!(f, "{}: {}: {}", self.resource, cause.field, cause.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

/// Collects causes while a resource is checked, each under a field path.
#[derive(Debug, Default)]
pub struct Causes(pub Vec<Cause>);

impl Causes {
    /// Records that `field` is wrong because of `message`.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Cause::new(field, message));
    }

    /// Records that `field` is valid in Kuma but Ward cannot serve it yet, and `why`.
    pub fn unsupported(&mut self, field: impl Into<String>, why: impl fmt::Display) {
        self.0.push(Cause::new(field, format!("{UNSUPPORTED}{why}")));
    }
}

/// How the message of a refusal of valid Kuma input that Ward cannot serve yet begins.
pub const UNSUPPORTED: &str = "is valid Kuma but not supported by Ward yet: ";

/// Collects warnings while a resource is checked: fields accepted that have no effect in
/// Ward, each under its field path with the reason.
#[derive(Debug, Default)]
pub struct Warnings(pub Vec<Cause>);

impl Warnings {
    /// Records that `field` is accepted but has no effect, because of `reason`.
    pub fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Cause::new(field, reason));
    }
}
