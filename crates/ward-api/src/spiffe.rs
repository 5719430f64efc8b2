//! SPIFFE IDs: `spiffe://<trust-domain>/<path>`, parsed and validated strictly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SCHEME: &str = "spiffe://";
const MAX_TRUST_DOMAIN_LEN: usize = 255;
const MAX_ID_LEN: usize = 2048;

/// A validated SPIFFE ID: `spiffe://<mesh>/<service>` from a Mesh's mtls backends, the ID a
/// MeshIdentity renders (`spiffe://<trust-domain>/workload/<name>` by default), or
/// `spiffe://<domain>` for a trust domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    trust_domain_len: usize,
}

/// Why a string is not a valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The ID does not start with `spiffe://`.
    #[error("SPIFFE ID `{id}`: must start with `spiffe://`")]
    MissingScheme {
        /// The rejected input.
        id: String,
    },
    /// The ID is longer than 2048 bytes.
    #[error("SPIFFE ID: is {len} bytes long, the maximum is 2048")]
    TooLong {
        /// Length of the rejected input.
        len: usize,
    },
    /// The trust domain is empty.
    #[error("SPIFFE ID `{id}`: trust domain is empty")]
    EmptyTrustDomain {
        /// The rejected input.
        id: String,
    },
    /// The trust domain is longer than 255 bytes.
    #[error("SPIFFE ID `{id}`: trust domain is longer than 255 characters")]
    TrustDomainTooLong {
        /// The rejected input.
        id: String,
    },
    /// The trust domain has a port (`:`).
    #[error("SPIFFE ID `{id}`: trust domain must not have a port")]
    Port {
        /// The rejected input.
        id: String,
    },
    /// The trust domain has userinfo (`@`).
    #[error("SPIFFE ID `{id}`: trust domain must not have user info (`@`)")]
    UserInfo {
        /// The rejected input.
        id: String,
    },
    /// The trust domain has a character outside `a-z 0-9 . - _`.
    #[error("SPIFFE ID `{id}`: trust domain has invalid character {ch:?} (allowed: a-z 0-9 . - _)")]
    TrustDomainChar {
        /// The rejected input.
        id: String,
        /// The first offending character.
        ch: char,
    },
    /// The ID has a query (`?`).
    #[error("SPIFFE ID `{id}`: must not have a query (`?`)")]
    Query {
        /// The rejected input.
        id: String,
    },
    /// The ID has a fragment (`#`).
    #[error("SPIFFE ID `{id}`: must not have a fragment (`#`)")]
    Fragment {
        /// The rejected input.
        id: String,
    },
    /// A path segment is empty (`//` or a trailing `/`).
    #[error("SPIFFE ID `{id}`: path has an empty segment (`//` or a trailing `/`)")]
    EmptySegment {
        /// The rejected input.
        id: String,
    },
    /// A path segment is `.` or `..`.
    #[error("SPIFFE ID `{id}`: path segment `{segment}` is not allowed")]
    DotSegment {
        /// The rejected input.
        id: String,
        /// The offending segment.
        segment: String,
    },
    /// The path has a character outside `A-Z a-z 0-9 . - _`.
    #[error("SPIFFE ID `{id}`: path has invalid character {ch:?} (allowed: A-Z a-z 0-9 . - _)")]
    PathChar {
        /// The rejected input.
        id: String,
        /// The first offending character.
        ch: char,
    },
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        let id = || input.to_string();
        if input.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: input.len() });
        }
        let rest = input.strip_prefix(SCHEME).ok_or_else(|| SpiffeIdError::MissingScheme { id: id() })?;
        if input.contains('?') {
            return Err(SpiffeIdError::Query { id: id() });
        }
        if input.contains('#') {
            return Err(SpiffeIdError::Fragment { id: id() });
        }
        let (trust_domain, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        check_trust_domain(trust_domain, input)?;
        if !path.is_empty() {
            check_path(&path[1..], input)?;
        }
        Ok(SpiffeId { id: input.to_string(), trust_domain_len: trust_domain.len() })
    }

    /// The workload ID of a service in a mesh: `spiffe://<mesh>/<service>`.
    pub fn for_service(mesh: &str, service: &str) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!("{SCHEME}{mesh}/{service}"))
    }

    /// The trust domain ID of a mesh: `spiffe://<mesh>`.
    pub fn trust_domain(mesh: &str) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!("{SCHEME}{mesh}"))
    }

    /// The trust domain: the mesh name for IDs from a Mesh's mtls backends.
    pub fn mesh(&self) -> &str {
        &self.id[SCHEME.len()..SCHEME.len() + self.trust_domain_len]
    }

    /// The path without its leading `/` (the service name for IDs from a Mesh's mtls
    /// backends); `None` for a trust domain ID.
    pub fn service(&self) -> Option<&str> {
        let path = &self.id[SCHEME.len() + self.trust_domain_len..];
        path.strip_prefix('/')
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

fn check_trust_domain(trust_domain: &str, input: &str) -> Result<(), SpiffeIdError> {
    let id = || input.to_string();
    if trust_domain.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain { id: id() });
    }
    if trust_domain.contains('@') {
        return Err(SpiffeIdError::UserInfo { id: id() });
    }
    if trust_domain.contains(':') {
        return Err(SpiffeIdError::Port { id: id() });
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong { id: id() });
    }
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_');
    match trust_domain.chars().find(|&c| !valid(c)) {
        Some(ch) => Err(SpiffeIdError::TrustDomainChar { id: id(), ch }),
        None => Ok(()),
    }
}

