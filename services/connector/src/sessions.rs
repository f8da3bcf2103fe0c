//! Session runtime: every active account's session runs in exactly one connector replica.
//!
//! Each replica heartbeats a row in `connector_replicas` and, every tick, renews the leases
//! it holds, gives back what exceeds its fair share (accounts ÷ live replicas, so replicas
//! that join get work) and takes free or expired leases up to that share. Every write is
//! conditional on the fencing token, so at most one replica holds a lease at any token, and
//! a replica that missed renewing drops the session locally before the lease can expire.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::store::LeaseStore;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Run account sessions in this replica.
    pub enabled: bool,
    /// This replica's name in leases; empty = a fresh random id per start.
    pub replica_id: String,
    /// How long a lease lasts without renewal: a dead replica's accounts move after this.
    pub lease_ms: u64,
    /// How often leases are renewed and rebalanced (well under `lease_ms`).
    pub tick_ms: u64,
    /// Give leases back on a graceful stop, so they move at once.
    pub release_on_stop: bool,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            replica_id: String::new(),
            lease_ms: 15_000,
            tick_ms: 3_000,
            release_on_stop: true,
        }
    }
}

impl SessionsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.tick_ms < 10 || self.tick_ms.saturating_mul(3) > self.lease_ms {
            return Err("sessions.tick_ms must be at least 10 and at most lease_ms / 3".into());
        }
        Ok(())
    }
}

/// A lease this replica holds: (tenant, account) → (token, local deadline in micros).
pub type Held = Arc<Mutex<BTreeMap<(String, String), (i64, i64)>>>;

#[derive(Debug, Clone)]
pub struct Sessions {
    store: LeaseStore,
    replica: String,
    lease_micros: i64,
    tick: Duration,
    release_on_stop: bool,
    held: Held,
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

impl Sessions {
    pub fn new(store: LeaseStore, config: &SessionsConfig) -> Self {
        let replica = if config.replica_id.is_empty() {
            format!("connector-{}", uuid::Uuid::now_v7())
        } else {
            config.replica_id.clone()
        };
        Self {
            store,
            replica,
            lease_micros: (config.lease_ms as i64) * 1_000,
            tick: Duration::from_millis(config.tick_ms),
            release_on_stop: config.release_on_stop,
            held: Held::default(),
        }
    }

    /// How often leases are renewed; a lease's local deadline ends one tick before it expires.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The accounts whose sessions run here now.
    pub fn held(&self) -> Vec<(String, String)> {
        let now = now_micros();
        self.held
            .lock()
            .map(|held| {
                held.iter()
                    .filter(|(_, (_, deadline))| *deadline > now)
                    .map(|(key, _)| key.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        loop {
            if let Err(error) = self.tick_once().await {
                tracing::warn!(%error, "session leases not updated this tick");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.tick) => {}
            }
        }
        if self.release_on_stop {
            if let Ok(mut held) = self.held.lock() {
                held.clear();
            }
            if let Err(error) = self.store.release_all(&self.replica).await {
                tracing::warn!(%error, "leases not given back: they move when they expire");
            }
            let _ = self.store.leave(&self.replica).await;
        }
        Ok(())
    }

    fn forget(&self, key: &(String, String)) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(key);
        }
    }

    fn hold(&self, key: (String, String), token: i64, deadline: i64) {
        if let Ok(mut held) = self.held.lock() {
            held.insert(key, (token, deadline));
        }
    }

    pub async fn tick_once(&self) -> Result<(), sqlx::Error> {
        let now = now_micros();
        let expires_at = now + self.lease_micros;
        // The local deadline ends before the lease does, so a slow renewal makes this
        // replica stop first, never two at once.
        let deadline = now + self.lease_micros - self.tick.as_micros() as i64;
        self.store.heartbeat(&self.replica, expires_at).await?;
        let replicas = self.store.live_replicas(now).await?.len().max(1);
        let accounts = self.store.active_accounts().await?;
        let fair = accounts.len().div_ceil(replicas);
        let active: std::collections::BTreeSet<_> = accounts.iter().cloned().collect();

        // Renew what is held; drop what was lost or disabled.
        let mine: Vec<_> = self
            .held
            .lock()
            .map(|held| held.iter().map(|(k, v)| (k.clone(), v.0)).collect())
            .unwrap_or_default();
        let mut kept = 0usize;
        for (key, token) in mine {
            let (tenant, account) = &key;
            if !active.contains(&key) || kept >= fair {
                self.forget(&key);
                self.store
                    .release(tenant, account, &self.replica, token)
                    .await?;
                continue;
            }
            if self
                .store
                .renew(tenant, account, &self.replica, token, expires_at)
                .await?
            {
                self.hold(key, token, deadline);
                kept += 1;
            } else {
                tracing::info!(account = %account, "session lease lost");
                self.forget(&key);
            }
        }

        // Take free or expired leases up to the fair share.
        if kept < fair {
            let leases: BTreeMap<_, _> = self
                .store
                .all()
                .await?
                .into_iter()
                .map(|lease| ((lease.tenant_id.clone(), lease.account_id.clone()), lease))
                .collect();
            for key in accounts {
                if kept >= fair {
                    break;
                }
                let (tenant, account) = &key;
                let token = match leases.get(&key) {
                    None => {
                        self.store
                            .create(tenant, account, &self.replica, expires_at)
                            .await?
                    }
                    Some(lease) if lease.owner.is_empty() || lease.expires_at <= now => {
                        self.store
                            .take(tenant, account, &self.replica, lease.token, now, expires_at)
                            .await?
                    }
                    Some(_) => None,
                };
                if let Some(token) = token {
                    self.store
                        .record(tenant, account, &self.replica, token, now)
                        .await?;
                    self.hold(key.clone(), token, deadline);
                    kept += 1;
                }
            }
        }
        Ok(())
    }
}
