//! The exchange's use cases, each a sequence of atomic store steps: place, cancel, deposit,
//! balances, API keys. Inputs arrive validated (by the HTTP handlers, or by the caller of this
//! library); this module decides business outcomes and keeps every balance move paired with
//! its counterpart.
//!
//! Placement: every placement gets a placement id of its own (unique for ever: the book's
//! key, the saga's id, the base of its trade ids, settlement keys and operation ids) and runs
//! the order saga ([`crate::order_saga`]: validate and claim the user's order id → reserve →
//! match → settle → update balances, with its compensations and durable log), detached from
//! the caller, who waits for the outcome at most the placement wait (`limits.placementWaitMs`)
//! and otherwise gets [`Placed::Pending`]. An order id names one placement attempt for ever:
//! a repeat with the same request replays its outcome, success or failure; one with another
//! request is a conflict.
//!
//! Cancellation: durable, through the saga log ([`OrderSagas::cancel`]): once the book has
//! changed, the release of the order's reservation happens, if not now then by recovery.
//!
//! May use: `config`, `domain`, `book`, `store`, `resilience`, `settlement`, `order_saga`;
//! never the HTTP rooms.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::book::{Level, OrdersPage, PageRequest};
use crate::domain::{Account, Asset, BalanceError, MarketKey, Move, Order, Side, UserId};
use crate::order_saga::{CancelEnded, Ended, OrderSagas};
use crate::store::{ApiKeyRecord, Claim, FailedPlacement, PlacementRecord, Store, StoreError};

/// A business or infrastructure failure of a use case.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The store failed (unreachable, timed out).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The account lacks the balance the request needs.
    #[error("{0}")]
    Balance(#[from] BalanceError),
    /// The order id is in use by a different placement.
    #[error("orderId {0} is already used by a different order")]
    OrderIdConflict(String),
    /// The order's placement is still running (it is not in the book yet).
    #[error("order {0} is still being placed; cancel it once it is placed")]
    PlacementInProgress(String),
    /// The placement failed earlier (this repeats its answer).
    #[error("{}", .0.message)]
    Replayed(FailedPlacement),
    /// The placement was undone (not for a business reason); the order id is spent.
    #[error("{1}")]
    NotPlaced(String, String),
    /// No such order (or not the caller's).
    #[error("order not found")]
    OrderNotFound,
    /// The order is filled or cancelled already.
    #[error("order is not open: {0}")]
    OrderNotOpen(String),
    /// Settlement said "not settled"; the order was undone and nothing stays reserved.
    #[error("settlement unavailable: {0}")]
    SettlementUnavailable(String),
}

/// How long a placement is waited for by default (`limits.placementWaitMs`).
pub const DEFAULT_PLACEMENT_WAIT: Duration = Duration::from_secs(5);

/// How often a repeat of a placement still running looks at its claim again: first after
/// this, then twice as long each time up to [`CLAIM_POLL_MAX`].
const CLAIM_POLL: Duration = Duration::from_millis(25);
const CLAIM_POLL_MAX: Duration = Duration::from_millis(400);

/// The answer to a placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Finished: placed (or replayed).
    Done(Placement),
    /// Still running after the wait (or parked for a person): the order id and its state,
    /// `pending` or `manual`. `GET /v2/orders/{id}` shows it later.
    Pending {
        /// The client's order id.
        order_id: String,
        /// `pending` or `manual`.
        state: &'static str,
    },
}

/// What `GET /v2/orders/{id}` finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The order in the book.
    Order(Order),
    /// Its placement is still running (not in the book yet).
    Pending,
}

/// The answer to a cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// Out of the book and its reservation released.
    Done(Order),
    /// Out of the book or about to be; the release is logged and recovery finishes it.
    Pending,
}

/// A validated order to place.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// Client-chosen id, or a generated one.
    pub order_id: String,
    /// Market.
    pub market_key: MarketKey,
    /// Owner (already checked against the API key).
    pub user_id: UserId,
    /// Buy or sell.
    pub side: Side,
    /// Limit price in millionths.
    pub price: u64,
    /// Shares.
    pub amount: u64,
}

impl NewOrder {
    /// Hash of what makes two placements "the same order".
    fn fingerprint(&self) -> String {
        let text = format!(
            "{}|{}|{:?}|{}|{}",
            self.user_id, self.market_key, self.side, self.price, self.amount
        );
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// The answer to a placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The order right after placement, and its fills.
    pub record: PlacementRecord,
    /// True when this repeats an earlier placement of the same order id.
    pub replayed: bool,
}

/// The use cases over a store.
#[derive(Debug, Clone)]
pub struct Exchange {
    store: Store,
    sagas: OrderSagas,
    placement_wait: Duration,
}

impl Exchange {
    /// An exchange over `store` with the default saga settings and the embedded settlement
    /// ledger (no metrics).
    pub fn new(store: Store) -> Self {
        let sagas = OrderSagas::new(
            &crate::config::RelayerConfig::default(),
            store.clone(),
            crate::settlement::Settlement::Embedded(std::sync::Arc::default()),
            None,
        );
        Self::with_sagas(store, sagas)
    }

