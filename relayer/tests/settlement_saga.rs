//! The order saga against a test settlement endpoint (in-process relayer, in-memory store):
//! an outage opens the `settlement` breaker, orders fail fast while it is open, half-open
//! probes close it when the endpoint recovers, and every failed order leaves balances and book
//! exactly as they were; an unconfirmed settlement (a lost answer, a redirect, which is never
//! followed, or a 2xx without the settlement answer) is carried forward with the same keys; a
//! trade rejected after it may have settled parks the saga as `manual`; the credential header
//! goes to the endpoint only and never into the log.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::api::Api;
use support::fixtures::{ADMIN_TOKEN, Order};
use support::metrics::Metrics;
use support::process::RelayerProcess;
use support::server::Server;
use support::settle::{Mode, SettlementServer};
use support::wait::wait_for;

const MARKET: &str = "80002:1";
const SELLER: &str = "0x1111111111111111111111111111111111111111";
const BUYER: &str = "0x2222222222222222222222222222222222222222";

struct Market {
    server: Server,
    seller: String,
    buyer: String,
}

impl Market {
    /// A relayer settling at `settlement`, with a seller of 1000 shares and a buyer of
    /// 1_000_000 collateral.
    async fn start(settlement: &SettlementServer) -> Self {
        Self::start_waiting(settlement, 5_000).await
    }

    /// [`Market::start`] with `POST /v2/orders` waiting at most `wait_ms` for its saga.
    async fn start_waiting(settlement: &SettlementServer, wait_ms: u64) -> Self {
        Self::start_with(settlement, move |c| {
            c.limits.placement_wait_ms = Some(wait_ms)
        })
        .await
    }

    /// [`Market::start`] with whatever `tweak` changes after this file's settings.
    async fn start_with(
        settlement: &SettlementServer,
        tweak: impl FnOnce(&mut relayer::config::RelayerConfig),
    ) -> Self {
        let url = settlement.url.clone();
        let server = Server::start(move |c| {
            c.limits.placement_wait_ms = Some(5_000);
            c.rate_limit.enabled = false;
            c.settlement.url = Some(url);
            c.settlement.timeout_ms = 300;
            c.settlement.retry.max_retries = Some(1);
            c.settlement.retry.initial_delay_ms = Some(5);
            c.settlement.retry.max_delay_ms = Some(10);
            let b = &mut c.circuit_breakers.settlement;
            b.failure_threshold = 3;
            b.success_threshold = 2;
            b.open_duration = 400;
            b.timeout = 300;
            b.min_requests = 1_000;
            b.half_open_max_calls = 1;
            tweak(c);
        })
        .await;
        server.deposit(SELLER, MARKET, 1_000).await;
        server.deposit(BUYER, "collateral", 1_000_000).await;
        let seller = server.api_key(SELLER).await;
        let buyer = server.api_key(BUYER).await;
        Self {
            server,
            seller,
            buyer,
        }
    }

    async fn place(&self, key: &str, order: Order) -> (StatusCode, Value) {
        self.server
            .call(Method::POST, "/v2/orders", Some(key), Some(order.json()))
            .await
    }

    async fn ask(&self, id: &str, price: u64, amount: u64) -> (StatusCode, Value) {
        let order = Order::sell().id(id).market(MARKET).user(SELLER);
        self.place(&self.seller, order.price(price).amount(amount))
            .await
    }

    async fn bid(&self, id: &str, price: u64, amount: u64) -> (StatusCode, Value) {
        let order = Order::buy().id(id).market(MARKET).user(BUYER);
        self.place(&self.buyer, order.price(price).amount(amount))
            .await
    }

    /// Both users' balances and the market's depth.
    async fn snapshot(&self) -> Value {
        let (_, s) = self
            .server
            .call(
                Method::GET,
                &format!("/v2/balances/{SELLER}"),
                Some(&self.seller),
                None,
            )
            .await;
        let (_, b) = self
            .server
            .call(
                Method::GET,
                &format!("/v2/balances/{BUYER}"),
                Some(&self.buyer),
                None,
            )
            .await;
        let (_, d) = self
            .server
            .call(
                Method::GET,
                &format!("/v2/depth?marketKey={MARKET}"),
                None,
                None,
            )
            .await;
        json!({"seller": s, "buyer": b, "depth": d})
    }

