//! The durable saga log: the record written to the store at each step and compensation
//! ([`DurableLog`], a saga observer), the fence that stops a saga whose log cannot be written,
//! the crash injection of `faultInjection.crashAtStep`, and the admin view of the log
//! ([`OrderSagas::list`], `GET /admin/sagas`).
//!
//! May use: `store`, `resilience::saga`, the clock, and the saga's context from its parent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{Deps, OrderCtx, OrderSagaData, OrderSagas, SAGA, Step};
use crate::resilience::saga::{SagaEvent, SagaObserver};
use crate::store::{FailedPlacement, FailureKind, SagaEntry, StoreError};

/// The log entry's record: the data and where the saga is.
///
/// NB: its JSON is what a running (older or newer) replica reads back to recover the saga, so
/// its shape does not change: the step is its position ([`Step::index`]), the phase
/// `forward` or `backward`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogRecord {
    pub(super) data: OrderSagaData,
    /// Position of the step started last (forward) or that failed (backward); read with
    /// [`LogRecord::step`].
    step: usize,
    pub(super) phase: Phase,
    pub(super) error: Option<String>,
}

impl LogRecord {
    /// The record of where `ctx` is now.
    fn of(ctx: &OrderCtx, error: Option<String>) -> Self {
        Self {
            data: ctx.data.clone(),
            step: ctx.step().index(),
            phase: ctx.phase(),
            error,
        }
    }

    /// The step recorded; `None` when the position names no step (data this build did not
    /// write).
    pub(super) fn step(&self) -> Option<Step> {
        Step::from_index(self.step)
    }
}

/// Which way a saga is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Compensating.
    Backward,
    /// Running its steps.
    // NB: any phase other than `backward` has always been read as forward (and serde wants
    // the catch-all last).
    #[serde(other)]
    Forward,
}

impl Phase {
    /// `forward` or `backward`, as in the log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Backward => "backward",
        }
    }
}

/// Whether a saga may take its next step, and the fencing token its writes carry.
#[derive(Debug, Default)]
pub(super) struct Fence {
    /// Set when a log write failed: the saga must not take another step.
    pub(super) fenced: AtomicBool,
    /// Set when another replica took the saga over: this process must leave it.
    pub(super) lease_lost: AtomicBool,
    /// The log entry's epoch once this process wrote or claimed it; 0 before its first write.
    epoch: AtomicU64,
    /// The end of the lease as last written or renewed, ms since the Unix epoch.
    lease_until_ms: AtomicU64,
}

impl Fence {
    pub(super) fn lose_lease(&self) {
        self.lease_lost.store(true, Ordering::Release);
        self.fenced.store(true, Ordering::Release);
    }

    /// Holds the entry at `epoch` until `lease_until_ms`.
    pub(super) fn hold(&self, epoch: u64, lease_until_ms: u64) {
        self.epoch.store(epoch, Ordering::Release);
        self.lease_until_ms.store(lease_until_ms, Ordering::Release);
    }

    /// The entry's epoch (0: not written yet).
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The lease's end as last written or renewed.
    pub(super) fn lease_until_ms(&self) -> u64 {
        self.lease_until_ms.load(Ordering::Acquire)
    }

    /// Whether the saga's log entry exists (this process wrote or claimed it).
    pub(super) fn created(&self) -> bool {
        self.epoch() > 0
    }

