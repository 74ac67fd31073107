//! Placement load that runs through a fault: one task per trader placing crossing orders until
//! stopped ([`Load`]), spread over one or more relayers, each request bounded by the client's
//! timeout. It counts what every request was answered, the slowest answer, and the orders
//! attempted (for [`super::api::check_invariants`]). A 503 must carry a JSON error; after one
//! the client backs off a little, as a real one would.
//!
//! Uses [`super::api`] and [`super::fixtures`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::api::{Api, Trader};
use super::fixtures::crossing_order;

/// At most this many placements per client, so a test whose stop never comes still ends.
const MAX_PER_CLIENT: usize = 20_000;

/// Clients placing crossing orders until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    placed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<ClientRun>>,
}

/// What one client saw.
struct ClientRun {
    attempted: Vec<(String, usize)>,
    acknowledged: Vec<(String, usize)>,
    statuses: BTreeMap<u16, usize>,
    slowest: Duration,
}

/// What all clients saw.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Every order attempted, as (order id, trader index).
    pub orders: Vec<(String, usize)>,
    /// The orders answered 201 (placed) or 202 (accepted, finishing in the background): each
    /// must exist afterwards.
    pub acknowledged: Vec<(String, usize)>,
    /// How many requests were answered with each status.
    pub statuses: BTreeMap<u16, usize>,
    /// The slowest answer.
    pub slowest: Duration,
}

impl LoadOutcome {
    /// Requests answered `status`.
    pub fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

impl Load {
    /// One client per trader, client `c`'s `i`-th placement going to `bases[(c + i) % len]`;
    /// order ids are `<prefix><c>-<i>`, prices and sides from `seed`.
    pub fn start(api: &Api, bases: &[String], traders: &[Trader], prefix: &str, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let placed = Arc::new(AtomicUsize::new(0));
        let tasks = traders
            .iter()
            .enumerate()
            .map(|(c, trader)| {
                let (api, bases, trader) = (api.clone(), bases.to_vec(), trader.clone());
                let (stop, placed, prefix) = (stop.clone(), placed.clone(), prefix.to_owned());
                tokio::spawn(async move {
                    let mut run = ClientRun {
                        attempted: Vec::new(),
                        acknowledged: Vec::new(),
                        statuses: BTreeMap::new(),
                        slowest: Duration::ZERO,
                    };
                    let mut seed = seed ^ (c as u64 * 0x9e37_79b9);
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) && i < MAX_PER_CLIENT {
                        seed = seed
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        let id = format!("{prefix}{c}-{i}");
                        let base = &bases[(c + i) % bases.len()];
                        i += 1;
                        let order = crossing_order(seed, &id, &trader.user_id).json();
                        let started = Instant::now();
                        let (status, body) = api
                            .place(base, &trader, &order)
                            .await
                            .expect("every request is answered");
                        run.slowest = run.slowest.max(started.elapsed());
                        if status == 503 {
                            assert!(
                                body["error"]["code"].is_string(),
                                "a 503 carries a JSON error: {body}"
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if status == 201 {
                            placed.fetch_add(1, Ordering::Relaxed);
                        }
                        *run.statuses.entry(status).or_default() += 1;
                        if matches!(status, 201 | 202) {
                            run.acknowledged.push((id.clone(), c));
                        }
                        run.attempted.push((id, c));
                    }
                    run
                })
            })
            .collect();
        Self {
            stop,
            placed,
            tasks,
        }
    }

    /// Placements answered 201 so far, over all clients.
    pub fn placed(&self) -> usize {
        self.placed.load(Ordering::Relaxed)
    }

    /// Stops the clients and gathers what they saw.
    pub async fn finish(self) -> LoadOutcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut outcome = LoadOutcome::default();
        for t in self.tasks {
            let run = t.await.expect("client task");
            outcome.orders.extend(run.attempted);
            outcome.acknowledged.extend(run.acknowledged);
            outcome.slowest = outcome.slowest.max(run.slowest);
            for (k, v) in run.statuses {
                *outcome.statuses.entry(k).or_default() += v;
            }
        }
        outcome
    }
}
