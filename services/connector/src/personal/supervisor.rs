//! One listener per `zalo_personal` account across all replicas.
//!
//! The lease runtime ([`crate::sessions`]) decides which replica holds each account; this
//! supervisor makes the listeners follow: every `supervise_ms` it starts a listener for each
//! held personal account without one and stops, at once, every listener whose lease is no
//! longer held here (lost, given back, expired locally, or the account disabled). A
//! listener is not restarted for an account that was kicked or needs a login: connecting
//! again would fight the other session or fail; a QR login (or new credentials) clears that.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use giao_proto::{common::ChannelKind, events::AccountStatus};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use zalo_personal::client::{ClientError, ListenerEvent, Session, StopReason};

use super::{
    PersonalRuntime,
    capture::{Captured, map_event},
    outbound,
};
use crate::sessions::Sessions;

type Key = (String, String);

/// Customers' names looked up by profile, for messages that carry none (`dName` is
/// usually there; a sender's first message may lack it). Asked once per sender per
/// listener; a failed lookup leaves the message nameless rather than holding it up.
#[derive(Debug, Default)]
struct SenderNames {
    known: HashMap<String, String>,
}

impl SenderNames {
    /// Bounds the memory of one long-lived listener; a forgotten name is asked again.
    const CAPACITY: usize = 10_000;

    async fn fill(
        &mut self,
        account: &str,
        session: &Session,
        event: &mut zalo_personal::events::Event,
    ) {
        let zalo_personal::events::Event::Message(message) = event else {
            return;
        };
        let named = message
            .display_name
            .as_deref()
            .is_some_and(|name| !name.trim().is_empty());
        if named || message.from_self || message.uid_from.is_empty() {
            return;
        }
        if let Some(name) = self.known.get(&message.uid_from) {
            message.display_name = Some(name.clone());
            return;
        }
        let name = match session.user_info(&message.uid_from).await {
            Ok(info) if !info.display_name.is_empty() => info.display_name,
            Ok(info) => info.zalo_name,
            Err(error) => {
                tracing::info!(account = %account, %error, "sender's profile not read; message kept without a name");
                return;
            }
        };
        if name.is_empty() {
            return;
        }
        if self.known.len() >= Self::CAPACITY {
            self.known.clear();
        }
        self.known.insert(message.uid_from.clone(), name.clone());
        message.display_name = Some(name);
    }
}

/// The listeners running in this replica.
#[derive(Debug, Default)]
pub struct Running {
    tasks: Mutex<HashMap<Key, Task>>,
    /// When each account's last listener ended, for `restart_after_ms`.
    ended: Mutex<HashMap<Key, Instant>>,
}

#[derive(Debug)]
struct Task {
    stop: CancellationToken,
    /// Wakes the account's sender when a message was queued here.
    wake: Arc<Notify>,
    handle: JoinHandle<()>,
}

impl Running {
    pub fn stop(&self, tenant: &str, account: &str) {
        let key = (tenant.to_string(), account.to_string());
        if let Some(task) = self.tasks.lock().ok().and_then(|mut t| t.remove(&key)) {
            task.stop.cancel();
            self.ended_now(&key);
        }
    }

    /// Lets the account's listener start at the next tick (new credentials arrived).
    pub fn forget_ended(&self, tenant: &str, account: &str) {
        if let Ok(mut ended) = self.ended.lock() {
            ended.remove(&(tenant.to_string(), account.to_string()));
        }
    }

    fn ended_now(&self, key: &Key) {
        if let Ok(mut ended) = self.ended.lock() {
            ended.insert(key.clone(), Instant::now());
        }
    }

    /// Wakes the sender of `account` when its listener runs here.
    pub fn wake(&self, tenant: &str, account: &str) {
        let key = (tenant.to_string(), account.to_string());
        if let Some(task) = self
            .tasks
            .lock()
            .ok()
            .and_then(|t| t.get(&key).map(|t| t.wake.clone()))
        {
            task.notify_one();
        }
    }

