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
//!   them after a crash safe. Every id is the placement's own ([`Order::order_id`], made by the
//!   relayer for each placement, never reused), so no marker of an earlier, compensated
//!   placement of the same client order id can satisfy a step of a later one. A compensation
//!   of a step whose effect is unknown first re-applies the step's own idempotent operation and
//!   then undoes it (e.g. `reserve:<id>` then `unreserve:<id>`), so it never releases what was
//!   not reserved.
//! - The saga runs detached from whoever started it ([`OrderSagas::start`]): a client that
//!   hangs up or a request timeout never cancels it; `foresight_saga_active` is held by a guard.
//! - A placement that ends compensated records its failure on the order id's claim before its
//!   log entry goes, so a repeat of the order id replays the failure.
//!
//! # Durable log
//! The saga's data is written to the store ([`Store::saga_write`]) before validate (so before
//! the order id is claimed), before settlement (with the match), after settlement (with the
//! keys settled), at each compensation and when it stops pending or manual; a finished saga's
//! entry is deleted, a `manual` one is kept for `GET /admin/sagas?state=manual`. A write that
//! fails (store down, lease taken over) stops the saga at its next step as `pending`.
//! Recovery ([`OrderSagas::sweep`]) claims entries whose lease ran out and, by the step they
//! reached: before settlement, compensates every step before it; at settlement or after, goes
//! forward.
//!
//! While a saga runs, a heartbeat renews its lease every third of `saga.leaseMs`. The lease has
//! an epoch (one more at each change of owner), and every store write of the saga carries it as
//! a fencing token ([`crate::store::Fence`]), so a replica whose lease lapsed (paused, cut off)
//! cannot write after its successor; it also sends no settlement request without its lease.
//! A process carries its own pending sagas on in the background, renewing the lease first.
//! A process that stops before its sagas end (its drain ran out of time) hands them over
//! ([`OrderSagas::hand_over`]): it ends their leases, so another replica recovers them at its
//! next sweep rather than once the leases run out.
//!
//! # Layout
//! - this module (the facade): the saga's data ([`OrderSagaData`]), its context, [`OrderSagas`]
//!   and how a saga [`Ended`];
//! - `steps`: the steps and compensations, and [`definition`];
//! - `log`: the durable log, its fence, crash injection and the admin view
//!   ([`OrderSagas::list`]);
//! - `runner`: driving a saga with its lease heartbeat, and the background carry-on;
//! - `recovery`: the sweep over abandoned sagas ([`OrderSagas::sweep`]);
//! - `cancel`: durable cancellation ([`OrderSagas::cancel`]), logged and recovered like a
//!   placement.
//!
//! # Traces
//! With traces on ([`crate::otel`]) a saga runs in a span of its own, a child of the request's,
//! its steps and the settlement requests below it; its log entry keeps the span's
//! `traceparent`, and a replica that recovers the saga starts a trace linked to that one.
//!
//! May use: `otel`, `clock` (its [`Clock`], through `Deps`), `config`, `domain`, `book`,
//! `store`, `resilience`, `settlement`.

mod cancel;
mod log;
mod recovery;
mod runner;
mod steps;

pub use self::cancel::CancelEnded;
pub use self::log::Phase;
pub use self::steps::{Step, definition};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument as _;

use self::log::{DurableLog, Fence};
use self::runner::Drive;
use crate::book::UndoOutcome;
use crate::clock::{Clock, SystemClock};
use crate::config::RelayerConfig;
use crate::domain::{BalanceError, Fill, Order};
use crate::resilience::saga::{SagaDefinition, SagaExecutor, SagaMetrics, SagaOutcome, StepError};
use crate::settlement::Settlement;
use crate::store::{Claim, PlacementRecord, Store, StoreError};

/// The saga's name (metric label).
pub const SAGA: &str = "order";

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
    /// Hash of the placement request, for the order id's claim (see [`crate::store::Claim`]).
    #[serde(default)]
    pub fingerprint: String,
    /// The claim of another placement that holds the order id (not logged).
    #[serde(skip)]
    pub duplicate: Option<Claim>,
    /// The W3C `traceparent` of the saga's span where it began, when traces are on: a replica
    /// that recovers the saga links its own trace to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
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
    /// Set once this process gave its sagas up ([`OrderSagas::hand_over`]): it renews no
    /// lease, sends no settlement request and sweeps nothing from then on.
    handed_over: AtomicBool,
    /// The wall clock of lease deadlines and of the recovery's "now".
    clock: Arc<dyn Clock>,
}

impl Deps {
    /// Wall-clock time, ms since the Unix epoch: lease deadlines and the recovery's "now".
    // NB: the saga's one read of the clock, so the relayer's injected clock plugs in here.
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Whether this process gave its sagas up ([`OrderSagas::hand_over`]).
    fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::Acquire)
    }

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

