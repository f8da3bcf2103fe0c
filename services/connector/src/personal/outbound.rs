//! Outbound for personal accounts. The shared outbound consumer (any replica) only queues a
//! request: it writes the `outbound_messages` row the OA path writes, with the encoded request,
//! and acks. The replica holding the account's lease sends the queue in order, so one place
//! paces each account and talks to Zalo with the session it listens with. The row's states
//! keep the OA path's promise: `sending` is written just before the call, and a row found
//! `sending` later (the sender died mid-call) ends failed, never sent twice.
//!
//! Pacing: a token bucket per account, `send_burst` messages then one per `send_interval_ms`
//! (or per the account's `send_rate_per_minute`). Zalo's rate limits (-69, 221) pause the
//! account's sends with a doubling backoff and show it as `rate_limited`.
//!
//! Images and files are read from giao's object store (the attachment's `storage_key`, as
//! the OA path does) and uploaded with the library; a file's upload is confirmed on the
//! account's websocket, which the listener beside this sender receives.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use giao_bus::HandlerOutcome;
use giao_proto::{
    common::{ContentType, DeliveryStatus, MessageContent, ThreadKind},
    events::{self, AccountStatus},
};
use giao_storage::Database;
use prost::Message as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zalo_personal::{
    client::{ClientError, FileUpload, Image, Session, Sticker, new_client_id},
    events::ThreadKind as ZaloThread,
};

use crate::zalo::media::ObjectError;

use super::PersonalRuntime;

/// Zalo's web client refuses longer texts.
const MAX_TEXT_CHARS: usize = 2_000;

/// The session a listener and its sender share; a re-login (after 102) replaces it.
#[derive(Debug, Clone)]
pub struct SharedSession(Arc<(RwLock<Session>, AtomicBool)>);

impl SharedSession {
    pub fn new(session: Session) -> Self {
        Self(Arc::new((RwLock::new(session), AtomicBool::new(false))))
    }

    pub fn get(&self) -> Session {
        self.0
            .0
            .read()
            .map(|session| session.clone())
            .unwrap_or_else(|poison| poison.into_inner().clone())
    }

    pub fn set(&self, session: Session) {
        if let Ok(mut current) = self.0.0.write() {
            *current = session;
            self.0.1.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the session is no longer the one the listener was started with.
    pub fn replaced(&self) -> bool {
        self.0.1.load(Ordering::Relaxed)
    }
}

/// What one queued request becomes on the personal protocol.
enum Outgoing {
    Text(String),
    Image { image: Image, caption: String },
    File(FileUpload),
    Sticker(Sticker),
}

/// Why a request cannot go now.
enum NotNow {
    /// Never: fail the row with this code and reason.
    Refuse(&'static str, String),
    /// Attachment storage trouble: leave it queued.
    Later(String),
}

/// Width and height of a PNG or JPEG (the apps show the frame before the image loads).
fn image_size(data: &[u8]) -> Option<(u32, u32)> {
    if data.starts_with(&[0x89, b'P', b'N', b'G']) {
        let width = u32::from_be_bytes(data.get(16..20)?.try_into().ok()?);
        let height = u32::from_be_bytes(data.get(20..24)?.try_into().ok()?);
        return Some((width, height));
    }
    // JPEG: walk the segments to the frame header (SOF0–SOF15 except DHT, JPG, DAC).
    let mut at = 2;
    while at + 9 < data.len() {
        if data[at] != 0xFF {
            return None;
        }
        let marker = data[at + 1];
        if marker == 0xFF {
            at += 1;
            continue;
        }
        if marker == 0x01 || (0xD0..=0xD9).contains(&marker) {
            at += 2;
            continue;
        }
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let height = u16::from_be_bytes([data[at + 5], data[at + 6]]);
            let width = u16::from_be_bytes([data[at + 7], data[at + 8]]);
            return Some((u32::from(width), u32::from(height)));
        }
        let length = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        at += 2 + length;
    }
    None
}

/// `name` ending in `.extension` (the apps pick the viewer by it).
fn named(name: &str, fallback: &str, extension: &str) -> String {
    let name = if name.trim().is_empty() {
        fallback
    } else {
        name.trim()
    };
    if name.to_lowercase().ends_with(&format!(".{extension}"))
        || (extension == "jpg" && name.to_lowercase().ends_with(".jpeg"))
    {
        name.to_string()
    } else {
        format!("{name}.{extension}")
    }
}

/// A token bucket: `burst` tokens, one more every `interval`.
#[derive(Debug)]
pub struct Bucket {
    burst: f64,
    interval: Duration,
    tokens: f64,
    last: tokio::time::Instant,
}

impl Bucket {
    pub fn new(burst: u32, interval: Duration) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            interval: interval.max(Duration::from_millis(1)),
            tokens: f64::from(burst.max(1)),
            last: tokio::time::Instant::now(),
        }
    }

