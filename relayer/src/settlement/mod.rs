//! Settlement of trades: an HTTP endpoint guarded by the `settlement` circuit breaker and a
//! retry policy, or, without `settlement.url`, an embedded in-process ledger.
//!
//! Each trade is one POST with its idempotency key in the `Idempotency-Key` header and in the
//! body (`idempotencyKey`), so the endpoint can recognise a repeat. The answer is classified
//! by what it says about the trade:
//! - settled: a 2xx whose body is the settlement answer, a JSON object whose `settled` is the
//!   idempotency key sent (`{"settled": "trade:<tradeId>"}`; other fields are ignored);
//! - not settled: an HTTP error status, a connection refused before anything was sent, or the
//!   breaker open (no call made). Retryable statuses (408, 429, 5xx) and refused connections
//!   are retried; other 4xx are [`SettleError::Rejected`];
//! - in doubt: a timeout or a connection lost after the request was sent, a redirect (never
//!   followed: it is no answer about the trade, and a 303 may even follow a POST that was
//!   applied), or a 2xx without the settlement answer (something answered that may have acted
//!   on the request). Retried with the same key; if no attempt confirms it, the answer is
//!   [`SettleError::InDoubt`] even when a later attempt said "not settled" (an earlier one may
//!   have been accepted), and [`SettleError::RejectedInDoubt`] when the last attempt was a 4xx
//!   refusal. Doubt is carried forward, never undone: money stays safe when the endpoint did
//!   settle.
//!
//! # Layout
//! - this module: the trade as sent ([`SettlementTrade`]), its idempotency key, the outcome
//!   ([`SettleError`]) and [`Settlement`], which picks the backend;
//! - `client`: the HTTP client with its breaker and retries ([`HttpSettlement`]);
//! - `ledger`: the embedded ledger ([`EmbeddedLedger`]), which forgets a settled key
//!   `redis.orderRetentionSeconds` after it was settled (trade ids, and so keys, are never
//!   reused).
//!
//! May use: `tables`, `clock`, `config`, `domain`, `resilience`. Knows nothing of sagas.

mod client;
mod ledger;

pub use self::client::HttpSettlement;
pub use self::ledger::EmbeddedLedger;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::SystemClock;
use crate::config::RelayerConfig;
use crate::domain::Fill;
use crate::resilience::breaker::BreakerRegistry;
use crate::resilience::retry::RetryMetrics;

/// Why a trade is not (known to be) settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// Definitely not settled (error status, refused connection, breaker open).
    #[error("settlement failed: {0}")]
    NotSettled(String),
    /// The endpoint refused the trade for good (a 4xx other than 408 and 429).
    #[error("settlement rejected the trade: {0}")]
    Rejected(String),
    /// May have been settled: no attempt confirmed it.
    #[error("settlement not confirmed: {0}")]
    InDoubt(String),
    /// Refused for good (a 4xx) after an earlier attempt may have been accepted: neither
    /// forward nor backward is safe.
    #[error("settlement rejected a trade that may have been settled: {0}")]
    RejectedInDoubt(String),
}

/// The trade as the settlement endpoint receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementTrade {
    /// The trade's idempotency key.
    pub idempotency_key: String,
    /// Trade id.
    pub trade_id: String,
    /// Market.
    pub market_key: String,
    /// Buyer and seller.
    pub buyer: String,
    /// Seller.
    pub seller: String,
    /// Price in millionths, decimal string.
    pub price: String,
    /// Shares, decimal string.
    pub amount: String,
    /// Collateral paid by the buyer, decimal string.
    pub collateral: String,
}

impl SettlementTrade {
    /// The trade of `fill`.
    pub fn of(fill: &Fill) -> Self {
        Self {
            idempotency_key: idempotency_key(fill),
            trade_id: fill.trade_id.clone(),
            market_key: fill.market_key.to_string(),
            buyer: fill.buyer.to_string(),
            seller: fill.seller.to_string(),
            price: fill.price.to_string(),
            amount: fill.amount.to_string(),
            collateral: fill.collateral.to_string(),
        }
    }
}

/// The idempotency key of a fill's settlement.
pub fn idempotency_key(fill: &Fill) -> String {
    format!("trade:{}", fill.trade_id)
}

/// Where trades are settled.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// In-process, idempotent: keys already settled are acknowledged again.
    Embedded(Arc<EmbeddedLedger>),
    /// An HTTP endpoint.
    Http(Arc<HttpSettlement>),
}

impl Settlement {
    /// The settlement `config` selects; the breaker comes from `breakers`.
    pub fn from_config(
        config: &RelayerConfig,
        breakers: &BreakerRegistry,
        retry_metrics: Option<RetryMetrics>,
    ) -> Result<Self, reqwest::Error> {
        let Some(url) = &config.settlement.url else {
            return Ok(Settlement::Embedded(Arc::new(EmbeddedLedger::new(
                Duration::from_secs(config.redis.order_retention_seconds),
                Arc::new(SystemClock),
            ))));
        };
        HttpSettlement::from_config(url, config, breakers, retry_metrics)
            .map(|http| Settlement::Http(Arc::new(http)))
    }

    /// Settles one trade (idempotent on its key).
    pub async fn settle(&self, fill: &Fill) -> Result<(), SettleError> {
        self.settle_while(fill, &|| true).await
    }

    /// [`Settlement::settle`], sending each attempt only while `may_send` says yes (a saga
    /// stops sending once its lease lapsed): a refusal is [`SettleError::InDoubt`].
    pub async fn settle_while(
        &self,
        fill: &Fill,
        may_send: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), SettleError> {
        let trade = SettlementTrade::of(fill);
        match self {
            Settlement::Embedded(ledger) => {
                if !may_send() {
                    return Err(SettleError::InDoubt(
                        "not sent: may no longer send".to_owned(),
                    ));
                }
                ledger.settle(trade);
                Ok(())
            }
            Settlement::Http(http) => http.settle(&trade, may_send).await,
        }
    }

    /// Trades the embedded ledger holds (0 for HTTP).
    pub fn embedded_len(&self) -> usize {
        match self {
            Settlement::Embedded(l) => l.len(),
            Settlement::Http(_) => 0,
        }
    }
}
