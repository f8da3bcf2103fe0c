//! The websocket listener: connects to `zpw_ws[0]`, takes the cipher key from the first
//! frame, pings every `ping_interval`, turns frames into events, and reconnects.
//!
//! Reconnects: after an abnormal close (1006: the connection dropped without a close frame,
//! or could not be made) and after a close code the server lists in `close_and_retry_codes`,
//! with the server's delays for that code when it gives them, else exponential backoff.
//! Close 3000/3003 or a duplicate-session frame (cmd 3000) mean the account is open elsewhere:
//! the listener stops with [`StopReason::Kicked`] and does not fight for the session.
//!
//! Gap fill: after a reconnect the listener asks for the messages it may have missed
//! (cmd 510 for direct messages, 511 for groups, `lastId` = the newest msgId seen) and
//! delivers those it has not delivered yet: every message event is de-duplicated by msgId.
//! A listener started with a [`ResumePoint`] (what an earlier listener's consumer captured)
//! asks on its first connect too, so a restart loses nothing either.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::{
    self, Message,
    client::IntoClientRequest,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

use super::{ORIGIN, Session, now_ms, versioned_url};
use crate::events::{self, Event, ThreadKind};
use crate::frame::{self, Header};

/// Closes that mean "this account is open elsewhere": never reconnect after them.
const KICK_CODES: [u16; 2] = [3000, 3003];
/// What the listener reports for a connection that ended without a close frame.
const ABNORMAL: u16 = 1006;

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// First delay of the exponential backoff used when the server gives none for a code.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Reconnect attempts in a row (without a working connection in between) before giving
    /// up, when the server's settings give no maximum for the close code.
    pub max_attempts: u32,
    /// Ask for missed messages after a reconnect.
    pub gap_fill: bool,
    /// How many msgIds are remembered for de-duplication.
    pub dedupe_capacity: usize,
    /// Events buffered for a slow consumer; the socket waits when it is full.
    pub channel_capacity: usize,
    /// A socket that sends no cipher key within this time is dropped and reconnected.
    pub key_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_attempts: 20,
            gap_fill: true,
            dedupe_capacity: 10_000,
            channel_capacity: 256,
            key_timeout: Duration::from_secs(30),
        }
    }
}

/// Where a new listener picks up from: the newest msgIds a previous listener's consumer
/// captured, per thread kind. With a resume point the listener asks for the messages after
/// them as soon as its first socket is up, as it does after every reconnect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumePoint {
    /// The newest direct message (or recall) captured.
    pub direct: Option<String>,
    /// The newest group message (or recall) captured.
    pub group: Option<String>,
    /// For a thread kind without a msgId: replayed messages sent at or after this time (Unix
    /// ms, the server's clock) are news. None: the listener's start.
    pub since_ms: Option<i64>,
}

impl ResumePoint {
    /// Nothing to resume from: the listener starts as [`Session::listen`] does.
    pub fn is_empty(&self) -> bool {
        self.direct.is_none() && self.group.is_none() && self.since_ms.is_none()
    }
}

/// What the listener reports.
// Nearly every value is the large `Event` variant: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ListenerEvent {
    /// The socket is up and has its cipher key; `reconnect` is false for the first one.
    Connected { reconnect: bool },
    /// An event of the account (a message, a reaction, a receipt…).
    Event(Event),
    /// The socket closed with `code`; the listener connects again after `retry_in`.
    Reconnecting { code: u16, retry_in: Duration },
    /// The listener ended; nothing follows.
    Stopped(StopReason),
}

/// Why a listener ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The account was opened elsewhere (close 3000/3003 or a duplicate-session frame). Tell
    /// the user; connecting again would only kick the other session.
    Kicked { code: u16 },
    /// The server refused the socket's credentials: log in again.
    NeedsLogin(String),
    /// Too many reconnect attempts in a row failed.
    RetriesExhausted { code: u16 },
    /// The server closed with a code it does not list as retryable.
    Closed { code: u16 },
    /// [`Listener::stop`] was called.
    Requested,
}

/// Frames a listener skipped since it started (each is also logged), by why: a count an
/// operator can watch, since a skipped frame may have carried a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkippedFrames {
    /// Not a frame: a header cut short, a payload that is not JSON, an unusable key frame.
    pub undecodable: u64,
    /// A frame whose data opened under no key (corrupted, or a stale or wrong key) or did
    /// not read as the command's shape.
    pub unreadable: u64,
    /// A command nobody models.
    pub unknown_command: u64,
}

