//! Recovery of sagas a dead (or frozen) replica abandoned: a sweep claims every log entry whose
//! lease ran out and, by the step it reached, compensates it or carries it forward.
//!
//! May use: `store`, the clock, and the saga's runner and log from its parent.

use std::time::Duration;

use super::OrderSagas;
use super::log::LogRecord;
use super::runner::Drive;
use crate::config::ORDER_SAGA_STEPS;
use crate::server::now_ms;
use crate::store::{SagaEntry, StoreError};

impl OrderSagas {
    /// Claims and finishes or compensates every abandoned saga once; answers how many it
    /// took over.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let store = &self.deps.store;
        let now = now_ms();
        let mut taken = 0;
        for entry in store.saga_list().await? {
            if !entry.claimable_by(&self.deps.owner, now) {
                continue;
            }
            // NB: marked before the claim so a saga this process starts driving in between is
            // not taken twice; sagas this process drives already are left alone.
            if !self.deps.set_active(&entry.id, true) {
                continue;
            }
            let swept = self.sweep_one(entry, now).await;
            taken += usize::from(swept);
        }
        Ok(taken)
    }

    /// Claims and drives one entry; true when it was taken over.
    async fn sweep_one(&self, entry: SagaEntry, now: u64) -> bool {
        let id = entry.id.clone();
        let taken = self.take_over(entry, now).await;
        self.deps.set_active(&id, false);
        match taken {
            Ok(taken) => taken,
            Err(error) => {
                tracing::warn!(%error, saga = id, "recovery of a saga failed; retried next sweep");
                false
            }
        }
    }

    async fn take_over(&self, entry: SagaEntry, now: u64) -> Result<bool, StoreError> {
        let store = &self.deps.store;
        {
            let Some(entry) = store
                .saga_claim(
                    &entry.id,
                    &self.deps.owner,
                    now.saturating_add(self.deps.lease_ms),
                    now,
                )
                .await?
            else {
                return Ok(false);
            };
            let record: LogRecord = match serde_json::from_str(&entry.record) {
                Ok(r) => r,
                Err(error) => {
                    tracing::error!(%error, saga = entry.id, "saga record unreadable: left for manual handling");
                    return Ok(false);
                }
            };
            tracing::info!(
                saga = entry.id,
                step = record.step,
                phase = record.phase,
                state = entry.state,
                "recovering an abandoned saga"
            );
            let mut ctx = self.ctx(record.data);
            const SETTLE: usize = 3;
            let how = if record.phase == "backward" {
                // NB: compensations are idempotent: redo all of those due.
                Drive::Backward(record.step, "recovered while compensating".to_owned())
            } else if record.step < SETTLE {
                // The step that had started may or may not have taken effect: compensate it
                // too (compensations are safe for steps that did not happen).
                Drive::Backward(
                    record.step + 1,
                    format!(
                        "abandoned at {}",
                        ORDER_SAGA_STEPS.get(record.step).copied().unwrap_or("?")
                    ),
                )
            } else {
                if record.step == SETTLE {
                    // NB: settlement had started: it may have been accepted. Forward only.
                    ctx.data.in_doubt = true;
                }
                Drive::Forward(record.step)
            };
            let outcome = self.drive(&mut ctx, how).await;
            let ended = self.conclude(ctx, outcome).await;
            tracing::info!(saga = entry.id, ?ended, "recovered saga ended");
        }
        Ok(true)
    }

    /// Sweeps every `interval` until `stop` resolves (the first sweep at once).
    pub async fn recover_periodically(
        self,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sagas = n, "recovered abandoned sagas"),
                Err(error) => tracing::warn!(%error, "saga recovery sweep failed"),
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
