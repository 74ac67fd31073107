//! OpenTelemetry traces from real relayer processes, collected by an OTLP/HTTP receiver inside
//! the test (`support::otlp`, decoding the protobuf with the `opentelemetry-proto` types):
//! - one crossing order sent with a client's `traceparent` is one trace: the request's server
//!   span (child of the client's span), the saga, each of its steps and each settlement
//!   attempt; the settlement endpoint receives a `traceparent` of that trace naming the
//!   attempt's span, and the log line the retry writes carries the trace id;
//! - a saga a crashed replica left is finished by another in a trace of its own, linked to the
//!   trace the order began in, and the settlement request it sends carries the new trace;
//! - without the variables (or with `OTEL_TRACES_EXPORTER=none`) nothing is exported and no
//!   `traceparent` is forwarded; a protocol this build lacks stops the process naming it.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::api::{Api, Trader, sagas};
use support::fixtures::{ADMIN_TOKEN, Order, address};
use support::otlp::{KIND_CLIENT, KIND_SERVER, OtlpReceiver, SpanRecord};
use support::process::RelayerProcess;
use support::redis::RedisServer;
use support::settle::{Mode, SettlementServer};
use support::wait::{wait_for, wait_for_ok};

const MARKET: &str = "80002:1";
/// The client's span: the trace every span of the order must belong to.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// 32 members of 200-byte values: what the W3C limits allow a client to send.
fn big_tracestate() -> String {
    (0..32)
        .map(|i| format!("k{i}={}", "v".repeat(200)))
        .collect::<Vec<_>>()
        .join(",")
}

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

fn env(
    settlement: &SettlementServer,
    receiver: &OtlpReceiver,
    service: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("RELAYER_SETTLEMENT__URL", settlement.url.clone()),
        ("RELAYER_SETTLEMENT__TIMEOUT_MS", "1000".to_owned()),
        ("RELAYER_SETTLEMENT__RETRY__MAX_RETRIES", "2".to_owned()),
        (
            "RELAYER_SETTLEMENT__RETRY__INITIAL_DELAY_MS",
            "10".to_owned(),
        ),
        ("RELAYER_SETTLEMENT__RETRY__MAX_DELAY_MS", "50".to_owned()),
        ("RELAYER_LOG__FORMAT", "json".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_SERVICE_NAME", service.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

/// A seller resting an ask of 10 at 0.40 and a funded buyer, through `base`.
async fn traders(api: &Api, base: &str) -> (Trader, Trader) {
    let (seller_id, buyer_id) = (address(1), address(2));
    let seller = api.trader(base, &seller_id).await;
    let buyer = api.trader(base, &buyer_id).await;
    api.deposit(base, &seller_id, MARKET, 100).await;
    api.deposit(base, &buyer_id, "collateral", 1_000_000).await;
    let (status, body) = api
        .place(
            base,
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
        .expect("the relayer answers");
    assert_eq!(status, 201, "{body}");
    (seller, buyer)
}

/// The crossing bid, sent with the client's `traceparent`; the status (or None when the
/// relayer did not answer) and the body.
async fn place_traced(api: &Api, base: &str, buyer: &Trader) -> Option<(u16, Value)> {
    let order = Order::buy()
        .id("bid")
        .market(MARKET)
        .user(&buyer.user_id)
        .price(400_000)
        .amount(6)
        .json();
    let resp = api
        .http
        .post(format!("{base}/v2/orders"))
        .bearer_auth(&buyer.api_key)
        .header("traceparent", client_traceparent())
        // NB: a client's large tracestate must not reach the settlement endpoint.
        .header("tracestate", big_tracestate())
        .json(&order)
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.unwrap_or(Value::Null)))
}

/// Starts a relayer with `env`, rests the ask and places the crossing bid with the client's
/// `traceparent`, which must be answered 201.
async fn start_and_cross(env: &[(&str, String)]) -> RelayerProcess {
    let relayer = RelayerProcess::start_ready(env);
    let api = Api::default();
    let (_, buyer) = traders(&api, &relayer.base).await;
    let (status, body) = place_traced(&api, &relayer.base, &buyer)
        .await
        .expect("the relayer answers");
    assert_eq!(status, 201, "{body}");
    relayer
}

/// The one span of `spans` named `name`, or an error listing what there is.
fn one<'a>(spans: &'a [SpanRecord], name: &str) -> Result<&'a SpanRecord, String> {
    let found: Vec<&SpanRecord> = spans.iter().filter(|s| s.name == name).collect();
    match found.as_slice() {
        [span] => Ok(span),
        _ => Err(format!(
            "{} spans named {name:?} in {:?}",
            found.len(),
            spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
        )),
    }
}

