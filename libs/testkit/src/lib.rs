//! Helpers for tests that run on real components — PostgreSQL, NATS JetStream, SQLite — never
//! mocks. A test that needs PostgreSQL or NATS fails loudly when they do not answer; it never
//! skips.
//!
//! Layout: fresh databases ([`fresh_postgres`], [`fresh_sqlite`]), unique bus names
//! ([`unique_name`]) and [`sweep_streams`] for the streams tests leave, [`FaultProxy`] to cut and restore a dependency under a running service,
//! and [`wait_until`] instead of sleeps.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::{Connection, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Leftover test databases older than this are dropped by the next test that creates one.
const SWEEP_AFTER: Duration = Duration::from_secs(2 * 3600);

/// Admin connection for creating test databases (`GIAO_TEST_POSTGRES_URL`).
pub fn postgres_admin_url() -> String {
    std::env::var("GIAO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// NATS with JetStream for tests (`GIAO_TEST_NATS_URL`).
pub fn nats_url() -> String {
    std::env::var("GIAO_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A name unique to this test run, valid as a NATS token and a SQL identifier.
pub fn unique_name(prefix: &str) -> String {
    let random: u64 = rand::random();
    format!("{prefix}{:x}", random)
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

/// A database of its own for one test. It is left behind when the test ends (a `Drop` cannot
/// await) and swept by a later test once older than two hours.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    pub name: String,
}

/// Creates an empty PostgreSQL database; panics with a clear message when PostgreSQL is down.
pub async fn fresh_postgres() -> TestDatabase {
    let admin_url = postgres_admin_url();
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|error| {
            panic!("PostgreSQL must be running for this test ({admin_url}): {error}")
        });
    sweep(&mut admin).await;
    let name = format!("giao_t_{}_{}", unix_secs(), unique_name(""));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("cannot create test database {name}: {error}"));
    let _ = admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map(|(base, _)| base.to_string())
        .unwrap_or(admin_url);
    TestDatabase {
        url: format!("{base}/{name}"),
        name,
    }
}

/// Drops a test database now (benchmarks with big databases clean up after themselves
/// rather than waiting for the sweep).
pub async fn drop_postgres(database: &TestDatabase) {
    let admin_url = postgres_admin_url();
    if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            database.name
        )))
        .execute(&mut admin)
        .await;
    }
}

async fn sweep(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'giao\\_t\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    let cutoff = unix_secs().saturating_sub(SWEEP_AFTER.as_secs());
    for name in names {
        let created = name
            .split('_')
            .nth(2)
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|created| created < cutoff)
            && let Err(error) = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *admin)
            .await
        {
            tracing::debug!(%name, %error, "cannot drop an old test database");
        }
    }
}

/// Deletes test streams created more than [`SWEEP_AFTER`] ago: tests leave their JetStream
/// stream behind as they leave their database, and the same machine runs the suite again
/// and again. Test streams are named `T` and the hex digits of [`unique_name`] (a backend's
/// name, upper-cased); nothing else is touched. Best effort: a NATS that does not answer is
/// left to the test that needs it to report.
pub async fn sweep_streams() {
    use futures::StreamExt;
    let Ok(client) = async_nats::connect(nats_url()).await else {
        return;
    };
    let jetstream = async_nats::jetstream::new(client);
    let cutoff = unix_secs().saturating_sub(SWEEP_AFTER.as_secs());
    let mut old = Vec::new();
    let mut streams = jetstream.streams();
    while let Some(Ok(info)) = streams.next().await {
        let name = &info.config.name;
        let ours = (2..=17).contains(&name.len())
            && name.starts_with('T')
            && name[1..].bytes().all(|b| b.is_ascii_hexdigit());
        let created = u64::try_from(info.created.unix_timestamp()).unwrap_or(u64::MAX);
        if ours && created < cutoff {
            old.push(name.clone());
        }
    }
    for name in old {
        if let Err(error) = jetstream.delete_stream(&name).await {
            tracing::debug!(%name, %error, "cannot delete an old test stream");
        }
    }
}

/// A SQLite database file in a directory that is removed with the value.
#[derive(Debug)]
pub struct TestSqlite {
    pub url: String,
    _dir: tempfile::TempDir,
}

pub fn fresh_sqlite() -> TestSqlite {
    let dir = tempfile::tempdir().expect("a temporary directory for SQLite");
    TestSqlite {
        url: format!("sqlite://{}/db.sqlite", dir.path().display()),
        _dir: dir,
    }
}

/// Polls `check` until it returns true; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs of the code under test, once per process, filtered by `RUST_LOG`.
pub fn init_test_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
}

/// A TCP proxy in front of a real dependency, to take it away from a running service and
/// give it back: [`FaultProxy::cut`] closes every connection and refuses new ones until
/// [`FaultProxy::restore`].
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    /// Replaced on every cut so that connections opened before it close.
    generation: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let open = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        tokio::spawn({
            let open = open.clone();
            let generation = generation.clone();
            let stop = stop.clone();
            async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((mut inbound, _)) = accepted else {
                        continue;
                    };
                    if !open.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let cut = generation
                        .lock()
                        .map(|token| token.clone())
                        .unwrap_or_default();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = cut.cancelled() => {}
                            _ = stop.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            open,
            generation,
            stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        if let Ok(mut token) = self.generation.lock() {
            token.cancel();
            *token = CancellationToken::new();
        }
    }

    /// Accepts and forwards again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fault_proxy_cuts_and_restores_postgres() {
        let proxy = FaultProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
        let url = postgres_admin_url().replace("127.0.0.1:5432", &proxy.addr().to_string());
        let mut connection = PgConnection::connect(&url)
            .await
            .expect("through the proxy");
        sqlx::query("SELECT 1")
            .execute(&mut connection)
            .await
            .expect("query through the proxy");
        proxy.cut();
        assert!(
            sqlx::query("SELECT 1")
                .execute(&mut connection)
                .await
                .is_err()
        );
        assert!(PgConnection::connect(&url).await.is_err());
        proxy.restore();
        let mut again = PgConnection::connect(&url).await.expect("restored");
        sqlx::query("SELECT 1")
            .execute(&mut again)
            .await
            .expect("works again");
    }

    #[tokio::test]
    async fn fresh_databases_are_empty_and_distinct() {
        let first = fresh_postgres().await;
        let second = fresh_postgres().await;
        assert_ne!(first.url, second.url);
        let mut connection = PgConnection::connect(&first.url).await.expect("connects");
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&mut connection)
        .await
        .expect("counts");
        assert_eq!(tables, 0);
    }
}

/// Everything the code under test logs, kept in memory so a test can check what reached the
/// logs (e.g. that no secret did).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogCapture")
    }
}

impl LogCapture {
    pub fn contents(&self) -> String {
        self.0
            .lock()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }
}

/// One write into the shared buffer.
#[derive(Debug)]
pub struct LogCaptureWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogCaptureWriter(self.0.clone())
    }
}

/// Installs, once per process, a global subscriber that writes every event at `debug` and
/// above — JSON, with span fields, as in production — into the returned capture. Panics when
/// another global subscriber was installed first, rather than capturing nothing.
pub fn capture_logs() -> LogCapture {
    static CAPTURE: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = LogCapture::default();
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(capture.clone())
                .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global tracing subscriber in this test process");
            capture
        })
        .clone()
}
