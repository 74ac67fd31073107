//! Redis hung and then killed while requests are in flight: clients get 503s, or 202 for a
//! placement the outage caught midway (never a 500, never a request hung past its bound), `/ready` turns false, and after Redis restarts with its data the same
//! relayer process serves again with every invariant intact.

mod support;

use std::time::{Duration, Instant};

use support::api::{Api, check_invariants};
use support::fixtures::{ADMIN_TOKEN, MARKETS, Order, address};
use support::load::{Load, LoadOutcome};
use support::process::RelayerProcess;
use support::redis::RedisServer;
use support::wait::{wait_for, wait_for_ok};

const CLIENTS: usize = 8;
const COLLATERAL: u64 = 10_000_000;
const SHARES: u64 = 1_000_000;
/// `redis.commandTimeoutMs` of the relayer under test.
const COMMAND_TIMEOUT_MS: u64 = 300;
/// No request may take longer: a placement makes a handful of store calls, each bounded.
const REQUEST_BOUND: Duration = Duration::from_secs(3);
/// Placements answered 201 that show traffic flowing, before the outage and after it.
const TRAFFIC: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_gives_503s_and_the_relayer_recovers_with_invariants_intact() {
    let mut redis = RedisServer::start();
    let relayer = RelayerProcess::start(&[
        ("RELAYER_REDIS_URL", redis.url()),
        ("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        (
            "RELAYER_REDIS__COMMAND_TIMEOUT_MS",
            COMMAND_TIMEOUT_MS.to_string(),
        ),
        // NB: a placement caught by the outage is answered 202 and carried on, rather than
        // waited for through the whole outage.
        ("RELAYER_LIMITS__PLACEMENT_WAIT_MS", "500".to_owned()),
    ]);
    let base = relayer.base.clone();
    let api = Api::default();
    let mut traders = Vec::new();
    for c in 0..CLIENTS {
        let user = address(100 + c);
        traders.push(api.trader(&base, &user).await);
        api.deposit(&base, &user, "collateral", COLLATERAL).await;
        for m in MARKETS {
            api.deposit(&base, &user, m, SHARES).await;
        }
    }
    assert_eq!(api.ready(&base).await, 200);

    let load = Load::start(
        &api,
        std::slice::from_ref(&base),
        &traders,
        "k",
        0x2545_f491_4f6c_dd1d,
    );

    // Traffic flows, then Redis hangs with every client's request somewhere in its sequence of
    // store calls, and dies.
    wait_for("traffic to flow", Duration::from_secs(10), async || {
        load.placed() >= TRAFFIC
    })
    .await;
    let before_kill = Instant::now();
    redis.freeze();
    // NB: this sleep is the scenario: Redis stays hung for two command timeouts, so that calls
    // in flight time out rather than fail fast.
    tokio::time::sleep(Duration::from_millis(2 * COMMAND_TIMEOUT_MS)).await;
    redis.kill();
    wait_for("/ready to turn 503", Duration::from_secs(5), async || {
        api.ready(&base).await == 503
    })
    .await;
    let ready_off_after = before_kill.elapsed();
    // The outage lasts a while under traffic (NB: this sleep is the scenario, not a wait).
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        api.ready(&base).await,
        503,
        "still not ready while Redis is down"
    );

    redis.restart();
    wait_for(
        "/ready to turn 200 again",
        Duration::from_secs(15),
        async || api.ready(&base).await == 200,
    )
    .await;
    // Traffic continues after the restart, then stops.
    let before_restart_traffic = load.placed();
    wait_for(
        "traffic to flow after the restart",
        Duration::from_secs(10),
        async || load.placed() >= before_restart_traffic + TRAFFIC,
    )
    .await;
    let LoadOutcome {
        mut orders,
        statuses,
        slowest,
        ..
    } = load.finish().await;
    let unexpected: Vec<_> = statuses
        .keys()
        .filter(|s| !matches!(s, 201 | 202 | 503))
        .collect();
    assert!(unexpected.is_empty(), "only 201, 202 and 503: {statuses:?}");
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "the outage was seen: {statuses:?}"
    );
    assert!(
        statuses.get(&201).copied().unwrap_or(0) > 100,
        "traffic flowed: {statuses:?}"
    );
    assert!(slowest < REQUEST_BOUND, "a request took {slowest:?}");
    eprintln!(
        "statuses {statuses:?}, slowest request {slowest:?}, /ready off {ready_off_after:?} after the kill"
    );

    // The same process serves again: a fresh placement succeeds.
    let fresh = Order::buy()
        .id("after")
        .market(MARKETS[0])
        .user(&traders[0].user_id)
        .price(100_000)
        .amount(1)
        .json();
    let (status, _) = api
        .place(&base, &traders[0], &fresh)
        .await
        .expect("answered");
    assert_eq!(status, 201);
    orders.push(("after".to_owned(), 0));

    // Sagas interrupted by the outage (answered 202) complete in the background once Redis is
    // back; after that, nothing is lost or created.
    wait_for_ok(
        "the invariants to hold",
        Duration::from_secs(20),
        async || {
            check_invariants(
                &api,
                &base,
                &traders,
                &orders,
                &MARKETS,
                u128::from(COLLATERAL) * CLIENTS as u128,
                u128::from(SHARES) * CLIENTS as u128,
            )
            .await
        },
    )
    .await;
    let log = relayer.log_text();
    assert!(!log.contains("panicked"), "the relayer panicked:\n{log}");
}