/// The trace id and parent span id of a W3C `traceparent`.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn a_crossing_order_is_one_trace_from_the_client_through_the_saga_to_settlement() {
    let receiver = OtlpReceiver::start().await;
    let settlement = SettlementServer::start().await;
    // The first settlement attempt fails with 503: the retry is a second client span, and its
    // warning a log line of the trace.
    settlement.script(&[Mode::Fail(503)]);
    let relayer = start_and_cross(&env(&settlement, &receiver, "relayer-under-test")).await;

    let steps = ["validate", "reserve", "match", "settle", "update"];
    let spans = wait_for_ok(
        "the order's trace to arrive whole",
        Duration::from_secs(20),
        async || {
            let spans = receiver.trace(CLIENT_TRACE);
            let settled = spans.iter().filter(|s| s.name == "POST settlement").count();
            let stepped = steps
                .iter()
                .all(|step| spans.iter().any(|s| s.name == format!("order step {step}")));
            let request = spans.iter().any(|s| s.name == "POST /v2/orders");
            if settled == 2 && stepped && request {
                Ok(spans)
            } else {
                Err(format!(
                    "{:?}",
                    spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
                ))
            }
        },
    )
    .await;
    assert_eq!(receiver.undecodable(), 0);
    assert!(
        spans.iter().all(|s| s.service == "relayer-under-test"),
        "{spans:#?}"
    );

    let request = one(&spans, "POST /v2/orders").expect("the request span");
    assert_eq!(request.kind, KIND_SERVER);
    assert_eq!(
        request.parent_span_id, CLIENT_SPAN,
        "child of the client's span"
    );
    assert_eq!(request.attr("http.route"), "/v2/orders");
    assert_eq!(request.attr("http.request.method"), "POST");
    assert_eq!(request.attr("http.response.status_code"), "201");

    let saga = one(&spans, "order saga").expect("the saga span");
    assert_eq!(
        saga.parent_span_id, request.span_id,
        "the saga runs for the request"
    );
    assert_eq!(saga.attr("order.client_id"), "bid", "{saga:?}");
    assert!(!saga.attr("saga.id").is_empty(), "{saga:?}");
    for step in steps {
        let span = one(&spans, &format!("order step {step}")).expect("one span per step");
        assert_eq!(span.parent_span_id, saga.span_id, "{step} is the saga's");
        assert_eq!(span.attr("step"), step);
    }
    let settle = one(&spans, "order step settle").expect("settle");
    let attempts: Vec<&SpanRecord> = spans
        .iter()
        .filter(|s| s.name == "POST settlement")
        .collect();
    for attempt in &attempts {
        assert_eq!(attempt.kind, KIND_CLIENT);
        assert_eq!(attempt.parent_span_id, settle.span_id, "{attempt:?}");
    }
    let mut statuses: Vec<&str> = attempts
        .iter()
        .map(|a| a.attr("http.response.status_code"))
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["200", "503"]);

    // The endpoint saw the trace: each request names the attempt's span as its parent.
    let sent = settlement.traceparents();
    assert_eq!(sent.len(), 2, "{sent:?}");
    for (key, traceparent) in &sent {
        let traceparent = traceparent
            .as_deref()
            .unwrap_or_else(|| panic!("settlement of {key} without traceparent"));
        let (trace, parent) = ids(traceparent);
        assert_eq!(trace, CLIENT_TRACE, "{traceparent}");
        assert!(
            attempts.iter().any(|a| a.span_id == parent),
            "{traceparent} names an attempt's span"
        );
    }

    assert_eq!(
        settlement.tracestates(),
        0,
        "the client's tracestate stays here"
    );

    // The retry's warning carries the trace id.
    let log = relayer.log_text();
    let retry_line = log
        .lines()
        .find(|l| l.contains("retrying settlement"))
        .unwrap_or_else(|| panic!("no retry warning in the log:\n{log}"));
    let line: Value = serde_json::from_str(retry_line).expect("a JSON log line");
    let carried = line["spans"]
        .as_array()
        .is_some_and(|spans| spans.iter().any(|s| s["trace_id"] == json!(CLIENT_TRACE)));
    assert!(carried, "the log line names the trace: {line}");

    // The ask, sent without a traceparent, began a trace of its own.
    let ask = receiver
        .spans()
        .into_iter()
        .find(|s| s.name == "POST /v2/orders" && s.trace_id != CLIENT_TRACE)
        .expect("the ask's request span");
    assert_eq!(ask.parent_span_id, "", "a root span");
}

