//! The order saga's steps and their compensations, and the [`definition`] that strings them
//! together for the [`SagaExecutor`](crate::resilience::saga::SagaExecutor). Every step and
//! compensation is idempotent (see the parent module's semantics).
//!
//! May use: `domain`, `book`, `store`, `resilience::saga`, `settlement`, and the saga's context
//! from its parent.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::log::crash_if;
use super::{Matched, OrderCtx, SAGA};
use crate::book::UndoOutcome;
use crate::domain::{Asset, BalanceError, Fill, Move, Order, UserId};
use crate::resilience::saga::{self, SagaDefinition, StepError};
use crate::settlement::SettleError;
use crate::store::{Claim, ClaimOutcome, Fence, PlacementRecord, Store, StoreError};

/// One step of the order saga, in execution order.
///
/// Its [`name`](Step::name) is what logs, the `step` label of `foresight_saga_steps_total`,
/// `faultInjection.crashAtStep` and `GET /admin/sagas` show (the same as
/// [`crate::config::ORDER_SAGA_STEPS`]); the saga log records a step by its position
/// ([`Step::index`]), which is also its position in [`definition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Checks the order is placeable; nothing to undo.
    Validate,
    /// Reserves the order's collateral or shares; undone by releasing them.
    Reserve,
    /// Matches the order in the book; undone by reverting the fills.
    Match,
    /// Settles the fills: the pivot; once it may have happened, only forward.
    Settle,
    /// Moves the balances of the fills; undone by the inverse moves.
    Update,
}

impl Step {
    /// Every step, in execution order.
    pub const ALL: [Step; 5] = [
        Step::Validate,
        Step::Reserve,
        Step::Match,
        Step::Settle,
        Step::Update,
    ];

