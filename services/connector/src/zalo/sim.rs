//! A Zalo OA simulator: a real HTTP server with the OAuth v4 and message endpoints, shapes
//! and error codes of the Open API, able to push signed webhooks, with fault knobs. Used by
//! tests and by the `giao-zalo-oa-sim` binary.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{
    http::{HttpClient, HttpError},
    webhook::signature,
};

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub app_id: String,
    pub app_secret: String,
    pub oa_id: String,
    pub oa_secret_key: String,
    /// Access token lifetime; Zalo's is 25 h.
    pub access_ttl_secs: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            app_id: "sim-app".into(),
            app_secret: "sim-app-secret".into(),
            oa_id: "sim-oa".into(),
            oa_secret_key: "sim-oa-secret-key".into(),
            access_ttl_secs: 90_000,
        }
    }
}

/// A message the OA sent through the simulator.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub message_id: String,
    pub user_id: String,
    pub message: Value,
    /// When the simulator took it: tests read the pacing of sends from it.
    pub at: std::time::Instant,
}

#[derive(Debug, Default)]
struct Faults {
    /// Error codes the next sends answer with, in order.
    next_errors: VecDeque<i64>,
    /// Requests answer HTTP 500 this many times.
    fail_http: u32,
    delay: Duration,
    /// API requests allowed per window (0 = unlimited), as Zalo's -32.
    rate_per_minute: u32,
    /// The rate-limit window; Zalo's is a minute, tests shorten it.
    rate_window: Duration,
    /// Uploads answer -100 on use (the attachment expired) this many times.
    expire_uploads: u32,
    /// The token endpoint answers this late (a slow refresh overlaps others).
    token_delay: Duration,
    /// Error codes the next refresh grants answer with, in order; the refresh token stays
    /// valid (a rate limit or a system error says nothing about it).
    token_errors: VecDeque<i64>,
}

/// A file the OA uploaded for a later send.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    /// The `attachment_id` (images) or `token` (files) it was answered with.
    pub id: String,
    pub name: String,
    pub mime_type: String,
    pub data: Vec<u8>,
}

/// A user's profile as `/v3.0/oa/user/detail` answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimProfile {
    pub display_name: String,
    pub avatar: String,
    pub is_follower: bool,
}

#[derive(Debug, Default)]
struct SimState {
    /// code → (code_challenge, redirect_uri)
    codes: HashMap<String, (String, String)>,
    /// access token → expiry (unix seconds)
    access: HashMap<String, i64>,
    /// Valid (unused) refresh tokens.
    refresh: HashSet<String>,
    sent: Vec<SentMessage>,
    /// Start of the current rate-limit window and the requests counted in it.
    window: Option<(std::time::Instant, u32)>,
    faults: Faults,
    refreshes: u32,
    /// Refresh grants asked for, valid or not.
    refresh_attempts: u32,
    /// Requests to the send endpoint, answered or not.
    send_attempts: u32,
    uploads: Vec<Upload>,
    profiles: HashMap<String, SimProfile>,
    profile_requests: u32,
    /// Requests answered -32.
    rate_limited: u32,
}

impl SimState {
    /// Counts an API request against the window; `Err` is the -32 answer. Returns the
    /// (limit, remain) for the headers.
    fn admit(&mut self) -> Result<(u32, u32), (i64, &'static str)> {
        let now = std::time::Instant::now();
        let window = if self.faults.rate_window.is_zero() {
            Duration::from_secs(60)
        } else {
            self.faults.rate_window
        };
        let (start, used) = self.window.get_or_insert((now, 0));
        if now.duration_since(*start) >= window {
            *start = now;
            *used = 0;
        }
        let limit = self.faults.rate_per_minute;
        if limit == 0 {
            *used += 1;
            return Ok((4000, 4000u32.saturating_sub(*used)));
        }
        if *used >= limit {
            self.rate_limited += 1;
            return Err((-32, "rate limit exceeded"));
        }
        *used += 1;
        Ok((limit, limit - *used))
    }

    fn check_token(&self, token: &str, now: i64) -> Result<(), (i64, &'static str)> {
        match self.access.get(token) {
            None => Err((-216, "access token is invalid")),
            Some(expiry) if *expiry <= now => Err((-220, "access token has expired")),
            Some(_) => Ok(()),
        }
    }
}

