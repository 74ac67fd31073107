//! Work in flight at a blue-green switch, with real processes: two relayers, "blue" (the old
//! colour) and "green" (the new one), share one `redis-server` and settle at an endpoint that
//! holds every request for a while. A crossing order's saga is in settlement when blue goes:
//!
//! - drained (SIGTERM, as Kubernetes drains a pod): blue finishes the saga before it exits; its
//!   client gets the final answer, or a 202 that green then serves resolved;
//! - killed (SIGKILL), or drained with a drain timeout shorter than the settlement: green
//!   recovers the saga from the shared saga log, and a retry of the client's request (same
//!   orderId) answers the recorded outcome. A drain that gives up hands its sagas over: green
//!   does not wait out blue's lease.
//!
//! Each case runs [`ROUNDS`] rounds, each with its own settlement hold and the signal at a random
//! instant of the settlement window (the seed is printed). After each round: the order is final
//! on green, collateral and shares equal the deposits, nothing stays reserved, no saga is
//! unfinished, and every settlement key carried one body.
//!
//! Uses support::{redis, process, settle, api, fixtures, wait} and `rand` (seeded).

mod support;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::api::{
    Api, Reply, Trader, active_sagas, balances, check_invariants, num, post, post_with, sagas,
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
/// Rounds per case, each with its own hold and signal instant.
const ROUNDS: usize = 3;
/// How long the endpoint holds each settlement request, ms, drawn per round: in even rounds
/// shorter than [`PLACEMENT_WAIT_MS`] (the client waits for the outcome), in odd rounds longer
/// (the client gets a 202 and the saga goes on).
const HOLD_MS: [std::ops::Range<u64>; 2] = [1_200..1_700, 2_400..3_000];
/// How long a placement waits for its saga before answering 202.
const PLACEMENT_WAIT_MS: u64 = 2_000;
/// The lease of the relayers that recover (and of blue where a kill is the point): short, so a
/// killed blue's saga is found abandoned within about a second.
const SHORT_LEASE_MS: u64 = 1_000;
/// Blue's lease where its drain gives up: a production-like lease, which green must not wait out.
const LONG_LEASE_MS: u64 = 10_000;
/// Blue's drain timeout where it gives up: well inside the settlement window.
const SHORT_DRAIN_MS: u64 = 300;
/// How long green may take to take over a saga that a drain gave up on, after blue exited:
/// a few recovery sweeps, far less than [`LONG_LEASE_MS`].
const HAND_OVER_WITHIN: Duration = Duration::from_secs(3);

/// A relayer of either colour on `redis`, settling at `endpoint` (timeout above any hold, a few
/// quick retries), with a lease of `lease_ms` found lapsed within 200 ms, a 300 ms readiness
/// delay and a drain long enough for any hold.
fn env(
    redis: &RedisServer,
    endpoint: &SettlementServer,
    lease_ms: u64,
) -> Vec<(&'static str, String)> {
    vec![
        ("RELAYER_REDIS_URL", redis.url()),
        ("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("RELAYER_LOG__FILTER", "warn,relayer=info".to_owned()),
        ("RELAYER_SETTLEMENT__URL", endpoint.url.clone()),
        ("RELAYER_SETTLEMENT__TIMEOUT_MS", "10000".to_owned()),
        ("RELAYER_SETTLEMENT__RETRY__MAX_RETRIES", "2".to_owned()),
        (
            "RELAYER_SETTLEMENT__RETRY__INITIAL_DELAY_MS",
            "10".to_owned(),
        ),
        ("RELAYER_SETTLEMENT__RETRY__MAX_DELAY_MS", "50".to_owned()),
        ("RELAYER_SAGA__LEASE_MS", lease_ms.to_string()),
        ("RELAYER_SAGA__RECOVERY_INTERVAL_MS", "200".to_owned()),
        ("RELAYER_SHUTDOWN__READINESS_DELAY_MS", "300".to_owned()),
        ("RELAYER_SHUTDOWN__DRAIN_TIMEOUT_MS", "15000".to_owned()),
        (
            "RELAYER_LIMITS__PLACEMENT_WAIT_MS",
            PLACEMENT_WAIT_MS.to_string(),
        ),
    ]
}

/// How blue goes away while the saga is in settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// SIGTERM with a drain long enough for the settlement.
    Drain,
    /// SIGKILL.
    Kill,
    /// SIGTERM with a drain timeout ([`SHORT_DRAIN_MS`]) shorter than the settlement.
    DrainGivesUp,
}

/// One round: blue and green on one Redis, a funded seller and buyer, and the seller's resting
/// ask (10 at 0.4) placed on blue.
struct Round {
    _redis: RedisServer,
    endpoint: SettlementServer,
    blue: RelayerProcess,
    green: RelayerProcess,
    api: Api,
    seller: Trader,
    buyer: Trader,
}

impl Round {
    async fn start(exit: Exit, hold_ms: u64) -> Self {
        let redis = RedisServer::start();
        let endpoint = SettlementServer::start().await;
        endpoint.set_mode(Mode::Delay(hold_ms));
        let blue_env = match exit {
            Exit::Drain | Exit::Kill => env(&redis, &endpoint, SHORT_LEASE_MS),
            Exit::DrainGivesUp => {
                let env = env(&redis, &endpoint, LONG_LEASE_MS);
                let env = with(env, "RELAYER_SHUTDOWN__READINESS_DELAY_MS", "0");
                with(
                    env,
                    "RELAYER_SHUTDOWN__DRAIN_TIMEOUT_MS",
                    &SHORT_DRAIN_MS.to_string(),
                )
            }
        };
        let blue = RelayerProcess::start_ready(&blue_env);
        let green = RelayerProcess::start_ready(&env(&redis, &endpoint, SHORT_LEASE_MS));
        let api = Api::default();
        let (seller_id, buyer_id) = (address(1), address(2));
        let seller = api.trader(&blue.base, &seller_id).await;
        let buyer = api.trader(&blue.base, &buyer_id).await;
        for id in [&seller_id, &buyer_id] {
            api.deposit(&blue.base, id, "collateral", COLLATERAL).await;
            api.deposit(&blue.base, id, MARKET, SHARES).await;
        }
        let rest = post(&api, &blue.base, &seller, &ask(&seller)).await;
        assert_eq!(rest.status, 201, "the ask rests: {:?}", rest.body);
        Self {
            _redis: redis,
            endpoint,
            blue,
            green,
            api,
            seller,
            buyer,
        }
    }