    /// The step's name (metric label, logs, crash points).
    pub const fn name(self) -> &'static str {
        match self {
            Step::Validate => "validate",
            Step::Reserve => "reserve",
            Step::Match => "match",
            Step::Settle => "settle",
            Step::Update => "update",
        }
    }

    /// The step's position: in [`definition`], and in the saga log.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The step at `index`, if there is one.
    pub fn from_index(index: usize) -> Option<Step> {
        Self::ALL.get(index).copied()
    }

    /// The step called `name`, if there is one.
    pub fn named(name: &str) -> Option<Step> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The step after this one; `None` after the last.
    pub fn next(self) -> Option<Step> {
        Self::from_index(self.index() + 1)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A store failure of a step: its effect is unknown, so the saga stops pending (retried by
/// the carry-on, or recovery). A fenced write is not retried: the saga has a newer owner.
fn store_step(e: &StoreError) -> StepError {
    StepError {
        message: e.to_string(),
        transient: !matches!(e, StoreError::Fenced),
        in_doubt: true,
    }
}

/// A store failure of a compensation: in doubt too (the saga stops pending, still
/// compensating, rather than parking as manual because the store did not answer).
fn store_comp(e: &StoreError) -> StepError {
    store_step(e)
}

/// Applies `moves` once under `op` (fenced when the saga has a log).
async fn apply_once(
    store: &Store,
    user: &UserId,
    op: &str,
    moves: &[Move],
    fence: Option<&Fence>,
) -> Result<Result<(), BalanceError>, StoreError> {
    let applied = match fence {
        Some(f) => store.apply_moves_fenced(user, op, moves, f).await?,
        None => store.apply_moves_once(user, op, moves).await?,
    };
    Ok(applied.map(drop))
}

fn act<F>(f: F) -> crate::resilience::saga::Action<OrderCtx>
where
    F: for<'a> Fn(&'a mut OrderCtx) -> BoxFuture<'a, Result<(), StepError>> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// The order saga's definition: the executor's steps in the order of [`Step::ALL`].
pub fn definition() -> SagaDefinition<OrderCtx> {
    let step = |step: Step, execute, compensate| saga::Step {
        name: step.name(),
        execute,
        compensate,
        retryable: true,
        max_retries: 3,
        timeout: None,
    };
    SagaDefinition::new(SAGA)
        .step(step(Step::Validate, act(|c| Box::pin(validate(c))), None))
        .step(step(
            Step::Reserve,
            act(|c| Box::pin(reserve(c))),
            Some(act(|c| Box::pin(release(c)))),
        ))
        .step(step(
            Step::Match,
            act(|c| Box::pin(match_step(c))),
            Some(act(|c| Box::pin(undo_match(c)))),
        ))
        .step(step(
            Step::Settle,
            act(|c| Box::pin(settle(c))),
            Some(act(|c| Box::pin(manual_handling(c)))),
        ))
        .step(step(
            Step::Update,
            act(|c| Box::pin(update_balances(c))),
            Some(act(|c| Box::pin(roll_back_balances(c)))),
        ))
}

/// Checks the order is placeable, then claims its (user's) order id for this placement: the
/// claim comes after the log's first record, so a crash after it leaves the claim to
/// recovery, which records the placement's failure on it.
async fn validate(c: &mut OrderCtx) -> Result<(), StepError> {
    let o = &c.data.order;
    if o.amount == 0 || o.price == 0 || o.reserved == 0 || o.filled != 0 {
        return Err(StepError::permanent("order is not placeable"));
    }
    c.check_fence()?;
    let claim = Claim {
        fingerprint: c.data.fingerprint.clone(),
        market_key: o.market_key.clone(),
        user_id: o.user_id.clone(),
        placement_id: o.order_id.clone(),
        result: None,
        failed: None,
    };
    let token = c.token();
    let claimed = match &token {
        Some(f) => {
            c.deps
                .store
                .claim_order_id_fenced(o.client_id(), claim, f)
                .await
        }
        None => c.deps.store.claim_order_id(o.client_id(), claim).await,
    };
    match claimed {
        Ok(ClaimOutcome::Claimed) => Ok(()),
        Ok(ClaimOutcome::Existing(existing)) => {
            c.data.duplicate = Some(existing);
            Err(StepError::permanent(
                "the order id is held by another placement",
            ))
        }
        Err(e) => Err(store_step(&e)),
    }
}

fn reserve_move(o: &Order) -> Move {
    Move::reserve(o.reserved_asset(), o.reserved)
}

async fn reserve(c: &mut OrderCtx) -> Result<(), StepError> {
    c.check_fence()?;
    let token = c.token();
    let o = &c.data.order;
    match apply_once(
        &c.deps.store,
        &o.user_id,
        &format!("reserve:{}", o.order_id),
        &[reserve_move(o)],
        token.as_ref(),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(refused)) => {
            c.data.refused = Some(refused.to_string());
            c.data.refusal = Some(refused.clone());
            Err(StepError::permanent(refused.to_string()))
        }
        Err(e) => Err(store_step(&e)),
    }
}

async fn release(c: &mut OrderCtx) -> Result<(), StepError> {
    let o = c.data.order.clone();
    let token = c.token();
    // NB: re-applying the reservation under its own op id makes "was it reserved?" certain:
    // a no-op if it was, a reservation now if not (released right after), refused if the
    // balance cannot cover it (then it never was).
    match apply_once(
        &c.deps.store,
        &o.user_id,
        &format!("reserve:{}", o.order_id),
        &[reserve_move(&o)],
        token.as_ref(),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Ok(()),
        Err(e) => return Err(store_comp(&e)),
    }
    // NB: a taker that left the book meanwhile (its owner's cancel, self-trade prevention,
    // later fills) had the rest of its reservation released or taken over then: only its own
    // fills' part is left here (see `UndoOutcome::taker_left`).
    let amount = c
        .data
        .undo
        .as_ref()
        .and_then(UndoOutcome::taker_release)
        .unwrap_or(o.reserved);
    if amount == 0 {
        return Ok(());
    }
    match apply_once(
        &c.deps.store,
        &o.user_id,
        &format!("unreserve:{}", o.order_id),
        &[Move::release(o.reserved_asset(), amount)],
        token.as_ref(),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StepError::permanent(format!("release refused: {e}"))),
        Err(e) => Err(store_comp(&e)),
    }
}

/// Releases what an order that left the book still had reserved (op id shared with the
/// forward path, so it happens once).
async fn release_left(
    store: &Store,
    order: &Order,
    fence: Option<&Fence>,
) -> Result<(), StepError> {
    let amount = order.still_reserved();
    if amount == 0 {
        return Ok(());
    }
    match apply_once(
        store,
        &order.user_id,
        &format!("release:{}", order.order_id),
        &[Move::release(order.reserved_asset(), amount)],
        fence,
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StepError::permanent(format!("release refused: {e}"))),
        Err(e) => Err(store_comp(&e)),
    }
}

