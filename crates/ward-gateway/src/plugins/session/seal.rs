//! Ward's session cookie: what a session holds, sealed with AES-256-GCM and split into
//! cookies of at most 4 KiB, as Kong splits its own (up to 9: `session`, `session2`, ...).
//!
//! A sealed value is base64url (no padding) of: a version byte, a random 16-byte salt, then
//! the ciphertext and its tag. The key and nonce come from HKDF-SHA256 over the plugin's
//! secret, expanded with the salt, so no two cookies share a key. The version and the
//! cookie's kind (session or persistent) are the additional authenticated data: a
//! persistent cookie cannot pass for a session cookie. Nobody but Ward reads it.
//!
//! The openid-connect plugin keeps its session and its authorization state in cookies of
//! the same format, each of its own kind.

use std::collections::HashMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Prk, Salt};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The format's version, first byte of every sealed value.
const VERSION: u8 = 1;
/// Random bytes per sealed value, from which its key and nonce are derived.
const SALT_LEN: usize = 16;
/// AES-256-GCM's key length.
const KEY_LEN: usize = 32;
/// The longest `name=value` of one cookie, as Kong's session library keeps them.
pub(crate) const MAX_COOKIE: usize = 4096;
/// The most cookies one session is split into, as in Kong.
pub(crate) const MAX_CHUNKS: usize = 9;

/// Which cookie a value is sealed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The session cookie.
    Session,
    /// The persistent cookie of `remember`.
    Remember,
}

impl Kind {
    /// The tag its values are sealed with.
    pub fn tag(self) -> u8 {
        match self {
            Kind::Session => tag::SESSION,
            Kind::Remember => tag::REMEMBER,
        }
    }
}

/// What a sealed value is for, bound into it: a value sealed for one cannot pass for another.
pub(crate) mod tag {
    /// The session plugin's session cookie.
    pub const SESSION: u8 = b's';
    /// The session plugin's persistent cookie.
    pub const REMEMBER: u8 = b'r';
    /// openid-connect's session cookie (its tokens).
    pub const OIDC_SESSION: u8 = b'o';
    /// openid-connect's authorization cookie (state, nonce and PKCE verifier of a sign-in).
    pub const OIDC_AUTHORIZATION: u8 = b'a';
}

/// What one audience keeps in a session: who was authenticated, by which credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Entry {
    /// The audience (the `audience` of the plugin that wrote it).
    #[serde(rename = "a")]
    pub audience: String,
    /// The consumer's username, custom_id or id, as Kong names the subject.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The consumer's id.
    #[serde(rename = "c")]
    pub consumer: String,
    /// The credential's identifier (what `X-Credential-Identifier` carries).
    #[serde(rename = "k")]
    pub credential: String,
}

/// Everything a session cookie holds. Times are seconds: `created` since the epoch, the
/// offsets as Kong's session library counts them (the last renewal after `created`, the
/// last use after that renewal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Contents {
    /// The session id: 32 random bytes, base64url.
    #[serde(rename = "i")]
    pub id: String,
    #[serde(rename = "c")]
    pub created: i64,
    /// Kong's rolling offset: when the session was last renewed, after `created`.
    #[serde(rename = "r")]
    pub rolled: i64,
    /// Kong's idling offset: when it was last used, after its last renewal.
    #[serde(rename = "t")]
    pub idled: i64,
    /// One entry per audience.
    #[serde(rename = "e")]
    pub entries: Vec<Entry>,
}

impl Contents {
    /// A new session id.
    pub fn new_id() -> String {
        let mut id = [0u8; 32];
        aws_lc_rs::rand::fill(&mut id).expect("the system's random generator works");
        URL_SAFE_NO_PAD.encode(id)
    }

    /// The entry of `audience`.
    pub fn entry(&self, audience: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.audience == audience)
    }
}

/// A length HKDF expands to.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Seals and opens values with the key material of one secret.
pub(crate) struct Sealer {
    prk: Prk,
}

