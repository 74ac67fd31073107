//! Settlement of trades: an HTTP endpoint guarded by the `settlement` circuit breaker and a
//! retry policy, or, without `settlement.url`, an embedded in-process ledger.
//!
//! Each trade is one POST with its idempotency key in the `Idempotency-Key` header and in the
//! body (`idempotencyKey`), so the endpoint can recognise a repeat. The answer is classified
//! by what it says about the trade:
//! - settled: a 2xx;
//! - not settled: an HTTP error status, a connection refused before anything was sent, or the
//!   breaker open (no call made). Retryable statuses (408, 429, 5xx) and refused connections
//!   are retried; other 4xx are [`SettleError::Rejected`];
//! - in doubt: a timeout or a connection lost after the request was sent. Retried with the same
//!   key; if no attempt confirms it, the answer is [`SettleError::InDoubt`] even when a later
//!   attempt said "not settled" (an earlier one may have been accepted), and
//!   [`SettleError::RejectedInDoubt`] when the last attempt was a 4xx refusal.
//!
//! Depends on [`crate::resilience`] and [`crate::domain`]; knows nothing of sagas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use crate::config::RelayerConfig;
use crate::domain::Fill;
use crate::resilience::breaker::{BreakerError, BreakerRegistry, CircuitBreaker};
use crate::resilience::retry::{
    Retrier, RetryBudget, RetryMetrics, RetryPolicy, Retryable, is_retryable_status,
    parse_retry_after,
};

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

/// One HTTP attempt's failure.
#[derive(Debug)]
enum Attempt {
    /// Nothing was sent (connection refused).
    Refused(String),
    /// Sent, answer lost (timeout, broken connection).
    Lost(String),
    /// The endpoint answered an error status.
    Status(u16, Option<Duration>),
}

/// An attempt as the retry loop sees it.
#[derive(Debug)]
struct AttemptError(BreakerError<Attempt>);

impl Retryable for AttemptError {
    fn is_retryable(&self) -> bool {
        match &self.0 {
            BreakerError::Open(_) => false,
            BreakerError::Timeout(_) => true,
            BreakerError::Inner(Attempt::Refused(_) | Attempt::Lost(_)) => true,
            BreakerError::Inner(Attempt::Status(s, _)) => is_retryable_status(*s),
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match &self.0 {
            BreakerError::Inner(Attempt::Status(_, ra)) => *ra,
            _ => None,
        }
    }
}

/// Where trades are settled.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// In-process, idempotent: keys already settled are acknowledged again.
    Embedded(Arc<Mutex<HashMap<String, SettlementTrade>>>),
    /// An HTTP endpoint.
    Http(Arc<HttpSettlement>),
}

/// The HTTP settlement client.
#[derive(Debug)]
pub struct HttpSettlement {
    client: reqwest::Client,
    url: String,
    breaker: Arc<CircuitBreaker>,
    retrier: Retrier,
}

impl Settlement {
    /// The settlement `config` selects; the breaker comes from `breakers`.
    pub fn from_config(
        config: &RelayerConfig,
        breakers: &BreakerRegistry,
        retry_metrics: Option<RetryMetrics>,
    ) -> Result<Self, reqwest::Error> {
        let Some(url) = &config.settlement.url else {
            return Ok(Settlement::Embedded(Arc::default()));
        };
        let s = &config.settlement;
        let mut policy = RetryPolicy::named(&s.retry.strategy).unwrap_or(RetryPolicy::BLOCKCHAIN);
        if let Some(n) = s.retry.max_retries {
            policy.max_retries = n;
        }
        if let Some(ms) = s.retry.initial_delay_ms {
            policy.initial_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = s.retry.max_delay_ms {
            policy.max_delay = Duration::from_millis(ms);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(s.timeout_ms))
            .connect_timeout(Duration::from_millis(s.timeout_ms.min(2_000)))
            .build()?;
        Ok(Settlement::Http(Arc::new(HttpSettlement {
            client,
            url: url.clone(),
            breaker: breakers.get_or_create("settlement", &config.circuit_breakers.settlement),
            retrier: Retrier::new(
                policy,
                Arc::new(RetryBudget::new(s.retry.budget_ratio, 1.0)),
                retry_metrics,
            ),
        })))
    }

    /// Settles one trade (idempotent on its key).
    pub async fn settle(&self, fill: &Fill) -> Result<(), SettleError> {
        let trade = SettlementTrade::of(fill);
        match self {
            Settlement::Embedded(ledger) => {
                ledger
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(trade.idempotency_key.clone())
                    .or_insert(trade);
                Ok(())
            }
            Settlement::Http(http) => http.settle(&trade).await,
        }
    }

    /// Trades the embedded ledger holds (0 for HTTP).
    pub fn embedded_len(&self) -> usize {
        match self {
            Settlement::Embedded(l) => l.lock().unwrap_or_else(PoisonError::into_inner).len(),
            Settlement::Http(_) => 0,
        }
    }
}

impl HttpSettlement {
    async fn attempt(&self, trade: &SettlementTrade) -> Result<(), Attempt> {
        let sent = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", &trade.idempotency_key)
            .json(trade)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => {
                let ra = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                Err(Attempt::Status(resp.status().as_u16(), ra))
            }
            // NB: a refused connection never carried the request; anything else (timeout,
            // reset) may have.
            Err(e) if e.is_connect() && !e.is_timeout() => Err(Attempt::Refused(e.to_string())),
            Err(e) => Err(Attempt::Lost(e.to_string())),
        }
    }

    async fn settle(&self, trade: &SettlementTrade) -> Result<(), SettleError> {
        let doubt = AtomicBool::new(false);
        let result = self
            .retrier
            .run(
                "settlement",
                |_| async {
                    let r = self
                        .breaker
                        .call(self.attempt(trade), |e: &Attempt| match e {
                            Attempt::Status(s, _) => *s >= 500 || *s == 408 || *s == 429,
                            Attempt::Refused(_) | Attempt::Lost(_) => true,
                        })
                        .await
                        .map_err(AttemptError);
                    if matches!(
                        &r,
                        Err(AttemptError(
                            BreakerError::Timeout(_) | BreakerError::Inner(Attempt::Lost(_))
                        ))
                    ) {
                        doubt.store(true, Ordering::Relaxed);
                    }
                    r
                },
                |error, retry, delay| {
                    tracing::warn!(error = ?error.0, retry, ?delay, key = %trade.idempotency_key, "retrying settlement");
                },
            )
            .await;
        let Err((AttemptError(last), _)) = result else {
            return Ok(());
        };
        let detail = match &last {
            BreakerError::Open(_) => "circuit breaker settlement is open".to_owned(),
            BreakerError::Timeout(_) => "no answer in time".to_owned(),
            BreakerError::Inner(Attempt::Refused(e) | Attempt::Lost(e)) => e.clone(),
            BreakerError::Inner(Attempt::Status(s, _)) => format!("HTTP {s}"),
        };
        let rejected =
            matches!(last, BreakerError::Inner(Attempt::Status(s, _)) if !is_retryable_status(s));
        match (doubt.load(Ordering::Relaxed), rejected) {
            (true, true) => Err(SettleError::RejectedInDoubt(detail)),
            (true, false) => Err(SettleError::InDoubt(detail)),
            (false, true) => Err(SettleError::Rejected(detail)),
            (false, false) => Err(SettleError::NotSettled(detail)),
        }
    }
}
