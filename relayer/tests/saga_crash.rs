//! Crash recovery with real processes: two relayers share one Redis and one settlement
//! endpoint; relayer A aborts (`faultInjection.crashAtStep`) at a chosen step of an order saga
//! and relayer B, the survivor, finishes or compensates it from the durable saga log. Then:
//! collateral and shares are conserved, each trade's idempotency key was settled exactly once,
//! and no reservation is orphaned. The `cluster` tests run four of the crash points with both
//! relayers on a Redis Cluster (3 masters, 3 replicas).

mod support;

use std::time::Duration;

use serde_json::json;
use support::api::{Api, check_invariants, num, sagas};
use support::cluster::RedisCluster;
use support::fixtures::{ADMIN_TOKEN, Order, address};
use support::process::RelayerProcess;
use support::redis::RedisServer;
use support::settle::SettlementServer;
use support::wait::wait_for;

const MARKET: &str = "80002:1";
const SHARES: u64 = 100;
const COLLATERAL: u64 = 1_000_000;

/// The shared store: one Redis node, or a Redis Cluster of 3 masters and 3 replicas.
enum Shared {
    Node(RedisServer),
    Cluster(RedisCluster),
}

impl Shared {
    fn start(cluster: bool) -> Self {
        if cluster {
            Shared::Cluster(RedisCluster::start())
        } else {
            Shared::Node(RedisServer::start())
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Shared::Node(r) => vec![("RELAYER_REDIS_URL", r.url())],
            Shared::Cluster(c) => vec![
                ("RELAYER_REDIS_URL", c.seed_url()),
                ("RELAYER_REDIS__MODE", "cluster".to_owned()),
            ],
        }
    }
}

fn env(
    redis: &Shared,
    settlement: &SettlementServer,
    crash: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut env = redis.env();
    env.extend([
        ("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("RELAYER_SETTLEMENT__URL", settlement.url.clone()),
        ("RELAYER_SETTLEMENT__TIMEOUT_MS", "1000".to_owned()),
        ("RELAYER_SETTLEMENT__RETRY__MAX_RETRIES", "2".to_owned()),
        (
            "RELAYER_SETTLEMENT__RETRY__INITIAL_DELAY_MS",
            "10".to_owned(),
        ),
        ("RELAYER_SETTLEMENT__RETRY__MAX_DELAY_MS", "50".to_owned()),
        ("RELAYER_SAGA__LEASE_MS", "1000".to_owned()),
        ("RELAYER_SAGA__RECOVERY_INTERVAL_MS", "200".to_owned()),
    ]);
    if let Some(point) = crash {
        env.push(("RELAYER_FAULT_INJECTION__CRASH_AT_STEP", point.to_owned()));
    }
    env
}

/// What recovery must have done with the crashed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Finished forward: the trade settled once and balances moved.
    Finished {
        /// Requests the endpoint sees: 2 when the answer of the first one was lost.
        requests: usize,
    },
    /// Compensated: no settlement, balances and book as before the order.
    Compensated,
}

async fn crash_at(point: &str, expect: Expect) {
    crash_on(false, point, expect).await;
}

/// [`crash_at`] with the two relayers on a Redis Cluster: the saga log, its leases and the
/// recovery work the same across slots and masters.
async fn crash_on_a_cluster_at(point: &str, expect: Expect) {
    crash_on(true, point, expect).await;
}

