//! Channel credentials sealed at rest with ChaCha20-Poly1305. Each ciphertext is stored with
//! the id of the key that sealed it, so a new key can be introduced (`key_id`) while older
//! rows still open with the other keys kept in `keys`. Rows move to the current key only
//! from the keys listed in `retired_key_ids`: during a rolling deploy replicas may disagree
//! on the current key, and re-sealing away from "whatever is not mine" would lock out the
//! replicas that do not know the new key yet. The associated data binds a ciphertext to its
//! tenant, account and key id: a sealed blob copied to another row fails.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    ChaCha20Poly1305,
    aead::{Aead, KeyInit, Payload},
};
use serde::{Deserialize, Serialize};

const NONCE_BYTES: usize = 12;

/// Laptop-only key so `giao dev` works without setup; production configs must replace it.
const DEV_KEY_ID: &str = "dev-insecure";
const DEV_KEY: &str = "Z2lhby1kZXYtY3JlZGVudGlhbHMta2V5LTMyLWJ5dGU=";

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialsConfig {
    /// The key that seals new credentials.
    pub key_id: String,
    /// Every key that may still open stored credentials: id → base64 of 32 bytes.
    pub keys: BTreeMap<String, String>,
    /// Keys whose rows are re-sealed under `key_id`; each must still be in `keys`.
    pub retired_key_ids: Vec<String>,
}

// The keys never reach a log line.
impl std::fmt::Debug for CredentialsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsConfig")
            .field("key_id", &self.key_id)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("retired_key_ids", &self.retired_key_ids)
            .finish()
    }
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        Self {
            key_id: DEV_KEY_ID.into(),
            keys: BTreeMap::from([(DEV_KEY_ID.to_string(), DEV_KEY.to_string())]),
            retired_key_ids: Vec::new(),
        }
    }
}

#[derive(Clone)]
pub struct Sealer {
    key_id: String,
    keys: BTreeMap<String, [u8; 32]>,
    retired: Vec<String>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Not this row's fault: another replica (already on a newer config) sealed it. The
    /// caller retries later rather than give up on the account.
    #[error("credentials sealed with key {0}, unknown to this replica: add it to credentials.keys")]
    UnknownKey(String),
    #[error("credentials cannot be opened: wrong key or tampered row")]
    Corrupt,
}

impl Sealer {
    pub fn from_config(config: &CredentialsConfig) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for (id, value) in &config.keys {
            let bytes = STANDARD
                .decode(value.trim())
                .map_err(|_| format!("credentials.keys.{id} must be base64"))?;
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|_| format!("credentials.keys.{id} must decode to exactly 32 bytes"))?;
            keys.insert(id.clone(), bytes);
        }
        if !keys.contains_key(&config.key_id) {
            return Err(format!(
                "credentials.key_id {} is not among credentials.keys",
                config.key_id
            ));
        }
        for retired in &config.retired_key_ids {
            if retired == &config.key_id {
                return Err(format!(
                    "credentials.retired_key_ids names the current key_id {retired}"
                ));
            }
            if !keys.contains_key(retired) {
                return Err(format!(
                    "credentials.retired_key_ids names {retired}, which is not among credentials.keys: its rows could not be opened"
                ));
            }
        }
        Ok(Self {
            key_id: config.key_id.clone(),
            keys,
            retired: config.retired_key_ids.clone(),
        })
    }

    fn cipher(key: &[u8; 32]) -> ChaCha20Poly1305 {
        // A 32-byte slice is always a valid key.
        ChaCha20Poly1305::new_from_slice(key).unwrap_or_else(|_| unreachable!())
    }

    fn aad(tenant_id: &str, account_id: &str, key_id: &str) -> Vec<u8> {
        format!("{tenant_id}\u{0}{account_id}\u{0}{key_id}").into_bytes()
    }

    /// Seals `plaintext` with the current key; returns (key id, nonce ‖ ciphertext).
    pub fn seal(&self, tenant_id: &str, account_id: &str, plaintext: &[u8]) -> (String, Vec<u8>) {
        let key = &self.keys[&self.key_id];
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let ciphertext = Self::cipher(key)
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: &Self::aad(tenant_id, account_id, &self.key_id),
                },
            )
            // Encryption only fails for messages beyond the cipher's limit (256 GiB).
            .unwrap_or_else(|_| unreachable!());
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        (self.key_id.clone(), sealed)
    }

    pub fn open(
        &self,
        tenant_id: &str,
        account_id: &str,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_string()))?;
        if sealed.len() <= NONCE_BYTES {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Corrupt)?;
        Self::cipher(key)
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad: &Self::aad(tenant_id, account_id, key_id),
                },
            )
            .map_err(|_| SealError::Corrupt)
    }

    /// The id of the key that seals new credentials.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The keys whose rows [`reseal_stale`] moves to the current key.
    pub fn retired(&self) -> &[String] {
        &self.retired
    }
}

