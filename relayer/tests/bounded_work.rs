//! Work sized by the answer, over HTTP against the real server on a `127.0.0.1:0` listener:
//! `GET /orderbook/orders` answers pages (`limit`, `cursor`, `nextCursor`), refuses a bad
//! `limit` or `cursor` naming it, and every route refuses a market key that is not in its one
//! canonical spelling. (The stores' side, pagination and the match caps, is in
//! `store_contract.rs`.)

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::fixtures::{ADMIN_TOKEN, Order};
use support::server::Server;

const ALICE: &str = "0xa11ce00000000000000000000000000000000001";
const BOB: &str = "0xb0b0000000000000000000000000000000000002";

/// Rests `n` bids of Alice and Bob in turn (`o0` ..), none crossing another.
async fn rest_bids(server: &Server, n: usize) {
    let keys = [server.api_key(ALICE).await, server.api_key(BOB).await];
    for user in [ALICE, BOB] {
        server.deposit(user, "collateral", 1_000_000).await;
    }
    for i in 0..n {
        let (user, key) = if i % 2 == 0 {
            (ALICE, &keys[0])
        } else {
            (BOB, &keys[1])
        };
        let body = Order::buy()
            .id(format!("o{i}"))
            .user(user)
            .price(100_000 + i as u64)
            .amount(1)
            .json();
        let (status, answer) = server
            .call(Method::POST, "/v2/orders", Some(key), Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "o{i}: {answer}");
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["orders"]
        .as_array()
        .map(|orders| {
            orders
                .iter()
                .filter_map(|o| o["orderId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every page of `query` with `limit` (bounded): each page's order ids.
async fn pages(server: &Server, query: &str, limit: usize) -> Vec<Vec<String>> {
    let mut cursor: Option<String> = None;
    let mut all = Vec::new();
    for _ in 0..50 {
        let mut path = format!("/orderbook/orders?{query}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = server.call(Method::GET, &path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        all.push(ids(&page));
        match &page["nextCursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            Value::Null => return all,
            other => panic!("nextCursor is {other}"),
        }
    }
    panic!("pages never ended: {all:?}");
}

#[tokio::test]
async fn open_orders_come_in_pages_of_the_asked_limit() {
    let server = Server::start(|_| {}).await;
    rest_bids(&server, 5).await;
    let every: Vec<String> = (0..5).map(|i| format!("o{i}")).collect();
    let got = pages(&server, "marketKey=80002:1", 2).await;
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(got.concat(), every);
    assert_eq!(
        pages(&server, &format!("marketKey=80002:1&userId={ALICE}"), 2).await,
        [vec!["o0", "o2"], vec!["o4"]]
    );
    // The default page holds them all, and says there is no more.
    let (status, page) = server
        .call(
            Method::GET,
            "/orderbook/orders?marketKey=80002:1",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&page), every);
    assert_eq!(page["nextCursor"], Value::Null);
    let (status, page) = server
        .call(
            Method::GET,
            "/orderbook/orders?marketKey=80002:1&limit=500",
            None,
            None,
        )
        .await;
    assert_eq!((status, ids(&page)), (StatusCode::OK, every));
}

#[tokio::test]
async fn bad_limits_cursors_and_market_keys_are_refused_naming_the_field() {
    let server = Server::start(|_| {}).await;
    let alice = server.api_key(ALICE).await;
    server.deposit(ALICE, "collateral", 1_000).await;
    let list = |q: &str| format!("/orderbook/orders?marketKey=80002:1&{q}");
    #[rustfmt::skip]
    let table: Vec<(&str, Method, String, Option<Value>, &str)> = vec![
        ("limit zero", Method::GET, list("limit=0"), None, "limit"),
        ("limit over 500", Method::GET, list("limit=501"), None, "limit"),
        ("limit negative", Method::GET, list("limit=-1"), None, "limit"),
        ("limit fractional", Method::GET, list("limit=1.5"), None, "limit"),
        ("limit empty", Method::GET, list("limit="), None, "limit"),
        ("limit beyond u64", Method::GET, list("limit=18446744073709551616"), None, "limit"),
        ("cursor not a cursor", Method::GET, list("cursor=abc"), None, "cursor"),
        ("cursor negative", Method::GET, list("cursor=-1"), None, "cursor"),
        ("cursor with a leading zero", Method::GET, list("cursor=01"), None, "cursor"),
        ("cursor empty", Method::GET, list("cursor="), None, "cursor"),
        ("cursor beyond u64", Method::GET, list("cursor=18446744073709551616"), None, "cursor"),
        ("listing, market with a sign", Method::GET, "/orderbook/orders?marketKey=%2B80002:1".into(), None, "marketKey"),
        ("listing, market with a leading zero", Method::GET, "/orderbook/orders?marketKey=080002:1".into(), None, "marketKey"),
        ("listing, market with a space", Method::GET, "/orderbook/orders?marketKey=%201:2".into(), None, "marketKey"),
        ("depth, market id with a leading zero", Method::GET, "/v2/depth?marketKey=80002:01".into(), None, "marketKey"),
        ("order, market with a sign", Method::POST, "/v2/orders".into(),
            Some(Order::buy().user(ALICE).price(500_000).amount(1).market("+80002:1").json()), "marketKey"),
        ("order, market with a leading zero", Method::POST, "/v2/orders".into(),
            Some(Order::buy().user(ALICE).price(500_000).amount(1).market("080002:1").json()), "marketKey"),
        ("deposit, shares of a market with a leading zero", Method::POST, "/admin/deposits".into(),
            Some(json!({"userId": ALICE, "asset": "080002:1", "amount": "1"})), "asset"),
    ];
    for (name, method, path, body, field) in table {
        let auth = match path.as_str() {
            "/admin/deposits" => Some(ADMIN_TOKEN.to_owned()),
            "/v2/orders" => Some(alice.clone()),
            _ => None,
        };
        let (status, answer) = server.call(method, &path, auth.as_deref(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {answer}");
        assert_eq!(answer["error"]["field"], json!(field), "{name}: {answer}");
    }
    // Nothing was placed under a non-canonical key, and the canonical one answers.
    let (status, page) = server
        .call(
            Method::GET,
            &format!("/orderbook/orders?marketKey=80002:1&userId={ALICE}&limit=1&cursor=0"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page, json!({"orders": [], "nextCursor": null}));
}

/// A Redis book written by a build without the arrival index is listed from its queues, and
/// indexed by its next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_book_without_the_arrival_index_is_listed_and_then_indexed() {
    use relayer::book::PageRequest;
    use relayer::domain::{MarketKey, UserId};
    use relayer::store::{RedisMode, RedisSettings, Store};
    use support::redis::RedisServer;

    let server = RedisServer::start();
    let store = Store::redis(&RedisSettings {
        url: server.url(),
        key_prefix: "old:".to_owned(),
        command_timeout: std::time::Duration::from_secs(5),
        order_retention: std::time::Duration::from_secs(3600),
        mode: RedisMode::Standalone,
        cluster_nodes: Vec::new(),
        replica_acks: 0,
    })
    .expect("redis store");
    let market = MarketKey::parse("marketKey", "80002:1").expect("valid");
    let alice = UserId::parse("userId", ALICE).expect("valid");
    let bid = |id: &str, user: &str, price: u64| {
        Order::buy().id(id).user(user).price(price).amount(1).book()
    };
    for (i, user) in [ALICE, BOB, ALICE].into_iter().enumerate() {
        store
            .match_order(bid(&format!("o{i}"), user, 100_000 + i as u64))
            .await
            .expect("rests");
    }
    // What an older build left: no index keys, no "ix" mark.
    let base = "old:{m:80002:1}";
    for key in [
        format!("{base}:i"),
        format!("{base}:i:{ALICE}"),
        format!("{base}:i:{BOB}"),
    ] {
        server.cli(&["DEL", &key]).expect("DEL");
    }
    server
        .cli(&["HDEL", &format!("{base}:meta"), "ix"])
        .expect("HDEL");
    let ids = |page: &relayer::book::OrdersPage| -> Vec<String> {
        page.orders.iter().map(|o| o.order_id.clone()).collect()
    };
    let page = store
        .open_orders_page(&market, Some(&alice), PageRequest::first(1))
        .await
        .expect("page");
    assert_eq!(ids(&page), ["o0"], "listed from the queues");
    let rest = store
        .open_orders_page(
            &market,
            Some(&alice),
            PageRequest {
                after: page.next,
                limit: 10,
            },
        )
        .await
        .expect("page");
    assert_eq!((ids(&rest), rest.next), (vec!["o2".to_owned()], None));

    store
        .match_order(bid("o3", BOB, 100_003))
        .await
        .expect("rests");
    assert_eq!(
        server
            .cli(&["HGET", &format!("{base}:meta"), "ix"])
            .as_deref()
            .map(str::trim),
        Some("1"),
        "the write indexed the book"
    );
    assert_eq!(
        server
            .cli(&["ZCARD", &format!("{base}:i")])
            .as_deref()
            .map(str::trim),
        Some("4")
    );
    let all = store
        .open_orders_page(&market, None, PageRequest::first(10))
        .await
        .expect("page");
    assert_eq!(ids(&all), ["o0", "o1", "o2", "o3"]);
}
