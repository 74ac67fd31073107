//! Where the limiter keeps its counters: in process memory (per replica) or in Redis (shared by
//! every replica). Both check and count all tiers of a request in one atomic step, with the
//! arithmetic of [`super::window`].

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::window::{Outcome, Spec, Window, admits, settle};

/// Source of the current time, injected so the arithmetic can be tested without sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// One counter to check: which key, under which limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Counter key, e.g. `ip:10.0.0.1`.
    pub key: String,
    /// Its limit.
    pub spec: Spec,
}

/// The counters' store could not decide.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit store: {0}")]
pub struct StoreFailure(pub String);

/// The answers to one request's checks, in order, and the store's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// One outcome per check.
    pub outcomes: Vec<Outcome>,
    /// The time the decision was taken at (ms since the epoch).
    pub now_ms: u64,
}

/// Checks and counts requests.
pub trait CounterStore: Send + Sync + fmt::Debug {
    /// Checks every counter; counts the request in all of them only if all admit it.
    fn check<'a>(&'a self, checks: &'a [Check]) -> BoxFuture<'a, Result<Decision, StoreFailure>>;

    /// The same decision without a future, for stores that never wait (in memory); `None`
    /// means "use [`CounterStore::check`]".
    fn check_sync(&self, _checks: &[Check]) -> Option<Decision> {
        None
    }
}

/// Shards of the in-memory store: enough that two cores rarely contend on one.
const SHARDS: usize = 64;

/// In-process counters, sharded by key; each request locks only the shards of its keys, in
/// ascending order (so two requests can never deadlock).
///
/// Memory is bounded: at most `max_keys` counters. A shard over its share first forgets idle
/// keys (nothing left in their window); if none is idle, the least recently used key.
#[derive(Debug)]
pub struct MemoryCounters {
    shards: Vec<Mutex<HashMap<String, Entry>>>,
    per_shard: usize,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    window: Window,
    spec: Option<Spec>,
    last_seen_ms: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // NB: entries are replaced whole after the decision, never left half-written, so a poisoned
    // shard still holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn shard_of(key: &str) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    // NB: `SHARDS` fits in u64 and the remainder in usize.
    (h.finish() % SHARDS as u64) as usize
}

impl MemoryCounters {
    /// Counters for at most `max_keys` keys, on `clock`.
    pub fn new(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (max_keys / SHARDS).max(1),
            clock,
        }
    }

    /// Keys currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn make_room(map: &mut HashMap<String, Entry>, per_shard: usize, now_ms: u64) {
        if map.len() < per_shard {
            return;
        }
        map.retain(|_, e| e.spec.is_some_and(|spec| !e.window.is_idle(&spec, now_ms)));
        if map.len() >= per_shard
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.last_seen_ms)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }

    /// The synchronous core of [`CounterStore::check`]: the two phases of
    /// [`super::window::check_all`] on the entries in place, under the locks of their shards.
    pub fn check_now(&self, checks: &[Check]) -> Decision {
        let now_ms = self.clock.now_ms();
        let shards: Vec<usize> = checks.iter().map(|c| shard_of(&c.key)).collect();
        let mut order = shards.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<MutexGuard<'_, HashMap<String, Entry>>> =
            order.iter().map(|i| lock(&self.shards[*i])).collect();
        // NB: `order` is sorted and holds every shard of `shards`, so the search always hits.
        let slot = |shard: usize| order.binary_search(&shard).unwrap_or(0);

        let mut admitted = true;
        for (check, shard) in checks.iter().zip(&shards) {
            if let Some(entry) = guards[slot(*shard)].get_mut(&check.key) {
                admitted &= admits(&mut entry.window, &check.spec, now_ms);
            } else {
                admitted &= check.spec.limit > 0;
            }
        }
        let mut outcomes = Vec::with_capacity(checks.len());
        for (check, shard) in checks.iter().zip(&shards) {
            let map = &mut guards[slot(*shard)];
            if let Some(entry) = map.get_mut(&check.key) {
                entry.spec = Some(check.spec);
                entry.last_seen_ms = now_ms;
                outcomes.push(settle(&mut entry.window, &check.spec, now_ms, admitted));
                continue;
            }
            // A key seen for the first time: tracked only when the request is counted.
            let mut window = Window::default();
            outcomes.push(settle(&mut window, &check.spec, now_ms, admitted));
            if admitted {
                Self::make_room(map, self.per_shard, now_ms);
                map.insert(
                    check.key.clone(),
                    Entry {
                        window,
                        spec: Some(check.spec),
                        last_seen_ms: now_ms,
                    },
                );
            }
        }
        Decision { outcomes, now_ms }
    }
}

