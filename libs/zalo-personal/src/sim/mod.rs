//! The server side of the protocol on loopback, with fault knobs: QR login, cookie login,
//! sending, profiles and the websocket, shaped and encrypted as the client expects, so both
//! sides really sign, encrypt and frame. One HTTP server plays every host (id, wpa, jr, the
//! service hosts and the websocket host); point [`crate::client::Endpoints::all_at`] at
//! [`Simulator::base_url`].
//!
//! Gap fill: every message injected for an account is kept in its log, whether or not a
//! socket is connected; a client's (1, 510, 1) / (1, 511, 1) request is answered with the
//! logged messages newer than its `lastId` (all of them when it has none).
//!
//! Layout: `mod.rs` the handle and its state; `http.rs` the login and API routes; `media.rs`
//! uploads and the image, file and sticker sends; `ws.rs` the websocket; `control.rs` the `/sim/*` routes that script it over HTTP; `tls.rs` the
//! https listener.

mod control;
mod http;
mod media;
pub mod social;
mod tls;
mod ws;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    client::{Cookie, Credentials},
    crypto::{self, SessionCipher},
    frame::Header,
};

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How long a QR long poll waits before answering "poll again" (error_code 8).
    pub long_poll: Duration,
    /// `ping_interval` handed out in the socket settings.
    pub ping_interval: Duration,
    /// Close codes listed in `close_and_retry_codes`. 3000 is listed by default, so a client
    /// that obeys the list blindly would fight a kick: ours must not.
    pub close_and_retry_codes: Vec<u16>,
    /// Delays for retrying after 1006, and the most attempts in a row.
    pub retry_delays: Vec<Duration>,
    pub retry_max: u32,
    /// The login page's script version, which QR forms must echo.
    pub login_version: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            long_poll: Duration::from_secs(5),
            ping_interval: Duration::from_secs(60),
            close_and_retry_codes: vec![1000, 1006, 3000],
            retry_delays: vec![
                Duration::from_millis(200),
                Duration::from_millis(500),
                Duration::from_secs(1),
            ],
            retry_max: 10,
            login_version: "2.44.10".into(),
        }
    }
}

/// The service hosts and websocket URL `getLoginInfo` hands out instead of the simulator's
/// own. For clients whose transport reroutes Zalo's hostnames to the simulator rather than
/// taking base URLs (the zca-js interop test): they then see the hostnames Zalo would give,
/// and their cookie jars, keyed by those hosts, send the account's cookies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedHosts {
    pub chat: String,
    pub group: String,
    pub file: String,
    pub profile: String,
    /// Every other service of the map (friend, conversation, sticker, …).
    pub other: String,
    /// The websocket URL (`zpw_ws[0]`); the simulator serves the socket at `/ws`.
    pub ws: String,
}

impl AdvertisedHosts {
    /// Hostnames shaped like Zalo's (https and wss on chat.zalo.me subdomains).
    pub fn zalo_like() -> Self {
        Self {
            chat: "https://tt-chat1-wpa.chat.zalo.me".into(),
            group: "https://tt-group-wpa.chat.zalo.me".into(),
            file: "https://tt-files-wpa.chat.zalo.me".into(),
            profile: "https://tt-profile-wpa.chat.zalo.me".into(),
            other: "https://tt-misc-wpa.chat.zalo.me".into(),
            ws: "wss://ws1-msg.chat.zalo.me/ws".into(),
        }
    }
}

/// An account the simulator knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimAccount {
    pub uid: String,
    pub display_name: String,
    pub avatar: String,
}

impl SimAccount {
    pub fn new(uid: &str, display_name: &str) -> Self {
        Self {
            uid: uid.into(),
            display_name: display_name.into(),
            avatar: format!("https://s120-ava-talk.zadn.vn/{uid}.jpg"),
        }
    }
}

/// Where a message the client sent went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    User,
    Group,
}

/// A message the client sent through the simulator.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub thread: Thread,
    /// The user (`toid`) or group (`grid`).
    pub to: String,
    pub text: String,
    pub client_id: String,
    pub msg_id: String,
    /// The decrypted parameters as sent.
    pub params: Value,
    /// When the simulator received the send (Unix ms, its clock): for pacing checks that
    /// must not trust the client's own stamps.
    pub received_at_ms: i64,
}

