//! Where the limiter keeps its counters: in process memory (per replica) or in Redis (shared by
//! every replica). Both check and count all tiers of a request in one atomic step, with the
//! arithmetic of [`super::window`].
//!
//! Room: part of `ratelimit/`; uses [`crate::clock`], [`crate::domain`] (the user a counter
//! is keyed by) and [`crate::store`] (its [`StoreError`], the one "store failed" error of the
//! relayer), nothing of HTTP.

use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use hashbrown::HashTable;
use redis::Script;
use redis::aio::ConnectionManager;
use smallvec::SmallVec;

use super::window::{Outcome, Spec, Window, admits, settle};
use crate::clock::Clock;
use crate::domain::UserId;
use crate::store::{RedisAccess, StoreError};

/// Whose requests a per-client counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client<'a> {
    /// A client IP.
    Ip(IpAddr),
    /// An authenticated user.
    User(&'a UserId),
}

impl fmt::Display for Client<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Ip(ip) => write!(f, "ip:{ip}"),
            Client::User(user) => write!(f, "u:{user}"),
        }
    }
}

/// Which counter: borrowed from the request, so deciding a request builds no strings. Its
/// [`fmt::Display`] is the counter's name in Redis (`g`, `ip:10.0.0.1`, `u:0x…`,
/// `ep:POST /v2/orders:u:0x…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key<'a> {
    /// The global tier's one counter.
    Global,
    /// A per-IP or per-user counter.
    Client(Client<'a>),
    /// A per-endpoint counter: the endpoint as configured (`METHOD /route` or `/route`) and the
    /// client.
    Endpoint(&'a str, Client<'a>),
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Global => f.write_str("g"),
            Key::Client(client) => client.fmt(f),
            Key::Endpoint(endpoint, client) => write!(f, "ep:{endpoint}:{client}"),
        }
    }
}

/// One counter to check: which key, under which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check<'a> {
    /// The counter.
    pub key: Key<'a>,
    /// Its limit.
    pub spec: Spec,
}

/// One outcome per tier; a request has at most four.
pub type Outcomes = SmallVec<[Outcome; 4]>;

/// The answers to one request's checks, in order, and the store's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// One outcome per check.
    pub outcomes: Outcomes,
    /// The time the decision was taken at (ms since the epoch).
    pub now_ms: u64,
}

/// Checks and counts requests.
pub trait CounterStore: Send + Sync + fmt::Debug {
    /// Checks every counter; counts the request in all of them only if all admit it.
    fn check<'a>(&'a self, checks: &'a [Check<'a>]) -> BoxFuture<'a, Result<Decision, StoreError>>;

    /// The same decision without a future, for stores that never wait (in memory); `None`
    /// means "use [`CounterStore::check`]".
    fn check_sync(&self, _checks: &[Check<'_>]) -> Option<Decision> {
        None
    }
}

/// Shards of the in-memory store: enough that two cores rarely contend on one.
const SHARDS: usize = 64;

/// A [`Key`] the in-memory store keeps: allocated once, when a key is first counted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StoredKey {
    Global,
    Client(StoredClient),
    Endpoint(Box<str>, StoredClient),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum StoredClient {
    Ip(IpAddr),
    User(UserId),
}

impl StoredClient {
    fn new(client: Client<'_>) -> Self {
        match client {
            Client::Ip(ip) => StoredClient::Ip(ip),
            Client::User(user) => StoredClient::User(user.clone()),
        }
    }

    fn get(&self) -> Client<'_> {
        match self {
            StoredClient::Ip(ip) => Client::Ip(*ip),
            StoredClient::User(user) => Client::User(user),
        }
    }
}

impl StoredKey {
    fn new(key: Key<'_>) -> Self {
        match key {
            Key::Global => StoredKey::Global,
            Key::Client(client) => StoredKey::Client(StoredClient::new(client)),
            Key::Endpoint(endpoint, client) => {
                StoredKey::Endpoint(endpoint.into(), StoredClient::new(client))
            }
        }
    }

