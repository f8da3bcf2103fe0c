//! Attachments live in an object store (the local filesystem by default), under
//! `<tenant>/<yyyy>/<mm>/<uuid>`, so a key can never reach another tenant's files. The bytes
//! are written once; messages refer to them by `storage_key`, and reads are allowed only to
//! callers who can see a message that refers to the key.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{Datelike, Utc};
use giao_proto::common::Attachment;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, local::LocalFileSystem, path::Path};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::Error;

#[derive(Clone)]
pub struct Attachments {
    store: Arc<dyn ObjectStore>,
    max_bytes: u64,
}

impl std::fmt::Debug for Attachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachments")
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl Attachments {
    /// Files under `dir`, created if missing.
    pub fn local(dir: &str, max_bytes: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create attachments_dir {dir}: {error}"))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|error| format!("invalid attachments_dir {dir}: {error}"))?;
        Ok(Self {
            store: Arc::new(store),
            max_bytes,
        })
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Stores `data` for `tenant_id` and describes it.
    pub async fn put(
        &self,
        tenant_id: &str,
        name: &str,
        mime_type: &str,
        source_url: &str,
        data: Vec<Bytes>,
    ) -> Result<Attachment, Error> {
        let now = Utc::now();
        let key = format!(
            "{tenant_id}/{:04}/{:02}/{}",
            now.year(),
            now.month(),
            Uuid::now_v7()
        );
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        for chunk in &data {
            hasher.update(chunk);
            size += chunk.len() as u64;
        }
        self.store
            .put(&Path::from(key.as_str()), PutPayload::from_iter(data))
            .await
            .map_err(|error| Error::Storage(error.to_string()))?;
        Ok(Attachment {
            url: source_url.to_string(),
            storage_key: key,
            name: name.to_string(),
            mime_type: mime_type.to_string(),
            size_bytes: size,
            checksum: hex::encode(hasher.finalize()),
            ..Default::default()
        })
    }

    /// The bytes of `key`, as a stream of chunks.
    pub async fn get(
        &self,
        key: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, Error>>, Error> {
        use futures::StreamExt;
        let result = self
            .store
            .get(&Path::from(key))
            .await
            .map_err(|error| match error {
                object_store::Error::NotFound { .. } => Error::NotFound {
                    field: "storage_key".into(),
                    id: key.to_string(),
                },
                other => Error::Storage(other.to_string()),
            })?;
        Ok(result
            .into_stream()
            .map(|chunk| chunk.map_err(|error| Error::Storage(error.to_string())))
            .boxed())
    }
}

/// Whether `key` is a storage key of `tenant_id` (the only keys a tenant may reference).
pub fn belongs_to(tenant_id: &str, key: &str) -> bool {
    key.strip_prefix(tenant_id)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_their_tenant() {
        assert!(belongs_to("acme", "acme/2026/11/0190"));
        assert!(!belongs_to("acme", "acme2/2026/11/0190"));
        assert!(!belongs_to("acme", "other/acme/x"));
        assert!(!belongs_to("acme", "acme/../other/x"));
        assert!(!belongs_to("acme", "acme/"));
    }

    #[tokio::test]
    async fn stored_bytes_come_back_with_their_checksum() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().expect("dir");
        let attachments =
            Attachments::local(&dir.path().display().to_string(), 1024).expect("store");
        let stored = attachments
            .put(
                "acme",
                "bao-gia.pdf",
                "application/pdf",
                "",
                vec![Bytes::from("%PDF-"), Bytes::from("1.7")],
            )
            .await
            .expect("stored");
        assert!(belongs_to("acme", &stored.storage_key));
        assert_eq!(stored.size_bytes, 8);
        assert_eq!(stored.checksum, hex::encode(Sha256::digest(b"%PDF-1.7")));
        let mut stream = attachments.get(&stored.storage_key).await.expect("found");
        let mut read = Vec::new();
        while let Some(chunk) = stream.next().await {
            read.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(read, b"%PDF-1.7");
    }
}