/// One running saga.
pub struct OrderCtx {
    deps: Arc<Deps>,
    /// The saga's data.
    pub data: OrderSagaData,
    /// Shared with the lease heartbeat.
    fence: Arc<Fence>,
    /// Position ([`Step::index`]) of the step started last, or of the step that failed once
    /// compensating. Atomic (like `backward`) because the log observer sees the context
    /// shared; only [`OrderCtx::set_step`] writes it.
    step: AtomicUsize,
    /// Whether the saga is compensating ([`Phase::Backward`]).
    backward: AtomicBool,
}

impl OrderCtx {
    /// The step started last, or the step that failed once compensating.
    fn step(&self) -> Step {
        // NB: only `set_step` writes the position, so the fallback is never taken.
        Step::from_index(self.step.load(Ordering::Acquire)).unwrap_or(Step::Validate)
    }

    fn set_step(&self, step: Step) {
        self.step.store(step.index(), Ordering::Release);
    }

    /// Which way the saga is going.
    fn phase(&self) -> Phase {
        if self.backward.load(Ordering::Acquire) {
            Phase::Backward
        } else {
            Phase::Forward
        }
    }

    fn set_phase(&self, phase: Phase) {
        self.backward
            .store(phase == Phase::Backward, Ordering::Release);
    }

    /// The fencing token of this saga's store writes; `None` without a durable log. Once this
    /// process handed its sagas over ([`OrderSagas::hand_over`]) the token's lease has ended,
    /// so the store refuses every further write of it, also before a successor claims.
    fn token(&self) -> Option<crate::store::Fence> {
        self.deps.durable.then(|| {
            let mut token = self.fence.token(&self.data.order.order_id);
            if self.deps.handed_over() {
                token.lease_until_ms = 0;
            }
            token
        })
    }

    /// Makes sure this process still holds the saga's lease before an effect it cannot take
    /// back (a settlement request): renews it when a third or less of it is left; an error
    /// (and the saga leaves) when another replica holds it.
    async fn ensure_lease(&self) -> Result<(), StepError> {
        if !self.deps.durable {
            return Ok(());
        }
        if self.deps.handed_over() {
            return Err(fenced_step());
        }
        let now = self.deps.now_ms();
        let left = self.fence.lease_until_ms().saturating_sub(now);
        if left > self.deps.lease_ms / 3 {
            return Ok(());
        }
        let until = now.saturating_add(self.deps.lease_ms);
        match self
            .deps
            .store
            .saga_claim(&self.data.order.order_id, &self.deps.owner, until, now)
            .await
        {
            Ok(Some(held)) if held.epoch == self.fence.epoch() => {
                self.fence.hold(held.epoch, until);
                Ok(())
            }
            Ok(_) => {
                self.fence.lose_lease();
                Err(fenced_step())
            }
            Err(e) => Err(StepError::in_doubt(format!("saga lease not renewed: {e}"))),
        }
    }

    /// Whether this process may still act for the saga by its own clock: the lease is not
    /// known lost and has not run out (a paused process finds it has on resuming).
    fn holds_lease(&self) -> bool {
        !self.fence.lease_lost.load(Ordering::Acquire)
            && !self.deps.handed_over()
            && (!self.deps.durable || self.deps.now_ms() < self.fence.lease_until_ms())
    }

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

/// The step error of a write its fence refused: the saga stops here (pending) and leaves.
fn fenced_step() -> StepError {
    StepError {
        message: StoreError::Fenced.to_string(),
        transient: false,
        in_doubt: true,
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
    /// Another placement holds the order id; here is its claim. Nothing was done.
    Duplicate(Claim),
    /// The store failed before the saga's log could be written: nothing was done, and
    /// nothing carries it on.
    Unavailable(String),
}

impl Ended {
    /// Whether the saga is still going (carried on in the background).
    pub fn is_pending(&self) -> bool {
        matches!(self, Ended::Pending { .. })
    }
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
                handed_over: AtomicBool::new(false),
                clock: Arc::new(SystemClock),
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
            step: AtomicUsize::new(Step::Validate.index()),
            backward: AtomicBool::new(false),
        }
    }

    /// Starts the saga of a new placement (`order` under a new placement id, and the hash of
    /// its request) detached from the caller: it runs to its end in a task of its own, which
    /// neither a client hang-up nor a request timeout cancels. The receiver sees
    /// [`Ended::Pending`] while the saga is carried on in the background, then how it ended.
    pub fn start(&self, order: Order, fingerprint: String) -> watch::Receiver<Option<Ended>> {
        let (tx, rx) = watch::channel(None);
        // NB: a child of the caller's span (the request's), in the task the saga runs in.
        let span = crate::otel::span_if_enabled(|| {
            tracing::info_span!(
                "order saga",
                otel.name = "order saga",
                saga.id = %order.order_id,
                order.client_id = order.client_id(),
                market = %order.market_key,
                trace_id = tracing::field::Empty,
            )
        });
        let trace_parent = crate::otel::traceparent(&span);
        crate::otel::record_trace_id(&span);
        let ctx = self.ctx(OrderSagaData {
            order,
            matched: None,
            settled: Vec::new(),
            in_doubt: false,
            undo: None,
            refused: None,
            refusal: None,
            not_settled: None,
            fingerprint,
            duplicate: None,
            trace_parent,
        });
        self.deps.set_active(&ctx.data.order.order_id, true);
        tokio::spawn(self.clone().run_to_end(ctx, tx).instrument(span));
        rx
    }

