//! Money safety of the order saga under the faults of issue 17, one test per numbered case
//! (case 3, chaos, lives in its own file): a retry after a compensated crash, a client that
//! hangs up, a reused order id after retention, a durable cancel, lease fencing of a paused
//! replica, per-user order ids and a claim taken before the log, and retention of the
//! in-memory store.
//!
//! Every test runs real `relayer` processes (support::process), on a private `redis-server`
//! (support::redis) where the case involves Redis, settling at a scriptable endpoint
//! (support::settle), and talks to them over HTTP only (support::api), so it states the
//! contract of the fix without reaching into the crate.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::api::{
    Api, Reply, Trader, active_sagas, balances, check_invariants, num, post, post_with, reply,
    wait_no_sagas,
};
use support::fixtures::{ADMIN_TOKEN, Order, address};
use support::process::{RelayerProcess, with};
use support::redis::RedisServer;
use support::settle::{Mode, SettlementServer};
use support::wait::{wait_for, wait_for_ok};

const MARKET: &str = "80002:1";
const SHARES: u64 = 100;
const COLLATERAL: u64 = 1_000_000;

/// The environment of a relayer: the shared Redis (or the in-memory store), the endpoint it
/// settles at (or the embedded ledger), short settlement retries, a 1 s lease found lapsed
/// within 200 ms, and an optional crash point.
fn env(
    redis: Option<&RedisServer>,
    settlement: Option<&SettlementServer>,
    crash: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("RELAYER_SETTLEMENT__TIMEOUT_MS", "1000".to_owned()),
        ("RELAYER_SETTLEMENT__RETRY__MAX_RETRIES", "2".to_owned()),
        (
            "RELAYER_SETTLEMENT__RETRY__INITIAL_DELAY_MS",
            "10".to_owned(),
        ),
        ("RELAYER_SETTLEMENT__RETRY__MAX_DELAY_MS", "50".to_owned()),
        ("RELAYER_SAGA__LEASE_MS", "1000".to_owned()),
        ("RELAYER_SAGA__RECOVERY_INTERVAL_MS", "200".to_owned()),
    ];
    if let Some(redis) = redis {
        env.push(("RELAYER_REDIS_URL", redis.url()));
    }
    if let Some(settlement) = settlement {
        env.push(("RELAYER_SETTLEMENT__URL", settlement.url.clone()));
    }
    if let Some(point) = crash {
        env.push(("RELAYER_FAULT_INJECTION__CRASH_AT_STEP", point.to_owned()));
    }
    env
}

/// `DELETE /v2/orders/{id}` as `trader`.
async fn cancel(api: &Api, base: &str, trader: &Trader, id: &str) -> Reply {
    let resp = api
        .http
        .delete(format!("{base}/v2/orders/{id}"))
        .bearer_auth(&trader.api_key)
        .send()
        .await
        .expect("the relayer answers");
    reply(resp).await
}

/// Collateral the trader has reserved.
async fn reserved_collateral(api: &Api, base: &str, trader: &Trader) -> u128 {
    num(&balances(api, base, trader).await["collateral"]["reserved"])
}

/// The trader's open orders in [`MARKET`], as the public book lists them.
async fn open_orders(api: &Api, base: &str, trader: &Trader) -> Vec<Value> {
    let resp = api
        .http
        .get(format!(
            "{base}/orderbook/orders?marketKey={MARKET}&userId={}",
            trader.user_id
        ))
        .send()
        .await
        .expect("open orders");
    assert_eq!(resp.status(), 200, "open orders");
    let body: Value = resp.json().await.expect("json");
    body["orders"].as_array().cloned().unwrap_or_default()
}

/// Waits until `relayer` stopped answering after aborting at `point`, then reaps it.
async fn wait_aborted(api: &Api, relayer: &mut RelayerProcess, point: &str) {
    wait_for(
        "the relayer to be gone",
        Duration::from_secs(5),
        async || api.ready(&relayer.base).await == 0,
    )
    .await;
    let log = relayer.log_text();
    assert!(
        log.contains("faultInjection.crashAtStep: aborting") && log.contains(point),
        "the relayer aborted at {point}:\n{log}"
    );
    relayer.kill();
}

/// Traders with API keys, each holding [`COLLATERAL`] and [`SHARES`] of [`MARKET`].
async fn funded(api: &Api, base: &str, users: &[usize]) -> Vec<Trader> {
    let mut traders = Vec::new();
    for &n in users {
        let id = address(n);
        let trader = api.trader(base, &id).await;
        api.deposit(base, &id, "collateral", COLLATERAL).await;
        api.deposit(base, &id, MARKET, SHARES).await;
        traders.push(trader);
    }
    traders
}

/// A sell of `amount` at `price` by `trader`, as an HTTP body.
fn ask(id: &str, trader: &Trader, price: u64, amount: u64) -> Value {
    let order = Order::sell().id(id).market(MARKET).user(&trader.user_id);
    order.price(price).amount(amount).json()
}

