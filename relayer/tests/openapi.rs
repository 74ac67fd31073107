//! The OpenAPI document (`/openapi.json`) against the server it describes: it carries the
//! constraints the parsers check (patterns, bounds, required query parameters), it lists the
//! answers of the layers around the handlers (429, 503, 413, 415, 401) on the operations they
//! cover, and every answer the server gives to a table of hostile requests is one the
//! document lists for that operation, with an error body of the documented shape.
//! `scripts/schemathesis.sh` fuzzes the same promise; these tests keep it from drifting
//! between runs of that.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::fixtures::{ADMIN_TOKEN, Order};
use support::server::Server;

const ALICE: &str = "0xa11ce00000000000000000000000000000000001";
const BOB: &str = "0xb0b0000000000000000000000000000000000002";

/// The canonical market keys, as `relayer::domain::MarketKey` parses them.
const MARKET_KEY_PATTERN: &str = "^[1-9][0-9]{0,18}:(0|[1-9][0-9]{0,18}|0x[0-9a-f]{1,64})$";
const USER_ID_PATTERN: &str = "^0[xX][0-9a-fA-F]{40}$";
const ORDER_ID_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,64}$";

/// The business operations: behind the rate limiter, the store and the guard.
const BUSINESS: [(&str, &str); 6] = [
    ("post", "/v2/orders"),
    ("get", "/v2/orders/{id}"),
    ("delete", "/v2/orders/{id}"),
    ("get", "/v2/balances/{userId}"),
    ("get", "/v2/depth"),
    ("get", "/orderbook/orders"),
];

async fn document(server: &Server) -> Value {
    let (status, doc) = server.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "the document lacks {method} {path}");
    op
}

/// The statuses the document lists for one operation.
fn statuses(doc: &Value, method: &str, path: &str) -> Vec<String> {
    operation(doc, method, path)["responses"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

fn query_param<'a>(doc: &'a Value, path: &str, name: &str) -> &'a Value {
    let params = operation(doc, "get", path)["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{path} has no parameters"));
    let param = params
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{path} lacks the parameter {name}"));
    assert_eq!(param["in"], "query", "{path} {name}: {param}");
    param
}

fn body_property<'a>(doc: &'a Value, schema: &str, name: &str) -> &'a Value {
    let property = &doc["components"]["schemas"][schema]["properties"][name];
    assert!(property.is_object(), "{schema} lacks {name}");
    property
}

#[test]
fn the_document_spells_market_keys_as_the_parser_does() {
    assert_eq!(MARKET_KEY_PATTERN, relayer::domain::MarketKey::PATTERN);
}

#[tokio::test]
async fn the_document_carries_the_constraints_the_server_checks() {
    let server = Server::start(|_| {}).await;
    let doc = document(&server).await;

    for (schema, field, pattern) in [
        ("PlaceOrderRequest", "marketKey", MARKET_KEY_PATTERN),
        ("PlaceOrderRequest", "userId", USER_ID_PATTERN),
        ("PlaceOrderRequest", "orderId", ORDER_ID_PATTERN),
        ("PlaceOrderRequest", "price", "^0*[1-9][0-9]{0,5}$"),
        ("CreateApiKeyRequest", "userId", USER_ID_PATTERN),
        ("DepositRequest", "userId", USER_ID_PATTERN),
    ] {
        assert_eq!(
            body_property(&doc, schema, field)["pattern"],
            pattern,
            "{schema}.{field}"
        );
    }
    let asset = body_property(&doc, "DepositRequest", "asset")["pattern"]
        .as_str()
        .expect("asset pattern");
    assert!(
        asset.starts_with("^(collateral|") && asset.contains(&MARKET_KEY_PATTERN[1..40]),
        "{asset}"
    );
    assert_eq!(
        body_property(&doc, "PlaceOrderRequest", "price")["maxLength"],
        20
    );

    for path in ["/v2/depth", "/orderbook/orders"] {
        let market = query_param(&doc, path, "marketKey");
        assert_eq!(market["required"], true, "{path}: {market}");
        assert_eq!(market["schema"]["pattern"], MARKET_KEY_PATTERN, "{path}");
    }
    let limit = &query_param(&doc, "/orderbook/orders", "limit")["schema"];
    assert_eq!(
        (&limit["minimum"], &limit["maximum"], &limit["default"]),
        (&json!(1), &json!(500), &json!(100)),
        "{limit}"
    );
    let levels = &query_param(&doc, "/v2/depth", "levels")["schema"];
    assert_eq!(
        (&levels["minimum"], &levels["maximum"], &levels["default"]),
        (&json!(1), &json!(500), &json!(50)),
        "{levels}"
    );
    for name in ["userId", "limit", "cursor"] {
        let param = query_param(&doc, "/orderbook/orders", name);
        assert_ne!(param["required"], true, "{name} is optional: {param}");
    }
    assert_eq!(
        query_param(&doc, "/orderbook/orders", "userId")["schema"]["pattern"],
        USER_ID_PATTERN
    );
    let next_cursor = body_property(&doc, "OrdersView", "nextCursor");
    assert_eq!(
        next_cursor["type"],
        json!(["string", "null"]),
        "{next_cursor}"
    );

    let id = &operation(&doc, "get", "/v2/orders/{id}")["parameters"][0];
    assert_eq!(
        (&id["in"], &id["schema"]["pattern"]),
        (&json!("path"), &json!(ORDER_ID_PATTERN))
    );
    server.stop().await;
}