impl CounterStore for MemoryCounters {
    fn check<'a>(&'a self, checks: &'a [Check]) -> BoxFuture<'a, Result<Decision, StoreFailure>> {
        let decision = self.check_now(checks);
        Box::pin(async move { Ok(decision) })
    }

    fn check_sync(&self, checks: &[Check]) -> Option<Decision> {
        Some(self.check_now(checks))
    }
}

/// Counters in Redis: one `EVALSHA` per request, whatever the number of tiers.
///
/// Every key carries the hash tag `{<prefix>rl}`, so the script touches one Redis Cluster slot
/// (the limiter then lives on one shard of a cluster; its load is one small script a request).
/// Time is the Redis server's (`TIME`), so replicas with skewed clocks still share one window.
pub struct RedisCounters {
    conn: ConnectionManager,
    script: Script,
    tag: String,
    timeout: Duration,
}

impl fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCounters")
            .field("tag", &self.tag)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisCounters {
    /// Counters over an existing connection, keys under `prefix`, each call bounded by `timeout`.
    pub fn new(conn: ConnectionManager, prefix: &str, timeout: Duration) -> Self {
        Self {
            conn,
            script: Script::new(include_str!("ratelimit.lua")),
            tag: format!("{{{prefix}rl}}"),
            timeout,
        }
    }

    /// Connects lazily to `url` (a Redis that is down makes checks fail, not the start).
    pub fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreFailure> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreFailure(format!("invalid redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreFailure(e.to_string()))?;
        Ok(Self::new(conn, prefix, timeout))
    }

    async fn run(&self, checks: &[Check]) -> Result<Decision, StoreFailure> {
        let mut invocation = self.script.prepare_invoke();
        for c in checks {
            invocation
                .key(format!("{}{}", self.tag, c.key))
                .arg(c.spec.window_ms)
                .arg(c.spec.limit)
                .arg(c.spec.buckets);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| {
                    StoreFailure(format!("no answer within {} ms", self.timeout.as_millis()))
                })?
                .map_err(|e| StoreFailure(e.to_string()))?;
        decode(checks, reply)
    }
}

fn decode(checks: &[Check], reply: Vec<redis::Value>) -> Result<Decision, StoreFailure> {
    let bad = |what: &str| StoreFailure(format!("unexpected script reply: {what}"));
    if reply.len() != checks.len() + 1 {
        return Err(bad("wrong length"));
    }
    let mut values = reply.into_iter();
    let mut outcomes = Vec::with_capacity(checks.len());
    for check in checks {
        let row: Vec<u64> =
            redis::from_redis_value(values.next().ok_or_else(|| bad("missing row"))?)
                .map_err(|e| bad(&e.to_string()))?;
        let [allowed, count, retry_after_ms, reset_ms] = row[..] else {
            return Err(bad("row of wrong length"));
        };
        outcomes.push(Outcome {
            allowed: allowed == 1,
            count,
            limit: check.spec.limit,
            remaining: check.spec.limit.saturating_sub(count),
            retry_after_ms,
            reset_ms,
        });
    }
    let now_ms: u64 = redis::from_redis_value(values.next().ok_or_else(|| bad("missing time"))?)
        .map_err(|e| bad(&e.to_string()))?;
    Ok(Decision { outcomes, now_ms })
}

impl CounterStore for RedisCounters {
    fn check<'a>(&'a self, checks: &'a [Check]) -> BoxFuture<'a, Result<Decision, StoreFailure>> {
        Box::pin(self.run(checks))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[derive(Debug, Default)]
    struct ManualClock(AtomicU64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn check(key: &str, limit: u64) -> Check {
        Check {
            key: key.to_owned(),
            spec: Spec {
                window_ms: 1_000,
                limit,
                buckets: 10,
            },
        }
    }

    #[test]
    fn memory_is_bounded_and_forgets_idle_keys_first() {
        let clock = Arc::new(ManualClock::default());
        let store = MemoryCounters::new(SHARDS * 2, clock.clone());
        for i in 0..1_000 {
            store.check_now(&[check(&format!("ip:{i}"), 5)]);
        }
        assert!(store.len() <= SHARDS * 2, "{} keys held", store.len());
        // Once their windows have passed, keys are idle and make room for new ones first.
        clock.0.store(10_000, Ordering::SeqCst);
        let hot = check("ip:hot", 1);
        assert!(store.check_now(std::slice::from_ref(&hot)).outcomes[0].allowed);
        assert!(
            !store.check_now(&[hot]).outcomes[0].allowed,
            "the new key is tracked"
        );
    }
}