/// A running listener: receive its events; stop it or drop it to close the socket.
#[derive(Debug)]
pub struct Listener {
    events: mpsc::Receiver<ListenerEvent>,
    stop: watch::Sender<bool>,
    skipped: Arc<Mutex<SkippedFrames>>,
}

impl Listener {
    /// The next event; `None` after [`ListenerEvent::Stopped`].
    pub async fn recv(&mut self) -> Option<ListenerEvent> {
        self.events.recv().await
    }

    /// The frames skipped so far, over every connection of this listener.
    pub fn skipped_frames(&self) -> SkippedFrames {
        *self
            .skipped
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Closes the socket (code 1000) and ends with [`StopReason::Requested`].
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Session {
    /// Starts listening on the websocket. Only one listener per account may run at a time:
    /// a second one (here or in a browser) kicks the first.
    pub fn listen(&self, config: ListenerConfig) -> Listener {
        self.listen_from(config, ResumePoint::default())
    }

    /// Like [`Session::listen`], resuming after `resume`: the first connection already asks
    /// for the messages sent after it (when `config.gap_fill`), so messages that arrived while
    /// no listener ran are delivered too.
    pub fn listen_from(&self, config: ListenerConfig, resume: ResumePoint) -> Listener {
        let (events, receiver) = mpsc::channel(config.channel_capacity.max(1));
        let (stop, stopped) = watch::channel(false);
        let skipped = Arc::new(Mutex::new(SkippedFrames::default()));
        let worker = Worker {
            skipped: skipped.clone(),
            session: self.clone(),
            config,
            events,
            stopped,
            seen: Dedupe::default(),
            fill_first: !resume.is_empty(),
            last_user_msg: resume.direct,
            last_group_msg: resume.group,
            started_ms: resume.since_ms.unwrap_or_else(now_ms),
            request_id: 0,
        };
        tokio::spawn(worker.run());
        Listener {
            events: receiver,
            stop,
            skipped,
        }
    }
}

/// How one connection ended.
enum Ending {
    /// Closed with this code (1006 when it just dropped); `worked`: it got its key first.
    Closed {
        code: u16,
        worked: bool,
    },
    Stop(StopReason),
}

struct Worker {
    session: Session,
    config: ListenerConfig,
    events: mpsc::Sender<ListenerEvent>,
    stopped: watch::Receiver<bool>,
    seen: Dedupe,
    /// The newest msgId delivered, per thread kind: where a gap fill starts.
    last_user_msg: Option<String>,
    last_group_msg: Option<String>,
    /// Replayed messages older than the listener (or its resume time) are not news.
    started_ms: i64,
    /// Gap fill on the first connection too (started from a resume point).
    fill_first: bool,
    request_id: u64,
    skipped: Arc<Mutex<SkippedFrames>>,
}

/// The Client closed the channel: nobody listens any more.
struct Gone;

impl Worker {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        let mut connected_once = false;
        let reason = loop {
            let ending = self.connect_once(connected_once).await;
            let (code, worked) = match ending {
                Ok(Ending::Stop(reason)) => break reason,
                Ok(Ending::Closed { code, worked }) => (code, worked),
                Err(Gone) => return,
            };
            if worked {
                connected_once = true;
                failures = 0;
            }
            if KICK_CODES.contains(&code) {
                break StopReason::Kicked { code };
            }
            let settings = &self.session.socket;
            if code != ABNORMAL && !settings.close_and_retry_codes.contains(&code) {
                break StopReason::Closed { code };
            }
            let policy = settings.retries.get(&code);
            let max = policy
                .map(|policy| policy.max)
                .filter(|max| *max > 0)
                .unwrap_or(self.config.max_attempts);
            if failures >= max {
                break StopReason::RetriesExhausted { code };
            }
            let delay = match policy.filter(|policy| !policy.delays.is_empty()) {
                Some(policy) => policy.delays[(failures as usize).min(policy.delays.len() - 1)],
                None => backoff(&self.config, failures),
            };
            failures += 1;
            tracing::info!(uid = %self.session.uid, code, delay_ms = delay.as_millis() as u64, "websocket closed, reconnecting");
            if self
                .emit(ListenerEvent::Reconnecting {
                    code,
                    retry_in: delay,
                })
                .await
                .is_err()
            {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = wait_stop(&mut self.stopped) => break StopReason::Requested,
            }
        };
        tracing::info!(uid = %self.session.uid, ?reason, "listener stopped");
        let _ = self.emit(ListenerEvent::Stopped(reason)).await;
    }

    async fn emit(&self, event: ListenerEvent) -> Result<(), Gone> {
        self.events.send(event).await.map_err(|_| Gone)
    }

    fn url(&self) -> Option<String> {
        let base = self.session.ws_urls.first()?;
        Some(versioned_url(base, &[("t", &now_ms().to_string())]))
    }

    /// One connection, from the handshake to its close.
    async fn connect_once(&mut self, reconnect: bool) -> Result<Ending, Gone> {
        if *self.stopped.borrow() {
            return Ok(Ending::Stop(StopReason::Requested));
        }
        let Some(url) = self.url() else {
            return Ok(Ending::Stop(StopReason::NeedsLogin(
                "the login gave no websocket URL".into(),
            )));
        };
        let mut request = match url.as_str().into_client_request() {
            Ok(request) => request,
            Err(error) => {
                return Ok(Ending::Stop(StopReason::NeedsLogin(format!(
                    "invalid websocket URL: {error}"
                ))));
            }
        };
        let cookie = self.session.credentials.cookie_header();
        let headers = request.headers_mut();
        for (name, value) in [
            ("origin", ORIGIN),
            ("user-agent", self.session.credentials.user_agent.as_str()),
            ("cookie", cookie.as_str()),
        ] {
            if let Ok(value) = http::HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
        let timeout = self.session.client.http.timeout();
        let failure = if request.uri().scheme_str() == Some("wss") {
            let host = request.uri().host().unwrap_or_default().to_string();
            let port = request.uri().port_u16().unwrap_or(443);
            let tls = match self.session.client.http.connect_tls(&host, port).await {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::warn!(uid = %self.session.uid, %error, "websocket connect failed");
                    return Ok(Ending::Closed {
                        code: ABNORMAL,
                        worked: false,
                    });
                }
            };
            match tokio::time::timeout(timeout, tokio_tungstenite::client_async(request, tls)).await
            {
                Ok(Ok((socket, _))) => return self.converse(socket, reconnect).await,
                Ok(Err(error)) => Some(error),
                Err(_) => None,
            }
        } else {
            match tokio::time::timeout(timeout, tokio_tungstenite::connect_async(request)).await {
                Ok(Ok((socket, _))) => return self.converse(socket, reconnect).await,
                Ok(Err(error)) => Some(error),
                Err(_) => None,
            }
        };
        match failure {
            Some(tungstenite::Error::Http(response))
                if matches!(response.status().as_u16(), 401 | 403) =>
            {
                Ok(Ending::Stop(StopReason::NeedsLogin(format!(
                    "websocket refused with HTTP {}",
                    response.status()
                ))))
            }
            failure => {
                let error = failure
                    .map(|error| error.to_string())
                    .unwrap_or_else(|| "handshake timed out".into());
                tracing::warn!(uid = %self.session.uid, %error, "websocket connect failed");
                Ok(Ending::Closed {
                    code: ABNORMAL,
                    worked: false,
                })
            }
        }
    }

    /// A connected socket, from the key frame to its close.
    async fn converse<S>(
        &mut self,
        socket: tokio_tungstenite::WebSocketStream<S>,
        reconnect: bool,
    ) -> Result<Ending, Gone>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = socket.split();
        let mut key: Option<Vec<u8>> = None;
        let mut ping = tokio::time::interval(self.session.socket.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopped = self.stopped.clone();
        let key_deadline = tokio::time::sleep(self.config.key_timeout);
        tokio::pin!(key_deadline);
        loop {
            tokio::select! {
                _ = &mut key_deadline, if key.is_none() => {
                    tracing::warn!(uid = %self.session.uid, "no cipher key from the server, reconnecting");
                    return Ok(Ending::Closed { code: ABNORMAL, worked: false });
                }
                _ = wait_stop(&mut stopped) => {
                    let _ = sink.send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    }))).await;
                    return Ok(Ending::Stop(StopReason::Requested));
                }
                _ = ping.tick(), if key.is_some() => {
                    if sink.send(Message::Binary(frame::encode_ping(now_ms()).into())).await.is_err() {
                        return Ok(Ending::Closed { code: ABNORMAL, worked: true });
                    }
                }
                message = stream.next() => {
                    let bytes = match message {
                        None | Some(Err(_)) => {
                            return Ok(Ending::Closed { code: ABNORMAL, worked: key.is_some() });
                        }
                        Some(Ok(Message::Close(close))) => {
                            let code = close.map(|close| u16::from(close.code)).unwrap_or(1005);
                            return Ok(Ending::Closed { code, worked: key.is_some() });
                        }
                        Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                        Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                        Some(Ok(_)) => continue,
                    };
                    let (header, payload) = match frame::decode(&bytes) {
                        Ok(decoded) => decoded,
                        Err(error) => {
                            tracing::warn!(uid = %self.session.uid, %error, "undecodable frame skipped");
                            self.count_skipped(|skipped| skipped.undecodable += 1);
                            continue;
                        }
                    };
                    if header == Header::KEY {
                        match frame::key_from_frame(header, &payload) {
                            Ok(Some(new_key)) => {
                                let first_key = key.is_none();
                                key = Some(new_key);
                                if first_key {
                                    ping.reset();
                                    self.emit(ListenerEvent::Connected { reconnect }).await?;
                                    if (reconnect || self.fill_first) && self.config.gap_fill {
                                        for request in self.gap_fill_requests() {
                                            if sink.send(Message::Binary(request.into())).await.is_err() {
                                                return Ok(Ending::Closed { code: ABNORMAL, worked: true });
                                            }
                                        }
                                    }
                                }
                            }
                            Ok(None) => {}
                            Err(error) => {
                                tracing::warn!(uid = %self.session.uid, %error, "unusable cipher key frame skipped");
                                self.count_skipped(|skipped| skipped.undecodable += 1);
                            }
                        }
                        continue;
                    }
                    if header.cmd == 3000 {
                        let _ = sink.send(Message::Close(Some(CloseFrame {
                            code: CloseCode::from(3000),
                            reason: "".into(),
                        }))).await;
                        return Ok(Ending::Stop(StopReason::Kicked { code: 3000 }));
                    }
                    self.handle(header, &payload, key.as_deref()).await?;
                }
            }
        }
    }

    fn count_skipped(&self, count: impl FnOnce(&mut SkippedFrames)) {
        count(
            &mut self
                .skipped
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        );
    }

    /// Requests for the messages since the newest seen, per thread kind (510 direct, 511
    /// groups), as the web client asks for older messages.
    fn gap_fill_requests(&mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        for (cmd, last) in [
            (510, self.last_user_msg.clone()),
            (511, self.last_group_msg.clone()),
        ] {
            self.request_id += 1;
            let payload = json!({
                "first": true,
                "lastId": last,
                "preIds": [],
                "req_id": format!("req_{}", self.request_id),
            });
            frames.push(frame::encode(
                Header::new(1, cmd, 1),
                payload.to_string().as_bytes(),
            ));
        }
        frames
    }

    async fn handle(
        &mut self,
        header: Header,
        payload: &Value,
        key: Option<&[u8]>,
    ) -> Result<(), Gone> {
        // A gap-fill answer carries the same message lists as the live commands.
        let (live, replay) = match (header.cmd, header.sub_cmd) {
            (510, 1) => (
                Header::new(header.version, events::cmd::DIRECT_MESSAGES, 0),
                true,
            ),
            (511, 1) => (
                Header::new(header.version, events::cmd::GROUP_MESSAGES, 0),
                true,
            ),
            _ => (header, false),
        };
        let parsed = match events::parse(live, payload, key) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::warn!(uid = %self.session.uid, cmd = header.cmd, sub_cmd = header.sub_cmd, %error, "frame skipped");
                self.count_skipped(|skipped| skipped.unreadable += 1);
                return Ok(());
            }
        };
        for event in parsed {
            match &event {
                Event::Unknown { cmd, sub_cmd, .. } => {
                    tracing::warn!(uid = %self.session.uid, cmd, sub_cmd, "unknown command skipped");
                    self.count_skipped(|skipped| skipped.unknown_command += 1);
                    continue;
                }
                Event::Invalid { cmd, reason, .. } => {
                    tracing::warn!(uid = %self.session.uid, cmd, %reason, "malformed event item");
                }
                Event::CipherKey(_) | Event::DuplicateSession => continue,
                // A file upload of this session waits for this notice; it is an event too.
                Event::Control { act_type, raw, .. } if act_type == "file_done" => {
                    self.session.uploads.complete_from_control(raw);
                }
                _ => {}
            }
            if let Some((msg_id, group, ts)) = thread_position(&event) {
                if replay && !self.is_news(&msg_id, group, ts) {
                    continue;
                }
                let last = if group {
                    &mut self.last_group_msg
                } else {
                    &mut self.last_user_msg
                };
                if last.as_deref().is_none_or(|last| newer(&msg_id, last)) {
                    *last = Some(msg_id);
                }
            }
            if let Some(id) = dedupe_id(&event)
                && !self.seen.insert(id, self.config.dedupe_capacity)
            {
                continue;
            }
            self.emit(ListenerEvent::Event(event)).await?;
        }
        Ok(())
    }

    /// Whether a replayed message is one the listener may have missed, under either reading
    /// of `lastId` (messages after it, or the newest page): newer than the newest seen, or
    /// (nothing seen yet) sent since the listener started.
    fn is_news(&self, msg_id: &str, group: bool, ts: Option<i64>) -> bool {
        let last = if group {
            &self.last_group_msg
        } else {
            &self.last_user_msg
        };
        match last {
            Some(last) => newer(msg_id, last),
            None => ts.is_none_or(|ts| ts >= self.started_ms),
        }
    }
}

