//! The simulator's `/sim/*` routes, as the binary's users script it.

use std::time::Duration;

use serde_json::{Value, json};
use zalo_personal::{
    client::{Client, Credentials, Endpoints, ListenerConfig, ListenerEvent},
    events::Event,
    sim::{SimConfig, Simulator},
};

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connect");
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let status = answer[9..12].parse().expect("status");
    let json = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn an_account_scripted_over_http_receives_an_injected_message() {
    let sim = Simulator::start(
        SimConfig::default(),
        "127.0.0.1:0".parse().expect("address"),
        std::future::pending(),
    )
    .await
    .expect("simulator");
    let base = sim.base_url();
    let (status, _) = post(
        &base,
        "/sim/accounts",
        json!({"uid": "42", "display_name": "Shop"}),
    )
    .await;
    assert_eq!(status, 204);
    let (status, credentials) = post(
        &base,
        "/sim/credentials",
        json!({"uid": "42", "user_agent": "dev-browser"}),
    )
    .await;
    assert_eq!(status, 200);
    let credentials: Credentials = serde_json::from_value(credentials).expect("credentials");
    let session = Client::new(Endpoints::all_at(&base))
        .login(&credentials)
        .await
        .expect("login");
    let mut listener = session.listen(ListenerConfig::default());
    let first = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("in time");
    assert!(matches!(
        first,
        Some(ListenerEvent::Connected { reconnect: false })
    ));
    let (status, injected) = post(
        &base,
        "/sim/inject",
        json!({"account": "42", "kind": "dm", "from": "7", "name": "Khách", "text": "alo"}),
    )
    .await;
    assert_eq!(status, 200);
    let event = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("in time");
    let Some(ListenerEvent::Event(Event::Message(message))) = event else {
        panic!("a message, got {event:?}");
    };
    assert_eq!(message.msg_id, injected["msg_id"].as_str().expect("msg_id"));
    let (status, _) = post(
        &base,
        "/sim/faults",
        json!({"account": "42", "close": 3003}),
    )
    .await;
    assert_eq!(status, 204);
}
