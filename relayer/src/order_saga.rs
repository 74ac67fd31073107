//! The order saga: validate → reserve balance → match → submit settlement → update balances,
//! compensated by (none) ← release reservation ← undo match ← manual handling ← roll back
//! balances. It runs on the generic [`SagaExecutor`]; this module supplies the steps, the
//! durable log and the recovery of sagas a dead replica abandoned.
//!
//! # Semantics
//! - An order without fills needs no settlement (the settle step does nothing).
//! - Settlement is the pivot. "Not settled" (an HTTP error status, a refused connection, the
//!   breaker open) fails the step and compensates backward: the match is undone (makers'
//!   fills reverted, makers back in the book at their original priority, the taker cancelled)
//!   and the reservation released, so balances are exactly as before; the client gets 503.
//!   "In doubt" (a timeout, a connection lost after sending) is only ever retried forward with
//!   the same idempotency keys: the saga stops `pending` and recovery carries it on. A trade
//!   already settled makes every later failure of the same saga "in doubt" too. The saga parks
//!   as `manual` only when forward progress is impossible: the endpoint rejects (4xx) a trade
//!   that may have been settled, or a balance step is refused and cannot be rolled back.
//! - Self-trade-prevention cancellations are not undone (see [`crate::book`]).
//! - Every step and compensation is idempotent (operation ids on balance moves, recorded
//!   placements in the book, idempotency keys at settlement), which is what makes re-running
//!   them after a crash safe. A compensation of a step whose effect is unknown first re-applies
//!   the step's own idempotent operation and then undoes it (e.g. "reserve:<id>" then
//!   "unreserve:<id>"), so it never releases what was not reserved.
//!
//! # Durable log
//! Before each step (from reserve on), after settlement (with the keys settled), and at each
//! compensation the saga's data is written to the store
//! ([`Store::saga_write`]) under a lease; a finished saga's entry is deleted, a `manual` one is
//! kept for `GET /admin/sagas?state=manual`. A write that fails (store down, lease taken over)
//! stops the saga at its next step as `pending`. Recovery ([`Recovery::sweep`]) claims entries
//! whose lease ran out and, by the step they reached: before settlement, compensates
//! (including the step that had started); at settlement or after, goes forward.
//!
//! While a saga runs, a heartbeat renews its lease every third of `saga.leaseMs`, so a long
//! step (settlement retries) keeps it; a replica that finds its lease taken (it was frozen
//! longer than the lease) stops at its next step, and every write is fenced by the owner.
//! A process also carries its own pending sagas forward in the background.
//!
//! Known limit: the order id is claimed before the log's first write, so a crash in between
//! leaves the id "being placed" with nothing reserved or matched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::book::UndoOutcome;
use crate::config::{ORDER_SAGA_STEPS, RelayerConfig};
use crate::domain::{Asset, BalanceError, Fill, Move, Order, UserId};
use crate::resilience::saga::{
    SagaDefinition, SagaEvent, SagaExecutor, SagaMetrics, SagaObserver, SagaOutcome, Step,
    StepError,
};
use crate::server::now_ms;
use crate::settlement::{SettleError, Settlement};
use crate::store::{PlacementRecord, SagaEntry, Store, StoreError};

/// The saga's name (metric label).
pub const SAGA: &str = "order";

/// How long a process retries its own pending saga before leaving it to recovery.
const CARRY_ON_FOR: Duration = Duration::from_secs(600);
/// First and largest pause between those retries.
const CARRY_ON_MIN_DELAY: Duration = Duration::from_millis(50);
const CARRY_ON_MAX_DELAY: Duration = Duration::from_secs(2);