fn rate_headers(limit: u32, remain: u32) -> [(&'static str, String); 2] {
    [
        ("X-RateLimit-Limit", limit.to_string()),
        ("X-RateLimit-Remain", remain.to_string()),
    ]
}

#[derive(Debug, Clone)]
pub struct OaSimulator {
    config: SimConfig,
    state: Arc<Mutex<SimState>>,
    addr: SocketAddr,
    scheme: &'static str,
    http: HttpClient,
}

fn token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

fn zalo_error(code: i64, message: &str) -> Response {
    // Zalo answers errors with HTTP 200 and a negative `error`.
    Json(json!({"error": code, "message": message})).into_response()
}

/// Accepts TLS connections, as Zalo's https hosts do.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            // Headers and body leave as separate TLS records: without this, Nagle and the
            // peer's delayed ACK hold the second one back for tens of milliseconds.
            let _ = stream.set_nodelay(true);
            // A client that does not trust the certificate fails its handshake: next.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl OaSimulator {
    /// Serves plain HTTP on `listen` until `stop`.
    pub async fn start(
        config: SimConfig,
        listen: SocketAddr,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let sim = Self::new(config, addr, "http");
        let app = sim.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(sim)
    }

    /// Serves https on `listen` with the PEM certificate chain and private key given, until
    /// `stop`: the adapter's TLS path is tested against it.
    pub async fn start_tls(
        config: SimConfig,
        listen: SocketAddr,
        stop: CancellationToken,
        cert_chain_pem: &[u8],
        private_key_pem: &[u8],
    ) -> std::io::Result<Self> {
        use tokio_rustls::rustls::{
            ServerConfig,
            pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        };
        let invalid = |error: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, error);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|error| invalid(error.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(private_key_pem)
            .map_err(|error| invalid(error.to_string()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid(error.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| invalid(error.to_string()))?;
        let tcp = tokio::net::TcpListener::bind(listen).await?;
        let addr = tcp.local_addr()?;
        let sim = Self::new(config, addr, "https");
        let app = sim.router();
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(sim)
    }

    fn new(config: SimConfig, addr: SocketAddr, scheme: &'static str) -> Self {
        Self {
            config,
            state: Arc::default(),
            addr,
            scheme,
            http: HttpClient::new(Duration::from_secs(10)),
        }
    }

    fn router(&self) -> Router {
        let sim = self.clone();
        Router::new()
            .route("/v4/oa/permission", get(authorize))
            .route("/v4/oa/access_token", post(access_token))
            .route("/v3.0/oa/message/{kind}", post(send))
            .route("/v2.0/oa/upload/{kind}", post(upload))
            .route("/v3.0/oa/user/detail", get(user_detail))
            // Control endpoints for the binary: faults, webhook pushes, what was sent.
            .route("/sim/faults", post(set_faults))
            .route("/sim/push", post(push_webhook))
            .route("/sim/sent", get(list_sent))
            .with_state(sim)
    }

    /// `http://127.0.0.1:port`, or `https://localhost:port` when serving TLS (the name the
    /// test certificate is issued for).
    pub fn base_url(&self) -> String {
        if self.scheme == "https" {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn with<T>(&self, f: impl FnOnce(&mut SimState) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&mut state)
    }

    pub fn sent(&self) -> Vec<SentMessage> {
        self.with(|state| state.sent.clone())
    }

    /// How many refresh grants succeeded.
    pub fn refreshes(&self) -> u32 {
        self.with(|state| state.refreshes)
    }

    /// Refresh grants asked for, including refused ones (a spent refresh token presented
    /// again counts here, not in [`Self::refreshes`]).
    pub fn refresh_attempts(&self) -> u32 {
        self.with(|state| state.refresh_attempts)
    }

    /// Requests that reached the send endpoint, whatever it answered.
    pub fn send_attempts(&self) -> u32 {
        self.with(|state| state.send_attempts)
    }

    /// The token endpoint answers `delay` late.
    pub fn set_token_delay(&self, delay: Duration) {
        self.with(|state| state.faults.token_delay = delay);
    }

    /// The next refresh grants fail with these Zalo error codes, the token left unspent.
    pub fn fail_next_refreshes(&self, codes: &[i64]) {
        self.with(|state| state.faults.token_errors.extend(codes));
    }

    /// The next sends fail with these Zalo error codes.
    pub fn fail_next(&self, codes: &[i64]) {
        self.with(|state| state.faults.next_errors.extend(codes));
    }

    pub fn fail_http(&self, times: u32) {
        self.with(|state| state.faults.fail_http = times);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.with(|state| state.faults.delay = delay);
    }

    pub fn set_rate_limit(&self, per_minute: u32) {
        self.with(|state| state.faults.rate_per_minute = per_minute);
    }

    /// Requests allowed per `window` (Zalo: per minute); 0 lifts the limit.
    pub fn set_rate_window(&self, requests: u32, window: Duration) {
        self.with(|state| {
            state.faults.rate_per_minute = requests;
            state.faults.rate_window = window;
            state.window = None;
        });
    }

    /// Requests that were answered -32.
    pub fn rate_limited(&self) -> u32 {
        self.with(|state| state.rate_limited)
    }

    /// The next `times` sends that use an upload answer -100 (expired attachment).
    pub fn expire_uploads(&self, times: u32) {
        self.with(|state| state.faults.expire_uploads = times);
    }

    pub fn uploads(&self) -> Vec<Upload> {
        self.with(|state| state.uploads.clone())
    }

    /// What `/v3.0/oa/user/detail` answers for `user_id`; unknown users answer -201.
    pub fn set_profile(&self, user_id: &str, profile: SimProfile) {
        self.with(|state| state.profiles.insert(user_id.to_string(), profile));
    }

    /// How many profile requests were answered (cached profiles are not asked again).
    pub fn profile_requests(&self) -> u32 {
        self.with(|state| state.profile_requests)
    }

    /// Every refresh token is revoked (as when the OA's admin withdraws the app's
    /// permission): refreshes are refused until the OA is connected again.
    pub fn revoke_refresh_tokens(&self) {
        self.with(|state| state.refresh.clear());
    }

    /// Every access token expires now (sends answer -220 until refreshed).
    pub fn expire_access_tokens(&self) {
        self.with(|state| state.access.values_mut().for_each(|at| *at = 0));
    }

    /// Issues tokens without the browser step (for accounts created with credentials).
    pub fn issue_tokens(&self) -> (String, String) {
        let (access, refresh) = (token(), token());
        let expires = Utc::now().timestamp() + self.config.access_ttl_secs;
        self.with(|state| {
            state.access.insert(access.clone(), expires);
            state.refresh.insert(refresh.clone());
        });
        (access, refresh)
    }

    /// Pushes a webhook event, signed as Zalo signs it; returns the HTTP status.
    pub async fn push(&self, url: &str, event: &Value, num_retry: u32) -> Result<u16, HttpError> {
        let body = event.to_string();
        let timestamp = match &event["timestamp"] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let mac = signature(
            &self.config.app_id,
            body.as_bytes(),
            &timestamp,
            &self.config.oa_secret_key,
        );
        let retry = num_retry.to_string();
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-zevent-signature", mac.as_str()),
            ("x-zevent-timestamp", timestamp.as_str()),
        ];
        if num_retry > 0 {
            headers.push(("num_retry", retry.as_str()));
        }
        let response = self
            .http
            .request(http::Method::POST, url, &headers, body.into_bytes())
            .await?;
        Ok(response.status)
    }

    /// A follow or unfollow event as Zalo shapes it; `source` is where the follow came from
    /// (e.g. "oa_qr", or an ad's id).
    pub fn follow_event(&self, following: bool, user_id: &str, source: &str) -> Value {
        json!({
            "app_id": self.config.app_id,
            "oa_id": self.config.oa_id,
            "follower": {"id": user_id},
            "user_id_by_app": format!("uba-{user_id}"),
            "event_name": if following { "follow" } else { "unfollow" },
            "source": source,
            "timestamp": Utc::now().timestamp_millis().to_string(),
        })
    }

    /// A customer event as Zalo shapes it.
    pub fn user_event(&self, event_name: &str, user_id: &str, message: Value) -> Value {
        json!({
            "app_id": self.config.app_id,
            "sender": {"id": user_id},
            "user_id_by_app": format!("uba-{user_id}"),
            "recipient": {"id": self.config.oa_id},
            "event_name": event_name,
            "message": message,
            "timestamp": Utc::now().timestamp_millis().to_string(),
        })
    }
}

#[derive(Debug)]
struct AuthorizeQuery {
    app_id: String,
    redirect_uri: String,
    state: String,
    code_challenge: String,
}

/// The admin "approves" at once: redirect back with a single-use code.
async fn authorize(State(sim): State<OaSimulator>, uri: Uri) -> Response {
    let pairs: HashMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let field = |name: &str| pairs.get(name).cloned().unwrap_or_default();
    let query = AuthorizeQuery {
        app_id: field("app_id"),
        redirect_uri: field("redirect_uri"),
        state: field("state"),
        code_challenge: field("code_challenge"),
    };
    if query.app_id != sim.config.app_id {
        return (StatusCode::BAD_REQUEST, "unknown app_id").into_response();
    }
    let code = token();
    sim.with(|state| {
        state.codes.insert(
            code.clone(),
            (query.code_challenge.clone(), query.redirect_uri.clone()),
        )
    });
    let separator = if query.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!(
        "{}{separator}code={code}&oa_id={}&state={}",
        query.redirect_uri,
        sim.config.oa_id,
        form_urlencoded::byte_serialize(query.state.as_bytes()).collect::<String>()
    );
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

async fn access_token(State(sim): State<OaSimulator>, headers: HeaderMap, body: Bytes) -> Response {
    let delay = sim.with(|state| state.faults.token_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    if headers.get("secret_key").and_then(|v| v.to_str().ok()) != Some(&sim.config.app_secret)
        || field("app_id") != sim.config.app_id
    {
        return zalo_error(-14003, "invalid app secret");
    }
    let ok = match field("grant_type").as_str() {
        "authorization_code" => {
            let verifier = field("code_verifier");
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            // Single use: the code is gone whether or not the verifier matches.
            match sim.with(|state| state.codes.remove(&field("code"))) {
                Some((expected, _)) if expected == challenge => true,
                Some(_) => return zalo_error(-14005, "code_verifier does not match"),
                None => return zalo_error(-14004, "invalid or used code"),
            }
        }
        "refresh_token" => {
            let answer = sim.with(|state| {
                state.refresh_attempts += 1;
                if let Some(code) = state.faults.token_errors.pop_front() {
                    return Err(code);
                }
                let valid = state.refresh.remove(&field("refresh_token"));
                if valid {
                    state.refreshes += 1;
                }
                Ok(valid)
            });
            match answer {
                Ok(valid) => valid,
                Err(code) => return zalo_error(code, "simulated error"),
            }
        }
        _ => return zalo_error(-14001, "unsupported grant_type"),
    };
    if !ok {
        return zalo_error(-14014, "invalid refresh token");
    }
    let (access, refresh) = sim.issue_tokens();
    Json(json!({
        "access_token": access,
        "refresh_token": refresh,
        // A string, as Zalo sends it.
        "expires_in": sim.config.access_ttl_secs.to_string(),
    }))
    .into_response()
}

async fn send(State(sim): State<OaSimulator>, headers: HeaderMap, body: Bytes) -> Response {
    let (delay, fail_http) = sim.with(|state| {
        state.send_attempts += 1;
        let fail = state.faults.fail_http > 0;
        if fail {
            state.faults.fail_http -= 1;
        }
        (state.faults.delay, fail)
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if fail_http {
        return (StatusCode::INTERNAL_SERVER_ERROR, "simulated failure").into_response();
    }
    let now = Utc::now().timestamp();
    let token = headers
        .get("access_token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return zalo_error(-201, "invalid parameter: body is not JSON");
    };
    let user_id = request["recipient"]["user_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let outcome = sim.with(|state| {
        state.check_token(&token, now)?;
        if user_id.is_empty() || request["message"].is_null() {
            return Err((-201, "invalid parameter"));
        }
        if let Some(code) = state.faults.next_errors.pop_front() {
            return Err((code, "simulated error"));
        }
        let (limit, remain) = state.admit()?;
        check_attachment(state, &request["message"])?;
        let message_id = format!("zm-{}", token_short());
        state.sent.push(SentMessage {
            message_id: message_id.clone(),
            user_id: user_id.clone(),
            message: request["message"].clone(),
            at: std::time::Instant::now(),
        });
        Ok((message_id, limit, remain))
    });
    match outcome {
        Ok((message_id, limit, remain)) => (
            rate_headers(limit, remain),
            Json(json!({
                "data": {"message_id": message_id, "user_id": user_id,
                         "quota": {"quota_type": "reply", "remain": "7", "total": "8"}},
                "error": 0,
                "message": "Success",
            })),
        )
            .into_response(),
        Err((code, message)) => zalo_error(code, message),
    }
}

/// An uploaded attachment a message refers to must exist (and may be expired by a fault).
fn check_attachment(state: &mut SimState, message: &Value) -> Result<(), (i64, &'static str)> {
    let attachment = &message["attachment"];
    let id = match attachment["type"].as_str() {
        Some("file") => attachment["payload"]["token"].as_str(),
        Some("template") => {
            let element = &attachment["payload"]["elements"][0];
            if element["url"].is_string() {
                return Ok(());
            }
            element["attachment_id"].as_str()
        }
        Some(_) => return Err((-201, "invalid parameter: attachment type")),
        None => return Ok(()),
    };
    let Some(id) = id else {
        return Err((-201, "invalid parameter: attachment"));
    };
    if !state.uploads.iter().any(|upload| upload.id == id) {
        return Err((-201, "invalid parameter: unknown attachment"));
    }
    if state.faults.expire_uploads > 0 {
        state.faults.expire_uploads -= 1;
        // Expired: it must be uploaded again.
        state.uploads.retain(|upload| upload.id != id);
        return Err((-100, "attachment expired"));
    }
    Ok(())
}

/// `POST /v2.0/oa/upload/{image|file}`: multipart with one `file` part. Images are JPG or
/// PNG up to 1 MB, files PDF, DOC or DOCX up to 5 MB.
async fn upload(
    State(sim): State<OaSimulator>,
    axum::extract::Path(kind): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Utc::now().timestamp();
    let token = headers
        .get("access_token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once("boundary="))
        .map(|(_, boundary)| boundary.trim_matches('"').to_string());
    let part = boundary.and_then(|boundary| file_part(&body, &boundary));
    let outcome = sim.with(|state| {
        state.check_token(&token, now)?;
        let (limit, remain) = state.admit()?;
        let Some((name, mime_type, data)) = part else {
            return Err((-201, "invalid parameter: missing file"));
        };
        let lower = name.to_lowercase();
        let (max, allowed, field) = match kind.as_str() {
            "image" => (
                1024 * 1024,
                (data.starts_with(&[0x89, b'P', b'N', b'G'])
                    || data.starts_with(&[0xFF, 0xD8, 0xFF])),
                "attachment_id",
            ),
            "file" => (
                5 * 1024 * 1024,
                [".pdf", ".doc", ".docx"]
                    .iter()
                    .any(|ext| lower.ends_with(ext)),
                "token",
            ),
            _ => return Err((-201, "invalid parameter: upload type")),
        };
        if !allowed {
            return Err((-201, "invalid parameter: file type not allowed"));
        }
        if data.len() > max {
            return Err((-201, "invalid parameter: file too large"));
        }
        let id = format!("up-{}", token_short());
        state.uploads.push(Upload {
            id: id.clone(),
            name,
            mime_type,
            data,
        });
        Ok((field, id, limit, remain))
    });
    match outcome {
        Ok((field, id, limit, remain)) => (
            rate_headers(limit, remain),
            Json(json!({"data": {field: id}, "error": 0, "message": "Success"})),
        )
            .into_response(),
        Err((code, message)) => zalo_error(code, message),
    }
}

/// The `file` part of a multipart body: (file name, content type, bytes).
fn file_part(body: &[u8], boundary: &str) -> Option<(String, String, Vec<u8>)> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut rest = body;
    loop {
        let start = find(rest, delimiter)? + delimiter.len();
        rest = &rest[start..];
        if rest.starts_with(b"--") {
            return None;
        }
        let rest_after_crlf = rest.strip_prefix(b"\r\n")?;
        let headers_end = find(rest_after_crlf, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest_after_crlf[..headers_end]).to_string();
        let content = &rest_after_crlf[headers_end + 4..];
        let end = find(content, delimiter)?;
        // The part ends with CRLF before the next delimiter.
        let data = content[..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&content[..end]);
        let mut name = None;
        let mut is_file = false;
        let mut mime_type = String::new();
        for line in head.split("\r\n") {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                is_file = lower.contains("name=\"file\"");
                name = line
                    .split_once("filename=\"")
                    .and_then(|(_, tail)| tail.split_once('"'))
                    .map(|(name, _)| name.to_string());
            } else if let Some(value) = lower.strip_prefix("content-type:") {
                mime_type = value.trim().to_string();
            }
        }
        if is_file {
            return Some((name.unwrap_or_default(), mime_type, data.to_vec()));
        }
        rest = content;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `GET /v3.0/oa/user/detail?data={"user_id":"…"}`.
async fn user_detail(State(sim): State<OaSimulator>, headers: HeaderMap, uri: Uri) -> Response {
    let now = Utc::now().timestamp();
    let token = headers
        .get("access_token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let data = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "data")
        .and_then(|(_, value)| serde_json::from_str::<Value>(&value).ok());
    let user_id = data
        .as_ref()
        .and_then(|data| data["user_id"].as_str())
        .unwrap_or_default()
        .to_string();
    let outcome = sim.with(|state| {
        state.check_token(&token, now)?;
        let (limit, remain) = state.admit()?;
        state.profile_requests += 1;
        match state.profiles.get(&user_id) {
            Some(profile) => Ok((profile.clone(), limit, remain)),
            None => Err((-201, "invalid parameter: user_id")),
        }
    });
    match outcome {
        Ok((profile, limit, remain)) => (
            rate_headers(limit, remain),
            Json(json!({
                "data": {
                    "user_id": user_id,
                    "user_id_by_app": format!("uba-{user_id}"),
                    "display_name": profile.display_name,
                    "avatar": profile.avatar,
                    "avatars": {"120": profile.avatar, "240": profile.avatar},
                    "user_is_follower": profile.is_follower,
                    "user_last_interaction_date": Utc::now().format("%d/%m/%Y").to_string(),
                    "shared_info": null,
                },
                "error": 0,
                "message": "Success",
            })),
        )
            .into_response(),
        Err((code, message)) => zalo_error(code, message),
    }
}

fn token_short() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// `POST /sim/faults` `{"next_errors":[-230],"fail_http":1,"delay_ms":0,"rate_per_minute":0,
/// "rate_window_ms":60000,"expire_uploads":0,"expire_tokens":false,"token_delay_ms":0,
/// "token_errors":[-32]}`; every field optional.
async fn set_faults(State(sim): State<OaSimulator>, body: Bytes) -> Response {
    let Ok(faults) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "body must be JSON").into_response();
    };
    if let Some(codes) = faults["next_errors"].as_array() {
        let codes: Vec<i64> = codes.iter().filter_map(Value::as_i64).collect();
        sim.fail_next(&codes);
    }
    if let Some(times) = faults["fail_http"].as_u64() {
        sim.fail_http(times.min(u64::from(u32::MAX)) as u32);
    }
    if let Some(delay) = faults["delay_ms"].as_u64() {
        sim.set_delay(Duration::from_millis(delay));
    }
    if let Some(rate) = faults["rate_per_minute"].as_u64() {
        let window = faults["rate_window_ms"].as_u64().unwrap_or(60_000);
        sim.set_rate_window(
            rate.min(u64::from(u32::MAX)) as u32,
            Duration::from_millis(window),
        );
    }
    if let Some(times) = faults["expire_uploads"].as_u64() {
        sim.expire_uploads(times.min(u64::from(u32::MAX)) as u32);
    }
    if let Some(codes) = faults["token_errors"].as_array() {
        let codes: Vec<i64> = codes.iter().filter_map(Value::as_i64).collect();
        sim.fail_next_refreshes(&codes);
    }
    if let Some(delay) = faults["token_delay_ms"].as_u64() {
        sim.set_token_delay(Duration::from_millis(delay));
    }
    if faults["expire_tokens"].as_bool() == Some(true) {
        sim.expire_access_tokens();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /sim/push` `{"url":"…","event":{…},"num_retry":0}`: signs and delivers a webhook.
async fn push_webhook(State(sim): State<OaSimulator>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "body must be JSON").into_response();
    };
    let Some(url) = request["url"].as_str() else {
        return (StatusCode::BAD_REQUEST, "missing url").into_response();
    };
    let retry = request["num_retry"].as_u64().unwrap_or(0).min(10) as u32;
    match sim.push(url, &request["event"], retry).await {
        Ok(status) => Json(json!({"status": status})).into_response(),
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

async fn list_sent(State(sim): State<OaSimulator>) -> Response {
    let sent: Vec<Value> = sim
        .sent()
        .into_iter()
        .map(|m| json!({"message_id": m.message_id, "user_id": m.user_id, "message": m.message}))
        .collect();
    Json(json!({"sent": sent})).into_response()
}