    /// Places the crossing bid on blue in the background and waits until its settlement request
    /// has reached the endpoint (the saga is in settlement, the endpoint holding it); then the
    /// saga's owner in the log (blue's id) and when the request arrived.
    async fn bid_in_settlement(
        &self,
    ) -> (
        tokio::task::JoinHandle<reqwest::Result<Reply>>,
        String,
        Instant,
    ) {
        let client = tokio::spawn({
            let http = self.api.http.clone();
            let (base, buyer) = (self.blue.base.clone(), self.buyer.clone());
            async move { post_with(&http, &base, &buyer, &bid(&buyer)).await }
        });
        wait_for(
            "the bid's settlement to reach the endpoint",
            Duration::from_secs(10),
            async || !self.endpoint.requests().is_empty(),
        )
        .await;
        let sent = Instant::now();
        assert_eq!(
            active_sagas(&self.api, &self.blue.base).await,
            1.0,
            "blue drives the bid's saga"
        );
        let log = sagas(&self.api, &self.blue.base).await;
        let [entry] = log.as_array().map(Vec::as_slice).unwrap_or_default() else {
            panic!("one saga in the log: {log}");
        };
        assert_eq!(entry["orderId"], "bid", "{entry}");
        assert_eq!(entry["step"], "settle", "{entry}");
        let owner = entry["owner"].as_str().expect("owner").to_owned();
        (client, owner, sent)
    }

    /// `GET /v2/orders/{id}` on green.
    async fn order_on_green(&self, id: &str, trader: &Trader) -> (u16, Value) {
        self.api
            .get(&format!("{}/v2/orders/{id}", self.green.base), trader)
            .await
    }

