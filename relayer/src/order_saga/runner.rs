//! Driving a saga: forward or backward on the executor with the lease heartbeat beside it, the
//! background carry-on of a process's own pending sagas, and the caller's answer once a saga
//! ended ([`Ended`]).
//!
//! May use: `store`, `resilience`, the clock, and the saga's context and log from its parent.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::log::Fence;
use super::{Ended, Matched, OrderCtx, OrderSagas, Phase, Step};
use crate::resilience::backoff::Backoff;
use crate::resilience::saga::SagaOutcome;
use crate::store::PlacementRecord;

/// How long a process retries its own pending saga before leaving it to recovery.
const CARRY_ON_FOR: Duration = Duration::from_secs(600);
/// First and largest pause between those retries (doubling in between).
const CARRY_ON_MIN_DELAY: Duration = Duration::from_millis(50);
const CARRY_ON_MAX_DELAY: Duration = Duration::from_secs(2);

/// The pauses between a pending saga's retries: 50 ms, 100 ms, … up to 2 s.
fn carry_on_backoff() -> Backoff {
    Backoff::doubling(CARRY_ON_MIN_DELAY, CARRY_ON_MAX_DELAY)
}

impl OrderSagas {
    /// Retries a pending saga forward in the background (same idempotency keys and op ids)
    /// until it ends, another replica takes it over, or [`CARRY_ON_FOR`] has passed (then the
    /// recovery sweep, of any replica, takes it from its log).
    /// A saga found pending while compensating is resumed backward (its compensations are
    /// idempotent), any other forward. How it ends is sent on `tx`.
    pub(super) async fn carry_on(self, mut ctx: OrderCtx, tx: watch::Sender<Option<Ended>>) {
        let id = ctx.data.order.order_id.clone();
        let deadline = tokio::time::Instant::now() + CARRY_ON_FOR;
        let mut backoff = carry_on_backoff();
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            ctx.fence.fenced.store(false, Ordering::Release);
            // NB: the lease may have run out during the pause; renewed first (or found lost).
            if let Err(error) = ctx.ensure_lease().await {
                if ctx.fence.lease_lost.load(Ordering::Acquire) {
                    tracing::warn!(saga = id, %error, "pending saga taken over by another replica");
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(saga = id, "pending saga left to recovery");
                    break;
                }
                continue;
            }
            let how = match ctx.phase() {
                Phase::Forward => Drive::Forward(ctx.step()),
                Phase::Backward => {
                    Drive::Backward(ctx.step(), "resumed while compensating".to_owned())
                }
            };
            let outcome = self.drive(&mut ctx, how).await;
            let pending = matches!(outcome, SagaOutcome::Pending { .. });
            if !pending {
                self.deps.set_active(&id, false);
                let ended = self.conclude(ctx, outcome).await;
                tracing::info!(saga = id, ?ended, "pending saga ended");
                tx.send_replace(Some(ended));
                return;
            }
            if ctx.fence.lease_lost.load(Ordering::Acquire)
                || tokio::time::Instant::now() >= deadline
            {
                tracing::warn!(saga = id, "pending saga left to recovery");
                break;
            }
        }
        self.deps.set_active(&id, false);
    }

    pub(super) async fn drive(&self, ctx: &mut OrderCtx, how: Drive) -> SagaOutcome {
        let heartbeat = self.heartbeat(ctx.data.order.order_id.clone(), ctx.fence.clone());
        let run = async {
            match how {
                Drive::Forward(from) => self.executor.resume(ctx, from.index()).await,
                Drive::Backward(failed, error) => {
                    ctx.set_phase(Phase::Backward);
                    ctx.set_step(failed);
                    self.executor
                        .resume_compensation(ctx, failed.index(), failed.name(), error)
                        .await
                }
            }
        };
        tokio::pin!(run, heartbeat);
        // NB: biased, so a saga that completes at its first poll (the in-memory store with the
        // embedded ledger) never starts the heartbeat's timer.
        tokio::select! {
            biased;
            outcome = &mut run => outcome,
            () = &mut heartbeat => run.await,
        }
    }

    /// Renews the lease of a running saga every third of it, so a long step (settlement
    /// retries) keeps it; marks the lease lost when another replica holds it. Never ends
    /// while it renews (a lost lease or a log that is off ends it).
    async fn heartbeat(&self, id: String, fence: Arc<Fence>) {
        if !self.deps.durable {
            return;
        }
        let every = Duration::from_millis((self.deps.lease_ms / 3).max(1));
        loop {
            tokio::time::sleep(every).await;
            if !fence.created() || self.deps.handed_over() {
                // NB: the log's first write has not happened (or failed): nothing to renew; or
                // this process gave its sagas up (`hand_over`).
                continue;
            }
            let now = self.deps.now_ms();
            match self
                .deps
                .store
                .saga_claim(
                    &id,
                    &self.deps.owner,
                    now.saturating_add(self.deps.lease_ms),
                    now,
                )
                .await
            {
                Ok(Some(held)) if held.epoch == fence.epoch() => {
                    fence.hold(held.epoch, now.saturating_add(self.deps.lease_ms));
                }
                Ok(_) => {
                    tracing::warn!(saga = id, "saga lease lost: stopping at the next step");
                    fence.lose_lease();
                    return;
                }
                // NB: the next log write finds out whether the store is back.
                Err(error) => tracing::warn!(%error, saga = id, "saga lease not renewed"),
            }
        }
    }

    /// The caller's answer after the saga ended (its claim was updated by the steps and the
    /// log: see [`super::log`]).
    pub(super) async fn conclude(&self, ctx: OrderCtx, outcome: SagaOutcome) -> Ended {
        let data = ctx.data;
        match outcome {
            SagaOutcome::Completed => {
                let m = data.matched.unwrap_or(Matched {
                    order: data.order,
                    fills: Vec::new(),
                    self_trade_cancelled: Vec::new(),
                });
                Ended::Completed(PlacementRecord {
                    order: m.order,
                    fills: m.fills,
                })
            }
            SagaOutcome::Compensated { error, .. } => {
                if let Some(claim) = data.duplicate {
                    Ended::Duplicate(claim)
                } else if let Some(r) = data.refusal {
                    Ended::Refused(r)
                } else if let Some(n) = data.not_settled {
                    Ended::NotSettled(n)
                } else {
                    Ended::Compensated(error)
                }
            }
            SagaOutcome::Pending { error, .. } => Ended::Pending {
                settlement: data.in_doubt,
                error,
            },
            SagaOutcome::Manual { error, .. } => Ended::Manual(error),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Drive {
    /// Run the steps from this one on.
    Forward(Step),
    /// Compensate the steps before this one (in reverse), as if it had failed, with why.
    Backward(Step, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_saga_is_retried_after_doubling_pauses_from_50_ms_to_2_s() {
        let mut backoff = carry_on_backoff();
        let pauses: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(pauses, [50, 100, 200, 400, 800, 1_600, 2_000, 2_000]);
    }
}
