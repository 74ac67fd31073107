//! The durable saga log: the record written to the store at each step and compensation
//! ([`DurableLog`], a saga observer), the fence that stops a saga whose log cannot be written,
//! the crash injection of `faultInjection.crashAtStep`, and the admin view of the log
//! ([`OrderSagas::list`], `GET /admin/sagas`).
//!
//! May use: `store`, `resilience::saga`, the clock, and the saga's context from its parent.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{Deps, OrderCtx, OrderSagaData, OrderSagas, SAGA};
use crate::config::ORDER_SAGA_STEPS;
use crate::resilience::saga::{SagaEvent, SagaObserver};
use crate::server::now_ms;
use crate::store::{SagaEntry, StoreError};

/// The log entry's record: the data and where the saga is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogRecord {
    pub(super) data: OrderSagaData,
    /// Index of the step started last (forward) or that failed (backward).
    pub(super) step: usize,
    /// `forward` or `backward`.
    pub(super) phase: String,
    pub(super) error: Option<String>,
}

/// Whether a saga may take its next step.
#[derive(Debug, Default)]
pub(super) struct Fence {
    /// Set when a log write failed: the saga must not take another step.
    pub(super) fenced: AtomicBool,
    /// Set when another replica took the saga over: this process must leave it.
    pub(super) lease_lost: AtomicBool,
}

impl Fence {
    pub(super) fn lose_lease(&self) {
        self.lease_lost.store(true, Ordering::Release);
        self.fenced.store(true, Ordering::Release);
    }
}

pub(super) fn crash_if(deps: &Deps, point: &str) {
    if deps.crash_at.as_deref() == Some(point) {
        tracing::error!(point, "faultInjection.crashAtStep: aborting");
        std::process::abort();
    }
}

/// Writes the saga log at each event (see the module docs).
pub(super) struct DurableLog;

impl DurableLog {
    async fn write(ctx: &OrderCtx, state: &str, error: Option<String>) {
        let deps = &ctx.deps;
        let record = LogRecord {
            data: ctx.data.clone(),
            step: ctx.step.load(Ordering::Acquire),
            phase: if ctx.backward.load(Ordering::Acquire) {
                "backward"
            } else {
                "forward"
            }
            .to_owned(),
            error,
        };
        let record = match serde_json::to_string(&record) {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(%error, "saga record cannot be encoded");
                ctx.fence.fenced.store(true, Ordering::Release);
                return;
            }
        };
        let lease_until_ms = now_ms().saturating_add(deps.lease_ms);
        let entry = SagaEntry {
            id: ctx.data.order.order_id.clone(),
            owner: deps.owner.clone(),
            lease_until_ms,
            state: state.to_owned(),
            record,
        };
        match deps.store.saga_write(&entry).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    saga = entry.id,
                    "saga lease lost to another replica: stopping"
                );
                ctx.fence.fenced.store(true, Ordering::Release);
            }
            Err(error) => {
                tracing::warn!(%error, saga = entry.id, "saga log write failed: stopping");
                ctx.fence.fenced.store(true, Ordering::Release);
            }
        }
    }
}

impl SagaObserver<OrderCtx> for DurableLog {
    fn on_event<'a>(
        &'a self,
        _: &'static str,
        event: &'a SagaEvent,
        ctx: &'a OrderCtx,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let deps = &ctx.deps;
            let durable = deps.durable;
            let index = |name: &str| ORDER_SAGA_STEPS.iter().position(|s| *s == name);
            match event {
                SagaEvent::StepFailed(name, _) => {
                    if let Some(i) = index(name) {
                        ctx.step.store(i, Ordering::Release);
                    }
                }
                SagaEvent::Compensating => ctx.backward.store(true, Ordering::Release),
                _ => {}
            }
            match event {
                SagaEvent::StepStarted(name) => {
                    if let Some(i) = index(name) {
                        ctx.step.store(i, Ordering::Release);
                    }
                    // NB: validate has no effect to recover; the log starts before reserve.
                    if durable && *name != ORDER_SAGA_STEPS[0] {
                        Self::write(ctx, "running", None).await;
                    }
                    crash_if(deps, &format!("before:{name}"));
                }
                SagaEvent::StepCompleted(name) => {
                    // NB: the settled keys are recorded at once, so a recovery after this point
                    // does not send them again; the other steps' completion is recorded by the
                    // next step's start (nothing happens in between).
                    let settled_something = !ctx.data.settled.is_empty();
                    if durable && *name == ORDER_SAGA_STEPS[3] && settled_something {
                        Self::write(ctx, "running", None).await;
                    }
                    crash_if(deps, &format!("after:{name}"));
                }
                SagaEvent::Compensating | SagaEvent::StepCompensated(_) if durable => {
                    Self::write(ctx, "compensating", None).await;
                }
                SagaEvent::Pending(_, e) if durable => {
                    Self::write(ctx, "pending", Some(e.clone())).await;
                }
                SagaEvent::Manual(_, e) if durable => {
                    Self::write(ctx, "manual", Some(e.clone())).await;
                }
                SagaEvent::Completed | SagaEvent::Compensated if durable => {
                    if let Err(error) = deps
                        .store
                        .saga_delete(&ctx.data.order.order_id, &deps.owner)
                        .await
                    {
                        // NB: the entry stays; recovery finds the saga finished and deletes it.
                        tracing::warn!(%error, "finished saga's log entry not deleted");
                    }
                }
                _ => {}
            }
        })
    }
}

impl OrderSagas {
    /// Every saga log entry in `state` (e.g. `manual`), with its record as JSON.
    pub async fn list(&self, state: Option<&str>) -> Result<Vec<serde_json::Value>, StoreError> {
        let entries = self.deps.store.saga_list().await?;
        Ok(entries
            .into_iter()
            .filter(|e| state.is_none_or(|s| e.state == s))
            .map(|e| {
                let record: serde_json::Value =
                    serde_json::from_str(&e.record).unwrap_or(serde_json::Value::Null);
                serde_json::json!({
                    "sagaId": e.id,
                    "saga": SAGA,
                    "state": e.state,
                    "owner": e.owner,
                    "leaseUntilMs": e.lease_until_ms,
                    "step": record.get("step").and_then(serde_json::Value::as_u64)
                        .and_then(|i| ORDER_SAGA_STEPS.get(usize::try_from(i).unwrap_or(usize::MAX)).copied()),
                    "phase": record.get("phase"),
                    "error": record.get("error"),
                    "data": record.get("data"),
                })
            })
            .collect())
    }
}