/// A buy of `amount` at `price` by `trader`, as an HTTP body.
fn bid(id: &str, trader: &Trader, price: u64, amount: u64) -> Value {
    let order = Order::buy().id(id).market(MARKET).user(&trader.user_id);
    order.price(price).amount(amount).json()
}

/// Case 1: relayer A dies right after reserving a buy's collateral and B's recovery
/// compensates it. The client's retry of the same orderId replays that outcome (409
/// `order_not_placed`) instead of placing an order with nothing reserved; a new orderId
/// places normally, with its reservation.
///
/// On the code before the fix: the retry answered 201 (not replayed) and the order rested with
/// 0 collateral reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_compensated_crash_replays_order_not_placed_and_trades_nothing() {
    let redis = RedisServer::start();
    let endpoint = SettlementServer::start().await;
    let mut a =
        RelayerProcess::start_ready(&env(Some(&redis), Some(&endpoint), Some("after:reserve")));
    let b = RelayerProcess::start_ready(&env(Some(&redis), Some(&endpoint), None));
    let api = Api::default();
    let buyer = funded(&api, &b.base, &[2]).await.remove(0);
    // 6 shares at 0.5: 3 collateral reserved while it rests.
    let order = bid("bid", &buyer, 500_000, 6);

    let answer = post_with(&api.http, &a.base, &buyer, &order).await;
    assert!(answer.is_err(), "A aborted before answering: {answer:?}");
    wait_aborted(&api, &mut a, "after:reserve").await;
    wait_no_sagas(&api, &b.base, Duration::from_secs(20)).await;
    assert_eq!(reserved_collateral(&api, &b.base, &buyer).await, 0);

    let retry = post(&api, &b.base, &buyer, &order).await;
    let reserved = reserved_collateral(&api, &b.base, &buyer).await;
    assert!(
        retry.status == 409 && retry.code() == "order_not_placed" && retry.replayed,
        "the retry replays the compensated outcome (409 order_not_placed, replayed): {retry:?}, \
         collateral reserved {reserved}"
    );
    assert_eq!(reserved, 0, "nothing reserved after the retry");
    let resting = open_orders(&api, &b.base, &buyer).await;
    assert!(
        resting.is_empty(),
        "the buyer has no order in the book: {resting:?}"
    );
    assert!(endpoint.requests().is_empty(), "nothing traded");

    // The same order under a new orderId is placed, with its reservation.
    let fresh = post(&api, &b.base, &buyer, &bid("bid-2", &buyer, 500_000, 6)).await;
    assert_eq!(fresh.status, 201, "{fresh:?}");
    assert!(!fresh.replayed, "{fresh:?}");
    assert_eq!(fresh.body["order"]["status"], "open", "{fresh:?}");
    assert_eq!(reserved_collateral(&api, &b.base, &buyer).await, 3);
    let resting = open_orders(&api, &b.base, &buyer).await;
    assert_eq!(resting.len(), 1, "{resting:?}");
    assert_eq!(resting[0]["orderId"], "bid-2", "{resting:?}");
}

/// The relayer of case 2: in-memory store, settling at `endpoint`, one 5 s attempt per trade
/// (the endpoint is slow, not failing), plus `extra`.
fn slow_settlement_env(
    endpoint: &SettlementServer,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = env(None, Some(endpoint), None);
    env = with(env, "RELAYER_SETTLEMENT__TIMEOUT_MS", "5000");
    env = with(env, "RELAYER_SETTLEMENT__RETRY__MAX_RETRIES", "0");
    for (k, v) in extra {
        env = with(env, k, v);
    }
    env
}

/// After a placement of `bid` (6 at 0.5 against the ask of 6 at 0.4) that the client did not
/// see end: the saga ends by itself, the trade is settled once, nothing stays reserved, the
/// books pair up, and a retry replays the 201.
async fn the_saga_completes_on_its_own(
    api: &Api,
    relayer: &RelayerProcess,
    endpoint: &SettlementServer,
    traders: &[Trader],
    order: &Value,
) {
    let base = &relayer.base;
    wait_for_ok(
        "the saga to end (foresight_saga_active 0)",
        Duration::from_secs(15),
        async || match active_sagas(api, base).await {
            0.0 => Ok(()),
            n => Err(format!("foresight_saga_active {n}")),
        },
    )
    .await;
    let (seller, buyer) = (&traders[0], &traders[1]);
    let settled = endpoint.settled();
    assert_eq!(settled.len(), 1, "one trade settled: {settled:?}");
    assert!(settled.values().all(|n| *n == 1), "{settled:?}");
    assert_eq!(
        reserved_collateral(api, base, buyer).await,
        0,
        "the filled buy keeps nothing reserved"
    );
    let (status, o) = api.get(&format!("{base}/v2/orders/bid"), buyer).await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(o["status"], "filled", "{o}");
    check_invariants(
        api,
        base,
        traders,
        &[("ask".to_owned(), 0), ("bid".to_owned(), 1)],
        &[MARKET],
        2 * u128::from(COLLATERAL),
        2 * u128::from(SHARES),
    )
    .await
    .expect("collateral and shares conserved");
    assert_eq!(
        num(&balances(api, base, seller).await["shares"][MARKET]["reserved"]),
        0
    );

    let retry = post(api, base, buyer, order).await;
    assert_eq!(
        retry.status, 201,
        "the retry replays the placement: {retry:?}"
    );
    assert!(retry.replayed, "{retry:?}");
    assert_eq!(endpoint.requests().len(), 1, "the retry traded nothing");
    assert!(
        !relayer.log_text().contains("panicked"),
        "{}",
        relayer.log_text()
    );
}