    /// The token of saga `id`'s store writes.
    pub(super) fn token(&self, id: &str) -> crate::store::Fence {
        crate::store::Fence {
            saga_id: id.to_owned(),
            epoch: self.epoch(),
            lease_until_ms: self.lease_until_ms(),
        }
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
        let record = match serde_json::to_string(&LogRecord::of(ctx, error)) {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(%error, "saga record cannot be encoded");
                ctx.fence.fenced.store(true, Ordering::Release);
                return;
            }
        };
        let id = ctx.data.order.order_id.clone();
        write_entry(deps, &ctx.fence, id, state, record).await;
    }

    /// Records a compensated placement's failure on its claim (so a retry replays it);
    /// false when the store did not take it (the entry then stays for recovery to redo).
    async fn record_failure(ctx: &OrderCtx) -> bool {
        let data = &ctx.data;
        if data.duplicate.is_some() {
            return true;
        }
        let o = &data.order;
        let failed = match (&data.refused, &data.not_settled) {
            (Some(refused), _) => FailedPlacement {
                kind: FailureKind::Refused,
                message: refused.clone(),
            },
            (None, Some(why)) => FailedPlacement {
                kind: FailureKind::NotSettled,
                message: why.clone(),
            },
            (None, None) => FailedPlacement {
                kind: FailureKind::NotPlaced,
                message: format!(
                    "order {} was not placed: its placement was interrupted and undone; nothing \
                     of it is reserved",
                    o.client_id()
                ),
            },
        };
        let token = ctx.token();
        match ctx
            .deps
            .store
            .fail_claim(
                &o.user_id,
                o.client_id(),
                &o.order_id,
                failed,
                token.as_ref(),
            )
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, order = %o.order_id, "failure of a compensated placement not recorded on its claim yet");
                false
            }
        }
    }
}

/// How [`write_entry`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wrote {
    /// Written: created now, or held already.
    Held,
    /// The first write found the entry there (an earlier attempt of the same work, e.g. a
    /// repeated cancellation) and took it over: the work may be half done.
    TookOver,
    /// Not written: the saga is fenced (lease lost, or the store failed).
    Refused,
}

