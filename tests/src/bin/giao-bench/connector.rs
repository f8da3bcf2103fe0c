//! `connector/postgres_jetstream`: signed Zalo OA webhooks accepted per second (each 200
//! means the event is durable on JetStream), and the memory one replica spends per idle
//! account session with 10,000 simulator accounts leased to it.
//!
//! `connector/outbound`: `OutboundRequested` events sent through one replica to the OA
//! simulator per second, until the simulator holds them all: text over http, images (read
//! from the attachment store, uploaded, then sent) over http, and text over https.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use giao_connector::{
    store::{Account, AccountStore, LeaseStore, NewAccount},
    zalo::{
        http::{HttpClient, Method},
        webhook::signature,
    },
};
use giao_proto::{common::ChannelKind, connector::CreateAccountRequest, events::AccountStatus};
use giao_storage::Database;
use giao_tests::{
    Backend, BackendKind, connector_client, connector_config, start_connector_with_http,
};

use crate::percentile;

const WEBHOOKS: usize = 5_000;
const CONCURRENCY: usize = 32;
const IDLE_ACCOUNTS: usize = 10_000;
const APP_ID: &str = "bench-app";
const OA_SECRET: &str = "bench-oa-secret";

/// The resident memory of a process, from /proc (Linux): 0 when it cannot be read.
fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The variable carrying a replica process's connector config (JSON).
pub const REPLICA_CONFIG_ENV: &str = "GIAO_BENCH_CONNECTOR_REPLICA";

/// `giao-bench connector-replica`: one connector replica serving until killed; the idle
/// session figure measures this process alone, apart from the bench's own memory.
pub async fn replica() -> anyhow::Result<()> {
    let config = std::env::var(REPLICA_CONFIG_ENV)?;
    let config: giao_connector::Config = serde_json::from_str(&config)?;
    giao_connector::serve(config, tokio_util::sync::CancellationToken::new()).await?;
    Ok(())
}

/// A replica process that is killed when dropped, so a failed run leaves none behind.
struct ReplicaProcess(std::process::Child);

impl ReplicaProcess {
    fn spawn(config: &giao_connector::Config) -> anyhow::Result<Self> {
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("connector-replica")
            .env(REPLICA_CONFIG_ENV, serde_json::to_string(config)?)
            .spawn()?;
        Ok(Self(child))
    }

