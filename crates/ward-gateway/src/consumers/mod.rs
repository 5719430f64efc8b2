//! Consumers and their credentials, indexed at load so that each request does one lookup.

pub(crate) mod credentials;

use std::collections::HashMap;

use crate::config::Declaration;
use crate::error::ConfigErrors;
use credentials::{BasicCredential, HmacCredential, JwtSecret, KeyCredential};

/// A consumer of the API.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub id: String,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    /// ACL groups, in the order they were written.
    pub groups: Vec<String>,
}

/// Every consumer and credential of a configuration.
#[derive(Debug, Default)]
pub(crate) struct Consumers {
    pub list: Vec<Consumer>,
    /// key-auth credentials by the SHA-256 of their key (see [`credentials::key_digest`]).
    pub keys: HashMap<[u8; 32], KeyCredential>,
    /// basic-auth credentials by username.
    pub basic: HashMap<String, BasicCredential>,
    /// hmac-auth credentials by username.
    pub hmac: HashMap<String, HmacCredential>,
    /// JWT secrets by key (the `iss` claim by default).
    pub jwt: HashMap<String, JwtSecret>,
    /// key-auth credentials' consumers by credential id.
    key_ids: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    by_username: HashMap<String, usize>,
    by_custom_id: HashMap<String, usize>,
}

impl Consumers {
    /// Indexes the consumers and credentials of `decl`, recording problems in `errors`.
    pub fn compile(decl: &Declaration, errors: &mut ConfigErrors) -> Consumers {
        let mut c = Consumers::default();
        for (i, e) in decl.consumers.iter().enumerate() {
            c.by_id.insert(e.id.clone(), i);
            if let Some(u) = &e.item.username {
                c.by_username.insert(u.clone(), i);
            }
            if let Some(custom) = &e.item.custom_id
                && c.by_custom_id.insert(custom.clone(), i).is_some()
            {
                errors
                    .add(format!("{}.custom_id", e.path), format!("custom_id '{custom}' is used by another consumer"));
            }
            c.list.push(Consumer {
                id: e.id.clone(),
                username: e.item.username.clone(),
                custom_id: e.item.custom_id.clone(),
                groups: Vec::new(),
            });
        }
        for e in &decl.acls {
            if let Some(consumer) = e.links.consumer {
                let groups = &mut c.list[consumer].groups;
                if !groups.contains(&e.item.group) {
                    groups.push(e.item.group.clone());
                }
            }
        }
        for e in &decl.keyauth_credentials {
            let Some(consumer) = e.links.consumer else { continue };
            let key = e.item.key.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            if key.is_empty() {
                errors.add(format!("{}.key", e.path), "must not be empty");
                continue;
            }
            c.key_ids.insert(e.id.clone(), consumer);
            let credential = KeyCredential { consumer, id: e.id.clone() };
            if c.keys.insert(credentials::key_digest(&key), credential).is_some() {
                errors.add(format!("{}.key", e.path), "is the key of another credential");
            }
        }
        for e in &decl.basicauth_credentials {
            let Some(consumer) = e.links.consumer else { continue };
            let consumer_id = &c.list[consumer].id;
            let credential = BasicCredential::new(consumer, consumer_id, &e.item.password, decl.transform);
            if c.basic.insert(e.item.username.clone(), credential).is_some() {
                errors.add(format!("{}.username", e.path), "is the username of another credential");
            }
        }
        for e in &decl.hmacauth_credentials {
            let Some(consumer) = e.links.consumer else { continue };
            let secret = e.item.secret.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            let credential =
                HmacCredential { consumer, username: e.item.username.clone(), secret: secret.into_bytes() };
            if c.hmac.insert(e.item.username.clone(), credential).is_some() {
                errors.add(format!("{}.username", e.path), "is the username of another credential");
            }
        }
        for e in &decl.jwt_secrets {
            let Some(consumer) = e.links.consumer else { continue };
            let Some(secret) = JwtSecret::compile(consumer, &e.item, &e.path, errors) else { continue };
            if c.jwt.contains_key(&secret.key) {
                errors.add(format!("{}.key", e.path), "is the key of another JWT secret");
                continue;
            }
            c.jwt.insert(secret.key.clone(), secret);
        }
        c
    }

    /// The consumer with this id or username (how `anonymous` names one).
    pub fn find(&self, id_or_username: &str) -> Option<usize> {
        self.by_id.get(id_or_username).or_else(|| self.by_username.get(id_or_username)).copied()
    }

    /// The consumer with this id.
    pub fn by_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Whether `consumer` still has the credential an authentication plugin identified it
    /// by (what `X-Credential-Identifier` carries): a key-auth credential's id, a basic-auth
    /// or hmac-auth username, a JWT secret's key, or, for mtls-auth, the certificate name
    /// that matched its username or custom_id.
    pub fn holds(&self, consumer: usize, credential: &str) -> bool {
        let c = &self.list[consumer];
        self.key_ids.get(credential) == Some(&consumer)
            || self.basic.get(credential).is_some_and(|b| b.consumer == consumer)
            || self.hmac.get(credential).is_some_and(|h| h.consumer == consumer)
            || self.jwt.get(credential).is_some_and(|j| j.consumer == consumer)
            || c.username.as_deref() == Some(credential)
            || c.custom_id.as_deref() == Some(credential)
    }

    /// The consumer with this username.
    pub fn by_username(&self, username: &str) -> Option<usize> {
        self.by_username.get(username).copied()
    }

    /// The consumer with this custom_id.
    pub fn by_custom_id(&self, custom_id: &str) -> Option<usize> {
        self.by_custom_id.get(custom_id).copied()
    }
}