/// What kind of message a [`SentMessage`] was, read from its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentKind {
    Text,
    Image,
    File,
    Sticker,
}

impl SentMessage {
    /// Text, or the media the parameters name (`photoId`, `fileId`, `stickerId`). For an
    /// image `text` is its caption, for a file its name, for a sticker empty.
    pub fn kind(&self) -> SentKind {
        if self.params.get("photoId").is_some() {
            SentKind::Image
        } else if self.params.get("fileId").is_some() {
            SentKind::File
        } else if self.params.get("stickerId").is_some() {
            SentKind::Sticker
        } else {
            SentKind::Text
        }
    }
}

/// What an upload stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    File,
}

/// A finished upload: every chunk arrived and the sizes agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub kind: MediaKind,
    pub thread: Thread,
    /// The user (`toid`) or group (`grid`) the upload was for.
    pub to: String,
    /// The `photoId` or `fileId` handed out.
    pub id: String,
    pub file_name: String,
    pub bytes: Vec<u8>,
    /// How many chunk requests it took.
    pub chunks: u32,
    /// Where the simulator says it stored it (`normalUrl`, or the file_done URL).
    pub url: String,
    /// The decrypted parameters of the chunk that completed it.
    pub params: Value,
}

/// An upload whose chunks are still arriving.
#[derive(Debug, Default)]
struct PartialUpload {
    chunks: std::collections::BTreeMap<u64, Vec<u8>>,
}

/// Ways to spoil a frame, for the client's "skip and go on" path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Bytes that are not a frame at all.
    Garbage,
    /// A message frame encrypted under a key the connection was not given.
    WrongKey,
    /// A well-formed frame of a command nobody knows.
    UnknownCommand,
    /// The first three bytes of a message frame's four-byte header, nothing after.
    TruncatedHeader,
}

/// What a connection's task is told to do.
#[derive(Debug)]
enum Outbound {
    /// Pack `body` (`{"data": …}`) under the connection's key and send it.
    Event {
        header: Header,
        body: Value,
    },
    Raw(Vec<u8>),
    Corrupt(Corruption),
    /// Close with this code.
    Close(u16),
    /// Drop the TCP connection without a close frame (the client sees 1006).
    Drop,
}

#[derive(Debug)]
struct Connection {
    id: u64,
    outbound: mpsc::UnboundedSender<Outbound>,
}

/// A logged message: what a gap fill replays.
#[derive(Debug, Clone)]
struct Logged {
    group: bool,
    msg_id: u64,
    msg: Value,
}

#[derive(Debug)]
struct AccountState {
    profile: SimAccount,
    /// Session keys handed out by `getLoginInfo`, newest last.
    session_keys: Vec<SessionCipher>,
    log: Vec<Logged>,
    connections: Vec<Connection>,
    /// The most sockets open at once so far.
    max_connections: usize,
    sent: Vec<SentMessage>,
    /// Push each sent message back on the account's sockets as its own (uidFrom "0") and
    /// answer the send this long after the echo (None: no echo).
    echo_sends: Option<Duration>,
    pings: u32,
    keep_alives: u32,
    ws_connects: u32,
    gap_requests: Vec<Value>,
    refuse_sockets: bool,
    next_errors: VecDeque<i64>,
    drop_every: Option<Duration>,
    uploads: Vec<Upload>,
    /// By kind, client id and file name.
    partial_uploads: HashMap<String, PartialUpload>,
    /// Successful cookie logins, oldest first.
    logins: Vec<Login>,
    /// When each websocket handshake of the account arrived (Unix ms), refused ones too.
    ws_attempts: Vec<i64>,
}

/// A cookie login `getLoginInfo` accepted: what the client presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub imei: String,
    pub user_agent: String,
    /// Unix ms, the simulator's clock.
    pub at_ms: i64,
}

