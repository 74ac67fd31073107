//! Where the relayer keeps its state: balances, order books, orders, placement claims
//! (idempotency), API keys and the durable saga log.
//!
//! Every method is one atomic operation on one *slot*: one user's account, one market's book,
//! one user's order id's claim, the API-key table, or one saga's log entry. Work that spans slots
//! (reserve, then match, then move balances) is a sequence of these calls made by the rooms
//! above (the exchange and the order saga), which this one does not know. This split is what a
//! Redis Cluster backend needs (one script per hash slot), so the in-memory backend keeps it
//! too, and both answer the same contract.
//!
//! Backends: [`MemoryStore`] (default) and [`RedisStore`] (shared by every replica; see its
//! module for the key layout). Both answer the same contract, held to it by
//! `relayer/tests/store_contract.rs`, and both forget finished orders, their claims,
//! operation ids and fence marks `redis.orderRetentionSeconds` after they finish (see each
//! backend for the details). The enum dispatches statically: no boxing, no `async_trait`.
//!
//! May use: `tables`, `clock`, `config`, `domain`, `book`; nothing above them (the order saga's log
//! entries are opaque [`SagaEntry`] records here).

mod memory;
mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::{
    RedisAccess, RedisConnection, RedisMode, RedisSettings, RedisStore, RedisTarget, connect,
};

use std::sync::Arc;
use std::time::Duration;

use crate::clock::SystemClock;
use crate::config::RelayerConfig;

use serde::{Deserialize, Serialize};

use crate::book::{
    CancelError, Level, MAX_PAGE, MatchOutcome, OrdersPage, PageRequest, UndoOutcome,
};
use crate::domain::{Account, BalanceError, MarketKey, Move, Order, UserId};

/// A store failure that is not a business outcome.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered something this build cannot read (a defect or foreign data).
    #[error("store data unreadable: {0}")]
    Corrupt(String),
    /// A saga's write was refused by its fence (see [`Fence`]); nothing was changed.
    #[error("{}", FENCED)]
    Fenced,
}

/// How a placement ended, as its claim records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimEnd {
    /// Placed: the answer.
    Placed(PlacementRecord),
    /// Failed: why.
    Failed(FailedPlacement),
}

/// The record behind a user's order id: who placed what, and the answer placement gave.
///
/// An order id is scoped to its user (two users may both use `o-1`), and names one placement
/// attempt for ever: a retry with the same id replays the outcome recorded here, success
/// ([`Claim::result`]) or failure ([`Claim::failed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// Hash of the placement request (user, market, side, price, amount).
    pub fingerprint: String,
    /// Market of the order.
    pub market_key: MarketKey,
    /// Owner.
    pub user_id: UserId,
    /// The placement holding the id ([`Order::order_id`]); empty in claims of older builds,
    /// whose placement id is the order id itself (see [`Claim::placement`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub placement_id: String,
    /// The placement's first answer, once placement finished.
    #[serde(skip)]
    pub result: Option<PlacementRecord>,
    /// Why the placement failed, once it failed: its answer, replayed to a retry.
    #[serde(skip)]
    pub failed: Option<FailedPlacement>,
}

impl Claim {
    /// The placement id behind client order id `order_id`.
    pub fn placement<'a>(&'a self, order_id: &'a str) -> &'a str {
        if self.placement_id.is_empty() {
            order_id
        } else {
            &self.placement_id
        }
    }
}

/// A placement that ended without placing the order (nothing of it stays reserved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedPlacement {
    /// What kind of failure, which decides the answer replayed.
    pub kind: FailureKind,
    /// Why, for the client.
    pub message: String,
}

/// Kinds of [`FailedPlacement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The reservation was refused (insufficient balance): 422.
    Refused,
    /// Settlement said "not settled"; everything was undone: 503.
    NotSettled,
    /// Undone for another reason (e.g. recovered after the placing replica stopped): 409.
    NotPlaced,
}

/// A saga's fencing token: every store write a saga makes carries it, and a store refuses it
/// once a newer owner of the saga (a higher `epoch`) has written to the same slot, or (Redis)
/// once `lease_until_ms` has passed by the store's clock. So a replica whose lease lapsed
/// (paused, partitioned) cannot write alongside its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The saga's id.
    pub saga_id: String,
    /// The owner's lease epoch ([`SagaEntry::epoch`]).
    pub epoch: u64,
    /// Until when the owner believes its lease runs, ms since the Unix epoch.
    pub lease_until_ms: u64,
}

/// A fenced write was refused: the saga has a newer owner or its lease ran out.
pub const FENCED: &str = "fenced: the saga has a newer owner or its lease ran out";

