//! The exchange's use cases, each a sequence of atomic store steps: place, cancel, deposit,
//! balances, API keys. Inputs arrive validated (by the HTTP handlers, or by the caller of this
//! library); this module decides business outcomes and keeps every balance move paired with
//! its counterpart.
//!
//! Placement: claim the order id (idempotency), then run the order saga
//! ([`crate::order_saga`]: validate → reserve → match → settle → update balances, with its
//! compensations and durable log). A step refused for a business reason (insufficient
//! balance) undoes the steps before it.
//!
//! Cancellation: once the book has changed, the balance step that follows (releasing the
//! order's reservation) must happen. It runs in a task of its own, at most once (an operation
//! id), so neither a store outage nor a cancelled request leaves it undone while this process
//! lives: on a store error the caller gets the error at once and the task keeps retrying (with
//! a doubling [`Backoff`]) until the store answers. Known limit: cancellations are not in the
//! durable saga log, so a process that dies with such a task pending leaves the reservation
//! in place.
//!
//! May use: `config`, `domain`, `book`, `store`, `resilience`, `settlement`, `order_saga`;
//! never the HTTP rooms.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::book::{CancelError, Level};
use crate::domain::{Account, Asset, BalanceError, MarketKey, Move, Order, Side, UserId};
use crate::order_saga::{Ended, OrderSagas};
use crate::resilience::backoff::Backoff;
use crate::store::{ApiKeyRecord, Claim, ClaimOutcome, PlacementRecord, Store, StoreError};

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
    /// The order id's first placement has not finished yet.
    #[error("orderId {0} is still being placed")]
    PlacementInProgress(String),
    /// No such order (or not the caller's).
    #[error("order not found")]
    OrderNotFound,
    /// The order is filled or cancelled already.
    #[error("order is not open: {0}")]
    OrderNotOpen(String),
    /// A step that must not fail did: state needs an operator's attention.
    #[error("internal inconsistency: {0}")]
    Internal(String),
    /// Settlement said "not settled"; the order was undone and nothing stays reserved.
    #[error("settlement unavailable: {0}")]
    SettlementUnavailable(String),
    /// Settlement could not be confirmed; the order will be completed by recovery.
    #[error("settlement of order {0} is not confirmed yet; it will be completed")]
    SettlementPending(String),
    /// The saga could neither finish nor compensate: parked for manual handling.
    #[error("order {0} needs manual handling: {1}")]
    Manual(String, String),
}

/// First and largest pause between retries of a balance step that must happen (doubling in
/// between).
const STEP_RETRY_MIN: Duration = Duration::from_millis(50);
const STEP_RETRY_MAX: Duration = Duration::from_secs(2);