fn check_path(path: &str, input: &str) -> Result<(), SpiffeIdError> {
    let id = || input.to_string();
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    for segment in path.split('/') {
        match segment {
            "" => return Err(SpiffeIdError::EmptySegment { id: id() }),
            "." | ".." => {
                return Err(SpiffeIdError::DotSegment { id: id(), segment: segment.to_string() });
            }
            _ => {}
        }
        if let Some(ch) = segment.chars().find(|&c| !valid(c)) {
            return Err(SpiffeIdError::PathChar { id: id(), ch });
        }
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.id)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_parse_into_mesh_and_service() {
        let cases = [
            ("spiffe://default/users", "default", Some("users")),
            ("spiffe://my-mesh.example_1/ns/prod/sa/items", "my-mesh.example_1", Some("ns/prod/sa/items")),
            ("spiffe://m/Svc_A-1.v2", "m", Some("Svc_A-1.v2")),
            ("spiffe://default", "default", None),
        ];
        for (input, mesh, service) in cases {
            let id = SpiffeId::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(id.mesh(), mesh, "{input}");
            assert_eq!(id.service(), service, "{input}");
            assert_eq!(id.to_string(), input);
        }
    }

    #[test]
    fn invalid_ids_are_rejected_with_their_reason() {
        type Check = fn(&SpiffeIdError) -> bool;
        let cases: [(&str, Check); 16] = [
            ("http://default/users", |e| matches!(e, SpiffeIdError::MissingScheme { .. })),
            ("SPIFFE://default/users", |e| matches!(e, SpiffeIdError::MissingScheme { .. })),
            ("spiffe:///users", |e| matches!(e, SpiffeIdError::EmptyTrustDomain { .. })),
            ("spiffe://", |e| matches!(e, SpiffeIdError::EmptyTrustDomain { .. })),
            ("spiffe://Default/users", |e| matches!(e, SpiffeIdError::TrustDomainChar { ch: 'D', .. })),
            ("spiffe://de fault/users", |e| matches!(e, SpiffeIdError::TrustDomainChar { ch: ' ', .. })),
            ("spiffe://default:8080/users", |e| matches!(e, SpiffeIdError::Port { .. })),
            ("spiffe://admin@default/users", |e| matches!(e, SpiffeIdError::UserInfo { .. })),
            ("spiffe://default/users?x=1", |e| matches!(e, SpiffeIdError::Query { .. })),
            ("spiffe://default/users#frag", |e| matches!(e, SpiffeIdError::Fragment { .. })),
            ("spiffe://default/", |e| matches!(e, SpiffeIdError::EmptySegment { .. })),
            ("spiffe://default//users", |e| matches!(e, SpiffeIdError::EmptySegment { .. })),
            ("spiffe://default/a/./b", |e| matches!(e, SpiffeIdError::DotSegment { .. })),
            ("spiffe://default/..", |e| matches!(e, SpiffeIdError::DotSegment { .. })),
            ("spiffe://default/us%20ers", |e| matches!(e, SpiffeIdError::PathChar { ch: '%', .. })),
            ("spiffe://default/us:ers", |e| matches!(e, SpiffeIdError::PathChar { ch: ':', .. })),
        ];
        for (input, check) in cases {
            let err = SpiffeId::parse(input).expect_err(input);
            assert!(check(&err), "{input}: unexpected error {err:?}");
            assert!(err.to_string().starts_with("SPIFFE ID"), "{err}");
        }
    }

    #[test]
    fn long_trust_domain_and_long_id_are_rejected() {
        let td = "a".repeat(256);
        assert!(matches!(SpiffeId::trust_domain(&td), Err(SpiffeIdError::TrustDomainTooLong { .. })));
        let path = "a".repeat(2048);
        assert!(matches!(SpiffeId::for_service("m", &path), Err(SpiffeIdError::TooLong { .. })));
    }

    #[test]
    fn constructors_build_ward_ids() {
        let id = SpiffeId::for_service("default", "users").unwrap();
        assert_eq!(id.as_str(), "spiffe://default/users");
        let td = SpiffeId::trust_domain("default").unwrap();
        assert_eq!(td.as_str(), "spiffe://default");
        assert_eq!(td.service(), None);
        assert!(SpiffeId::for_service("Bad", "users").is_err());
        assert!(SpiffeId::for_service("m", "").is_err());
    }

    #[test]
    fn error_message_names_the_reason() {
        let err = SpiffeId::parse("spiffe://default:1/x").unwrap_err();
        assert_eq!(err.to_string(), "SPIFFE ID `spiffe://default:1/x`: trust domain must not have a port");
    }

    #[test]
    fn serde_round_trips_as_a_string_and_validates() {
        let id = SpiffeId::for_service("m", "users").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"spiffe://m/users\"");
        assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://M/x\"").is_err());
    }
}
