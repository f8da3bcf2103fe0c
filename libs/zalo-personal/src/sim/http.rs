//! The simulator's HTTP routes: the QR login on the id host, `getLoginInfo`/`getServerInfo`,
//! `jr/userinfo`, and the API calls made with the session key.

use std::collections::{BTreeMap, HashMap};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{Qr, QrStatus, SentMessage, Simulator, Thread, now_ms, random_key, random_token};
use crate::crypto::{self, SessionCipher};

/// A 1×1 PNG: the QR image (nobody decodes it in tests).
const QR_PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

pub(super) fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/account", get(account_page))
        .route("/account/logininfo", post(qr_step))
        .route("/account/verify-client", post(qr_step))
        .route("/account/authen/qr/generate", post(qr_generate))
        .route("/account/authen/qr/waiting-scan", post(qr_waiting_scan))
        .route(
            "/account/authen/qr/waiting-confirm",
            post(qr_waiting_confirm),
        )
        .route("/account/checksession", get(check_session))
        .route("/jr/userinfo", get(user_info_jr))
        .route("/api/login/getLoginInfo", get(get_login_info))
        .route("/api/login/getServerInfo", get(get_server_info))
        .route("/api/message/sms", post(send_sms))
        .route("/api/group/sendmsg", post(send_group))
        .route("/api/social/friend/getprofiles/v2", post(get_profiles))
        .route("/keepalive", get(keep_alive))
        .merge(super::media::router())
        .route("/ws", get(super::ws::upgrade))
        .merge(super::control::router())
        .with_state(sim)
}

/// `{error_code, error_message}` with HTTP 200, as Zalo answers errors.
pub(super) fn error(code: i64, message: &str) -> Response {
    Json(json!({"error_code": code, "error_message": message, "data": null})).into_response()
}

fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect()
}

pub(super) fn header_text(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

pub(super) fn query(uri: &Uri) -> BTreeMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

impl Simulator {
    /// The account the request's cookies log in, if they are valid for its user agent.
    pub(super) fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let sek = cookies(headers).remove("zpw_sek")?;
        let user_agent = header_text(headers, header::USER_AGENT);
        self.with(|state| match state.grants.get(&sek) {
            // Cookies are bound to the user agent they were issued to.
            Some(grant) if !grant.expired && grant.user_agent == user_agent => {
                Some(grant.uid.clone())
            }
            _ => None,
        })
    }
}

// ---- QR login ----

async fn account_page(State(sim): State<Simulator>) -> Response {
    let html = format!(
        "<!doctype html><html><head><script src=\"https://stc-zlogin.zdn.vn/main-{}.js\"></script></head><body></body></html>",
        sim.config.login_version
    );
    let cookie = format!(
        "zlogin_session={}; Domain=id.zalo.me; Path=/; HttpOnly",
        random_token()
    );
    (
        [
            (header::SET_COOKIE, cookie),
            (header::CONTENT_TYPE, "text/html".into()),
        ],
        html,
    )
        .into_response()
}

/// The login session cookie and the form, checked: every QR step needs both.
fn qr_request(
    sim: &Simulator,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, HashMap<String, String>), Box<Response>> {
    let Some(session) = cookies(headers).remove("zlogin_session") else {
        return Err(Box::new(error(-1, "missing login session cookie")));
    };
    let form = form(body);
    if form.get("v") != Some(&sim.config.login_version) {
        return Err(Box::new(error(-2, "wrong login version")));
    }
    Ok((session, form))
}

async fn qr_step(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    match qr_request(&sim, &headers, &body) {
        Ok(_) => Json(json!({"error_code": 0, "error_message": "", "data": {}})).into_response(),
        Err(response) => *response,
    }
}

