//! The durable consumer of `AuditRequested`: other services ask for audit records (access
//! denied, exports, handovers, credential changes, supervisors opening others'
//! conversations) and this appends them to the tenant's chain. A delivery is acked only
//! after the record is committed; a redelivery of the same event appends nothing.

use std::{sync::Arc, time::Duration};

use giao_bus::{ConsumerSpec, Delivery, EventBus, HandlerOutcome, envelope};
use giao_proto::events::{Envelope, envelope::Payload};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{domain::audit::NewAudit, error::Error, store::Store};

/// Durable consumer name shared by every auth replica.
pub const AUDIT_CONSUMER: &str = "auth-audit";

const MAX_FIELD_BYTES: usize = 512;
const MAX_DETAILS_BYTES: usize = 16 * 1024;

pub async fn consume(
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Store>,
    ack_wait: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let spec = ConsumerSpec {
        durable_name: AUDIT_CONSUMER.into(),
        filter_subjects: vec![envelope::subject_filter("audit_requested")],
        ack_wait,
        max_deliver: None,
        inactive_threshold: None,
    };
    giao_bus::run_consumer(bus, spec, shutdown, move |delivery: &Delivery| {
        let store = store.clone();
        let decoded = envelope::decode(delivery);
        async move {
            let (envelope, span) = match decoded {
                Ok(decoded) => decoded,
                Err(error) => return HandlerOutcome::Poison(format!("undecodable event: {error}")),
            };
            handle(store.as_ref(), envelope).instrument(span).await
        }
    })
    .await?;
    Ok(())
}

/// Appends one requested record; idempotent on the envelope's event id.
pub async fn handle(store: &dyn Store, envelope: Envelope) -> HandlerOutcome {
    let Some(Payload::AuditRequested(request)) = envelope.payload else {
        return HandlerOutcome::Done;
    };
    if envelope.tenant_id.is_empty() || envelope.event_id.is_empty() {
        return HandlerOutcome::Poison("audit request without tenant or event id".into());
    }
    if request.action.is_empty()
        || [&request.actor, &request.action, &request.target]
            .iter()
            .any(|field| field.len() > MAX_FIELD_BYTES)
        || request.details_json.len() > MAX_DETAILS_BYTES
    {
        return HandlerOutcome::Poison("audit request with a missing or oversized field".into());
    }
    let details_json = if request.details_json.is_empty() {
        "{}".to_string()
    } else if serde_json::from_str::<serde_json::Value>(&request.details_json).is_ok() {
        request.details_json
    } else {
        return HandlerOutcome::Poison("audit request details_json is not JSON".into());
    };
    let at = request
        .at
        .and_then(|at| {
            chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
        })
        .or_else(|| {
            envelope.occurred_at.and_then(|at| {
                chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
            })
        })
        .unwrap_or_else(chrono::Utc::now);
    let record = NewAudit {
        actor: request.actor,
        action: request.action,
        target: request.target,
        details_json,
        at,
        event_id: Some(envelope.event_id),
    };
    match store.append_audit(&envelope.tenant_id, &record).await {
        Ok(_) => HandlerOutcome::Done,
        Err(error @ (Error::Database(_) | Error::Bus(_))) => {
            HandlerOutcome::Retry(error.to_string())
        }
        Err(error) => HandlerOutcome::Poison(error.to_string()),
    }
}
