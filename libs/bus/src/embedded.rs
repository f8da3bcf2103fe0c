//! The embedded bus for `giao dev`: durable, in-process, on one SQLite file.
//!
//! Messages are appended to a log table (the msg_id is unique, so dedupe holds for as long
//! as a message is retained, longer than JetStream's window). Each durable consumer keeps an
//! ack floor and per-message state (deliveries, done) in the same file, so after a restart
//! whatever was not acked is delivered again and nothing acked comes back. Deliveries in
//! flight are tracked in memory with their ack deadline; competing subscribers of one
//! durable name share the same bookkeeping, so each message goes to one of them at a time.

use std::{
    collections::{HashMap, VecDeque},
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};
use sqlx::{
    Row, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::{Mutex, Notify};

use crate::{
    Acker, BusConfig, BusError, ConsumerSpec, Delivery, DeliveryStream, EventBus, Headers,
    OutgoingMessage, PublishAck, Settle, subject,
};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS bus_messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id TEXT NOT NULL UNIQUE,
        subject TEXT NOT NULL,
        headers TEXT NOT NULL,
        payload BLOB NOT NULL,
        published_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bus_consumers (
        name TEXT PRIMARY KEY,
        ack_floor INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS bus_consumer_state (
        consumer TEXT NOT NULL,
        seq INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (consumer, seq))",
];

/// How many log rows one fetch looks at.
const SCAN: i64 = 256;
/// How often an idle subscriber re-checks for expired deliveries.
const IDLE_POLL: Duration = Duration::from_millis(250);

pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedBus")
    }
}

struct Inner {
    pool: SqlitePool,
    notify: Notify,
    /// Serialises fetch and settle bookkeeping.
    state: Mutex<State>,
    max_age: Duration,
}

#[derive(Default)]
struct State {
    /// (consumer, seq) → not to be handed out again before this instant.
    in_flight: HashMap<(String, i64), Instant>,
    last_prune: Option<Instant>,
}

/// Buses open in this process, by file: every `open` of one file shares one bookkeeping, so
/// replicas in one process compete for messages exactly as JetStream consumers do. The
/// embedded bus serves one process; several processes on one file are not supported.
static OPEN: std::sync::Mutex<Vec<(String, std::sync::Weak<Inner>)>> =
    std::sync::Mutex::new(Vec::new());

impl EmbeddedBus {
    pub async fn open(config: &BusConfig) -> Result<Self, BusError> {
        let key = if config.embedded_path == ":memory:" {
            None
        } else {
            let path = std::path::Path::new(&config.embedded_path);
            let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            Some(absolute.display().to_string())
        };
        if let Some(key) = &key
            && let Some(inner) = OPEN.lock().ok().and_then(|open| {
                open.iter()
                    .find(|(path, _)| path == key)
                    .and_then(|(_, inner)| inner.upgrade())
            })
        {
            return Ok(Self { inner });
        }
        let bus = Self::open_new(config).await?;
        if let (Some(key), Ok(mut open)) = (key, OPEN.lock()) {
            open.retain(|(_, inner)| inner.strong_count() > 0);
            open.push((key, Arc::downgrade(&bus.inner)));
        }
        Ok(bus)
    }

    async fn open_new(config: &BusConfig) -> Result<Self, BusError> {
        let open_error = |cause: String| BusError::Connect {
            what: "the embedded bus",
            url: config.embedded_path.clone(),
            cause,
        };
        let in_memory = config.embedded_path == ":memory:";
        let options = if in_memory {
            SqliteConnectOptions::from_str("sqlite::memory:")
        } else {
            if let Some(parent) = std::path::Path::new(&config.embedded_path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|error| open_error(error.to_string()))?;
            }
            SqliteConnectOptions::from_str(&format!("sqlite://{}", config.embedded_path))
        }
        .map_err(|error| open_error(error.to_string()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 4 })
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|error| open_error(error.to_string()))?;
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&pool)
                .await
                .map_err(|error| open_error(error.to_string()))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                notify: Notify::new(),
                state: Mutex::new(State::default()),
                max_age: Duration::from_secs(config.max_age_days.max(1) * 24 * 3600),
            }),
        })
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn db_error(error: sqlx::Error) -> BusError {
    BusError::Unavailable(error.to_string())
}