/// A browser's cookie grant: the account it logs in and the user agent it is bound to.
#[derive(Debug, Clone)]
struct Grant {
    uid: String,
    user_agent: String,
    expired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum QrStatus {
    Waiting,
    Scanned(String),
    Confirmed(String),
    Declined,
}

#[derive(Debug, Clone)]
struct Qr {
    status: QrStatus,
    /// The `zlogin_session` cookie of the browser that generated it.
    login_session: String,
}

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<String, AccountState>,
    /// `zpw_sek` cookie value → grant.
    grants: HashMap<String, Grant>,
    /// QR code → its progress.
    qrs: HashMap<String, Qr>,
    last_qr: Option<String>,
    next_msg_id: u64,
    next_connection: u64,
    /// None: the simulator's own URLs.
    advertised: Option<AdvertisedHosts>,
    /// `chunk_size_file` handed out; None: [`DEFAULT_UPLOAD_CHUNK_SIZE`].
    upload_chunk_size: Option<usize>,
    /// Cookies handed out (by `issue_credentials` or a QR login's `checksession`), with the
    /// account they log in, oldest first.
    grant_log: Vec<(String, Vec<Cookie>)>,
    /// Users who are not accounts of the simulator (customers), by uid: what profile
    /// lookups answer for them.
    users: HashMap<String, SimAccount>,
}

/// The upload chunk size the simulator hands out unless told otherwise.
pub const DEFAULT_UPLOAD_CHUNK_SIZE: usize = 2 * 1024 * 1024;

/// A running simulator; clones share it. Stops when the `stop` future given to
/// [`Simulator::start`] resolves.
#[derive(Debug, Clone)]
pub struct Simulator {
    config: Arc<SimConfig>,
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    /// "http" or "https".
    scheme: &'static str,
}

/// A user's display name for injected messages; an empty name leaves `dName` out of the
/// message, as for a sender the client must look up.
#[derive(Debug, Clone)]
pub struct Sender {
    pub uid: String,
    pub display_name: String,
}

impl Sender {
    pub fn new(uid: &str, display_name: &str) -> Self {
        Self {
            uid: uid.into(),
            display_name: display_name.into(),
        }
    }
}