    fn get(&self) -> Key<'_> {
        match self {
            StoredKey::Global => Key::Global,
            StoredKey::Client(client) => Key::Client(client.get()),
            StoredKey::Endpoint(endpoint, client) => Key::Endpoint(endpoint, client.get()),
        }
    }
}

/// In-process counters, sharded by key; each request locks only the shards of its keys, in
/// ascending order (so two requests can never deadlock). A key is hashed once per request (with
/// the standard library's randomly keyed SipHash: client IPs are chosen by the network), and
/// that hash picks both the shard and the slot in it.
///
/// Memory is bounded: at most `max_keys` counters. A shard over its share forgets its idle keys
/// (nothing left in their window), sweeping for them at most once every `SWEEP_EVERY_MS` (ms);
/// otherwise the least recently used key of `EVICTION_SAMPLE` keys taken from a random place.
/// So a flood of new keys (new client IPs) costs each a bounded eviction, never a pass over the
/// shard.
#[derive(Debug)]
pub struct MemoryCounters {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Clone)]
struct Entry {
    key: StoredKey,
    window: Window,
    spec: Spec,
    last_seen_ms: u64,
}

/// One shard of [`MemoryCounters`]: its keys, and when it last swept out the idle ones.
#[derive(Debug, Default)]
struct Shard {
    table: HashTable<Entry>,
    swept_ms: u64,
}

/// A full shard sweeps out its idle keys at most this often.
const SWEEP_EVERY_MS: u64 = 1_000;

/// How many keys an eviction compares, for the least recently used.
const EVICTION_SAMPLE: usize = 16;

/// One check's way to its entry in [`MemoryCounters::check_now`].
struct Probe {
    hash: u64,
    /// The index of its shard's guard.
    guard: usize,
    /// The entry's slot in the shard's table, when the key is there.
    slot: Option<usize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // NB: entries are replaced whole after the decision, never left half-written, so a poisoned
    // shard still holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shard of a key's hash: bits the table does not use (it indexes by the low bits and tags
/// by the top seven), so one shard's keys still spread over its table.
fn shard_of(hash: u64) -> usize {
    // NB: the remainder is below `SHARDS`, which fits in usize.
    ((hash >> 32) % SHARDS as u64) as usize
}

impl MemoryCounters {
    /// Counters for at most `max_keys` keys, on `clock`.
    pub fn new(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: (max_keys / SHARDS).max(1),
            clock,
        }
    }

