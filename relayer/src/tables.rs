//! Tables that grow without stalls, for the in-memory state that holds an entry per order of
//! a retention (the in-memory store, the order book, the embedded settlement ledger):
//! [`ShardedMap`] (and [`ShardedSet`]) and [`DueQueue`]. A plain hash map that doubles moves
//! every entry at once, under the lock of its table; with a few hundred thousand orders that
//! stalled every placement behind it for hundreds of milliseconds. Here growth moves at most
//! one shard or one chunk at a time.
//!
//! Room: the first of the relayer; it uses no other module of the crate.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};

use tokio::time::Instant;

/// How many hash maps a [`ShardedMap`] spreads its entries over.
pub const SHARDS: usize = 64;

/// A hash map spread over [`SHARDS`] maps by the hash of the key: a lookup costs what a hash
/// map's does (one more hash), and growing doubles one shard, a 64th of the entries.
#[derive(Clone)]
pub struct ShardedMap<K, V> {
    shards: Box<[HashMap<K, V>]>,
    hasher: RandomState,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<K, V> fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedMap")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<K, V> ShardedMap<K, V> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(HashMap::values)
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // NB: the remainder of a u64 by 64 fits any usize.
        usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0)
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &HashMap<K, V> {
        &self.shards[self.shard_of(key)]
    }

    fn shard_mut<Q: Hash + ?Sized>(&mut self, key: &Q) -> &mut HashMap<K, V> {
        let i = self.shard_of(key);
        &mut self.shards[i]
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).get(key)
    }

    /// The value of `key`, to change.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard_mut(key).get_mut(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).contains_key(key)
    }

    /// Sets the value of `key`; answers the one it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.shard_mut(&key).insert(key, value)
    }

    /// Removes `key`; answers its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard_mut(key).remove(key)
    }
}

/// A set over a [`ShardedMap`].
#[derive(Debug, Clone)]
pub struct ShardedSet<K>(ShardedMap<K, ()>);

impl<K> Default for ShardedSet<K> {
    fn default() -> Self {
        Self(ShardedMap::default())
    }
}

impl<K: Hash + Eq> ShardedSet<K> {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `key` is in the set.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.contains_key(key)
    }

    /// Adds `key`; false when it was there.
    pub fn insert(&mut self, key: K) -> bool {
        self.0.insert(key, ()).is_none()
    }

    /// Removes `key`; false when it was not there.
    pub fn remove<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.remove(key).is_some()
    }
}

/// Keys in the order they were queued, each with the instant it falls due: with a constant
/// retention that is due order, so the front is always the next one due.
///
/// Kept in chunks of [`DueQueue::CHUNK`] entries, so that growing never copies the queue: a
/// queue of every order of a retention (hundreds of thousands) would otherwise be moved
/// whole, under its table's lock, each time it doubles.
#[derive(Debug)]
pub struct DueQueue<K> {
    chunks: VecDeque<VecDeque<(Instant, K)>>,
}

impl<K> Default for DueQueue<K> {
    fn default() -> Self {
        Self {
            chunks: VecDeque::new(),
        }
    }
}

impl<K> DueQueue<K> {
    /// Entries per chunk.
    pub const CHUNK: usize = 1024;

    /// Queues `key` to fall due at `due` (nothing when `None`: never).
    pub fn push(&mut self, due: Option<Instant>, key: K) {
        let Some(due) = due else { return };
        match self.chunks.back_mut() {
            Some(last) if last.len() < Self::CHUNK => last.push_back((due, key)),
            _ => {
                let mut chunk = VecDeque::with_capacity(Self::CHUNK);
                chunk.push_back((due, key));
                self.chunks.push_back(chunk);
            }
        }
    }

    /// Takes the first entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let first = self.chunks.front_mut()?;
        if first.front().is_none_or(|(due, _)| *due > now) {
            return None;
        }
        let entry = first.pop_front();
        if first.is_empty() {
            self.chunks.pop_front();
        }
        entry
    }

    /// How many entries are queued (due or not).
    pub fn len(&self) -> usize {
        self.chunks.iter().map(VecDeque::len).sum()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_sharded_map_answers_like_a_hash_map() {
        let mut m = ShardedMap::default();
        let mut plain = HashMap::new();
        for i in 0..10_000_u64 {
            let k = format!("k{}", i * 7919 % 10_007);
            assert_eq!(m.insert(k.clone(), i), plain.insert(k, i));
        }
        for i in (0..10_007_u64).step_by(3) {
            let k = format!("k{i}");
            assert_eq!(m.remove(k.as_str()), plain.remove(k.as_str()));
        }
        assert_eq!(m.len(), plain.len());
        for (k, v) in &plain {
            assert_eq!(m.get(k.as_str()), Some(v));
            assert!(m.contains_key(k.as_str()));
        }
        if let Some(v) = m.get_mut("k1") {
            *v = u64::MAX;
        }
        assert_eq!(m.get("k1").copied(), plain.get("k1").map(|_| u64::MAX));
        let mut values: Vec<_> = m.values().copied().collect();
        values.sort_unstable();
        assert_eq!(values.len(), plain.len());
        let mut s = ShardedSet::default();
        assert!(s.insert("a".to_owned()) && !s.insert("a".to_owned()));
        assert!(s.contains("a") && s.len() == 1);
        assert!(s.remove("a") && !s.remove("a") && s.is_empty());
    }

    #[test]
    fn a_due_queue_pops_in_order_only_what_is_due_across_chunks() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut q = DueQueue::default();
        let n = DueQueue::<u64>::CHUNK as u64 * 2 + 5;
        for i in 0..n {
            q.push(Some(at(i)), i);
        }
        q.push(None, u64::MAX);
        assert_eq!(
            q.len() as u64,
            n,
            "a key that never falls due is not queued"
        );
        assert_eq!(
            q.pop_due(t0 - Duration::from_millis(1)),
            None,
            "nothing due yet"
        );
        let popped: Vec<u64> =
            std::iter::from_fn(|| q.pop_due(at(n / 2)).map(|(_, k)| k)).collect();
        assert_eq!(popped, (0..=n / 2).collect::<Vec<_>>());
        let rest: Vec<u64> = std::iter::from_fn(|| q.pop_due(at(n)).map(|(_, k)| k)).collect();
        assert_eq!(rest, (n / 2 + 1..n).collect::<Vec<_>>());
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
        q.push(Some(at(1)), 7);
        assert_eq!(
            q.pop_due(at(1)),
            Some((at(1), 7)),
            "usable again once drained"
        );
    }
}
