//! Graceful shutdown of the real binary: on SIGTERM readiness fails first, a request in flight
//! completes, new connections are refused once the listener closes, and the process exits 0.

mod support;

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use support::metrics::scrape;
use support::process::JsonLogRelayer;
use support::wait::{wait_for, wait_for_ok};

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_fails_readiness_first() {
    let mut relayer = JsonLogRelayer::start(&[
        ("RELAYER_FAULT_INJECTION__ADDED_LATENCY_MS", "1500"),
        ("RELAYER_SHUTDOWN__READINESS_DELAY_MS", "700"),
        ("RELAYER_SHUTDOWN__DRAIN_TIMEOUT_MS", "5000"),
    ]);
    let base = relayer.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let ready = client
        .get(format!("{base}/ready"))
        .send()
        .await
        .expect("ready before");
    assert_eq!(ready.status(), StatusCode::OK);

    // A slow request (1.5 s of injected latency) is in flight when SIGTERM arrives.
    let slow = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/v2/depth?marketKey=80002:1");
        async move { client.get(url).send().await }
    });
    wait_for(
        "the slow request to be in flight",
        Duration::from_secs(5),
        async || {
            scrape(&client, &base)
                .await
                .value("foresight_http_requests_in_flight", &[])
                == 1.0
        },
    )
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &relayer.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());

    // Within the readiness delay, /ready answers 503 on a fresh connection.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let during = wait_for_ok(
        "/ready to answer 503",
        Duration::from_secs(5),
        async || match fresh.get(format!("{base}/ready")).send().await {
            Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => Ok(resp),
            Ok(resp) => Err(format!("/ready answered {}", resp.status())),
            Err(e) => panic!("ready during drain: {e}"),
        },
    )
    .await;
    let body: serde_json::Value = during.json().await.expect("json");
    assert_eq!(body["status"], "draining");

    // After the delay the listener is closed: a new connection is refused or answered 503.
    // NB: a connection accepted just as the listener closes fails otherwise; that is the
    // transition, so the wait goes on, and the closed state is checked once more after it.
    let closed = async || match fresh.get(format!("{base}/health")).send().await {
        Err(e) if e.is_connect() => Ok(()),
        Err(e) => Err(format!("expected a refused connection, got {e}")),
        Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => Ok(()),
        Ok(resp) => {
            assert_eq!(resp.status(), StatusCode::OK, "/health during the delay");
            Err("/health still answers 200".to_owned())
        }
    };
    wait_for_ok("the listener to close", Duration::from_secs(5), closed).await;
    match fresh.get(format!("{base}/health")).send().await {
        Err(e) => assert!(e.is_connect(), "expected a refused connection, got {e}"),
        Ok(resp) => assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE),
    }
    assert!(
        !slow.is_finished(),
        "the listener closed while the slow request was still in flight"
    );

    // The in-flight request completes normally.
    let resp = slow
        .await
        .expect("join")
        .expect("in-flight request completes");
    assert_eq!(resp.status(), StatusCode::OK);
    let depth: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(depth["marketKey"], "80002:1");

    // And the process exits cleanly, well before the drain timeout.
    let exit = wait_for_ok("the relayer to exit", Duration::from_secs(10), async || {
        relayer.try_wait().ok_or_else(|| "still running".to_owned())
    })
    .await;
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn a_bad_config_value_stops_the_process_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_relayer"))
        .env_clear()
        .env("RELAYER_LIMITS__MAX_BODY_BYTES", "1")
        .output()
        .expect("run relayer");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("limits.maxBodyBytes"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_relayer"))
        .env_clear()
        .env("RELAYER_NO_SUCH_KEY", "1")
        .output()
        .expect("run relayer");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("noSuchKey"), "{stderr}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("relayer.yaml");
    std::fs::write(
        &file,
        "listen: 127.0.0.1:0\nshutdown:\n  drainTimeoutMs: nope\n",
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_relayer"))
        .env_clear()
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run relayer");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("drainTimeoutMs"), "{stderr}");
}