/// What placement answered, kept so a repeated placement returns the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementRecord {
    /// The order right after placement.
    pub order: Order,
    /// Its fills.
    pub fills: Vec<crate::domain::Fill>,
}

/// The answer to a claim of an order id.
// NB: one per placement, moved straight into a match; boxing the claim would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The id was free and is now claimed by this placement (or already was, by the same
    /// placement).
    Claimed,
    /// The id is already claimed; here is its record.
    Existing(Claim),
}

/// One saga's entry in the durable saga log (the order saga writes it; its record is opaque
/// here).
///
/// The lease fences the saga: only `owner` writes it, and another replica may take it over
/// ([`Store::saga_claim`]) only once `lease_until_ms` has passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaEntry {
    /// Saga id (the placement id for order sagas).
    pub id: String,
    /// The replica running it.
    pub owner: String,
    /// The lease epoch: 1 when the entry is created, one more at each change of owner. The
    /// fencing token of the owner's writes ([`Fence`]).
    #[serde(default)]
    pub epoch: u64,
    /// Until when the owner's lease runs, ms since the Unix epoch.
    pub lease_until_ms: u64,
    /// `running`, `pending`, `compensating` or `manual`.
    pub state: String,
    /// The saga's data and progress, JSON (its shape belongs to the saga).
    pub record: String,
}

impl SagaEntry {
    /// Whether `owner` may take the saga over at `now_ms`: it is not parked as manual, and
    /// the lease is `owner`'s or has run out.
    pub fn claimable_by(&self, owner: &str, now_ms: u64) -> bool {
        self.state != "manual" && (self.owner == owner || self.lease_until_ms < now_ms)
    }
}

/// An API key as stored: only the hash of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    /// Public identifier (for revocation).
    pub key_id: String,
    /// SHA-256 of the full key, hex.
    pub hash: String,
    /// The only user this key acts for.
    pub user_id: UserId,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// The relayer's state, behind one of its backends.
#[derive(Debug, Clone)]
pub enum Store {
    /// In-process maps; state dies with the process.
    Memory(MemoryStore),
    /// Redis, shared by every replica.
    Redis(RedisStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Memory($s) => $e,
            Store::Redis($s) => $e.await,
        }
    };
}

impl Store {
    /// A fresh in-memory store, keeping finished orders for the default retention.
    pub fn memory() -> Self {
        Store::Memory(MemoryStore::default())
    }

    /// A Redis store (connecting lazily; must be called inside a Tokio runtime).
    pub fn redis(settings: &RedisSettings) -> Result<Self, StoreError> {
        RedisStore::new(settings).map(Store::Redis)
    }

    /// The store `config` selects: Redis when `redisUrl` is set (with `redis.password` and
    /// `redis.caFile`), else in memory. Either keeps finished orders for
    /// `redis.orderRetentionSeconds`.
    pub fn from_config(config: &RelayerConfig) -> Result<Self, StoreError> {
        match &config.redis_url {
            None => Ok(Store::Memory(MemoryStore::new(
                Duration::from_secs(config.redis.order_retention_seconds),
                Arc::new(SystemClock),
            ))),
            Some(url) => RedisStore::from_config(url, config).map(Store::Redis),
        }
    }