    /// What must hold once the round is over, read on green: the bid filled 6 against the ask,
    /// nothing reserved beyond the ask's rest, collateral and shares equal to the deposits, no
    /// saga in the log, one trade settled and every key sent with one body.
    async fn check_settled_and_conserved(&self) {
        let green = &self.green.base;
        wait_no_sagas(&self.api, green, Duration::from_secs(5)).await;
        let (status, order) = self.order_on_green("bid", &self.buyer).await;
        assert_eq!(status, 200, "{order}");
        assert_eq!(order["status"], "filled", "{order}");
        assert_eq!(order["filled"], "6", "{order}");
        let (status, ask) = self.order_on_green("ask", &self.seller).await;
        assert_eq!(status, 200, "{ask}");
        assert_eq!(ask["filled"], "6", "{ask}");
        let bb = balances(&self.api, green, &self.buyer).await;
        let sb = balances(&self.api, green, &self.seller).await;
        assert_eq!(num(&bb["collateral"]["reserved"]), 0, "buyer: {bb}");
        assert_eq!(
            num(&bb["shares"][MARKET]["available"]),
            u128::from(SHARES) + 6,
            "buyer: {bb}"
        );
        // 6 shares at 0.4 = 2.4 → 3 collateral (rounded up per buy order).
        assert_eq!(
            num(&bb["collateral"]["available"]),
            u128::from(COLLATERAL) - 3,
            "buyer: {bb}"
        );
        assert_eq!(
            num(&sb["shares"][MARKET]["reserved"]),
            4,
            "seller: only the ask's rest stays reserved: {sb}"
        );
        check_invariants(
            &self.api,
            green,
            &[self.seller.clone(), self.buyer.clone()],
            &[("ask".to_owned(), 0), ("bid".to_owned(), 1)],
            &[MARKET],
            2 * u128::from(COLLATERAL),
            2 * u128::from(SHARES),
        )
        .await
        .expect("collateral and shares conserved");
        let bodies = self.endpoint.bodies();
        let settled: Vec<_> = self.endpoint.settled().into_iter().collect();
        assert_eq!(self.endpoint.malformed(), 0);
        let [(key, 1)] = settled.as_slice() else {
            panic!("one trade settled once: {settled:?}");
        };
        assert!(
            self.endpoint.requests().iter().all(|k| k == key),
            "every request carried the trade's key {key}: {:?}",
            self.endpoint.requests()
        );
        assert!(
            bodies.values().all(|b| b.len() == 1),
            "each key with one body: {bodies:?}"
        );
    }