/// Case 2: the settlement endpoint takes 2.5 s and the client gives up after 300 ms and hangs
/// up. The saga, owned by the relayer, still completes: the active gauge returns to 0, the
/// trade is settled once, nothing stays reserved, and a retry replays the 201.
///
/// NB: `limits.placementWaitMs` is left at its default (5000 ms, longer than the settlement),
/// so this test also runs against a relayer that does not know the key.
///
/// On the code before the fix: timed out after 15s waiting for the saga to end:
/// foresight_saga_active 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_does_not_stop_its_saga() {
    let endpoint = SettlementServer::start().await;
    endpoint.set_mode(Mode::Delay(2_500));
    let relayer = RelayerProcess::start_ready(&slow_settlement_env(&endpoint, &[]));
    let api = Api::default();
    let traders = funded(&api, &relayer.base, &[1, 2]).await;
    let (seller, buyer) = (&traders[0], &traders[1]);
    let rest = post(&api, &relayer.base, seller, &ask("ask", seller, 400_000, 6)).await;
    assert_eq!(rest.status, 201, "{rest:?}");

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("http client");
    let order = bid("bid", buyer, 500_000, 6);
    let answer = post_with(&impatient, &relayer.base, buyer, &order).await;
    assert!(
        answer.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the client gave up before the settlement answered: {answer:?}"
    );
    the_saga_completes_on_its_own(&api, &relayer, &endpoint, &traders, &order).await;
}

/// Case 2, the server's own timeout: `limits.requestTimeoutMs` (1 s) is shorter than the
/// settlement (3 s). The placement waits `limits.placementWaitMs` (500 ms), answers 202 with
/// the order id and `pending` state, and the saga completes afterwards.
///
/// On the code before the fix: the relayer refused to start (unknown field
/// `limits.placementWaitMs`); without that key, the placement answered 503 `timeout` after 1 s,
/// the saga was dropped (gauge 1, 3 collateral reserved, nothing settled) and the retry
/// answered 409 placement_in_progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_slower_than_the_request_timeout_answers_202_and_completes() {
    let endpoint = SettlementServer::start().await;
    endpoint.set_mode(Mode::Delay(3_000));
    let relayer = RelayerProcess::start_ready(&slow_settlement_env(
        &endpoint,
        &[
            ("RELAYER_LIMITS__REQUEST_TIMEOUT_MS", "1000"),
            ("RELAYER_LIMITS__PLACEMENT_WAIT_MS", "500"),
        ],
    ));
    let api = Api::default();
    let traders = funded(&api, &relayer.base, &[1, 2]).await;
    let (seller, buyer) = (&traders[0], &traders[1]);
    let rest = post(&api, &relayer.base, seller, &ask("ask", seller, 400_000, 6)).await;
    assert_eq!(rest.status, 201, "{rest:?}");

    let order = bid("bid", buyer, 500_000, 6);
    let started = Instant::now();
    let answer = post(&api, &relayer.base, buyer, &order).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 202, "pending, not a timeout: {answer:?}");
    assert_eq!(
        (&answer.body["orderId"], &answer.body["state"]),
        (&json!("bid"), &json!("pending")),
        "{answer:?}"
    );
    assert_eq!(
        answer.location.as_deref(),
        Some("/v2/orders/bid"),
        "{answer:?}"
    );
    assert!(
        took < Duration::from_millis(1_000),
        "answered within the request timeout: {took:?}"
    );
    the_saga_completes_on_its_own(&api, &relayer, &endpoint, &traders, &order).await;
}