    /// Takes a token; returns how long to wait before using it.
    pub fn reserve(&mut self, now: tokio::time::Instant) -> Duration {
        let refill = now.duration_since(self.last).as_secs_f64() / self.interval.as_secs_f64();
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            self.interval.mul_f64(-self.tokens)
        }
    }
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// One queued request.
struct Queued {
    message_id: String,
    request: events::OutboundRequested,
}

impl PersonalRuntime {
    /// The outbound consumer's part: queue the request (once), or republish the outcome of
    /// one already settled, and wake the sender when it runs here.
    pub async fn enqueue(
        &self,
        tenant: &str,
        request: &events::OutboundRequested,
        disabled: bool,
    ) -> HandlerOutcome {
        let ledger = &self.inner.ledger;
        let encoded = request.encode_to_vec();
        let record = match ledger.record(tenant, request, Some(&encoded)).await {
            Ok(record) => record,
            Err(error) => return HandlerOutcome::Retry(error.to_string()),
        };
        let republished = match record.state.as_str() {
            "sent" => {
                ledger
                    .publish_delivery(
                        tenant,
                        request,
                        DeliveryStatus::Sent,
                        &record.external_message_id,
                        "",
                        "",
                    )
                    .await
            }
            "failed" => {
                ledger
                    .publish_delivery(
                        tenant,
                        request,
                        DeliveryStatus::Failed,
                        "",
                        &record.failure_code,
                        &record.failure_reason,
                    )
                    .await
            }
            "pending" if disabled => {
                // No listener will ever send it: settle it now, as the OA path does.
                let reason = "the channel account is disabled";
                if let Err(error) = ledger
                    .finish(
                        tenant,
                        &request.message_id,
                        "failed",
                        "",
                        "disabled",
                        reason,
                    )
                    .await
                {
                    return HandlerOutcome::Retry(error.to_string());
                }
                ledger
                    .publish_delivery(
                        tenant,
                        request,
                        DeliveryStatus::Failed,
                        "",
                        "disabled",
                        reason,
                    )
                    .await
            }
            _ => Ok(()),
        };
        if let Err(error) = republished {
            return HandlerOutcome::Retry(error.to_string());
        }
        self.wake(tenant, &request.channel_account_id);
        HandlerOutcome::Done
    }

