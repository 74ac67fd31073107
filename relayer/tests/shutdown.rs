//! Graceful shutdown of the real binary: on SIGTERM readiness fails first, a request in flight
//! completes, new connections are refused once the listener closes, and the process exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

/// Kills the relayer if the test fails before it exits.
struct Relayer(Child);

impl Drop for Relayer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on an ephemeral loopback port and reads the bound address from its JSON
/// log line.
fn start(env: &[(&str, &str)]) -> (Relayer, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relayer"))
        .env_clear()
        .env("RELAYER_LISTEN", "127.0.0.1:0")
        .env("RELAYER_LOG__FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the relayer binary");
    let stdout = child.stdout.take().expect("stdout is piped");
    let relayer = Relayer(child);
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the relayer logs its address before exiting")
            .expect("read a log line");
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if event["fields"]["message"] == "relayer listening" {
            break event["fields"]["addr"]
                .as_str()
                .expect("addr field")
                .to_owned();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (relayer, format!("http://{addr}"))
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_fails_readiness_first() {
    let (mut relayer, base) = start(&[
        ("RELAYER_FAULT_INJECTION__ADDED_LATENCY_MS", "1500"),
        ("RELAYER_SHUTDOWN__READINESS_DELAY_MS", "700"),
        ("RELAYER_SHUTDOWN__DRAIN_TIMEOUT_MS", "5000"),
    ]);
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = Command::new("kill")
        .args(["-TERM", &relayer.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());

    // Within the readiness delay, /ready answers 503 on a fresh connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let during = fresh
        .get(format!("{base}/ready"))
        .send()
        .await
        .expect("ready during drain");
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = during.json().await.expect("json");
    assert_eq!(body["status"], "draining");

    // After the delay the listener is closed: a new connection is refused or answered 503.
    tokio::time::sleep(Duration::from_millis(600)).await;
    match fresh.get(format!("{base}/health")).send().await {
        Err(e) => assert!(e.is_connect(), "expected a refused connection, got {e}"),
        Ok(resp) => assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE),
    }

    // The in-flight request completes normally.
    let resp = slow
        .await
        .expect("join")
        .expect("in-flight request completes");
    assert_eq!(resp.status(), StatusCode::OK);
    let depth: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(depth["marketKey"], "80002:1");

    // And the process exits cleanly, well before the drain timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = relayer.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "relayer did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
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