impl Simulator {
    /// Serves plain http and ws on `listen` (use `127.0.0.1:0`) until `stop` resolves.
    pub async fn start(
        config: SimConfig,
        listen: SocketAddr,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let sim = Self::new(config, listener.local_addr()?, "http");
        let app = http::router(sim.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::warn!(%error, "simulator server ended");
            }
        });
        Ok(sim)
    }

    /// Serves https and wss on `listen` with the PEM certificate chain and private key given
    /// (issued for `localhost`), until `stop` resolves: the client's TLS path is tested
    /// against it.
    pub async fn start_tls(
        config: SimConfig,
        listen: SocketAddr,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
        cert_chain_pem: &[u8],
        private_key_pem: &[u8],
    ) -> std::io::Result<Self> {
        let acceptor = tls::acceptor(cert_chain_pem, private_key_pem)?;
        let tcp = tokio::net::TcpListener::bind(listen).await?;
        let sim = Self::new(config, tcp.local_addr()?, "https");
        let app = http::router(sim.clone());
        let listener = tls::TlsListener { tcp, acceptor };
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::warn!(%error, "simulator server ended");
            }
        });
        Ok(sim)
    }

    fn new(config: SimConfig, addr: SocketAddr, scheme: &'static str) -> Self {
        Self {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State {
                next_msg_id: 7_000_000_000,
                ..State::default()
            })),
            addr,
            scheme,
        }
    }

    /// `http://127.0.0.1:port`, or `https://localhost:port` when serving TLS (the name the
    /// test certificate is issued for): every host of the protocol.
    pub fn base_url(&self) -> String {
        if self.scheme == "https" {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// The websocket URL `getLoginInfo` hands out.
    pub fn ws_url(&self) -> String {
        if self.scheme == "https" {
            format!("wss://localhost:{}/ws", self.addr.port())
        } else {
            format!("ws://{}/ws", self.addr)
        }
    }

    /// Makes `getLoginInfo` hand out `hosts` (None: the simulator's own URLs, the default).
    pub fn advertise_hosts(&self, hosts: Option<AdvertisedHosts>) {
        self.with(|state| state.advertised = hosts);
    }

    /// The `chunk_size_file` that `getServerInfo` hands out from now on (small sizes make
    /// clients upload in several chunks).
    pub fn set_upload_chunk_size(&self, bytes: usize) {
        self.with(|state| state.upload_chunk_size = Some(bytes.max(1)));
    }

    pub fn upload_chunk_size(&self) -> usize {
        self.with(|state| state.upload_chunk_size)
            .unwrap_or(DEFAULT_UPLOAD_CHUNK_SIZE)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&mut state)
    }

    fn with_account<T>(&self, uid: &str, f: impl FnOnce(&mut AccountState) -> T) -> Option<T> {
        self.with(|state| state.accounts.get_mut(uid).map(f))
    }

    /// Adds (or replaces the profile of) an account.
    pub fn add_account(&self, account: SimAccount) {
        self.with(|state| {
            let uid = account.uid.clone();
            match state.accounts.get_mut(&uid) {
                Some(existing) => existing.profile = account,
                None => {
                    state.accounts.insert(
                        uid,
                        AccountState {
                            profile: account,
                            session_keys: Vec::new(),
                            log: Vec::new(),
                            connections: Vec::new(),
                            max_connections: 0,
                            sent: Vec::new(),
                            echo_sends: None,
                            pings: 0,
                            keep_alives: 0,
                            ws_connects: 0,
                            gap_requests: Vec::new(),
                            refuse_sockets: false,
                            next_errors: VecDeque::new(),
                            drop_every: None,
                            uploads: Vec::new(),
                            partial_uploads: HashMap::new(),
                            logins: Vec::new(),
                            ws_attempts: Vec::new(),
                        },
                    );
                }
            }
        });
    }

    /// Credentials as a finished QR login in a browser with `user_agent` would leave them,
    /// without the QR steps.
    pub fn issue_credentials(&self, uid: &str, user_agent: &str) -> Credentials {
        let cookies = self.grant(uid, user_agent);
        Credentials {
            imei: crypto::imei(&uuid::Uuid::new_v4().to_string(), user_agent),
            cookies,
            user_agent: user_agent.into(),
            language: "vi".into(),
        }
    }

    fn grant(&self, uid: &str, user_agent: &str) -> Vec<Cookie> {
        let sek = random_token();
        let cookies = vec![
            Cookie {
                name: "zpsid".into(),
                value: random_token(),
                domain: ".zalo.me".into(),
            },
            Cookie {
                name: "zpw_sek".into(),
                value: sek.clone(),
                domain: ".chat.zalo.me".into(),
            },
        ];
        self.with(|state| {
            state.grants.insert(
                sek,
                Grant {
                    uid: uid.into(),
                    user_agent: user_agent.into(),
                    expired: false,
                },
            );
            state.grant_log.push((uid.into(), cookies.clone()));
        });
        cookies
    }

    /// Every set of cookies handed out for account `uid` (by [`Simulator::issue_credentials`]
    /// or a confirmed QR login), oldest first: what a client was actually given.
    pub fn granted_cookies(&self, uid: &str) -> Vec<Vec<Cookie>> {
        self.with(|state| {
            state
                .grant_log
                .iter()
                .filter(|(owner, _)| owner == uid)
                .map(|(_, cookies)| cookies.clone())
                .collect()
        })
    }

    /// Adds (or replaces) a user who is not an account of the simulator, such as a
    /// customer: profile lookups (`getprofiles`) answer with this name and avatar. Users
    /// neither added nor accounts are not found.
    pub fn add_user(&self, user: SimAccount) {
        self.with(|state| {
            state.users.insert(user.uid.clone(), user);
        });
    }

    /// The profile a lookup of `uid` answers with: an account's, else an added user's.
    pub(crate) fn profile(&self, uid: &str) -> Option<SimAccount> {
        self.with(|state| {
            state
                .accounts
                .get(uid)
                .map(|account| account.profile.clone())
                .or_else(|| state.users.get(uid).cloned())
        })
    }

    // ---- QR ----

    /// The code of the QR generated last.
    pub fn last_qr_code(&self) -> Option<String> {
        self.with(|state| state.last_qr.clone())
    }

    /// The phone of account `uid` scans `code`. False for an unknown code or account.
    pub fn scan_qr(&self, code: &str, uid: &str) -> bool {
        self.with(|state| {
            if !state.accounts.contains_key(uid) {
                return false;
            }
            match state.qrs.get_mut(code) {
                Some(qr) if qr.status == QrStatus::Waiting => {
                    qr.status = QrStatus::Scanned(uid.into());
                    true
                }
                _ => false,
            }
        })
    }

    /// The user confirms the scanned login on the phone.
    pub fn confirm_qr(&self, code: &str) -> bool {
        self.with(|state| match state.qrs.get_mut(code) {
            Some(qr) => match &qr.status {
                QrStatus::Scanned(uid) => {
                    qr.status = QrStatus::Confirmed(uid.clone());
                    true
                }
                _ => false,
            },
            None => false,
        })
    }

    /// The user declines the scanned login on the phone.
    pub fn decline_qr(&self, code: &str) -> bool {
        self.with(|state| match state.qrs.get_mut(code) {
            Some(qr) if matches!(qr.status, QrStatus::Scanned(_)) => {
                qr.status = QrStatus::Declined;
                true
            }
            _ => false,
        })
    }

    // ---- inbound traffic ----

    fn next_msg_id(&self) -> u64 {
        self.with(|state| {
            state.next_msg_id += 1;
            state.next_msg_id
        })
    }

    /// Logs a message for gap fills and pushes it to the account's live sockets.
    fn deliver_message(&self, account: &str, group: bool, msg: Value) -> Option<String> {
        let msg_id = msg["msgId"].as_str()?.parse::<u64>().ok()?;
        let (cmd, list) = if group {
            (521, "groupMsgs")
        } else {
            (501, "msgs")
        };
        let header = Header::new(1, cmd, 0);
        let body = json!({ "data": { list: [msg.clone()] } });
        self.with_account(account, |state| {
            state.log.push(Logged { group, msg_id, msg });
            broadcast(state, || Outbound::Event {
                header,
                body: body.clone(),
            });
        })?;
        Some(msg_id.to_string())
    }

    /// A customer writes to the account; returns the msgId (None: unknown account).
    pub fn inject_dm(&self, account: &str, from: &Sender, text: &str) -> Option<String> {
        let msg = self.message(
            &from.uid,
            account,
            &from.display_name,
            json!(text),
            "webchat",
        );
        self.deliver_message(account, false, msg)
    }

    /// The owner types to `to_uid` on the phone: the web session sees it with uidFrom "0".
    pub fn inject_self_dm(&self, account: &str, to_uid: &str, text: &str) -> Option<String> {
        let name = self.with_account(account, |state| state.profile.display_name.clone())?;
        let msg = self.message("0", to_uid, &name, json!(text), "webchat");
        self.deliver_message(account, false, msg)
    }

    /// Someone writes in a group the account is in.
    pub fn inject_group_message(
        &self,
        account: &str,
        group_id: &str,
        from: &Sender,
        text: &str,
    ) -> Option<String> {
        let msg = self.message(
            &from.uid,
            group_id,
            &from.display_name,
            json!(text),
            "webchat",
        );
        self.deliver_message(account, true, msg)
    }

    /// `from` recalls their message `msg_id` (a direct message).
    pub fn inject_recall(&self, account: &str, from: &Sender, msg_id: &str) -> Option<String> {
        let content = json!({
            "globalMsgId": msg_id,
            "cliMsgId": msg_id,
            "deleteMsg": 1,
            "srcId": from.uid,
            "destId": account,
        });
        let msg = self.message(&from.uid, account, &from.display_name, content, "chat.undo");
        self.deliver_message(account, false, msg)
    }

    /// `from` reacts with `icon` to the direct message `msg_id`.
    pub fn inject_reaction(
        &self,
        account: &str,
        from: &Sender,
        msg_id: &str,
        icon: &str,
    ) -> Option<String> {
        let id = self.next_msg_id().to_string();
        let content = json!({
            "rMsg": [{"gMsgID": msg_id, "cMsgID": msg_id, "msgType": 1}],
            "rIcon": icon,
            "rType": 3,
            "source": 6,
        });
        let react = json!({
            "actionId": id,
            "msgId": id,
            "cliMsgId": id,
            "msgType": "chat.reaction",
            "uidFrom": from.uid,
            "idTo": account,
            "dName": from.display_name,
            "content": content.to_string(),
            "ts": now_ms().to_string(),
            "ttl": 0,
        });
        let body = json!({ "data": { "reacts": [react], "reactGroups": [] } });
        self.push(account, Header::new(1, 612, 0), body)?;
        Some(id)
    }

    /// `from` saw the account's direct message `msg_id`.
    pub fn inject_seen(&self, account: &str, from: &str, msg_id: &str) -> Option<()> {
        let body = json!({ "data": { "delivereds": [], "seens": [
            {"idTo": from, "msgId": msg_id, "realMsgId": msg_id}
        ]}});
        self.push(account, Header::new(1, 502, 0), body)
    }

    /// The account's direct message `msg_id` reached `to`'s device.
    pub fn inject_delivered(&self, account: &str, to: &str, msg_id: &str) -> Option<()> {
        let body = json!({ "data": { "seens": [], "delivereds": [
            {"msgId": msg_id, "seen": 0, "deliverUIDs": [to], "seenUIDs": [],
             "realMsgId": msg_id, "mSTs": now_ms()}
        ]}});
        self.push(account, Header::new(1, 502, 0), body)
    }

    /// Pushes an event frame to the account's live sockets (not logged).
    fn push(&self, account: &str, header: Header, body: Value) -> Option<()> {
        self.with_account(account, |state| {
            broadcast(state, || Outbound::Event {
                header,
                body: body.clone(),
            });
        })
    }

    fn message(&self, from: &str, to: &str, name: &str, content: Value, msg_type: &str) -> Value {
        let id = self.next_msg_id().to_string();
        let mut msg = json!({
            "actionId": id,
            "msgId": id,
            "cliMsgId": id,
            "msgType": msg_type,
            "uidFrom": from,
            "idTo": to,
            "dName": name,
            "ts": now_ms().to_string(),
            "status": 1,
            "content": content,
            "notify": "1",
            "ttl": 0,
            "userId": "0",
            "uin": "0",
        });
        // Without a name the message carries no dName (the client must look the sender up).
        if name.is_empty()
            && let Some(fields) = msg.as_object_mut()
        {
            fields.remove("dName");
        }
        msg
    }

    // ---- what the client did ----

    pub fn sent(&self, account: &str) -> Vec<SentMessage> {
        self.with_account(account, |state| state.sent.clone())
            .unwrap_or_default()
    }

    /// The account's finished uploads, oldest first.
    pub fn uploads(&self, account: &str) -> Vec<Upload> {
        self.with_account(account, |state| state.uploads.clone())
            .unwrap_or_default()
    }

    /// Pings received on the account's sockets.
    pub fn pings(&self, account: &str) -> u32 {
        self.with_account(account, |state| state.pings)
            .unwrap_or_default()
    }

    /// Keep-alive calls received.
    pub fn keep_alives(&self, account: &str) -> u32 {
        self.with_account(account, |state| state.keep_alives)
            .unwrap_or_default()
    }

    /// Sockets open now.
    pub fn connections(&self, account: &str) -> usize {
        self.with_account(account, |state| state.connections.len())
            .unwrap_or_default()
    }

    /// The most sockets the account had open at the same time so far.
    pub fn max_connections(&self, account: &str) -> usize {
        self.with_account(account, |state| state.max_connections)
            .unwrap_or_default()
    }

    /// The cookie logins `getLoginInfo` accepted for the account, oldest first.
    pub fn logins(&self, account: &str) -> Vec<Login> {
        self.with_account(account, |state| state.logins.clone())
            .unwrap_or_default()
    }

    /// When each websocket handshake of the account arrived (Unix ms, the simulator's
    /// clock), accepted or refused: the reconnect policy's rhythm.
    pub fn ws_attempts(&self, account: &str) -> Vec<i64> {
        self.with_account(account, |state| state.ws_attempts.clone())
            .unwrap_or_default()
    }

    /// Websocket handshakes accepted so far.
    pub fn ws_connects(&self, account: &str) -> u32 {
        self.with_account(account, |state| state.ws_connects)
            .unwrap_or_default()
    }

    /// The gap-fill requests (510/511 payloads) received.
    pub fn gap_requests(&self, account: &str) -> Vec<Value> {
        self.with_account(account, |state| state.gap_requests.clone())
            .unwrap_or_default()
    }

    // ---- faults ----

    /// The next API calls of the account answer these error codes, in order (e.g. -69, 221).
    pub fn fail_next(&self, account: &str, codes: &[i64]) {
        self.with_account(account, |state| state.next_errors.extend(codes));
    }

    /// Forgets every session key of the account: API calls answer 102 until it logs in again.
    pub fn expire_session_keys(&self, account: &str) {
        self.with_account(account, |state| state.session_keys.clear());
    }

    /// The account's cookies stop working: logins answer 102, sockets are refused (401).
    pub fn expire_cookies(&self, account: &str) {
        self.with(|state| {
            for grant in state.grants.values_mut() {
                if grant.uid == account {
                    grant.expired = true;
                }
            }
            if let Some(state) = state.accounts.get_mut(account) {
                state.session_keys.clear();
            }
        });
    }

    /// Drops every socket of the account now, without a close frame (the client sees 1006).
    pub fn drop_connections(&self, account: &str) {
        self.with_account(account, |state| broadcast(state, || Outbound::Drop));
    }

    /// Drops each socket of the account `every` after it opened (None: never), as Zalo's
    /// servers do about once a minute.
    pub fn drop_every(&self, account: &str, every: Option<Duration>) {
        self.with_account(account, |state| state.drop_every = every);
    }

    /// Echoes every message the account sends on its sockets, as Zalo shows a message sent
    /// from one session to the account's others: a self message (uidFrom "0") with the
    /// send's `cliMsgId`, logged for gap fills, pushed `delay` before the send is answered
    /// (so the echo arrives before the client knows the msgId). None: no echo.
    pub fn echo_sends(&self, account: &str, delay: Option<Duration>) {
        self.with_account(account, |state| state.echo_sends = delay);
    }

    /// Records a send of `uid` and, when asked, echoes it on the account's sockets; returns
    /// the new msgId and how long to wait before answering.
    pub(crate) fn record_sent(&self, uid: &str, mut sent: SentMessage) -> (String, Duration) {
        let msg_id = self.next_msg_id().to_string();
        sent.msg_id = msg_id.clone();
        sent.received_at_ms = now_ms();
        let echo = self
            .with_account(uid, |state| {
                state.sent.push(sent.clone());
                state
                    .echo_sends
                    .map(|delay| (delay, state.profile.display_name.clone()))
            })
            .flatten();
        let Some((delay, name)) = echo else {
            return (msg_id, Duration::ZERO);
        };
        let content = match sent.kind() {
            SentKind::Text => json!(sent.text),
            // Media echoes carry an attachment object; its fields do not matter here.
            _ => json!({"title": sent.text, "href": "", "params": ""}),
        };
        let msg_type = match sent.kind() {
            SentKind::Text => "webchat",
            SentKind::Image => "chat.photo",
            SentKind::File => "share.file",
            SentKind::Sticker => "chat.sticker",
        };
        let echo = json!({
            "actionId": msg_id,
            "msgId": msg_id,
            "cliMsgId": sent.client_id,
            "msgType": msg_type,
            "uidFrom": "0",
            "idTo": sent.to,
            "dName": name,
            "ts": now_ms().to_string(),
            "status": 1,
            "content": content,
            "notify": "1",
            "ttl": 0,
            "userId": "0",
            "uin": "0",
        });
        self.deliver_message(uid, sent.thread == Thread::Group, echo);
        (msg_id, delay)
    }

    /// Refuses (HTTP 503) new sockets of the account while true.
    pub fn refuse_sockets(&self, account: &str, refuse: bool) {
        self.with_account(account, |state| state.refuse_sockets = refuse);
    }

    /// Closes the account's sockets with `code` (3000: duplicate connection, 3003: kicked).
    pub fn close_sockets(&self, account: &str, code: u16) {
        self.with_account(account, |state| broadcast(state, || Outbound::Close(code)));
    }

    /// Sends the duplicate-session frame (cmd 3000), as when the account opens another tab.
    pub fn send_duplicate_session(&self, account: &str) {
        let frame = crate::frame::encode(Header::new(1, 3000, 0), b"{}");
        self.with_account(account, |state| {
            broadcast(state, || Outbound::Raw(frame.clone()))
        });
    }

    /// Sends a spoiled frame to the account's sockets.
    pub fn send_corrupted(&self, account: &str, corruption: Corruption) {
        self.with_account(account, |state| {
            broadcast(state, || Outbound::Corrupt(corruption))
        });
    }
}

fn broadcast(state: &mut AccountState, make: impl Fn() -> Outbound) {
    // A send fails only for a connection whose task already ended.
    state
        .connections
        .retain(|connection| connection.outbound.send(make()).is_ok());
}

/// Unguessable enough for a simulator: 32 hex digits from a v4 UUID.
fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A fresh AES key of 32 bytes.
fn random_key() -> Vec<u8> {
    let mut key = uuid::Uuid::new_v4().as_bytes().to_vec();
    key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    key
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