async fn match_step(c: &mut OrderCtx) -> Result<(), StepError> {
    c.check_fence()?;
    let token = c.token();
    let order = c.data.order.clone();
    let outcome = match &token {
        Some(f) => c.deps.store.match_order_fenced(order, f).await,
        None => c.deps.store.match_order(order).await,
    }
    .map_err(|e| store_step(&e))?;
    c.data.matched = Some(Matched {
        order: outcome.order,
        fills: outcome.fills,
        self_trade_cancelled: outcome.self_trade_cancelled,
    });
    let cancelled = c
        .data
        .matched
        .as_ref()
        .map(|m| m.self_trade_cancelled.clone())
        .unwrap_or_default();
    for order in &cancelled {
        release_left(&c.deps.store, order, token.as_ref())
            .await
            .map_err(|mut e| {
                e.in_doubt = true;
                e.transient = true;
                e
            })?;
    }
    Ok(())
}

async fn undo_match(c: &mut OrderCtx) -> Result<(), StepError> {
    if c.data.in_doubt || !c.data.settled.is_empty() {
        return Err(StepError::permanent(
            "settlement may have happened: the match cannot be undone",
        ));
    }
    let token = c.token();
    let o = &c.data.order;
    let undo = match &token {
        Some(f) => {
            c.deps
                .store
                .undo_match_fenced(&o.market_key, &o.order_id, f)
                .await
        }
        None => c.deps.store.undo_match(&o.market_key, &o.order_id).await,
    }
    .map_err(|e| store_comp(&e))?;
    for order in &undo.self_trade_cancelled {
        release_left(&c.deps.store, order, token.as_ref()).await?;
    }
    for r in &undo.maker_releases {
        match apply_once(
            &c.deps.store,
            &r.user_id,
            &format!("undo:{}:maker", r.trade_id),
            &[Move::release(r.asset.clone(), r.amount)],
            token.as_ref(),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StepError::permanent(format!("maker release refused: {e}"))),
            Err(e) => return Err(store_comp(&e)),
        }
    }
    c.data.undo = Some(undo);
    Ok(())
}

async fn settle(c: &mut OrderCtx) -> Result<(), StepError> {
    c.check_fence()?;
    let fills = c
        .data
        .matched
        .as_ref()
        .map(|m| m.fills.clone())
        .unwrap_or_default();
    for fill in &fills {
        let key = crate::settlement::idempotency_key(fill);
        if c.data.settled.contains(&key) {
            continue;
        }
        // NB: a settlement request cannot be taken back: only while this process holds the
        // lease (checked, renewed if short, before each one).
        c.ensure_lease().await?;
        let may_send = || c.holds_lease();
        match c.deps.settlement.settle_while(fill, &may_send).await {
            Ok(()) => {
                crash_if(&c.deps, "during:settle");
                c.data.settled.push(key);
            }
            Err(e @ SettleError::RejectedInDoubt(_)) => {
                // NB: maybe settled and refused: the undo-match compensation refuses, so the
                // saga parks as manual.
                c.data.in_doubt = true;
                return Err(StepError::permanent(e.to_string()));
            }
            Err(SettleError::InDoubt(e)) => {
                c.data.in_doubt = true;
                return Err(StepError::in_doubt(format!(
                    "settlement of {key} unconfirmed: {e}"
                )));
            }
            Err(e) if c.data.in_doubt || !c.data.settled.is_empty() => {
                // NB: part of this saga may be settled: only forward from here. A rejection
                // ends the saga as manual (the undo-match compensation refuses).
                if matches!(e, SettleError::Rejected(_)) {
                    c.data.in_doubt = true;
                    return Err(StepError::permanent(e.to_string()));
                }
                return Err(StepError::in_doubt(e.to_string()));
            }
            Err(e) => {
                c.data.not_settled = Some(e.to_string());
                return Err(StepError::permanent(e.to_string()));
            }
        }
    }
    Ok(())
}