/// What the saga carries between steps and writes to its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderSagaData {
    /// The order as placed.
    pub order: Order,
    /// The match's outcome, once matched.
    pub matched: Option<Matched>,
    /// Idempotency keys settled so far.
    pub settled: Vec<String>,
    /// Whether a settlement may have happened without confirmation.
    pub in_doubt: bool,
    /// What undoing the match did.
    pub undo: Option<UndoOutcome>,
    /// Why reserve was refused (insufficient balance).
    pub refused: Option<String>,
    /// The refusal itself, for the caller (not logged).
    #[serde(skip)]
    pub refusal: Option<BalanceError>,
    /// Why settlement said "not settled".
    pub not_settled: Option<String>,
}

/// A match as the saga records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Matched {
    /// The taker after matching.
    pub order: Order,
    /// Its fills.
    pub fills: Vec<Fill>,
    /// Orders cancelled by self-trade prevention.
    pub self_trade_cancelled: Vec<Order>,
}

/// The log entry's record: the data and where the saga is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogRecord {
    data: OrderSagaData,
    /// Index of the step started last (forward) or that failed (backward).
    step: usize,
    /// `forward` or `backward`.
    phase: String,
    error: Option<String>,
}

/// What the steps need.
#[derive(Debug)]
pub struct Deps {
    store: Store,
    settlement: Settlement,
    owner: String,
    lease_ms: u64,
    durable: bool,
    crash_at: Option<String>,
    /// Sagas this process is driving now (the recovery sweep leaves them alone).
    active: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Deps {
    fn set_active(&self, id: &str, active: bool) -> bool {
        let mut set = self
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if active {
            set.insert(id.to_owned())
        } else {
            set.remove(id)
        }
    }
}

/// Whether a saga may take its next step.
#[derive(Debug, Default)]
struct Fence {
    /// Set when a log write failed: the saga must not take another step.
    fenced: AtomicBool,
    /// Set when another replica took the saga over: this process must leave it.
    lease_lost: AtomicBool,
}

impl Fence {
    fn lose_lease(&self) {
        self.lease_lost.store(true, Ordering::Release);
        self.fenced.store(true, Ordering::Release);
    }
}

/// One running saga.
pub struct OrderCtx {
    deps: Arc<Deps>,
    /// The saga's data.
    pub data: OrderSagaData,
    /// Shared with the lease heartbeat.
    fence: Arc<Fence>,
    /// Index of the step started last, or of the step that failed once compensating.
    step: AtomicUsize,
    /// Whether the saga is compensating.
    backward: AtomicBool,
}

impl OrderCtx {
    fn check_fence(&self) -> Result<(), StepError> {
        if self.fence.fenced.load(Ordering::Acquire) {
            Err(StepError::in_doubt(
                "the saga log could not be written (store unavailable or lease lost)",
            ))
        } else {
            Ok(())
        }
    }
}

fn crash_if(deps: &Deps, point: &str) {
    if deps.crash_at.as_deref() == Some(point) {
        tracing::error!(point, "faultInjection.crashAtStep: aborting");
        std::process::abort();
    }
}

fn store_step(e: &StoreError) -> StepError {
    StepError {
        message: e.to_string(),
        transient: true,
        in_doubt: true,
    }
}

fn store_comp(e: &StoreError) -> StepError {
    StepError::transient(e.to_string())
}

async fn apply_once(
    store: &Store,
    user: &UserId,
    op: &str,
    moves: &[Move],
) -> Result<Result<(), BalanceError>, StoreError> {
    Ok(store.apply_moves_once(user, op, moves).await?.map(drop))
}

fn act<F>(f: F) -> crate::resilience::saga::Action<OrderCtx>
where
    F: for<'a> Fn(&'a mut OrderCtx) -> BoxFuture<'a, Result<(), StepError>> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// The order saga's definition.