    /// Whether Zalo's `msg_id` (or the sending client's `cli_msg_id`, which an echo that
    /// beats the send's answer is only known by) is a message giao sent from this account.
    pub(crate) async fn sent_by_giao(
        &self,
        tenant: &str,
        account: &str,
        msg_id: &str,
        cli_msg_id: &str,
    ) -> bool {
        let sql = "SELECT COUNT(*) FROM outbound_messages WHERE tenant_id = $1 \
                   AND channel_account_id = $2 AND (external_message_id = $3 \
                   OR (client_message_id = $4 AND client_message_id <> ''))";
        let found: Result<(i64,), sqlx::Error> = match self.inner.ledger.database() {
            Database::Postgres(pool) => {
                sqlx::query_as(sql)
                    .bind(tenant)
                    .bind(account)
                    .bind(msg_id)
                    .bind(cli_msg_id)
                    .fetch_one(pool)
                    .await
            }
            Database::Sqlite(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql.replace('$', "?")))
                    .bind(tenant)
                    .bind(account)
                    .bind(msg_id)
                    .bind(cli_msg_id)
                    .fetch_one(pool)
                    .await
            }
        };
        found.is_ok_and(|(count,)| count > 0)
    }

    /// The oldest queued request of the account still to send.
    async fn next_queued(
        &self,
        tenant: &str,
        account: &str,
    ) -> Result<Option<Queued>, sqlx::Error> {
        let sql = "SELECT message_id, request FROM outbound_messages WHERE tenant_id = $1 \
                   AND channel_account_id = $2 AND state = 'pending' AND request IS NOT NULL \
                   ORDER BY created_at, message_id LIMIT 1";
        let row: Option<(String, Vec<u8>)> = match self.inner.ledger.database() {
            Database::Postgres(pool) => {
                sqlx::query_as(sql)
                    .bind(tenant)
                    .bind(account)
                    .fetch_optional(pool)
                    .await?
            }
            Database::Sqlite(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql.replace('$', "?")))
                    .bind(tenant)
                    .bind(account)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(row.and_then(|(message_id, bytes)| {
            match events::OutboundRequested::decode(bytes.as_slice()) {
                Ok(request) => Some(Queued {
                    message_id,
                    request,
                }),
                Err(error) => {
                    tracing::error!(message = %message_id, %error, "queued request undecodable");
                    None
                }
            }
        }))
    }

    /// Claims a queued row for one send attempt (`pending → sending`) with the attempt's
    /// clientId; false when another writer got there first.
    async fn claim(
        &self,
        tenant: &str,
        message_id: &str,
        client_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE outbound_messages SET state = 'sending', client_message_id = $3, \
                   updated_at = $4 WHERE tenant_id = $1 AND message_id = $2 AND state = 'pending'";
        let done = crate::store::on_pool!(self.inner.ledger.database(), sql, |q| q
            .bind(tenant)
            .bind(message_id)
            .bind(client_id)
            .bind(now_micros()))?;
        Ok(done == 1)
    }

    /// Moves a row from `from` to `to`; false when another writer got there first.
    async fn transition(
        &self,
        tenant: &str,
        message_id: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE outbound_messages SET state = $4, updated_at = $5 \
                   WHERE tenant_id = $1 AND message_id = $2 AND state = $3";
        let done = crate::store::on_pool!(self.inner.ledger.database(), sql, |q| q
            .bind(tenant)
            .bind(message_id)
            .bind(from)
            .bind(to)
            .bind(now_micros()))?;
        Ok(done == 1)
    }

    /// Rows a previous holder left `sending` (it died mid-call): their outcome is unknown,
    /// so they end failed rather than risk a second copy to the customer.
    async fn settle_interrupted(&self, tenant: &str, account: &str) -> Result<(), sqlx::Error> {
        let sql = "SELECT message_id, request FROM outbound_messages WHERE tenant_id = $1 \
                   AND channel_account_id = $2 AND state = 'sending' AND request IS NOT NULL";
        let rows: Vec<(String, Vec<u8>)> = match self.inner.ledger.database() {
            Database::Postgres(pool) => {
                sqlx::query_as(sql)
                    .bind(tenant)
                    .bind(account)
                    .fetch_all(pool)
                    .await?
            }
            Database::Sqlite(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql.replace('$', "?")))
                    .bind(tenant)
                    .bind(account)
                    .fetch_all(pool)
                    .await?
            }
        };
        for (message_id, bytes) in rows {
            let request = events::OutboundRequested::decode(bytes.as_slice()).unwrap_or_default();
            let reason = "not sent again: an earlier attempt's outcome is unknown";
            self.fail(tenant, &message_id, &request, "unknown", reason)
                .await?;
        }
        Ok(())
    }

    async fn fail(
        &self,
        tenant: &str,
        message_id: &str,
        request: &events::OutboundRequested,
        code: &str,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        let ledger = &self.inner.ledger;
        ledger
            .finish(tenant, message_id, "failed", "", code, reason)
            .await?;
        if let Err(error) = ledger
            .publish_delivery(tenant, request, DeliveryStatus::Failed, "", code, reason)
            .await
        {
            // The row is settled; a redelivered request republishes it.
            tracing::warn!(%error, "delivery failure not published");
        }
        Ok(())
    }

    /// Sends the account's queue until `stop`, paced; runs beside the account's listener.
    pub(crate) async fn send_queued(
        self,
        tenant: String,
        account: String,
        shared: SharedSession,
        stop: CancellationToken,
        wake: Arc<Notify>,
    ) {
        if let Err(error) = self.settle_interrupted(&tenant, &account).await {
            tracing::warn!(%error, "interrupted sends not settled");
        }
        let config = self.config().clone();
        let poll = Duration::from_millis(config.outbound_poll_ms);
        let interval = match self.accounts().get(&tenant, &account).await {
            Ok(Some(found)) if found.send_rate_per_minute > 0 => {
                Duration::from_secs_f64(60.0 / f64::from(found.send_rate_per_minute))
            }
            _ => Duration::from_millis(config.send_interval_ms),
        };
        let mut bucket = Bucket::new(config.send_burst, interval);
        let base_pause = Duration::from_millis(config.rate_limit_pause_ms.max(1));
        let max_pause = Duration::from_millis(config.rate_limit_max_pause_ms.max(1));
        let mut pause = base_pause;
        let sleep = |wait: Duration| {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = stop.cancelled() => false,
                    _ = tokio::time::sleep(wait) => true,
                }
            }
        };
        while !stop.is_cancelled() {
            let queued = match self.next_queued(&tenant, &account).await {
                Ok(Some(queued)) => queued,
                Ok(None) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "outbound queue not readable");
                    if !sleep(poll).await {
                        return;
                    }
                    continue;
                }
            };
            let wait = bucket.reserve(tokio::time::Instant::now());
            if !wait.is_zero() && !sleep(wait).await {
                return;
            }
            match self.send_one(&tenant, &account, &shared, &queued).await {
                Ok(Sent::Done) => {
                    if pause != base_pause {
                        // A send went through after a rate limit: the pause is over.
                        self.set_status(&tenant, &account, AccountStatus::Connected, "")
                            .await;
                        pause = base_pause;
                    }
                }
                Ok(Sent::RateLimited(error)) => {
                    let reason = format!(
                        "Zalo rate limit ({error}): sending paused for {} s",
                        pause.as_secs()
                    );
                    self.set_status(&tenant, &account, AccountStatus::RateLimited, &reason)
                        .await;
                    if !sleep(pause).await {
                        return;
                    }
                    pause = (pause * 2).min(max_pause);
                }
                Ok(Sent::Later) => {
                    if !sleep(poll).await {
                        return;
                    }
                }
                Ok(Sent::StopAccount) => {
                    stop.cancel();
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "outbound row not updated");
                    if !sleep(poll).await {
                        return;
                    }
                }
            }
        }
    }

    async fn send_one(
        &self,
        tenant: &str,
        account: &str,
        shared: &SharedSession,
        queued: &Queued,
    ) -> Result<Sent, sqlx::Error> {
        let request = &queued.request;
        let message_id = &queued.message_id;
        let content = request.content.clone().unwrap_or_default();
        // Read (and checked) once; an attempt after a re-login uploads the same bytes again.
        let outgoing = match self.outgoing(tenant, &content, shared).await {
            Ok(outgoing) => outgoing,
            Err(NotNow::Refuse(code, reason)) => {
                self.fail(tenant, message_id, request, code, &reason)
                    .await?;
                return Ok(Sent::Done);
            }
            Err(NotNow::Later(reason)) => {
                tracing::info!(account = %account, %reason, "attachment not readable now; send retried");
                return Ok(Sent::Later);
            }
        };
        let thread = if request.thread_kind == ThreadKind::Group as i32 {
            ZaloThread::Group
        } else {
            ZaloThread::Direct
        };
        let to = request.external_thread_id.as_str();
        let mut relogged = false;
        loop {
            // Claimed just before the call: a crash from here on leaves `sending`. The
            // clientId is stored first, so an echo that beats the answer is recognised.
            let client_id = new_client_id();
            if !self
                .claim(tenant, message_id, &client_id.to_string())
                .await?
            {
                return Ok(Sent::Done);
            }
            let session = shared.get();
            let result = match (&outgoing, thread) {
                (Outgoing::Text(text), ZaloThread::Group) => {
                    session.send_group_text_with_id(to, text, client_id).await
                }
                (Outgoing::Text(text), ZaloThread::Direct) => {
                    session.send_text_with_id(to, text, client_id).await
                }
                (Outgoing::Image { image, caption }, thread) => {
                    session
                        .send_image_with_id(thread, to, image, caption, client_id)
                        .await
                }
                (Outgoing::File(file), thread) => {
                    session.send_file_with_id(thread, to, file, client_id).await
                }
                (Outgoing::Sticker(sticker), thread) => {
                    session
                        .send_sticker_with_id(thread, to, sticker, client_id)
                        .await
                }
            };
            let error = match result {
                Ok(msg_id) => {
                    let ledger = &self.inner.ledger;
                    ledger
                        .finish(tenant, message_id, "sent", &msg_id, "", "")
                        .await?;
                    if let Err(error) = ledger
                        .publish_delivery(tenant, request, DeliveryStatus::Sent, &msg_id, "", "")
                        .await
                    {
                        tracing::warn!(%error, "delivery not published; a redelivery republishes it");
                    }
                    return Ok(Sent::Done);
                }
                Err(error) => error,
            };
            match error {
                // Refused before anything was sent: the row goes back to the queue.
                ClientError::SessionKeyExpired if !relogged => {
                    self.transition(tenant, message_id, "sending", "pending")
                        .await?;
                    relogged = true;
                    if self.relogin(tenant, account, shared).await.is_err() {
                        return Ok(Sent::StopAccount);
                    }
                }
                error if error.needs_login() => {
                    self.transition(tenant, message_id, "sending", "pending")
                        .await?;
                    let (status, reason) = Self::status_of(&error);
                    let used = session.credentials().clone();
                    self.set_session_status(tenant, account, &used, status, &reason)
                        .await;
                    return Ok(Sent::StopAccount);
                }
                error if error.is_rate_limit() => {
                    self.transition(tenant, message_id, "sending", "pending")
                        .await?;
                    return Ok(Sent::RateLimited(error.to_string()));
                }
                ClientError::Connect(reason) => {
                    self.transition(tenant, message_id, "sending", "pending")
                        .await?;
                    tracing::info!(account = %account, %reason, "Zalo not reachable; send retried");
                    return Ok(Sent::Later);
                }
                ClientError::Zalo { code, message } => {
                    let reason = format!("Zalo refused the message (error {code}): {message}");
                    self.fail(tenant, message_id, request, &code.to_string(), &reason)
                        .await?;
                    return Ok(Sent::Done);
                }
                error => {
                    // No clear answer: it may have reached the customer. Never resent.
                    let reason = format!("outcome unknown, not resent: {error}");
                    self.fail(tenant, message_id, request, "unknown", &reason)
                        .await?;
                    return Ok(Sent::Done);
                }
            }
        }
    }
}

