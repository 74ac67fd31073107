//! The embedded settlement ledger: an in-process, idempotent record of settled trades, used
//! when no `settlement.url` is configured (development, tests).
//!
//! Bounded like the stores: a settled key is forgotten the retention
//! (`redis.orderRetentionSeconds`) after it was settled, by the monotonic reading of the
//! injected [`Clock`]. That is safe because a key names one trade id, and trade ids are never
//! reused. Keys sit in a queue in
//! the order settled (which is due order, the retention being constant); each call pops what is
//! due, so forgetting costs amortised O(1) per call and never scans.
//!
//! May use: `tables`, `clock`, `config` (the default retention), and the parent's types.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::SettlementTrade;
use crate::clock::{Clock, SystemClock};
use crate::config::RedisConfig;
use crate::tables::{DueQueue, ShardedMap};

/// Trades settled in process, by idempotency key: a key settled again within the retention is
/// acknowledged and changes nothing.
#[derive(Debug)]
pub struct EmbeddedLedger {
    /// How long a settled key is remembered.
    retention: Duration,
    clock: Arc<dyn Clock>,
    trades: Mutex<Trades>,
}

/// The settled trades, and their keys in the order they are forgotten.
#[derive(Debug, Default)]
struct Trades {
    by_key: ShardedMap<String, SettlementTrade>,
    /// One entry per key of `by_key`: a key is recorded only when absent, and removed only
    /// when its entry pops.
    due: DueQueue<String>,
}

impl Default for EmbeddedLedger {
    /// Remembers keys for the configuration's default retention, by the system clock.
    fn default() -> Self {
        Self::new(
            Duration::from_secs(RedisConfig::default().order_retention_seconds),
            Arc::new(SystemClock),
        )
    }
}

impl EmbeddedLedger {
    /// An empty ledger that forgets a key `retention` after it was settled, by `clock`.
    pub fn new(retention: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            retention,
            clock,
            trades: Mutex::default(),
        }
    }

    /// The trades, with what is due forgotten; and the time read.
    fn trades(&self) -> (MutexGuard<'_, Trades>, Instant) {
        let mut trades = self.trades.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now();
        while let Some((_, key)) = trades.due.pop_due(now) {
            trades.by_key.remove(&key);
        }
        (trades, now)
    }

    /// Records `trade` unless its key is settled already.
    pub fn settle(&self, trade: SettlementTrade) {
        let (mut trades, now) = self.trades();
        if trades.by_key.contains_key(&trade.idempotency_key) {
            return;
        }
        // NB: a retention past the clock's range is never reached: the key is kept.
        trades.due.push(
            now.checked_add(self.retention),
            trade.idempotency_key.clone(),
        );
        trades.by_key.insert(trade.idempotency_key.clone(), trade);
    }

    /// How many trades are remembered as settled.
    pub fn len(&self) -> usize {
        self.trades().0.by_key.len()
    }

    /// Whether no trade is remembered as settled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the trade with this idempotency key is remembered as settled.
    pub fn is_settled(&self, idempotency_key: &str) -> bool {
        self.trades().0.by_key.contains_key(idempotency_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn trade(key: &str) -> SettlementTrade {
        SettlementTrade {
            idempotency_key: key.to_owned(),
            trade_id: key.trim_start_matches("trade:").to_owned(),
            market_key: "80002:1".to_owned(),
            buyer: "b".to_owned(),
            seller: "s".to_owned(),
            price: "500000".to_owned(),
            amount: "1".to_owned(),
            collateral: "1".to_owned(),
        }
    }

    fn ledger(retention_ms: u64) -> (EmbeddedLedger, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at(1_000_000));
        let ledger = EmbeddedLedger::new(Duration::from_millis(retention_ms), clock.clone());
        (ledger, clock)
    }

    #[test]
    fn a_settled_key_is_acknowledged_again_within_the_retention() {
        let (ledger, clock) = ledger(1_000);
        ledger.settle(trade("trade:p1#0"));
        clock.advance(999);
        let mut other = trade("trade:p1#0");
        other.amount = "7".to_owned();
        ledger.settle(other);
        assert_eq!(ledger.len(), 1);
        let kept = ledger
            .trades()
            .0
            .by_key
            .get("trade:p1#0")
            .map(|t| t.amount.clone());
        assert_eq!(kept.as_deref(), Some("1"), "the first trade stays");
    }

    #[test]
    fn a_settled_key_is_forgotten_the_retention_after_it_was_settled() {
        let (ledger, clock) = ledger(1_000);
        ledger.settle(trade("trade:p1#0"));
        clock.advance(500);
        ledger.settle(trade("trade:p2#0"));
        clock.advance(500);
        assert!(!ledger.is_settled("trade:p1#0"), "p1 was settled 1 s ago");
        assert!(ledger.is_settled("trade:p2#0"), "p2 was settled 0.5 s ago");
        clock.advance(500);
        assert!(ledger.is_empty());
    }

    #[test]
    fn the_ledger_stays_bounded_over_a_long_run() {
        let (ledger, clock) = ledger(1_000);
        for i in 0..10_000 {
            ledger.settle(trade(&format!("trade:p{i}#0")));
            clock.advance(10);
            let (trades, _) = ledger.trades();
            assert!(
                trades.by_key.len() <= 101 && trades.due.len() <= 101,
                "after {i} trades: {} keys, {} queued",
                trades.by_key.len(),
                trades.due.len()
            );
        }
        assert!(ledger.len() >= 99, "the last second's trades are kept");
    }
}
