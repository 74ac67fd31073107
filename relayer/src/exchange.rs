//! The exchange's use cases, each a sequence of atomic store steps: place, cancel, deposit,
//! balances, API keys. Inputs arrive validated (see [`crate::api`]); this module decides
//! business outcomes and keeps every balance move paired with its counterpart.
//!
//! Placement: claim the order id → reserve the balance → match in the book → move balances for
//! each fill and release what cancelled or completed orders no longer need → record the answer
//! on the claim. A step refused for a business reason (insufficient balance) undoes the steps
//! before it.
//!
//! Once the book has changed (a match or a cancel), the balance steps that follow must happen:
//! the counterparty's order already shows the trade. They run in a task of their own, each at
//! most once (an operation id per step), so neither a store outage nor a cancelled request
//! leaves a trade half-settled while this process lives: on a store error the caller gets the
//! error at once and the task keeps retrying until the store answers. A process that dies with
//! such a task pending leaves it to the durable saga (a later issue).

use std::time::Duration;

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

/// First and largest pause between retries of a balance step that must happen.
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
        let mut steps: Vec<Step> = outcome
            .self_trade_cancelled
            .iter()
            .filter_map(release_step)
            .collect();
        steps.extend(outcome.fills.iter().flat_map(fill_steps));
        let record = PlacementRecord {
            order: outcome.order,
            fills: outcome.fills,
        };
        self.roll_forward(steps, Some((new.order_id, record.clone())))
            .await?;
        Ok(Placement {
            record,
            replayed: false,
        })
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
        let mut delay = STEP_RETRY_MIN;
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
            let wait = delay;
            delay = (delay * 2).min(STEP_RETRY_MAX);
            tokio::time::sleep(wait)
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
            .api_key_by_hash(&hash_api_key(key))
            .await?
            .map(|r| r.user_id))
    }

    /// Revokes an API key; false when no key has that id.
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<bool, ExchangeError> {
        Ok(self.store.delete_api_key(key_id).await?)
    }
}

/// The buyer's and the seller's steps of one fill: collateral and shares change hands, and the
/// buyer gets back what a completed buy order no longer needs.
fn fill_steps(fill: &Fill) -> [Step; 2] {
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
        Step {
            user: fill.buyer.clone(),
            op_id: format!("fill:{}:buyer", fill.trade_id),
            moves: buyer,
        },
        Step {
            user: fill.seller.clone(),
            op_id: format!("fill:{}:seller", fill.trade_id),
            moves: seller,
        },
    ]
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
    hex::encode(Sha256::digest(key.as_bytes()))
}