/// Writes saga `id`'s entry as `state` with `record` under `fence`: creates it at the first
/// write, then only while this process holds it. A refusal or a store failure fences the saga.
pub(super) async fn write_entry(
    deps: &Deps,
    fence: &Fence,
    id: String,
    state: &str,
    record: String,
) -> Wrote {
    let now = deps.now_ms();
    let lease_until_ms = now.saturating_add(deps.lease_ms);
    let create = !fence.created();
    let mut entry = SagaEntry {
        id,
        owner: deps.owner.clone(),
        epoch: fence.epoch(),
        lease_until_ms,
        state: state.to_owned(),
        record,
    };
    let mut written = deps.store.saga_write(&entry, create).await;
    let mut took_over = false;
    if create && matches!(written, Ok(false)) {
        // NB: the entry is there already: our own first write whose answer was lost, or an
        // earlier attempt of the same work (whose lease ran out, or is this process's): take
        // it over and write again.
        match deps
            .store
            .saga_claim(&entry.id, &deps.owner, lease_until_ms, now)
            .await
        {
            Ok(Some(held)) => {
                entry.epoch = held.epoch;
                took_over = true;
                written = deps.store.saga_write(&entry, false).await;
            }
            Ok(None) => {}
            Err(e) => written = Err(e),
        }
    }
    match written {
        Ok(true) => {
            fence.hold(entry.epoch.max(1), lease_until_ms);
            if took_over {
                Wrote::TookOver
            } else {
                Wrote::Held
            }
        }
        Ok(false) => {
            tracing::warn!(
                saga = entry.id,
                "saga lease lost to another replica (or the saga ended): stopping"
            );
            fence.lose_lease();
            Wrote::Refused
        }
        Err(error) => {
            tracing::warn!(%error, saga = entry.id, "saga log write failed: stopping");
            fence.fenced.store(true, Ordering::Release);
            Wrote::Refused
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
            match event {
                SagaEvent::StepFailed(name, _) => {
                    if let Some(step) = Step::named(name) {
                        ctx.set_step(step);
                    }
                }
                SagaEvent::Compensating => ctx.set_phase(Phase::Backward),
                _ => {}
            }
            match event {
                SagaEvent::StepStarted(name) => {
                    let step = Step::named(name);
                    if let Some(step) = step {
                        ctx.set_step(step);
                    }
                    // NB: the log starts before validate (which claims the order id), and the
                    // next record is due before settlement: recovery compensates everything
                    // before it (each compensation is safe for a step that did not happen),
                    // and settlement needs the match on record.
                    if durable && matches!(step, Some(Step::Validate | Step::Settle)) {
                        Self::write(ctx, "running", None).await;
                    }
                    crash_if(deps, &format!("before:{name}"));
                }
                SagaEvent::StepCompleted(name) => {
                    // NB: the settled keys are recorded at once, so a recovery after this point
                    // does not send them again; the other steps' completion is recorded by the
                    // next step's start (nothing happens in between).
                    let settled_something = !ctx.data.settled.is_empty();
                    if durable && Step::named(name) == Some(Step::Settle) && settled_something {
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
                SagaEvent::Completed | SagaEvent::Compensated => {
                    // NB: a compensated placement's failure is on its claim before its entry
                    // goes; if it cannot be recorded now the entry stays and recovery redoes it.
                    let recorded =
                        !matches!(event, SagaEvent::Compensated) || Self::record_failure(ctx).await;
                    if durable
                        && recorded
                        && let Err(error) = deps
                            .store
                            .saga_delete(&ctx.data.order.order_id, &deps.owner, ctx.fence.epoch())
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
                    "saga": if e.id.starts_with(super::cancel::PREFIX) { "cancel" } else { SAGA },
                    "orderId": record.pointer("/data/order/clientOrderId")
                        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                        .or_else(|| record.pointer("/data/order/orderId")),
                    "state": e.state,
                    "owner": e.owner,
                    "leaseUntilMs": e.lease_until_ms,
                    "step": record.get("step").and_then(serde_json::Value::as_u64)
                        .and_then(|i| usize::try_from(i).ok())
                        .and_then(Step::from_index)
                        .map(Step::name),
                    "phase": record.get("phase"),
                    "error": record.get("error"),
                    "data": record.get("data"),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MarketKey, Order, Side, UserId};

    fn data() -> OrderSagaData {
        let user = UserId::parse("u", &format!("0x{}", "01".repeat(20))).expect("valid");
        let market = MarketKey::parse("m", "80002:1").expect("valid");
        OrderSagaData {
            order: Order::new("o-1".to_owned(), market, user, Side::Buy, 400_000, 4, 0),
            matched: None,
            settled: vec!["trade:t-1".to_owned()],
            in_doubt: false,
            undo: None,
            refused: None,
            refusal: None,
            not_settled: None,
            fingerprint: String::new(),
            duplicate: None,
            trace_parent: None,
        }
    }

    #[test]
    fn a_log_record_keeps_its_wire_form_a_step_position_and_a_lowercase_phase() {
        let record = LogRecord {
            data: data(),
            step: Step::Settle.index(),
            phase: Phase::Backward,
            error: Some("why".to_owned()),
        };
        let json: serde_json::Value = serde_json::to_value(&record).expect("a record encodes");
        assert_eq!(json["step"], 3);
        assert_eq!(json["phase"], "backward");
        assert_eq!(json["error"], "why");
        assert_eq!(json["data"]["settled"][0], "trade:t-1");
        let back: LogRecord = serde_json::from_value(json).expect("a record decodes");
        assert_eq!(back.step(), Some(Step::Settle));
        assert_eq!(back.phase, Phase::Backward);
    }

    #[test]
    fn a_log_record_written_by_an_older_build_reads_back_the_same() {
        let mut json = serde_json::to_value(LogRecord {
            data: data(),
            step: 0,
            phase: Phase::Forward,
            error: None,
        })
        .expect("a record encodes");
        assert_eq!(json["phase"], "forward");
        json["step"] = 1.into();
        let read: LogRecord = serde_json::from_value(json.clone()).expect("decodes");
        assert_eq!(
            (read.step(), read.phase),
            (Some(Step::Reserve), Phase::Forward)
        );
        // NB: any phase but `backward` was always read as forward.
        json["phase"] = "sideways".into();
        let read: LogRecord = serde_json::from_value(json.clone()).expect("decodes");
        assert_eq!(read.phase, Phase::Forward);
        json["step"] = 5.into();
        let read: LogRecord = serde_json::from_value(json).expect("decodes");
        assert_eq!(read.step(), None);
    }
}
