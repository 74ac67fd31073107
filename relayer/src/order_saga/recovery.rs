//! Recovery of sagas a dead (or frozen) replica abandoned: a sweep claims every log entry whose
//! lease ran out and, by the step it reached, compensates it or carries it forward (a
//! cancellation's entry is finished by [`super::cancel`]). The claim raises the entry's epoch,
//! which fences the replica that lost it out of every slot this one writes.
//!
//! With traces on, a recovery runs in a new trace linked to the saga's original span (its
//! `traceparent` from the log).
//!
//! May use: `otel`, `store`, the clock, and the saga's runner and log from its parent.

use std::time::Duration;

use tracing::Instrument as _;

use super::log::LogRecord;
use super::runner::Drive;
use super::{OrderSagas, Phase, Step};
use crate::store::{SagaEntry, StoreError};

impl OrderSagas {
    /// Claims and finishes or compensates every abandoned saga once; answers how many it
    /// took over.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let store = &self.deps.store;
        let mut taken = 0;
        if self.deps.handed_over() {
            // NB: this process is stopping and gave its own sagas up: it takes none over.
            return Ok(0);
        }
        for entry in store.saga_list().await? {
            // NB: read per entry: taking earlier ones over may have taken a while.
            let now = self.deps.now_ms();
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
            let lease_until_ms = now.saturating_add(self.deps.lease_ms);
            let Some(entry) = store
                .saga_claim(&entry.id, &self.deps.owner, lease_until_ms, now)
                .await?
            else {
                return Ok(false);
            };
            if entry.id.starts_with(super::cancel::PREFIX) {
                return Ok(self.recover_cancel(entry, lease_until_ms).await);
            }
            let record: LogRecord = match serde_json::from_str(&entry.record) {
                Ok(r) => r,
                Err(error) => {
                    tracing::error!(%error, saga = entry.id, "saga record unreadable: left for manual handling");
                    return Ok(false);
                }
            };
            let Some(step) = record.step() else {
                tracing::error!(
                    saga = entry.id,
                    "saga record names no step: left for manual handling"
                );
                return Ok(false);
            };
            tracing::info!(
                saga = entry.id,
                step = step.name(),
                phase = record.phase.as_str(),
                state = entry.state,
                "recovering an abandoned saga"
            );
            let plan = plan(step, record.phase);
            // NB: a trace of its own (this sweep is no request's work), linked to the one the
            // saga began in.
            let span = crate::otel::span_if_enabled(|| {
                let span = tracing::info_span!(
                    parent: None,
                    "recover saga",
                    otel.name = "order saga recovery",
                    saga.id = %entry.id,
                    step = step.name(),
                    phase = record.phase.as_str(),
                    trace_id = tracing::field::Empty,
                );
                if let Some(original) = &record.data.trace_parent {
                    crate::otel::link_to(&span, original);
                }
                crate::otel::record_trace_id(&span);
                span
            });
            let mut ctx = self.ctx(record.data);
            ctx.fence.hold(entry.epoch, lease_until_ms);
            if plan.settlement_in_doubt {
                ctx.data.in_doubt = true;
            }
            let how = plan.drive;
            let ended = async {
                let outcome = self.drive(&mut ctx, how).await;
                self.conclude(ctx, outcome).await
            }
            .instrument(span)
            .await;
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

/// What recovery does with a saga its log shows at `step`, going `phase`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// Which way to drive it, from where.
    pub(super) drive: Drive,
    /// Whether its settlement must be taken as in doubt (it had started).
    pub(super) settlement_in_doubt: bool,
}

/// Before settlement, compensate every step before it (the log records validate's start and
/// then settlement's, so any of them may have taken effect; compensations are safe for steps
/// that did not happen); at settlement or after, go forward; a saga found compensating
/// compensates again.
pub(super) fn plan(step: Step, phase: Phase) -> Plan {
    let (drive, settlement_in_doubt) = match (phase, step) {
        // NB: compensations are idempotent: redo all of those due.
        (Phase::Backward, failed) => (
            Drive::Backward(failed, "recovered while compensating".to_owned()),
            false,
        ),
        (Phase::Forward, Step::Validate | Step::Reserve | Step::Match) => (
            Drive::Backward(Step::Settle, format!("abandoned at {}", step.name())),
            false,
        ),
        // NB: settlement had started: it may have been accepted. Forward only.
        (Phase::Forward, Step::Settle) => (Drive::Forward(Step::Settle), true),
        (Phase::Forward, Step::Update) => (Drive::Forward(Step::Update), false),
    };
    Plan {
        drive,
        settlement_in_doubt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saga_abandoned_before_settlement_is_compensated_from_the_match_back() {
        let cases = [
            (Step::Validate, Step::Settle),
            (Step::Reserve, Step::Settle),
            (Step::Match, Step::Settle),
        ];
        for (at, failed) in cases {
            assert_eq!(
                plan(at, Phase::Forward),
                Plan {
                    drive: Drive::Backward(failed, format!("abandoned at {}", at.name())),
                    settlement_in_doubt: false,
                },
                "abandoned at {at}"
            );
        }
    }

    #[test]
    fn a_saga_abandoned_at_settlement_or_after_goes_forward_with_settlement_in_doubt_at_settle() {
        assert_eq!(
            plan(Step::Settle, Phase::Forward),
            Plan {
                drive: Drive::Forward(Step::Settle),
                settlement_in_doubt: true,
            }
        );
        assert_eq!(
            plan(Step::Update, Phase::Forward),
            Plan {
                drive: Drive::Forward(Step::Update),
                settlement_in_doubt: false,
            }
        );
    }

    #[test]
    fn a_saga_abandoned_while_compensating_compensates_again_from_the_step_that_failed() {
        for failed in Step::ALL {
            assert_eq!(
                plan(failed, Phase::Backward),
                Plan {
                    drive: Drive::Backward(failed, "recovered while compensating".to_owned()),
                    settlement_in_doubt: false,
                },
                "failed at {failed}"
            );
        }
    }
}