    /// A key's hash: one keyed SipHash pass over the key's bytes (rather than a pass per field,
    /// as a derived `Hash` does). The one global counter needs no hashing. Keys that hash alike
    /// only share a probe sequence: the table compares whole keys.
    fn hash(&self, key: Key<'_>) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        let client = match key {
            Key::Global => return 0,
            Key::Client(client) => client,
            Key::Endpoint(endpoint, client) => {
                hasher.write(endpoint.as_bytes());
                client
            }
        };
        match client {
            Client::Ip(ip) => {
                let mut bytes = [0; 17];
                let len = match ip {
                    IpAddr::V4(v4) => {
                        bytes[1..5].copy_from_slice(&v4.octets());
                        5
                    }
                    IpAddr::V6(v6) => {
                        bytes[0] = 6;
                        bytes[1..].copy_from_slice(&v6.octets());
                        17
                    }
                };
                hasher.write(&bytes[..len]);
            }
            Client::User(user) => hasher.write(user.as_str().as_bytes()),
        }
        hasher.finish()
    }

    /// Keys currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).table.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for one more key in a full shard: its idle keys if it has not swept for
    /// them lately, else the least recently used of [`EVICTION_SAMPLE`] keys found from a place
    /// that `seed` (a keyed hash, unknown to clients) picks.
    fn make_room(&self, shard: &mut Shard, now_ms: u64, seed: u64) {
        if shard.table.len() < self.per_shard {
            return;
        }
        // NB: a clock that stepped back sweeps again at once rather than waiting.
        if now_ms.abs_diff(shard.swept_ms) >= SWEEP_EVERY_MS {
            shard.swept_ms = now_ms;
            shard.table.retain(|e| !e.window.is_idle(&e.spec, now_ms));
            if shard.table.len() < self.per_shard {
                return;
            }
        }
        let slots = shard.table.num_buckets();
        // NB: the remainder is below `slots`, a usize.
        let start = (seed.rotate_right(16) % slots as u64) as usize;
        // NB: the shard is full, so it holds a key and the search ends.
        let oldest = (0..slots)
            .map(|i| (start + i) % slots)
            .filter_map(|i| shard.table.get_bucket(i).map(|e| (e.last_seen_ms, i)))
            .take(EVICTION_SAMPLE)
            .min();
        if let Some(Ok(entry)) = oldest.map(|(_, i)| shard.table.get_bucket_entry(i)) {
            entry.remove();
        }
    }

    /// The synchronous core of [`CounterStore::check`]: the two phases of
    /// [`super::window::check_all`] on the entries in place, under the locks of their shards.
    pub fn check_now(&self, checks: &[Check<'_>]) -> Decision {
        let now_ms = self.clock.now_ms();
        // One probe per check: its key's hash, the guard of its shard, and (once found) its
        // slot in the shard's table, so phase two need not search again.
        let mut probes: SmallVec<[Probe; 4]> = checks
            .iter()
            .map(|c| {
                let hash = self.hash(c.key);
                Probe {
                    hash,
                    guard: 0,
                    slot: None,
                }
            })
            .collect();
        let mut shards: SmallVec<[usize; 4]> = probes.iter().map(|p| shard_of(p.hash)).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut guards: SmallVec<[MutexGuard<'_, Shard>; 4]> =
            shards.iter().map(|i| lock(&self.shards[*i])).collect();
        for probe in &mut probes {
            // NB: `shards` holds every probe's shard, so this always finds it.
            let shard = shard_of(probe.hash);
            probe.guard = shards.iter().position(|s| *s == shard).unwrap_or(0);
        }

        // Phase one: find each key and ask its window.
        let mut admitted = true;
        for (check, probe) in checks.iter().zip(&mut probes) {
            let table = &mut guards[probe.guard].table;
            probe.slot = table.find_bucket_index(probe.hash, |e| e.key.get() == check.key);
            match probe.slot.and_then(|i| table.get_bucket_mut(i)) {
                Some(entry) => admitted &= admits(&mut entry.window, &check.spec, now_ms),
                None => admitted &= check.spec.limit > 0,
            }
        }
        // Phase two: count in the keys found, then add the new ones (adding may move entries
        // of the same shard, so it comes after every kept slot is used).
        let mut outcomes = Outcomes::new();
        for (check, probe) in checks.iter().zip(&probes) {
            let entry = probe
                .slot
                .and_then(|i| guards[probe.guard].table.get_bucket_mut(i));
            outcomes.push(match entry {
                Some(entry) => {
                    entry.spec = check.spec;
                    entry.last_seen_ms = now_ms;
                    settle(&mut entry.window, &check.spec, now_ms, admitted)
                }
                None => Outcome::default(),
            });
        }
        for ((check, probe), outcome) in checks.iter().zip(&probes).zip(&mut outcomes) {
            if probe.slot.is_some() {
                continue;
            }
            // A key seen for the first time: tracked only when the request is counted.
            let mut window = Window::default();
            *outcome = settle(&mut window, &check.spec, now_ms, admitted);
            if admitted {
                let shard = &mut guards[probe.guard];
                self.make_room(shard, now_ms, probe.hash);
                let entry = Entry {
                    key: StoredKey::new(check.key),
                    window,
                    spec: check.spec,
                    last_seen_ms: now_ms,
                };
                shard
                    .table
                    .insert_unique(probe.hash, entry, |e| self.hash(e.key.get()));
            }
        }
        Decision { outcomes, now_ms }
    }
}

impl CounterStore for MemoryCounters {
    fn check<'a>(&'a self, checks: &'a [Check<'a>]) -> BoxFuture<'a, Result<Decision, StoreError>> {
        let decision = self.check_now(checks);
        Box::pin(async move { Ok(decision) })
    }

    fn check_sync(&self, checks: &[Check<'_>]) -> Option<Decision> {
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

    /// Connects lazily to `url`, the limiter's own Redis (`rateLimit.redisUrl`; a Redis that
    /// is down makes checks fail, not the start), through the store's connection helper.
    ///
    /// NB: `redis.password` and `redis.caFile` belong to the store's Redis (`redisUrl`) and
    /// are not sent here: this Redis gets the password inside `url`, if any, and a
    /// `rediss://` `url` is verified against the web PKI roots.
    pub fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let conn = crate::store::connection_manager(
            url,
            &RedisAccess::default(),
            "rateLimit.redisUrl",
            timeout,
        )?;
        Ok(Self::new(conn, prefix, timeout))
    }

    async fn run(&self, checks: &[Check<'_>]) -> Result<Decision, StoreError> {
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
                    StoreError::Unavailable(format!(
                        "no answer within {} ms",
                        self.timeout.as_millis()
                    ))
                })?
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        decode(checks, reply)
    }
}