async fn qr_generate(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    let (session, _) = match qr_request(&sim, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let code = random_token();
    sim.with(|state| {
        state.qrs.insert(
            code.clone(),
            Qr {
                status: QrStatus::Waiting,
                login_session: session,
            },
        );
        state.last_qr = Some(code.clone());
    });
    Json(json!({
        "error_code": 0,
        "error_message": "",
        "data": {
            "code": code,
            "image": format!("data:image/png;base64,{QR_PNG_BASE64}"),
            "options": {"enabledCheckOCR": false, "enabledMultiLayer": false},
        },
    }))
    .into_response()
}

/// Waits up to the long-poll time for the QR `code` to leave the states `pending` accepts.
async fn wait_qr(
    sim: &Simulator,
    code: &str,
    pending: impl Fn(&QrStatus) -> bool,
) -> Option<QrStatus> {
    let deadline = tokio::time::Instant::now() + sim.config.long_poll;
    loop {
        let status = sim.with(|state| state.qrs.get(code).map(|qr| qr.status.clone()))?;
        if !pending(&status) || tokio::time::Instant::now() >= deadline {
            return Some(status);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn scanned_data(sim: &Simulator, uid: &str) -> Value {
    let profile = sim.with(|state| {
        state
            .accounts
            .get(uid)
            .map(|account| account.profile.clone())
    });
    let (name, avatar) = profile
        .map(|profile| (profile.display_name, profile.avatar))
        .unwrap_or_default();
    json!({"avatar": avatar, "display_name": name})
}

async fn qr_waiting_scan(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, form) = match qr_request(&sim, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let code = form.get("code").cloned().unwrap_or_default();
    match wait_qr(&sim, &code, |status| *status == QrStatus::Waiting).await {
        None => error(-3, "unknown QR code"),
        Some(QrStatus::Waiting) => error(8, "waiting for scan"),
        Some(QrStatus::Scanned(uid) | QrStatus::Confirmed(uid)) => Json(json!({
            "error_code": 0, "error_message": "", "data": scanned_data(&sim, &uid),
        }))
        .into_response(),
        Some(QrStatus::Declined) => error(-13, "declined"),
    }
}

async fn qr_waiting_confirm(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, form) = match qr_request(&sim, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if form.get("gAction").map(String::as_str) != Some("CONFIRM_QR") {
        return error(-4, "missing gAction");
    }
    let code = form.get("code").cloned().unwrap_or_default();
    let pending = |status: &QrStatus| matches!(status, QrStatus::Waiting | QrStatus::Scanned(_));
    match wait_qr(&sim, &code, pending).await {
        None => error(-3, "unknown QR code"),
        Some(QrStatus::Waiting | QrStatus::Scanned(_)) => error(8, "waiting for confirmation"),
        Some(QrStatus::Confirmed(_)) => {
            Json(json!({"error_code": 0, "error_message": "", "data": {}})).into_response()
        }
        Some(QrStatus::Declined) => error(-13, "the user declined the login"),
    }
}

/// Sets the account's cookies for the browser whose QR was confirmed, and redirects.
async fn check_session(State(sim): State<Simulator>, headers: HeaderMap) -> Response {
    let session = cookies(&headers)
        .remove("zlogin_session")
        .unwrap_or_default();
    let uid = sim.with(|state| {
        state.qrs.values().find_map(|qr| match &qr.status {
            QrStatus::Confirmed(uid) if qr.login_session == session => Some(uid.clone()),
            _ => None,
        })
    });
    let Some(uid) = uid else {
        return (
            StatusCode::FOUND,
            [(header::LOCATION, "https://id.zalo.me/account")],
        )
            .into_response();
    };
    let user_agent = header_text(&headers, header::USER_AGENT);
    let granted = sim.grant(&uid, &user_agent);
    let mut response = (
        StatusCode::FOUND,
        [(header::LOCATION, "https://chat.zalo.me/index.html")],
    )
        .into_response();
    for cookie in granted {
        let value = format!(
            "{}={}; Domain={}; Path=/; HttpOnly; Secure",
            cookie.name, cookie.value, cookie.domain
        );
        if let Ok(value) = value.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

async fn user_info_jr(State(sim): State<Simulator>, headers: HeaderMap) -> Response {
    let data = match sim.authenticate(&headers) {
        Some(uid) => {
            let profile = sim.with(|state| state.accounts.get(&uid).map(|a| a.profile.clone()));
            let (name, avatar) = profile
                .map(|profile| (profile.display_name, profile.avatar))
                .unwrap_or_default();
            json!({"logged": true, "info": {"uid": uid, "name": name, "avatar": avatar}})
        }
        None => json!({"logged": false}),
    };
    Json(json!({"error_code": 0, "error_message": "", "data": data})).into_response()
}

// ---- cookie login ----

/// Services of `zpw_service_map_v3` besides chat, group, file and profile.
const OTHER_SERVICES: &[&str] = &[
    "friend",
    "friend_board",
    "group_board",
    "group_poll",
    "conversation",
    "catalog",
    "zimsg",
    "sticker",
    "quick_message",
    "label",
    "auto_reply",
    "alias",
    "reaction",
    "aext",
];

async fn get_login_info(State(sim): State<Simulator>, headers: HeaderMap, uri: Uri) -> Response {
    let query = query(&uri);
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    let signed: BTreeMap<String, String> = [
        "zcid",
        "zcid_ext",
        "enc_ver",
        "params",
        "type",
        "client_version",
    ]
    .iter()
    .map(|name| (name.to_string(), field(name)))
    .collect();
    if crypto::sign_key("getlogininfo", &signed) != field("signkey") {
        return error(-1, "invalid signkey");
    }
    let Ok(key) = crypto::login_key(&field("zcid"), &field("zcid_ext")) else {
        return error(-1, "invalid zcid");
    };
    let params = crypto::decrypt_login_data(&key, &field("params"))
        .ok()
        .and_then(|plain| serde_json::from_str::<Value>(&plain).ok());
    let Some(params) = params.filter(|params| params["imei"].is_string()) else {
        return error(-1, "params do not decrypt");
    };
    let answer = |inner: Value| -> Response {
        match crypto::encrypt_login_params(&key, &inner.to_string()) {
            Ok(data) => {
                Json(json!({"error_code": 0, "error_message": "", "data": data})).into_response()
            }
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    };
    let Some(uid) = sim.authenticate(&headers) else {
        return answer(json!({
            "error_code": 102,
            "error_message": "The session key was improperly submitted or has reached its timeout. Direct the user to log in again to obtain another key",
            "data": null,
        }));
    };
    let Ok(cipher) = SessionCipher::from_key(random_key()) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let enk = cipher.enk_base64();
    let login = super::Login {
        imei: params["imei"].as_str().unwrap_or_default().to_string(),
        user_agent: header_text(&headers, header::USER_AGENT),
        at_ms: now_ms(),
    };
    sim.with_account(&uid, |state| {
        state.session_keys.push(cipher);
        state.logins.push(login);
    });
    let hosts = sim
        .with(|state| state.advertised.clone())
        .unwrap_or_else(|| {
            let base = sim.base_url();
            super::AdvertisedHosts {
                chat: base.clone(),
                group: base.clone(),
                file: base.clone(),
                profile: base.clone(),
                other: base,
                ws: sim.ws_url(),
            }
        });
    // The web client's map names every service; clients (zca-js) read the whole of it.
    let mut service_map = serde_json::Map::new();
    for name in OTHER_SERVICES {
        service_map.insert(name.to_string(), json!([hosts.other]));
    }
    service_map.insert("chat".into(), json!([hosts.chat]));
    service_map.insert("group".into(), json!([hosts.group]));
    service_map.insert("file".into(), json!([hosts.file]));
    service_map.insert("profile".into(), json!([hosts.profile]));
    answer(json!({
        "error_code": 0,
        "error_message": "",
        "data": {
            "uid": uid,
            "zpw_enk": enk,
            "zpw_service_map_v3": service_map,
            "zpw_ws": [hosts.ws],
            "language": params["language"],
            "send2me_id": "0",
            "haspcclient": 0,
        },
    }))
}

async fn get_server_info(State(sim): State<Simulator>, uri: Uri) -> Response {
    let query = query(&uri);
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    let signed: BTreeMap<String, String> = ["imei", "type", "client_version", "computer_name"]
        .iter()
        .map(|name| (name.to_string(), field(name)))
        .collect();
    if crypto::sign_key("getserverinfo", &signed) != field("signkey") {
        return error(-1, "invalid signkey");
    }
    let config = &sim.config;
    let delays: Vec<u64> = config
        .retry_delays
        .iter()
        .map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
        .collect();
    let ping = u64::try_from(config.ping_interval.as_millis()).unwrap_or(u64::MAX);
    Json(json!({
        "error_code": 0,
        "error_message": "",
        "data": {
            // Misspelt as Zalo spells it.
            "setttings": {"features": {
                "socket": {
                    "ping_interval": ping,
                    "close_and_retry_codes": config.close_and_retry_codes,
                    "retries": {"1006": {"max": config.retry_max, "times": delays}},
                    "rotate_error_codes": [],
                },
                // Upload limits (the simulator's values; the chunk size is a knob).
                "sharefile": {
                    "max_file": 10,
                    "max_size_share_file_v3": 1024,
                    "chunk_size_file": sim.upload_chunk_size(),
                    "restricted_ext_file": ["exe", "bat", "cmd", "msi"],
                    "big_file_domain_list": [],
                },
            }},
            "extra_ver": {"phonebook": 0},
        },
    }))
    .into_response()
}

// ---- calls with the session key ----

/// Authenticates a call, applies the account's faults and decrypts its `params`.
pub(super) fn api_call(
    sim: &Simulator,
    headers: &HeaderMap,
    params: &str,
) -> Result<(String, SessionCipher, Value), Box<Response>> {
    if header_text(headers, header::ORIGIN) != "https://chat.zalo.me" {
        return Err(Box::new(StatusCode::FORBIDDEN.into_response()));
    }
    let Some(uid) = sim.authenticate(headers) else {
        return Err(Box::new(error(102, "session expired")));
    };
    let outcome = sim.with_account(&uid, |state| {
        if let Some(code) = state.next_errors.pop_front() {
            return Err(code);
        }
        // The newest key first: older sessions of the account may still be in use.
        state
            .session_keys
            .iter()
            .rev()
            .find_map(|cipher| {
                let plain = cipher.decrypt(params).ok()?;
                let value = serde_json::from_str::<Value>(&plain).ok()?;
                Some((cipher.clone(), value))
            })
            .ok_or(102)
    });
    match outcome {
        None => Err(Box::new(error(102, "session expired"))),
        Some(Err(code)) => Err(Box::new(error(code, "simulated error"))),
        Some(Ok((cipher, params))) => Ok((uid, cipher, params)),
    }
}

pub(super) fn form_params(body: &[u8]) -> String {
    form(body).remove("params").unwrap_or_default()
}

/// `GET {chat}/keepalive?params=…`: answered in the clear.
async fn keep_alive(State(sim): State<Simulator>, headers: HeaderMap, uri: Uri) -> Response {
    let params = query(&uri).remove("params").unwrap_or_default();
    let (uid, _, _) = match api_call(&sim, &headers, &params) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    sim.with_account(&uid, |state| state.keep_alives += 1);
    Json(json!({"error_code": 0, "error_message": "", "data": {"config_vesion": 0}}))
        .into_response()
}

/// `{error_code: 0, data: <encrypted {error_code: 0, data}>}`.
pub(super) fn encrypted(cipher: &SessionCipher, data: Value) -> Response {
    let inner = json!({"error_code": 0, "error_message": "", "data": data});
    Json(json!({"error_code": 0, "error_message": "", "data": cipher.encrypt(&inner.to_string())}))
        .into_response()
}

pub(super) fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => String::new(),
    }
}

async fn send(sim: Simulator, headers: HeaderMap, body: Bytes, thread: Thread) -> Response {
    let (uid, cipher, params) = match api_call(&sim, &headers, &form_params(&body)) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let to = match thread {
        Thread::User => text(&params["toid"]),
        Thread::Group => text(&params["grid"]),
    };
    let message = text(&params["message"]);
    if to.is_empty() || message.is_empty() {
        return error(114, "invalid params");
    }
    let (msg_id, answer_after) = sim.record_sent(
        &uid,
        SentMessage {
            thread,
            to,
            text: message,
            client_id: text(&params["clientId"]),
            msg_id: String::new(),
            params: params.clone(),
            received_at_ms: 0,
        },
    );
    tokio::time::sleep(answer_after).await;
    encrypted(&cipher, json!({"msgId": msg_id}))
}

async fn send_sms(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    send(sim, headers, body, Thread::User).await
}

async fn send_group(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    send(sim, headers, body, Thread::Group).await
}

async fn get_profiles(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    let (_, cipher, params) = match api_call(&sim, &headers, &form_params(&body)) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let mut changed = serde_json::Map::new();
    for entry in params["friend_pversion_map"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let entry = text(entry);
        let uid = entry.split('_').next().unwrap_or_default().to_string();
        // Accounts and the users the test added answer; anyone else is not found.
        let Some(profile) = sim.profile(&uid) else {
            continue;
        };
        let (name, avatar) = (profile.display_name, profile.avatar);
        changed.insert(
            uid.clone(),
            json!({
                "userId": uid, "username": "", "displayName": name, "zaloName": name,
                "avatar": avatar, "lastUpdateTime": now_ms(),
            }),
        );
    }
    encrypted(
        &cipher,
        json!({"changed_profiles": changed, "unchanged_profiles": {}, "phonebook_version": 0}),
    )
}
