//! YAML text into JSON values, with the tag of every node checked: only YAML 1.2's core tags
//! (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!seq`, `!!map`) and the non-specific
//! `!` are accepted. Any other tag, such as `!!python/object` or an application's `!secret`,
//! is refused with the field it sits on, never silently dropped.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Tagged;

use crate::error::Cause;

/// Namespace of the `!!` tags.
const YAML_NAMESPACE: &str = "tag:yaml.org,2002:";
/// The core schema's tags, under [`YAML_NAMESPACE`].
const CORE_TAGS: [&str; 7] = ["str", "int", "float", "bool", "null", "seq", "map"];

/// One node as written: its content and the tag it carried.
pub struct Node(Tagged<Content>);

/// What a node holds.
pub enum Content {
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Str(String),
    /// Binary data (`!!binary`), which no resource takes.
    Bytes,
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping; keys keep their tags too.
    Map(Vec<(Tagged<String>, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Tagged::<Content>::deserialize(d).map(Node)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML node")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Content, E> {
        Ok(Content::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Content, E> {
        Ok(Content::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Content, D::Error> {
        Content::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Content, E> {
        Ok(Content::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Content, E> {
        Ok(if v < 0 { Content::Int(v) } else { Content::UInt(v.unsigned_abs()) })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Content, E> {
        Ok(Content::UInt(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Content, E> {
        Ok(Content::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
        Ok(Content::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
        Ok(Content::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Content, E> {
        Ok(Content::Bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Content::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Content, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Content::Map(entries))
    }
}

/// The node as JSON, or the first node whose tag is not a core tag (with its field path).
pub fn into_json(node: Node) -> Result<Value, Cause> {
    convert(node, "")
}

fn convert(Node(Tagged(content, tag)): Node, at: &str) -> Result<Value, Cause> {
    check_tag(tag.as_deref()).map_err(|message| Cause::new(at, message))?;
    Ok(match content {
        Content::Null => Value::Null,
        Content::Bool(b) => Value::Bool(b),
        Content::Int(i) => i.into(),
        Content::UInt(u) => u.into(),
        Content::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| Cause::new(at, "must be a finite number"))?,
        Content::Str(s) => Value::String(s),
        Content::Bytes => return Err(Cause::new(at, "binary data is not allowed")),
        Content::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| convert(item, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Content::Map(entries) => {
            let mut fields = serde_json::Map::new();
            for (Tagged(key, key_tag), value) in entries {
                let path = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
                check_tag(key_tag.as_deref()).map_err(|message| Cause::new(&path, message))?;
                let value = convert(value, &path)?;
                fields.insert(key, value);
            }
            Value::Object(fields)
        }
    })
}

/// Accepts no tag, the non-specific `!` and the core tags.
fn check_tag(tag: Option<&str>) -> Result<(), String> {
    let Some(tag) = tag.filter(|t| *t != "!") else { return Ok(()) };
    match tag.strip_prefix(YAML_NAMESPACE) {
        Some(core) if CORE_TAGS.contains(&core) => Ok(()),
        Some(other) => Err(refusal(&format!("!!{other}"))),
        None => Err(refusal(tag)),
    }
}

fn refusal(tag: &str) -> String {
    format!("tag {tag} is not allowed: only YAML 1.2's core tags (!!str, !!int, !!float, !!bool, !!null, !!seq, !!map)")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::parse::documents;

    #[test]
    fn core_tags_are_kept_and_every_other_tag_is_refused_where_it_sits() {
        let docs =
            documents("!!map\na: !!str 1\nb: !!int 2\nc: !!float 1.5\nd: !!bool true\ne: !!null ~\nf: !!seq [! x]\n")
                .unwrap();
        assert_eq!(docs, [json!({"a": "1", "b": 2, "c": 1.5, "d": true, "e": null, "f": ["x"]})]);
        for (yaml, want) in [
            ("a: !!python/object:os.system {}\n", "document 1: a: tag !!python/object:os.system is not allowed"),
            ("a: b\n---\nx: [1, !secret y]\n", "document 2: x[1]: tag !secret is not allowed"),
            ("!!python/name:os.system x\n", "document 1: tag !!python/name:os.system is not allowed"),
            ("a:\n  !custom k: v\n", "document 1: a.k: tag !custom is not allowed"),
            ("a: !!binary aGk=\n", "document 1: a: tag !!binary is not allowed"),
            (
                "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n",
                "document 1: a: tag tag:example.com,2000:x is not allowed",
            ),
        ] {
            let err = documents(yaml).unwrap_err().to_string();
            assert!(err.starts_with(want), "{yaml:?}: {err}");
        }
        // The parser itself refuses a timestamp where text is read, naming the line.
        let err = documents("a: !!timestamp 2001-12-14\n").unwrap_err().to_string();
        assert!(err.starts_with("input: is not valid YAML: error: line 1 column"), "{err}");
    }
}
