//! The simulator's media routes: chunked uploads of images and files (multipart field
//! `chunkContent`, encrypted parameters in the query string), the image and file sends that
//! name a finished upload, and stickers. A finished file upload is announced on the account's
//! sockets with a 601 "file_done" control notice, as Zalo does.

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Uri, header},
    response::Response,
    routing::post,
};
use md5::{Digest, Md5};
use serde_json::{Value, json};

use super::{
    MediaKind, SentMessage, Simulator, Thread, Upload,
    http::{api_call, encrypted, error, form_params, header_text, query, text},
};
use crate::frame::Header;

/// Zalo's code for parameters it cannot use (inferred for the media routes).
const INVALID_PARAMS: i64 = 114;

/// How long after answering a file's last chunk its "file_done" notice goes out.
const FILE_PROCESSING: std::time::Duration = std::time::Duration::from_millis(50);

pub(super) fn router() -> Router<Simulator> {
    Router::new()
        .route(
            "/api/message/photo_original/upload",
            post(upload_user_image),
        )
        .route("/api/group/photo_original/upload", post(upload_group_image))
        .route("/api/message/asyncfile/upload", post(upload_user_file))
        .route("/api/group/asyncfile/upload", post(upload_group_file))
        .route("/api/message/photo_original/send", post(send_user_image))
        .route("/api/group/photo_original/send", post(send_group_image))
        .route("/api/message/asyncfile/msg", post(send_user_file))
        .route("/api/group/asyncfile/msg", post(send_group_file))
        .route("/api/message/sticker", post(send_user_sticker))
        .route("/api/group/sticker", post(send_group_sticker))
}

async fn upload_user_image(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    upload(&sim, &headers, &uri, &body, Thread::User, MediaKind::Image)
}

async fn upload_group_image(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    upload(&sim, &headers, &uri, &body, Thread::Group, MediaKind::Image)
}

async fn upload_user_file(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    upload(&sim, &headers, &uri, &body, Thread::User, MediaKind::File)
}

async fn upload_group_file(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    upload(&sim, &headers, &uri, &body, Thread::Group, MediaKind::File)
}

async fn send_user_image(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    send_media(&sim, &headers, &body, Thread::User, MediaKind::Image).await
}

async fn send_group_image(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    send_media(&sim, &headers, &body, Thread::Group, MediaKind::Image).await
}

async fn send_user_file(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    send_media(&sim, &headers, &body, Thread::User, MediaKind::File).await
}

async fn send_group_file(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    send_media(&sim, &headers, &body, Thread::Group, MediaKind::File).await
}

async fn send_user_sticker(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sticker(&sim, &headers, &body, Thread::User).await
}

async fn send_group_sticker(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sticker(&sim, &headers, &body, Thread::Group).await
}

/// `toid` for a user, `grid` for a group.
fn recipient(params: &Value, thread: Thread) -> String {
    match thread {
        Thread::User => text(&params["toid"]),
        Thread::Group => text(&params["grid"]),
    }
}

fn number(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
}

