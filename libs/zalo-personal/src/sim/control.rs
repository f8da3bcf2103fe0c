//! `/sim/*`: the handle's knobs over HTTP, for the binary (tests use the handle directly).
//!
//! - `POST /sim/accounts` `{"uid","display_name"}`
//! - `POST /sim/credentials` `{"uid","user_agent"}` → credentials JSON, without a QR
//! - `GET /sim/qr` → `{"code"}` of the last QR; `POST /sim/qr`
//!   `{"action":"scan"|"confirm"|"decline","uid","code"?}`
//! - `POST /sim/inject` `{"account","kind":"dm"|"self"|"group"|"recall"|"reaction"|"seen"|
//!   "delivered","from","name","text","group_id","msg_id","icon","to"}` → `{"msg_id"}`
//! - `POST /sim/faults` `{"account","fail_next":[-69],"expire_session_keys":true,
//!   "expire_cookies":true,"drop_now":true,"drop_every_ms":60000,"refuse_sockets":false,
//!   "close":3003,"duplicate_session":true,"corrupt":"garbage"|"wrong_key"|"unknown_command"}`
//! - `GET /sim/sent?account=…` → `{"sent":[{thread, to, text, msg_id, client_id, received_at_ms, kind}]}`
//!   (kind: text, image, file or sticker)

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{Corruption, Sender, SentKind, SimAccount, Simulator, Thread};

pub(super) fn router() -> Router<Simulator> {
    Router::new()
        .route("/sim/accounts", post(add_account))
        .route("/sim/credentials", post(credentials))
        .route("/sim/qr", get(last_qr).post(qr_action))
        .route("/sim/inject", post(inject))
        .route("/sim/faults", post(faults))
        .route("/sim/sent", get(sent))
}

fn json_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

fn not_json() -> Response {
    (StatusCode::BAD_REQUEST, "body must be JSON").into_response()
}

fn field<'a>(request: &'a Value, name: &str) -> &'a str {
    request[name].as_str().unwrap_or_default()
}

async fn add_account(State(sim): State<Simulator>, body: Bytes) -> Response {
    let Some(request) = json_body(&body) else {
        return not_json();
    };
    let uid = field(&request, "uid");
    if uid.is_empty() {
        return (StatusCode::BAD_REQUEST, "missing uid").into_response();
    }
    sim.add_account(SimAccount::new(uid, field(&request, "display_name")));
    StatusCode::NO_CONTENT.into_response()
}

async fn credentials(State(sim): State<Simulator>, body: Bytes) -> Response {
    let Some(request) = json_body(&body) else {
        return not_json();
    };
    let credentials = sim.issue_credentials(field(&request, "uid"), field(&request, "user_agent"));
    Json(json!(credentials)).into_response()
}

async fn last_qr(State(sim): State<Simulator>) -> Response {
    Json(json!({"code": sim.last_qr_code()})).into_response()
}

async fn qr_action(State(sim): State<Simulator>, body: Bytes) -> Response {
    let Some(request) = json_body(&body) else {
        return not_json();
    };
    let code = match field(&request, "code") {
        "" => sim.last_qr_code().unwrap_or_default(),
        code => code.to_string(),
    };
    let ok = match field(&request, "action") {
        "scan" => sim.scan_qr(&code, field(&request, "uid")),
        "confirm" => sim.confirm_qr(&code),
        "decline" => sim.decline_qr(&code),
        _ => return (StatusCode::BAD_REQUEST, "unknown action").into_response(),
    };
    Json(json!({"ok": ok})).into_response()
}

async fn inject(State(sim): State<Simulator>, body: Bytes) -> Response {
    let Some(request) = json_body(&body) else {
        return not_json();
    };
    let account = field(&request, "account");
    let from = Sender::new(field(&request, "from"), field(&request, "name"));
    let text = field(&request, "text");
    let msg_id = field(&request, "msg_id");
    let id = match field(&request, "kind") {
        "dm" => sim.inject_dm(account, &from, text),
        "self" => sim.inject_self_dm(account, field(&request, "to"), text),
        "group" => sim.inject_group_message(account, field(&request, "group_id"), &from, text),
        "recall" => sim.inject_recall(account, &from, msg_id),
        "reaction" => sim.inject_reaction(account, &from, msg_id, field(&request, "icon")),
        "seen" => sim
            .inject_seen(account, &from.uid, msg_id)
            .map(|()| msg_id.to_string()),
        "delivered" => sim
            .inject_delivered(account, field(&request, "to"), msg_id)
            .map(|()| msg_id.to_string()),
        _ => return (StatusCode::BAD_REQUEST, "unknown kind").into_response(),
    };
    match id {
        Some(id) => Json(json!({"msg_id": id})).into_response(),
        None => (StatusCode::NOT_FOUND, "unknown account").into_response(),
    }
}

async fn faults(State(sim): State<Simulator>, body: Bytes) -> Response {
    let Some(request) = json_body(&body) else {
        return not_json();
    };
    let account = field(&request, "account");
    if let Some(codes) = request["fail_next"].as_array() {
        let codes: Vec<i64> = codes.iter().filter_map(Value::as_i64).collect();
        sim.fail_next(account, &codes);
    }
    if request["expire_session_keys"].as_bool() == Some(true) {
        sim.expire_session_keys(account);
    }
    if request["expire_cookies"].as_bool() == Some(true) {
        sim.expire_cookies(account);
    }
    if let Some(every) = request["drop_every_ms"].as_u64() {
        let every = (every > 0).then(|| std::time::Duration::from_millis(every));
        sim.drop_every(account, every);
    }
    if let Some(refuse) = request["refuse_sockets"].as_bool() {
        sim.refuse_sockets(account, refuse);
    }
    if request["drop_now"].as_bool() == Some(true) {
        sim.drop_connections(account);
    }
    if let Some(code) = request["close"]
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
    {
        sim.close_sockets(account, code);
    }
    if request["duplicate_session"].as_bool() == Some(true) {
        sim.send_duplicate_session(account);
    }
    let corruption = match field(&request, "corrupt") {
        "garbage" => Some(Corruption::Garbage),
        "wrong_key" => Some(Corruption::WrongKey),
        "unknown_command" => Some(Corruption::UnknownCommand),
        "truncated_header" => Some(Corruption::TruncatedHeader),
        _ => None,
    };
    if let Some(corruption) = corruption {
        sim.send_corrupted(account, corruption);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn sent(State(sim): State<Simulator>, uri: Uri) -> Response {
    let account = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "account")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let sent: Vec<Value> = sim
        .sent(&account)
        .into_iter()
        .map(|message| {
            json!({
                "thread": match message.thread { Thread::User => "user", Thread::Group => "group" },
                "to": message.to,
                "text": message.text,
                "msg_id": message.msg_id,
                "client_id": message.client_id,
                "received_at_ms": message.received_at_ms,
                "kind": match message.kind() {
                    SentKind::Text => "text",
                    SentKind::Image => "image",
                    SentKind::File => "file",
                    SentKind::Sticker => "sticker",
                },
            })
        })
        .collect();
    Json(json!({"sent": sent})).into_response()
}
