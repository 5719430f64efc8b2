//! The key-encryption key and sealing of secrets at rest (AES-256-GCM).

use std::{fs, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use rand::RngCore;

/// Length of the key-encryption key in bytes.
const KEK_LEN: usize = 32;
/// Length of an AES-GCM nonce in bytes.
const NONCE_LEN: usize = 12;

/// Errors reading the key file or opening a sealed secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file cannot be read or created.
    #[error("key-encryption key {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A sealed secret does not open with this key (wrong key, or tampered data).
    #[error("secret {0:?} cannot be decrypted: wrong key-encryption key or corrupted store")]
    Unseal(String),
}

/// The key that encrypts every private key the control plane stores.
pub struct Kek {
    cipher: Aes256Gcm,
}

impl Kek {
    /// Loads the key from `path`, or creates it (mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let fail = |reason: String| SecretError::KeyFile { path: path.display().to_string(), reason };
        let key = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; KEK_LEN];
                rand::rng().fill_bytes(&mut key);
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| fail(format!("cannot create: {e}")))?;
                file.write_all(&key).and_then(|_| file.sync_all()).map_err(|e| fail(format!("cannot write: {e}")))?;
                tracing::info!(path = %path.display(), "created a new key-encryption key");
                key
            }
            Err(e) => return Err(fail(format!("cannot read: {e}"))),
        };
        if key.len() != KEK_LEN {
            return Err(fail(format!("must hold exactly {KEK_LEN} bytes, found {}", key.len())));
        }
        Ok(Self::from_bytes(&key))
    }

    /// A key from raw bytes (for tests and in-memory stores).
    pub fn from_bytes(key: &[u8]) -> Self {
        Kek { cipher: Aes256Gcm::new_from_slice(key).expect("key length checked") }
    }

    /// A fresh random key that lives only in memory.
    pub fn ephemeral() -> Self {
        let mut key = [0u8; KEK_LEN];
        rand::rng().fill_bytes(&mut key);
        Self::from_bytes(&key)
    }

    /// Encrypts `plaintext`, bound to `name` so a sealed value cannot be moved to another name.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: name.as_bytes() })
            .expect("AES-GCM encryption cannot fail for in-memory buffers");
        [nonce.as_slice(), &sealed].concat()
    }

    /// Decrypts what [`Kek::seal`] produced for `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretError::Unseal(name.into()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: name.as_bytes() })
            .map_err(|_| SecretError::Unseal(name.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_name() {
        let kek = Kek::ephemeral();
        let sealed = kek.seal("a", b"private key");
        assert!(!sealed.windows(11).any(|w| w == b"private key"));
        assert_eq!(kek.open("a", &sealed).unwrap(), b"private key");
        assert!(kek.open("b", &sealed).is_err(), "moved to another name");
        assert!(Kek::ephemeral().open("a", &sealed).is_err(), "another key");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(kek.open("a", &tampered).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let sealed = Kek::load_or_create(&path).unwrap().seal("x", b"data");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Kek::load_or_create(&path).unwrap().open("x", &sealed).unwrap(), b"data");
        fs::write(&path, b"short").unwrap();
        let err = Kek::load_or_create(&path).err().unwrap().to_string();
        assert!(err.contains("must hold exactly 32 bytes, found 5"), "{err}");
    }
}