    /// An exchange over `store` running order sagas with `sagas`.
    pub fn with_sagas(store: Store, sagas: OrderSagas) -> Self {
        Self {
            store,
            sagas,
            placement_wait: DEFAULT_PLACEMENT_WAIT,
        }
    }

    /// The order sagas.
    pub fn sagas(&self) -> &OrderSagas {
        &self.sagas
    }

    /// The store behind it.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The same exchange waiting at most `wait` for a placement's outcome.
    pub fn with_placement_wait(mut self, wait: Duration) -> Self {
        self.placement_wait = wait;
        self
    }

    /// Places an order (idempotent on the user's order id; see the module docs).
    pub async fn place(&self, new: NewOrder, now_ms: u64) -> Result<Placed, ExchangeError> {
        let deadline = tokio::time::Instant::now() + self.placement_wait;
        let placement_id = uuid::Uuid::new_v4().simple().to_string();
        let order = Order::new(
            placement_id,
            new.market_key.clone(),
            new.user_id.clone(),
            new.side,
            new.price,
            new.amount,
            now_ms,
        )
        .with_client_id(new.order_id.clone());
        let mut rx = self.sagas.start(order, new.fingerprint());
        let ended = tokio::time::timeout_at(
            deadline,
            rx.wait_for(|e| e.as_ref().is_some_and(|e| !e.is_pending())),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|e| e.clone());
        let pending = || Placed::Pending {
            order_id: new.order_id.clone(),
            state: "pending",
        };
        match ended {
            None => Ok(pending()),
            Some(Ended::Completed(record)) => Ok(Placed::Done(Placement {
                record,
                replayed: false,
            })),
            Some(Ended::Duplicate(existing)) => self.repeat(&new, existing, deadline).await,
            Some(Ended::Refused(refused)) => Err(ExchangeError::Balance(refused)),
            Some(Ended::NotSettled(why)) => Err(ExchangeError::SettlementUnavailable(why)),
            Some(Ended::Compensated(why)) => Err(ExchangeError::NotPlaced(
                new.order_id.clone(),
                format!("order {} was not placed: {why}", new.order_id),
            )),
            Some(Ended::Pending { .. }) => Ok(pending()),
            Some(Ended::Manual(why)) => {
                tracing::error!(order = %new.order_id, %why, "order saga parked for manual handling");
                Ok(Placed::Pending {
                    order_id: new.order_id.clone(),
                    state: "manual",
                })
            }
            Some(Ended::Unavailable(why)) => {
                Err(ExchangeError::Store(StoreError::Unavailable(why)))
            }
        }
    }

