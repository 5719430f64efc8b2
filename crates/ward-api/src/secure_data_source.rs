//! Kuma's `SecureDataSource`: where the control plane reads secret bytes such as a CA's key
//! (a file on its host, a Secret of the mesh, or inline text). Reading the control plane's
//! environment (`EnvVar`) is refused: a resource must not reach into the server's process.

use serde::{Deserialize, Serialize};

use crate::{error::Causes, error::UNSUPPORTED, mesh::DataSource, names::check_name};

/// The kinds of source Ward reads; `EnvVar` is refused when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    /// A file on the control plane's host.
    File,
    /// A Secret of the mesh.
    Secret,
    /// The value itself, in the resource.
    InsecureInline,
}

impl SourceType {
    fn as_str(self) -> &'static str {
        match self {
            SourceType::File => "File",
            SourceType::Secret => "Secret",
            SourceType::InsecureInline => "InsecureInline",
        }
    }
}

impl Serialize for SourceType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SourceType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        match value.as_str() {
            Some("File") => Ok(SourceType::File),
            Some("Secret") => Ok(SourceType::Secret),
            Some("InsecureInline") => Ok(SourceType::InsecureInline),
            Some("EnvVar") => Err(serde::de::Error::custom(format!(
                "{UNSUPPORTED}EnvVar would let a resource read the control plane's environment; \
                 use a Secret of the mesh or a File"
            ))),
            _ => Err(serde::de::Error::custom("must be one of File, Secret, EnvVar, InsecureInline")),
        }
    }
}

/// A secure data source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecureDataSource {
    /// Which of the members below holds the source.
    #[serde(rename = "type")]
    pub ty: SourceType,
    /// `type: File`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<File>,
    /// `type: EnvVar`: never set on an accepted source (the type is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_var: Option<serde_json::Value>,
    /// `type: InsecureInline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_inline: Option<Inline>,
    /// `type: Secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// `file` of a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Absolute path on the control plane's host.
    #[serde(default)]
    pub path: String,
}

/// `insecureInline` of a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inline {
    /// The bytes, as text.
    #[serde(default)]
    pub value: String,
}

/// `secretRef` of a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Always `Secret`.
    #[serde(default)]
    pub kind: String,
    /// The Secret's name, in the resource's mesh.
    #[serde(default)]
    pub name: String,
}

/// Whether `name` is the reference to a sealed CA key that an inline key becomes once applied
/// (`mesh-ca/<mesh>/...`): the control plane opens only the one of the resource's own CA.
pub fn is_sealed_key(name: &str) -> bool {
    name.strip_prefix("mesh-ca/").is_some_and(|rest| rest.split('/').all(|segment| check_name(segment).is_ok()))
}

impl SecureDataSource {
    /// A reference to Secret `name`.
    pub fn secret(name: &str) -> Self {
        SecureDataSource {
            ty: SourceType::Secret,
            file: None,
            env_var: None,
            insecure_inline: None,
            secret_ref: Some(SecretRef { kind: "Secret".into(), name: name.into() }),
        }
    }

    /// The same source as a Mesh's CA backends name theirs, for the code that reads those.
    pub fn data_source(&self) -> DataSource {
        match self.ty {
            SourceType::File => DataSource::File(self.file.as_ref().map(|f| f.path.clone()).unwrap_or_default()),
            SourceType::InsecureInline => {
                DataSource::InlineString(self.insecure_inline.as_ref().map(|i| i.value.clone()).unwrap_or_default())
            }
            SourceType::Secret => {
                DataSource::Secret(self.secret_ref.as_ref().map(|s| s.name.clone()).unwrap_or_default())
            }
        }
    }

    /// Checks the member `type` names is set and well formed, and no other is set.
    pub fn check(&self, at: &str, causes: &mut Causes) {
        let set = [
            ("file", self.file.is_some()),
            ("envVar", self.env_var.is_some()),
            ("insecureInline", self.insecure_inline.is_some()),
            ("secretRef", self.secret_ref.is_some()),
        ];
        let own = match self.ty {
            SourceType::File => "file",
            SourceType::Secret => "secretRef",
            SourceType::InsecureInline => "insecureInline",
        };
        for (member, is_set) in set {
            if is_set && member != own {
                causes.add(format!("{at}.{member}"), format!("must not be set when type is {}", self.ty.as_str()));
            }
        }
        match self.ty {
            SourceType::File => match &self.file {
                None => causes.add(format!("{at}.file"), "must be defined"),
                Some(f) if f.path.is_empty() => causes.add(format!("{at}.file.path"), "must be defined"),
                Some(f) if f.path.contains("..") => {
                    causes.add(format!("{at}.file.path"), "must not contain a directory traversal (`..`)")
                }
                Some(f) if !f.path.starts_with('/') => causes.add(format!("{at}.file.path"), "must be absolute"),
                Some(_) => {}
            },
            SourceType::InsecureInline => match &self.insecure_inline {
                None => causes.add(format!("{at}.insecureInline"), "must be defined"),
                Some(i) if i.value.is_empty() => causes.add(format!("{at}.insecureInline.value"), "must be defined"),
                Some(_) => {}
            },
            SourceType::Secret => match &self.secret_ref {
                None => causes.add(format!("{at}.secretRef"), "must be defined"),
                Some(r) => {
                    if r.kind != "Secret" {
                        causes.add(format!("{at}.secretRef.kind"), format!("must be Secret (got {:?})", r.kind));
                    }
                    if r.name.is_empty() {
                        causes.add(format!("{at}.secretRef.name"), "must be defined");
                    } else if let Err(e) = check_name(&r.name)
                        && !is_sealed_key(&r.name)
                    {
                        causes.add(format!("{at}.secretRef.name"), e);
                    }
                }
            },
        }
    }
}
