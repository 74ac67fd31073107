//! The in-memory backend: one lock per slot kind, never held across an `.await`, and bounded
//! by the same retention as the Redis backend (`redis.orderRetentionSeconds`).
//!
//! Markets each have their own mutex (two markets match in parallel); accounts, claims and API
//! keys sit behind one mutex per table, held only for a map operation. Lock order, where two are
//! taken: `fences` (held through a fenced write, so its check and the write are one step), then
//! `markets` (read, to find the book), then that book's mutex or one table's; nothing else nests
//! (a market operation that changes claims releases the book's mutex before it takes `claims`).
//!
//! # What it keeps, and for how long
//! What Redis expires, this store forgets the retention after the same moment, by the monotonic
//! reading of its [`Clock`]:
//! - a finished (filled or cancelled) order, with its placement record and its cancellation:
//!   the retention after it finished (an undo that puts a maker back in the book keeps it
//!   again); the record of a placement undone before it reached the book: the retention after
//!   the undo;
//! - a user's order-id claim: kept while its order is open or its placement runs; forgotten the
//!   retention after placement recorded a finished order or a failure, or after its order was
//!   filled or cancelled by self-trade prevention in another placement, or cancelled (an undo
//!   that reopens the order keeps the claim again);
//! - an operation-id marker: the retention after its moves were applied;
//! - a fence mark: the retention after the saga's epoch it holds was first written.
//!
//! Accounts, API keys, open orders and saga log entries stay until changed or removed.
//!
//! Each table keeps a queue of (due instant, key) in the order written, which is due order
//! since the retention is constant. Every operation on a table first pops what is due from its
//! queue (a market's queue when that market is used), so forgetting costs amortised O(1) per
//! operation and never scans. A popped entry acts only if it is still its key's latest due (a
//! key dated again, or kept since, has a later one or none).
//!
//! No table stalls as it grows: the tables that hold an entry per order of a retention are
//! sharded ([`ShardedMap`]) and their queues chunked ([`DueQueue`]), so no insertion moves a
//! whole table (see [`crate::tables`]).
//!
//! May use: `tables`, `clock`, `config` (the default retention), `domain`, `book`, and the store's own
//! types.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::{ApiKeyRecord, Claim, ClaimEnd, ClaimOutcome, Fence, SagaEntry, StoreError};
use crate::book::{
    CancelError, Level, MatchOutcome, OrderBook, OrdersPage, PageRequest, UndoOutcome,
};
use crate::clock::{Clock, SystemClock};
use crate::config::RedisConfig;
use crate::domain::{Account, BalanceError, MarketKey, Move, Order, UserId};
use crate::tables::{DueQueue, ShardedMap, ShardedSet};

/// State kept in process memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    retention: Retention,
    accounts: Mutex<Accounts>,
    markets: RwLock<HashMap<MarketKey, Arc<Mutex<Market>>>>,
    claims: Mutex<Claims>,
    /// The highest epoch each saga's writes carried ([`Fence`]). One table for every slot:
    /// a process has one view of all of them, so a stale owner is refused everywhere at once.
    fences: Mutex<Fences>,
    /// API keys by hash, and key id → hash for revocation.
    /// NB: the first map is looked up on every authenticated request, by a SHA-256 digest that
    /// no client can choose: hashbrown's fast default hasher suits it better than SipHash.
    api_keys: Mutex<(
        hashbrown::HashMap<String, ApiKeyRecord>,
        HashMap<String, String>,
    )>,
    /// Saga log entries by saga id.
    sagas: Mutex<HashMap<String, SagaEntry>>,
}

impl Default for Inner {
    fn default() -> Self {
        Self::new(Retention::default())
    }
}

impl Inner {
    fn new(retention: Retention) -> Self {
        Self {
            retention,
            accounts: Mutex::default(),
            markets: RwLock::default(),
            claims: Mutex::default(),
            fences: Mutex::default(),
            api_keys: Mutex::default(),
            sagas: Mutex::default(),
        }
    }
}

