//! The embedded settlement ledger: an in-process, idempotent record of settled trades, used
//! when no `settlement.url` is configured (development, tests).
//!
//! May use: the parent's types only.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::SettlementTrade;

/// Trades settled in process, by idempotency key: a key settled again is acknowledged and
/// changes nothing.
#[derive(Debug, Default)]
pub struct EmbeddedLedger {
    trades: Mutex<HashMap<String, SettlementTrade>>,
}

impl EmbeddedLedger {
    /// Records `trade` unless its key is settled already.
    pub fn settle(&self, trade: SettlementTrade) {
        self.trades
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(trade.idempotency_key.clone())
            .or_insert(trade);
    }

    /// How many trades are settled.
    pub fn len(&self) -> usize {
        self.trades
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no trade is settled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
