//! What an outbound message becomes on the OA API: text, an image (uploaded, then sent as a
//! media template with its `attachment_id`) or a file (uploaded, then sent with its `token`).
//! Zalo's limits are checked before anything is uploaded, so a staff member learns at once
//! why a file cannot go, instead of after a round trip.

use bytes::Bytes;
use giao_proto::common::{Attachment, ContentType, MessageContent};
use object_store::{ObjectStoreExt, local::LocalFileSystem, path::Path};
use serde_json::{Value, json};

use super::client::UploadKind;

pub const MAX_IMAGE_BYTES: usize = 1024 * 1024;
pub const MAX_FILE_BYTES: usize = 5 * 1024 * 1024;

/// How an outbound message is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Text(String),
    /// An image by URL: Zalo fetches it, nothing to upload.
    ImageUrl {
        url: String,
        caption: String,
    },
    /// Bytes from giao's object store, uploaded first.
    Upload {
        kind: UploadKind,
        attachment: Attachment,
        caption: String,
    },
}

/// Decides how `content` goes out, or says in words why it cannot.
pub fn plan(content: &MessageContent) -> Result<Plan, String> {
    let kind = ContentType::try_from(content.r#type).unwrap_or(ContentType::Unspecified);
    let upload_kind = match kind {
        ContentType::Image => UploadKind::Image,
        ContentType::File => UploadKind::File,
        ContentType::Gif
        | ContentType::Audio
        | ContentType::Video
        | ContentType::Sticker
        | ContentType::BusinessCard => {
            return Err(format!(
                "{} messages cannot be sent through a Zalo OA yet",
                kind.as_str_name()
                    .trim_start_matches("CONTENT_TYPE_")
                    .to_lowercase()
                    .replace('_', " ")
            ));
        }
        _ => {
            if content.text.trim().is_empty() {
                return Err("the message has no text to send".into());
            }
            return Ok(Plan::Text(content.text.clone()));
        }
    };
    let attachment = match content.attachments.as_slice() {
        [one] => one.clone(),
        [] => return Err("the message has no attachment to send".into()),
        _ => return Err("a Zalo OA message carries one attachment: send them one by one".into()),
    };
    if !attachment.storage_key.is_empty() {
        return Ok(Plan::Upload {
            kind: upload_kind,
            attachment,
            caption: content.text.clone(),
        });
    }
    match upload_kind {
        UploadKind::Image
            if attachment.url.starts_with("https://") || attachment.url.starts_with("http://") =>
        {
            Ok(Plan::ImageUrl {
                url: attachment.url,
                caption: content.text.clone(),
            })
        }
        _ => Err("the attachment was never stored in giao: upload it first".into()),
    }
}

/// Checks the bytes against Zalo's limits; returns the name to upload under (with the
/// extension Zalo wants) or the reason they cannot go.
pub fn check(kind: UploadKind, attachment: &Attachment, data: &[u8]) -> Result<String, String> {
    match kind {
        UploadKind::Image => {
            let extension = if data.starts_with(&[0x89, b'P', b'N', b'G']) {
                "png"
            } else if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
                "jpg"
            } else {
                return Err("Zalo OA images must be JPG or PNG".into());
            };
            if data.len() > MAX_IMAGE_BYTES {
                return Err(format!(
                    "the image is {} KB; Zalo OA images are at most 1 MB",
                    data.len() / 1024
                ));
            }
            Ok(with_extension(&attachment.name, "image", extension))
        }
        UploadKind::File => {
            let lower = attachment.name.to_lowercase();
            let extension = if let Some(found) = ["pdf", "docx", "doc"]
                .into_iter()
                .find(|ext| lower.ends_with(&format!(".{ext}")))
            {
                found
            } else {
                match attachment.mime_type.as_str() {
                    "application/pdf" => "pdf",
                    "application/msword" => "doc",
                    "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
                        "docx"
                    }
                    _ => return Err("Zalo OA files must be PDF, DOC or DOCX".into()),
                }
            };
            if data.len() > MAX_FILE_BYTES {
                return Err(format!(
                    "the file is {} KB; Zalo OA files are at most 5 MB",
                    data.len() / 1024
                ));
            }
            Ok(with_extension(&attachment.name, "file", extension))
        }
    }
}

fn with_extension(name: &str, fallback: &str, extension: &str) -> String {
    let name = if name.trim().is_empty() {
        fallback
    } else {
        name
    };
    if name.to_lowercase().ends_with(&format!(".{extension}")) {
        name.to_string()
    } else {
        format!("{name}.{extension}")
    }
}

/// The OA message body for a plan, given the uploaded id when there is one.
pub fn message(plan: &Plan, uploaded: Option<&str>, quote: &str) -> Value {
    let mut message = match plan {
        Plan::Text(text) => json!({"text": text}),
        Plan::ImageUrl { url, caption } => {
            image(caption, json!({"media_type": "image", "url": url}))
        }
        Plan::Upload {
            kind: UploadKind::Image,
            caption,
            ..
        } => image(
            caption,
            json!({"media_type": "image", "attachment_id": uploaded.unwrap_or_default()}),
        ),
        // Zalo's file message has no text: a caption would need a second message.
        Plan::Upload {
            kind: UploadKind::File,
            ..
        } => {
            json!({"attachment": {"type": "file", "payload": {"token": uploaded.unwrap_or_default()}}})
        }
    };
    if !quote.is_empty() {
        message["quote_message_id"] = json!(quote);
    }
    message
}

fn image(caption: &str, element: Value) -> Value {
    let mut message = json!({"attachment": {"type": "template", "payload": {
        "template_type": "media", "elements": [element]}}});
    if !caption.is_empty() {
        message["text"] = json!(caption);
    }
    message
}