/// How long finished things are kept, and the clock that says when that has passed.
#[derive(Debug, Clone)]
struct Retention {
    keep: Duration,
    clock: Arc<dyn Clock>,
}

impl Default for Retention {
    /// The configuration's default retention, on the system clock.
    fn default() -> Self {
        Self {
            keep: Duration::from_secs(RedisConfig::default().order_retention_seconds),
            clock: Arc::new(SystemClock),
        }
    }
}

impl Retention {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    /// When something finished at `now` is forgotten; `None` (never) past the clock's range.
    fn due(&self, now: Instant) -> Option<Instant> {
        now.checked_add(self.keep)
    }
}

/// Accounts and the operation ids already applied to them (one lock: checked and recorded
/// atomically with the moves).
#[derive(Debug, Default)]
struct Accounts {
    by_user: HashMap<UserId, Account>,
    applied: ShardedSet<(UserId, String)>,
    /// When each id of `applied` is forgotten: one entry per id, since an id is recorded only
    /// when absent and removed only when its entry pops.
    applied_due: DueQueue<(UserId, String)>,
}

impl Accounts {
    fn expire(&mut self, now: Instant) {
        while let Some((_, op)) = self.applied_due.pop_due(now) {
            self.applied.remove(&op);
        }
    }
}

/// A claim's key: (user, client order id).
type ClaimKey = (UserId, String);

/// Claims by (user, client order id), each with when it is forgotten.
#[derive(Debug, Default)]
struct Claims {
    held: ShardedMap<ClaimKey, Held>,
    due: DueQueue<ClaimKey>,
}

/// A claim, and when it is forgotten (`None`: kept, its order open or its placement running).
#[derive(Debug)]
struct Held {
    claim: Claim,
    due: Option<Instant>,
}

impl Claims {
    fn expire(&mut self, now: Instant) {
        while let Some((due, key)) = self.due.pop_due(now) {
            if self.held.get(&key).is_some_and(|h| h.due == Some(due)) {
                self.held.remove(&key);
            }
        }
    }

    /// The claim of `key` if `placement` holds it.
    fn of_placement(&mut self, key: &ClaimKey, placement: &str) -> Option<&mut Held> {
        self.held
            .get_mut(key)
            .filter(|h| h.claim.placement(&key.1) == placement)
    }

    /// Sets the claim of `key` held by `placement` to be forgotten at `due` (`None`: kept).
    fn date(&mut self, key: ClaimKey, placement: &str, due: Option<Instant>) {
        if let Some(held) = self.of_placement(&key, placement) {
            held.due = due;
            self.due.push(due, key);
        }
    }
}

/// Fence marks: the highest epoch each saga wrote, and when that mark is forgotten.
#[derive(Debug, Default)]
struct Fences {
    seen: ShardedMap<String, (u64, Option<Instant>)>,
    due: DueQueue<String>,
}

impl Fences {
    fn expire(&mut self, now: Instant) {
        while let Some((due, saga)) = self.due.pop_due(now) {
            if self.seen.get(&saga).is_some_and(|(_, d)| *d == Some(due)) {
                self.seen.remove(&saga);
            }
        }
    }
}

/// One market: its book, and when its finished orders are forgotten.
#[derive(Debug, Default)]
struct Market {
    book: OrderBook,
    due: DueQueue<String>,
    /// The latest due of each order queued in `due`.
    dated: ShardedMap<String, Instant>,
}

impl Market {
    /// Forgets the finished orders that are due at `now` (an order reopened since stays).
    fn expire(&mut self, now: Instant) {
        while let Some((due, id)) = self.due.pop_due(now) {
            if self.dated.get(&id) == Some(&due) {
                self.dated.remove(&id);
                self.book.forget(&id);
            }
        }
    }

    /// Dates what the book finished since the last call; answers those ids.
    fn date_finished(&mut self, due: Option<Instant>) -> Vec<String> {
        let finished = self.book.take_finished();
        if let Some(due) = due {
            for id in &finished {
                self.dated.insert(id.clone(), due);
                self.due.push(Some(due), id.clone());
            }
        }
        finished
    }