/// What one pass of [`reseal_stale`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Rows now sealed under the current key.
    pub resealed: u64,
    /// Rows that cannot be opened (their key is not configured, or they are corrupt); they
    /// are left as they are and logged.
    pub unreadable: u64,
}

/// Re-seals, in batches of `batch`, every row sealed under a retired key. Idempotent: a row written meanwhile (a refresh, a new connect) is left alone, since
/// that write sealed it under the current key already; a second pass finds nothing to do.
pub async fn reseal_stale(
    seals: &crate::store::SealStore,
    sealer: &Sealer,
    batch: u32,
) -> Result<Resealed, sqlx::Error> {
    let mut done = Resealed::default();
    for retired in &sealer.retired {
        reseal_key(seals, sealer, retired, batch, &mut done).await?;
    }
    Ok(done)
}

async fn reseal_key(
    seals: &crate::store::SealStore,
    sealer: &Sealer,
    retired: &str,
    batch: u32,
    done: &mut Resealed,
) -> Result<(), sqlx::Error> {
    let mut after = (String::new(), String::new());
    loop {
        let rows = seals
            .sealed_under(retired, (&after.0, &after.1), batch.max(1))
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = (last.tenant_id.clone(), last.account_id.clone());
        for row in &rows {
            match reseal(seals, sealer, row).await? {
                Ok(true) => done.resealed += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(account = %row.account_id, %error, "credentials not re-sealed");
                    done.unreadable += 1;
                }
            }
        }
    }
}

/// Re-seals one account's credentials under the current key, whatever key they are under;
/// `None` when it has none.
pub async fn reseal_account(
    seals: &crate::store::SealStore,
    sealer: &Sealer,
    tenant_id: &str,
    account_id: &str,
) -> Result<Option<Result<bool, SealError>>, sqlx::Error> {
    match seals.sealed(tenant_id, account_id).await? {
        Some(row) => reseal(seals, sealer, &row).await.map(Some),
        None => Ok(None),
    }
}

/// Re-seals one row under the current key: `Ok(true)` when replaced, `Ok(false)` when the
/// row changed since it was read (that write sealed it under the current key already).
pub async fn reseal(
    seals: &crate::store::SealStore,
    sealer: &Sealer,
    row: &crate::store::StaleSeal,
) -> Result<Result<bool, SealError>, sqlx::Error> {
    let opened = sealer.open(
        &row.tenant_id,
        &row.account_id,
        &row.credentials.key_id,
        &row.credentials.sealed,
    );
    let plain = match opened {
        Ok(plain) => plain,
        Err(error) => return Ok(Err(error)),
    };
    let (key_id, sealed) = sealer.seal(&row.tenant_id, &row.account_id, &plain);
    seals
        .replace(row, &crate::store::SealedCredentials { key_id, sealed })
        .await
        .map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_rotates() {
        let old = Sealer::from_config(&CredentialsConfig::default()).expect("dev key");
        let (kid, sealed) = old.seal("t1", "a1", b"{\"app_secret\":\"s\"}");
        assert!(!String::from_utf8_lossy(&sealed).contains("app_secret"));
        assert_eq!(
            old.open("t1", "a1", &kid, &sealed).expect("opens"),
            b"{\"app_secret\":\"s\"}"
        );
        // Moved to another tenant's row: refused.
        assert!(matches!(
            old.open("t2", "a1", &kid, &sealed),
            Err(SealError::Corrupt)
        ));
        // A new current key still opens rows sealed with the retired one.
        let mut config = CredentialsConfig::default();
        config
            .keys
            .insert("k2".into(), STANDARD.encode([7u8; 32]).to_string());
        config.key_id = "k2".into();
        let new = Sealer::from_config(&config).expect("two keys");
        assert!(new.open("t1", "a1", &kid, &sealed).is_ok());
        assert_ne!(new.key_id(), kid);
        let (kid2, _) = new.seal("t1", "a1", b"x");
        assert_eq!(kid2, "k2");
        // Dropping the retired key makes its rows unreadable, with a clear error.
        config.keys.remove(DEV_KEY_ID);
        let only_new = Sealer::from_config(&config).expect("one key");
        assert!(matches!(
            only_new.open("t1", "a1", &kid, &sealed),
            Err(SealError::UnknownKey(_))
        ));
        // A retired key must still open its rows, and cannot be the current one.
        config.retired_key_ids = vec![DEV_KEY_ID.into()];
        let refused = Sealer::from_config(&config).expect_err("retired key missing");
        assert!(refused.contains("retired_key_ids"), "{refused}");
        config.retired_key_ids = vec!["k2".into()];
        let refused = Sealer::from_config(&config).expect_err("current key retired");
        assert!(refused.contains("current key_id"), "{refused}");
    }
}