impl PersonalRuntime {
    /// What `content` becomes on the protocol, with an image's or file's bytes read from
    /// giao's object store, or why it cannot go (now).
    async fn outgoing(
        &self,
        tenant: &str,
        content: &MessageContent,
        shared: &SharedSession,
    ) -> Result<Outgoing, NotNow> {
        let kind = ContentType::try_from(content.r#type).unwrap_or(ContentType::Unspecified);
        match kind {
            ContentType::Image | ContentType::File => {}
            ContentType::Sticker => return sticker(content),
            ContentType::Text | ContentType::Unspecified if content.attachments.is_empty() => {
                let chars = content.text.chars().count();
                if content.text.trim().is_empty() || chars > MAX_TEXT_CHARS {
                    return Err(NotNow::Refuse(
                        "invalid",
                        format!("text must have 1 to {MAX_TEXT_CHARS} characters, has {chars}"),
                    ));
                }
                return Ok(Outgoing::Text(content.text.clone()));
            }
            other => {
                let name = other
                    .as_str_name()
                    .trim_start_matches("CONTENT_TYPE_")
                    .to_lowercase()
                    .replace('_', " ");
                return Err(NotNow::Refuse(
                    "unsupported",
                    format!("{name} messages cannot be sent from a personal account yet"),
                ));
            }
        }
        let attachment = match content.attachments.as_slice() {
            [one] => one,
            [] => {
                return Err(NotNow::Refuse(
                    "invalid",
                    "the message has no attachment to send".into(),
                ));
            }
            _ => {
                return Err(NotNow::Refuse(
                    "unsupported",
                    "a Zalo message carries one attachment: send them one by one".into(),
                ));
            }
        };
        if attachment.storage_key.is_empty() {
            return Err(NotNow::Refuse(
                "attachment",
                "the attachment was never stored in giao: upload it first".into(),
            ));
        }
        let max =
            usize::try_from(shared.get().share_file_settings().max_size).unwrap_or(usize::MAX);
        let data = match self
            .inner
            .objects
            .read(tenant, &attachment.storage_key, max)
            .await
        {
            Ok(data) => data.to_vec(),
            Err(ObjectError::Missing(reason)) => return Err(NotNow::Refuse("attachment", reason)),
            Err(error @ ObjectError::Unavailable(_)) => {
                return Err(NotNow::Later(error.to_string()));
            }
        };
        if kind == ContentType::File {
            return Ok(Outgoing::File(FileUpload {
                file_name: if attachment.name.trim().is_empty() {
                    "file".into()
                } else {
                    attachment.name.trim().to_string()
                },
                bytes: data,
            }));
        }
        let extension = if data.starts_with(&[0x89, b'P', b'N', b'G']) {
            "png"
        } else if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
            "jpg"
        } else {
            return Err(NotNow::Refuse(
                "attachment",
                "images from a personal account must be JPG or PNG: send others as files".into(),
            ));
        };
        // Unknown dimensions only cost the apps their placeholder frame.
        let (width, height) = image_size(&data).unwrap_or((0, 0));
        Ok(Outgoing::Image {
            image: Image {
                file_name: named(&attachment.name, "image", extension),
                bytes: data,
                width,
                height,
            },
            caption: content.text.clone(),
        })
    }
}