#[tokio::test]
async fn routes_list_the_answers_of_the_layers_around_them() {
    let server = Server::start(|_| {}).await;
    let doc = document(&server).await;

    for (method, path) in BUSINESS {
        let listed = statuses(&doc, method, path);
        for status in ["400", "429", "503"] {
            assert!(
                listed.iter().any(|s| s == status),
                "{method} {path} lacks {status}: {listed:?}"
            );
        }
        let too_many = &operation(&doc, method, path)["responses"]["429"];
        assert_eq!(
            too_many["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorView",
            "{method} {path}: {too_many}"
        );
    }
    for (method, path) in [
        ("post", "/v2/orders"),
        ("post", "/admin/api-keys"),
        ("post", "/admin/deposits"),
    ] {
        let listed = statuses(&doc, method, path);
        for status in ["400", "401", "413", "415", "429", "503"] {
            assert!(
                listed.iter().any(|s| s == status),
                "{method} {path} lacks {status}: {listed:?}"
            );
        }
    }
    for (method, path) in [
        ("get", "/v2/orders/{id}"),
        ("delete", "/v2/orders/{id}"),
        ("get", "/v2/balances/{userId}"),
        ("delete", "/admin/api-keys/{keyId}"),
    ] {
        let listed = statuses(&doc, method, path);
        assert!(
            listed.iter().any(|s| s == "401"),
            "{method} {path}: {listed:?}"
        );
        assert!(
            !listed.iter().any(|s| s == "415"),
            "{method} {path} has no body: {listed:?}"
        );
    }
    // Revocation takes any key id, so it never answers 400; the public market data needs no
    // token; the probes are outside the limiter.
    let revoke = statuses(&doc, "delete", "/admin/api-keys/{keyId}");
    assert!(!revoke.iter().any(|s| s == "400"), "{revoke:?}");
    assert!(
        !statuses(&doc, "get", "/v2/depth")
            .iter()
            .any(|s| s == "401")
    );
    for path in ["/health", "/ready"] {
        let listed = statuses(&doc, "get", path);
        assert!(!listed.iter().any(|s| s == "429"), "{path}: {listed:?}");
        assert!(listed.iter().any(|s| s == "503"), "{path}: {listed:?}");
    }
    server.stop().await;
}

/// Method and document path, the request path, token, JSON body, the expected status.
type Case<'a> = (
    &'static str,
    &'static str,
    String,
    Option<&'a str>,
    Option<Value>,
    StatusCode,
);

/// Asserts the answer is documented for the operation and, when an error, has the documented
/// error shape (`ErrorView`: `error.code` and `error.message`, nothing unknown).
fn assert_documented(doc: &Value, method: &str, path: &str, status: StatusCode, body: &Value) {
    let listed = statuses(doc, method, path);
    assert!(
        listed.iter().any(|s| s == status.as_str()),
        "{method} {path} answered {status}, the document lists {listed:?}: {body}"
    );
    if status.is_client_error() || status.is_server_error() {
        let error = body["error"]
            .as_object()
            .unwrap_or_else(|| panic!("{body}"));
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "{body}"
        );
        let known = ["code", "message", "field", "tier"];
        assert!(error.keys().all(|k| known.contains(&k.as_str())), "{body}");
        assert_eq!(body.as_object().map(|b| b.len()), Some(1), "{body}");
    }
}