    async fn breaker_state(&self) -> String {
        let (status, body) = self
            .server
            .call(Method::GET, "/admin/breakers", Some(ADMIN_TOKEN), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["breakers"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["name"] == "settlement"))
            .map(|b| b["state"].as_str().unwrap_or_default().to_owned())
            .expect("the settlement breaker is listed")
    }

    async fn metrics(&self) -> Metrics {
        self.server.metrics().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_the_breaker_orders_fail_fast_and_probes_close_it_with_balances_restored() {
    let endpoint = SettlementServer::start().await;
    let m = Market::start(&endpoint).await;
    assert_eq!(m.ask("a1", 600_000, 10).await.0, StatusCode::CREATED);
    assert_eq!(m.ask("a2", 610_000, 10).await.0, StatusCode::CREATED);
    let metrics = m.metrics().await;
    for (name, labels) in [
        ("foresight_saga_active", &[("saga", "order")][..]),
        (
            "foresight_saga_executions_total",
            &[("saga", "order"), ("outcome", "manual")],
        ),
        ("foresight_circuit_breaker_state", &[("name", "settlement")]),
    ] {
        assert_eq!(
            metrics.value(name, labels),
            0.0,
            "{name}{labels:?} before any trade:\n{metrics}"
        );
    }
    let (status, body) = m.bid("b0", 600_000, 2).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(endpoint.settled().len(), 1);
    let mut trades = vec![format!(
        "trade:{}",
        body["fills"][0]["tradeId"].as_str().unwrap_or_default()
    )];

    endpoint.set_mode(Mode::Fail(500));
    // Each failed order: 503 with a clear error, balances and book exactly as before.
    let mut failed = 0;
    while m.breaker_state().await == "CLOSED" {
        assert!(failed < 5, "the breaker opens after 3 failures");
        let before = m.snapshot().await;
        let (status, body) = m.bid(&format!("f{failed}"), 610_000, 12).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "settlement_unavailable", "{body}");
        assert_eq!(m.snapshot().await, before, "order f{failed} left no trace");
        failed += 1;
    }
    assert_eq!(m.breaker_state().await, "OPEN");
    // 3 consecutive failures opened it: 2 attempts for the first order, 1 for the second.
    assert_eq!(failed, 2);
    assert_eq!(endpoint.requests().len(), 1 + 3);
    assert_eq!(
        m.metrics()
            .await
            .value("foresight_circuit_breaker_state", &[("name", "settlement")]),
        1.0,
        "the state gauge reads open"
    );

    // Open: orders that would trade fail fast without a call; orders that rest still work.
    let calls = endpoint.requests().len();
    let before = m.snapshot().await;
    let started = Instant::now();
    let (status, body) = m.bid("fast", 610_000, 3).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(endpoint.requests().len(), calls, "no call while open");
    assert_eq!(m.snapshot().await, before);
    assert_eq!(m.bid("rest", 100_000, 1).await.0, StatusCode::CREATED);
    let (status, _) = m
        .server
        .call(Method::DELETE, "/v2/orders/rest", Some(&m.buyer), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // The endpoint recovers; after openDuration the breaker lets probes through.
    endpoint.set_mode(Mode::Succeed);
    wait_for("HALF_OPEN", Duration::from_secs(5), async || {
        m.breaker_state().await == "HALF_OPEN"
    })
    .await;
    let (status, body) = m.bid("p1", 600_000, 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(m.breaker_state().await, "HALF_OPEN", "one success of two");
    trades.push(format!(
        "trade:{}",
        body["fills"][0]["tradeId"].as_str().unwrap_or_default()
    ));
    let (status, body) = m.bid("p2", 600_000, 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(m.breaker_state().await, "CLOSED");
    trades.push(format!(
        "trade:{}",
        body["fills"][0]["tradeId"].as_str().unwrap_or_default()
    ));

    // Every trade settled exactly once, with its key in header and body.
    let settled = endpoint.settled();
    trades.sort();
    assert_eq!(settled.keys().cloned().collect::<Vec<_>>(), trades);
    assert!(settled.values().all(|n| *n == 1));
    assert_eq!(endpoint.malformed(), 0);
    // Balances: exactly the three successful trades at 0.6 (2 + 1 + 1 shares).
    let snap = m.snapshot().await;
    assert_eq!(snap["buyer"]["shares"][MARKET]["available"], "4");
    // Collateral rounds up per buy order: ceil(1.2) + ceil(0.6) + ceil(0.6).
    assert_eq!(snap["buyer"]["collateral"]["available"], "999996");
    assert_eq!(snap["buyer"]["collateral"]["reserved"], "0");
    assert_eq!(snap["seller"]["collateral"]["available"], "4");
    assert_eq!(snap["seller"]["shares"][MARKET]["reserved"], "16");
    let metrics = m.metrics().await;
    assert_eq!(
        metrics.value(
            "foresight_saga_executions_total",
            &[("saga", "order"), ("outcome", "compensated")]
        ),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        metrics.value("foresight_saga_active", &[("saga", "order")]),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metrics.value(
            "foresight_retry_attempts_total",
            &[("operation", "settlement")]
        ),
        2.0,
        "{metrics}"
    );
    // f1's retry and "fast" were refused by the open breaker without a call.
    assert_eq!(
        metrics.value(
            "foresight_circuit_breaker_calls_total",
            &[("name", "settlement"), ("result", "rejected")]
        ),
        2.0,
        "{metrics}"
    );
    m.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_settlement_is_carried_forward_with_the_same_key() {
    let endpoint = SettlementServer::start().await;
    // NB: the client stops waiting before the two lost answers (300 ms each) are over.
    let m = Market::start_waiting(&endpoint, 400).await;
    assert_eq!(m.ask("a1", 500_000, 10).await.0, StatusCode::CREATED);
    // Settled, but the answer is lost, twice (the first attempt and its retry).
    endpoint.script(&[Mode::SettleThenHang, Mode::Hang]);
    let (status, body) = m.bid("b1", 500_000, 4).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"orderId": "b1", "state": "pending"}));
    // Carried on in the background: the trade completes, settled once.
    wait_for(
        "the trade to complete",
        Duration::from_secs(10),
        async || m.snapshot().await["buyer"]["shares"][MARKET]["available"] == "4",
    )
    .await;
    let requests = endpoint.requests();
    assert!(requests.len() >= 3, "{requests:?}");
    let settled = endpoint.settled();
    let [(key, times)] = settled.iter().collect::<Vec<_>>()[..] else {
        panic!("one trade: {settled:?}");
    };
    assert_eq!(*times, 1, "{key} settled once");
    assert!(requests.iter().all(|k| k == key), "{requests:?}");
    // A repeat of the placement now replays its outcome.
    let (status, replay) = m.bid("b1", 500_000, 4).await;
    assert_eq!(status, StatusCode::CREATED, "{replay}");
    assert_eq!(
        format!(
            "trade:{}",
            replay["fills"][0]["tradeId"].as_str().unwrap_or_default()
        ),
        *key
    );
    let snap = m.snapshot().await;
    assert_eq!(snap["buyer"]["collateral"]["available"], "999998");
    assert_eq!(snap["buyer"]["collateral"]["reserved"], "0");
    assert_eq!(snap["seller"]["collateral"]["available"], "2");
    let (status, order) = m
        .server
        .call(Method::GET, "/v2/orders/b1", Some(&m.buyer), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["status"], "filled", "{order}");
    let (_, sagas) = m
        .server
        .call(Method::GET, "/admin/sagas", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(
        sagas["sagas"],
        json!([]),
        "a finished saga leaves no log entry"
    );
    m.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_after_a_settlement_that_may_have_happened_parks_the_saga_as_manual() {
    let endpoint = SettlementServer::start().await;
    let m = Market::start(&endpoint).await;
    assert_eq!(m.ask("a1", 500_000, 10).await.0, StatusCode::CREATED);
    endpoint.script(&[Mode::SettleThenHang, Mode::Fail(422)]);
    let before = m.snapshot().await;
    let (status, body) = m.bid("b1", 500_000, 4).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"orderId": "b1", "state": "manual"}));
    // The match stands (settlement may have happened); nothing moved balances yet.
    let after = m.snapshot().await;
    assert_eq!(after["buyer"]["collateral"]["reserved"], "2");
    assert_eq!(after["seller"], before["seller"]);
    let (status, sagas) = m
        .server
        .call(
            Method::GET,
            "/admin/sagas?state=manual",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sagas}");
    let list = sagas["sagas"].as_array().expect("list");
    assert_eq!(list.len(), 1, "{sagas}");
    assert_eq!(list[0]["orderId"], "b1");
    assert_eq!(list[0]["state"], "manual");
    assert_eq!(list[0]["data"]["inDoubt"], true);
    let (status, _) = m
        .server
        .call(
            Method::GET,
            "/admin/sagas?state=bogus",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        m.metrics().await.value(
            "foresight_saga_executions_total",
            &[("saga", "order"), ("outcome", "manual")]
        ),
        1.0
    );
    m.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_saga_keeps_its_lease_through_a_long_settlement_so_no_replica_takes_it_over() {
    let endpoint = SettlementServer::start().await;
    let mut config = relayer::config::RelayerConfig {
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        ..Default::default()
    };
    config.rate_limit.enabled = false;
    config.shutdown.readiness_delay_ms = 0;
    config.settlement.url = Some(endpoint.url.clone());
    config.settlement.timeout_ms = 1_200;
    config.settlement.retry.max_retries = Some(0);
    config.circuit_breakers.settlement.timeout = 1_200;
    config.saga.lease_ms = 300;
    // NB: the client is answered (202) while the settlement still hangs.
    config.limits.placement_wait_ms = Some(600);
    config.validate().expect("valid");
    // Two replicas on one store; only A serves HTTP, B only sweeps.
    let store = relayer::store::Store::memory();
    let a = relayer::AppState::new(config.clone(), store.clone()).expect("state A");
    let b = relayer::AppState::new(config, store).expect("state B");
    let server = Server::serve(a).await;
    server.deposit(SELLER, MARKET, 1_000).await;
    server.deposit(BUYER, "collateral", 1_000_000).await;
    let seller = server.api_key(SELLER).await;
    let buyer = server.api_key(BUYER).await;
    let m = Market {
        server,
        seller,
        buyer,
    };
    assert_eq!(m.ask("a1", 500_000, 10).await.0, StatusCode::CREATED);

    // The first settlement attempt hangs for four leases (until the client's timeout).
    endpoint.script(&[Mode::Hang]);
    let placing = {
        let client = m.server.client.clone();
        let url = format!("{}/v2/orders", m.server.base);
        let key = m.buyer.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(
                    &Order::buy()
                        .id("b1")
                        .market(MARKET)
                        .user(BUYER)
                        .price(500_000)
                        .amount(4)
                        .json(),
                )
                .send()
                .await
                .expect("answered")
                .status()
        })
    };
    let mut sweeps = 0;
    while !placing.is_finished() {
        assert_eq!(
            b.exchange().sagas().sweep().await.expect("sweep"),
            0,
            "B took over a saga A is still running"
        );
        sweeps += 1;
        assert!(sweeps < 1_000, "the placement ends within its timeout");
        tokio::task::yield_now().await;
        // NB: the pace of B's sweeps is the scenario (a replica sweeping while A's call hangs).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sweeps > 10, "B swept while A's settlement hung ({sweeps})");
    assert_eq!(placing.await.expect("task"), StatusCode::ACCEPTED);
    // A carries it forward with the same key.
    wait_for(
        "the trade to complete",
        Duration::from_secs(10),
        async || m.snapshot().await["buyer"]["shares"][MARKET]["available"] == "4",
    )
    .await;
    let settled = endpoint.settled();
    assert!(
        settled.len() == 1 && settled.values().all(|n| *n == 1),
        "settled once: {settled:?}"
    );
    m.server.stop().await;
}

/// A redirect is no answer about the trade. It is not followed: the URL it names gets
/// nothing, so neither the trade nor the credential goes there. The trade is not counted as
/// settled; it is carried forward under the same key until the endpoint confirms it.
///
/// Before the fix, reqwest followed each redirect to a URL that answered "settled", so the
/// placement answered 201 and the trade was never settled at the endpoint (`followed` held
/// its key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_the_trade_is_carried_forward_until_confirmed() {
    const HEADER: &str = "X-Settlement-Token";
    const CREDENTIAL: &str = "Bearer redirect-7f3a";
    let endpoint = SettlementServer::start().await;
    endpoint.require_header(HEADER, CREDENTIAL);
    let m = Market::start_with(&endpoint, |c| {
        c.limits.placement_wait_ms = Some(400);
        c.settlement.credential = Some(CREDENTIAL.to_owned());
        c.settlement.credential_header = HEADER.to_owned();
        // NB: every bid meets redirects: an open breaker would fail the later ones fast.
        c.circuit_breakers.settlement.failure_threshold = 1_000;
    })
    .await;
    assert_eq!(m.ask("a1", 500_000, 10).await.0, StatusCode::CREATED);
    let before = m.snapshot().await;
    const REDIRECTS: [u16; 5] = [301, 302, 303, 307, 308];
    for status in REDIRECTS {
        endpoint.set_mode(Mode::Redirect(status));
        let id = format!("b{status}");
        let (placed, body) = m.bid(&id, 500_000, 1).await;
        assert_eq!(placed, StatusCode::ACCEPTED, "after a {status}: {body}");
        assert_eq!(body, json!({"orderId": id, "state": "pending"}), "{status}");
    }
    assert_eq!(
        endpoint.followed(),
        Vec::<String>::new(),
        "a redirect was followed"
    );
    assert!(endpoint.settled().is_empty(), "{:?}", endpoint.settled());
    let during = m.snapshot().await;
    assert_eq!(during["buyer"]["shares"], before["buyer"]["shares"]);
    assert_eq!(during["seller"], before["seller"], "nothing paid out");

