//! The Redis key layout: one hash tag per slot (see the table in the parent module), every key
//! under the configured prefix, and the sharding of the saga log.
//!
//! May use: `domain` (the ids keys are made of).

use super::RedisStore;
use crate::domain::{MarketKey, UserId};

impl RedisStore {
    pub(super) fn account_key(&self, user: &UserId) -> String {
        format!("{}{{u:{user}}}", self.inner.prefix)
    }

    pub(super) fn market_key(&self, market: &MarketKey) -> String {
        format!("{}{{m:{market}}}", self.inner.prefix)
    }

    pub(super) fn claim_key(&self, user: &UserId, order_id: &str) -> String {
        format!("{}{{c:{user}:{order_id}}}", self.inner.prefix)
    }

    /// Where an older build kept an order id's claim (not scoped to its user).
    pub(super) fn legacy_claim_key(&self, order_id: &str) -> String {
        format!("{}{{c:{order_id}}}", self.inner.prefix)
    }

    pub(super) fn saga_key(&self, id: &str) -> String {
        self.saga_shard_key(saga_shard(id))
    }

    pub(super) fn saga_shard_key(&self, shard: u64) -> String {
        format!("{}{{sagas:{shard}}}", self.inner.prefix)
    }

    pub(super) fn api_keys_key(&self) -> String {
        format!("{}{{apikeys}}", self.inner.prefix)
    }
}

/// Number of hashes the saga log is spread over.
pub const SAGA_SHARDS: u64 = 16;

/// The shard of a saga id (FNV-1a, stable across processes and builds).
pub(super) fn saga_shard(id: &str) -> u64 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % SAGA_SHARDS
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::redis::RedisSettings;

    #[test]
    fn keys_carry_one_hash_tag_per_slot() {
        // NB: the lazy connection manager spawns a task, so it needs a runtime; it never
        // connects here.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let store = RedisStore::new(&RedisSettings {
            url: "redis://127.0.0.1:1/".to_owned(),
            key_prefix: "fs:".to_owned(),
            command_timeout: Duration::from_millis(10),
            order_retention: Duration::from_secs(1),
            mode: crate::store::RedisMode::Standalone,
            cluster_nodes: Vec::new(),
            replica_acks: 0,
        })
        .expect("store");
        let user = UserId::parse("u", &format!("0x{}", "ab".repeat(20))).expect("valid");
        let market = MarketKey::parse("m", "80002:7").expect("valid");
        assert_eq!(store.account_key(&user), format!("fs:{{u:{user}}}"));
        assert_eq!(store.market_key(&market), "fs:{m:80002:7}");
        assert_eq!(
            store.claim_key(&user, "o-1"),
            format!("fs:{{c:{user}:o-1}}")
        );
        assert_eq!(store.legacy_claim_key("o-1"), "fs:{c:o-1}");
        assert_eq!(store.api_keys_key(), "fs:{apikeys}");
        assert_eq!(
            store.saga_key("o-1"),
            format!("fs:{{sagas:{}}}", saga_shard("o-1"))
        );
        let shards: std::collections::BTreeSet<u64> = (0..200)
            .map(|i| saga_shard(&format!("order-{i}")))
            .collect();
        assert_eq!(shards.len(), 16, "ids spread over every shard");
    }
}