impl Sealer {
    /// Keys derived from `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let prk = Salt::new(HKDF_SHA256, b"ward-gateway session cookie").extract(secret);
        Sealer { prk }
    }

    /// The key and nonce of a value with `salt`.
    fn key(&self, salt: &[u8]) -> (LessSafeKey, Nonce) {
        let mut okm = [0u8; KEY_LEN + NONCE_LEN];
        let info: [&[u8]; 2] = [b"aes-256-gcm key and nonce", salt];
        self.prk
            .expand(&info, Len(okm.len()))
            .and_then(|o| o.fill(&mut okm))
            .expect("44 bytes are within HKDF-SHA256's reach");
        let key = UnboundKey::new(&AES_256_GCM, &okm[..KEY_LEN]).expect("32 bytes make an AES-256 key");
        let nonce = Nonce::try_assume_unique_for_key(&okm[KEY_LEN..]).expect("12 bytes make a nonce");
        (LessSafeKey::new(key), nonce)
    }

    /// `contents` sealed for the purpose `tag`, as text fit for a cookie value.
    pub fn seal<T: Serialize>(&self, tag: u8, contents: &T) -> String {
        let mut salt = [0u8; SALT_LEN];
        aws_lc_rs::rand::fill(&mut salt).expect("the system's random generator works");
        let (key, nonce) = self.key(&salt);
        let mut data = serde_json::to_vec(contents).expect("plain data serializes");
        key.seal_in_place_append_tag(nonce, Aad::from([VERSION, tag]), &mut data)
            .expect("a session is far below GCM's limit");
        let mut blob = Vec::with_capacity(1 + SALT_LEN + data.len());
        blob.push(VERSION);
        blob.extend_from_slice(&salt);
        blob.extend_from_slice(&data);
        URL_SAFE_NO_PAD.encode(blob)
    }

    /// What `text` holds, if this secret sealed it for the purpose `tag` and nobody changed it.
    pub fn open<T: DeserializeOwned>(&self, tag: u8, text: &str) -> Option<T> {
        let blob = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (&version, rest) = blob.split_first()?;
        if version != VERSION || rest.len() < SALT_LEN {
            return None;
        }
        let (salt, sealed) = rest.split_at(SALT_LEN);
        let (key, nonce) = self.key(salt);
        let mut data = sealed.to_vec();
        let plain = key.open_in_place(nonce, Aad::from([VERSION, tag]), &mut data).ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// The cookies a request sent, by name; the first of a name counts, as for nginx.
#[derive(Debug, Default)]
pub(crate) struct RequestCookies(HashMap<String, String>);

impl RequestCookies {
    /// Every `Cookie` header of `headers` (HTTP/2 clients may send several).
    pub fn of(headers: &HeaderMap) -> Self {
        let mut found = HashMap::new();
        for value in headers.get_all(header::COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            for cookie in cookie::Cookie::split_parse(text).flatten() {
                found.entry(cookie.name().to_string()).or_insert_with(|| cookie.value().to_string());
            }
        }
        RequestCookies(found)
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The sealed value kept under `name` (and its chunks), and how many cookies hold it.
    pub fn gather(&self, name: &str) -> Option<(String, usize)> {
        let first = self.get(name)?;
        let count = first.get(..1)?.parse::<usize>().ok().filter(|n| (1..=MAX_CHUNKS).contains(n))?;
        let mut sealed = first[1..].to_string();
        for i in 2..=count {
            sealed.push_str(self.get(&format!("{name}{i}"))?);
        }
        Some((sealed, count))
    }
}

/// The cookies (name, value) that carry `sealed` under `name`: the first starts with how
/// many there are. `None` when even 9 cookies of 4 KiB cannot hold it.
pub(crate) fn chunks(name: &str, sealed: &str) -> Option<Vec<(String, String)>> {
    // `name=N...` then `nameI=...`: one character more than the name either way (the count
    // or the chunk's number, never more than 9), and the `=`.
    let room = MAX_COOKIE.checked_sub(name.len() + 2).filter(|r| *r > 0)?;
    let count = sealed.len().div_ceil(room).max(1);
    if count > MAX_CHUNKS {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    let (head, mut rest) = sealed.split_at(room.min(sealed.len()));
    out.push((name.to_string(), format!("{count}{head}")));
    for i in 2..=count {
        let (part, more) = rest.split_at(room.min(rest.len()));
        out.push((format!("{name}{i}"), part.to_string()));
        rest = more;
    }
    Some(out)
}
