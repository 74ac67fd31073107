//! The pure gate logic on literal expositions and windows, and the HTTP client against a
//! local socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::runner::{Budget, HookEnv, ask_webhooks, get, get_limited};
use super::*;
use crate::crd::{RelativeGate, WebhookVerdict};

/// The shape of a relayer's `/metrics` (OpenMetrics text from prometheus-client).
fn exposition(ok: u64, errors: u64, fast: u64, slow: u64, in_flight: u64) -> String {
    let total = fast + slow;
    format!(
        r#"# HELP foresight_http_requests HTTP requests answered, by method, route template and status.
# TYPE foresight_http_requests counter
foresight_http_requests_total{{method="GET",route="/v2/depth",status="200"}} {ok}
foresight_http_requests_total{{method="POST",route="/v2/orders",status="500"}} {errors}
foresight_http_requests_total{{method="GET",route="/ready",status="200"}} 999
foresight_http_requests_total{{method="GET",route="/metrics",status="200"}} 50
# TYPE foresight_http_request_duration_seconds histogram
# UNIT foresight_http_request_duration_seconds seconds
foresight_http_request_duration_seconds_sum{{method="GET",route="/v2/depth"}} 1.5
foresight_http_request_duration_seconds_count{{method="GET",route="/v2/depth"}} {total}
foresight_http_request_duration_seconds_bucket{{le="0.001",method="GET",route="/v2/depth"}} {fast}
foresight_http_request_duration_seconds_bucket{{le="0.256",method="GET",route="/v2/depth"}} {fast}
foresight_http_request_duration_seconds_bucket{{le="0.512",method="GET",route="/v2/depth"}} {total}
foresight_http_request_duration_seconds_bucket{{le="+Inf",method="GET",route="/v2/depth"}} {total}
foresight_http_request_duration_seconds_bucket{{le="0.001",method="GET",route="/ready"}} 999
foresight_http_request_duration_seconds_bucket{{le="+Inf",method="GET",route="/ready"}} 999
# TYPE foresight_http_requests_in_flight gauge
foresight_http_requests_in_flight {in_flight}
# TYPE foresight_circuit_breaker_state gauge
foresight_circuit_breaker_state{{name="settlement"}} 1
foresight_circuit_breaker_state{{name="other"}} 2
# TYPE foresight_saga_executions counter
foresight_saga_executions_total{{saga="order",outcome="completed"}} 8
foresight_saga_executions_total{{saga="order",outcome="compensated"}} 2
# EOF
"#
    )
}

fn spec() -> GateSpec {
    serde_json::from_value(serde_json::json!({
        "samples": 3, "failureLimit": 1, "minRequests": 10,
        "maxErrorRateBasisPoints": 100, "maxP99LatencyMs": 300,
    }))
    .expect("gate spec")
}

#[test]
fn parse_reads_traffic_but_not_probes_or_scrapes() {
    let s = parse(&exposition(90, 10, 95, 5, 3)).expect("parse");
    assert_eq!(s.requests, 100.0);
    assert_eq!(s.errors, 10.0);
    assert_eq!(s.in_flight, 3.0);
    assert_eq!(s.open_breakers, 1.0, "half-open is not open");
    assert_eq!(s.sagas["compensated"], 2.0);
    assert_eq!(
        s.latency_buckets,
        vec![
            (0.001, 95.0),
            (0.256, 95.0),
            (0.512, 100.0),
            (f64::INFINITY, 100.0)
        ]
    );
    assert_eq!(
        parse("").expect("empty"),
        Scrape::default(),
        "absent families are zero"
    );
}

#[test]
fn parse_handles_escapes_and_rejects_garbage_with_the_line() {
    let line = r#"m{a="x\"y,z}",b="\\"} 2 1700000000"#;
    let s = parse_line(line, 1).expect("parse").expect("a sample");
    assert_eq!(
        s.labels,
        vec![("a".into(), "x\"y,z}".into()), ("b".into(), "\\".into())]
    );
    assert_eq!(s.value, 2.0);
    let err = parse("ok 1\nfoo{a=\"1\"} notanumber\n").expect_err("bad value");
    assert_eq!(err.line, 2);
    assert!(parse("m{a=1} 1").is_err());
}

