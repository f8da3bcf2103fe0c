//! Sending images, files and stickers to users and groups, as the web client does.
//!
//! - Image: the bytes go up in chunks to `{file}/api/{message|group}/photo_original/upload`
//!   (multipart field `chunkContent`, parameters in the query string), whose last answer names
//!   the stored photo (`photoId` and its URLs); `…/photo_original/send` then posts the message.
//! - File: the same chunked upload to `…/asyncfile/upload` answers a `fileId`; the stored
//!   file's URL arrives later on the account's websocket as a control notice (601,
//!   `act_type` "file_done"); `…/asyncfile/msg` then posts the message with that URL and the
//!   file's md5.
//! - Sticker: one call, `{chat}/api/message/sticker` or `{group}/api/group/sticker`.
//!
//! Every answer is the usual `{error_code, data: <encrypted>}`.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use md5::{Digest, Md5};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{ClientError, Session, api::first, browser_headers, new_client_id, versioned_url};
use crate::{crypto, events::ThreadKind};

/// An image to send; width and height are shown by the apps before the image loads.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    /// With its extension (jpg, jpeg, png or webp), as the apps show it.
    pub file_name: String,
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// A file to send (any extension the server allows).
#[derive(Clone, PartialEq, Eq)]
pub struct FileUpload {
    pub file_name: String,
    pub bytes: Vec<u8>,
}

// Contents stay out of logs: only names and sizes.
impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("file_name", &self.file_name)
            .field("size", &self.bytes.len())
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

impl std::fmt::Debug for FileUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileUpload")
            .field("file_name", &self.file_name)
            .field("size", &self.bytes.len())
            .finish()
    }
}

/// A sticker, as the sticker catalogue names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sticker {
    pub id: u64,
    /// The sticker's category (`cateId`; 0 is valid).
    pub category_id: u64,
    /// The sticker's `type` (7 for most catalogue stickers).
    pub kind: u32,
}

/// An image stored by Zalo, ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedImage {
    pub photo_id: String,
    pub normal_url: String,
    pub hd_url: String,
    pub thumb_url: String,
    pub width: u32,
    pub height: u32,
    pub total_size: u64,
}

/// A file stored by Zalo, ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedFile {
    pub file_id: String,
    /// The upload's client id, which the send repeats.
    pub client_file_id: String,
    /// From the websocket's "file_done" notice.
    pub file_url: String,
    pub file_name: String,
    pub total_size: u64,
    /// md5 of the bytes, lower-case hex.
    pub checksum: String,
}

/// The `sharefile` part of `getServerInfo`'s settings that uploads obey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareFileSettings {
    /// Bytes per upload request (`chunk_size_file`).
    pub chunk_size: usize,
    /// The largest file, in bytes (`max_size_share_file_v3`, given in MB).
    pub max_size: u64,
}

impl Default for ShareFileSettings {
    /// Used when the server gives none (the values are this client's choice, not Zalo's).
    fn default() -> Self {
        Self {
            chunk_size: 2 * 1024 * 1024,
            max_size: 100 * 1024 * 1024,
        }
    }
}

impl ShareFileSettings {
    pub(crate) fn from_json(server_info: &Value) -> Self {
        let settings = server_info
            .get("setttings")
            .or_else(|| server_info.get("settings"));
        let share = settings.and_then(|settings| settings["features"].get("sharefile"));
        let defaults = Self::default();
        let Some(share) = share else {
            return defaults;
        };
        let number = |name: &str| {
            share[name]
                .as_u64()
                .or_else(|| share[name].as_str().and_then(|text| text.parse().ok()))
        };
        Self {
            chunk_size: number("chunk_size_file")
                .and_then(|size| usize::try_from(size).ok())
                .filter(|size| *size > 0)
                .unwrap_or(defaults.chunk_size),
            max_size: number("max_size_share_file_v3")
                .map(|mb| mb.saturating_mul(1024 * 1024))
                .filter(|size| *size > 0)
                .unwrap_or(defaults.max_size),
        }
    }
}

/// Uploads waiting for their "file_done" notice, and notices that came first (the socket may
/// be quicker than the upload's HTTP answer). Shared by a session's clones and listeners.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    inner: Mutex<UploadsInner>,
}