    /// The Redis connection of a Redis store, shared with the rate limiter.
    pub fn redis_connection(&self) -> Option<RedisConnection> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(s) => Some(s.connection()),
        }
    }

    /// `memory` or `redis`, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    /// Whether the backend answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping())
    }

    /// Applies balance moves to one account, all or none.
    pub async fn apply_moves(
        &self,
        user: &UserId,
        moves: &[Move],
    ) -> Result<Result<Account, BalanceError>, StoreError> {
        dispatch!(self, s => s.apply_moves(user, None, moves, None))
    }

    /// Applies balance moves to one account, all or none, at most once per `op_id`: a repeat
    /// with an id that was applied changes nothing and answers the account as it is. Lets a
    /// caller retry a step whose answer was lost. Ids are remembered for the order retention.
    pub async fn apply_moves_once(
        &self,
        user: &UserId,
        op_id: &str,
        moves: &[Move],
    ) -> Result<Result<Account, BalanceError>, StoreError> {
        dispatch!(self, s => s.apply_moves(user, Some(op_id), moves, None))
    }

    /// [`Store::apply_moves_once`] for a saga: refused with [`StoreError::Fenced`] (changing
    /// nothing) once `fence` is stale.
    pub async fn apply_moves_fenced(
        &self,
        user: &UserId,
        op_id: &str,
        moves: &[Move],
        fence: &Fence,
    ) -> Result<Result<Account, BalanceError>, StoreError> {
        dispatch!(self, s => s.apply_moves(user, Some(op_id), moves, Some(fence)))
    }

    /// One user's account.
    pub async fn account(&self, user: &UserId) -> Result<Account, StoreError> {
        dispatch!(self, s => s.account(user))
    }

    /// Claims `claim.user_id`'s order id `order_id` for the placement `claim.placement_id`, or
    /// returns who has it (a claim by the same placement answers [`ClaimOutcome::Claimed`]).
    pub async fn claim_order_id(
        &self,
        order_id: &str,
        claim: Claim,
    ) -> Result<ClaimOutcome, StoreError> {
        dispatch!(self, s => s.claim_order_id(order_id, claim, None))
    }

    /// [`Store::claim_order_id`] for a saga, fenced (see [`Fence`]): a replica whose lease
    /// lapsed cannot claim the id after its successor gave the placement up.
    pub async fn claim_order_id_fenced(
        &self,
        order_id: &str,
        claim: Claim,
        fence: &Fence,
    ) -> Result<ClaimOutcome, StoreError> {
        dispatch!(self, s => s.claim_order_id(order_id, claim, Some(fence)))
    }

    /// Records the placement's answer on the claim of `user`'s `order_id`, if `placement`
    /// holds it. A finished order's claim expires after the retention.
    pub async fn finish_claim(
        &self,
        user: &UserId,
        order_id: &str,
        placement: &str,
        result: PlacementRecord,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.finish_claim(user, order_id, placement, ClaimEnd::Placed(result), fence))
    }

    /// Records that `placement` failed on the claim of `user`'s `order_id` (if it holds it),
    /// so a retry replays the failure; the claim expires after the retention.
    pub async fn fail_claim(
        &self,
        user: &UserId,
        order_id: &str,
        placement: &str,
        failed: FailedPlacement,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.finish_claim(user, order_id, placement, ClaimEnd::Failed(failed), fence))
    }

    /// The claim of `user`'s order id (also one written by an older build, whose claims were
    /// not scoped to their user).
    pub async fn claim(&self, user: &UserId, order_id: &str) -> Result<Option<Claim>, StoreError> {
        dispatch!(self, s => s.claim(user, order_id))
    }

    /// Matches an order in its market's book and rests the remainder. At most once per order
    /// id: a repeat answers the first outcome (so a step whose answer was lost can be retried);
    /// a placement that was undone is refused.
    pub async fn match_order(&self, order: Order) -> Result<MatchOutcome, StoreError> {
        dispatch!(self, s => s.match_order(order, None))
    }

    /// [`Store::match_order`] for a saga, fenced (see [`Fence`]).
    pub async fn match_order_fenced(
        &self,
        order: Order,
        fence: &Fence,
    ) -> Result<MatchOutcome, StoreError> {
        dispatch!(self, s => s.match_order(order, Some(fence)))
    }

    /// Undoes the match of placement `taker_id` (idempotent; see [`crate::book`] for the
    /// rules). A placement that never reached the book is marked so that a late match of it is
    /// refused.
    pub async fn undo_match(
        &self,
        market: &MarketKey,
        taker_id: &str,
    ) -> Result<UndoOutcome, StoreError> {
        dispatch!(self, s => s.undo_match(market, taker_id, None))
    }

    /// [`Store::undo_match`] for a saga, fenced (see [`Fence`]).
    pub async fn undo_match_fenced(
        &self,
        market: &MarketKey,
        taker_id: &str,
        fence: &Fence,
    ) -> Result<UndoOutcome, StoreError> {
        dispatch!(self, s => s.undo_match(market, taker_id, Some(fence)))
    }

    /// Writes a saga log entry: with `create`, only if there is none (and then at epoch 1);
    /// otherwise only if `entry.owner` holds it at `entry.epoch`. False when refused (the
    /// lease was lost, or the saga finished meanwhile: the caller must stop working on it).
    pub async fn saga_write(&self, entry: &SagaEntry, create: bool) -> Result<bool, StoreError> {
        dispatch!(self, s => s.saga_write(entry, create))
    }

    /// Takes over saga `id` for `owner` until `lease_until_ms` when
    /// [`SagaEntry::claimable_by`]; answers the entry then (its epoch one more when the owner
    /// changed).
    pub async fn saga_claim(
        &self,
        id: &str,
        owner: &str,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<Option<SagaEntry>, StoreError> {
        dispatch!(self, s => s.saga_claim(id, owner, lease_until_ms, now_ms))
    }

    /// Removes a finished saga's entry if `owner` holds it at `epoch`.
    pub async fn saga_delete(&self, id: &str, owner: &str, epoch: u64) -> Result<bool, StoreError> {
        dispatch!(self, s => s.saga_delete(id, owner, epoch))
    }

    /// Every saga log entry (running, pending, compensating and manual).
    pub async fn saga_list(&self) -> Result<Vec<SagaEntry>, StoreError> {
        dispatch!(self, s => s.saga_list())
    }

    /// Cancels an open order of `user` (by its placement id); the cancellation is recorded on
    /// the order.
    pub async fn cancel_order(
        &self,
        market: &MarketKey,
        order_id: &str,
        user: &UserId,
    ) -> Result<Result<Order, CancelError>, StoreError> {
        Ok(self
            .cancel_order_releasing(market, order_id, user, None, false)
            .await?
            .map(|(order, _)| order))
    }

    /// [`Store::cancel_order`] for a cancellation saga, fenced when `fence` is given, with
    /// what the cancellation leaves to release (the order's [`Order::still_reserved`] when it
    /// left the book). `again` (the recovery of an interrupted cancellation): an order its
    /// owner's cancellation already took out of the book answers the cancelled order and the
    /// release recorded then, not recomputed (an undo may have changed the order since); one
    /// cancelled otherwise is not open.
    pub async fn cancel_order_releasing(
        &self,
        market: &MarketKey,
        order_id: &str,
        user: &UserId,
        fence: Option<&Fence>,
        again: bool,
    ) -> Result<Result<(Order, u64), CancelError>, StoreError> {
        dispatch!(self, s => s.cancel_order(market, order_id, user, fence, again))
    }

    /// One order of a market.
    pub async fn order(
        &self,
        market: &MarketKey,
        order_id: &str,
    ) -> Result<Option<Order>, StoreError> {
        dispatch!(self, s => s.order(market, order_id))
    }

    /// Aggregated depth of a market, best first, at most `max_levels` per side.
    pub async fn depth(
        &self,
        market: &MarketKey,
        max_levels: usize,
    ) -> Result<(Vec<Level>, Vec<Level>), StoreError> {
        dispatch!(self, s => s.depth(market, max_levels))
    }

    /// One page of the open orders of a market, optionally of one user, in arrival order.
    /// Either backend reads only the page (and one entry more, to know whether another page
    /// follows) from an index of the resting orders: the cost is the answer's, however many
    /// orders the market holds or has held.
    pub async fn open_orders_page(
        &self,
        market: &MarketKey,
        user: Option<&UserId>,
        page: PageRequest,
    ) -> Result<OrdersPage, StoreError> {
        dispatch!(self, s => s.open_orders_page(market, user, page))
    }

    /// Every open order of a market, optionally of one user, in arrival order: page after page
    /// of [`MAX_PAGE`] (for tools and tests; clients are served pages).
    pub async fn open_orders(
        &self,
        market: &MarketKey,
        user: Option<&UserId>,
    ) -> Result<Vec<Order>, StoreError> {
        let mut all = Vec::new();
        let mut page = PageRequest::first(MAX_PAGE);
        loop {
            let got = self.open_orders_page(market, user, page).await?;
            all.extend(got.orders);
            match got.next {
                Some(after) => page.after = Some(after),
                None => return Ok(all),
            }
        }
    }

    /// Stores a new API key.
    pub async fn put_api_key(&self, record: ApiKeyRecord) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_api_key(record))
    }

    /// Looks an API key up by the hash of its secret.
    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        dispatch!(self, s => s.api_key_by_hash(hash))
    }

    /// The user of the API key with this hash: the lookup of every authenticated request,
    /// without copying the whole record.
    pub async fn user_by_api_key_hash(&self, hash: &str) -> Result<Option<UserId>, StoreError> {
        match self {
            Store::Memory(s) => s.user_by_api_key_hash(hash),
            Store::Redis(s) => Ok(s.api_key_by_hash(hash).await?.map(|r| r.user_id)),
        }
    }

    /// [`Store::user_by_api_key_hash`] when the store answers without waiting (in memory);
    /// `None` when it would wait (Redis).
    pub fn user_by_api_key_hash_now(
        &self,
        hash: &str,
    ) -> Option<Result<Option<UserId>, StoreError>> {
        match self {
            Store::Memory(s) => Some(s.user_by_api_key_hash(hash)),
            Store::Redis(_) => None,
        }
    }

    /// Revokes an API key; false when there was none with that id.
    pub async fn delete_api_key(&self, key_id: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delete_api_key(key_id))
    }
}