#[test]
fn deltas_take_the_window_and_survive_a_restart() {
    let before = parse(&exposition(100, 0, 100, 0, 1)).expect("parse");
    let after = parse(&exposition(180, 20, 190, 10, 1)).expect("parse");
    let w = after.delta(&before);
    assert_eq!((w.requests, w.errors), (100.0, 20.0));
    assert_eq!(w.error_rate(), 0.2);
    assert_eq!(w.p99_ms(), Some(512.0));
    let restarted = parse(&exposition(5, 0, 5, 0, 1)).expect("parse");
    let w = restarted.delta(&after);
    assert_eq!(
        w.requests, 5.0,
        "after a reset the later value is the increase"
    );
    assert_eq!(w.p99_ms(), Some(1.0));
}

fn window(requests: f64, errors: f64, slow: f64) -> Window {
    Window {
        requests,
        errors,
        latency_buckets: vec![
            (0.01, requests - slow),
            (1.0, requests),
            (f64::INFINITY, requests),
        ],
        ..Window::default()
    }
}

#[test]
fn judge_passes_fails_and_calls_too_little_traffic_inconclusive() {
    assert_eq!(judge(&spec(), &window(100.0, 0.0, 0.0), None), Sample::Pass);
    match judge(&spec(), &window(100.0, 5.0, 0.0), None) {
        Sample::Fail(why) => assert!(why.contains("error rate 5.00% > 1.00%"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    match judge(&spec(), &window(100.0, 0.0, 5.0), None) {
        Sample::Fail(why) => assert!(why.contains("p99 latency 1000.0ms > 300ms"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(matches!(
        judge(&spec(), &window(9.0, 9.0, 9.0), None),
        Sample::Inconclusive(_)
    ));
    let mut breakers = spec();
    breakers.max_open_breakers = Some(0);
    let mut quiet = window(0.0, 0.0, 0.0);
    quiet.open_breakers = 1.0;
    assert!(
        matches!(judge(&breakers, &quiet, None), Sample::Fail(_)),
        "an open breaker fails even without traffic"
    );
}

#[test]
fn relative_gates_compare_with_the_active_colour_when_it_has_traffic() {
    let mut relative = spec();
    relative.max_error_rate_basis_points = None;
    relative.relative_to_active = Some(RelativeGate {
        error_rate_margin_basis_points: Some(100),
        p99_latency_margin_percent: Some(50),
    });
    let active = window(100.0, 3.0, 0.0);
    assert_eq!(
        judge(&relative, &window(100.0, 4.0, 0.0), Some(&active)),
        Sample::Pass
    );
    assert!(matches!(
        judge(&relative, &window(100.0, 5.0, 0.0), Some(&active)),
        Sample::Fail(_)
    ));
    let idle_active = window(2.0, 0.0, 0.0);
    assert_eq!(
        judge(&relative, &window(100.0, 5.0, 0.0), Some(&idle_active)),
        Sample::Pass,
        "no comparison against a colour without traffic"
    );
}

#[test]
fn a_tally_passes_after_enough_samples_and_fails_past_the_limit() {
    let spec = spec();
    let mut t = Tally::new("prePromotion", "r2");
    t.record(&spec, Sample::Pass, "v".into());
    t.record(&spec, Sample::Fail("x".into()), "v".into());
    assert!(!t.decided());
    t.record(&spec, Sample::Pass, "v".into());
    assert_eq!(t.0.verdict, GateVerdict::Passed);

    let mut t = Tally::new("prePromotion", "r2");
    t.record(&spec, Sample::Fail("error rate 50%".into()), "v".into());
    t.record(&spec, Sample::Fail("error rate 50%".into()), "v".into());
    assert_eq!(t.0.verdict, GateVerdict::Failed);
    assert!(
        t.0.reason
            .as_deref()
            .is_some_and(|r| r.contains("failureLimit 1"))
    );
}

#[test]
fn inconclusive_samples_wait_pass_or_fail_as_the_policy_says() {
    let mut spec = spec();
    spec.inconclusive_limit = 2;
    let quiet = || Sample::Inconclusive("1 requests < minRequests 10".into());
    let mut wait = Tally::new("g", "r");
    for _ in 0..2 {
        wait.record(&spec, quiet(), "v".into());
    }
    assert!(!wait.decided(), "waiting within the limit");
    wait.record(&spec, quiet(), "v".into());
    assert_eq!(wait.0.verdict, GateVerdict::Failed);

    spec.inconclusive = InconclusivePolicy::Pass;
    let mut pass = Tally::new("g", "r");
    for _ in 0..3 {
        pass.record(&spec, quiet(), "v".into());
    }
    assert_eq!(pass.0.verdict, GateVerdict::Passed);

    spec.inconclusive = InconclusivePolicy::Fail;
    let mut fail = Tally::new("g", "r");
    fail.record(&spec, quiet(), "v".into());
    fail.record(&spec, quiet(), "v".into());
    assert_eq!(fail.0.verdict, GateVerdict::Failed);
}

#[test]
fn scrape_errors_have_their_own_budget() {
    let spec = spec();
    let mut t = Tally::new("g", "r");
    for _ in 0..spec.scrape_error_limit {
        t.scrape_error(&spec, "connection refused");
    }
    assert!(!t.decided());
    t.scrape_error(&spec, "connection refused");
    assert_eq!(t.0.verdict, GateVerdict::Failed);
}

#[test]
fn an_exposition_gives_one_series_by_name_and_labels_and_a_missing_one_is_an_error() {
    let text = exposition(90, 10, 95, 5, 3);
    let e = Exposition::parse(&text).expect("parse");
    let depth = [("route", "/v2/depth"), ("status", "200")];
    assert_eq!(e.value("foresight_http_requests_total", &depth), Ok(90.0));
    assert_eq!(e.value("foresight_http_requests_in_flight", &[]), Ok(3.0));
    assert_eq!(
        e.sum("foresight_http_requests_total", &[]),
        Ok(90.0 + 10.0 + 999.0 + 50.0)
    );
    assert_eq!(
        e.value("foresight_http_request_total", &depth),
        Err(SeriesError::Missing(
            "foresight_http_request_total{route=\"/v2/depth\",status=\"200\"}".into()
        )),
        "a misspelt name is not 0"
    );
    assert!(matches!(
        e.sum("foresight_saga_executions_total", &[("outcome", "manual")]),
        Err(SeriesError::Missing(_))
    ));
    assert!(matches!(
        e.value("foresight_circuit_breaker_state", &[]),
        Err(SeriesError::Ambiguous { count: 2, .. })
    ));
    assert!(
        e.samples().iter().all(|s| s.name.starts_with("foresight_")),
        "comments and # EOF are no samples"
    );
    assert!(Exposition::parse("x{a=1} 2").is_err());
}

/// Answers one request on a fresh local port with `raw`, then `forever` (repeated until the
/// client hangs up) when given, then closes.
async fn answer_once(raw: &'static [u8], forever: Option<Vec<u8>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        if stream.write_all(raw).await.is_err() {
            return;
        }
        if let Some(chunk) = forever {
            while stream.write_all(&chunk).await.is_ok() {}
        }
        let _ = stream.shutdown().await;
    });
    addr
}

#[tokio::test]
async fn responses_are_read_plain_or_chunked() {
    let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    let addr = answer_once(plain, None).await;
    assert_eq!(
        get(&Budget::default(), addr, "/metrics").await,
        Ok((200, "hello".into()))
    );
    let chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n";
    let addr = answer_once(chunked, None).await;
    assert_eq!(
        get(&Budget::default(), addr, "/metrics").await,
        Ok((503, "hello".into()))
    );
    let addr = answer_once(b"garbage", None).await;
    assert!(get(&Budget::default(), addr, "/metrics").await.is_err());
}

#[tokio::test]
async fn a_body_over_the_cap_fails_while_it_streams_not_at_the_timeout() {
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    // 1 KiB chunks, without end.
    let mut chunk = b"400\r\n".to_vec();
    chunk.extend_from_slice(&[b'#'; 1024]);
    chunk.extend_from_slice(b"\r\n");
    let addr = answer_once(head, Some(chunk)).await;
    // NB: the body never ends, so a cap applied after reading would end in the timeout.
    let result = get_limited(&Budget::default(), addr, "/metrics", 64 * 1024).await;
    let error = result.expect_err("over the cap");
    assert!(error.contains("longer than 65536 bytes"), "{error}");
}

#[tokio::test]
async fn a_chunk_size_of_u64_max_is_an_error_not_a_panic() {
    let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc\r\n";
    let addr = answer_once(huge, None).await;
    let error = get(&Budget::default(), addr, "/metrics")
        .await
        .expect_err("a chunk that cannot be read");
    assert!(error.starts_with("read:"), "{error}");
    let longer =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc\r\n";
    let addr = answer_once(longer, None).await;
    assert!(get(&Budget::default(), addr, "/metrics").await.is_err());
}

#[tokio::test]
async fn a_body_trickled_without_end_is_cut_off_at_one_deadline_for_the_whole_exchange() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        // One byte every 100 ms: every read is quick, the whole never ends.
        for _ in 0..100 {
            if stream.write_all(b"1\r\n#\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let started = std::time::Instant::now();
    let error = get(&Budget::default(), addr, "/metrics")
        .await
        .expect_err("cut off");
    let took = started.elapsed();
    assert!(error.contains("within 2s"), "{error}");
    assert!(
        took < std::time::Duration::from_secs(4),
        "one deadline for the exchange, not one per read: {took:?}"
    );
}

#[tokio::test]
async fn exchanges_wait_for_a_permit_of_the_shared_budget() {
    // A pod that answers only after 300 ms.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let budget = Budget::new(1);
    let first = {
        let budget = budget.clone();
        tokio::spawn(async move { get(&budget, addr, "/metrics").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        budget.in_use(),
        1,
        "the first exchange holds the only permit"
    );
    let started = std::time::Instant::now();
    assert_eq!(get(&budget, addr, "/metrics").await, Ok((200, "ok".into())));
    // NB: waited for the first (about 200 ms left), then its own 300 ms.
    assert!(started.elapsed() >= std::time::Duration::from_millis(450));
    assert_eq!(first.await.expect("join"), Ok((200, "ok".into())));
    assert_eq!(budget.in_use(), 0, "permits are given back");
    assert_eq!(
        Budget::new(0).in_use(),
        0,
        "a budget has at least one permit"
    );
}

/// A webhook receiver on a fresh local port: answers the calls with `statuses` in turn (the
/// last one repeated), or never when `statuses` is empty; keeps each call's body.
async fn webhook_receiver(statuses: Vec<u16>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        let mut call = 0usize;
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            let body = loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break Some(body.to_owned());
                    }
                }
            };
            let Some(body) = body else { continue };
            seen.lock().expect("bodies").push(body);
            let Some(status) = statuses
                .get(call.min(statuses.len().saturating_sub(1)))
                .copied()
            else {
                // Never answers: hold the connection open until the client gives up.
                tokio::spawn(async move {
                    let mut sink = [0u8; 16];
                    let _ = stream.read(&mut sink).await;
                });
                continue;
            };
            call += 1;
            let answer =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (addr, bodies)
}

fn hook(addr: SocketAddr, retries: i32) -> crate::crd::WebhookSpec {
    crate::crd::WebhookSpec {
        name: "confirm".into(),
        url: format!("http://{addr}/confirm"),
        timeout_seconds: 1,
        retries,
    }
}

fn loopback_only() -> HookEnv {
    HookEnv {
        context: serde_json::json!({ "name": "market", "gate": "prePromotion" }),
        namespace: "prod".into(),
        allowed: Arc::new(|ip: std::net::IpAddr| ip.is_loopback()),
    }
}

#[tokio::test]
async fn a_webhook_answering_500_fails_after_its_retries_with_backoff() {
    let (addr, bodies) = webhook_receiver(vec![500]).await;
    let specs = [hook(addr, 2)];
    let mut records = webhook::records(&specs, &[]);
    let started = std::time::Instant::now();
    ask_webhooks(&specs, &mut records, &loopback_only()).await;
    assert_eq!(records[0].verdict, WebhookVerdict::Failed, "{records:?}");
    assert_eq!(records[0].calls, 3);
    assert!(
        started.elapsed() >= webhook::backoff(1) + webhook::backoff(2),
        "retried with backoff: {:?}",
        started.elapsed()
    );
    assert_eq!(
        webhook::decide(&specs, &records),
        webhook::Decision::Fail("webhook confirm failed 3 calls (2 retries): HTTP 500".into())
    );
    let bodies = bodies.lock().expect("bodies").clone();
    assert_eq!(bodies.len(), 3);
    let context: serde_json::Value = serde_json::from_str(&bodies[0]).expect("a JSON body");
    assert_eq!(context["gate"], "prePromotion");
}

#[tokio::test]
async fn a_webhook_that_holds_waits_until_it_answers_200() {
    let (addr, _) = webhook_receiver(vec![423, 423, 200]).await;
    let specs = [hook(addr, 2)];
    let mut records = webhook::records(&specs, &[]);
    for expected in [
        WebhookVerdict::Held,
        WebhookVerdict::Held,
        WebhookVerdict::Passed,
    ] {
        ask_webhooks(&specs, &mut records, &loopback_only()).await;
        assert_eq!(records[0].verdict, expected, "{records:?}");
    }
    assert_eq!(
        records[0].calls, 3,
        "a hold is not retried within the interval"
    );
    assert_eq!(webhook::decide(&specs, &records), webhook::Decision::Pass);
    // A passed webhook is not asked again.
    ask_webhooks(&specs, &mut records, &loopback_only()).await;
    assert_eq!(records[0].calls, 3);
}

#[tokio::test]
async fn a_webhook_outside_the_allowed_networks_is_never_contacted() {
    let (addr, bodies) = webhook_receiver(vec![200]).await;
    let specs = [hook(addr, 0)];
    let mut records = webhook::records(&specs, &[]);
    let nowhere = HookEnv::default();
    ask_webhooks(&specs, &mut records, &nowhere).await;
    assert_eq!(records[0].verdict, WebhookVerdict::Failed);
    let answer = records[0].last_answer.clone().unwrap_or_default();
    assert!(
        answer.contains("none inside --webhook-networks"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        bodies.lock().expect("bodies").is_empty(),
        "no call reached it"
    );
}

#[tokio::test]
async fn a_webhook_that_never_answers_times_out() {
    let (addr, _) = webhook_receiver(Vec::new()).await;
    let specs = [hook(addr, 0)];
    let mut records = webhook::records(&specs, &[]);
    let started = std::time::Instant::now();
    ask_webhooks(&specs, &mut records, &loopback_only()).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(records[0].verdict, WebhookVerdict::Failed);
    let answer = records[0].last_answer.clone().unwrap_or_default();
    assert!(answer.contains("no whole answer within 1s"), "{answer}");
}

#[test]
fn webhook_urls_are_checked_like_the_schema_says() {
    let target = |url: &str| {
        crate::crd::WebhookSpec {
            name: "w".into(),
            url: url.into(),
            timeout_seconds: 1,
            retries: 0,
        }
        .target("spec.w")
    };
    let ok = target("http://approver.ns.svc:8080/confirm?x=1").expect("valid");
    assert_eq!(
        (ok.host.as_str(), ok.port, ok.path.as_str()),
        ("approver.ns.svc", 8080, "/confirm?x=1")
    );
    let bare = target("http://10.0.0.5").expect("valid");
    assert_eq!((bare.port, bare.path.as_str()), (80, "/"));
    let v6 = target("http://[fd00::1]:9000/x").expect("valid");
    assert_eq!((v6.host.as_str(), v6.port), ("fd00::1", 9000));
    for bad in [
        "https://approver/confirm",
        "http://user:pw@approver/",
        "http://approver/with space",
        "http://approver/\r\nX: y",
        "http://approver:0/",
        "http://approver:99999/",
        "http://[not-v6]/",
        "http:///path",
        "ftp://approver/",
    ] {
        let error = target(bad).expect_err(bad);
        assert!(error.starts_with("spec.w.url"), "{bad}: {error}");
    }
}