async fn crash_on(cluster: bool, point: &str, expect: Expect) {
    let redis = Shared::start(cluster);
    let endpoint = SettlementServer::start().await;
    let mut a = RelayerProcess::start_ready(&env(&redis, &endpoint, Some(point)));
    let b = RelayerProcess::start_ready(&env(&redis, &endpoint, None));
    let api = Api::default();
    let (seller_id, buyer_id) = (address(1), address(2));
    let seller = api.trader(&b.base, &seller_id).await;
    let buyer = api.trader(&b.base, &buyer_id).await;
    api.deposit(&b.base, &seller_id, MARKET, SHARES).await;
    api.deposit(&b.base, &buyer_id, "collateral", COLLATERAL)
        .await;
    api.deposit(&b.base, &buyer_id, MARKET, SHARES).await;
    api.deposit(&b.base, &seller_id, "collateral", COLLATERAL)
        .await;
    let (status, body) = api
        .place(
            &b.base,
            &seller,
            &Order::sell()
                .id("ask")
                .market(MARKET)
                .user(&seller_id)
                .price(400_000)
                .amount(10)
                .json(),
        )
        .await
        .expect("B answers");
    assert_eq!(status, 201, "{body}");

    // A dies in the middle of the crossing order's saga.
    let crossing = Order::buy()
        .id("bid")
        .market(MARKET)
        .user(&buyer_id)
        .price(400_000)
        .amount(6)
        .json();
    let answer = api.place(&a.base, &buyer, &crossing).await;
    assert!(answer.is_err(), "A aborted before answering: {answer:?}");
    wait_for("A to be gone", Duration::from_secs(5), async || {
        api.ready(&a.base).await == 0
    })
    .await;
    let log = a.log_text();
    assert!(
        log.contains("faultInjection.crashAtStep: aborting") && log.contains(point),
        "A aborted at {point}:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    a.kill();

    // B takes the saga over once A's lease runs out.
    wait_for(
        "B to finish the saga",
        Duration::from_secs(20),
        async || sagas(&api, &b.base).await == json!([]),
    )
    .await;

    let (status, order) = api.get(&format!("{}/v2/orders/bid", b.base), &buyer).await;
    let (_, ask) = api.get(&format!("{}/v2/orders/ask", b.base), &seller).await;
    let (_, bb) = api
        .get(&format!("{}/v2/balances/{buyer_id}", b.base), &buyer)
        .await;
    let (_, sb) = api
        .get(&format!("{}/v2/balances/{seller_id}", b.base), &seller)
        .await;
    let settled = endpoint.settled();
    let requests = endpoint.requests();
    eprintln!("{point}: order {order}, settlement requests {requests:?}");
    assert_eq!(endpoint.malformed(), 0);
    match expect {
        Expect::Finished { requests: n } => {
            assert_eq!(requests.len(), n, "{requests:?}");
            assert_eq!(status, 200, "{order}");
            assert_eq!(order["status"], "filled", "{order}");
            // NB: the trade id is the placement's (relayer-made, unique) id and the fill's index.
            let settled: Vec<_> = settled.into_iter().collect();
            let [(key, times)] = settled.as_slice() else {
                panic!("one trade settled: {settled:?}");
            };
            assert_eq!(*times, 1, "settled exactly once: {key}");
            assert!(
                key.starts_with("trade:") && key.ends_with("#0") && !key.contains("bid"),
                "the key is the placement's trade id: {key}"
            );
            assert!(requests.iter().all(|k| k == key), "{requests:?}");
            // 6 shares at 0.4 = 2.4 → 3 collateral (rounded up per buy order).
            assert_eq!(
                num(&bb["collateral"]["available"]),
                u128::from(COLLATERAL) - 3
            );
            assert_eq!(
                num(&bb["shares"][MARKET]["available"]),
                u128::from(SHARES) + 6
            );
            assert_eq!(
                num(&sb["collateral"]["available"]),
                u128::from(COLLATERAL) + 3
            );
            assert_eq!(ask["filled"], "6", "{ask}");
        }
        Expect::Compensated => {
            assert!(settled.is_empty() && requests.is_empty(), "{requests:?}");
            if status == 200 {
                assert_eq!(order["status"], "cancelled", "{order}");
                assert_eq!(order["filled"], "0", "{order}");
            } else {
                assert_eq!(status, 404, "{order}");
            }
            assert_eq!(num(&bb["collateral"]["available"]), u128::from(COLLATERAL));
            assert_eq!(num(&bb["shares"][MARKET]["available"]), u128::from(SHARES));
            assert_eq!(num(&sb["collateral"]["available"]), u128::from(COLLATERAL));
            assert_eq!(ask["filled"], "0", "{ask}");
            assert_eq!(ask["status"], "open", "{ask}");
        }
    }
    // No orphaned reservation: the buyer has no open order, the seller only the ask's rest.
    assert_eq!(num(&bb["collateral"]["reserved"]), 0, "{bb}");
    assert!(
        bb["shares"][MARKET]["reserved"].is_null() || num(&bb["shares"][MARKET]["reserved"]) == 0,
        "{bb}"
    );
    let ask_rest = num(&ask["amount"]) - num(&ask["filled"]);
    assert_eq!(num(&sb["shares"][MARKET]["reserved"]), ask_rest, "{sb}");
    check_invariants(
        &api,
        &b.base,
        &[seller, buyer],
        // NB: a bid that never reached the book (404) has no side to pair the ask's (unfilled)
        // side with; both orders' fills were checked above.
        &if status == 404 {
            Vec::new()
        } else {
            vec![("ask".to_owned(), 0), ("bid".to_owned(), 1)]
        },
        &[MARKET],
        2 * u128::from(COLLATERAL),
        2 * u128::from(SHARES),
    )
    .await
    .expect("collateral and shares conserved");
    let outcome = match expect {
        Expect::Finished { .. } => "completed",
        Expect::Compensated => "compensated",
    };
    let recovered = api.metrics(&b.base).await.value(
        "foresight_saga_executions_total",
        &[("saga", "order"), ("outcome", outcome)],
    );
    assert!(
        recovered >= 1.0,
        "B counted the recovered saga: {recovered}"
    );
    assert!(!b.log_text().contains("panicked"), "{}", b.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_match_before_settlement_the_survivor_compensates() {
    crash_at("after:match", Expect::Compensated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_settlement_is_sent_the_survivor_settles_once_and_finishes() {
    crash_at("before:settle", Expect::Finished { requests: 1 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_settlement_the_survivor_resends_the_same_key_and_finishes() {
    crash_at("during:settle", Expect::Finished { requests: 2 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_settlement_the_survivor_finishes_without_settling_again() {
    crash_at("after:settle", Expect::Finished { requests: 1 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_reservation_the_survivor_releases_it() {
    crash_at("after:reserve", Expect::Compensated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_balance_update_the_survivor_finishes_without_settling_again() {
    crash_at("after:update", Expect::Finished { requests: 1 }).await;
}

mod cluster {
    use super::{Expect, crash_on_a_cluster_at};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_after_the_match_before_settlement_the_survivor_compensates() {
        crash_on_a_cluster_at("after:match", Expect::Compensated).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_during_settlement_the_survivor_resends_the_same_key_and_finishes() {
        crash_on_a_cluster_at("during:settle", Expect::Finished { requests: 2 }).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_after_the_reservation_the_survivor_releases_it() {
        crash_on_a_cluster_at("after:reserve", Expect::Compensated).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_after_the_balance_update_the_survivor_finishes_without_settling_again() {
        crash_on_a_cluster_at("after:update", Expect::Finished { requests: 1 }).await;
    }
}