pub fn definition() -> SagaDefinition<OrderCtx> {
    let step = |name, execute, compensate| Step {
        name,
        execute,
        compensate,
        retryable: true,
        max_retries: 3,
        timeout: None,
    };
    SagaDefinition::new(SAGA)
        .step(step(
            ORDER_SAGA_STEPS[0],
            act(|c| Box::pin(validate(c))),
            None,
        ))
        .step(step(
            ORDER_SAGA_STEPS[1],
            act(|c| Box::pin(reserve(c))),
            Some(act(|c| Box::pin(release(c)))),
        ))
        .step(step(
            ORDER_SAGA_STEPS[2],
            act(|c| Box::pin(match_step(c))),
            Some(act(|c| Box::pin(undo_match(c)))),
        ))
        .step(step(
            ORDER_SAGA_STEPS[3],
            act(|c| Box::pin(settle(c))),
            Some(act(|c| Box::pin(manual_handling(c)))),
        ))
        .step(step(
            ORDER_SAGA_STEPS[4],
            act(|c| Box::pin(update_balances(c))),
            Some(act(|c| Box::pin(roll_back_balances(c)))),
        ))
}

async fn validate(c: &mut OrderCtx) -> Result<(), StepError> {
    let o = &c.data.order;
    if o.amount == 0 || o.price == 0 || o.reserved == 0 || o.filled != 0 {
        return Err(StepError::permanent("order is not placeable"));
    }
    Ok(())
}

fn reserve_move(o: &Order) -> Move {
    Move::reserve(o.reserved_asset(), o.reserved)
}