/// Case 4: with a 1 s retention, taker "t" trades, is forgotten, and the same user places "t"
/// again (same body) against another seller. The second trade gets keys of its own: the
/// endpoint never sees one idempotency key with two different bodies, and the second trade is
/// actually settled.
///
/// On the code before the fix: the key `trade:t#0` was sent with 2 different bodies (the
/// second trade was "settled" by the endpoint's cached answer for the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_id_reused_after_retention_gets_new_settlement_keys() {
    let redis = RedisServer::start();
    let endpoint = SettlementServer::start().await;
    let relayer = RelayerProcess::start_ready(&with(
        env(Some(&redis), Some(&endpoint), None),
        "RELAYER_REDIS__ORDER_RETENTION_SECONDS",
        "1",
    ));
    let base = &relayer.base;
    let api = Api::default();
    let traders = funded(&api, base, &[1, 2, 3]).await;
    let (first_seller, second_seller, buyer) = (&traders[0], &traders[1], &traders[2]);
    let taker = bid("t", buyer, 500_000, 2);

    let m1 = post(
        &api,
        base,
        first_seller,
        &ask("m1", first_seller, 400_000, 2),
    )
    .await;
    assert_eq!(m1.status, 201, "{m1:?}");
    let first = post(&api, base, buyer, &taker).await;
    assert_eq!(first.status, 201, "{first:?}");
    let first_trade = first.body["fills"][0]["tradeId"]
        .as_str()
        .expect("the first placement traded")
        .to_owned();
    wait_for(
        "the taker to be forgotten (GET 404)",
        Duration::from_secs(15),
        async || api.get(&format!("{base}/v2/orders/t"), buyer).await.0 == 404,
    )
    .await;

    let m2 = post(
        &api,
        base,
        second_seller,
        &ask("m2", second_seller, 450_000, 2),
    )
    .await;
    assert_eq!(m2.status, 201, "{m2:?}");
    let second = post(&api, base, buyer, &taker).await;
    assert_eq!(second.status, 201, "{second:?}");
    assert!(
        !second.replayed,
        "a new placement, not a replay: {second:?}"
    );

    let bodies = endpoint.bodies();
    for (key, sent) in &bodies {
        assert_eq!(
            sent.len(),
            1,
            "the key {key} was sent with {} different bodies: {sent:?}",
            sent.len()
        );
    }
    let second_trade = second.body["fills"][0]["tradeId"]
        .as_str()
        .expect("the second placement traded")
        .to_owned();
    assert_ne!(first_trade, second_trade, "trade ids are never reused");
    let key = format!("trade:{second_trade}");
    assert_eq!(
        endpoint.settled().get(&key),
        Some(&1),
        "{:?}",
        endpoint.settled()
    );
    assert_eq!(
        bodies[&key][0]["seller"], second_seller.user_id,
        "the key settled the second trade: {bodies:?}"
    );
    let (status, o) = api
        .get(&format!("{base}/v2/orders/m2"), second_seller)
        .await;
    assert_eq!((status, &o["status"]), (200, &json!("filled")), "{o}");
    assert_eq!(endpoint.settled().len(), 2, "two trades, two keys");
}

/// The buyer's resting order of case 5: 10 at 0.5, 5 collateral reserved.
const RESTING_RESERVED: u128 = 5;

/// Waits until the buyer's order "rest" and its reservation agree for good: cancelled with
/// nothing reserved. (An order still open with its full reservation is also consistent; the
/// client then cancels again, as it would after a failed cancel.)
async fn wait_cancel_recovered(api: &Api, base: &str, buyer: &Trader) {
    let url = format!("{base}/v2/orders/rest");
    let deadline = Duration::from_secs(15);
    let state = wait_for_ok("the cancel to be recovered", deadline, async || {
        let (status, o) = api.get(&url, buyer).await;
        let reserved = reserved_collateral(api, base, buyer).await;
        match (status, o["status"].as_str(), reserved) {
            (200, Some("cancelled"), 0) => Ok("cancelled"),
            (200, Some("open"), RESTING_RESERVED) => Ok("open"),
            _ => Err(format!("order {status} {o}, reserved {reserved}")),
        }
    })
    .await;
    if state == "open" {
        let again = cancel(api, base, buyer, "rest").await;
        assert!(matches!(again.status, 200 | 409), "{again:?}");
        wait_for_ok("the second cancel", deadline, async || {
            let (_, o) = api.get(&url, buyer).await;
            let reserved = reserved_collateral(api, base, buyer).await;
            if o["status"] == "cancelled" && reserved == 0 {
                Ok(())
            } else {
                Err(format!("order {o}, reserved {reserved}"))
            }
        })
        .await;
    }
    assert!(open_orders(api, base, buyer).await.is_empty());
}

/// Case 5, the bug as it is: Redis refuses writes to account keys (an ACL that allows every
/// other key) while the buyer cancels a resting order, so the book changes but the release
/// cannot be written; the relayer is SIGKILLed, the ACL lifted, and a new relayer starts on
/// the same Redis. The cancel is recovered: the order is cancelled and nothing stays reserved.
///
/// On the code before the fix: timed out waiting for the cancel to be recovered: order 200
/// cancelled, reserved 5 (the release lived only in the killed process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_whose_release_failed_is_recovered_after_a_kill() {
    let redis = RedisServer::start();
    let relayer_env = env(Some(&redis), None, None);
    let mut a = RelayerProcess::start_ready(&relayer_env);
    let api = Api::default();
    let buyer = funded(&api, &a.base, &[2]).await.remove(0);
    let rest = post(&api, &a.base, &buyer, &bid("rest", &buyer, 500_000, 10)).await;
    assert_eq!(rest.status, 201, "{rest:?}");
    assert_eq!(
        reserved_collateral(&api, &a.base, &buyer).await,
        RESTING_RESERVED
    );

    // Reads of every key, writes of every key but `foresight:{u:…}`, the accounts.
    let acl = [
        "ACL",
        "SETUSER",
        "default",
        "resetkeys",
        "%R~*",
        "~foresight:{[^u]*",
    ];
    assert_eq!(redis.cli(&acl).as_deref().map(str::trim), Some("OK"));
    let denied = redis.cli(&["SET", &format!("foresight:{{u:{}}}:x", buyer.user_id), "1"]);
    assert!(
        denied.as_deref().is_some_and(|out| out.contains("NOPERM")),
        "the ACL denies account writes: {denied:?}"
    );
    let answer = cancel(&api, &a.base, &buyer, "rest").await;
    eprintln!("the cancel while account writes are refused: {answer:?}");
    assert!(
        matches!(answer.status, 200 | 202 | 503),
        "a failed release is a 503 or a pending cancel, never a 500: {answer:?}"
    );
    a.kill();
    let lifted = redis.cli(&["ACL", "SETUSER", "default", "allkeys"]);
    assert_eq!(lifted.as_deref().map(str::trim), Some("OK"));

    let b = RelayerProcess::start_ready(&relayer_env);
    wait_cancel_recovered(&api, &b.base, &buyer).await;
    wait_no_sagas(&api, &b.base, Duration::from_secs(10)).await;
}