    endpoint.set_mode(Mode::Succeed);
    wait_for(
        "the five trades to complete",
        Duration::from_secs(15),
        async || m.snapshot().await["buyer"]["shares"][MARKET]["available"] == "5",
    )
    .await;
    let settled = endpoint.settled();
    assert_eq!(settled.len(), REDIRECTS.len(), "{settled:?}");
    assert!(
        settled.values().all(|n| *n == 1),
        "settled once: {settled:?}"
    );
    let requests = endpoint.requests();
    assert!(
        requests.iter().all(|k| settled.contains_key(k)),
        "only the trades' own keys: {requests:?}"
    );
    assert!(endpoint.followed().is_empty());
    assert_eq!(endpoint.unauthorized(), 0);
    let credentials = endpoint.credentials();
    assert!(
        credentials.iter().all(|c| c.as_deref() == Some(CREDENTIAL)),
        "{credentials:?}"
    );
    m.server.stop().await;
}

/// A 2xx counts only when it carries the settlement answer for the trade's key. An empty
/// body, other JSON, another trade's key or an HTML page leaves the trade unconfirmed. The
/// endpoint may have acted on it, so it is never undone: it is carried forward under the
/// same key until the answer comes.
///
/// Before the fix, any 2xx counted as settled, so each placement answered 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_without_the_settlement_answer_is_not_counted_as_settled() {
    let endpoint = SettlementServer::start().await;
    let m = Market::start_with(&endpoint, |c| {
        c.limits.placement_wait_ms = Some(400);
        c.circuit_breakers.settlement.failure_threshold = 1_000;
    })
    .await;
    assert_eq!(m.ask("a1", 500_000, 10).await.0, StatusCode::CREATED);
    let before = m.snapshot().await;
    const ANSWERS: [&str; 6] = [
        "",
        "{}",
        r#"{"ok": true}"#,
        r#"{"settled": true}"#,
        r#"{"settled": "trade:another"}"#,
        "<html>settled</html>",
    ];
    for (i, answer) in ANSWERS.into_iter().enumerate() {
        endpoint.set_mode(Mode::Answer(answer));
        let id = format!("b{i}");
        let (placed, body) = m.bid(&id, 500_000, 1).await;
        assert_eq!(placed, StatusCode::ACCEPTED, "answered {answer:?}: {body}");
        assert_eq!(
            body,
            json!({"orderId": id, "state": "pending"}),
            "{answer:?}"
        );
    }
    let during = m.snapshot().await;
    assert_eq!(during["buyer"]["shares"], before["buyer"]["shares"]);
    assert_eq!(during["seller"], before["seller"], "nothing paid out");
    let (_, sagas) = m
        .server
        .call(Method::GET, "/admin/sagas", Some(ADMIN_TOKEN), None)
        .await;
    let sagas = sagas["sagas"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        sagas.len(),
        ANSWERS.len(),
        "one live saga a trade: {sagas:?}"
    );
    assert!(
        sagas.iter().all(|s| s["data"]["inDoubt"] == true),
        "each carried forward as in doubt, never compensated: {sagas:?}"
    );

    endpoint.set_mode(Mode::Succeed);
    wait_for(
        "the trades to complete",
        Duration::from_secs(15),
        async || m.snapshot().await["buyer"]["shares"][MARKET]["available"] == "6",
    )
    .await;
    let settled = endpoint.settled();
    assert_eq!(settled.len(), ANSWERS.len(), "{settled:?}");
    assert!(
        settled.values().all(|n| *n == 1),
        "settled once: {settled:?}"
    );
    let snap = m.snapshot().await;
    assert_eq!(snap["buyer"]["collateral"]["reserved"], "0", "{snap}");
    let figure = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
    let paid = figure(&snap["buyer"]["collateral"]["available"])
        .and_then(|left| 1_000_000u64.checked_sub(left));
    assert_eq!(
        paid,
        figure(&snap["seller"]["collateral"]["available"]),
        "the seller got what the buyer paid, once: {snap}"
    );
    m.server.stop().await;
}

