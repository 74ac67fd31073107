//! The rate limiter's own cost per request, in process: `GET /v2/depth` of an empty book sent
//! straight into the relayer's router (no sockets, no HTTP parsing), so what is left between
//! the scenarios is the limiter and nothing else. Companion to `ratelimit_bench` (over TCP, where
//! the machine's noise is larger than the limiter).
//!
//! Scenarios, interleaved in rounds (every other round reversed), each the median of its rounds:
//! - `off`: no limiter;
//! - `layer`: the limiter with no tier configured (its fixed cost: the layer and the caller's
//!   identity);
//! - `global`: one tier (adds a counter and the five response fields);
//! - `all`: the four tiers in memory, with the API key resolved for the per-user tier;
//! - `churn`: `all`, each request from a client IP never seen before, into a store of 10,000
//!   keys that fills within the first tenth of a run: from then on every request evicts a key.
//!
//! `cargo run --release -p relayer --example ratelimit_inprocess -- [requests per run] [rounds]
//! [scenarios, e.g. off,all]`
//!
//! One scenario alone (`-- 20000 1 all`) suits an instruction count, which the machine's noise
//! does not touch: `valgrind --tool=cachegrind` at two request counts, and the difference over
//! the difference in requests is instructions per request.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use relayer::AppState;
use relayer::clock::SystemClock;
use relayer::config::RelayerConfig;
use relayer::ratelimit::config::TierLimit;
use relayer::ratelimit::counters::{CounterStore, MemoryCounters};
use relayer::store::Store;
use support::median;
use tower::{Service, ServiceExt};

/// The relayer binary's allocator, so the relayer measured here is the one that ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SCENARIOS: [&str; 5] = ["off", "layer", "global", "all", "churn"];

fn config(scenario: &str) -> RelayerConfig {
    let mut config = RelayerConfig {
        admin_token: Some("bench-admin-token-0123456789".to_owned()),
        ..RelayerConfig::default()
    };
    // Limits far above what a run sends: this measures the cost, not the answers.
    let huge = |window_ms| {
        Some(TierLimit {
            window_ms,
            max_requests: 1_000_000_000,
        })
    };
    let limits = &mut config.rate_limit;
    limits.global = huge(1_000);
    limits.per_ip = None;
    limits.per_user = None;
    limits.per_endpoint.clear();
    match scenario {
        "layer" => limits.global = None,
        "all" | "churn" => {
            limits.per_ip = huge(60_000);
            limits.per_user = huge(60_000);
            if let Some(limit) = huge(60_000) {
                limits
                    .per_endpoint
                    .insert("GET /v2/depth".to_owned(), limit);
            }
        }
        _ => {}
    }
    config.log.filter = "error".to_owned();
    config
}

/// Mean ns per request over `n` requests through a fresh relayer for `scenario`.
async fn run(scenario: &str, n: u32) -> anyhow::Result<f64> {
    let counters: Option<Arc<dyn CounterStore>> = match scenario {
        "off" => None,
        "churn" => Some(Arc::new(MemoryCounters::new(10_000, Arc::new(SystemClock)))),
        _ => Some(Arc::new(MemoryCounters::new(
            100_000,
            Arc::new(SystemClock),
        ))),
    };
    let state = AppState::with_limiter(config(scenario), Store::memory(), counters)?;
    let user =
        relayer::domain::UserId::parse("userId", "0xa11ce00000000000000000000000000000000001")?;
    let (_, key) = state.exchange().issue_api_key(&user, 0).await?;
    let authorization = format!("Bearer {key}");
    let mut peer: SocketAddr = "127.0.0.1:40000".parse()?;
    let mut app = relayer::app(state).into_service::<Body>();
    let started = Instant::now();
    for i in 0..n {
        if scenario == "churn" {
            peer.set_ip(std::net::Ipv4Addr::from(0x0a00_0000_u32.wrapping_add(i)).into());
        }
        let mut request = Request::get("/v2/depth?marketKey=80002:1")
            .header("authorization", &authorization)
            .body(Body::empty())?;
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = app.ready().await?.call(request).await?;
        if !response.status().is_success() {
            bail!("{scenario}: answered {}", response.status());
        }
        axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e9 / f64::from(n))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u32 = support::arg(args.next(), 100_000, "requests per run")?;
    let rounds: usize = support::arg(args.next(), 9, "rounds")?;
    let scenarios = support::scenarios(&SCENARIOS, args.next())?;
    if scenarios.is_empty() || rounds == 0 {
        bail!("nothing to run: name at least one scenario and one round");
    }
    let mut results: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        let mut order = scenarios.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for scenario in order {
            results
                .entry(scenario)
                .or_default()
                .push(run(scenario, n).await?);
        }
    }
    let off = results.get("off").map(|r| median(r.clone()));
    println!(
        "GET /v2/depth (empty book) through the router in process, {n} requests per run, medians of {rounds} rounds:"
    );
    println!(
        "{:<8} {:>10} {:>16}",
        "scenario", "ns/req", "ns/req over off"
    );
    for scenario in scenarios {
        let ns = median(results[scenario].clone());
        let over = off.map_or_else(|| "-".to_owned(), |off| format!("{:.0}", ns - off));
        println!("{scenario:<8} {ns:>10.0} {over:>16}");
    }
    Ok(())
}