#[tokio::test]
async fn a_saga_finished_by_another_replica_links_to_the_trace_it_began_in() {
    let redis = RedisServer::start();
    let receiver = OtlpReceiver::start().await;
    let settlement = SettlementServer::start().await;
    let shared = |service: &str| {
        let mut env = env(&settlement, &receiver, service);
        env.extend([
            ("RELAYER_REDIS_URL", redis.url()),
            ("RELAYER_SAGA__LEASE_MS", "1000".to_owned()),
            ("RELAYER_SAGA__RECOVERY_INTERVAL_MS", "200".to_owned()),
        ]);
        env
    };
    let mut crashing = shared("relayer-a");
    crashing.push((
        "RELAYER_FAULT_INJECTION__CRASH_AT_STEP",
        "before:settle".to_owned(),
    ));
    let mut a = RelayerProcess::start_ready(&crashing);
    let b = RelayerProcess::start_ready(&shared("relayer-b"));
    let api = Api::default();
    let (_, buyer) = traders(&api, &b.base).await;

    let answer = place_traced(&api, &a.base, &buyer).await;
    assert!(answer.is_none(), "A aborted before answering: {answer:?}");
    wait_for("A to be gone", Duration::from_secs(5), async || {
        api.ready(&a.base).await == 0
    })
    .await;
    assert!(
        a.log_text()
            .contains("faultInjection.crashAtStep: aborting"),
        "{}",
        a.log_text()
    );
    a.kill();
    wait_for(
        "B to finish the saga",
        Duration::from_secs(20),
        async || sagas(&api, &b.base).await == json!([]),
    )
    .await;

    let recovery = wait_for_ok(
        "B's recovery span and its settlement",
        Duration::from_secs(20),
        async || {
            let spans = receiver.spans();
            let recovery = spans
                .iter()
                .find(|s| s.service == "relayer-b" && s.name == "order saga recovery")
                .ok_or("no recovery span yet")?
                .clone();
            let trace: Vec<&SpanRecord> = spans
                .iter()
                .filter(|s| s.trace_id == recovery.trace_id)
                .collect();
            if trace.iter().any(|s| s.name == "POST settlement") {
                Ok((recovery, spans.clone()))
            } else {
                Err("recovery's settlement span not yet".to_owned())
            }
        },
    )
    .await;
    let (recovery, spans) = recovery;
    assert_ne!(recovery.trace_id, CLIENT_TRACE, "a trace of its own");
    assert_eq!(recovery.parent_span_id, "", "a root span");
    assert_eq!(recovery.attr("step"), "settle", "{recovery:?}");
    assert_eq!(recovery.links.len(), 1, "{recovery:?}");
    let (linked_trace, linked_span) = &recovery.links[0];
    assert_eq!(linked_trace, CLIENT_TRACE, "linked to the order's trace");
    assert!(
        linked_span.len() == 16 && linked_span != "0000000000000000",
        "the link names a span: {linked_span}"
    );
    let settle_b = spans
        .iter()
        .find(|s| s.trace_id == recovery.trace_id && s.name == "order step settle")
        .expect("B's settle step in the recovery trace");
    assert_eq!(settle_b.parent_span_id, recovery.span_id);

    // The settlement request B sent carries the recovery's trace.
    let sent = settlement.traceparents();
    assert_eq!(sent.len(), 1, "A aborted before sending: {sent:?}");
    let (trace, _) = ids(sent[0].1.as_deref().expect("a traceparent"));
    assert_eq!(trace, recovery.trace_id);
}

#[tokio::test]
async fn without_the_variables_nothing_is_exported_and_no_traceparent_is_forwarded() {
    let receiver = OtlpReceiver::start().await;
    let settlement = SettlementServer::start().await;
    // The endpoint is set, but the exporter is `none`: traces stay off.
    let mut env = env(&settlement, &receiver, "relayer-off");
    env.push(("OTEL_TRACES_EXPORTER", "none".to_owned()));
    let _relayer = start_and_cross(&env).await;
    let sent = settlement.traceparents();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].1, None, "no traceparent forwarded: {sent:?}");
    // NB: 20 schedule delays (100 ms each) would have exported anything there was.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.spans(), Vec::new());
}

#[tokio::test]
async fn grpc_carries_the_same_spans() {
    let receiver = OtlpReceiver::start_grpc().await;
    let settlement = SettlementServer::start().await;
    let env = support::process::with(
        env(&settlement, &receiver, "relayer-grpc"),
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "grpc",
    );
    let _relayer = start_and_cross(&env).await;
    let spans = wait_for_ok(
        "the order's spans over gRPC",
        Duration::from_secs(20),
        async || {
            let spans = receiver.trace(CLIENT_TRACE);
            if spans.iter().any(|s| s.name == "POST settlement") {
                Ok(spans)
            } else {
                Err(format!("{spans:?}"))
            }
        },
    )
    .await;
    let request = one(&spans, "POST /v2/orders").expect("the request span");
    assert_eq!(request.parent_span_id, CLIENT_SPAN);
    assert_eq!(request.service, "relayer-grpc");
}

#[test]
fn a_protocol_this_build_lacks_stops_the_relayer_naming_the_variable() {
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_relayer"))
            .env_clear()
            .env("RELAYER_LISTEN", "127.0.0.1:0")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
            .env(var, value)
            .output()
            .expect("run the relayer");
        assert!(!out.status.success(), "{var}={value} refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{var}=\"{value}\" is not supported")),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
