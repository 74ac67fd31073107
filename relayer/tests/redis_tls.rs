//! Redis over TLS with AUTH, and the relayer's other secrets, tested on the `relayer` binary
//! against real servers started here:
//!
//! - `rediss://` with the right CA (`redis.caFile`) and password (`redis.password`) becomes
//!   ready and an order round-trips through Redis;
//! - a certificate from an unrelated CA (or from a private CA when only the web PKI roots are
//!   trusted), a wrong or missing password, and `rediss://` to a plain Redis each keep the
//!   relayer not ready (it starts: see the `store::redis` module doc), with a log line naming
//!   the keys to check and never the password;
//! - config errors found at start (a CA with `redis://`, a CA file that is not PEM, two
//!   passwords) stop the relayer with a message naming the key;
//! - every settlement POST carries `settlement.credentialHeader: settlement.credential`;
//! - `--print-config` shows no secret;
//! - the same TLS and AUTH on a Redis Cluster (`redis.mode: cluster`).
//!
//! Uses `support::tls_redis` (a TLS-only `redis-server` with `requirepass`, CAs from rcgen),
//! `support::redis`, `support::process`, `support::settle` and `support::api`.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::api::{Api, Trader};
use support::cluster::RedisCluster;
use support::fixtures::{ADMIN_TOKEN, MARKET, Order, address};
use support::process::RelayerProcess;
use support::redis::RedisServer;
use support::settle::SettlementServer;
use support::tls_redis::{TestCa, TlsRedisServer};
use support::wait::wait_for_ok;

/// The Redis password of these tests; it must never show in a log.
const PASSWORD: &str = "s3cret-redis-pass-7f1c";
/// How long a relayer that must not become ready is watched after its first failed probe.
const NOT_READY_WATCH: Duration = Duration::from_secs(2);
/// Bound on becoming ready, or on logging why not.
const STARTUP: Duration = Duration::from_secs(20);