    /// Runs the saga of `order` (a placement of its own id, with no request hash) and answers
    /// its first outcome: how it ended, or [`Ended::Pending`] while it is carried on.
    pub async fn run(&self, order: Order) -> Ended {
        let mut rx = self.start(order, String::new());
        match rx.wait_for(Option::is_some).await {
            Ok(ended) => ended.clone().unwrap_or_else(unreachable_ended),
            Err(_) => unreachable_ended(),
        }
    }

    async fn run_to_end(self, mut ctx: OrderCtx, tx: watch::Sender<Option<Ended>>) {
        let id = ctx.data.order.order_id.clone();
        let outcome = self.drive(&mut ctx, Drive::Forward(Step::Validate)).await;
        if let SagaOutcome::Pending { error, .. } = &outcome {
            if !ctx.fence.created() {
                // NB: the log's first write failed: nothing of the saga happened.
                tx.send_replace(Some(Ended::Unavailable(error.clone())));
                self.deps.set_active(&id, false);
                return;
            }
            if !ctx.fence.lease_lost.load(Ordering::Acquire) {
                tx.send_replace(Some(Ended::Pending {
                    settlement: ctx.data.in_doubt,
                    error: error.clone(),
                }));
                self.carry_on(ctx, tx).await;
                return;
            }
        }
        self.deps.set_active(&id, false);
        let ended = self.conclude(ctx, outcome).await;
        tx.send_replace(Some(ended));
    }

    /// Whether this process drives no saga now.
    pub fn idle(&self) -> bool {
        self.deps
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// Gives up the sagas this process still drives, for a process about to stop before they
    /// end (its drain ran out of time): from now on it renews no lease, sends no settlement
    /// request and sweeps nothing, and the lease of each saga it holds is ended in the log, so
    /// the recovery of any replica takes the saga over at its next sweep instead of waiting the
    /// lease out. Answers how many leases it ended.
    ///
    /// Safe while the sagas' tasks still run: a successor's claim raises the epoch, which
    /// fences this process out of the log and of every slot the successor writes, and what
    /// this process may still do (a settlement request already sent, an idempotent balance
    /// move) the successor repeats with the same keys and operation ids.
    pub async fn hand_over(&self) -> usize {
        self.deps.handed_over.store(true, Ordering::Release);
        let ids: Vec<String> = self
            .deps
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        let mut ended = 0;
        for id in ids {
            // NB: the owner's claim sets the lease's end and keeps the epoch; an end of 0 has
            // passed for every replica. A heartbeat that read the flag just before it was set
            // may renew once more: then the saga waits out that lease, as after a crash.
            let now = self.deps.now_ms();
            match self
                .deps
                .store
                .saga_claim(&id, &self.deps.owner, 0, now)
                .await
            {
                Ok(Some(_)) => ended += 1,
                // NB: finished meanwhile, parked as manual, or another replica's already.
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, saga = id, "saga lease not handed over: recovered once it runs out");
                }
            }
        }
        ended
    }

    /// Waits until this process drives no saga, at most `within`; false when some still run
    /// (their logs let any replica finish them).
    pub async fn wait_idle(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.idle() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// The answer if a saga's task vanished without one (it cannot: every path sends one).
fn unreachable_ended() -> Ended {
    Ended::Unavailable("the order saga stopped without an answer".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;
    use crate::domain::{Asset, MarketKey, Move, Side, UserId};
    use crate::resilience::saga::{SagaEvent, SagaObserver};

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
        let expected: [(Step, &[&str], &str); 5] = [
            (Step::Validate, &[], "compensated"),
            (Step::Reserve, &[], "compensated"),
            (Step::Match, &["undone reserve"], "compensated"),
            (
                Step::Settle,
                &["undone match", "undone reserve"],
                "compensated",
            ),
            (Step::Update, &["manual at settle"], "manual"),
        ];
        for (failing, undone, outcome) in expected {
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
            def.steps[failing.index()].execute =
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
            assert_eq!(log, undone, "failing at {failing}");
            let entries = store.saga_list().await.expect("list");
            match outcome {
                "compensated" => {
                    assert!(
                        matches!(ended, Ended::Compensated(ref e) if e == "injected"),
                        "{ended:?}"
                    );
                    assert_eq!(snapshot(&store).await, before, "failing at {failing}");
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
