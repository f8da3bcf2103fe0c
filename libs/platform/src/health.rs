//! Health: a watcher runs each dependency probe (database, bus) on an interval and sets the
//! grpc.health.v1 status of every service the process serves. A lost database or bus turns
//! the service NOT_SERVING (so Kubernetes stops routing to it) and SERVING again once the
//! probe passes, without a restart.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

/// A named check of one dependency; `Err` carries a message for the logs.
pub struct Probe {
    pub name: &'static str,
    pub check: Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

impl Probe {
    pub fn new<F, Fut>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name,
            check: Box::new(move || Box::pin(check())),
        }
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").field("name", &self.name).finish()
    }
}

/// Shared readiness, read by the HTTP `/readyz` endpoint.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    failure: Arc<Mutex<Option<String>>>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.failure.lock().map(|f| f.is_none()).unwrap_or(false)
    }

    pub fn reason(&self) -> String {
        self.failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default()
    }

    fn set(&self, failure: Option<String>) {
        if let Ok(mut slot) = self.failure.lock() {
            *slot = failure;
        }
    }
}

/// Runs the probes every `interval` until `shutdown`, updating `services` (and the overall
/// "" entry) in the health reporter and `readiness`. On shutdown everything turns NOT_SERVING
/// first, so load balancers drain the process before it stops.
pub async fn watch(
    reporter: HealthReporter,
    services: Vec<String>,
    probes: Vec<Probe>,
    readiness: Readiness,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut serving: Option<bool> = None;
    loop {
        let mut failure = None;
        for probe in &probes {
            let outcome =
                tokio::time::timeout(interval.max(Duration::from_secs(1)), (probe.check)()).await;
            let result = match outcome {
                Ok(result) => result,
                Err(_) => Err("probe timed out".to_string()),
            };
            if let Err(reason) = result {
                failure = Some(format!("{}: {}", probe.name, reason));
                break;
            }
        }
        let now_serving = failure.is_none();
        if serving != Some(now_serving) {
            match &failure {
                Some(reason) => tracing::warn!(%reason, "dependency check failed, not serving"),
                None if serving.is_some() => tracing::info!("dependencies recovered, serving"),
                None => {}
            }
            set_all(&reporter, &services, now_serving).await;
            readiness.set(failure.clone());
            serving = Some(now_serving);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    readiness.set(Some("shutting down".into()));
    set_all(&reporter, &services, false).await;
}

async fn set_all(reporter: &HealthReporter, services: &[String], serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(service, status).await;
    }
}
