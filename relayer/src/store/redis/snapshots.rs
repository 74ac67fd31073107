//! Depth snapshots: the last depth read of each (market, levels), kept with the book's depth
//! version it was read at (`lua/book.lua`, "dv"), so that a depth read whose version is still
//! the book's answers from here after one `HGET` instead of a script that walks the levels.
//!
//! Pure: takes the version and the time, returns data; the Redis calls are the parent's.
//!
//! A snapshot is served only while the book's version is the one it was read at, and for at
//! most [`MAX_AGE`] after it was read: the version is moved on by every script of this build
//! that changes the levels, and the age bounds what a build that does not move it (an older
//! colour still writing the book during a cutover) can leave unseen.
//!
//! May use: `book` (the levels).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::book::Level;

/// The longest a snapshot is served after it was read, whatever the version says.
pub(super) const MAX_AGE: Duration = Duration::from_secs(1);

/// How many (market, levels) snapshots are kept; the map starts afresh when full (a reader
/// that asks for many markets or level counts only gets the uncached read it had anyway).
pub(super) const CAPACITY: usize = 4096;

/// Bids and asks, best first.
pub(super) type Sides = Arc<(Vec<Level>, Vec<Level>)>;

struct Snapshot {
    version: String,
    read_at: Instant,
    sides: Sides,
}

/// The snapshots of one store (shared by its clones).
#[derive(Default)]
pub(super) struct DepthSnapshots {
    map: Mutex<HashMap<(String, usize), Snapshot>>,
}

impl DepthSnapshots {
    /// The snapshot of `market` (its base key) with `levels` per side read less than
    /// [`MAX_AGE`] before `now`, with the version it was read at: to be served only when that
    /// is still the book's version.
    pub(super) fn fresh(
        &self,
        market: &str,
        levels: usize,
        now: Instant,
    ) -> Option<(String, Sides)> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let s = map.get(&(market.to_owned(), levels))?;
        (now.checked_duration_since(s.read_at)? < MAX_AGE)
            .then(|| (s.version.clone(), Arc::clone(&s.sides)))
    }

    /// Keeps `sides`, read at `version` at `read_at`, unless a snapshot read later is kept.
    pub(super) fn put(
        &self,
        market: &str,
        levels: usize,
        version: String,
        read_at: Instant,
        sides: Sides,
    ) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (market.to_owned(), levels);
        if map.get(&key).is_some_and(|s| s.read_at > read_at) {
            return;
        }
        if map.len() >= CAPACITY && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(
            key,
            Snapshot {
                version,
                read_at,
                sides,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sides(price: u64) -> Sides {
        Arc::new((
            vec![Level {
                price,
                amount: 1,
                orders: 1,
            }],
            Vec::new(),
        ))
    }

    /// What a reader at `version` would be served.
    fn get(
        s: &DepthSnapshots,
        market: &str,
        levels: usize,
        version: &str,
        now: Instant,
    ) -> Option<Sides> {
        s.fresh(market, levels, now)
            .filter(|(v, _)| v == version)
            .map(|(_, sides)| sides)
    }

    #[test]
    fn a_snapshot_is_served_only_at_its_version_and_levels() {
        let s = DepthSnapshots::default();
        let t0 = Instant::now();
        s.put("m", 50, "7".into(), t0, sides(1));
        assert_eq!(get(&s, "m", 50, "7", t0), Some(sides(1)));
        assert_eq!(get(&s, "m", 50, "8", t0), None, "the book moved on");
        assert_eq!(get(&s, "m", 10, "7", t0), None, "another level count");
        assert_eq!(get(&s, "n", 50, "7", t0), None, "another market");
    }

    #[test]
    fn a_snapshot_expires_after_its_max_age_whatever_the_version() {
        let s = DepthSnapshots::default();
        let t0 = Instant::now();
        s.put("m", 50, "7".into(), t0, sides(1));
        let almost = t0 + MAX_AGE - Duration::from_millis(1);
        assert!(get(&s, "m", 50, "7", almost).is_some());
        assert_eq!(get(&s, "m", 50, "7", t0 + MAX_AGE), None);
    }

    #[test]
    fn an_older_read_never_replaces_a_newer_one() {
        let s = DepthSnapshots::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        s.put("m", 50, "8".into(), t1, sides(2));
        // A read that started earlier (at version 7) answers later: the newer one stays.
        s.put("m", 50, "7".into(), t0, sides(1));
        assert_eq!(get(&s, "m", 50, "8", t1), Some(sides(2)));
        assert_eq!(get(&s, "m", 50, "7", t1), None);
    }

    #[test]
    fn the_map_is_bounded() {
        let s = DepthSnapshots::default();
        let t0 = Instant::now();
        for i in 0..CAPACITY + 10 {
            s.put(&format!("m{i}"), 50, "1".into(), t0, sides(1));
        }
        assert!(s.len() <= CAPACITY, "{} snapshots kept", s.len());
        assert!(get(&s, &format!("m{}", CAPACITY + 9), 50, "1", t0).is_some());
    }
}