/// Case 5 with the crash point of the fix: relayer A aborts right after the cancel changed the
/// book (`after:cancel`); B, on the same Redis, recovers it: the order is cancelled and
/// nothing stays reserved.
///
/// On the code before the fix: A refused to start: faultInjection.crashAtStep must be
/// before:<step>, after:<step> or during:settle (no `after:cancel`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_after_the_cancel_changed_the_book_leaves_nothing_reserved() {
    let redis = RedisServer::start();
    let mut a = RelayerProcess::start_ready(&env(Some(&redis), None, Some("after:cancel")));
    let b = RelayerProcess::start_ready(&env(Some(&redis), None, None));
    let api = Api::default();
    let buyer = funded(&api, &b.base, &[2]).await.remove(0);
    let rest = post(&api, &b.base, &buyer, &bid("rest", &buyer, 500_000, 10)).await;
    assert_eq!(rest.status, 201, "{rest:?}");

    let answer = api
        .http
        .delete(format!("{}/v2/orders/rest", a.base))
        .bearer_auth(&buyer.api_key)
        .send()
        .await;
    assert!(answer.is_err(), "A aborted before answering: {answer:?}");
    wait_aborted(&api, &mut a, "after:cancel").await;
    let (status, o) = api.get(&format!("{}/v2/orders/rest", b.base), &buyer).await;
    assert_eq!(
        (status, &o["status"]),
        (200, &json!("cancelled")),
        "A changed the book: {o}"
    );
    wait_cancel_recovered(&api, &b.base, &buyer).await;
    wait_no_sagas(&api, &b.base, Duration::from_secs(10)).await;
}

/// Case 6: relayers A and B on one Redis, each settling at its own endpoint (EA hangs, EB
/// settles). A takes a buy that crosses two asks and sends the first trade to EA; A is then
/// paused (SIGSTOP) until B has taken the saga over and finished it through EB. Once A
/// resumes (SIGCONT), its lease has lapsed: EA receives no further request for the saga, each
/// trade was settled once, and balances are conserved.
///
/// On the code before the fix: after SIGCONT, A resent `trade:bid#0` to EA (requests
/// `[trade:bid#0, trade:bid#0]` after `[trade:bid#0]`) and wrote the finished saga back into the
/// log as its own, running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_whose_lease_lapsed_settles_nothing_more() {
    let redis = RedisServer::start();
    let (ea, eb) = (
        SettlementServer::start().await,
        SettlementServer::start().await,
    );
    ea.set_mode(Mode::Hang);
    let slow = |endpoint| {
        let env = env(Some(&redis), Some(endpoint), None);
        // NB: one attempt must outlast the time the test needs to see it and pause A.
        let env = with(env, "RELAYER_SETTLEMENT__TIMEOUT_MS", "2000");
        with(env, "RELAYER_SETTLEMENT__RETRY__MAX_RETRIES", "1")
    };
    let a = RelayerProcess::start_ready(&slow(&ea));
    let b = RelayerProcess::start_ready(&slow(&eb));
    let api = Api::default();
    let traders = funded(&api, &b.base, &[1, 2, 3]).await;
    let (s1, s2, buyer) = (&traders[0], &traders[1], &traders[2]);
    for (id, seller, price) in [("m1", s1, 400_000), ("m2", s2, 410_000)] {
        let r = post(&api, &b.base, seller, &ask(id, seller, price, 2)).await;
        assert_eq!(r.status, 201, "{r:?}");
    }

    let order = bid("bid", buyer, 500_000, 4);
    let (client, a_base, taker) = (api.http.clone(), a.base.clone(), buyer.clone());
    let placing = tokio::spawn(async move { post_with(&client, &a_base, &taker, &order).await });
    wait_for(
        "A to send the first trade to EA",
        Duration::from_secs(10),
        async || !ea.requests().is_empty(),
    )
    .await;
    a.signal("STOP");
    let stopped = Instant::now();
    wait_no_sagas(&api, &b.base, Duration::from_secs(20)).await;
    // NB: the scenario, not a wait: A stays paused for more than two leases in all.
    let paused = Duration::from_millis(2_500);
    tokio::time::sleep(paused.saturating_sub(stopped.elapsed())).await;
    let (status, o) = api.get(&format!("{}/v2/orders/bid", b.base), buyer).await;
    assert_eq!(
        (status, &o["filled"]),
        (200, &json!("4")),
        "B finished the saga: {o}"
    );

    let sent_to_ea = ea.requests();
    a.signal("CONT");
    // NB: an observation window, not a wait for a condition: A's pending settlement attempt
    // times out at once on resuming, and a retry or the next trade would follow within ms.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        ea.requests(),
        sent_to_ea,
        "A sent no settlement request after its lease lapsed"
    );
    let settled = eb.settled();
    assert_eq!(settled.len(), 2, "two trades settled at EB: {settled:?}");
    assert!(settled.values().all(|n| *n == 1), "{settled:?}");
    assert!(ea.settled().is_empty(), "EA hangs and settles nothing");
    for (key, sent) in eb.bodies() {
        assert_eq!(sent.len(), 1, "{key} sent with one body: {sent:?}");
    }
    check_invariants(
        &api,
        &b.base,
        &traders,
        &[
            ("m1".to_owned(), 0),
            ("m2".to_owned(), 1),
            ("bid".to_owned(), 2),
        ],
        &[MARKET],
        3 * u128::from(COLLATERAL),
        3 * u128::from(SHARES),
    )
    .await
    .expect("collateral and shares conserved");
    assert_eq!(reserved_collateral(&api, &b.base, buyer).await, 0);
    wait_no_sagas(&api, &b.base, Duration::from_secs(5)).await;
    placing.abort();
}

