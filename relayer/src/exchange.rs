//! The exchange's use cases, each a sequence of atomic store steps: place, cancel, deposit,
//! balances, API keys. Inputs arrive validated (see [`crate::api`]); this module decides
//! business outcomes and keeps every balance move paired with its counterpart.
//!
//! Placement: claim the order id → reserve the balance → match in the book → move balances for
//! each fill and release what cancelled or completed orders no longer need → record the answer
//! on the claim. A step refused for a business reason (insufficient balance) undoes the steps
//! before it.

use sha2::{Digest, Sha256};

use crate::book::{CancelError, Level};
use crate::domain::{Account, Asset, BalanceError, Fill, MarketKey, Move, Order, Side, UserId};
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
}

impl Exchange {
    /// An exchange over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
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
        let reserve = Move::reserve(order.reserved_asset(), order.reserved);
        match self.store.apply_moves(&new.user_id, &[reserve]).await {
            Ok(Ok(_)) => {}
            Ok(Err(refused)) => {
                self.store.drop_claim(&new.order_id).await?;
                return Err(refused.into());
            }
            Err(e) => {
                // NB: the reservation may or may not have happened; keep the claim so a retry
                // of the same id cannot trade twice. The durable saga resolves such orders.
                return Err(e.into());
            }
        }

        let outcome = self.store.match_order(order).await?;
        for cancelled in &outcome.self_trade_cancelled {
            self.release(cancelled).await?;
        }
        for fill in &outcome.fills {
            self.settle_balances(fill).await?;
        }
        let record = PlacementRecord {
            order: outcome.order,
            fills: outcome.fills,
        };
        self.store
            .finish_claim(&new.order_id, record.clone())
            .await?;
        Ok(Placement {
            record,
            replayed: false,
        })
    }

    /// Moves collateral and shares between buyer and seller for one fill, and releases the
    /// buyer's leftover reservation when the buy order completed with it.
    async fn settle_balances(&self, fill: &Fill) -> Result<(), ExchangeError> {
        let shares = Asset::Shares(fill.market_key.clone());
        let mut buyer = vec![
            Move::debit_reserved(Asset::Collateral, fill.collateral),
            Move::credit(shares.clone(), fill.amount),
        ];
        if fill.buyer_refund > 0 {
            buyer.push(Move::release(Asset::Collateral, fill.buyer_refund));
        }
        let seller = [
            Move::debit_reserved(shares, fill.amount),
            Move::credit(Asset::Collateral, fill.collateral),
        ];
        self.must_apply(&fill.buyer, &buyer).await?;
        self.must_apply(&fill.seller, &seller).await
    }

    /// Releases what an order that left the book still had reserved.
    async fn release(&self, order: &Order) -> Result<(), ExchangeError> {
        let amount = order.still_reserved();
        if amount == 0 {
            return Ok(());
        }
        self.must_apply(
            &order.user_id,
            &[Move::release(order.reserved_asset(), amount)],
        )
        .await
    }

    /// Applies moves that the book's own accounting guarantees are covered.
    async fn must_apply(&self, user: &UserId, moves: &[Move]) -> Result<(), ExchangeError> {
        match self.store.apply_moves(user, moves).await? {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(%user, error = %e, ?moves, "balance move refused although the book accounted for it");
                Err(ExchangeError::Internal(format!(
                    "balance move for {user} refused: {e}"
                )))
            }
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
        self.release(&cancelled).await?;
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
            .api_key_by_hash(&hash_api_key(key))
            .await?
            .map(|r| r.user_id))
    }

    /// Revokes an API key; false when no key has that id.
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<bool, ExchangeError> {
        Ok(self.store.delete_api_key(key_id).await?)
    }
}

/// SHA-256 of an API key, hex. Keys carry 256 random bits, so an unsalted fast hash is enough.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