impl EventBus for EmbeddedBus {
    fn publish(&self, message: OutgoingMessage) -> BoxFuture<'_, Result<PublishAck, BusError>> {
        Box::pin(async move {
            let headers = serde_json::to_string(&message.headers)
                .map_err(|error| BusError::Publish(error.to_string()))?;
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO bus_messages (msg_id, subject, headers, payload, published_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (msg_id) DO NOTHING RETURNING seq",
            )
            .bind(&message.msg_id)
            .bind(&message.subject)
            .bind(headers)
            .bind(message.payload.as_ref())
            .bind(now_millis())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|error| BusError::Publish(error.to_string()))?;
            let ack = match inserted {
                Some(seq) => PublishAck {
                    sequence: seq as u64,
                    duplicate: false,
                },
                None => {
                    let seq: i64 =
                        sqlx::query_scalar("SELECT seq FROM bus_messages WHERE msg_id = ?1")
                            .bind(&message.msg_id)
                            .fetch_one(&self.inner.pool)
                            .await
                            .map_err(|error| BusError::Publish(error.to_string()))?;
                    PublishAck {
                        sequence: seq as u64,
                        duplicate: true,
                    }
                }
            };
            self.inner.notify.notify_waiters();
            Ok(ack)
        })
    }

    fn subscribe(&self, spec: ConsumerSpec) -> BoxFuture<'_, Result<DeliveryStream, BusError>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO bus_consumers (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&spec.durable_name)
            .execute(&self.inner.pool)
            .await
            .map_err(|error| BusError::Subscribe(error.to_string()))?;
            let inner = self.inner.clone();
            let buffer: VecDeque<Delivery> = VecDeque::new();
            let stream = futures::stream::unfold(
                (inner, spec, buffer),
                |(inner, spec, mut buffer)| async move {
                    loop {
                        if let Some(delivery) = buffer.pop_front() {
                            return Some((Ok(delivery), (inner, spec, buffer)));
                        }
                        // Register interest before looking, so a publish in between wakes us.
                        let notified = inner.notify.notified();
                        let fetched = fetch(&inner, &spec, 16).await;
                        match fetched {
                            Ok(batch) if !batch.is_empty() => buffer.extend(batch),
                            Ok(_) => {
                                let _ = tokio::time::timeout(IDLE_POLL, notified).await;
                            }
                            Err(error) => {
                                drop(notified);
                                return Some((Err(error), (inner, spec, buffer)));
                            }
                        }
                    }
                },
            );
            Ok(stream.boxed())
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.inner.pool)
                .await
                .map(|_| ())
                .map_err(db_error)
        })
    }
}

