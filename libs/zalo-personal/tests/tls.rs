//! https and wss: the client against the simulator serving TLS with a test certificate
//! issued for localhost by a test CA.

use std::time::Duration;

use zalo_personal::{
    client::{Client, ClientError, Endpoints, ListenerConfig, ListenerEvent},
    events::Event,
    sim::{Sender, SimAccount, SimConfig, Simulator},
};

const OWNER: &str = "100000001";

fn read(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/tls/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).expect("test certificate")
}

async fn tls_simulator() -> Simulator {
    let sim = Simulator::start_tls(
        SimConfig::default(),
        "127.0.0.1:0".parse().expect("address"),
        std::future::pending(),
        &read("localhost.pem"),
        &read("localhost.key"),
    )
    .await
    .expect("simulator starts");
    sim.add_account(SimAccount::new(OWNER, "Chủ shop"));
    sim
}

#[tokio::test]
async fn login_send_and_listen_over_https_and_wss() {
    let sim = tls_simulator().await;
    assert!(sim.base_url().starts_with("https://localhost:"));
    let client = Client::new(Endpoints::all_at(&sim.base_url()))
        .trusting(&read("ca.pem"))
        .expect("CA");
    let credentials = sim.issue_credentials(OWNER, "tls-test");
    let session = client.login(&credentials).await.expect("login over https");
    assert!(session.ws_urls[0].starts_with("wss://"));
    session.send_text("200", "qua TLS").await.expect("sent");
    assert_eq!(sim.sent(OWNER)[0].text, "qua TLS");

    let mut listener = session.listen(ListenerConfig::default());
    let first = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("in time");
    assert!(
        matches!(first, Some(ListenerEvent::Connected { reconnect: false })),
        "{first:?}"
    );
    let dm = sim
        .inject_dm(OWNER, &Sender::new("200", "Khách"), "alo")
        .expect("account");
    let event = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("in time");
    let Some(ListenerEvent::Event(Event::Message(message))) = event else {
        panic!("a message, got {event:?}");
    };
    assert_eq!(message.msg_id, dm);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_before_anything_is_sent() {
    let sim = tls_simulator().await;
    let client = Client::new(Endpoints::all_at(&sim.base_url()));
    let credentials = sim.issue_credentials(OWNER, "tls-test");
    let error = client.login(&credentials).await.expect_err("untrusted");
    assert!(matches!(error, ClientError::Connect(_)), "{error:?}");
}