    /// The claim key and placement of order `id`, when it is finished.
    fn finished_claim(&self, id: &str) -> Option<(ClaimKey, String)> {
        self.book.get(id).filter(|o| !o.status.is_open()).map(|o| {
            (
                (o.user_id.clone(), o.client_id().to_owned()),
                o.order_id.clone(),
            )
        })
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical section
/// here computes its new value before it writes, so the data is never half-updated.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The fence table held for one fenced write: [`Fenced::check`] before it, then
/// [`Fenced::record`] once it happened.
struct Fenced<'a> {
    table: Option<MutexGuard<'a, Fences>>,
    fence: Option<&'a Fence>,
    /// When a mark written now is forgotten.
    due: Option<Instant>,
}

impl Fenced<'_> {
    /// Refuses a fence older than one already seen.
    fn check(&self) -> Result<(), StoreError> {
        if let (Some(table), Some(f)) = (&self.table, self.fence)
            && table
                .seen
                .get(&f.saga_id)
                .is_some_and(|(seen, _)| *seen > f.epoch)
        {
            return Err(StoreError::Fenced);
        }
        Ok(())
    }

    /// Marks the fence's epoch as seen; a mark dated when its epoch is first written, like
    /// Redis's (`lua/fence.lua`).
    fn record(mut self) {
        if let (Some(table), Some(f)) = (self.table.as_mut(), self.fence) {
            if table
                .seen
                .get(&f.saga_id)
                .is_some_and(|(seen, _)| *seen >= f.epoch)
            {
                return;
            }
            table.seen.insert(f.saga_id.clone(), (f.epoch, self.due));
            table.due.push(self.due, f.saga_id.clone());
        }
    }
}