    /// The accounts whose listeners run here.
    pub fn accounts(&self) -> Vec<Key> {
        self.tasks
            .lock()
            .map(|tasks| tasks.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl PersonalRuntime {
    /// Wakes the sender of `account` if it runs in this replica.
    pub(crate) fn wake(&self, tenant: &str, account: &str) {
        self.inner.running.wake(tenant, account);
    }

    /// The accounts whose listeners run in this replica (for tests and operators).
    pub fn listening(&self) -> Vec<(String, String)> {
        self.inner.running.accounts()
    }

    /// Reconciles held leases with running listeners until `stop`; then stops them all.
    pub async fn supervise(
        self,
        sessions: Sessions,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        // Faster than the lease ticks: a lost lease's local deadline ends one lease tick
        // before the lease expires, and the listener must be gone before another replica
        // may take the lease.
        let tick = Duration::from_millis(self.config().supervise_ms.max(10))
            .min(sessions.tick() / 2)
            .max(Duration::from_millis(5));
        // Kinds never change: an account found not personal is not read again.
        let mut kinds: HashMap<Key, i32> = HashMap::new();
        loop {
            self.reconcile(&sessions, &mut kinds).await;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
        let tasks: Vec<Task> = self
            .inner
            .running
            .tasks
            .lock()
            .map(|mut tasks| tasks.drain().map(|(_, task)| task).collect())
            .unwrap_or_default();
        for task in &tasks {
            task.stop.cancel();
        }
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task.handle).await;
        }
        Ok(())
    }

    async fn reconcile(&self, sessions: &Sessions, kinds: &mut HashMap<Key, i32>) {
        let held: BTreeSet<Key> = sessions.held().into_iter().collect();
        let running = &self.inner.running;
        // Stop what is no longer held here; forget listeners that ended by themselves.
        let stale: Vec<(Key, bool)> = running
            .tasks
            .lock()
            .map(|tasks| {
                tasks
                    .iter()
                    .filter(|(key, task)| !held.contains(*key) || task.handle.is_finished())
                    .map(|(key, task)| (key.clone(), task.handle.is_finished()))
                    .collect()
            })
            .unwrap_or_default();
        for (key, finished) in stale {
            if !finished {
                tracing::info!(account = %key.1, "lease no longer held here: listener stopped");
            }
            running.stop(&key.0, &key.1);
        }
        let restart_after = Duration::from_millis(self.config().restart_after_ms);
        for key in held {
            let is_running = running
                .tasks
                .lock()
                .map(|tasks| tasks.contains_key(&key))
                .unwrap_or(true);
            if is_running {
                continue;
            }
            let recently_ended = running
                .ended
                .lock()
                .ok()
                .and_then(|ended| ended.get(&key).copied())
                .is_some_and(|at| at.elapsed() < restart_after);
            if recently_ended {
                continue;
            }
            if let Some(kind) = kinds.get(&key)
                && *kind != ChannelKind::ZaloPersonal as i32
            {
                continue;
            }
            let account = match self.accounts().get(&key.0, &key.1).await {
                Ok(Some(account)) => account,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, "cannot read a held account");
                    continue;
                }
            };
            kinds.insert(key.clone(), account.kind);
            if account.kind != ChannelKind::ZaloPersonal as i32 || account.disabled {
                continue;
            }
            let waits_for_a_person = [AccountStatus::Kicked, AccountStatus::NeedsLogin]
                .iter()
                .any(|status| *status as i32 == account.status);
            if waits_for_a_person {
                // Looked at again after `restart_after_ms`, not every tick (or at once here
                // when a QR login or new credentials arrive).
                running.ended_now(&key);
                continue;
            }
            self.start(key);
        }
    }

    fn start(&self, key: Key) {
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let runtime = self.clone();
        let (tenant, account) = key.clone();
        let handle = tokio::spawn({
            let stop = stop.clone();
            let wake = wake.clone();
            async move { runtime.run_account(tenant, account, stop, wake).await }
        });
        tracing::info!(account = %key.1, "personal listener starting");
        if let Ok(mut tasks) = self.inner.running.tasks.lock() {
            tasks.insert(key, Task { stop, wake, handle });
        }
    }