/// What the relayer logs of unconfirmed answers names the status and what was wrong, and never
/// the credential it sent.
///
/// Before the fix, the redirect was followed and the empty 200 counted as settled, so neither
/// was logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_answers_are_logged_without_the_credential() {
    const HEADER: &str = "X-Settlement-Token";
    const SECRET: &str = "settle-c0ffee-91";
    let credential = format!("Bearer {SECRET}");
    let endpoint = SettlementServer::start().await;
    endpoint.require_header(HEADER, &credential);
    endpoint.script(&[Mode::Redirect(307), Mode::Answer("{}")]);
    let relayer = RelayerProcess::start_ready(&[
        ("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("RELAYER_SETTLEMENT__URL", endpoint.url.clone()),
        ("RELAYER_SETTLEMENT__RETRY__STRATEGY", "fast".to_owned()),
        ("RELAYER_SETTLEMENT__CREDENTIAL", credential.clone()),
        ("RELAYER_SETTLEMENT__CREDENTIAL_HEADER", HEADER.to_owned()),
    ]);
    let api = Api::default();
    let seller = api.trader(&relayer.base, SELLER).await;
    let buyer = api.trader(&relayer.base, BUYER).await;
    api.deposit(&relayer.base, SELLER, MARKET, 10).await;
    api.deposit(&relayer.base, BUYER, "collateral", 1_000_000)
        .await;
    let ask = Order::sell()
        .id("a1")
        .market(MARKET)
        .user(SELLER)
        .price(500_000);
    let (status, body) = api
        .place(&relayer.base, &seller, &ask.amount(4).json())
        .await
        .expect("ask");
    assert_eq!(status, 201, "{body}");
    let bid = Order::buy()
        .id("b1")
        .market(MARKET)
        .user(BUYER)
        .price(500_000);
    let (status, body) = api
        .place(&relayer.base, &buyer, &bid.amount(4).json())
        .await
        .expect("bid");
    assert_eq!(status, 201, "settled on the third attempt: {body}");
    assert_eq!(endpoint.requests().len(), 3, "{:?}", endpoint.requests());
    assert_eq!(endpoint.settled().len(), 1);
    assert!(endpoint.followed().is_empty());

    let log = relayer.log_text();
    assert!(log.contains("HTTP 307 redirect, not followed"), "{log}");
    assert!(log.contains("HTTP 200 unconfirmed"), "{log}");
    assert!(
        !log.contains(SECRET),
        "the credential is in the log:\n{log}"
    );
}