    fn rss(&self) -> u64 {
        rss_bytes(self.0.id())
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn webhooks() -> anyhow::Result<(f64, f64, f64)> {
    let mut backend = Backend::new(BackendKind::Postgres).await;
    let mut config = connector_config(&mut backend).await;
    config.sessions.enabled = false;
    let connector = start_connector_with_http(config).await;
    let account = connector_client(&connector, "bench", "admin")
        .await
        .create_account(CreateAccountRequest {
            kind: ChannelKind::ZaloOa as i32,
            display_name: "bench OA".into(),
            credentials_json: format!(
                "{{\"app_id\":\"{APP_ID}\",\"app_secret\":\"s\",\"oa_secret_key\":\"{OA_SECRET}\"}}"
            ),
            ..Default::default()
        })
        .await?
        .into_inner()
        .channel_account_id;
    let url = format!(
        "http://{}/webhooks/zalo-oa/bench/{account}",
        connector
            .metrics_addr
            .ok_or_else(|| anyhow::anyhow!("no HTTP listener"))?
    );
    let client = HttpClient::new(Duration::from_secs(30));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= WEBHOOKS {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let timestamp = (1_732_300_000_000u64 + index as u64).to_string();
                let body = format!(
                    "{{\"app_id\":\"{APP_ID}\",\"sender\":{{\"id\":\"zu-{}\"}},\"recipient\":{{\"id\":\"oa\"}},\"event_name\":\"user_send_text\",\"message\":{{\"msg_id\":\"m-{index}\",\"text\":\"Khách hỏi giá số {index}\"}},\"timestamp\":\"{timestamp}\"}}",
                    index % 500
                );
                let mac = signature(APP_ID, body.as_bytes(), &timestamp, OA_SECRET);
                let sent = Instant::now();
                let answer = client
                    .request(
                        Method::POST,
                        &url,
                        &[
                            ("content-type", "application/json"),
                            ("x-zevent-signature", &mac),
                        ],
                        body.into_bytes(),
                    )
                    .await?;
                anyhow::ensure!(answer.status == 200, "webhook answered {}", answer.status);
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    connector.stop().await?;
    Ok((
        WEBHOOKS as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    ))
}

async fn idle_sessions() -> anyhow::Result<(f64, f64)> {
    let mut backend = Backend::new(BackendKind::Postgres).await;
    let mut config = connector_config(&mut backend).await;
    config.sessions.enabled = false;
    // Fill the accounts first, through a connector that runs no sessions.
    let filler = start_connector_with_http(config.clone()).await;
    filler.stop().await?;
    let accounts = AccountStore::new(Database::connect(&config.database).await?);
    for index in 0..IDLE_ACCOUNTS {
        accounts
            .create(&NewAccount {
                account: Account {
                    id: format!("acc-{index:05}"),
                    tenant_id: "bench".into(),
                    kind: ChannelKind::Simulator as i32,
                    display_name: format!("shop {index}"),
                    status: AccountStatus::Connected as i32,
                    ..Default::default()
                },
                credentials: None,
                idempotency_key: None,
            })
            .await?;
    }
    // The same replica twice, as its own process: once holding no sessions (the baseline),
    // once holding every account; the difference is what the sessions cost.
    let baseline = ReplicaProcess::spawn(&config)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = baseline.rss();
    drop(baseline);
    config.sessions.enabled = true;
    config.sessions.tick_ms = 1_000;
    config.sessions.lease_ms = 30_000;
    let started = Instant::now();
    let replica = ReplicaProcess::spawn(&config)?;
    let leases = LeaseStore::new(Database::connect(&config.database).await?);
    loop {
        let held = leases
            .for_tenant("bench", chrono::Utc::now().timestamp_micros())
            .await?
            .len();
        if held >= IDLE_ACCOUNTS {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "only {held} sessions after 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = started.elapsed().as_secs_f64();
    // Let a few renewal ticks run, so the steady state is measured.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = replica.rss();
    drop(replica);
    anyhow::ensure!(before > 0 && after > 0, "cannot read the replica's memory");
    println!(
        "connector: one replica's resident memory {:.1} MiB without sessions, {:.1} MiB holding {IDLE_ACCOUNTS}",
        before as f64 / 1_048_576.0,
        after as f64 / 1_048_576.0
    );
    Ok((
        after.saturating_sub(before) as f64 / IDLE_ACCOUNTS as f64,
        took,
    ))
}

const OUTBOUND: usize = 1_000;

/// Sends `OUTBOUND` messages of one kind through a connector to a simulator; messages/s.
async fn outbound_rate(tls: bool, image: bool) -> anyhow::Result<f64> {
    use giao_bus::envelope::EventPublisher;
    use giao_connector::zalo::sim::{OaSimulator, SimConfig};
    use giao_proto::{
        common::{Attachment, ContentType, MessageContent},
        events::{OutboundRequested, envelope::Payload},
    };

    let mut backend = Backend::new(BackendKind::Postgres).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let listen = "127.0.0.1:0".parse()?;
    let testdata = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../services/connector/testdata"
    );
    let sim = if tls {
        OaSimulator::start_tls(
            SimConfig::default(),
            listen,
            stop.clone(),
            &std::fs::read(format!("{testdata}/zalo-sim-localhost.pem"))?,
            &std::fs::read(format!("{testdata}/zalo-sim-localhost.key"))?,
        )
        .await?
    } else {
        OaSimulator::start(SimConfig::default(), listen, stop.clone()).await?
    };
    let mut config = connector_config(&mut backend).await;
    config.sessions.enabled = false;
    config.zalo_oa.oauth_base_url = sim.base_url();
    config.zalo_oa.api_base_url = sim.base_url();
    config.zalo_oa.default_send_rate_per_minute = 1_000_000;
    config.attachments_dir = backend.files.path().display().to_string();
    if tls {
        config.zalo_oa.extra_root_certs_pem = format!("{testdata}/zalo-sim-ca.pem");
    }
    let connector = start_connector_with_http(config).await;
    let app = sim.config().clone();
    let (access, refresh) = sim.issue_tokens();
    // Every value is plain ASCII without quotes (ids and base64url tokens).
    let credentials = format!(
        "{{\"app_id\":\"{}\",\"app_secret\":\"{}\",\"oa_secret_key\":\"{}\",\"oa_id\":\"{}\",\
         \"access_token\":\"{access}\",\"refresh_token\":\"{refresh}\",\"access_expires_at\":{}}}",
        app.app_id,
        app.app_secret,
        app.oa_secret_key,
        app.oa_id,
        chrono::Utc::now().timestamp() + 86_400
    );
    let account = connector_client(&connector, "bench", "admin")
        .await
        .create_account(CreateAccountRequest {
            kind: ChannelKind::ZaloOa as i32,
            display_name: "bench OA".into(),
            credentials_json: credentials,
            ..Default::default()
        })
        .await?
        .into_inner()
        .channel_account_id;
    // A 1×1 PNG where message-store would have stored it.
    let key = "bench/2026/11/photo";
    let png: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F,
        0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8,
        0xCF, 0xC0, 0xF0, 0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00,
        0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ];
    let path = backend.files.path().join(key);
    std::fs::create_dir_all(path.parent().ok_or_else(|| anyhow::anyhow!("no parent"))?)?;
    std::fs::write(&path, png)?;
    let content = if image {
        MessageContent {
            r#type: ContentType::Image as i32,
            attachments: vec![Attachment {
                storage_key: key.into(),
                name: "photo.png".into(),
                mime_type: "image/png".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    } else {
        MessageContent {
            r#type: ContentType::Text as i32,
            text: "Dạ shop gửi bạn bảng giá ạ".into(),
            ..Default::default()
        }
    };
    let publisher = EventPublisher::new(giao_bus::connect(&backend.bus).await?, "bench");
    let started = Instant::now();
    for index in 0..OUTBOUND {
        publisher
            .publish(
                "bench",
                format!("outbound-{index}"),
                Payload::OutboundRequested(OutboundRequested {
                    message_id: format!("m-{index}"),
                    channel_account_id: account.clone(),
                    external_thread_id: format!("zu-{}", index % 50),
                    content: Some(content.clone()),
                    ..Default::default()
                }),
            )
            .await?;
    }
    loop {
        let sent = sim.sent().len();
        if sent >= OUTBOUND {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "only {sent} of {OUTBOUND} sent after 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = OUTBOUND as f64 / started.elapsed().as_secs_f64();
    connector.stop().await?;
    stop.cancel();
    Ok(rate)
}

pub async fn run() -> anyhow::Result<()> {
    let text = outbound_rate(false, false).await?;
    let image = outbound_rate(false, true).await?;
    let text_tls = outbound_rate(true, false).await?;
    println!(
        "connector/outbound: {OUTBOUND} messages through one replica to the OA simulator: text {text:.0}/s, images (upload + send) {image:.0}/s, text over https {text_tls:.0}/s"
    );
    println!(
        "{{\"scenario\":\"connector/outbound\",\"messages\":{OUTBOUND},\"text_per_second\":{text:.1},\"image_per_second\":{image:.1},\"text_https_per_second\":{text_tls:.1}}}"
    );
    let (rate, p50, p99) = webhooks().await?;
    let (per_session, took) = idle_sessions().await?;
    println!(
        "connector/postgres_jetstream: {WEBHOOKS} signed webhooks accepted durably at {rate:.0}/s ({CONCURRENCY} concurrent; p50 {p50:.2} ms, p99 {p99:.2} ms); {IDLE_ACCOUNTS} idle sessions leased in {took:.1}s, {per_session:.0} bytes RSS each"
    );
    println!(
        "{{\"scenario\":\"connector/postgres_jetstream\",\"webhooks\":{WEBHOOKS},\"webhooks_per_second\":{rate:.1},\"webhook_p50_ms\":{p50:.3},\"webhook_p99_ms\":{p99:.3},\"idle_sessions\":{IDLE_ACCOUNTS},\"lease_all_seconds\":{took:.2},\"rss_bytes_per_idle_session\":{per_session:.0}}}"
    );
    Ok(())
}