/// Reads attachment bytes from giao's object store (the one message-store writes to). The
/// directory is opened on use, not at start: the connector never creates it (message-store
/// owns it), and a connector that sends no attachment needs none.
#[derive(Debug, Clone)]
pub struct Objects {
    dir: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Permanent for this message.
    #[error("{0}")]
    Missing(String),
    /// Storage trouble: try again later.
    #[error("attachment storage: {0}")]
    Unavailable(String),
}

impl Objects {
    /// Files under `dir`; an empty `dir` means attachments cannot be sent.
    pub fn local(dir: &str) -> Self {
        Self {
            dir: Some(dir.to_string()).filter(|dir| !dir.trim().is_empty()),
        }
    }

    /// The bytes of `key`, which must be one of `tenant_id`'s keys.
    pub async fn read(&self, tenant_id: &str, key: &str, max: usize) -> Result<Bytes, ObjectError> {
        let Some(dir) = &self.dir else {
            return Err(ObjectError::Missing(
                "attachments cannot be sent: the connector has no attachments_dir".into(),
            ));
        };
        let inside = key
            .strip_prefix(tenant_id)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(".."));
        if !inside {
            return Err(ObjectError::Missing("the attachment does not exist".into()));
        }
        // A missing directory holds no attachment yet: the file is missing, not the store.
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|_| {
            ObjectError::Missing("the attachment's file is missing from storage".into())
        })?;
        let path = Path::from(key);
        let found = store.get(&path).await.map_err(|error| match error {
            object_store::Error::NotFound { .. } => {
                ObjectError::Missing("the attachment's file is missing from storage".into())
            }
            other => ObjectError::Unavailable(other.to_string()),
        })?;
        // Larger than any channel accepts: refuse before reading it into memory.
        if found.meta.size > max as u64 {
            return Err(ObjectError::Missing(format!(
                "the attachment is {} KB, larger than Zalo accepts",
                found.meta.size / 1024
            )));
        }
        found
            .bytes()
            .await
            .map_err(|error| ObjectError::Unavailable(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(kind: ContentType, attachments: Vec<Attachment>) -> MessageContent {
        MessageContent {
            r#type: kind as i32,
            text: "xem nhé".into(),
            attachments,
            ..Default::default()
        }
    }

    #[test]
    fn plans_text_images_and_files_and_refuses_the_rest() {
        let stored = Attachment {
            storage_key: "acme/2026/11/x".into(),
            name: "bao-gia.pdf".into(),
            ..Default::default()
        };
        assert_eq!(
            plan(&content(ContentType::Text, vec![])),
            Ok(Plan::Text("xem nhé".into()))
        );
        assert!(matches!(
            plan(&content(ContentType::File, vec![stored.clone()])),
            Ok(Plan::Upload {
                kind: UploadKind::File,
                ..
            })
        ));
        let by_url = Attachment {
            url: "https://cdn.example/a.jpg".into(),
            ..Default::default()
        };
        assert!(matches!(
            plan(&content(ContentType::Image, vec![by_url.clone()])),
            Ok(Plan::ImageUrl { .. })
        ));
        // A file Zalo would have to fetch from a URL is not something the OA API can send.
        assert!(plan(&content(ContentType::File, vec![by_url])).is_err());
        assert!(plan(&content(ContentType::Image, vec![])).is_err());
        assert!(
            plan(&content(ContentType::Image, vec![stored.clone(), stored]))
                .expect_err("refused")
                .contains("one attachment")
        );
        assert!(
            plan(&content(ContentType::Video, vec![]))
                .expect_err("refused")
                .contains("video")
        );
    }

    #[test]
    fn checks_zalo_limits_before_uploading() {
        let png = [&[0x89, b'P', b'N', b'G'][..], &[0; 16]].concat();
        let named = |name: &str, mime: &str| Attachment {
            name: name.into(),
            mime_type: mime.into(),
            ..Default::default()
        };
        assert_eq!(
            check(UploadKind::Image, &named("anh", "image/png"), &png),
            Ok("anh.png".into())
        );
        assert!(check(UploadKind::Image, &named("a.gif", ""), b"GIF89a").is_err());
        let big = [&png[..], &vec![0; MAX_IMAGE_BYTES]].concat();
        assert!(
            check(UploadKind::Image, &named("a.png", ""), &big)
                .expect_err("refused")
                .contains("1 MB")
        );
        assert_eq!(
            check(UploadKind::File, &named("Báo giá.PDF", ""), b"%PDF"),
            Ok("Báo giá.PDF".into())
        );
        assert_eq!(
            check(
                UploadKind::File,
                &named("hop-dong", "application/msword"),
                b"x"
            ),
            Ok("hop-dong.doc".into())
        );
        assert!(
            check(
                UploadKind::File,
                &named("a.exe", "application/x-msdownload"),
                b"MZ"
            )
            .is_err()
        );
    }

    #[test]
    fn builds_the_documented_bodies() {
        let image = message(
            &Plan::Upload {
                kind: UploadKind::Image,
                attachment: Attachment::default(),
                caption: "ảnh".into(),
            },
            Some("att-1"),
            "",
        );
        assert_eq!(image["attachment"]["payload"]["template_type"], "media");
        assert_eq!(
            image["attachment"]["payload"]["elements"][0]["attachment_id"],
            "att-1"
        );
        assert_eq!(image["text"], "ảnh");
        let file = message(
            &Plan::Upload {
                kind: UploadKind::File,
                attachment: Attachment::default(),
                caption: String::new(),
            },
            Some("tok"),
            "q1",
        );
        assert_eq!(file["attachment"]["type"], "file");
        assert_eq!(file["attachment"]["payload"]["token"], "tok");
        assert_eq!(file["quote_message_id"], "q1");
    }
}