/// Case 7 (a): user B places orderId "o-1", then user A places "o-1" too: both are placed and
/// each owner reads its own order.
///
/// On the code before the fix: A's placement answered 409 order_id_conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_may_use_the_same_order_id() {
    let redis = RedisServer::start();
    let relayer = RelayerProcess::start_ready(&env(Some(&redis), None, None));
    let base = &relayer.base;
    let api = Api::default();
    let traders = funded(&api, base, &[1, 2]).await;
    let (user_a, user_b) = (&traders[0], &traders[1]);

    let b_order = post(&api, base, user_b, &bid("o-1", user_b, 300_000, 2)).await;
    assert_eq!(b_order.status, 201, "{b_order:?}");
    let a_order = post(&api, base, user_a, &ask("o-1", user_a, 700_000, 3)).await;
    assert_eq!(a_order.status, 201, "A's o-1 is A's own: {a_order:?}");
    assert!(!a_order.replayed, "{a_order:?}");

    let (status, a_view) = api.get(&format!("{base}/v2/orders/o-1"), user_a).await;
    assert_eq!(status, 200, "{a_view}");
    assert_eq!(
        (&a_view["side"], &a_view["price"], &a_view["userId"]),
        (&json!("sell"), &json!("700000"), &json!(user_a.user_id)),
        "{a_view}"
    );
    let (status, b_view) = api.get(&format!("{base}/v2/orders/o-1"), user_b).await;
    assert_eq!(status, 200, "{b_view}");
    assert_eq!(
        (&b_view["side"], &b_view["price"], &b_view["userId"]),
        (&json!("buy"), &json!("300000"), &json!(user_b.user_id)),
        "{b_view}"
    );
    // Each retry replays its own owner's placement.
    let again = post(&api, base, user_b, &bid("o-1", user_b, 300_000, 2)).await;
    assert_eq!((again.status, again.replayed), (201, true), "{again:?}");
    assert_eq!(again.body["order"]["side"], "buy", "{again:?}");
}

/// Case 7 (b): relayer A dies right after validating a buy (the claim of its orderId taken);
/// B, alive on the same Redis, recovers the log entry. The retry on B is a final answer (409
/// `order_not_placed`), not `placement_in_progress` for ever, and nothing is reserved.
///
/// On the code before the fix: the retry answered 409 placement_in_progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_by_a_crash_after_validate_is_recovered() {
    let redis = RedisServer::start();
    let mut a = RelayerProcess::start_ready(&env(Some(&redis), None, Some("after:validate")));
    let b = RelayerProcess::start_ready(&env(Some(&redis), None, None));
    let api = Api::default();
    let buyer = funded(&api, &b.base, &[2]).await.remove(0);
    let order = bid("bid", &buyer, 500_000, 6);

    let answer = post_with(&api.http, &a.base, &buyer, &order).await;
    assert!(answer.is_err(), "A aborted before answering: {answer:?}");
    wait_aborted(&api, &mut a, "after:validate").await;
    wait_no_sagas(&api, &b.base, Duration::from_secs(20)).await;

    let retry = post(&api, &b.base, &buyer, &order).await;
    assert_ne!(
        retry.code(),
        "placement_in_progress",
        "the claim left by the crash is not in progress for ever: {retry:?}"
    );
    assert!(
        retry.status == 409 && retry.code() == "order_not_placed" && retry.replayed,
        "the retry gets the recovered outcome (409 order_not_placed, replayed): {retry:?}"
    );
    assert_eq!(reserved_collateral(&api, &b.base, &buyer).await, 0);
    assert!(open_orders(&api, &b.base, &buyer).await.is_empty());
}