impl MemoryStore {
    /// An empty store that forgets finished things `retention` after they finish (see the
    /// module docs), by `clock`. [`MemoryStore::default`] keeps them for the configuration's
    /// default `redis.orderRetentionSeconds`, by the system clock.
    pub fn new(retention: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner::new(Retention {
                keep: retention,
                clock,
            })),
        }
    }

    fn now(&self) -> Instant {
        self.inner.retention.now()
    }

    /// Takes the fence table for a write carrying `fence` (nothing without one).
    fn fenced<'a>(&'a self, fence: Option<&'a Fence>) -> Result<Fenced<'a>, StoreError> {
        let mut due = None;
        let table = fence.map(|_| {
            let mut table = lock(&self.inner.fences);
            let now = self.now();
            table.expire(now);
            due = self.inner.retention.due(now);
            table
        });
        let fenced = Fenced { table, fence, due };
        fenced.check()?;
        Ok(fenced)
    }

    fn market(&self, market: &MarketKey) -> Arc<Mutex<Market>> {
        if let Some(book) = self.existing_market(market) {
            return book;
        }
        self.inner
            .markets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(market.clone())
            .or_default()
            .clone()
    }

    fn existing_market(&self, market: &MarketKey) -> Option<Arc<Mutex<Market>>> {
        self.inner
            .markets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(market)
            .cloned()
    }

    /// Runs `f` on a market's book after forgetting what is due; then dates the orders `f`
    /// finished, and answers the claim key and placement of each.
    fn with_book<T>(
        &self,
        market: &Mutex<Market>,
        f: impl FnOnce(&mut OrderBook) -> T,
    ) -> (T, Vec<(ClaimKey, String)>) {
        let mut market = lock(market);
        let now = self.now();
        market.expire(now);
        let answer = f(&mut market.book);
        let finished = market.date_finished(self.inner.retention.due(now));
        let claims = finished
            .iter()
            .filter_map(|id| market.finished_claim(id))
            .collect();
        (answer, claims)
    }

    /// [`MemoryStore::with_book`] on a market that exists (`None` otherwise), for reads.
    fn read_book<T>(&self, market: &MarketKey, f: impl FnOnce(&mut OrderBook) -> T) -> Option<T> {
        self.existing_market(market)
            .map(|m| self.with_book(&m, f).0)
    }

    /// Sets the claims of orders finished in a market (their key and placement) to be
    /// forgotten after the retention.
    fn date_claims(&self, finished: Vec<(ClaimKey, String)>) {
        if finished.is_empty() {
            return;
        }
        let mut claims = lock(&self.inner.claims);
        let now = self.now();
        claims.expire(now);
        let due = self.inner.retention.due(now);
        for (key, placement) in finished {
            claims.date(key, &placement, due);
        }
    }

    /// Keeps the claims of orders an undo put back in the book.
    fn keep_claims(&self, reopened: Vec<(ClaimKey, String)>) {
        if reopened.is_empty() {
            return;
        }
        let mut claims = lock(&self.inner.claims);
        for (key, placement) in reopened {
            if let Some(held) = claims.of_placement(&key, &placement) {
                held.due = None;
            }
        }
    }

    pub(super) fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    pub(super) fn apply_moves(
        &self,
        user: &UserId,
        op_id: Option<&str>,
        moves: &[Move],
        fence: Option<&Fence>,
    ) -> Result<Result<Account, BalanceError>, StoreError> {
        let fenced = self.fenced(fence)?;
        let mut accounts = lock(&self.inner.accounts);
        let now = self.now();
        accounts.expire(now);
        let Accounts {
            by_user,
            applied,
            applied_due,
        } = &mut *accounts;
        let op = op_id.map(|id| (user.clone(), id.to_owned()));
        if op.as_ref().is_some_and(|op| applied.contains(op)) {
            return Ok(Ok(by_user.get(user).cloned().unwrap_or_default()));
        }
        let account = by_user.entry(user.clone()).or_default();
        let result = account.apply(moves).map(|()| account.clone());
        if let (Ok(_), Some(op)) = (&result, op) {
            applied_due.push(self.inner.retention.due(now), op.clone());
            applied.insert(op);
        }
        drop(accounts);
        fenced.record();
        Ok(result)
    }

    pub(super) fn account(&self, user: &UserId) -> Result<Account, StoreError> {
        Ok(lock(&self.inner.accounts)
            .by_user
            .get(user)
            .cloned()
            .unwrap_or_default())
    }

    pub(super) fn claim_order_id(
        &self,
        order_id: &str,
        claim: Claim,
        fence: Option<&Fence>,
    ) -> Result<ClaimOutcome, StoreError> {
        let fenced = self.fenced(fence)?;
        let mut claims = lock(&self.inner.claims);
        claims.expire(self.now());
        let key = (claim.user_id.clone(), order_id.to_owned());
        if let Some(existing) = claims.held.get(&key) {
            if existing.claim.placement_id == claim.placement_id {
                return Ok(ClaimOutcome::Claimed);
            }
            return Ok(ClaimOutcome::Existing(existing.claim.clone()));
        }
        claims.held.insert(key, Held { claim, due: None });
        drop(claims);
        fenced.record();
        Ok(ClaimOutcome::Claimed)
    }

    pub(super) fn finish_claim(
        &self,
        user: &UserId,
        order_id: &str,
        placement: &str,
        end: ClaimEnd,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let fenced = self.fenced(fence)?;
        let mut claims = lock(&self.inner.claims);
        let now = self.now();
        claims.expire(now);
        let key = (user.clone(), order_id.to_owned());
        if let Some(held) = claims.of_placement(&key, placement) {
            let finished = match end {
                ClaimEnd::Placed(record) => {
                    let finished = !record.order.status.is_open();
                    held.claim.result = Some(record);
                    finished
                }
                ClaimEnd::Failed(failed) => {
                    held.claim.failed = Some(failed);
                    true
                }
            };
            if finished {
                claims.date(key, placement, self.inner.retention.due(now));
            }
        }
        drop(claims);
        fenced.record();
        Ok(())
    }

    pub(super) fn claim(&self, user: &UserId, order_id: &str) -> Result<Option<Claim>, StoreError> {
        let mut claims = lock(&self.inner.claims);
        claims.expire(self.now());
        Ok(claims
            .held
            .get(&(user.clone(), order_id.to_owned()))
            .map(|h| h.claim.clone()))
    }

    pub(super) fn match_order(
        &self,
        order: Order,
        fence: Option<&Fence>,
    ) -> Result<MatchOutcome, StoreError> {
        let fenced = self.fenced(fence)?;
        let market = order.market_key.clone();
        let taker = order.order_id.clone();
        let (outcome, finished) = self.with_book(&self.market(&market), |book| {
            book.place_once(order, |taker, i| format!("{taker}#{i}"))
        });
        let outcome = outcome.map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // NB: like Redis, the claims of the makers this placement finished (filled, or
        // cancelled by self-trade prevention) are dated here; the taker's own claim is dated
        // when its placement records the outcome ([`MemoryStore::finish_claim`]).
        self.date_claims(finished.into_iter().filter(|(_, p)| *p != taker).collect());
        fenced.record();
        Ok(outcome)
    }

    pub(super) fn undo_match(
        &self,
        market: &MarketKey,
        taker_id: &str,
        fence: Option<&Fence>,
    ) -> Result<UndoOutcome, StoreError> {
        let fenced = self.fenced(fence)?;
        let ((undo, reopened), _finished) = self.with_book(&self.market(market), |book| {
            let undo = book.undo(taker_id);
            let reopened = undo
                .fills
                .iter()
                .filter_map(|f| book.get(&f.maker_order_id))
                .filter(|maker| maker.status.is_open())
                .map(|m| {
                    (
                        (m.user_id.clone(), m.client_id().to_owned()),
                        m.order_id.clone(),
                    )
                })
                .collect::<Vec<_>>();
            (undo, reopened)
        });
        // NB: makers cancelled by the undo were finished already, and their claims are dated;
        // the taker's claim is dated when its placement records the failure.
        self.keep_claims(reopened);
        fenced.record();
        Ok(undo)
    }

    pub(super) fn saga_write(&self, entry: &SagaEntry, create: bool) -> Result<bool, StoreError> {
        let mut sagas = lock(&self.inner.sagas);
        let allowed = match sagas.get(&entry.id) {
            None => create,
            Some(e) => !create && e.owner == entry.owner && e.epoch == entry.epoch,
        };
        if !allowed {
            return Ok(false);
        }
        let epoch = if create { 1 } else { entry.epoch };
        sagas.insert(
            entry.id.clone(),
            SagaEntry {
                epoch,
                ..entry.clone()
            },
        );
        Ok(true)
    }

    pub(super) fn saga_claim(
        &self,
        id: &str,
        owner: &str,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<Option<SagaEntry>, StoreError> {
        let mut sagas = lock(&self.inner.sagas);
        let Some(entry) = sagas.get_mut(id) else {
            return Ok(None);
        };
        if !entry.claimable_by(owner, now_ms) {
            return Ok(None);
        }
        if entry.owner != owner {
            entry.epoch += 1;
        }
        entry.owner = owner.to_owned();
        entry.lease_until_ms = lease_until_ms;
        Ok(Some(entry.clone()))
    }

    pub(super) fn saga_delete(
        &self,
        id: &str,
        owner: &str,
        epoch: u64,
    ) -> Result<bool, StoreError> {
        let mut sagas = lock(&self.inner.sagas);
        if sagas
            .get(id)
            .is_some_and(|e| e.owner == owner && e.epoch == epoch)
        {
            sagas.remove(id);
            return Ok(true);
        }
        Ok(false)
    }

    pub(super) fn saga_list(&self) -> Result<Vec<SagaEntry>, StoreError> {
        let mut all: Vec<SagaEntry> = lock(&self.inner.sagas).values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    pub(super) fn cancel_order(
        &self,
        market: &MarketKey,
        order_id: &str,
        user: &UserId,
        fence: Option<&Fence>,
        again: bool,
    ) -> Result<Result<(Order, u64), CancelError>, StoreError> {
        let fenced = self.fenced(fence)?;
        let Some(book) = self.existing_market(market) else {
            return Ok(Err(CancelError::NotFound));
        };
        let (cancelled, _finished) =
            self.with_book(&book, |book| book.cancel_once(order_id, user, again));
        if let Ok((order, _)) = &cancelled {
            // NB: a repeated cancellation dates the claim again, as Redis does.
            self.date_claims(vec![(
                (order.user_id.clone(), order.client_id().to_owned()),
                order.order_id.clone(),
            )]);
        }
        fenced.record();
        Ok(cancelled)
    }

    pub(super) fn order(
        &self,
        market: &MarketKey,
        order_id: &str,
    ) -> Result<Option<Order>, StoreError> {
        Ok(self
            .read_book(market, |book| book.get(order_id).cloned())
            .flatten())
    }

    pub(super) fn depth(
        &self,
        market: &MarketKey,
        max_levels: usize,
    ) -> Result<(Vec<Level>, Vec<Level>), StoreError> {
        Ok(self
            .read_book(market, |book| book.depth(max_levels))
            .unwrap_or_default())
    }

    /// A page of open orders, from the book's index (see [`OrderBook::open_orders_page`]):
    /// the book's lock is held for the page's worth of work, never a walk of every order.
    pub(super) fn open_orders_page(
        &self,
        market: &MarketKey,
        user: Option<&UserId>,
        page: PageRequest,
    ) -> Result<OrdersPage, StoreError> {
        Ok(self
            .read_book(market, |book| book.open_orders_page(user, page))
            .unwrap_or_default())
    }

    pub(super) fn put_api_key(&self, record: ApiKeyRecord) -> Result<(), StoreError> {
        let mut keys = lock(&self.inner.api_keys);
        keys.1.insert(record.key_id.clone(), record.hash.clone());
        keys.0.insert(record.hash.clone(), record);
        Ok(())
    }

    pub(super) fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(lock(&self.inner.api_keys).0.get(hash).cloned())
    }

    pub(super) fn user_by_api_key_hash(&self, hash: &str) -> Result<Option<UserId>, StoreError> {
        Ok(lock(&self.inner.api_keys)
            .0
            .get(hash)
            .map(|r| r.user_id.clone()))
    }

    pub(super) fn delete_api_key(&self, key_id: &str) -> Result<bool, StoreError> {
        let mut keys = lock(&self.inner.api_keys);
        match keys.1.remove(key_id) {
            Some(hash) => Ok(keys.0.remove(&hash).is_some()),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The retention of the in-memory store, on a [`ManualClock`].

    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::{Asset, Side};
    use crate::store::{FailedPlacement, FailureKind, PlacementRecord};

    const RETENTION_MS: u64 = 1_000;

    fn store() -> (MemoryStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at(1_000_000));
        let store = MemoryStore::new(Duration::from_millis(RETENTION_MS), clock.clone());
        (store, clock)
    }

    fn market() -> MarketKey {
        MarketKey::parse("marketKey", "80002:1").expect("valid")
    }

    fn user(n: u8) -> UserId {
        UserId::parse("userId", &format!("0x{}", format!("{n:02x}").repeat(20))).expect("valid")
    }

    fn fence(saga: &str, epoch: u64) -> Fence {
        Fence {
            saga_id: saga.to_owned(),
            epoch,
            lease_until_ms: u64::MAX,
        }
    }

    /// Places `client` of user `u` as placement `p-<client>` the way the saga does: claim,
    /// match, record the outcome on the claim.
    fn place(store: &MemoryStore, client: &str, u: u8, side: Side, price: u64) -> MatchOutcome {
        let placement = format!("p-{client}");
        let claim = Claim {
            fingerprint: format!("fp-{client}"),
            market_key: market(),
            user_id: user(u),
            placement_id: placement.clone(),
            result: None,
            failed: None,
        };
        assert_eq!(
            store.claim_order_id(client, claim, None).expect("claim"),
            ClaimOutcome::Claimed
        );
        let mut order = Order::new(placement.clone(), market(), user(u), side, price, 1, 0);
        order.client_order_id = client.to_owned();
        let f = fence(&placement, 1);
        let outcome = store.match_order(order, Some(&f)).expect("match");
        let record = PlacementRecord {
            order: outcome.order.clone(),
            fills: outcome.fills.clone(),
        };
        store
            .finish_claim(
                &user(u),
                client,
                &placement,
                ClaimEnd::Placed(record),
                Some(&f),
            )
            .expect("finish");
        outcome
    }

    fn deposit(store: &MemoryStore, u: u8, op: &str) -> u128 {
        store
            .apply_moves(
                &user(u),
                Some(op),
                &[Move::credit(Asset::Collateral, 10)],
                None,
            )
            .expect("store")
            .expect("a deposit")
            .collateral
            .available
    }

    fn order(store: &MemoryStore, placement: &str) -> Option<Order> {
        store.order(&market(), placement).expect("order")
    }

    fn claim(store: &MemoryStore, u: u8, client: &str) -> Option<Claim> {
        store.claim(&user(u), client).expect("claim")
    }

    /// The size of every table and queue that retention bounds.
    fn sizes(store: &MemoryStore) -> Vec<(&'static str, usize)> {
        let accounts = lock(&store.inner.accounts);
        let claims = lock(&store.inner.claims);
        let fences = lock(&store.inner.fences);
        let market = store.existing_market(&market()).expect("a market");
        let market = lock(&market);
        let (orders, recorded, cancelled) = market.book.sizes();
        vec![
            ("op ids", accounts.applied.len()),
            ("op id queue", accounts.applied_due.len()),
            ("claims", claims.held.len()),
            ("claim queue", claims.due.len()),
            ("fences", fences.seen.len()),
            ("fence queue", fences.due.len()),
            ("orders", orders),
            ("placement records", recorded),
            ("owner cancellations", cancelled),
            ("order queue", market.due.len()),
            ("dated orders", market.dated.len()),
        ]
    }

    #[test]
    fn finished_orders_their_claims_and_records_are_forgotten_after_the_retention() {
        let (store, clock) = store();
        place(&store, "ask", 1, Side::Sell, 400_000);
        let bid = place(&store, "bid", 2, Side::Buy, 500_000);
        assert_eq!(bid.fills.len(), 1, "the bid takes the ask");
        place(&store, "rest", 2, Side::Buy, 100_000);
        place(&store, "open", 3, Side::Sell, 900_000);
        let cancelled = store
            .cancel_order(
                &market(),
                "p-rest",
                &user(2),
                Some(&fence("c-rest", 1)),
                false,
            )
            .expect("store");
        assert!(cancelled.is_ok(), "{cancelled:?}");
        let failed = Claim {
            fingerprint: "fp-refused".to_owned(),
            market_key: market(),
            user_id: user(4),
            placement_id: "p-refused".to_owned(),
            result: None,
            failed: None,
        };
        store
            .claim_order_id("refused", failed, None)
            .expect("claim");
        let refused = FailedPlacement {
            kind: FailureKind::Refused,
            message: "insufficient balance".to_owned(),
        };
        store
            .finish_claim(
                &user(4),
                "refused",
                "p-refused",
                ClaimEnd::Failed(refused),
                None,
            )
            .expect("fail");
        store
            .undo_match(&market(), "p-refused", None)
            .expect("undo");
        assert_eq!(deposit(&store, 5, "deposit-1"), 10);

        clock.advance(RETENTION_MS - 1);
        for (u, client) in [
            (1, "ask"),
            (2, "bid"),
            (2, "rest"),
            (3, "open"),
            (4, "refused"),
        ] {
            assert!(
                claim(&store, u, client).is_some(),
                "{client}: kept until the retention"
            );
        }
        for p in ["p-ask", "p-bid", "p-rest", "p-open"] {
            assert!(order(&store, p).is_some(), "{p}: kept until the retention");
        }
        assert_eq!(
            deposit(&store, 5, "deposit-1"),
            10,
            "the op id is remembered"
        );
        let stale = store.apply_moves(&user(6), Some("x"), &[], Some(&fence("p-bid", 0)));
        assert!(matches!(stale, Err(StoreError::Fenced)), "{stale:?}");

        clock.advance(1);
        for (u, client) in [(1, "ask"), (2, "bid"), (2, "rest"), (4, "refused")] {
            assert_eq!(
                claim(&store, u, client),
                None,
                "{client}: its claim is forgotten"
            );
        }
        for p in ["p-ask", "p-bid", "p-rest"] {
            assert_eq!(
                order(&store, p),
                None,
                "{p}: the finished order is forgotten"
            );
        }
        let open = order(&store, "p-open").expect("the open order stays");
        assert!(open.status.is_open(), "{open:?}");
        let open_claim = claim(&store, 3, "open").expect("the open order's claim stays");
        assert_eq!(open_claim.placement_id, "p-open");
        assert_eq!(
            deposit(&store, 5, "deposit-1"),
            20,
            "the op id is forgotten: the same id applies again"
        );
        let stale = store.apply_moves(&user(6), Some("x"), &[], Some(&fence("p-bid", 0)));
        assert!(stale.is_ok(), "the fence mark is forgotten: {stale:?}");
        let sizes = sizes(&store);
        let book: Vec<_> = sizes
            .iter()
            .filter(|(name, _)| {
                ["orders", "placement records", "owner cancellations"].contains(name)
            })
            .collect();
        assert_eq!(
            book,
            [
                &("orders", 1),
                &("placement records", 1),
                &("owner cancellations", 0)
            ],
            "only the open order and its placement record stay (the undone record went too)"
        );
    }

    #[test]
    fn a_maker_put_back_by_an_undo_keeps_its_order_and_its_claim() {
        let (store, clock) = store();
        place(&store, "ask", 1, Side::Sell, 400_000);
        place(&store, "bid", 2, Side::Buy, 500_000);
        let undo = store
            .undo_match(&market(), "p-bid", Some(&fence("p-bid", 1)))
            .expect("undo");
        assert_eq!(undo.fills.len(), 1);
        clock.advance(10 * RETENTION_MS);
        let ask = order(&store, "p-ask").expect("the maker is back in the book");
        assert!(ask.status.is_open(), "{ask:?}");
        assert!(claim(&store, 1, "ask").is_some(), "its claim stays");
        assert_eq!(
            order(&store, "p-bid"),
            None,
            "the undone taker is forgotten"
        );
    }

    #[test]
    fn the_tables_stay_bounded_under_a_long_run_of_place_and_fill() {
        let (store, clock) = store();
        place(&store, "open", 3, Side::Sell, 900_000);
        const STEP_MS: u64 = 10;
        // Within one retention: 100 steps of two orders, two claims, two op ids and two fences.
        const BOUND: usize = 2 * (RETENTION_MS / STEP_MS) as usize + 3;
        for i in 0..10_000 {
            place(&store, &format!("ask-{i}"), 1, Side::Sell, 400_000);
            let bid = place(&store, &format!("bid-{i}"), 2, Side::Buy, 500_000);
            assert_eq!(bid.fills.len(), 1, "step {i}");
            deposit(&store, 1, &format!("op-a-{i}"));
            deposit(&store, 2, &format!("op-b-{i}"));
            clock.advance(STEP_MS);
            if i % 500 == 0 || i == 9_999 {
                for (name, size) in sizes(&store) {
                    assert!(
                        size <= BOUND,
                        "step {i}: {name} holds {size} (bound {BOUND})"
                    );
                }
            }
        }
        assert!(order(&store, "p-open").is_some(), "the open order stays");
        assert!(claim(&store, 3, "open").is_some(), "and its claim");
        assert!(
            order(&store, "p-bid-9999").is_some(),
            "the last second's orders are kept"
        );
    }
}