/// A sticker: `sticker_id` is its id; its category (`catId`) and `type` come from
/// `raw_json` when given (as a captured sticker carries them), else 0 and 7.
fn sticker(content: &MessageContent) -> Result<Outgoing, NotNow> {
    let raw: serde_json::Value = serde_json::from_str(&content.raw_json).unwrap_or_default();
    let number = |value: &serde_json::Value| {
        value
            .as_u64()
            .or_else(|| value.as_str().and_then(|text| text.trim().parse().ok()))
    };
    let id = content
        .sticker_id
        .trim()
        .parse::<u64>()
        .ok()
        .or_else(|| number(&raw["id"]));
    let Some(id) = id else {
        return Err(NotNow::Refuse(
            "invalid",
            "a sticker message needs a numeric sticker_id".into(),
        ));
    };
    Ok(Outgoing::Sticker(Sticker {
        id,
        category_id: number(&raw["catId"])
            .or_else(|| number(&raw["cateId"]))
            .unwrap_or(0),
        kind: number(&raw["type"])
            .and_then(|kind| u32::try_from(kind).ok())
            .unwrap_or(7),
    }))
}

/// What one send attempt leaves the sender to do.
enum Sent {
    /// Settled (sent, or failed for good).
    Done,
    /// Zalo's rate limit: back in the queue; pause the account.
    RateLimited(String),
    /// Back in the queue; try again after a poll interval.
    Later,
    /// The account needs a login: the listener and sender stop.
    StopAccount,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_sizes_from_png_and_jpeg_headers() {
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];
        png.extend_from_slice(b"IHDR");
        png.extend_from_slice(&640u32.to_be_bytes());
        png.extend_from_slice(&480u32.to_be_bytes());
        assert_eq!(image_size(&png), Some((640, 480)));
        // SOI, an APP0 segment of 4 bytes, then SOF0 with height 2, width 3.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 11, 8, 0, 2, 0, 3, 1, 0, 0, 0,
        ];
        assert_eq!(image_size(&jpeg), Some((3, 2)));
        assert_eq!(image_size(b"GIF89a"), None);
        assert_eq!(named("ao", "image", "png"), "ao.png");
        assert_eq!(named("Ao.JPEG", "image", "jpg"), "Ao.JPEG");
        assert_eq!(named(" ", "image", "jpg"), "image.jpg");
    }

    #[test]
    fn stickers_take_their_category_from_the_raw_content() {
        let content = MessageContent {
            sticker_id: "23339".into(),
            raw_json: r#"{"id":23339,"catId":10425,"type":7}"#.into(),
            ..Default::default()
        };
        let Ok(Outgoing::Sticker(found)) = sticker(&content) else {
            panic!("a sticker");
        };
        assert_eq!((found.id, found.category_id, found.kind), (23339, 10425, 7));
        assert!(sticker(&MessageContent::default()).is_err());
    }

    #[test]
    fn bucket_gives_a_burst_then_one_per_interval() {
        let start = tokio::time::Instant::now();
        let mut bucket = Bucket::new(5, Duration::from_secs(3));
        for _ in 0..5 {
            assert_eq!(bucket.reserve(start), Duration::ZERO);
        }
        let wait = bucket.reserve(start);
        assert_eq!(wait, Duration::from_secs(3));
        // Two reservations later the second waits twice as long (tokens are owed).
        assert_eq!(bucket.reserve(start), Duration::from_secs(6));
        // After the full refill time only a burst is available again, not more.
        let later = start + Duration::from_secs(600);
        for _ in 0..5 {
            assert_eq!(bucket.reserve(later), Duration::ZERO);
        }
        assert!(bucket.reserve(later) > Duration::ZERO);
    }
}
