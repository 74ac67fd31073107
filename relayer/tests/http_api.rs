//! The HTTP API against the real server on a `127.0.0.1:0` listener: a table of bad requests
//! (status and the field named in the error), and a happy path through every route.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::fixtures::{ADMIN_TOKEN, Order};
use support::server::Server;

const ALICE: &str = "0xa11ce00000000000000000000000000000000001";
const BOB: &str = "0xb0b0000000000000000000000000000000000002";
const MARKET: &str = "80002:1";

/// Method, path, bearer token, JSON body.
type Request<'a> = (Method, &'a str, Option<String>, Option<Value>);

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().expect("object").remove(key);
    base
}

#[tokio::test]
async fn bad_requests_are_rejected_with_the_field_named() {
    let server = Server::start(|_| {}).await;
    let alice = server.api_key(ALICE).await;
    server.deposit(ALICE, "collateral", 1_000).await;
    // Alice's first order with this id sets its meaning; a different order under it conflicts.
    let (status, _) = server
        .call(
            Method::POST,
            "/v2/orders",
            Some(&alice),
            Some(
                Order::buy()
                    .id("dup-1")
                    .user(ALICE)
                    .price(100_000)
                    .amount(1)
                    .json(),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let good = Order::buy().user(ALICE).price(500_000).amount(10).json();
    let post = |body: Value| (Method::POST, "/v2/orders", Some(alice.clone()), Some(body));
    #[rustfmt::skip]
    let table: Vec<(&str, Request<'_>, StatusCode, &str)> = vec![
        ("missing price", post(without(good.clone(), "price")), StatusCode::BAD_REQUEST, "price"),
        ("missing side", post(without(good.clone(), "side")), StatusCode::BAD_REQUEST, "side"),
        ("unknown field", post(with(good.clone(), "leverage", json!("10"))), StatusCode::BAD_REQUEST, "leverage"),
        ("price as a number", post(with(good.clone(), "price", json!(500000))), StatusCode::BAD_REQUEST, "price"),
        ("price zero", post(with(good.clone(), "price", json!("0"))), StatusCode::BAD_REQUEST, "price"),
        ("price one", post(with(good.clone(), "price", json!("1000000"))), StatusCode::BAD_REQUEST, "price"),
        ("price negative", post(with(good.clone(), "price", json!("-5"))), StatusCode::BAD_REQUEST, "price"),
        ("price fractional", post(with(good.clone(), "price", json!("0.5"))), StatusCode::BAD_REQUEST, "price"),
        ("amount zero", post(with(good.clone(), "amount", json!("0"))), StatusCode::BAD_REQUEST, "amount"),
        ("amount over max", post(with(good.clone(), "amount", json!("1000001"))), StatusCode::BAD_REQUEST, "amount"),
        ("amount beyond u64", post(with(good.clone(), "amount", json!("18446744073709551616"))), StatusCode::BAD_REQUEST, "amount"),
        ("amount exponent", post(with(good.clone(), "amount", json!("1e3"))), StatusCode::BAD_REQUEST, "amount"),
        ("bad marketKey", post(with(good.clone(), "marketKey", json!("test"))), StatusCode::BAD_REQUEST, "marketKey"),
        ("bad userId", post(with(good.clone(), "userId", json!("0x123"))), StatusCode::BAD_REQUEST, "userId"),
        ("userId wrong type", post(with(good.clone(), "userId", json!(42))), StatusCode::BAD_REQUEST, "userId"),
        ("bad side", post(with(good.clone(), "side", json!("hold"))), StatusCode::BAD_REQUEST, "side"),
        ("bad orderId", post(with(good.clone(), "orderId", json!("has space"))), StatusCode::BAD_REQUEST, "orderId"),
        ("orderId reused for another order", post(with(good.clone(), "orderId", json!("dup-1"))), StatusCode::CONFLICT, "orderId"),
        ("insufficient collateral", post(with(good.clone(), "amount", json!("100000"))), StatusCode::UNPROCESSABLE_ENTITY, "amount"),
        ("other user's userId", post(Order::buy().user(BOB).price(500_000).amount(1).json()), StatusCode::FORBIDDEN, "userId"),
        ("no API key", (Method::POST, "/v2/orders", None, Some(good.clone())), StatusCode::UNAUTHORIZED, "authorization"),
        ("unknown API key", (Method::POST, "/v2/orders", Some("fsk_nope".into()), Some(good.clone())), StatusCode::UNAUTHORIZED, "authorization"),
        ("depth without marketKey", (Method::GET, "/v2/depth", None, None), StatusCode::BAD_REQUEST, "marketKey"),
        ("depth with bad marketKey", (Method::GET, "/v2/depth?marketKey=80002", None, None), StatusCode::BAD_REQUEST, "marketKey"),
        ("depth with zero levels", (Method::GET, "/v2/depth?marketKey=80002:1&levels=0", None, None), StatusCode::BAD_REQUEST, "levels"),
        ("depth with unknown parameter", (Method::GET, "/v2/depth?marketKey=80002:1&side=buy", None, None), StatusCode::BAD_REQUEST, "side"),
        ("open orders with bad userId", (Method::GET, "/orderbook/orders?marketKey=80002:1&userId=bob", None, None), StatusCode::BAD_REQUEST, "userId"),
        ("balances of another user", (Method::GET, "/v2/balances/0xb0b0000000000000000000000000000000000002", Some(alice.clone()), None), StatusCode::FORBIDDEN, "userId"),
        ("balances with bad userId", (Method::GET, "/v2/balances/0xzz", Some(alice.clone()), None), StatusCode::BAD_REQUEST, "userId"),
        ("deposit of an unknown asset", (Method::POST, "/admin/deposits", Some(ADMIN_TOKEN.into()), Some(json!({"userId": ALICE, "asset": "gold", "amount": "1"}))), StatusCode::BAD_REQUEST, "asset"),
        ("deposit of zero", (Method::POST, "/admin/deposits", Some(ADMIN_TOKEN.into()), Some(json!({"userId": ALICE, "asset": "collateral", "amount": "0"}))), StatusCode::BAD_REQUEST, "amount"),
        ("admin with a user key", (Method::POST, "/admin/deposits", Some(alice.clone()), Some(json!({"userId": ALICE, "asset": "collateral", "amount": "1"}))), StatusCode::UNAUTHORIZED, "authorization"),
        ("api key for a bad userId", (Method::POST, "/admin/api-keys", Some(ADMIN_TOKEN.into()), Some(json!({"userId": "nobody"}))), StatusCode::BAD_REQUEST, "userId"),
        ("bad order id in the path", (Method::GET, "/v2/orders/a%20b", Some(alice.clone()), None), StatusCode::BAD_REQUEST, "orderId"),
    ];
    for (name, (method, path, auth, body), want_status, want_field) in table {
        let (status, body) = server.call(method, path, auth.as_deref(), body).await;
        assert_eq!(status, want_status, "{name}: {body}");
        assert_eq!(body["error"]["field"], json!(want_field), "{name}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {body}"
        );
    }

    // Bodies that are not JSON objects at all.
    #[rustfmt::skip]
    let raw: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        ("malformed JSON", "application/json", br#"{"marketKey": "80002:1""#.to_vec(), StatusCode::BAD_REQUEST, "body"),
        ("a JSON array", "application/json", b"[]".to_vec(), StatusCode::BAD_REQUEST, "body"),
        ("not JSON", "text/plain", b"price=1".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type"),
        ("body over the limit", "application/json", vec![b' '; 4096], StatusCode::PAYLOAD_TOO_LARGE, "body"),
    ];
    for (name, content_type, body, want_status, want_field) in raw {
        let (status, body) = server
            .raw(Method::POST, "/v2/orders", Some(&alice), content_type, body)
            .await;
        assert_eq!(status, want_status, "{name}: {body}");
        assert_eq!(body["error"]["field"], json!(want_field), "{name}: {body}");
    }

    // Nothing above may have moved a balance: only the first 1-share order reserved ceil(0.1).
    let (_, balances) = server
        .call(
            Method::GET,
            &format!("/v2/balances/{ALICE}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        balances["collateral"],
        json!({"available": "999", "reserved": "1"})
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_orders_are_json_404s() {
    let server = Server::start(|_| {}).await;
    let alice = server.api_key(ALICE).await;
    let (status, body) = server
        .call(Method::GET, "/v2/orders/nope", Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = server
        .call(Method::DELETE, "/v2/orders/nope", Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = server.call(Method::GET, "/v3/anything", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = server.call(Method::PUT, "/v2/depth", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn without_an_admin_token_admin_routes_do_not_exist() {
    let server = Server::start(|c| c.admin_token = None).await;
    let (status, body) = server
        .call(
            Method::POST,
            "/admin/deposits",
            Some(ADMIN_TOKEN),
            Some(json!({"userId": ALICE, "asset": "collateral", "amount": "1"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn two_orders_match_through_every_route() {
    let server = Server::start(|_| {}).await;
    let (status, _) = server.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.call(Method::GET, "/ready", None, None).await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );

    let alice = server.api_key(ALICE).await;
    let bob = server.api_key(BOB).await;
    server.deposit(ALICE, "collateral", 1_000).await;
    server.deposit(BOB, MARKET, 100).await;

    // Bob rests an ask of 40 at 0.6; Alice buys 50 at 0.7: 40 fill at 0.6, 10 rest at 0.7.
    let (status, ask) = server
        .call(
            Method::POST,
            "/v2/orders",
            Some(&bob),
            Some(
                Order::sell()
                    .id("ask-1")
                    .user(BOB)
                    .price(600_000)
                    .amount(40)
                    .json(),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ask}");
    assert_eq!(ask["order"]["status"], "open");
    let bid_body = Order::buy()
        .id("bid-1")
        .user(ALICE)
        .price(700_000)
        .amount(50)
        .json();
    let (status, bid) = server
        .call(
            Method::POST,
            "/v2/orders",
            Some(&alice),
            Some(bid_body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bid}");
    assert_eq!(bid["order"]["status"], "partially_filled");
    assert_eq!(bid["order"]["filled"], "40");
    assert_eq!(bid["order"]["remaining"], "10");
    assert_eq!(bid["fills"][0]["makerOrderId"], "ask-1");
    assert_eq!(bid["fills"][0]["price"], "600000");
    assert_eq!(bid["fills"][0]["collateral"], "24");

    // Placing the same order id again replays the first answer and trades nothing.
    let resp = server
        .client
        .post(format!("{}/v2/orders", server.base))
        .bearer_auth(&alice)
        .json(&bid_body)
        .send()
        .await
        .expect("replay");
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(resp.json::<Value>().await.expect("json"), bid);

    // Balances: Alice reserved ceil(0.7*50)=35 and paid 24; 11 stay reserved (7 for the 10
    // resting shares, 4 of price improvement released when the order completes or is cancelled).
    let (status, bal) = server
        .call(
            Method::GET,
            &format!("/v2/balances/{ALICE}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{bal}");
    assert_eq!(
        bal["collateral"],
        json!({"available": "965", "reserved": "11"})
    );
    assert_eq!(
        bal["shares"][MARKET],
        json!({"available": "40", "reserved": "0"})
    );
    let (_, bal) = server
        .call(
            Method::GET,
            &format!("/v2/balances/{BOB}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(
        bal["collateral"],
        json!({"available": "24", "reserved": "0"})
    );
    assert_eq!(
        bal["shares"][MARKET],
        json!({"available": "60", "reserved": "0"})
    );

    let (status, depth) = server
        .call(Method::GET, "/v2/depth?marketKey=80002:1", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        depth["bids"],
        json!([{"price": "700000", "amount": "10", "orders": 1}])
    );
    assert_eq!(depth["asks"], json!([]));

    let (status, open) = server
        .call(
            Method::GET,
            &format!("/orderbook/orders?marketKey=80002:1&userId={ALICE}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open["orders"].as_array().map(Vec::len), Some(1));
    assert_eq!(open["orders"][0]["orderId"], "bid-1");

    let (status, got) = server
        .call(Method::GET, "/v2/orders/bid-1", Some(&alice), None)
        .await;
    assert_eq!(
        (status, got["remaining"].clone()),
        (StatusCode::OK, json!("10"))
    );
    // Another user's order is not found, not forbidden: ids do not leak.
    let (status, _) = server
        .call(Method::GET, "/v2/orders/bid-1", Some(&bob), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .call(Method::DELETE, "/v2/orders/bid-1", Some(&bob), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, cancelled) = server
        .call(Method::DELETE, "/v2/orders/bid-1", Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (status, again) = server
        .call(Method::DELETE, "/v2/orders/bid-1", Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let (_, bal) = server
        .call(
            Method::GET,
            &format!("/v2/balances/{ALICE}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        bal["collateral"],
        json!({"available": "976", "reserved": "0"})
    );

    let metrics = server.metrics().await;
    let text = metrics.text();
    let requests = "foresight_http_requests_total";
    assert_eq!(
        metrics.value(
            requests,
            &[
                ("method", "POST"),
                ("route", "/v2/orders"),
                ("status", "201")
            ]
        ),
        3.0,
        "{text}"
    );
    assert!(
        metrics
            .series(requests)
            .any(|s| s.label("route") == Some("/v2/orders/{id}")),
        "route templates, not raw paths: {text}"
    );
    assert!(!text.contains("bid-1"), "raw ids must not become labels");
    // The scrape reading it is not work in flight: an idle relayer reads 0.
    assert_eq!(
        metrics.value("foresight_http_requests_in_flight", &[]),
        0.0,
        "{text}"
    );
    assert!(
        metrics
            .series("foresight_http_request_duration_seconds_bucket")
            .next()
            .is_some(),
        "{text}"
    );

    let (status, doc) = server.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v2/orders",
        "/v2/orders/{id}",
        "/v2/depth",
        "/orderbook/orders",
        "/v2/balances/{userId}",
        "/admin/deposits",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }

    // A revoked key stops working.
    let (_, created) = server
        .call(
            Method::POST,
            "/admin/api-keys",
            Some(ADMIN_TOKEN),
            Some(json!({"userId": BOB})),
        )
        .await;
    let key_id = created["keyId"].as_str().expect("keyId");
    let key = created["apiKey"].as_str().expect("apiKey");
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/admin/api-keys/{key_id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .call(Method::GET, &format!("/v2/balances/{BOB}"), Some(key), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/admin/api-keys/{key_id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn injected_faults_hit_business_routes_only() {
    let server = Server::start(|c| c.fault_injection.error_rate = 1.0).await;
    let (status, body) = server
        .call(Method::GET, "/v2/depth?marketKey=80002:1", None, None)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "injected_fault");
    let (status, _) = server.call(Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}
