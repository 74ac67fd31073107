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
use smallvec::SmallVec;

use super::window::{Outcome, Spec, Window, admits, settle};
use crate::clock::Clock;
use crate::domain::UserId;
use crate::store::{RedisAccess, RedisConnection, RedisTarget, StoreError};

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

/// Counters in Redis: one `EVALSHA` per request and slot, whatever the number of tiers.
///
/// On one node every key carries the hash tag `{<prefix>rl}`, so one script checks and counts
/// every tier of a request atomically. On a cluster each client's counters carry that client's
/// tag (`{<prefix>rl:ip:10.0.0.1}`, `{<prefix>rl:u:0x…}`: a per-endpoint counter sits with
/// its client's) and the global counter its own (`{<prefix>rl:g}`), so the counters spread
/// over the slots and masters. A request then runs one script per slot it touches (the
/// global one, its IP's and, when authenticated, its user's), all at once: one round trip.
/// Each script counts only when all of its tiers admit; when one slot denies, the counts the
/// others made are taken back (one more round trip, denied requests only). So no tier ever
/// admits more than its limit, and the global tier stays exact; for that round trip a denied
/// request holds one unit of the other slots' tiers, which can only make a concurrent request
/// see one more than is left (a denial that a single script would have admitted).
///
/// Time is the Redis server's (`TIME`), so replicas with skewed clocks still share one window
/// (on a cluster, each master's clock for its slots).
pub struct RedisCounters {
    conn: RedisConnection,
    script: Script,
    refund: Script,
    prefix: String,
    timeout: Duration,
}

impl fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCounters")
            .field("prefix", &self.prefix)
            .field("cluster", &self.conn.is_cluster())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Takes back one count per key: `KEYS[i]` in bucket `ARGV[i]`, if that bucket still counts.
const REFUND_LUA: &str = r"
for i = 1, #KEYS do
  local c = tonumber(redis.call('HGET', KEYS[i], ARGV[i]))
  if c and c > 1 then
    redis.call('HINCRBY', KEYS[i], ARGV[i], -1)
  elseif c then
    redis.call('HDEL', KEYS[i], ARGV[i])
  end
end
return 0
";

/// The checks of one slot: their places in the request's list.
type Group = SmallVec<[usize; 4]>;

impl RedisCounters {
    /// Counters over an existing connection, keys under `prefix`, each call bounded by `timeout`.
    pub fn new(conn: RedisConnection, prefix: &str, timeout: Duration) -> Self {
        Self {
            conn,
            script: Script::new(include_str!("ratelimit.lua")),
            refund: Script::new(REFUND_LUA),
            prefix: prefix.to_owned(),
            timeout,
        }
    }

    /// Connects lazily to `target`, the limiter's own Redis (`rateLimit.redisUrl`, in
    /// `redis.mode`; a Redis that is down makes checks fail, not the start), through the
    /// store's connection helper.
    ///
    /// NB: `redis.password` and `redis.caFile` belong to the store's Redis (`redisUrl`) and
    /// are not sent here: this Redis gets the password inside the URL, if any, and a
    /// `rediss://` URL is verified against the web PKI roots.
    pub fn connect(
        target: &RedisTarget,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let conn = crate::store::connect(
            target,
            &RedisAccess::default(),
            "rateLimit.redisUrl",
            timeout,
        )?;
        Ok(Self::new(conn, prefix, timeout))
    }

    /// The Redis key of `key`: one tag for all on one node, the client's (or the global
    /// counter's) on a cluster.
    fn redis_key(&self, key: &Key<'_>) -> String {
        let prefix = &self.prefix;
        if !self.conn.is_cluster() {
            return format!("{{{prefix}rl}}{key}");
        }
        match key {
            Key::Global => format!("{{{prefix}rl:g}}"),
            Key::Client(client) => format!("{{{prefix}rl:{client}}}"),
            Key::Endpoint(endpoint, client) => format!("{{{prefix}rl:{client}}}ep:{endpoint}"),
        }
    }