    /// Cookie login, then the websocket until `stop` or the listener ends; the sender runs
    /// alongside and ends with it.
    async fn run_account(
        self,
        tenant: String,
        account: String,
        stop: CancellationToken,
        wake: Arc<Notify>,
    ) {
        let credentials = match self.credentials(&tenant, &account).await {
            Ok(credentials) => credentials,
            Err(super::Unopened::NeedsLogin(reason)) => {
                self.set_status(&tenant, &account, AccountStatus::NeedsLogin, &reason)
                    .await;
                return;
            }
            Err(super::Unopened::NotNow(reason)) => {
                // Started again after `restart_after_ms`; the session itself is still good.
                let reason = format!("{reason}; trying again");
                self.set_status(&tenant, &account, AccountStatus::Disconnected, &reason)
                    .await;
                return;
            }
        };
        // Read before the socket opens: the listener asks for what came after it.
        let mut position = match self.resume_point(&tenant, &account).await {
            Ok(position) => position,
            Err(error) => {
                // Started again after `restart_after_ms`; listening without it could lose
                // what arrived while no listener ran.
                tracing::warn!(account = %account, %error, "listener position not readable");
                return;
            }
        };
        let session = tokio::select! {
            _ = stop.cancelled() => return,
            login = self.client().login(&credentials) => login,
        };
        let session = match session {
            Ok(session) => session,
            Err(error) => {
                let (status, reason) = Self::status_of(&error);
                self.set_session_status(&tenant, &account, &credentials, status, &reason)
                    .await;
                return;
            }
        };
        let owner_uid = session.uid.clone();
        let mut listener = session.listen_from(self.config().listener(), position.clone());
        let shared = outbound::SharedSession::new(session);
        let sender = tokio::spawn(self.clone().send_queued(
            tenant.clone(),
            account.clone(),
            shared.clone(),
            stop.clone(),
            wake,
        ));
        let keepalive = Duration::from_secs(self.config().keepalive_secs.max(1));
        let mut names = SenderNames::default();
        let mut next_keepalive = tokio::time::Instant::now() + keepalive;
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(next_keepalive) => {
                    next_keepalive = tokio::time::Instant::now() + keepalive;
                    if !self.keep_alive(&tenant, &account, &shared).await {
                        break;
                    }
                    continue;
                }
                event = listener.recv() => event,
            };
            let Some(event) = event else { break };
            match event {
                ListenerEvent::Connected { reconnect } => {
                    if reconnect {
                        tracing::info!(account = %account, "personal listener reconnected");
                    }
                    self.set_status(&tenant, &account, AccountStatus::Connected, "")
                        .await;
                }
                ListenerEvent::Reconnecting { code, retry_in } => {
                    let reason = format!(
                        "connection closed ({code}); reconnecting in {} ms",
                        retry_in.as_millis()
                    );
                    self.set_status(&tenant, &account, AccountStatus::Disconnected, &reason)
                        .await;
                }
                ListenerEvent::Event(mut event) => {
                    names.fill(&account, &shared.get(), &mut event).await;
                    // After a re-login the sender uses a new session; its file uploads
                    // wait for notices this listener (of the old one) receives.
                    if shared.replaced() {
                        shared.get().take_notice(&event);
                    }
                    if self
                        .capture(&tenant, &account, &owner_uid, &event, &stop)
                        .await
                    {
                        self.advance_position(&tenant, &account, &mut position, &event)
                            .await;
                    }
                }
                ListenerEvent::Stopped(reason) => {
                    self.stopped(&tenant, &account, &credentials, reason).await;
                    break;
                }
            }
        }
        listener.stop();
        stop.cancel();
        let _ = sender.await;
    }

    /// Keep-alive; a refused session key is renewed with the cookies. False when the
    /// account now needs a login (the listener stops).
    async fn keep_alive(
        &self,
        tenant: &str,
        account: &str,
        shared: &outbound::SharedSession,
    ) -> bool {
        let session = shared.get();
        match session.keep_alive().await {
            Ok(()) => true,
            Err(ClientError::SessionKeyExpired) => {
                self.relogin(tenant, account, shared).await.is_ok()
            }
            Err(error) if error.needs_login() => {
                let (status, reason) = Self::status_of(&error);
                self.set_session_status(tenant, account, session.credentials(), status, &reason)
                    .await;
                false
            }
            Err(error) => {
                tracing::info!(account = %account, %error, "keep-alive failed; trying again later");
                true
            }
        }
    }

    /// A fresh session key from the saved cookies (after 102). When the cookies are refused
    /// too, the account needs a QR login.
    pub(crate) async fn relogin(
        &self,
        tenant: &str,
        account: &str,
        shared: &outbound::SharedSession,
    ) -> Result<Session, ClientError> {
        let credentials = shared.get().credentials().clone();
        match self.client().login(&credentials).await {
            Ok(session) => {
                shared.set(session.clone());
                Ok(session)
            }
            Err(error) => {
                let (status, reason) = Self::status_of(&error);
                self.set_session_status(tenant, account, &credentials, status, &reason)
                    .await;
                Err(error)
            }
        }
    }

    async fn stopped(
        &self,
        tenant: &str,
        account: &str,
        used: &zalo_personal::client::Credentials,
        reason: StopReason,
    ) {
        let (status, words) = match reason {
            StopReason::Kicked { code } => (
                AccountStatus::Kicked,
                format!(
                    "the account was opened in another Zalo web session (code {code}); giao \
                     stopped listening and will not take it back: log in again by QR code"
                ),
            ),
            StopReason::NeedsLogin(why) => (
                AccountStatus::NeedsLogin,
                format!("Zalo refused the saved session ({why}): log in again by QR code"),
            ),
            StopReason::RetriesExhausted { code } => (
                AccountStatus::Disconnected,
                format!("cannot reconnect (last close {code}); retrying later"),
            ),
            StopReason::Closed { code } => (
                AccountStatus::Disconnected,
                format!("Zalo closed the connection ({code}); retrying later"),
            ),
            StopReason::Requested => return,
        };
        self.set_session_status(tenant, account, used, status, &words)
            .await;
    }

    /// Publishes what an event captured; retried until the bus has it (the listener waits
    /// meanwhile, so nothing is skipped) or the listener is stopped. True once the event
    /// is stored (or needs nothing stored); false when stopped first.
    async fn capture(
        &self,
        tenant: &str,
        account: &str,
        owner_uid: &str,
        event: &zalo_personal::events::Event,
        stop: &CancellationToken,
    ) -> bool {
        if let zalo_personal::events::Event::Invalid { cmd, reason, .. } = event {
            tracing::warn!(account = %account, cmd, %reason, "personal event skipped");
            return true;
        }
        if let zalo_personal::events::Event::Message(message) = event
            && message.from_self
            && self
                .sent_by_giao(tenant, account, &message.msg_id, &message.cli_msg_id)
                .await
        {
            // giao's own send coming back on the socket: already recorded as outbound.
            return true;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = match map_event(account, owner_uid, event) {
                Captured::Events(events) => {
                    let mut result = Ok(());
                    for (event_id, payload) in events {
                        if let Err(error) = self
                            .inner
                            .publisher
                            .publish(tenant, event_id, payload)
                            .await
                        {
                            result = Err(error.to_string());
                            break;
                        }
                    }
                    result
                }
                Captured::Raw(name, body) => self
                    .inner
                    .raw
                    .keep(tenant, account, &name, body.to_string().as_bytes())
                    .await
                    .map_err(|error| error.to_string()),
                Captured::Nothing => Ok(()),
            };
            match result {
                Ok(()) => return true,
                Err(error) => {
                    tracing::warn!(account = %account, %error, "captured event not stored yet; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