/// Case 8: an in-memory relayer with a 1 s retention forgets a filled order (both sides) and
/// a cancelled one: `GET /v2/orders/{id}` answers 404 once the retention has passed.
///
/// On the code before the fix: timed out waiting for the finished orders to be forgotten: they
/// still answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_store_forgets_finished_orders_after_retention() {
    let relayer = RelayerProcess::start_ready(&with(
        env(None, None, None),
        "RELAYER_REDIS__ORDER_RETENTION_SECONDS",
        "1",
    ));
    let base = &relayer.base;
    let api = Api::default();
    let traders = funded(&api, base, &[1, 2]).await;
    let (seller, buyer) = (&traders[0], &traders[1]);
    let placed = [
        post(&api, base, seller, &ask("ask", seller, 400_000, 1)).await,
        post(&api, base, buyer, &bid("bid", buyer, 500_000, 1)).await,
        post(&api, base, buyer, &bid("rest", buyer, 100_000, 1)).await,
    ];
    assert!(placed.iter().all(|r| r.status == 201), "{placed:?}");
    let cancelled = cancel(&api, base, buyer, "rest").await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    let finished = [
        ("ask", seller, "filled"),
        ("bid", buyer, "filled"),
        ("rest", buyer, "cancelled"),
    ];
    for (id, owner, status) in finished {
        let (code, o) = api.get(&format!("{base}/v2/orders/{id}"), owner).await;
        assert_eq!((code, &o["status"]), (200, &json!(status)), "{id}: {o}");
    }
    wait_for_ok(
        "the finished orders to be forgotten",
        Duration::from_secs(15),
        async || {
            let mut kept = Vec::new();
            for (id, owner, _) in finished {
                let (code, _) = api.get(&format!("{base}/v2/orders/{id}"), owner).await;
                if code != 404 {
                    kept.push(format!("{id}: {code}"));
                }
            }
            if kept.is_empty() {
                Ok(())
            } else {
                Err(kept.join(", "))
            }
        },
    )
    .await;
    // Forgetting an order does not touch balances.
    let b = balances(&api, base, buyer).await;
    assert_eq!(num(&b["collateral"]["reserved"]), 0, "{b}");
    assert_eq!(
        num(&b["shares"][MARKET]["available"]),
        u128::from(SHARES) + 1,
        "{b}"
    );
}

/// A placement's own saga and a cancel of its resting remainder overlap: the buy rests partly
/// filled while its settlement hangs, its owner cancels it (releasing what the rest held), and
/// then settlement refuses, so the saga undoes the match. The undo releases only what the
/// placement's own fill held: the buyer ends with nothing reserved and every unit of
/// collateral, the maker's ask is back in the book, and no saga needs a person.
///
/// On the code before the fix: the undo released the whole reservation a second time; the
/// release was refused and the saga parked `manual`, with the fill's 2 collateral locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_its_own_placement_then_an_undo_releases_each_unit_once() {
    let endpoint = SettlementServer::start().await;
    let env = env(None, Some(&endpoint), None);
    let env = with(env, "RELAYER_SETTLEMENT__RETRY__MAX_RETRIES", "0");
    let env = with(env, "RELAYER_SETTLEMENT__TIMEOUT_MS", "5000");
    let env = with(env, "RELAYER_LIMITS__PLACEMENT_WAIT_MS", "300");
    let relayer = RelayerProcess::start_ready(&env);
    let base = &relayer.base;
    let api = Api::default();
    let traders = funded(&api, base, &[1, 2]).await;
    let (seller, buyer) = (&traders[0], &traders[1]);
    let r = post(&api, base, seller, &ask("m", seller, 500_000, 4)).await;
    assert_eq!(r.status, 201, "{r:?}");

    // 10 at 0.5 reserves 5; the fill of 4 holds 2 of it; 6 rest. Settlement answers 503
    // after a while.
    endpoint.script(&[Mode::FailAfter(1_500, 503)]);
    let placed = post(&api, base, buyer, &bid("t", buyer, 500_000, 10)).await;
    assert_eq!(placed.status, 202, "still settling: {placed:?}");
    wait_for(
        "the remainder to rest",
        Duration::from_secs(5),
        async || {
            let (status, o) = api.get(&format!("{base}/v2/orders/t"), buyer).await;
            status == 200 && o["remaining"] == json!("6")
        },
    )
    .await;
    let cancelled = cancel(&api, base, buyer, "t").await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");

    wait_no_sagas(&api, base, Duration::from_secs(10)).await;
    let b = balances(&api, base, buyer).await;
    assert_eq!(num(&b["collateral"]["reserved"]), 0, "{b}");
    assert_eq!(
        num(&b["collateral"]["available"]),
        u128::from(COLLATERAL),
        "{b}"
    );
    let (status, m) = api.get(&format!("{base}/v2/orders/m"), seller).await;
    assert_eq!(
        (status, &m["status"], &m["remaining"]),
        (200, &json!("open"), &json!("4")),
        "{m}"
    );
    let retried = post(&api, base, buyer, &bid("t", buyer, 500_000, 10)).await;
    assert_eq!(
        (retried.status, retried.replayed),
        (503, true),
        "the placement's outcome is replayed: {retried:?}"
    );
    let metrics = api.metrics(base).await;
    assert_eq!(
        metrics.value(
            "foresight_saga_executions_total",
            &[("saga", "order"), ("outcome", "manual")]
        ),
        0.0
    );
}