#[derive(Debug, Default)]
struct UploadsInner {
    waiting: HashMap<String, oneshot::Sender<String>>,
    early: VecDeque<(String, String)>,
}

/// Notices kept for uploads nobody waits for yet; older ones are dropped.
const EARLY_NOTICES: usize = 256;

impl Uploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, UploadsInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn wait(&self, file_id: &str) -> oneshot::Receiver<String> {
        let (sender, receiver) = oneshot::channel();
        let mut inner = self.lock();
        if let Some(at) = inner.early.iter().position(|(id, _)| id == file_id) {
            if let Some((_, url)) = inner.early.remove(at) {
                let _ = sender.send(url);
            }
        } else {
            inner.waiting.insert(file_id.to_string(), sender);
        }
        receiver
    }

    fn forget(&self, file_id: &str) {
        self.lock().waiting.remove(file_id);
    }

    pub(crate) fn complete(&self, file_id: &str, url: &str) {
        let mut inner = self.lock();
        match inner.waiting.remove(file_id) {
            Some(sender) => {
                let _ = sender.send(url.to_string());
            }
            None => {
                if inner.early.len() >= EARLY_NOTICES {
                    inner.early.pop_front();
                }
                inner
                    .early
                    .push_back((file_id.to_string(), url.to_string()));
            }
        }
    }

    /// Takes a "file_done" control item (`{content: {act_type, fileId, data: {url}}}`).
    pub(crate) fn complete_from_control(&self, item: &Value) {
        let content = &item["content"];
        let file_id = id_text(&content["fileId"]);
        // `data` is an object; tolerate it arriving as a JSON string too.
        let data = match &content["data"] {
            Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            other => other.clone(),
        };
        let url = data["url"].as_str().unwrap_or_default();
        if !file_id.is_empty() && !url.is_empty() {
            self.complete(&file_id, url);
        }
    }
}

fn id_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => String::new(),
    }
}

/// What the upload endpoints are called for each kind.
#[derive(Debug, Clone, Copy)]
enum UploadKind {
    Image,
    File,
}

impl UploadKind {
    fn path(self) -> &'static str {
        match self {
            Self::Image => "photo_original/upload",
            Self::File => "asyncfile/upload",
        }
    }

    /// The id field the final chunk's answer carries ("-1" on earlier chunks).
    fn id_field(self) -> &'static str {
        match self {
            Self::Image => "photoId",
            Self::File => "fileId",
        }
    }
}

/// `message` for a user, `group` for a group: the path segment of every media endpoint.
fn segment(thread: ThreadKind) -> &'static str {
    match thread {
        ThreadKind::Direct => "message",
        ThreadKind::Group => "group",
    }
}

/// `toid` or `grid`, as every send names its recipient.
fn recipient(thread: ThreadKind) -> &'static str {
    match thread {
        ThreadKind::Direct => "toid",
        ThreadKind::Group => "grid",
    }
}

fn extension(file_name: &str) -> String {
    file_name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default()
}