#[tokio::test]
async fn every_answer_to_hostile_requests_is_one_the_document_lists() {
    let server = Server::start(|_| {}).await;
    let doc = document(&server).await;
    let alice = server.api_key(ALICE).await;
    let order = |o: Order| o.user(ALICE).json();
    let bob_order = Order::buy().user(BOB).json();
    let mut noncanonical = order(Order::buy());
    noncanonical["marketKey"] = json!("+80002:1");

    let cases: Vec<Case<'_>> = vec![
        (
            "post",
            "/v2/orders",
            "/v2/orders".into(),
            None,
            Some(order(Order::buy())),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "post",
            "/v2/orders",
            "/v2/orders".into(),
            Some(&alice),
            Some(noncanonical),
            StatusCode::BAD_REQUEST,
        ),
        (
            "post",
            "/v2/orders",
            "/v2/orders".into(),
            Some(&alice),
            Some(bob_order),
            StatusCode::FORBIDDEN,
        ),
        (
            "post",
            "/v2/orders",
            "/v2/orders".into(),
            Some(&alice),
            Some(order(Order::buy())),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "get",
            "/v2/orders/{id}",
            "/v2/orders/no%20such".into(),
            Some(&alice),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            "/v2/orders/{id}",
            "/v2/orders/nope".into(),
            Some(&alice),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "get",
            "/v2/orders/{id}",
            "/v2/orders/nope".into(),
            Some("wrong-key"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "delete",
            "/v2/orders/{id}",
            "/v2/orders/nope".into(),
            Some(&alice),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "delete",
            "/v2/orders/{id}",
            format!("/v2/orders/{}", "x".repeat(65)),
            Some(&alice),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            "/v2/balances/{userId}",
            "/v2/balances/0x12".into(),
            Some(&alice),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            "/v2/balances/{userId}",
            format!("/v2/balances/{BOB}"),
            Some(&alice),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "get",
            "/v2/depth",
            "/v2/depth".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            "/v2/depth",
            "/v2/depth?marketKey=80002:1&levels=501".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            "/v2/depth",
            "/v2/depth?marketKey=080002:1".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            "/orderbook/orders",
            "/orderbook/orders?marketKey=80002:1&limit=0".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            "/orderbook/orders",
            "/orderbook/orders?marketKey=80002:1&limit=501".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            "/orderbook/orders",
            "/orderbook/orders?marketKey=80002:1&cursor=x".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            "/orderbook/orders",
            "/orderbook/orders?marketKey=80002:1&limit=500".into(),
            None,
            None,
            StatusCode::OK,
        ),
        (
            "post",
            "/admin/api-keys",
            "/admin/api-keys".into(),
            Some(ADMIN_TOKEN),
            Some(json!({"userId": "0x1"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "post",
            "/admin/deposits",
            "/admin/deposits".into(),
            Some("wrong-token"),
            Some(json!({"userId": ALICE, "asset": "collateral", "amount": "1"})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "post",
            "/admin/deposits",
            "/admin/deposits".into(),
            Some(ADMIN_TOKEN),
            Some(json!({"userId": ALICE, "asset": "1:01", "amount": "1"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "delete",
            "/admin/api-keys/{keyId}",
            "/admin/api-keys/nope".into(),
            Some(ADMIN_TOKEN),
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, template, path, token, body, expected) in cases {
        let verb = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (status, answer) = server.call(verb, &path, token, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        assert_documented(&doc, method, template, status, &answer);
    }

    // The body layers: no JSON content type (415) and a body over `limits.maxBodyBytes` (413).
    let (status, answer) = server
        .raw(
            Method::POST,
            "/v2/orders",
            Some(&alice),
            "text/plain",
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
    assert_documented(&doc, "post", "/v2/orders", status, &answer);
    let huge = format!(r#"{{"orderId":"{}"}}"#, "a".repeat(4096)).into_bytes();
    let (status, answer) = server
        .raw(
            Method::POST,
            "/admin/deposits",
            Some(ADMIN_TOKEN),
            "application/json",
            huge,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_documented(&doc, "post", "/admin/deposits", status, &answer);
    server.stop().await;
}

#[tokio::test]
async fn a_rate_limited_answer_is_one_the_document_lists() {
    let server = Server::start(|c| {
        c.rate_limit.enabled = true;
        c.rate_limit.per_ip = Some(relayer::ratelimit::config::TierLimit {
            window_ms: 60_000,
            max_requests: 2,
        });
    })
    .await;
    let doc = document(&server).await;
    let path = "/v2/depth?marketKey=80002:1";
    let mut last = (StatusCode::OK, Value::Null);
    for _ in 0..3 {
        last = server.call(Method::GET, path, None, None).await;
    }
    let (status, answer) = last;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_documented(&doc, "get", "/v2/depth", status, &answer);
    assert_eq!(answer["error"]["tier"], "perIp", "{answer}");
    server.stop().await;
}