async fn reserve(c: &mut OrderCtx) -> Result<(), StepError> {
    c.check_fence()?;
    let o = &c.data.order;
    match apply_once(
        &c.deps.store,
        &o.user_id,
        &format!("reserve:{}", o.order_id),
        &[reserve_move(o)],
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
    // NB: re-applying the reservation under its own op id makes "was it reserved?" certain:
    // a no-op if it was, a reservation now if not (released right after), refused if the
    // balance cannot cover it (then it never was).
    match apply_once(
        &c.deps.store,
        &o.user_id,
        &format!("reserve:{}", o.order_id),
        &[reserve_move(&o)],
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Ok(()),
        Err(e) => return Err(store_comp(&e)),
    }
    let amount = match c.data.undo.as_ref().and_then(|u| u.taker.as_ref()) {
        Some(taker) => taker.still_reserved(),
        None => o.reserved,
    };
    if amount == 0 {
        return Ok(());
    }
    match apply_once(
        &c.deps.store,
        &o.user_id,
        &format!("unreserve:{}", o.order_id),
        &[Move::release(o.reserved_asset(), amount)],
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
async fn release_left(store: &Store, order: &Order) -> Result<(), StepError> {
    let amount = order.still_reserved();
    if amount == 0 {
        return Ok(());
    }
    match apply_once(
        store,
        &order.user_id,
        &format!("release:{}", order.order_id),
        &[Move::release(order.reserved_asset(), amount)],
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
    let outcome = c
        .deps
        .store
        .match_order(c.data.order.clone())
        .await
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
        release_left(&c.deps.store, order).await.map_err(|mut e| {
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
    let o = &c.data.order;
    let undo = c
        .deps
        .store
        .undo_match(&o.market_key, &o.order_id)
        .await
        .map_err(|e| store_comp(&e))?;
    for order in &undo.self_trade_cancelled {
        release_left(&c.deps.store, order).await?;
    }
    for r in &undo.maker_releases {
        match apply_once(
            &c.deps.store,
            &r.user_id,
            &format!("undo:{}:maker", r.trade_id),
            &[Move::release(r.asset.clone(), r.amount)],
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
        match c.deps.settlement.settle(fill).await {
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
    let Some(m) = c.data.matched.clone() else {
        return Err(StepError::permanent("no match recorded"));
    };
    for fill in &m.fills {
        for (user, op, moves) in fill_steps(fill) {
            match apply_once(&c.deps.store, &user, &op, &moves).await {
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
    c.deps
        .store
        .finish_claim(&c.data.order.order_id, record)
        .await
        .map_err(|e| store_step(&e))
}

async fn roll_back_balances(c: &mut OrderCtx) -> Result<(), StepError> {
    let fills = c
        .data
        .matched
        .as_ref()
        .map(|m| m.fills.clone())
        .unwrap_or_default();
    for fill in fills.iter().rev() {
        for (user, op, moves) in fill_steps(fill) {
            // NB: make "applied" certain first (a no-op if it was), then apply the inverse.
            match apply_once(&c.deps.store, &user, &op, &moves).await {
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
            match apply_once(&c.deps.store, &user, &format!("rollback:{op}"), &inverse).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(StepError::permanent(format!("roll back refused: {e}"))),
                Err(e) => return Err(store_comp(&e)),
            }
        }
    }
    Ok(())
}

/// Writes the saga log at each event (see the module docs).
struct DurableLog;

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

/// Runs order sagas: the executor, the dependencies and the recovery.
#[derive(Clone)]
pub struct OrderSagas {
    executor: Arc<SagaExecutor<OrderCtx>>,
    deps: Arc<Deps>,
}

impl std::fmt::Debug for OrderSagas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderSagas")
            .field("deps", &self.deps)
            .finish_non_exhaustive()
    }
}

/// How an order saga ended, for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Placed; the record to answer.
    Completed(PlacementRecord),
    /// The reservation was refused.
    Refused(BalanceError),
    /// Settlement said "not settled"; everything was undone.
    NotSettled(String),
    /// Compensated for another reason.
    Compensated(String),
    /// Not finished: the settlement is unconfirmed (`settlement` true) or the store failed.
    /// This process carries the saga on in the background (and recovery would after it).
    Pending {
        /// Whether settlement is what is in doubt.
        settlement: bool,
        /// Why.
        error: String,
    },
    /// Needs a person.
    Manual(String),
}

impl OrderSagas {
    /// Order sagas over `store` and `settlement`, reporting to `metrics`.
    pub fn new(
        config: &RelayerConfig,
        store: Store,
        settlement: Settlement,
        metrics: Option<SagaMetrics>,
    ) -> Self {
        Self::with_definition(config, store, settlement, metrics, definition())
    }

    /// Order sagas running `definition` (the order saga's, or a variant of it in tests).
    fn with_definition(
        config: &RelayerConfig,
        store: Store,
        settlement: Settlement,
        metrics: Option<SagaMetrics>,
        definition: SagaDefinition<OrderCtx>,
    ) -> Self {
        let mut executor = SagaExecutor::new(definition)
            .with_retry_delay(Duration::from_millis(50))
            .observe(Arc::new(DurableLog));
        if let Some(m) = metrics {
            m.touch(SAGA);
            executor = executor.with_metrics(m);
        }
        Self {
            executor: Arc::new(executor),
            deps: Arc::new(Deps {
                store,
                settlement,
                owner: uuid::Uuid::new_v4().simple().to_string(),
                lease_ms: config.saga.lease_ms,
                durable: config.saga.durable_log,
                crash_at: config.fault_injection.crash_at_step.clone(),
                active: std::sync::Mutex::default(),
            }),
        }
    }

    /// The settlement in use.
    pub fn settlement(&self) -> &Settlement {
        &self.deps.settlement
    }

    /// This replica's owner id in the saga log.
    pub fn owner(&self) -> &str {
        &self.deps.owner
    }

    fn ctx(&self, data: OrderSagaData) -> OrderCtx {
        OrderCtx {
            deps: self.deps.clone(),
            data,
            fence: Arc::default(),
            step: AtomicUsize::new(0),
            backward: AtomicBool::new(false),
        }
    }

    /// Runs the saga of a new (claimed) order.
    pub async fn run(&self, order: Order) -> Ended {
        let mut ctx = self.ctx(OrderSagaData {
            order,
            matched: None,
            settled: Vec::new(),
            in_doubt: false,
            undo: None,
            refused: None,
            refusal: None,
            not_settled: None,
        });
        let id = ctx.data.order.order_id.clone();
        self.deps.set_active(&id, true);
        let outcome = self.drive(&mut ctx, Drive::Forward(0)).await;
        if let SagaOutcome::Pending { error, .. } = &outcome
            && !ctx.fence.lease_lost.load(Ordering::Acquire)
        {
            let answer = Ended::Pending {
                settlement: ctx.data.in_doubt,
                error: error.clone(),
            };
            tokio::spawn(self.clone().carry_on(ctx));
            return answer;
        }
        self.deps.set_active(&id, false);
        self.conclude(ctx, outcome).await
    }

    /// Retries a pending saga forward in the background (same idempotency keys and op ids)
    /// until it ends, another replica takes it over, or [`CARRY_ON_FOR`] has passed (then the
    /// recovery sweep, of any replica, takes it from its log).
    async fn carry_on(self, mut ctx: OrderCtx) {
        let id = ctx.data.order.order_id.clone();
        let deadline = tokio::time::Instant::now() + CARRY_ON_FOR;
        let mut delay = CARRY_ON_MIN_DELAY;
        loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(CARRY_ON_MAX_DELAY);
            ctx.fence.fenced.store(false, Ordering::Release);
            let from = ctx.step.load(Ordering::Acquire);
            let outcome = self.drive(&mut ctx, Drive::Forward(from)).await;
            let pending = matches!(outcome, SagaOutcome::Pending { .. });
            if !pending {
                let ended = self.conclude(ctx, outcome).await;
                tracing::info!(saga = id, ?ended, "pending saga ended");
                break;
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

    async fn drive(&self, ctx: &mut OrderCtx, how: Drive) -> SagaOutcome {
        let heartbeat = self.heartbeat(ctx.data.order.order_id.clone(), ctx.fence.clone());
        let run = async {
            match how {
                Drive::Forward(from) => self.executor.resume(ctx, from).await,
                Drive::Backward(n, error) => {
                    ctx.backward.store(true, Ordering::Release);
                    ctx.step.store(n, Ordering::Release);
                    let name = ORDER_SAGA_STEPS.get(n).copied().unwrap_or("recovery");
                    self.executor.resume_compensation(ctx, n, name, error).await
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
            let now = now_ms();
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
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!(saga = id, "saga lease lost: stopping at the next step");
                    fence.lose_lease();
                    return;
                }
                // NB: the next log write finds out whether the store is back.
                Err(error) => tracing::warn!(%error, saga = id, "saga lease not renewed"),
            }
        }
    }

    /// The claim and the caller's answer after the saga ended.
    async fn conclude(&self, ctx: OrderCtx, outcome: SagaOutcome) -> Ended {
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
                let store = &self.deps.store;
                let id = &data.order.order_id;
                let freed = match data.undo.as_ref().and_then(|u| u.taker.clone()) {
                    // NB: the placement reached the book: its id is spent, and its record
                    // shows the order cancelled.
                    Some(taker) => {
                        store
                            .finish_claim(
                                id,
                                PlacementRecord {
                                    order: taker,
                                    fills: Vec::new(),
                                },
                            )
                            .await
                    }
                    None => store.drop_claim(id).await,
                };
                if let Err(e) = freed {
                    tracing::warn!(error = %e, order = %id, "claim of a compensated order not updated");
                }
                if let Some(r) = data.refusal {
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

enum Drive {
    /// Run steps from this index on.
    Forward(usize),
    /// Compensate the first `n` steps (in reverse), with why.
    Backward(usize, String),
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::domain::{MarketKey, Side};

    fn user(n: u8) -> UserId {
        UserId::parse("u", &format!("0x{}", format!("{n:02x}").repeat(20))).expect("valid")
    }

    fn market() -> MarketKey {
        MarketKey::parse("m", "80002:1").expect("valid")
    }

    fn order(id: &str, u: u8, side: Side, price: u64, amount: u64) -> Order {
        Order::new(id.to_owned(), market(), user(u), side, price, amount, 0)
    }

    /// Records the names of compensated steps and the manual event.
    #[derive(Default)]
    struct Compensations(Mutex<Vec<String>>);

    impl SagaObserver<OrderCtx> for Compensations {
        fn on_event<'a>(
            &'a self,
            _: &'static str,
            event: &'a SagaEvent,
            _: &'a OrderCtx,
        ) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                let name = match event {
                    SagaEvent::StepCompensated(s) => format!("undone {s}"),
                    SagaEvent::Manual(s, _) => format!("manual at {s}"),
                    _ => return,
                };
                self.0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(name);
            })
        }
    }

    async fn snapshot(store: &Store) -> (Vec<crate::domain::Account>, String) {
        let accounts = vec![
            store.account(&user(1)).await.expect("account"),
            store.account(&user(2)).await.expect("account"),
        ];
        let depth = store.depth(&market(), 10).await.expect("depth");
        let ask = store.order(&market(), "ask").await.expect("order");
        (accounts, format!("{depth:?} {ask:?}"))
    }

    #[tokio::test]
    async fn a_failure_at_each_step_compensates_exactly_the_completed_steps_in_reverse() {
        let expected: [(&[&str], &str); 5] = [
            (&[], "compensated"),
            (&[], "compensated"),
            (&["undone reserve"], "compensated"),
            (&["undone match", "undone reserve"], "compensated"),
            (&["manual at settle"], "manual"),
        ];
        for (failing, (undone, outcome)) in expected.iter().enumerate() {
            let store = Store::memory();
            let config = RelayerConfig::default();
            let plain = OrderSagas::new(
                &config,
                store.clone(),
                Settlement::Embedded(Arc::default()),
                None,
            );
            store
                .apply_moves(&user(1), &[Move::credit(Asset::Shares(market()), 10)])
                .await
                .expect("store")
                .expect("deposit");
            store
                .apply_moves(&user(2), &[Move::credit(Asset::Collateral, 1_000)])
                .await
                .expect("store")
                .expect("deposit");
            assert!(matches!(
                plain.run(order("ask", 1, Side::Sell, 400_000, 10)).await,
                Ended::Completed(_)
            ));
            let before = snapshot(&store).await;

            let mut def = definition();
            def.steps[failing].execute =
                Arc::new(|_| Box::pin(async { Err(StepError::permanent("injected")) }));
            let events = Arc::new(Compensations::default());
            let mut failing_sagas = OrderSagas::with_definition(
                &config,
                store.clone(),
                Settlement::Embedded(Arc::default()),
                None,
                SagaDefinition::new(SAGA),
            );
            failing_sagas.executor = Arc::new(
                SagaExecutor::new(def)
                    .with_retry_delay(Duration::from_millis(1))
                    .observe(Arc::new(DurableLog))
                    .observe(events.clone()),
            );
            let ended = failing_sagas
                .run(order("bid", 2, Side::Buy, 400_000, 4))
                .await;
            let log = events
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            assert_eq!(log, *undone, "failing at {}", ORDER_SAGA_STEPS[failing]);
            let entries = store.saga_list().await.expect("list");
            match *outcome {
                "compensated" => {
                    assert!(
                        matches!(ended, Ended::Compensated(ref e) if e == "injected"),
                        "{ended:?}"
                    );
                    assert_eq!(
                        snapshot(&store).await,
                        before,
                        "failing at {}",
                        ORDER_SAGA_STEPS[failing]
                    );
                    assert!(entries.is_empty(), "{entries:?}");
                }
                _ => {
                    assert!(matches!(ended, Ended::Manual(_)), "{ended:?}");
                    assert_eq!(entries.len(), 1);
                    assert_eq!(entries[0].state, "manual");
                    // Settled, balances not moved: the buyer's collateral stays reserved for
                    // the person resolving it, nothing else changed.
                    let (accounts, _) = snapshot(&store).await;
                    assert_eq!(accounts[1].collateral.reserved, 2);
                    assert_eq!(accounts[0], before.0[0]);
                }
            }
        }
    }
}