fn decode(checks: &[Check<'_>], reply: Vec<redis::Value>) -> Result<Decision, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("rate-limit script reply: {what}"));
    if reply.len() != checks.len() + 1 {
        return Err(bad("wrong length"));
    }
    let mut values = reply.into_iter();
    let mut outcomes = Outcomes::new();
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
    fn check<'a>(&'a self, checks: &'a [Check<'a>]) -> BoxFuture<'a, Result<Decision, StoreError>> {
        Box::pin(self.run(checks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn check(ip: u32, limit: u64) -> Check<'static> {
        Check {
            key: Key::Client(Client::Ip(IpAddr::from(ip.to_be_bytes()))),
            spec: Spec {
                window_ms: 1_000,
                limit,
                buckets: 10,
            },
        }
    }

    #[test]
    fn a_flood_of_new_keys_evicts_the_least_recently_used_and_stays_bounded() {
        let clock = Arc::new(ManualClock::default());
        let store = MemoryCounters::new(SHARDS * 4, clock.clone());
        let long = |ip: u32, limit: u64| Check {
            spec: Spec {
                window_ms: 600_000,
                limit,
                buckets: 10,
            },
            ..check(ip, limit)
        };
        let hot = long(u32::MAX, 1_000_000);
        for i in 0..20_000_u32 {
            // Nothing goes idle (ten-minute windows): every new key needs an eviction.
            clock.set(u64::from(i));
            store.check_now(&[long(i, 5)]);
            let count = store.check_now(std::slice::from_ref(&hot)).outcomes[0].count;
            assert_eq!(count, u64::from(i) + 1, "the key in use was never evicted");
            assert!(store.len() <= SHARDS * 4, "{} keys held", store.len());
        }
        // The newest key is tracked, not evicted at once.
        assert_eq!(store.check_now(&[long(19_999, 5)]).outcomes[0].count, 2);
    }

    #[test]
    fn memory_is_bounded_and_forgets_idle_keys_first() {
        let clock = Arc::new(ManualClock::default());
        let store = MemoryCounters::new(SHARDS * 2, clock.clone());
        for i in 0..1_000 {
            store.check_now(&[check(i, 5)]);
        }
        assert!(store.len() <= SHARDS * 2, "{} keys held", store.len());
        // Once their windows have passed, keys are idle and make room for new ones first.
        clock.set(10_000);
        let hot = check(u32::MAX, 1);
        assert!(store.check_now(std::slice::from_ref(&hot)).outcomes[0].allowed);
        assert!(
            !store.check_now(&[hot]).outcomes[0].allowed,
            "the new key is tracked"
        );
    }
}