    /// `foresight_saga_executions_total{saga="order",outcome}` of green.
    async fn green_executions(&self, outcome: &str) -> f64 {
        self.api.metrics(&self.green.base).await.value(
            "foresight_saga_executions_total",
            &[("saga", "order"), ("outcome", outcome)],
        )
    }
}

/// The seller's resting ask: 10 at 0.4.
fn ask(seller: &Trader) -> Value {
    let order = Order::sell().id("ask").market(MARKET).user(&seller.user_id);
    order.price(400_000).amount(10).json()
}

/// The buyer's crossing bid: 6 at 0.4, filled against the ask.
fn bid(buyer: &Trader) -> Value {
    let order = Order::buy().id("bid").market(MARKET).user(&buyer.user_id);
    order.price(400_000).amount(6).json()
}

/// A seeded generator, its seed printed so a failing round can be run again.
fn rng(case: &str) -> StdRng {
    let seed = std::env::var("CUTOVER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default()
        });
    eprintln!("{case}: CUTOVER_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Sleeps until `offset` after `since` (the signal's instant in the settlement window).
async fn at(since: Instant, offset: Duration) {
    tokio::time::sleep_until((since + offset).into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_in_settlement_at_sigterm_is_finished_by_the_draining_colour() {
    let mut rng = rng("drain");
    for round in 0..ROUNDS {
        let hold = rng.random_range(HOLD_MS[round % 2].clone());
        // NB: up to 200 ms before the endpoint answers, so the saga is still in settlement.
        let offset = Duration::from_millis(rng.random_range(0..hold - 200));
        eprintln!("drain round {round}: hold {hold} ms, SIGTERM after {offset:?}");
        let mut r = Round::start(Exit::Drain, hold).await;
        let (client, blue_owner, sent) = r.bid_in_settlement().await;
        at(sent, offset).await;
        assert!(
            r.endpoint.settled().is_empty(),
            "the signal comes while the endpoint holds the settlement"
        );
        r.blue.signal("TERM");

        // The client gets an answer on its connection: the final one, or a 202 while pending.
        let answer = client
            .await
            .expect("client task")
            .unwrap_or_else(|e| panic!("the client's placement got no answer from blue: {e}"));
        eprintln!("drain round {round}: the client got {}", answer.status);
        match answer.status {
            201 => assert_eq!(answer.body["order"]["status"], "filled", "{answer:?}"),
            202 => assert_eq!(answer.body["state"], "pending", "{answer:?}"),
            _ => panic!("the placement answered neither its outcome nor 202: {answer:?}"),
        }

        // Blue exits only once the saga finished: settled, and gone from the shared log.
        let (status, _) = r.blue.wait_exit(Duration::from_secs(20)).await;
        let at_exit = sagas(&r.api, &r.green.base).await;
        let settled_at_exit = r.endpoint.settled();
        let log = r.blue.log_text();
        assert!(status.success(), "blue exit status {status}:\n{log}");
        assert_eq!(
            at_exit,
            json!([]),
            "blue exited with its saga unfinished (it was {blue_owner}'s):\n{log}"
        );
        assert_eq!(settled_at_exit.len(), 1, "settled before blue exited");
        assert!(log.contains("drained"), "{log}");
        assert!(!log.contains("drain timeout"), "{log}");
        assert!(!log.contains("panicked"), "{log}");

        // Green serves the order in its final state; it recovered nothing (blue finished it).
        r.check_settled_and_conserved().await;
        assert_eq!(
            r.green_executions("completed").await,
            0.0,
            "green finished no saga: blue did"
        );
        if answer.status == 202 {
            let (status, order) = r.order_on_green("bid", &r.buyer).await;
            assert_eq!((status, &order["status"]), (200, &json!("filled")));
        }
        assert!(!r.green.log_text().contains("recovering an abandoned saga"));
    }
}

/// Blue goes away (`exit`) mid-settlement; green recovers the saga from the shared log.
async fn recovered_by_green(exit: Exit) {
    let mut rng = rng(&format!("{exit:?}"));
    for round in 0..ROUNDS {
        let hold = rng.random_range(HOLD_MS[round % 2].clone());
        // NB: a drain that gives up must do so inside the settlement window: the signal comes
        // early enough that the hold outlasts the drain timeout by 300 ms at least.
        let latest = match exit {
            Exit::DrainGivesUp => hold - SHORT_DRAIN_MS - 300,
            _ => hold - 200,
        };
        let offset = Duration::from_millis(rng.random_range(0..latest));
        eprintln!("{exit:?} round {round}: hold {hold} ms, signal after {offset:?}");
        let mut r = Round::start(exit, hold).await;
        let (client, blue_owner, sent) = r.bid_in_settlement().await;
        at(sent, offset).await;
        assert!(r.endpoint.settled().is_empty(), "blue goes mid-settlement");
        let gone = match exit {
            Exit::Kill => {
                r.blue.kill();
                Instant::now()
            }
            _ => {
                r.blue.signal("TERM");
                let (status, gone) = r.blue.wait_exit(Duration::from_secs(10)).await;
                let log = r.blue.log_text();
                assert!(status.success(), "blue exit status {status}:\n{log}");
                assert!(log.contains("drain timeout"), "blue gave up: {log}");
                gone
            }
        };
        // Blue's client lost its connection, or had a 202 before blue went.
        match client.await.expect("client task") {
            Err(e) => assert!(!e.is_timeout(), "{e}"),
            Ok(answer) => assert_eq!(answer.status, 202, "{answer:?}"),
        }

        // Green takes the saga over from the log.
        let taken = wait_for_ok(
            "green to take the saga over",
            Duration::from_secs(LONG_LEASE_MS / 1000 + 10),
            async || {
                let log = sagas(&r.api, &r.green.base).await;
                match log.as_array().map(Vec::as_slice) {
                    Some([]) => Ok(Instant::now()),
                    Some([e]) if e["owner"] != blue_owner.as_str() => Ok(Instant::now()),
                    _ => Err(log.to_string()),
                }
            },
        )
        .await;
        eprintln!(
            "{exit:?} round {round}: green took the saga over {:?} after blue was gone",
            taken - gone
        );
        if exit == Exit::DrainGivesUp {
            assert!(
                taken - gone < HAND_OVER_WITHIN,
                "green took {:?} after blue's exit to take over the saga the drain gave up on \
                 (blue's lease is {LONG_LEASE_MS} ms): the drain left its lease held",
                taken - gone
            );
        }
        wait_no_sagas(&r.api, &r.green.base, Duration::from_secs(15)).await;
        r.check_settled_and_conserved().await;
        assert_eq!(
            r.green_executions("completed").await,
            1.0,
            "green finished the saga"
        );

        // The client's retry (same orderId, same request) answers the recorded outcome.
        let retry = post(&r.api, &r.green.base, &r.buyer, &bid(&r.buyer)).await;
        assert_eq!(retry.status, 201, "{retry:?}");
        assert!(retry.replayed, "a replay of the first placement: {retry:?}");
        assert_eq!(retry.body["order"]["status"], "filled", "{retry:?}");
        assert_eq!(retry.body["order"]["filled"], "6", "{retry:?}");
        let fills = retry.body["fills"].as_array().cloned().unwrap_or_default();
        let [fill] = fills.as_slice() else {
            panic!("one fill: {retry:?}");
        };
        let settled = r.endpoint.settled();
        let trade = fill["tradeId"].as_str().unwrap_or_default();
        assert!(
            settled.contains_key(&format!("trade:{trade}")),
            "the replayed fill is the settled trade: {fill} vs {settled:?}"
        );
        assert_eq!(r.endpoint.settled().len(), 1, "the retry settled nothing");
        assert!(!r.green.log_text().contains("panicked"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_in_settlement_when_the_old_colour_is_killed_is_recovered_by_the_new_colour() {
    recovered_by_green(Exit::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_the_drain_gives_up_on_is_recovered_by_the_new_colour_without_waiting_its_lease() {
    recovered_by_green(Exit::DrainGivesUp).await;
}