    /// The answer to a repeat of an order id that `existing` holds: a conflict for another
    /// request, else the first placement's outcome, waited for until `deadline`.
    async fn repeat(
        &self,
        new: &NewOrder,
        mut existing: Claim,
        deadline: tokio::time::Instant,
    ) -> Result<Placed, ExchangeError> {
        if existing.fingerprint != new.fingerprint() {
            return Err(ExchangeError::OrderIdConflict(new.order_id.clone()));
        }
        let mut poll = crate::resilience::backoff::Backoff::doubling(CLAIM_POLL, CLAIM_POLL_MAX);
        loop {
            if let Some(record) = existing.result {
                return Ok(Placed::Done(Placement {
                    record,
                    replayed: true,
                }));
            }
            if let Some(failed) = existing.failed {
                return Err(ExchangeError::Replayed(failed));
            }
            let pause = poll.next_delay();
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Placed::Pending {
                    order_id: new.order_id.clone(),
                    state: "pending",
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            existing = match self.store.claim(&new.user_id, &new.order_id).await? {
                Some(claim) => claim,
                None => return Err(ExchangeError::OrderNotFound),
            };
        }
    }

    /// The order behind `user`'s order id.
    pub async fn order_of(&self, order_id: &str, user: &UserId) -> Result<Found, ExchangeError> {
        let claim = self
            .store
            .claim(user, order_id)
            .await?
            .ok_or(ExchangeError::OrderNotFound)?;
        match self
            .store
            .order(&claim.market_key, claim.placement(order_id))
            .await?
        {
            Some(order) => Ok(Found::Order(order)),
            None if claim.result.is_none() && claim.failed.is_none() => Ok(Found::Pending),
            None => Err(ExchangeError::OrderNotFound),
        }
    }

    /// Cancels an open order of `user` and releases its reservation (durably: see the module
    /// docs).
    pub async fn cancel(&self, order_id: &str, user: &UserId) -> Result<Cancelled, ExchangeError> {
        let claim = self
            .store
            .claim(user, order_id)
            .await?
            .ok_or(ExchangeError::OrderNotFound)?;
        match self
            .sagas
            .cancel(&claim.market_key, claim.placement(order_id), user)
            .await
        {
            CancelEnded::Cancelled(order) => Ok(Cancelled::Done(order)),
            CancelEnded::Pending(why) => {
                tracing::warn!(order = order_id, %why, "cancellation left to recovery");
                Ok(Cancelled::Pending)
            }
            // NB: claimed but not in the book: its placement is still running.
            CancelEnded::NotFound if claim.result.is_none() && claim.failed.is_none() => {
                Err(ExchangeError::PlacementInProgress(order_id.to_owned()))
            }
            CancelEnded::NotFound => Err(ExchangeError::OrderNotFound),
            CancelEnded::NotOpen(status) => Err(ExchangeError::OrderNotOpen(
                format!("{status:?}").to_lowercase(),
            )),
            CancelEnded::Unavailable(why) => {
                Err(ExchangeError::Store(StoreError::Unavailable(why)))
            }
        }
    }

    /// Credits a deposit.
    pub async fn deposit(
        &self,
        user: &UserId,
        asset: Asset,
        amount: u64,
    ) -> Result<Account, ExchangeError> {
        Ok(self
            .store
            .apply_moves(user, &[Move::credit(asset, amount)])
            .await??)
    }

    /// A user's balances.
    pub async fn account(&self, user: &UserId) -> Result<Account, ExchangeError> {
        Ok(self.store.account(user).await?)
    }

    /// Depth of a market.
    pub async fn depth(
        &self,
        market: &MarketKey,
        max_levels: usize,
    ) -> Result<(Vec<Level>, Vec<Level>), ExchangeError> {
        Ok(self.store.depth(market, max_levels).await?)
    }

    /// One page of the open orders of a market, optionally of one user, in arrival order.
    pub async fn open_orders_page(
        &self,
        market: &MarketKey,
        user: Option<&UserId>,
        page: PageRequest,
    ) -> Result<OrdersPage, ExchangeError> {
        Ok(self.store.open_orders_page(market, user, page).await?)
    }

    /// Every open order of a market, optionally of one user, in arrival order, page after
    /// page (for tools and tests; clients are served pages, [`Exchange::open_orders_page`]).
    pub async fn open_orders(
        &self,
        market: &MarketKey,
        user: Option<&UserId>,
    ) -> Result<Vec<Order>, ExchangeError> {
        Ok(self.store.open_orders(market, user).await?)
    }

    /// Issues an API key for `user`: returns (key id, the key). Only its hash is stored.
    pub async fn issue_api_key(
        &self,
        user: &UserId,
        now_ms: u64,
    ) -> Result<(String, String), ExchangeError> {
        let key_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let secret: [u8; 32] = rand::random();
        let key = format!("fsk_{key_id}_{}", hex::encode(secret));
        self.store
            .put_api_key(ApiKeyRecord {
                key_id: key_id.clone(),
                hash: hash_api_key(&key),
                user_id: user.clone(),
                created_at_ms: now_ms,
            })
            .await?;
        Ok((key_id, key))
    }

    /// The user an API key acts for.
    pub async fn authenticate(&self, key: &str) -> Result<Option<UserId>, ExchangeError> {
        Ok(self
            .store
            .user_by_api_key_hash(ApiKeyHash::of(key).as_str())
            .await?)
    }

    /// [`Exchange::authenticate`] when the store answers without waiting (in memory); `None`
    /// when it would wait.
    pub fn authenticate_now(&self, key: &str) -> Option<Result<Option<UserId>, ExchangeError>> {
        let found = self
            .store
            .user_by_api_key_hash_now(ApiKeyHash::of(key).as_str())?;
        Some(found.map_err(ExchangeError::from))
    }

    /// Revokes an API key; false when no key has that id.
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<bool, ExchangeError> {
        Ok(self.store.delete_api_key(key_id).await?)
    }
}

/// SHA-256 of an API key, hex. Keys carry 256 random bits, so an unsalted fast hash is enough.
pub fn hash_api_key(key: &str) -> String {
    ApiKeyHash::of(key).as_str().to_owned()
}

/// [`hash_api_key`] on the stack, for the lookup every authenticated request makes.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeyHash([u8; 64]);

impl ApiKeyHash {
    /// The hash of `key`.
    pub fn of(key: &str) -> Self {
        let mut hex = [0; 64];
        // NB: 32 bytes always fill exactly 64 hex digits; the error cannot happen.
        let _ = hex::encode_to_slice(Sha256::digest(key.as_bytes()), &mut hex);
        Self(hex)
    }

    /// The 64 lower-case hex digits.
    pub fn as_str(&self) -> &str {
        // NB: hex digits are ASCII; an impossible failure yields "", which matches no key.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}
