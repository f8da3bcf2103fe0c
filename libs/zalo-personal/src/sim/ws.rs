//! The simulator's websocket: a fresh AES-GCM key per connection sent in the first frame,
//! events packed with encrypt type 2 under it, pings counted, gap-fill requests answered from
//! the account's log, and the faults the handle asks for.

use axum::{
    extract::{
        State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Connection, Corruption, Outbound, Simulator, random_key};
use crate::frame::{self, Header};

pub(super) async fn upgrade(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(uid) = sim.authenticate(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let refused = sim
        .with_account(&uid, |state| {
            state.ws_attempts.push(super::now_ms());
            state.refuse_sockets
        })
        .unwrap_or(true);
    if refused {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    ws.on_upgrade(move |socket| serve(sim, uid, socket))
}

async fn serve(sim: Simulator, uid: String, mut socket: WebSocket) {
    let key = random_key();
    let (outbound, mut inbound) = mpsc::unbounded_channel();
    let registered = sim.with(|state| {
        state.next_connection += 1;
        let id = state.next_connection;
        let account = state.accounts.get_mut(&uid)?;
        account.ws_connects += 1;
        account.connections.push(Connection { id, outbound });
        account.max_connections = account.max_connections.max(account.connections.len());
        Some((id, account.drop_every))
    });
    let Some((id, drop_every)) = registered else {
        return;
    };
    let drop_at = drop_every.map(|every| tokio::time::Instant::now() + every);
    if socket
        .send(Message::Binary(frame::encode_key_frame(&key).into()))
        .await
        .is_ok()
    {
        run(&sim, &uid, &key, &mut socket, &mut inbound, drop_at).await;
    }
    sim.with_account(&uid, |state| {
        state.connections.retain(|connection| connection.id != id);
    });
}

async fn run(
    sim: &Simulator,
    uid: &str,
    key: &[u8],
    socket: &mut WebSocket,
    inbound: &mut mpsc::UnboundedReceiver<Outbound>,
    drop_at: Option<tokio::time::Instant>,
) {
    let dropped = async {
        match drop_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(dropped);
    loop {
        tokio::select! {
            // Returning drops the socket without a close frame: 1006 for the client.
            _ = &mut dropped => return,
            order = inbound.recv() => {
                let Some(order) = order else { return };
                let bytes = match order {
                    Outbound::Drop => return,
                    Outbound::Close(code) => {
                        let _ = socket
                            .send(Message::Close(Some(CloseFrame { code, reason: "".into() })))
                            .await;
                        return;
                    }
                    Outbound::Raw(bytes) => bytes,
                    Outbound::Event { header, body } => match pack(header, &body, key) {
                        Some(bytes) => bytes,
                        None => continue,
                    },
                    Outbound::Corrupt(corruption) => corrupted(corruption),
                };
                if socket.send(Message::Binary(bytes.into())).await.is_err() {
                    return;
                }
            }
            message = socket.recv() => {
                let bytes = match message {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(_)) => continue,
                };
                let Ok((header, payload)) = frame::decode(&bytes) else { continue };
                if header == Header::PING {
                    sim.with_account(uid, |state| state.pings += 1);
                    continue;
                }
                if matches!((header.cmd, header.sub_cmd), (510, 1) | (511, 1)) {
                    let group = header.cmd == 511;
                    let reply = replay(sim, uid, group, &payload);
                    if let Some(bytes) = pack(header, &reply, key)
                        && socket.send(Message::Binary(bytes.into())).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// The logged messages after the request's `lastId` (all when it is null), as a 510/511
/// answer body.
fn replay(sim: &Simulator, uid: &str, group: bool, request: &Value) -> Value {
    let last: Option<u64> = match &request["lastId"] {
        Value::String(id) => id.parse().ok(),
        Value::Number(id) => id.as_u64(),
        _ => None,
    };
    let msgs: Vec<Value> = sim
        .with_account(uid, |state| {
            state.gap_requests.push(request.clone());
            state
                .log
                .iter()
                .filter(|logged| {
                    logged.group == group && last.is_none_or(|last| logged.msg_id > last)
                })
                .map(|logged| logged.msg.clone())
                .collect()
        })
        .unwrap_or_default();
    let list = if group { "groupMsgs" } else { "msgs" };
    json!({"data": {list: msgs, "more": 0}})
}

/// Encodes an event body under the connection's key (encrypt type 2).
fn pack(header: Header, body: &Value, key: &[u8]) -> Option<Vec<u8>> {
    let payload = frame::encode_data(body, 2, Some(key))
        .inspect_err(|error| tracing::warn!(%error, "simulator could not pack a frame"))
        .ok()?;
    Some(frame::encode(header, payload.to_string().as_bytes()))
}

fn corrupted(corruption: Corruption) -> Vec<u8> {
    match corruption {
        Corruption::Garbage => vec![0xff, 0x00],
        Corruption::WrongKey => {
            let body = json!({"data": {"msgs": [{"msgId": "1", "uidFrom": "x", "idTo": "y",
                "content": "never seen", "ts": "0", "msgType": "webchat"}]}});
            pack(Header::new(1, 501, 0), &body, &random_key()).unwrap_or_default()
        }
        Corruption::TruncatedHeader => frame::encode(Header::new(1, 501, 0), b"")[..3].to_vec(),
        Corruption::UnknownCommand => frame::encode(
            Header::new(1, 4242, 0),
            json!({"data": "{}", "encrypt": 0}).to_string().as_bytes(),
        ),
    }
}