/// The file part named `field` of a multipart body: its file name and bytes.
fn multipart_file(content_type: &str, body: &[u8], field: &str) -> Option<(String, Vec<u8>)> {
    let boundary = content_type
        .split(';')
        .filter_map(|part| part.trim().strip_prefix("boundary="))
        .next()?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut rest = body;
    loop {
        let start = find(rest, delimiter)? + delimiter.len();
        rest = &rest[start..];
        if rest.starts_with(b"--") {
            return None;
        }
        let headers_end = find(rest, b"\r\n\r\n")?;
        let part_headers = String::from_utf8_lossy(&rest[..headers_end]).to_string();
        let content = &rest[headers_end + 4..];
        let end = find(content, delimiter)?;
        // The part's bytes end before the CRLF that precedes the next delimiter.
        let bytes = content[..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&content[..end]);
        if part_headers.contains(&format!("name=\"{field}\"")) {
            let file_name = part_headers
                .split("filename=\"")
                .nth(1)
                .and_then(|tail| tail.split('"').next())
                .unwrap_or_default()
                .to_string();
            return Some((file_name, bytes.to_vec()));
        }
        rest = content;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// One chunk of an upload; the chunk that completes it gets the stored upload's ids.
fn upload(
    sim: &Simulator,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
    thread: Thread,
    kind: MediaKind,
) -> Response {
    let query = query(uri);
    let (uid, cipher, params) = match api_call(
        sim,
        headers,
        query.get("params").map(String::as_str).unwrap_or_default(),
    ) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let expected_type = match thread {
        Thread::User => "2",
        Thread::Group => "11",
    };
    let to = recipient(&params, thread);
    let file_name = text(&params["fileName"]);
    let (Some(total_size), Some(total_chunks), Some(chunk_id)) = (
        number(&params["totalSize"]),
        number(&params["totalChunk"]),
        number(&params["chunkId"]),
    ) else {
        return error(INVALID_PARAMS, "invalid params");
    };
    let client_id = text(&params["clientId"]);
    if query.get("type").map(String::as_str) != Some(expected_type)
        || to.is_empty()
        || file_name.is_empty()
        || client_id.is_empty()
        || chunk_id == 0
        || chunk_id > total_chunks
    {
        return error(INVALID_PARAMS, "invalid params");
    }
    let content_type = header_text(headers, header::CONTENT_TYPE);
    let Some((_, chunk)) = multipart_file(&content_type, body, "chunkContent") else {
        return error(INVALID_PARAMS, "missing chunkContent");
    };
    let key = format!("{kind:?}:{client_id}:{file_name}");
    let id_field = match kind {
        MediaKind::Image => "photoId",
        MediaKind::File => "fileId",
    };
    let stored_id = sim.next_msg_id().to_string();
    let finished = sim.with_account(&uid, |state| {
        let partial = state.partial_uploads.entry(key.clone()).or_default();
        partial.chunks.insert(chunk_id, chunk);
        if (partial.chunks.len() as u64) < total_chunks {
            return Ok(None);
        }
        let partial = state.partial_uploads.remove(&key).unwrap_or_default();
        let chunks = u32::try_from(partial.chunks.len()).unwrap_or(u32::MAX);
        let bytes: Vec<u8> = partial.chunks.into_values().flatten().collect();
        if bytes.len() as u64 != total_size {
            return Err(());
        }
        let url = match kind {
            MediaKind::Image => format!("https://photo-sim.zdn.vn/jpg/{stored_id}.jpg"),
            MediaKind::File => format!("https://file-sim.zdn.vn/{stored_id}/{file_name}"),
        };
        let upload = Upload {
            kind,
            thread,
            to: to.clone(),
            id: stored_id.clone(),
            file_name: file_name.clone(),
            bytes,
            chunks,
            url,
            params: params.clone(),
        };
        state.uploads.push(upload.clone());
        Ok(Some(upload))
    });
    let upload = match finished {
        None => return error(102, "session expired"),
        Some(Err(())) => return error(INVALID_PARAMS, "totalSize does not match the chunks"),
        Some(Ok(upload)) => upload,
    };
    let Some(upload) = upload else {
        // Not all chunks yet: the id fields say "none yet" (inferred shape).
        return encrypted(
            &cipher,
            json!({"finished": 0, "chunkId": chunk_id, "clientFileId": client_id, id_field: "-1"}),
        );
    };
    match kind {
        MediaKind::Image => encrypted(
            &cipher,
            json!({
                "finished": 1,
                "chunkId": chunk_id,
                "clientFileId": client_id,
                "photoId": upload.id,
                "normalUrl": upload.url,
                "hdUrl": upload.url,
                "thumbUrl": upload.url.replace("/jpg/", "/thumb/"),
            }),
        ),
        MediaKind::File => {
            // The stored file's URL goes out on the socket, not in this answer, and after it:
            // Zalo processes the file first, and clients (zca-js) only listen for the notice
            // once they have the answer's fileId.
            let notice = json!({"data": {"controls": [{"content": {
                "act_type": "file_done",
                "act": "",
                "fileId": upload.id.parse::<u64>().unwrap_or_default(),
                "data": {"url": upload.url},
            }}]}});
            let announcer = sim.clone();
            tokio::spawn(async move {
                tokio::time::sleep(FILE_PROCESSING).await;
                announcer.push(&uid, Header::new(1, 601, 0), notice);
            });
            encrypted(
                &cipher,
                json!({
                    "finished": 1,
                    "chunkId": chunk_id,
                    "clientFileId": client_id,
                    "fileId": upload.id,
                }),
            )
        }
    }
}

/// The image or file send: it must name a finished upload of the account, for the same
/// recipient; a file send must also carry the stored URL and the bytes' md5.
async fn send_media(
    sim: &Simulator,
    headers: &HeaderMap,
    body: &[u8],
    thread: Thread,
    kind: MediaKind,
) -> Response {
    let (uid, cipher, params) = match api_call(sim, headers, &form_params(body)) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let to = recipient(&params, thread);
    let id = match kind {
        MediaKind::Image => text(&params["photoId"]),
        MediaKind::File => text(&params["fileId"]),
    };
    let upload = sim
        .with_account(&uid, |state| {
            state
                .uploads
                .iter()
                .find(|upload| upload.kind == kind && upload.id == id)
                .cloned()
        })
        .flatten();
    let Some(upload) = upload else {
        return error(INVALID_PARAMS, "unknown upload");
    };
    if to.is_empty() || upload.to != to || upload.thread != thread {
        return error(INVALID_PARAMS, "the upload was for another conversation");
    }
    let shown = match kind {
        MediaKind::Image => text(&params["desc"]),
        MediaKind::File => {
            let checksum = hex::encode(Md5::digest(&upload.bytes));
            if text(&params["checksum"]) != checksum
                || text(&params["fileUrl"]) != upload.url
                || text(&params["fileName"]) != upload.file_name
            {
                return error(INVALID_PARAMS, "file checksum, URL or name does not match");
            }
            upload.file_name.clone()
        }
    };
    record(sim, &uid, thread, to, shown, &params, &cipher).await
}

async fn sticker(sim: &Simulator, headers: &HeaderMap, body: &[u8], thread: Thread) -> Response {
    let (uid, cipher, params) = match api_call(sim, headers, &form_params(body)) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let to = recipient(&params, thread);
    // cateId 0 is a real category: present is what counts.
    if to.is_empty()
        || number(&params["stickerId"]).is_none()
        || number(&params["cateId"]).is_none()
        || number(&params["type"]).is_none()
    {
        return error(INVALID_PARAMS, "invalid params");
    }
    record(sim, &uid, thread, to, String::new(), &params, &cipher).await
}

async fn record(
    sim: &Simulator,
    uid: &str,
    thread: Thread,
    to: String,
    text_shown: String,
    params: &Value,
    cipher: &crate::crypto::SessionCipher,
) -> Response {
    let (msg_id, answer_after) = sim.record_sent(
        uid,
        SentMessage {
            thread,
            to,
            text: text_shown,
            client_id: text(&params["clientId"]),
            msg_id: String::new(),
            params: params.clone(),
            received_at_ms: 0,
        },
    );
    tokio::time::sleep(answer_after).await;
    encrypted(cipher, json!({"msgId": msg_id}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_file_finds_the_named_part() {
        let body = b"--XY\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nno\r\n--XY\r\nContent-Disposition: form-data; name=\"chunkContent\"; filename=\"a.pdf\"\r\nContent-Type: application/octet-stream\r\n\r\n\r\nbytes\r\n\r\n--XY--\r\n";
        let (name, bytes) =
            multipart_file("multipart/form-data; boundary=XY", body, "chunkContent").expect("part");
        assert_eq!(name, "a.pdf");
        assert_eq!(bytes, b"\r\nbytes\r\n");
        assert!(multipart_file("multipart/form-data; boundary=XY", body, "missing").is_none());
    }
}
