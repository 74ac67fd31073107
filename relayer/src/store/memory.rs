//! The in-memory backend: one lock per slot kind, never held across an `.await`.
//!
//! Markets each have their own mutex (two markets match in parallel); accounts, claims and API
//! keys sit behind one mutex per table, held only for a map operation. Lock order, where two are
//! taken: `fences` (held through a fenced write, so its check and the write are one step), then
//! `markets` (read, to find the book), then that book's mutex or one table's; nothing else nests.
//!
//! May use: `domain`, `book`, and the store's own types.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::{ApiKeyRecord, Claim, ClaimEnd, ClaimOutcome, Fence, SagaEntry, StoreError};
use crate::book::{CancelError, Level, MatchOutcome, OrderBook, UndoOutcome};
use crate::domain::{Account, BalanceError, MarketKey, Move, Order, UserId};

/// State kept in process memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    accounts: Mutex<Accounts>,
    markets: RwLock<HashMap<MarketKey, Arc<Mutex<OrderBook>>>>,
    /// Claims by (user, client order id).
    claims: Mutex<HashMap<(UserId, String), Claim>>,
    /// The highest epoch each saga's writes carried ([`Fence`]). One table for every slot:
    /// a process has one view of all of them, so a stale owner is refused everywhere at once.
    fences: Mutex<HashMap<String, u64>>,
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

/// Accounts and the operation ids already applied to them (one lock: checked and recorded
/// atomically with the moves).
#[derive(Debug, Default)]
struct Accounts {
    by_user: HashMap<UserId, Account>,
    applied: HashSet<(UserId, String)>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical section
/// here computes its new value before it writes, so the data is never half-updated.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The fence table held for one fenced write: [`Fenced::check`] before it, then
/// [`Fenced::record`] once it happened.
struct Fenced<'a> {
    table: Option<MutexGuard<'a, HashMap<String, u64>>>,
    fence: Option<&'a Fence>,
}

impl Fenced<'_> {
    /// Refuses a fence older than one already seen.
    fn check(&self) -> Result<(), StoreError> {
        if let (Some(table), Some(f)) = (&self.table, self.fence)
            && table.get(&f.saga_id).is_some_and(|seen| *seen > f.epoch)
        {
            return Err(StoreError::Fenced);
        }
        Ok(())
    }

    fn record(mut self) {
        if let (Some(table), Some(f)) = (self.table.as_mut(), self.fence) {
            let seen = table.entry(f.saga_id.clone()).or_default();
            *seen = (*seen).max(f.epoch);
        }
    }
}

impl MemoryStore {
    /// Takes the fence table for a write carrying `fence` (nothing without one).
    fn fenced<'a>(&'a self, fence: Option<&'a Fence>) -> Result<Fenced<'a>, StoreError> {
        let fenced = Fenced {
            table: fence.map(|_| lock(&self.inner.fences)),
            fence,
        };
        fenced.check()?;
        Ok(fenced)
    }

    fn book(&self, market: &MarketKey) -> Arc<Mutex<OrderBook>> {
        if let Some(book) = self
            .inner
            .markets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(market)
        {
            return book.clone();
        }
        self.inner
            .markets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(market.clone())
            .or_default()
            .clone()
    }

    fn existing_book(&self, market: &MarketKey) -> Option<Arc<Mutex<OrderBook>>> {
        self.inner
            .markets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(market)
            .cloned()
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
        let Accounts { by_user, applied } = &mut *accounts;
        let op = op_id.map(|id| (user.clone(), id.to_owned()));
        if op.as_ref().is_some_and(|op| applied.contains(op)) {
            return Ok(Ok(by_user.get(user).cloned().unwrap_or_default()));
        }
        let account = by_user.entry(user.clone()).or_default();
        let result = account.apply(moves).map(|()| account.clone());
        if let (Ok(_), Some(op)) = (&result, op) {
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
    ) -> Result<ClaimOutcome, StoreError> {
        let mut claims = lock(&self.inner.claims);
        let key = (claim.user_id.clone(), order_id.to_owned());
        if let Some(existing) = claims.get(&key) {
            if existing.placement_id == claim.placement_id {
                return Ok(ClaimOutcome::Claimed);
            }
            return Ok(ClaimOutcome::Existing(existing.clone()));
        }
        claims.insert(key, claim);
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
        if let Some(claim) = lock(&self.inner.claims)
            .get_mut(&(user.clone(), order_id.to_owned()))
            .filter(|c| c.placement(order_id) == placement)
        {
            match end {
                ClaimEnd::Placed(record) => claim.result = Some(record),
                ClaimEnd::Failed(failed) => claim.failed = Some(failed),
            }
        }
        fenced.record();
        Ok(())
    }

    pub(super) fn claim(&self, user: &UserId, order_id: &str) -> Result<Option<Claim>, StoreError> {
        Ok(lock(&self.inner.claims)
            .get(&(user.clone(), order_id.to_owned()))
            .cloned())
    }

    pub(super) fn match_order(
        &self,
        order: Order,
        fence: Option<&Fence>,
    ) -> Result<MatchOutcome, StoreError> {
        let fenced = self.fenced(fence)?;
        let book = self.book(&order.market_key);
        let outcome = lock(&book)
            .place_once(order, |taker, i| format!("{taker}#{i}"))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
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
        let book = self.book(market);
        let undo = lock(&book).undo(taker_id);
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
    ) -> Result<Result<Order, CancelError>, StoreError> {
        let fenced = self.fenced(fence)?;
        let Some(book) = self.existing_book(market) else {
            return Ok(Err(CancelError::NotFound));
        };
        let cancelled = lock(&book).cancel_once(order_id, user, again);
        fenced.record();
        Ok(cancelled)
    }

    pub(super) fn order(
        &self,
        market: &MarketKey,
        order_id: &str,
    ) -> Result<Option<Order>, StoreError> {
        Ok(self
            .existing_book(market)
            .and_then(|b| lock(&b).get(order_id).cloned()))
    }

    pub(super) fn depth(
        &self,
        market: &MarketKey,
        max_levels: usize,
    ) -> Result<(Vec<Level>, Vec<Level>), StoreError> {
        Ok(self
            .existing_book(market)
            .map(|b| lock(&b).depth(max_levels))
            .unwrap_or_default())
    }

    pub(super) fn open_orders(
        &self,
        market: &MarketKey,
        user: Option<&UserId>,
    ) -> Result<Vec<Order>, StoreError> {
        Ok(self
            .existing_book(market)
            .map(|b| lock(&b).open_orders(user))
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