/// msgIds are decimal numbers that grow; non-numeric ids compare as never newer than a known
/// one (de-duplication still stops repeats).
fn newer(candidate: &str, last: &str) -> bool {
    match (candidate.parse::<u128>(), last.parse::<u128>()) {
        (Ok(candidate), Ok(last)) => candidate > last,
        _ => candidate != last,
    }
}

/// Resolves once a stop was asked for (the guard `wait_for` returns must not live across
/// an await: it is not Send).
async fn wait_stop(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn backoff(config: &ListenerConfig, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.min(16));
    config
        .backoff_initial
        .saturating_mul(factor)
        .min(config.backoff_max)
}

/// Where a message or recall sits in its thread kind: (msgId, is group, ts in ms).
fn thread_position(event: &Event) -> Option<(String, bool, Option<i64>)> {
    let (msg_id, kind, ts) = match event {
        Event::Message(message) => (&message.msg_id, message.thread_kind, message.ts_ms),
        Event::Recall(recall) => (&recall.msg_id, recall.thread_kind, recall.ts_ms),
        _ => return None,
    };
    (!msg_id.is_empty()).then(|| (msg_id.clone(), kind == ThreadKind::Group, Some(ts)))
}

/// The id an event is delivered at most once under.
fn dedupe_id(event: &Event) -> Option<&str> {
    let id = match event {
        Event::Message(message) => &message.msg_id,
        Event::Recall(recall) => &recall.msg_id,
        Event::Reaction(reaction) => &reaction.msg_id,
        _ => return None,
    };
    (!id.is_empty()).then_some(id.as_str())
}

/// A bounded set of recently delivered msgIds.
#[derive(Default)]
struct Dedupe {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Dedupe {
    /// False when `id` was already delivered.
    fn insert(&mut self, id: &str, capacity: usize) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        self.ids.insert(id.to_string());
        self.order.push_back(id.to_string());
        while self.order.len() > capacity.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_forgets_the_oldest_beyond_capacity() {
        let mut seen = Dedupe::default();
        assert!(seen.insert("1", 2));
        assert!(!seen.insert("1", 2));
        assert!(seen.insert("2", 2));
        assert!(seen.insert("3", 2));
        assert!(seen.insert("1", 2), "1 was forgotten");
    }

    #[test]
    fn msg_ids_compare_as_numbers() {
        assert!(newer("10", "9"));
        assert!(!newer("9", "10"));
        assert!(!newer("7", "7"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = ListenerConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            ..ListenerConfig::default()
        };
        assert_eq!(backoff(&config, 0), Duration::from_millis(100));
        assert_eq!(backoff(&config, 2), Duration::from_millis(400));
        assert_eq!(backoff(&config, 9), Duration::from_millis(500));
    }
}
