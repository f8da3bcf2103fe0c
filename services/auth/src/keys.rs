//! Token signing keys: Ed25519, generated here, stored with the private half encrypted under
//! the key-encryption key (ChaCha20-Poly1305, the key id as associated data so a ciphertext
//! cannot be moved to another row). The newest unretired key signs; retired keys stay in the
//! JWKS until every token they signed has expired.

use std::sync::{Arc, RwLock};

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    ChaCha20Poly1305,
    aead::{Aead, KeyInit, Payload},
};
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use giao_authz::token::{LEEWAY_SECS, PublicKey, TokenSigner};

use crate::{domain::SigningKeyRecord, error::Error, store::Store};

const NONCE_BYTES: usize = 12;

/// The key-encryption key; never printed.
#[derive(Clone)]
pub struct KeyEncryptionKey([u8; 32]);

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyEncryptionKey(..)")
    }
}

impl KeyEncryptionKey {
    /// From the base64 of 32 bytes (config `key_encryption_key`).
    pub fn from_base64(value: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(value.trim())
            .map_err(|_| "key_encryption_key must be base64 (standard alphabet)".to_string())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            "key_encryption_key must decode to exactly 32 bytes (e.g. `openssl rand -base64 32`)"
                .to_string()
        })?;
        Ok(Self(bytes))
    }

    pub fn generate() -> Self {
        Self(rand::random())
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        // A 32-byte slice is always a valid key.
        ChaCha20Poly1305::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    fn seal(&self, kid: &str, seed: &[u8; 32]) -> Result<Vec<u8>, Error> {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: seed,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| Error::Keys("cannot encrypt a signing key".into()))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    fn open(&self, kid: &str, sealed: &[u8]) -> Result<SigningKey, Error> {
        if sealed.len() <= NONCE_BYTES {
            return Err(Error::Keys(format!("signing key {kid} is truncated")));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce
            .try_into()
            .map_err(|_| Error::Keys(format!("signing key {kid} is truncated")))?;
        let seed = self
            .cipher()
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| {
                Error::Keys(format!(
                    "cannot decrypt signing key {kid}: wrong key_encryption_key or tampered row"
                ))
            })?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| Error::Keys(format!("signing key {kid} has a bad length")))?;
        Ok(SigningKey::from_bytes(&seed))
    }
}

#[derive(Debug)]
struct Loaded {
    signer: Arc<TokenSigner>,
    signer_created_at: DateTime<Utc>,
    public: Vec<PublicKey>,
}