/// A multipart body with one file part, and its content type.
fn multipart(field: &str, file_name: &str, bytes: &[u8]) -> (Vec<u8>, String) {
    let boundary = format!("----giao{}", uuid::Uuid::new_v4().simple());
    // A quote or line break would end the header early.
    let safe_name: String = file_name
        .chars()
        .map(|c| {
            if matches!(c, '"' | '\r' | '\n') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut body = Vec::with_capacity(bytes.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{safe_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

impl Session {
    /// The upload limits the server gave at login.
    pub fn share_file_settings(&self) -> ShareFileSettings {
        self.share_file
    }

    /// Uploads and sends an image to a user or a group, with an optional caption; returns
    /// the message's `msgId`.
    pub async fn send_image(
        &self,
        thread: ThreadKind,
        to: &str,
        image: &Image,
        caption: &str,
    ) -> Result<String, ClientError> {
        self.send_image_with_id(thread, to, image, caption, new_client_id())
            .await
    }

    /// [`Session::send_image`] with the caller's `clientId` for the message (see
    /// [`super::new_client_id`]).
    pub async fn send_image_with_id(
        &self,
        thread: ThreadKind,
        to: &str,
        image: &Image,
        caption: &str,
        client_id: i64,
    ) -> Result<String, ClientError> {
        let uploaded = self.upload_image(thread, to, image).await?;
        self.send_uploaded_image_with_id(thread, to, &uploaded, caption, client_id)
            .await
    }

    /// Uploads an image (in chunks of [`ShareFileSettings::chunk_size`]).
    pub async fn upload_image(
        &self,
        thread: ThreadKind,
        to: &str,
        image: &Image,
    ) -> Result<UploadedImage, ClientError> {
        let answer = self
            .upload(
                UploadKind::Image,
                thread,
                to,
                &image.file_name,
                &image.bytes,
                new_client_id(),
            )
            .await?;
        let text = |name: &str| answer[name].as_str().unwrap_or_default().to_string();
        Ok(UploadedImage {
            photo_id: id_text(&answer["photoId"]),
            normal_url: text("normalUrl"),
            hd_url: text("hdUrl"),
            thumb_url: text("thumbUrl"),
            width: image.width,
            height: image.height,
            total_size: image.bytes.len() as u64,
        })
    }

    /// Sends an image uploaded before; returns the message's `msgId`.
    pub async fn send_uploaded_image(
        &self,
        thread: ThreadKind,
        to: &str,
        image: &UploadedImage,
        caption: &str,
    ) -> Result<String, ClientError> {
        self.send_uploaded_image_with_id(thread, to, image, caption, new_client_id())
            .await
    }

    /// [`Session::send_uploaded_image`] with the caller's `clientId`.
    pub async fn send_uploaded_image_with_id(
        &self,
        thread: ThreadKind,
        to: &str,
        image: &UploadedImage,
        caption: &str,
        client_id: i64,
    ) -> Result<String, ClientError> {
        let mut params = json!({
            "photoId": image.photo_id,
            // A string here, unlike the other sends, as the web client sends it.
            "clientId": client_id.to_string(),
            "desc": caption,
            "width": image.width,
            "height": image.height,
            "rawUrl": image.normal_url,
            "hdUrl": image.hd_url,
            "thumbUrl": image.thumb_url,
            "hdSize": image.total_size.to_string(),
            "zsource": -1,
            "ttl": 0,
            "jcp": "{\"convertible\":\"jxl\"}",
        });
        params[recipient(thread)] = json!(to);
        // The web client names the full-size URL differently for groups.
        let url_field = match thread {
            ThreadKind::Direct => "normalUrl",
            ThreadKind::Group => "oriUrl",
        };
        params[url_field] = json!(image.normal_url);
        let host = first(&self.services.file, "file")?;
        let url = versioned_url(
            &format!("{host}/api/{}/photo_original/send", segment(thread)),
            &[("nretry", "0")],
        );
        let data = self.call(&url, &params).await?;
        super::api::msg_id(&data)
    }

    /// Uploads and sends a file to a user or a group; returns the message's `msgId`.
    ///
    /// Zalo reports the stored file's URL on the account's websocket, so a listener of this
    /// session (or a clone) must be running; a listener elsewhere can forward its "file_done"
    /// notices with [`Session::file_uploaded`]. Fails when no notice comes within the client's
    /// timeout.
    pub async fn send_file(
        &self,
        thread: ThreadKind,
        to: &str,
        file: &FileUpload,
    ) -> Result<String, ClientError> {
        self.send_file_with_id(thread, to, file, new_client_id())
            .await
    }

    /// [`Session::send_file`] with the caller's `clientId`: the upload's, which the message
    /// repeats (see [`super::new_client_id`]).
    pub async fn send_file_with_id(
        &self,
        thread: ThreadKind,
        to: &str,
        file: &FileUpload,
        client_id: i64,
    ) -> Result<String, ClientError> {
        let uploaded = self
            .upload_file_with_id(thread, to, file, client_id)
            .await?;
        self.send_uploaded_file(thread, to, &uploaded).await
    }

    /// Uploads a file and waits for its "file_done" notice (see [`Session::send_file`]).
    pub async fn upload_file(
        &self,
        thread: ThreadKind,
        to: &str,
        file: &FileUpload,
    ) -> Result<UploadedFile, ClientError> {
        self.upload_file_with_id(thread, to, file, new_client_id())
            .await
    }

    /// [`Session::upload_file`] with the caller's `clientId`.
    pub async fn upload_file_with_id(
        &self,
        thread: ThreadKind,
        to: &str,
        file: &FileUpload,
        client_id: i64,
    ) -> Result<UploadedFile, ClientError> {
        let answer = self
            .upload(
                UploadKind::File,
                thread,
                to,
                &file.file_name,
                &file.bytes,
                client_id,
            )
            .await?;
        let file_id = id_text(&answer["fileId"]);
        let notice = self.uploads.wait(&file_id);
        let timeout = self.client.http.timeout();
        let file_url = match tokio::time::timeout(timeout, notice).await {
            Ok(Ok(url)) => url,
            _ => {
                self.uploads.forget(&file_id);
                return Err(ClientError::Unexpected(format!(
                    "the upload of file {file_id} was not confirmed on the websocket within {timeout:?}: is a listener running?"
                )));
            }
        };
        Ok(UploadedFile {
            file_id,
            client_file_id: id_text(&answer["clientFileId"]),
            file_url,
            file_name: file.file_name.clone(),
            total_size: file.bytes.len() as u64,
            checksum: hex::encode(Md5::digest(&file.bytes)),
        })
    }

    /// Sends a file uploaded before; returns the message's `msgId`.
    pub async fn send_uploaded_file(
        &self,
        thread: ThreadKind,
        to: &str,
        file: &UploadedFile,
    ) -> Result<String, ClientError> {
        // The web client takes fileId from the websocket notice, where it is a number.
        let file_id = file
            .file_id
            .parse::<u64>()
            .map_or_else(|_| json!(file.file_id), |id| json!(id));
        let mut params = json!({
            "fileId": file_id,
            "checksum": file.checksum,
            "checksumSha": "",
            // Sic: the protocol's spelling.
            "extention": extension(&file.file_name),
            "totalSize": file.total_size,
            "fileName": file.file_name,
            "clientId": file.client_file_id,
            "fType": 1,
            "fileCount": 0,
            "fdata": "{}",
            "fileUrl": file.file_url,
            "zsource": -1,
            "ttl": 0,
        });
        params[recipient(thread)] = json!(to);
        let host = first(&self.services.file, "file")?;
        let url = versioned_url(
            &format!("{host}/api/{}/asyncfile/msg", segment(thread)),
            &[("nretry", "0")],
        );
        let data = self.call(&url, &params).await?;
        super::api::msg_id(&data)
    }

    /// Hands a "file_done" notice seen by a listener of another session of the account to
    /// this one, for its waiting [`Session::upload_file`].
    pub fn file_uploaded(&self, file_id: &str, file_url: &str) {
        self.uploads.complete(file_id, file_url);
    }

    /// Hands `event` to this session's waiting uploads when it is a "file_done" notice (from
    /// a listener of another session of the account, e.g. one started before a re-login);
    /// true when it was one.
    pub fn take_notice(&self, event: &crate::events::Event) -> bool {
        match event {
            crate::events::Event::Control { act_type, raw, .. } if act_type == "file_done" => {
                self.uploads.complete_from_control(raw);
                true
            }
            _ => false,
        }
    }

    /// Sends a sticker to a user or a group; returns the message's `msgId`.
    pub async fn send_sticker(
        &self,
        thread: ThreadKind,
        to: &str,
        sticker: &Sticker,
    ) -> Result<String, ClientError> {
        self.send_sticker_with_id(thread, to, sticker, new_client_id())
            .await
    }

    /// [`Session::send_sticker`] with the caller's `clientId`.
    pub async fn send_sticker_with_id(
        &self,
        thread: ThreadKind,
        to: &str,
        sticker: &Sticker,
        client_id: i64,
    ) -> Result<String, ClientError> {
        let mut params = json!({
            "stickerId": sticker.id,
            "cateId": sticker.category_id,
            "type": sticker.kind,
            "clientId": client_id,
            "imei": self.credentials.imei,
            "zsource": 101,
        });
        params[recipient(thread)] = json!(to);
        let (hosts, what) = match thread {
            ThreadKind::Direct => (&self.services.chat, "chat"),
            ThreadKind::Group => (&self.services.group, "group"),
        };
        let host = first(hosts, what)?;
        let url = versioned_url(
            &format!("{host}/api/{}/sticker", segment(thread)),
            &[("nretry", "0")],
        );
        let data = self.call(&url, &params).await?;
        super::api::msg_id(&data)
    }

    /// Uploads `bytes` chunk by chunk; returns the (decrypted) answer to the last chunk,
    /// which names the stored image or file.
    async fn upload(
        &self,
        kind: UploadKind,
        thread: ThreadKind,
        to: &str,
        file_name: &str,
        bytes: &[u8],
        client_id: i64,
    ) -> Result<Value, ClientError> {
        if bytes.is_empty() {
            return Err(ClientError::Unexpected(format!("{file_name} is empty")));
        }
        let total = bytes.len() as u64;
        if total > self.share_file.max_size {
            return Err(ClientError::Unexpected(format!(
                "{file_name} is {total} bytes; the server takes at most {}",
                self.share_file.max_size
            )));
        }
        let chunks: Vec<&[u8]> = bytes.chunks(self.share_file.chunk_size.max(1)).collect();
        let host = first(&self.services.file, "file")?;
        let base = format!("{host}/api/{}/{}", segment(thread), kind.path());
        // The upload's `type`: 2 for a user, 11 for a group.
        let kind_param = match thread {
            ThreadKind::Direct => "2",
            ThreadKind::Group => "11",
        };
        let cookie = self.credentials.cookie_header();
        let mut last = Value::Null;
        for (index, chunk) in chunks.iter().enumerate() {
            let mut params = json!({
                "totalChunk": chunks.len(),
                "fileName": file_name,
                "clientId": client_id,
                "totalSize": total,
                "imei": self.credentials.imei,
                "isE2EE": 0,
                "jxl": 0,
                "chunkId": index + 1,
            });
            params[recipient(thread)] = json!(to);
            let encrypted = self.cipher.encrypt(&params.to_string());
            let url = versioned_url(&base, &[("type", kind_param), ("params", &encrypted)]);
            let (body, content_type) = multipart("chunkContent", file_name, chunk);
            let mut headers = browser_headers(&cookie, &self.credentials.user_agent);
            for header in &mut headers {
                if header.0 == "content-type" {
                    header.1 = &content_type;
                }
            }
            let response = self
                .client
                .http
                .request(http::Method::POST, &url, &headers, body, None)
                .await?;
            if response.status != 200 {
                return Err(ClientError::Unexpected(format!("HTTP {}", response.status)));
            }
            last = crypto::decode_response(&self.cipher, &response.body)?;
        }
        let answer = super::api::payload(&last).clone();
        let id = id_text(&answer[kind.id_field()]);
        if id.is_empty() || id == "-1" {
            return Err(ClientError::Unexpected(format!(
                "the upload of {file_name} ended without a {}",
                kind.id_field()
            )));
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_file_settings_read_the_misspelled_key() {
        let info = json!({"setttings": {"features": {"sharefile": {
            "chunk_size_file": 1024, "max_size_share_file_v3": 2
        }}}});
        let settings = ShareFileSettings::from_json(&info);
        assert_eq!(settings.chunk_size, 1024);
        assert_eq!(settings.max_size, 2 * 1024 * 1024);
        assert_eq!(
            ShareFileSettings::from_json(&json!({})),
            ShareFileSettings::default()
        );
    }

    #[test]
    fn a_notice_before_the_wait_is_kept() {
        let uploads = Uploads::default();
        uploads.complete_from_control(&json!({"content": {
            "act_type": "file_done", "fileId": 42, "data": {"url": "https://f/x.pdf"}
        }}));
        let mut receiver = uploads.wait("42");
        assert_eq!(receiver.try_recv().ok().as_deref(), Some("https://f/x.pdf"));
        let mut later = uploads.wait("43");
        uploads.complete("43", "https://f/y.pdf");
        assert_eq!(later.try_recv().ok().as_deref(), Some("https://f/y.pdf"));
    }

    #[test]
    fn multipart_names_the_part_and_escapes_the_file_name() {
        let (body, content_type) = multipart("chunkContent", "a\"b.pdf", b"xyz");
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .expect("boundary");
        let text = String::from_utf8(body).expect("utf8");
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"chunkContent\"; filename=\"a_b.pdf\""));
        assert!(text.ends_with(&format!("\r\nxyz\r\n--{boundary}--\r\n")));
    }
}