    /// The checks grouped by slot: one group on one node; on a cluster the global counter,
    /// and one group per client.
    fn groups(&self, checks: &[Check<'_>]) -> SmallVec<[Group; 3]> {
        let mut groups: SmallVec<[(Option<Client<'_>>, Group); 3]> = SmallVec::new();
        for (i, check) in checks.iter().enumerate() {
            let owner = match check.key {
                _ if !self.conn.is_cluster() => None,
                Key::Global => None,
                Key::Client(client) | Key::Endpoint(_, client) => Some(client),
            };
            match groups.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, group)) => group.push(i),
                None => groups.push((owner, SmallVec::from_slice(&[i]))),
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }

    async fn run_group(
        &self,
        checks: &[Check<'_>],
        group: &[usize],
    ) -> Result<Decision, StoreError> {
        let mut invocation = self.script.prepare_invoke();
        let mut mine: SmallVec<[Check<'_>; 4]> = SmallVec::new();
        for &i in group {
            let Some(c) = checks.get(i) else { continue };
            invocation
                .key(self.redis_key(&c.key))
                .arg(c.spec.window_ms)
                .arg(c.spec.limit)
                .arg(c.spec.buckets);
            mine.push(*c);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = self.bounded(invocation.invoke_async(&mut conn)).await?;
        decode(&mine, reply)
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("no answer within {} ms", self.timeout.as_millis()))
            })?
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    async fn run(&self, checks: &[Check<'_>]) -> Result<Decision, StoreError> {
        let groups = self.groups(checks);
        if let [only] = groups.as_slice() {
            return self.run_group(checks, only).await;
        }
        let results =
            futures::future::join_all(groups.iter().map(|g| self.run_group(checks, g))).await;
        let admitted = |r: &Result<Decision, StoreError>| {
            r.as_ref()
                .is_ok_and(|d| d.outcomes.iter().all(|o| o.allowed))
        };
        // NB: when a slot denies or fails, what the slots that admitted counted is taken back,
        // before the verdict (or the policy for a failing store) decides; a failed take-back
        // keeps the denial. A slot whose call failed after its script ran keeps its count
        // (taking back what may not have been counted could undercount): it expires with its
        // bucket.
        let denied = !results.iter().all(admitted);
        if denied {
            let refunds = groups
                .iter()
                .zip(&results)
                .filter(|(_, r)| admitted(r))
                .filter_map(|(group, r)| {
                    let now_ms = r.as_ref().ok()?.now_ms;
                    Some(self.refund_group(checks, group, now_ms))
                });
            self.refund_all(refunds).await;
        }
        let mut outcomes: SmallVec<[Option<Outcome>; 4]> = SmallVec::from_elem(None, checks.len());
        let mut now_ms = 0;
        for (group, result) in groups.iter().zip(results) {
            let taken_back = denied && admitted(&result);
            let decision = result?;
            now_ms = now_ms.max(decision.now_ms);
            for (&i, outcome) in group.iter().zip(&decision.outcomes) {
                let mut outcome = *outcome;
                if taken_back {
                    // NB: as a single script would report it: this request not counted.
                    outcome.count = outcome.count.saturating_sub(1);
                    outcome.remaining = outcome.limit.saturating_sub(outcome.count);
                }
                if let Some(slot) = outcomes.get_mut(i) {
                    *slot = Some(outcome);
                }
            }
        }
        let outcomes = outcomes
            .into_iter()
            .collect::<Option<Outcomes>>()
            .ok_or_else(|| StoreError::Corrupt("rate-limit script reply: missing tier".into()))?;
        Ok(Decision { outcomes, now_ms })
    }

    /// Runs the take-backs at once; one that fails is logged (its count expires with its
    /// bucket), never the request's verdict.
    async fn refund_all(
        &self,
        refunds: impl Iterator<Item = impl std::future::Future<Output = Result<(), StoreError>>>,
    ) {
        for failed in futures::future::join_all(refunds)
            .await
            .into_iter()
            .filter_map(Result::err)
        {
            tracing::warn!(error = %failed, "rate limiter: could not take back a count");
        }
    }

    /// Takes back what one slot's script counted for a request another slot denied.
    async fn refund_group(
        &self,
        checks: &[Check<'_>],
        group: &[usize],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut invocation = self.refund.prepare_invoke();
        for &i in group {
            let Some(check) = checks.get(i) else { continue };
            // NB: the bucket the script counted in (`ratelimit.lua`: width, current).
            invocation
                .key(self.redis_key(&check.key))
                .arg(now_ms / check.spec.bucket_ms());
        }
        let mut conn = self.conn.clone();
        self.bounded(invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
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
