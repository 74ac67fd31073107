//! The HTTP edge under abuse, against the real server on a `127.0.0.1:0` listener: made-up
//! methods and paths leave `/metrics` bounded, half-open connections (slowloris) neither stop
//! other clients nor outlive the header-read timeout, the connection cap holds new connections
//! back until one closes, and guessing the admin token meets 429.

mod support;

use std::time::Duration;

use relayer::ratelimit::config::TierLimit;
use reqwest::{Method, StatusCode};
use support::fixtures::ADMIN_TOKEN;
use support::server::Server;
use support::wait::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A cheap deterministic sequence (xorshift), so a failure can be replayed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

async fn metrics_text(server: &Server) -> String {
    server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics body")
}

async fn health(client: &reqwest::Client, base: &str) -> StatusCode {
    client
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health reaches the server")
        .status()
}

/// Resolves once the server has closed `socket` (end of stream or a reset), whatever it wrote
/// before closing.
async fn closed_by_peer(socket: &mut TcpStream) {
    let mut buf = [0_u8; 1024];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn made_up_methods_and_paths_leave_metrics_bounded() {
    let server = Server::start(|_| {}).await;
    let before = metrics_text(&server).await.len();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut sent = Vec::with_capacity(2_250);
    for i in 0..1_500 {
        let made_up_method = format!("M{:x}", next(&mut seed));
        let method = Method::from_bytes(made_up_method.as_bytes()).expect("a method token");
        sent.push(made_up_method);
        // Half on made-up paths, half on a real route with a made-up method (405).
        let path = if i % 2 == 0 {
            let segment = format!("{:x}", next(&mut seed));
            sent.push(segment.clone());
            format!("/x/{segment}")
        } else {
            "/v2/depth".to_owned()
        };
        let status = server
            .client
            .request(method, format!("{}{path}", server.base))
            .send()
            .await
            .expect("request reaches the server")
            .status();
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED,
            "{path}: {status}"
        );
    }
    let after = metrics_text(&server).await;
    let growth = after.len().saturating_sub(before);
    assert!(
        growth < 20_000,
        "1,500 made-up requests grew /metrics by {growth} bytes"
    );
    let leaked: Vec<&String> = sent.iter().filter(|v| after.contains(v.as_str())).collect();
    assert!(
        leaked.is_empty(),
        "made-up methods or path segments in /metrics: {leaked:?}"
    );
    assert!(
        after.contains(r#"method="other""#),
        "no `other` method label"
    );
    assert!(
        after.contains(r#"route="unmatched""#),
        "no `unmatched` route label"
    );
    server.stop().await;
}

#[tokio::test]
async fn half_open_connections_do_not_stop_other_clients_and_are_closed_by_the_timeout() {
    let server = Server::start(|c| c.limits.header_read_timeout_ms = 1_000).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut sockets = Vec::with_capacity(500);
    for _ in 0..500 {
        let mut socket = TcpStream::connect(&addr).await.expect("connect");
        socket
            .write_all(b"GET /health HTTP/1.1\r\nHost: relayer\r\nX-Slow: ")
            .await
            .expect("partial request");
        sockets.push(socket);
    }
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    assert_eq!(health(&fresh, &server.base).await, StatusCode::OK);
    // The header-read timeout (1 s) plus a margin: every half-open socket is closed by then.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut open = 0;
    for socket in &mut sockets {
        if tokio::time::timeout_at(deadline, closed_by_peer(socket))
            .await
            .is_err()
        {
            open += 1;
        }
    }
    assert_eq!(open, 0, "half-open connections still open 5 s later");
    assert_eq!(health(&fresh, &server.base).await, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn at_the_connection_cap_new_connections_wait_until_one_closes() {
    let server = Server::start(|c| c.limits.max_connections = 4).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let waiting = tokio::spawn({
        let (fresh, base) = (fresh.clone(), server.base.clone());
        async move { health(&fresh, &base).await }
    });
    // NB: a bounded wait for something that must not happen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a fifth connection was served past a cap of 4"
    );
    drop(held);
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once the held connections close")
        .expect("request task");
    assert_eq!(status, StatusCode::OK);
    wait_for(
        "normal service after the cap",
        Duration::from_secs(5),
        async || health(&fresh, &server.base).await == StatusCode::OK,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn guessing_the_admin_token_meets_429() {
    let server = Server::start(|c| {
        c.rate_limit.admin = Some(TierLimit {
            window_ms: 60_000,
            max_requests: 5,
        });
    })
    .await;
    let admin = |token: String| {
        server
            .client
            .get(format!("{}/admin/breakers", server.base))
            .bearer_auth(token)
            .send()
    };
    let mut statuses = Vec::new();
    for guess in 0..10 {
        let resp = admin(format!("guess-{guess:020}")).await.expect("request");
        statuses.push(resp.status());
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(statuses[5..], [StatusCode::TOO_MANY_REQUESTS; 5]);
    // Once limited, the right token is refused too: a 429 tells a guesser nothing.
    let resp = admin(ADMIN_TOKEN.to_owned()).await.expect("request");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["tier"], "admin");
    // Business routes keep their own budgets.
    assert_eq!(health(&server.client, &server.base).await, StatusCode::OK);
    server.stop().await;
}