/// Hands out up to `max` deliverable messages for the consumer, advancing its ack floor over
/// everything settled or not matching its filter.
async fn fetch(
    inner: &Arc<Inner>,
    spec: &ConsumerSpec,
    max: usize,
) -> Result<Vec<Delivery>, BusError> {
    let mut state = inner.state.lock().await;
    let floor: i64 = sqlx::query_scalar("SELECT ack_floor FROM bus_consumers WHERE name = ?1")
        .bind(&spec.durable_name)
        .fetch_one(&inner.pool)
        .await
        .map_err(db_error)?;
    let rows = sqlx::query(
        "SELECT m.seq, m.msg_id, m.subject, m.headers, m.payload, \
                COALESCE(s.delivered, 0) AS delivered, COALESCE(s.done, 0) AS done \
         FROM bus_messages m LEFT JOIN bus_consumer_state s ON s.consumer = ?1 AND s.seq = m.seq \
         WHERE m.seq > ?2 ORDER BY m.seq LIMIT ?3",
    )
    .bind(&spec.durable_name)
    .bind(floor)
    .bind(SCAN)
    .fetch_all(&inner.pool)
    .await
    .map_err(db_error)?;

    let now = Instant::now();
    let mut new_floor = floor;
    let mut contiguous = true;
    let mut out = Vec::new();
    for row in rows {
        let seq: i64 = row.get("seq");
        let subject: String = row.get("subject");
        let delivered: i64 = row.get("delivered");
        let done: i64 = row.get("done");
        let wanted = spec
            .filter_subjects
            .iter()
            .any(|filter| subject::matches(filter, &subject));
        let exhausted = spec
            .max_deliver
            .is_some_and(|max| delivered >= i64::from(max));
        if !wanted || done != 0 || exhausted {
            if contiguous {
                new_floor = seq;
            }
            continue;
        }
        contiguous = false;
        let key = (spec.durable_name.clone(), seq);
        if state.in_flight.get(&key).is_some_and(|until| *until > now) {
            continue;
        }
        if out.len() >= max {
            break;
        }
        sqlx::query(
            "INSERT INTO bus_consumer_state (consumer, seq, delivered) VALUES (?1, ?2, 1) \
             ON CONFLICT (consumer, seq) DO UPDATE SET delivered = delivered + 1",
        )
        .bind(&spec.durable_name)
        .bind(seq)
        .execute(&inner.pool)
        .await
        .map_err(db_error)?;
        state.in_flight.insert(key, now + spec.ack_wait);
        let headers: Headers =
            serde_json::from_str(row.get::<&str, _>("headers")).unwrap_or_default();
        let payload: Vec<u8> = row.get("payload");
        out.push(Delivery::new(
            subject,
            row.get("msg_id"),
            headers,
            Bytes::from(payload),
            u32::try_from(delivered + 1).unwrap_or(u32::MAX),
            Box::new(EmbeddedAcker {
                inner: inner.clone(),
                consumer: spec.durable_name.clone(),
                seq,
                settled: false,
            }),
        ));
    }
    if new_floor > floor {
        sqlx::query("UPDATE bus_consumers SET ack_floor = ?2 WHERE name = ?1")
            .bind(&spec.durable_name)
            .bind(new_floor)
            .execute(&inner.pool)
            .await
            .map_err(db_error)?;
        sqlx::query("DELETE FROM bus_consumer_state WHERE consumer = ?1 AND seq <= ?2")
            .bind(&spec.durable_name)
            .bind(new_floor)
            .execute(&inner.pool)
            .await
            .map_err(db_error)?;
        let consumer = spec.durable_name.as_str();
        state
            .in_flight
            .retain(|(name, seq), _| name != consumer || *seq > new_floor);
    }
    if state
        .last_prune
        .is_none_or(|at| now.duration_since(at) > Duration::from_secs(600))
    {
        state.last_prune = Some(now);
        prune(inner).await?;
    }
    Ok(out)
}

/// Drops messages older than the retention that every consumer has moved past.
async fn prune(inner: &Inner) -> Result<(), BusError> {
    let cutoff = now_millis() - i64::try_from(inner.max_age.as_millis()).unwrap_or(i64::MAX);
    sqlx::query(
        "DELETE FROM bus_messages WHERE published_at < ?1 \
         AND seq <= COALESCE((SELECT MIN(ack_floor) FROM bus_consumers), seq)",
    )
    .bind(cutoff)
    .execute(&inner.pool)
    .await
    .map_err(db_error)?;
    Ok(())
}

struct EmbeddedAcker {
    inner: Arc<Inner>,
    consumer: String,
    seq: i64,
    settled: bool,
}

/// A delivery dropped without being settled (its handler or stream was cancelled) is handed
/// out again at once instead of after ack_wait: in one process we know it is abandoned.
impl Drop for EmbeddedAcker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let key = (self.consumer.clone(), self.seq);
        let inner = self.inner.clone();
        if let Ok(mut state) = inner.state.try_lock() {
            state.in_flight.remove(&key);
            drop(state);
            inner.notify.notify_waiters();
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                inner.state.lock().await.in_flight.remove(&key);
                inner.notify.notify_waiters();
            });
        }
    }
}

impl Acker for EmbeddedAcker {
    fn settle(mut self: Box<Self>, how: Settle) -> BoxFuture<'static, Result<(), BusError>> {
        self.settled = true;
        Box::pin(async move {
            let mut state = self.inner.state.lock().await;
            let key = (self.consumer.clone(), self.seq);
            match how {
                Settle::Ack | Settle::Term => {
                    sqlx::query(
                        "INSERT INTO bus_consumer_state (consumer, seq, delivered, done) VALUES (?1, ?2, 1, 1) \
                         ON CONFLICT (consumer, seq) DO UPDATE SET done = 1",
                    )
                    .bind(&self.consumer)
                    .bind(self.seq)
                    .execute(&self.inner.pool)
                    .await
                    .map_err(|error| BusError::Ack(error.to_string()))?;
                    state.in_flight.remove(&key);
                }
                Settle::Nak(delay) => {
                    state
                        .in_flight
                        .insert(key, Instant::now() + delay.unwrap_or_default());
                }
            }
            drop(state);
            self.inner.notify.notify_waiters();
            Ok(())
        })
    }
}