/// One account's part of a book change: moves applied at most once under `op_id`.
#[derive(Debug, Clone)]
struct Step {
    user: UserId,
    op_id: String,
    moves: Vec<Move>,
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
        Self { store, sagas }
    }

    /// An exchange over `store` running order sagas with `sagas`.
    pub fn with_sagas(store: Store, sagas: OrderSagas) -> Self {
        Self { store, sagas }
    }

    /// The order sagas.
    pub fn sagas(&self) -> &OrderSagas {
        &self.sagas
    }

    /// The store behind it.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Places an order (idempotent on its id).
    pub async fn place(&self, new: NewOrder, now_ms: u64) -> Result<Placement, ExchangeError> {
        let claim = Claim {
            fingerprint: new.fingerprint(),
            market_key: new.market_key.clone(),
            user_id: new.user_id.clone(),
            result: None,
        };
        match self
            .store
            .claim_order_id(&new.order_id, claim.clone())
            .await?
        {
            ClaimOutcome::Claimed => {}
            ClaimOutcome::Existing(existing) => {
                if existing.fingerprint != claim.fingerprint {
                    return Err(ExchangeError::OrderIdConflict(new.order_id));
                }
                return match existing.result {
                    Some(record) => Ok(Placement {
                        record,
                        replayed: true,
                    }),
                    None => Err(ExchangeError::PlacementInProgress(new.order_id)),
                };
            }
        }

        let order = Order::new(
            new.order_id.clone(),
            new.market_key.clone(),
            new.user_id.clone(),
            new.side,
            new.price,
            new.amount,
            now_ms,
        );
        match self.sagas.run(order).await {
            Ended::Completed(record) => Ok(Placement {
                record,
                replayed: false,
            }),
            Ended::Refused(refused) => Err(ExchangeError::Balance(refused)),
            Ended::NotSettled(why) => Err(ExchangeError::SettlementUnavailable(why)),
            Ended::Compensated(why) => Err(ExchangeError::Internal(format!(
                "order {} was undone: {why}",
                new.order_id
            ))),
            Ended::Pending {
                settlement: true, ..
            } => Err(ExchangeError::SettlementPending(new.order_id)),
            // NB: as before the saga: the caller gets the store's 503 at once and the
            // placement is carried on in the background.
            Ended::Pending { error, .. } => {
                Err(ExchangeError::Store(StoreError::Unavailable(error)))
            }
            Ended::Manual(why) => Err(ExchangeError::Manual(new.order_id, why)),
        }
    }

    /// Runs the balance steps that follow a book change, then records `finish` on its claim.
    /// The caller gets the first store error at once; the steps go on in their own task until
    /// they are all done (see the module docs).
    async fn roll_forward(
        &self,
        steps: Vec<Step>,
        finish: Option<(String, PlacementRecord)>,
    ) -> Result<(), ExchangeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(self.clone().run_steps(steps, finish, tx));
        rx.await.unwrap_or_else(|_| {
            Err(ExchangeError::Internal(
                "the balance steps stopped without an answer".to_owned(),
            ))
        })
    }

    async fn run_steps(
        self,
        steps: Vec<Step>,
        finish: Option<(String, PlacementRecord)>,
        tx: tokio::sync::oneshot::Sender<Result<(), ExchangeError>>,
    ) {
        let mut tx = Some(tx);
        let mut backoff = Backoff::doubling(STEP_RETRY_MIN, STEP_RETRY_MAX);
        let mut retried = false;
        let mut pause = |error: StoreError,
                         tx: &mut Option<
            tokio::sync::oneshot::Sender<Result<(), ExchangeError>>,
        >| {
            retried = true;
            if let Some(tx) = tx.take() {
                tracing::warn!(%error, "store failed after a book change; retrying the balance steps in the background");
                let _ = tx.send(Err(ExchangeError::Store(error)));
            }
            tokio::time::sleep(backoff.next_delay())
        };
        for step in &steps {
            loop {
                match self
                    .store
                    .apply_moves_once(&step.user, &step.op_id, &step.moves)
                    .await
                {
                    Ok(Ok(_)) => break,
                    Ok(Err(refused)) => {
                        tracing::error!(user = %step.user, op_id = step.op_id, error = %refused, moves = ?step.moves, "balance move refused although the book accounted for it");
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Err(ExchangeError::Internal(format!(
                                "balance move for {} refused: {refused}",
                                step.user
                            ))));
                        }
                        return;
                    }
                    Err(error) => pause(error, &mut tx).await,
                }
            }
        }
        if let Some((order_id, record)) = finish {
            while let Err(error) = self.store.finish_claim(&order_id, record.clone()).await {
                pause(error, &mut tx).await;
            }
        }
        if retried {
            tracing::info!(
                steps = steps.len(),
                "balance steps completed after the store recovered"
            );
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(Ok(()));
        }
    }

    /// The order behind an id, if `user` owns it.
    pub async fn order_of(&self, order_id: &str, user: &UserId) -> Result<Order, ExchangeError> {
        let claim = self
            .store
            .claim(order_id)
            .await?
            .filter(|c| &c.user_id == user)
            .ok_or(ExchangeError::OrderNotFound)?;
        self.store
            .order(&claim.market_key, order_id)
            .await?
            .ok_or(ExchangeError::OrderNotFound)
    }

    /// Cancels an open order of `user` and releases its reservation.
    pub async fn cancel(&self, order_id: &str, user: &UserId) -> Result<Order, ExchangeError> {
        let claim = self
            .store
            .claim(order_id)
            .await?
            .filter(|c| &c.user_id == user)
            .ok_or(ExchangeError::OrderNotFound)?;
        let cancelled = match self
            .store
            .cancel_order(&claim.market_key, order_id, user)
            .await?
        {
            Ok(order) => order,
            Err(CancelError::NotFound) => return Err(ExchangeError::OrderNotFound),
            Err(CancelError::NotOpen(status)) => {
                return Err(ExchangeError::OrderNotOpen(
                    format!("{status:?}").to_lowercase(),
                ));
            }
        };
        self.roll_forward(release_step(&cancelled).into_iter().collect(), None)
            .await?;
        Ok(cancelled)
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

    /// Open orders of a market, optionally of one user.
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

/// Releases what an order that left the book still had reserved (an order leaves once).
fn release_step(order: &Order) -> Option<Step> {
    let amount = order.still_reserved();
    (amount > 0).then(|| Step {
        user: order.user_id.clone(),
        op_id: format!("release:{}", order.order_id),
        moves: vec![Move::release(order.reserved_asset(), amount)],
    })
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