/// The environment of a relayer on `url` with `extra`.
fn env(url: String, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("RELAYER_REDIS_URL", url),
        ("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ];
    env.extend(extra.iter().cloned());
    env
}

/// Waits (bounded) until the relayer logs that Redis does not answer, checking that `/ready`
/// is never 200 meanwhile and for [`NOT_READY_WATCH`] after; returns the log.
async fn never_ready(relayer: &RelayerProcess) -> String {
    let api = Api::default();
    wait_for_ok(
        "the relayer to log why it is not ready",
        STARTUP,
        async || {
            let ready = api.ready(&relayer.base).await;
            assert_ne!(ready, 200, "ready; log:\n{}", relayer.log_text());
            let log = relayer.log_text();
            if log.contains("redis does not answer") {
                Ok(())
            } else {
                Err(format!("/ready {ready}; log so far:\n{log}"))
            }
        },
    )
    .await;
    let until = Instant::now() + NOT_READY_WATCH;
    while Instant::now() < until {
        let ready = api.ready(&relayer.base).await;
        assert!(
            ready == 503,
            "/ready answered {ready}, not 503; log:\n{}",
            relayer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = relayer.log_text();
    assert!(
        !log.contains(PASSWORD),
        "the password is in the log:\n{log}"
    );
    log
}

/// A trader with collateral and shares of [`MARKET`].
async fn funded_trader(api: &Api, base: &str, n: usize) -> Trader {
    let user = address(n);
    let trader = api.trader(base, &user).await;
    api.deposit(base, &user, "collateral", 1_000_000).await;
    api.deposit(base, &user, MARKET, 1_000).await;
    trader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_the_right_ca_and_password_is_ready_and_serves_through_redis() {
    let redis = TlsRedisServer::start(PASSWORD);
    let relayer = RelayerProcess::start(&env(
        redis.url(),
        &[
            ("RELAYER_REDIS__PASSWORD", PASSWORD.to_owned()),
            (
                "RELAYER_REDIS__CA_FILE",
                redis.ca.cert_file.display().to_string(),
            ),
            // The limiter counts in the store's Redis, over the same connection; `deny` turns
            // a limiter that cannot reach it into 503s.
            ("RELAYER_RATE_LIMIT__ENABLED", "true".to_owned()),
            ("RELAYER_RATE_LIMIT__ON_STORE_ERROR", "deny".to_owned()),
        ],
    ));
    let api = Api::default();
    wait_for_ok("the relayer to be ready", STARTUP, async || {
        match api.ready(&relayer.base).await {
            200 => Ok(()),
            other => Err(format!("/ready {other}; log:\n{}", relayer.log_text())),
        }
    })
    .await;

    let trader = funded_trader(&api, &relayer.base, 1).await;
    let order = Order::buy()
        .id("tls-1")
        .user(&trader.user_id)
        .price(400_000)
        .amount(3)
        .json();
    let (status, body) = api
        .place(&relayer.base, &trader, &order)
        .await
        .expect("placement answered");
    assert_eq!(status, 201, "{body}");
    let (status, read) = api
        .get(&format!("{}/v2/orders/tls-1", relayer.base), &trader)
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["amount"], "3", "{read}");
    // The order and the limiter's counters are in this Redis (read back over TLS with the
    // password by redis-cli).
    let keys = redis.cli(&["--scan"]).expect("redis-cli over TLS");
    assert!(
        keys.lines()
            .any(|k| k.starts_with("foresight:") && k.contains(":o:")),
        "no order key in Redis: {keys}"
    );
    assert!(
        keys.lines().any(|k| k.starts_with("{foresight:rl}")),
        "no rate-limit counter in Redis: {keys}"
    );
    assert!(!relayer.log_text().contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_verify_never_lets_the_relayer_be_ready() {
    let redis = TlsRedisServer::start(PASSWORD);
    let unrelated = TestCa::generate(redis.dir(), "unrelated-ca");
    let wrong_ca = RelayerProcess::start(&env(
        redis.url(),
        &[
            ("RELAYER_REDIS__PASSWORD", PASSWORD.to_owned()),
            (
                "RELAYER_REDIS__CA_FILE",
                unrelated.cert_file.display().to_string(),
            ),
        ],
    ));
    // Without `redis.caFile` only the web PKI roots are trusted, and they do not know the
    // test CA either.
    let web_roots = RelayerProcess::start(&env(
        redis.url(),
        &[("RELAYER_REDIS__PASSWORD", PASSWORD.to_owned())],
    ));
    for relayer in [&wrong_ca, &web_roots] {
        let log = never_ready(relayer).await;
        assert!(
            log.contains("invalid peer certificate") && log.contains("redis.caFile"),
            "the log names neither the certificate nor redis.caFile:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_password_never_lets_the_relayer_be_ready() {
    let redis = TlsRedisServer::start(PASSWORD);
    let ca = redis.ca.cert_file.display().to_string();
    let wrong = "not-the-password-93ab";
    let wrong_password = RelayerProcess::start(&env(
        redis.url(),
        &[
            ("RELAYER_REDIS__PASSWORD", wrong.to_owned()),
            ("RELAYER_REDIS__CA_FILE", ca.clone()),
        ],
    ));
    let no_password = RelayerProcess::start(&env(redis.url(), &[("RELAYER_REDIS__CA_FILE", ca)]));
    for relayer in [&wrong_password, &no_password] {
        let log = never_ready(relayer).await;
        assert!(
            (log.contains("AuthenticationFailed") || log.contains("NOAUTH"))
                && log.contains("redis.password"),
            "the log does not say that authentication failed:\n{log}"
        );
        assert!(
            !log.contains(wrong),
            "the wrong password is in the log:\n{log}"
        );
    }
}

/// The same TLS and AUTH on a Redis Cluster (`redis.mode: cluster`): the relayer reaches
/// every master through one seed over TLS with the password, its orders and counters spread
/// over them; with a wrong password it never becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_a_password_serves_and_refuses_a_wrong_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::generate(dir.path(), "cluster-ca");
    let cluster = RedisCluster::start_secured(&ca, PASSWORD);
    let ca_file = ca.cert_file.display().to_string();
    let cluster_env = |password: &str| {
        env(
            cluster.seed_url(),
            &[
                ("RELAYER_REDIS__MODE", "cluster".to_owned()),
                ("RELAYER_REDIS__PASSWORD", password.to_owned()),
                ("RELAYER_REDIS__CA_FILE", ca_file.clone()),
                ("RELAYER_RATE_LIMIT__ENABLED", "true".to_owned()),
                ("RELAYER_RATE_LIMIT__ON_STORE_ERROR", "deny".to_owned()),
            ],
        )
    };
    let relayer = RelayerProcess::start(&cluster_env(PASSWORD));
    let api = Api::default();
    wait_for_ok("the relayer to be ready", STARTUP, async || {
        match api.ready(&relayer.base).await {
            200 => Ok(()),
            other => Err(format!("/ready {other}; log:\n{}", relayer.log_text())),
        }
    })
    .await;
    for n in 0..6 {
        let trader = funded_trader(&api, &relayer.base, 10 + n).await;
        let id = format!("tls-cluster-{n}");
        let order = Order::buy()
            .id(&id)
            .user(&trader.user_id)
            .price(400_000)
            .amount(3)
            .json();
        let (status, body) = api
            .place(&relayer.base, &trader, &order)
            .await
            .expect("placement answered");
        assert_eq!(status, 201, "{body}");
        let (status, read) = api
            .get(&format!("{}/v2/orders/{id}", relayer.base), &trader)
            .await;
        assert_eq!(
            (status, &read["amount"]),
            (200, &serde_json::json!("3")),
            "{read}"
        );
    }
    let keys = cluster.keys_per_master();
    assert!(
        keys.values().filter(|&&n| n > 0).count() >= 2,
        "the users' keys sit on several masters: {keys:?}"
    );
    assert!(!relayer.log_text().contains(PASSWORD));

    let wrong = "not-the-password-93ab";
    let refused = RelayerProcess::start(&cluster_env(wrong));
    let log = never_ready(&refused).await;
    assert!(
        !log.contains(wrong),
        "the wrong password is in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_to_a_plain_redis_is_never_ready_and_says_tls_failed() {
    let redis = RedisServer::start();
    let relayer = RelayerProcess::start(&env(format!("rediss://127.0.0.1:{}/", redis.port()), &[]));
    let log = never_ready(&relayer).await;
    // NB: a plain Redis mostly never answers the handshake (it waits for the end of a command
    // line), else it answers an error that is no TLS record: either way the log says TLS.
    assert!(
        (log.contains("without TLS") || log.contains("TLS failed")) && log.contains("redisUrl"),
        "the log does not say that TLS failed:\n{log}"
    );
}

/// Variables of a relayer process.
type Env = Vec<(&'static str, String)>;

/// The relayer binary run with `args` and `env` (and nothing else of this environment) until
/// it exits; killed if it runs past a bound, also when the test panics.
struct Run {
    child: Child,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to its end: whether it succeeded, and its stdout and stderr.
fn run_relayer(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_relayer"))
        .env_clear()
        .env("RELAYER_LISTEN", "127.0.0.1:0")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the relayer");
    let mut run = Run { child };
    let deadline = Instant::now() + STARTUP;
    let status = loop {
        if let Some(status) = run.child.try_wait().expect("wait on the relayer") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the relayer did not exit within {STARTUP:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |pipe: Option<&mut dyn std::io::Read>| {
        let mut text = String::new();
        if let Some(p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    };
    let stdout = read(
        run.child
            .stdout
            .as_mut()
            .map(|p| p as &mut dyn std::io::Read),
    );
    let stderr = read(
        run.child
            .stderr
            .as_mut()
            .map(|p| p as &mut dyn std::io::Read),
    );
    (status.success(), stdout, stderr)
}

#[test]
fn config_errors_found_at_start_stop_the_relayer_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::generate(dir.path(), "ca");
    let not_pem = dir.path().join("not-pem.crt");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let ca_file = |p: &std::path::Path| ("RELAYER_REDIS__CA_FILE", p.display().to_string());
    let cases: Vec<(&str, Env, &[&str])> = vec![
        (
            "a CA with redis://",
            vec![
                ("RELAYER_REDIS_URL", "redis://127.0.0.1:1/".to_owned()),
                ca_file(&ca.cert_file),
            ],
            &["redis.caFile", "rediss://"],
        ),
        (
            "a CA file that does not exist",
            vec![
                ("RELAYER_REDIS_URL", "rediss://127.0.0.1:1/".to_owned()),
                ca_file(&dir.path().join("missing.crt")),
            ],
            &["redis.caFile", "missing.crt"],
        ),
        (
            "a CA file that is not PEM",
            vec![
                ("RELAYER_REDIS_URL", "rediss://127.0.0.1:1/".to_owned()),
                ca_file(&not_pem),
            ],
            &["redis.caFile", "no PEM certificate"],
        ),
        (
            "a password in the URL and in redis.password",
            vec![
                (
                    "RELAYER_REDIS_URL",
                    format!("rediss://:{PASSWORD}@127.0.0.1:1/"),
                ),
                ("RELAYER_REDIS__PASSWORD", "another-pass-1234".to_owned()),
            ],
            &["redis.password", "redisUrl"],
        ),
        (
            "a credential header that is no header name",
            vec![
                ("RELAYER_SETTLEMENT__URL", "http://127.0.0.1:1/".to_owned()),
                ("RELAYER_SETTLEMENT__CREDENTIAL", "Bearer xyz".to_owned()),
                (
                    "RELAYER_SETTLEMENT__CREDENTIAL_HEADER",
                    "X Token".to_owned(),
                ),
            ],
            &["settlement.credentialHeader"],
        ),
    ];
    for (case, env, words) in cases {
        let (ok, _, stderr) = run_relayer(&[], &env);
        assert!(!ok, "{case}: the relayer started; stderr:\n{stderr}");
        for word in words {
            assert!(stderr.contains(word), "{case}: no {word:?} in:\n{stderr}");
        }
        assert!(
            !stderr.contains(PASSWORD) && !stderr.contains("another-pass-1234"),
            "{case}: a password in:\n{stderr}"
        );
    }
}

#[test]
fn print_config_redacts_every_secret() {
    let secrets = [
        "admin-secret-0123456789",
        "redis-url-secret",
        "limiter-url-secret",
        "settle-url-secret",
        "settle-credential-secret",
    ];
    let env = [
        ("RELAYER_ADMIN_TOKEN", secrets[0].to_owned()),
        (
            "RELAYER_REDIS_URL",
            format!("rediss://default:{}@redis:6380/0", secrets[1]),
        ),
        (
            "RELAYER_RATE_LIMIT__REDIS_URL",
            format!("redis://:{}@limiter:6379/0", secrets[2]),
        ),
        (
            "RELAYER_SETTLEMENT__URL",
            format!("https://relayer:{}@settle.example/v1", secrets[3]),
        ),
        (
            "RELAYER_SETTLEMENT__CREDENTIAL",
            format!("Bearer {}", secrets[4]),
        ),
    ];
    let (ok, stdout, stderr) = run_relayer(&["--print-config"], &env);
    assert!(ok, "--print-config failed: {stderr}");
    for secret in secrets {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    let config: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(config["adminToken"], "<redacted>");
    assert_eq!(
        config["redisUrl"],
        "rediss://default:<redacted>@redis:6380/0"
    );
    assert_eq!(
        config["rateLimit"]["redisUrl"],
        "redis://:<redacted>@limiter:6379/0"
    );
    assert_eq!(
        config["settlement"]["url"],
        "https://relayer:<redacted>@settle.example/v1"
    );
    assert_eq!(config["settlement"]["credential"], "<redacted>");
    // NB: the default header is left out of the printed config (as of every serialised one).
    assert_eq!(
        config["settlement"]["credentialHeader"],
        serde_json::Value::Null
    );

    // And redis.password, given apart from the URL.
    let env = [
        ("RELAYER_REDIS_URL", "rediss://redis:6380/0".to_owned()),
        ("RELAYER_REDIS__PASSWORD", PASSWORD.to_owned()),
    ];
    let (ok, stdout, stderr) = run_relayer(&["--print-config"], &env);
    assert!(ok, "--print-config failed: {stderr}");
    assert!(!stdout.contains(PASSWORD), "{stdout}");
    let config: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(config["redis"]["password"], "<redacted>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_settlement_post_carries_the_credential_header() {
    const HEADER: &str = "X-Settlement-Token";
    const CREDENTIAL: &str = "Bearer settle-7d2e";
    let settlement = SettlementServer::start().await;
    settlement.require_header(HEADER, CREDENTIAL);
    let relayer_env = |credential: bool| {
        let mut env = vec![
            ("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("RELAYER_SETTLEMENT__URL", settlement.url.clone()),
            ("RELAYER_SETTLEMENT__RETRY__STRATEGY", "fast".to_owned()),
        ];
        if credential {
            env.push(("RELAYER_SETTLEMENT__CREDENTIAL", CREDENTIAL.to_owned()));
            env.push(("RELAYER_SETTLEMENT__CREDENTIAL_HEADER", HEADER.to_owned()));
        }
        env
    };
    let api = Api::default();

    let with = RelayerProcess::start(&relayer_env(true));
    let seller = funded_trader(&api, &with.base, 10).await;
    let buyer = funded_trader(&api, &with.base, 11).await;
    for i in 0..3 {
        let sell = Order::sell()
            .id(format!("s{i}"))
            .user(&seller.user_id)
            .price(500_000)
            .json();
        let buy = Order::buy()
            .id(format!("b{i}"))
            .user(&buyer.user_id)
            .price(500_000)
            .json();
        let (status, body) = api.place(&with.base, &seller, &sell).await.expect("sell");
        assert_eq!(status, 201, "{body}");
        let (status, body) = api.place(&with.base, &buyer, &buy).await.expect("buy");
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body["fills"].as_array().map(Vec::len),
            Some(1),
            "a fill: {body}"
        );
    }
    assert_eq!(settlement.settled().len(), 3, "{:?}", settlement.requests());
    assert_eq!(settlement.unauthorized(), 0);
    let credentials = settlement.credentials();
    assert_eq!(credentials.len(), settlement.requests().len());
    assert!(
        credentials.iter().all(|c| c.as_deref() == Some(CREDENTIAL)),
        "{credentials:?}"
    );
    assert!(!with.log_text().contains("settle-7d2e"));

    // The stub does refuse a relayer without the credential: nothing of it is settled.
    let without = RelayerProcess::start(&relayer_env(false));
    let seller = funded_trader(&api, &without.base, 12).await;
    let buyer = funded_trader(&api, &without.base, 13).await;
    let sell = Order::sell()
        .id("s-none")
        .user(&seller.user_id)
        .price(500_000)
        .json();
    let buy = Order::buy()
        .id("b-none")
        .user(&buyer.user_id)
        .price(500_000)
        .json();
    let (status, body) = api
        .place(&without.base, &seller, &sell)
        .await
        .expect("sell");
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.place(&without.base, &buyer, &buy).await.expect("buy");
    assert_ne!(status, 201, "settled without a credential: {body}");
    assert!(settlement.unauthorized() > 0);
    assert_eq!(settlement.settled().len(), 3, "nothing more settled");
}
