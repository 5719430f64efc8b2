//! `Secret` (in a mesh) and `GlobalSecret` (global): opaque bytes, given as base64 in `data`.
//!
//! The bytes exist in two states: as given (`data`), and sealed by the control plane before
//! they are stored (`sealed`). Only the control plane seals and opens; this module only keeps
//! the two apart, so that sealed bytes are never mistaken for data and data is never
//! written where only sealed bytes belong.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{error::Causes, parse::typed};

/// The content of a Secret or GlobalSecret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The bytes themselves, as a user gave them or an admin asked to see them.
    Data(Vec<u8>),
    /// The bytes sealed with the control plane's key-encryption key, as stored.
    Sealed(Vec<u8>),
}

/// Never prints the bytes, in either state.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Data(d) => write!(f, "Secret::Data({} bytes)", d.len()),
            Secret::Sealed(s) => write!(f, "Secret::Sealed({} bytes)", s.len()),
        }
    }
}

/// The fields a user writes: only `data`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Given {
    #[serde(default)]
    data: Option<String>,
}

/// The fields the store keeps: only `sealed`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    sealed: String,
}

impl Secret {
    /// Reads the fields a user gave (`data`: base64 of at least one byte), causes under `causes`.
    pub fn from_given(fields: Value, causes: &mut Causes) -> Option<Secret> {
        let given: Given = typed("", fields).map_err(|cause| causes.0.push(cause)).ok()?;
        let Some(text) = given.data else {
            causes
                .add("data", "is required: the secret's bytes as base64 (`ward get` shows them only with --show-data)");
            return None;
        };
        match STANDARD.decode(text.trim()) {
            Ok(bytes) if bytes.is_empty() => {
                causes.add("data", "cannot be empty");
                None
            }
            Ok(bytes) => Some(Secret::Data(bytes)),
            Err(e) => {
                causes.add("data", format!("must be base64 ({e})"));
                None
            }
        }
    }

    /// Reads what [`Secret::stored_json`] wrote.
    pub fn from_stored(fields: Value) -> Result<Secret, String> {
        let stored: Stored = typed("", fields).map_err(|c| format!("{}: {}", c.field, c.message))?;
        STANDARD.decode(stored.sealed).map(Secret::Sealed).map_err(|e| format!("sealed: {e}"))
    }

    /// What the store keeps: `{"sealed": BASE64}`; `None` for data not sealed yet, which
    /// must never be stored.
    pub fn stored_json(&self) -> Option<Value> {
        match self {
            Secret::Data(_) => None,
            Secret::Sealed(sealed) => Some(json!({ "sealed": STANDARD.encode(sealed) })),
        }
    }

    /// What the API shows: `{"data": BASE64}` for opened data, nothing for sealed bytes.
    pub fn shown_json(&self) -> Value {
        match self {
            Secret::Data(data) => json!({ "data": STANDARD.encode(data) }),
            Secret::Sealed(_) => json!({}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_data_is_checked_and_never_printed() {
        let cases: &[(Value, Result<&[u8], &str>)] = &[
            (json!({"data": "aGVsbG8="}), Ok(b"hello")),
            (json!({"data": " aGVsbG8=\n"}), Ok(b"hello")),
            (json!({"data": ""}), Err("data: cannot be empty")),
            (json!({"data": "not base64!"}), Err("data: must be base64 (")),
            (json!({"data": "aGVsbG8"}), Err("data: must be base64 (")),
            (json!({"data": 12}), Err("data: must be a string")),
            (json!({}), Err("data: is required")),
            (json!({"data": "aA==", "sealed": "aA=="}), Err("sealed: unknown field")),
        ];
        for (fields, want) in cases {
            let mut causes = Causes::default();
            let got = Secret::from_given(fields.clone(), &mut causes);
            match want {
                Ok(bytes) => assert_eq!(got, Some(Secret::Data(bytes.to_vec())), "{fields}"),
                Err(text) => {
                    let cause = &causes.0[0];
                    let said = format!("{}: {}", cause.field, cause.message);
                    assert!(got.is_none() && said.starts_with(text), "{fields}: {said}");
                }
            }
        }
        assert_eq!(format!("{:?}", Secret::Data(b"hunter2".to_vec())), "Secret::Data(7 bytes)");
    }

    #[test]
    fn only_sealed_bytes_are_stored_and_only_data_is_shown() {
        let data = Secret::Data(b"key".to_vec());
        assert_eq!(data.stored_json(), None);
        assert_eq!(data.shown_json(), json!({"data": "a2V5"}));
        let sealed = Secret::Sealed(vec![1, 2, 3]);
        assert_eq!(sealed.shown_json(), json!({}));
        let stored = sealed.stored_json().unwrap();
        assert_eq!(Secret::from_stored(stored).unwrap(), sealed);
        assert!(Secret::from_stored(json!({"data": "a2V5"})).is_err(), "data is never read as stored");
    }
}
