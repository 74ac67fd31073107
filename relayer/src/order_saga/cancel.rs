//! Durable cancellation: a cancel takes the order out of the book and then releases what it
//! still had reserved, two slots and so two store steps. Its saga log entry
//! (`cancel:<placementId>`) is written before the book changes and deleted after the release,
//! so a crash, a store failure or a normal exit in between leaves work that recovery (of any
//! replica) finishes, and so does a repeated cancel, which takes the entry over: the book's
//! cancellation is replayed with the release it recorded (see
//! [`crate::store::Store::cancel_order_releasing`]) and the release, under the order's
//! `release:` op id, happens once. Its writes carry the entry's fence like an order saga's.
//!
//! May use: `domain`, `book`, `store`, and the saga log and context from its parent.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::log::{Fence, Wrote, crash_if, write_entry};
use super::{Deps, OrderSagas};
use crate::book::CancelError;
use crate::domain::{MarketKey, Move, Order, OrderStatus, UserId};
use crate::store::{SagaEntry, StoreError};

/// The id prefix of a cancellation's log entry.
pub(super) const PREFIX: &str = "cancel:";

/// A cancellation's log record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelRecord {
    cancel: Cancellation,
}

/// What is cancelled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cancellation {
    market_key: MarketKey,
    /// The order's placement id ([`Order::order_id`]).
    placement_id: String,
    user_id: UserId,
}

/// How a cancellation ended, for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelEnded {
    /// Out of the book, its reservation released.
    Cancelled(Order),
    /// Logged but not finished (the store failed after the log was written): recovery
    /// finishes it.
    Pending(String),
    /// No such order of this user in the book.
    NotFound,
    /// The order is filled or cancelled already.
    NotOpen(OrderStatus),
    /// The store failed before anything was done.
    Unavailable(String),
}

impl OrderSagas {
    /// Cancels `user`'s order `placement` in `market` and releases its reservation, durably
    /// (see the module docs).
    pub async fn cancel(&self, market: &MarketKey, placement: &str, user: &UserId) -> CancelEnded {
        let what = Cancellation {
            market_key: market.clone(),
            placement_id: placement.to_owned(),
            user_id: user.clone(),
        };
        let id = format!("{PREFIX}{placement}");
        let fence = Arc::new(Fence::default());
        // NB: marked before the log is written, so this process's own recovery sweep leaves
        // the entry to this call.
        if !self.deps.set_active(&id, true) {
            return CancelEnded::Pending("a cancellation of this order is in progress".to_owned());
        }
        let ended = self.cancel_logged(&id, what, &fence).await;
        self.deps.set_active(&id, false);
        ended
    }

    async fn cancel_logged(&self, id: &str, what: Cancellation, fence: &Fence) -> CancelEnded {
        let mut again = false;
        if self.deps.durable {
            let record = match serde_json::to_string(&CancelRecord {
                cancel: what.clone(),
            }) {
                Ok(r) => r,
                Err(e) => return CancelEnded::Unavailable(e.to_string()),
            };
            // NB: a repeated cancel that finds an earlier one's entry takes it over and
            // finishes it: its book change may have happened, its release not yet.
            again = write_entry(&self.deps, fence, id.to_owned(), "running", record).await
                == Wrote::TookOver;
            if fence.lease_lost.load(Ordering::Acquire) {
                return CancelEnded::Pending(
                    "a cancellation of this order is in progress".to_owned(),
                );
            }
            if !fence.created() {
                return CancelEnded::Unavailable("the cancellation could not be logged".to_owned());
            }
        }
        finish(&self.deps, id, &what, fence, again).await
    }

    /// Finishes a cancellation found in the log (its entry just claimed until
    /// `lease_until_ms`); true when it was taken over.
    pub(super) async fn recover_cancel(&self, entry: SagaEntry, lease_until_ms: u64) -> bool {
        let record: CancelRecord = match serde_json::from_str(&entry.record) {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(%error, saga = entry.id, "cancellation record unreadable: left for manual handling");
                return false;
            }
        };
        let fence = Fence::default();
        fence.hold(entry.epoch, lease_until_ms);
        let ended = finish(&self.deps, &entry.id, &record.cancel, &fence, true).await;
        tracing::info!(saga = entry.id, ?ended, "recovered cancellation ended");
        true
    }
}

/// The cancellation's store steps after its log entry: the book (`again` in recovery), then
/// the release, then the entry goes. The entry stays (for recovery) when a step fails for the
/// store.
async fn finish(
    deps: &Deps,
    id: &str,
    what: &Cancellation,
    fence: &Fence,
    again: bool,
) -> CancelEnded {
    let store = &deps.store;
    let token = deps.durable.then(|| fence.token(id));
    let done = || async {
        if deps.durable
            && let Err(error) = store.saga_delete(id, &deps.owner, fence.epoch()).await
        {
            tracing::warn!(%error, saga = id, "finished cancellation's log entry not deleted");
        }
    };
    let (market, placement, user) = (&what.market_key, &what.placement_id, &what.user_id);
    let cancelled = store
        .cancel_order_releasing(market, placement, user, token.as_ref(), again)
        .await;
    // NB: the release is what the book recorded when the order left it, not recomputed from
    // the order now (an undo of its own placement may have changed its figures since).
    let (order, amount) = match cancelled {
        Ok(Ok(cancelled)) => cancelled,
        Ok(Err(CancelError::NotFound)) => {
            done().await;
            return CancelEnded::NotFound;
        }
        Ok(Err(CancelError::NotOpen(status))) => {
            done().await;
            return CancelEnded::NotOpen(status);
        }
        Err(e) => return pending(deps, e),
    };
    crash_if(deps, "after:cancel");
    if amount > 0 {
        let moves = [Move::release(order.reserved_asset(), amount)];
        let op = format!("release:{}", order.order_id);
        let released = match &token {
            Some(f) => {
                store
                    .apply_moves_fenced(&order.user_id, &op, &moves, f)
                    .await
            }
            None => store.apply_moves_once(&order.user_id, &op, &moves).await,
        };
        match released {
            Ok(Ok(_)) => {}
            Ok(Err(refused)) => {
                // NB: the book accounted for this reservation; a refusal is an invariant
                // breach for a person to look at. The entry stays, listed in /admin/sagas.
                tracing::error!(order = %order.order_id, error = %refused, "release of a cancelled order refused");
                return CancelEnded::Pending(format!("release refused: {refused}"));
            }
            Err(e) => return pending(deps, e),
        }
    }
    done().await;
    CancelEnded::Cancelled(order)
}

fn pending(deps: &Deps, e: StoreError) -> CancelEnded {
    if deps.durable {
        tracing::warn!(error = %e, "cancellation interrupted; recovery finishes it");
        CancelEnded::Pending(e.to_string())
    } else {
        CancelEnded::Unavailable(e.to_string())
    }
}