async fn manual_handling(_: &mut OrderCtx) -> Result<(), StepError> {
    Err(StepError::permanent(
        "settled trades cannot be undone: manual handling required",
    ))
}

/// The buyer's and the seller's balance steps of one fill: (user, op id, moves).
fn fill_steps(fill: &Fill) -> [(UserId, String, Vec<Move>); 2] {
    let shares = Asset::Shares(fill.market_key.clone());
    let mut buyer = vec![
        Move::debit_reserved(Asset::Collateral, fill.collateral),
        Move::credit(shares.clone(), fill.amount),
    ];
    if fill.buyer_refund > 0 {
        buyer.push(Move::release(Asset::Collateral, fill.buyer_refund));
    }
    let seller = vec![
        Move::debit_reserved(shares, fill.amount),
        Move::credit(Asset::Collateral, fill.collateral),
    ];
    [
        (
            fill.buyer.clone(),
            format!("fill:{}:buyer", fill.trade_id),
            buyer,
        ),
        (
            fill.seller.clone(),
            format!("fill:{}:seller", fill.trade_id),
            seller,
        ),
    ]
}

async fn update_balances(c: &mut OrderCtx) -> Result<(), StepError> {
    c.check_fence()?;
    let token = c.token();
    let Some(m) = c.data.matched.clone() else {
        return Err(StepError::permanent("no match recorded"));
    };
    for fill in &m.fills {
        for (user, op, moves) in fill_steps(fill) {
            match apply_once(&c.deps.store, &user, &op, &moves, token.as_ref()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(%user, op, error = %e, "balance move refused although the book accounted for it");
                    // NB: the executor does not compensate the step that failed; this step
                    // rolls back its own partial moves so the saga parks with balances as
                    // they were before it.
                    roll_back_balances(c).await?;
                    return Err(StepError::permanent(format!(
                        "balance move for {user} refused: {e}"
                    )));
                }
                Err(e) => return Err(store_step(&e)),
            }
        }
    }
    let record = PlacementRecord {
        order: m.order.clone(),
        fills: m.fills.clone(),
    };
    let o = &c.data.order;
    c.deps
        .store
        .finish_claim(
            &o.user_id,
            o.client_id(),
            &o.order_id,
            record,
            token.as_ref(),
        )
        .await
        .map_err(|e| store_step(&e))
}

async fn roll_back_balances(c: &mut OrderCtx) -> Result<(), StepError> {
    let token = c.token();
    let fills = c
        .data
        .matched
        .as_ref()
        .map(|m| m.fills.clone())
        .unwrap_or_default();
    for fill in fills.iter().rev() {
        for (user, op, moves) in fill_steps(fill) {
            // NB: make "applied" certain first (a no-op if it was), then apply the inverse.
            match apply_once(&c.deps.store, &user, &op, &moves, token.as_ref()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => continue,
                Err(e) => return Err(store_comp(&e)),
            }
            let inverse: Vec<Move> = moves
                .iter()
                .rev()
                .map(|m| Move {
                    asset: m.asset.clone(),
                    from: m.to,
                    to: m.from,
                    amount: m.amount,
                })
                .collect();
            match apply_once(
                &c.deps.store,
                &user,
                &format!("rollback:{op}"),
                &inverse,
                token.as_ref(),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(StepError::permanent(format!("roll back refused: {e}"))),
                Err(e) => return Err(store_comp(&e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ORDER_SAGA_STEPS;

    #[test]
    fn steps_keep_the_names_and_positions_of_the_config_metrics_and_log() {
        assert_eq!(Step::ALL.map(Step::name), ORDER_SAGA_STEPS);
        let names: Vec<&str> = definition().steps.iter().map(|s| s.name).collect();
        assert_eq!(names, ORDER_SAGA_STEPS);
        for (i, step) in Step::ALL.into_iter().enumerate() {
            assert_eq!(step.index(), i);
            assert_eq!(Step::from_index(i), Some(step));
            assert_eq!(Step::named(step.name()), Some(step));
        }
        assert_eq!(Step::from_index(5), None);
        assert_eq!(Step::named("recovery"), None);
        assert_eq!(Step::Settle.next(), Some(Step::Update));
        assert_eq!(Step::Update.next(), None);
    }
}
