//! A chaotic settlement endpoint on `127.0.0.1:0` ([`ChaosSettlement`]) for the chaos test:
//! each request, by a seeded RNG, settles and answers 200, answers 503 without settling, hangs
//! past the relayer's settlement timeout without settling, or settles and then hangs (the answer
//! comes too late); now and then a storm begins, during which every request hangs (half of them
//! settled), so a saga's retries all hang and its client hangs up.
//!
//! It is idempotent, as a real endpoint would be: a key is settled at most once, with the body
//! of its first settling request, and a repeat that is told to succeed answers 200 again. It
//! records every distinct body sent with each `Idempotency-Key`, so a test can tell whether one
//! key ever carried two different trades.
//!
//! Uses `axum` for the endpoint and `rand` (`StdRng`, seeded) for the choices; no other support
//! module.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// How often (in percent of requests) the endpoint misbehaves; the rest settle and answer 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Odds {
    /// Answers 503 without settling.
    pub unavailable: u32,
    /// Hangs past the timeout, nothing settled.
    pub hang: u32,
    /// Settles, then hangs past the timeout (the answer is lost).
    pub settle_then_hang: u32,
    /// How long a hang lasts before the (late) answer, in ms.
    pub hang_ms: Range<u64>,
    /// Chance in a thousand that a request begins a storm.
    pub storm_per_mille: u32,
    /// How long a storm lasts, in ms.
    pub storm_ms: Range<u64>,
}

impl Odds {
    /// Never misbehaves.
    pub fn calm() -> Self {
        Self {
            unavailable: 0,
            hang: 0,
            settle_then_hang: 0,
            hang_ms: 0..1,
            storm_per_mille: 0,
            storm_ms: 0..1,
        }
    }
}

/// What the endpoint did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decision {
    Settle,
    Unavailable,
    Hang,
    SettleThenHang,
}

#[derive(Debug)]
struct Inner {
    rng: StdRng,
    odds: Odds,
    /// Every distinct body sent with each key, in arrival order.
    bodies: BTreeMap<String, Vec<Value>>,
    /// Settled keys → the body they were settled with.
    settled: BTreeMap<String, Value>,
    /// How many requests got each decision.
    decisions: BTreeMap<Decision, u64>,
    /// Requests whose header and body keys differed or were missing.
    malformed: u64,
    /// Until when the current storm lasts.
    storm_until: Option<Instant>,
    /// Storms so far.
    storms: u64,
}

/// The running endpoint; its task is aborted when it drops.
pub struct ChaosSettlement {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChaosSettlement {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn settle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let header = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let key = body["idempotencyKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (decision, hang) = {
        let mut s = lock(&inner);
        if header.is_empty() || header != key {
            s.malformed += 1;
        }
        let seen = s.bodies.entry(key.clone()).or_default();
        if !seen.contains(&body) {
            seen.push(body.clone());
        }
        let odds = s.odds.clone();
        let now = Instant::now();
        if s.storm_until.is_none_or(|until| until < now)
            && s.rng.random_range(0..1_000u32) < odds.storm_per_mille
        {
            let lasts = s.rng.random_range(odds.storm_ms.clone());
            s.storm_until = Some(now + Duration::from_millis(lasts));
            s.storms += 1;
        }
        let storm = s.storm_until.is_some_and(|until| until >= now);
        let roll = s.rng.random_range(0..100u32);
        let decision = if storm {
            if roll < 50 {
                Decision::Hang
            } else {
                Decision::SettleThenHang
            }
        } else if roll < odds.unavailable {
            Decision::Unavailable
        } else if roll < odds.unavailable + odds.hang {
            Decision::Hang
        } else if roll < odds.unavailable + odds.hang + odds.settle_then_hang {
            Decision::SettleThenHang
        } else {
            Decision::Settle
        };
        let hang = if odds.hang_ms.is_empty() {
            0
        } else {
            s.rng.random_range(odds.hang_ms)
        };
        if matches!(decision, Decision::Settle | Decision::SettleThenHang) {
            s.settled.entry(key.clone()).or_insert(body);
        }
        *s.decisions.entry(decision).or_default() += 1;
        (decision, hang)
    };
    if matches!(decision, Decision::Hang | Decision::SettleThenHang) {
        // NB: this sleep is the scenario (an endpoint slower than the relayer's timeout).
        tokio::time::sleep(Duration::from_millis(hang)).await;
    }
    match decision {
        Decision::Settle | Decision::SettleThenHang => {
            (StatusCode::OK, Json(json!({"settled": key})))
        }
        Decision::Unavailable | Decision::Hang => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "unavailable"})),
        ),
    }
}

impl ChaosSettlement {
    /// Starts on a free loopback port, choosing with an RNG seeded with `seed`.
    pub async fn start(seed: u64, odds: Odds) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            rng: StdRng::seed_from_u64(seed),
            odds,
            bodies: BTreeMap::new(),
            settled: BTreeMap::new(),
            decisions: BTreeMap::new(),
            malformed: 0,
            storm_until: None,
            storms: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}/settle", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .route("/settle", post(settle))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner, task }
    }

    /// How later requests are treated.
    pub fn set_odds(&self, odds: Odds) {
        lock(&self.inner).odds = odds;
    }

    /// Settled keys → the body each was settled with.
    pub fn settled(&self) -> BTreeMap<String, Value> {
        lock(&self.inner).settled.clone()
    }

    /// Keys that were sent with more than one distinct body, with those bodies.
    pub fn keys_with_several_bodies(&self) -> BTreeMap<String, Vec<Value>> {
        lock(&self.inner)
            .bodies
            .iter()
            .filter(|(_, b)| b.len() > 1)
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect()
    }

    /// How many distinct keys were sent.
    pub fn keys_sent(&self) -> usize {
        lock(&self.inner).bodies.len()
    }

    /// How many requests got each decision.
    pub fn decisions(&self) -> BTreeMap<Decision, u64> {
        lock(&self.inner).decisions.clone()
    }

    /// Storms so far.
    pub fn storms(&self) -> u64 {
        lock(&self.inner).storms
    }

    /// Requests without matching header and body keys.
    pub fn malformed(&self) -> u64 {
        lock(&self.inner).malformed
    }
}