/// The signing key in use and every key that still verifies, reloaded from the database on
/// rotation, periodically, and when a token names a key id this replica has not seen.
pub struct KeyRing {
    store: Arc<dyn Store>,
    kek: KeyEncryptionKey,
    access_ttl: Duration,
    loaded: RwLock<Option<Arc<Loaded>>>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

impl KeyRing {
    pub fn new(store: Arc<dyn Store>, kek: KeyEncryptionKey, access_ttl: Duration) -> Self {
        Self {
            store,
            kek,
            access_ttl,
            loaded: RwLock::new(None),
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Option<Arc<Loaded>> {
        self.loaded.read().ok().and_then(|loaded| loaded.clone())
    }

    /// Loads the keys, creating the first one on an empty database.
    pub async fn start(&self) -> Result<(), Error> {
        if self.store.signing_keys().await?.is_empty() {
            self.rotate().await?;
        }
        self.reload().await
    }

    /// Reads every key from the database: the newest unretired signs.
    pub async fn reload(&self) -> Result<(), Error> {
        let _guard = self.reload_lock.lock().await;
        let now = Utc::now();
        let records = self.store.signing_keys().await?;
        let keep_retired_for = self.access_ttl + Duration::seconds(LEEWAY_SECS);
        let mut public = Vec::new();
        let mut signer: Option<(&SigningKeyRecord, SigningKey)> = None;
        for record in &records {
            let still_verifies = record
                .retired_at
                .is_none_or(|retired| retired + keep_retired_for > now);
            if still_verifies {
                let bytes: [u8; 32] = record.public_key.as_slice().try_into().map_err(|_| {
                    Error::Keys(format!("public key {} has a bad length", record.kid))
                })?;
                let key = VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| Error::Keys(format!("public key {} is invalid", record.kid)))?;
                public.push(PublicKey {
                    kid: record.kid.clone(),
                    key,
                });
            }
            if record.retired_at.is_none()
                && signer
                    .as_ref()
                    .is_none_or(|(best, _)| record.created_at >= best.created_at)
            {
                let key = self.kek.open(&record.kid, &record.encrypted_private_key)?;
                signer = Some((record, key));
            }
        }
        let (record, key) =
            signer.ok_or_else(|| Error::Keys("no active signing key in the database".into()))?;
        let loaded = Loaded {
            signer: Arc::new(TokenSigner::new(record.kid.clone(), key)),
            signer_created_at: record.created_at,
            public,
        };
        if let Ok(mut slot) = self.loaded.write() {
            *slot = Some(Arc::new(loaded));
        }
        Ok(())
    }

    /// Generates a key, makes it the signing key and retires the others.
    pub async fn rotate(&self) -> Result<String, Error> {
        let now = Utc::now();
        let seed: [u8; 32] = rand::random();
        let key = SigningKey::from_bytes(&seed);
        // Sortable by creation, unique across replicas rotating at the same instant.
        let kid = format!(
            "k{}-{:04x}",
            now.format("%Y%m%d%H%M%S%6f"),
            rand::random::<u16>()
        );
        let record = SigningKeyRecord {
            kid: kid.clone(),
            public_key: key.verifying_key().as_bytes().to_vec(),
            encrypted_private_key: self.kek.seal(&kid, &seed)?,
            created_at: now,
            retired_at: None,
        };
        self.store.insert_signing_key(&record).await?;
        self.store.retire_signing_keys(&kid, now).await?;
        tracing::info!(kid = %kid, "signing key rotated");
        self.reload().await?;
        Ok(kid)
    }

    /// Rotates when the signing key is older than `every`.
    pub async fn rotate_if_older_than(&self, every: Duration) -> Result<bool, Error> {
        self.reload().await?;
        let due = self
            .current()
            .is_none_or(|loaded| loaded.signer_created_at + every <= Utc::now());
        if due {
            self.rotate().await?;
        }
        Ok(due)
    }

    pub fn signer(&self) -> Result<Arc<TokenSigner>, Error> {
        self.current()
            .map(|loaded| loaded.signer.clone())
            .ok_or_else(|| Error::Keys("signing keys not loaded".into()))
    }

    /// Every key that still verifies (the JWKS).
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.current()
            .map(|loaded| loaded.public.clone())
            .unwrap_or_default()
    }

    pub fn jwks(&self) -> giao_proto::auth::Jwks {
        giao_proto::auth::Jwks {
            keys: self
                .public_keys()
                .iter()
                .map(giao_authz::token::to_jwk)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_kid_and_kek() {
        let kek = KeyEncryptionKey::generate();
        let seed = [9u8; 32];
        let sealed = kek.seal("k1", &seed).expect("seals");
        assert!(!sealed.windows(32).any(|window| window == seed));
        let opened = kek.open("k1", &sealed).expect("opens");
        assert_eq!(opened.to_bytes(), seed);
        assert!(kek.open("k2", &sealed).is_err());
        assert!(KeyEncryptionKey::generate().open("k1", &sealed).is_err());
    }

    #[test]
    fn kek_config_is_checked() {
        let kek = KeyEncryptionKey::generate();
        assert!(KeyEncryptionKey::from_base64(&kek.to_base64()).is_ok());
        assert!(KeyEncryptionKey::from_base64("c2hvcnQ=").is_err());
        assert!(KeyEncryptionKey::from_base64("not base64!").is_err());
    }
}