/// A cancel whose release the store refused (an ACL denies writes to the account keys) is
/// answered 202 `cancel_pending`; the ACL is lifted and the client repeats the DELETE before
/// any recovery sweep runs (the sweep is an hour away): the repeat takes the first
/// cancellation's log entry over and finishes it, so nothing stays reserved.
///
/// On the code before the fix: the repeat answered 409 `order_not_open`, deleted the first
/// cancellation's log entry, and the 5 reserved stayed reserved for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_cancel_finishes_the_release_the_first_one_left() {
    let redis = RedisServer::start();
    let relayer_env = with(
        env(Some(&redis), None, None),
        "RELAYER_SAGA__RECOVERY_INTERVAL_MS",
        "3600000",
    );
    let a = RelayerProcess::start_ready(&relayer_env);
    let api = Api::default();
    let buyer = funded(&api, &a.base, &[2]).await.remove(0);
    let rest = post(&api, &a.base, &buyer, &bid("rest", &buyer, 500_000, 10)).await;
    assert_eq!(rest.status, 201, "{rest:?}");
    // NB: the relayer swept once at start; the next sweep is an hour away.
    let acl = [
        "ACL",
        "SETUSER",
        "default",
        "resetkeys",
        "%R~*",
        "~foresight:{[^u]*",
    ];
    assert_eq!(redis.cli(&acl).as_deref().map(str::trim), Some("OK"));
    let first = cancel(&api, &a.base, &buyer, "rest").await;
    assert_eq!(first.status, 202, "the release is left pending: {first:?}");
    assert_eq!(first.body["state"], "cancel_pending", "{first:?}");
    let lifted = redis.cli(&["ACL", "SETUSER", "default", "allkeys"]);
    assert_eq!(lifted.as_deref().map(str::trim), Some("OK"));
    assert_eq!(
        reserved_collateral(&api, &a.base, &buyer).await,
        RESTING_RESERVED
    );

    let again = cancel(&api, &a.base, &buyer, "rest").await;
    assert_eq!(
        again.status, 200,
        "the repeat finishes the cancellation: {again:?}"
    );
    assert_eq!(again.body["status"], "cancelled", "{again:?}");
    assert_eq!(reserved_collateral(&api, &a.base, &buyer).await, 0);
    wait_no_sagas(&api, &a.base, Duration::from_secs(5)).await;
    let third = cancel(&api, &a.base, &buyer, "rest").await;
    assert_eq!(
        third.status, 409,
        "a finished cancellation is not done twice: {third:?}"
    );
    assert_eq!(reserved_collateral(&api, &a.base, &buyer).await, 0);
}

/// A DELETE of an order whose placement is still running, before it reached the book, is a
/// clear 409 `placement_in_progress` (not a 404 for an order id the user holds); once
/// recovery has undone the placement (its replica died after the claim) it is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_before_the_placement_reached_the_book_is_told_it_is_in_progress() {
    let redis = RedisServer::start();
    // NB: a lease long enough for the DELETE to come before recovery takes the saga over.
    let lease = |env| with(env, "RELAYER_SAGA__LEASE_MS", "5000");
    let mut a =
        RelayerProcess::start_ready(&lease(env(Some(&redis), None, Some("after:validate"))));
    let b = RelayerProcess::start_ready(&lease(env(Some(&redis), None, None)));
    let api = Api::default();
    let buyer = funded(&api, &b.base, &[2]).await.remove(0);
    let order = bid("bid", &buyer, 500_000, 6);
    let answer = post_with(&api.http, &a.base, &buyer, &order).await;
    assert!(answer.is_err(), "A aborted before answering: {answer:?}");
    wait_aborted(&api, &mut a, "after:validate").await;

    let early = cancel(&api, &b.base, &buyer, "bid").await;
    assert_eq!(
        (early.status, early.code()),
        (409, "placement_in_progress"),
        "{early:?}"
    );
    wait_no_sagas(&api, &b.base, Duration::from_secs(20)).await;
    let late = cancel(&api, &b.base, &buyer, "bid").await;
    assert_eq!(late.status, 404, "{late:?}");
    assert_eq!(reserved_collateral(&api, &b.base, &buyer).await, 0);
}
