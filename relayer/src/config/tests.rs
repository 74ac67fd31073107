//! Unit tests of the config: defaults, validation, loading.

use super::*;

#[test]
fn defaults_are_valid() {
    RelayerConfig::default()
        .validate()
        .expect("defaults validate");
}

#[test]
fn each_bad_value_names_its_key() {
    type Mutation = Box<dyn Fn(&mut RelayerConfig)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("listen", Box::new(|c| c.listen = "nope".into())),
        (
            "redisUrl",
            Box::new(|c| c.redis_url = Some("http://x".into())),
        ),
        (
            "adminToken",
            Box::new(|c| c.admin_token = Some("short".into())),
        ),
        (
            "limits.maxBodyBytes",
            Box::new(|c| c.limits.max_body_bytes = 1),
        ),
        (
            "limits.maxOrderAmount",
            Box::new(|c| c.limits.max_order_amount = 0),
        ),
        (
            "limits.requestTimeoutMs",
            Box::new(|c| c.limits.request_timeout_ms = 0),
        ),
        (
            "shutdown.drainTimeoutMs",
            Box::new(|c| c.shutdown.drain_timeout_ms = 0),
        ),
        (
            "shutdown.readinessDelayMs",
            Box::new(|c| c.shutdown.readiness_delay_ms = u64::MAX),
        ),
        ("log.filter", Box::new(|c| c.log.filter = " ".into())),
        (
            "redis.keyPrefix",
            Box::new(|c| c.redis.key_prefix = "a{b}:".into()),
        ),
        (
            "redis.commandTimeoutMs",
            Box::new(|c| c.redis.command_timeout_ms = 0),
        ),
        (
            "redis.commandTimeoutMs",
            Box::new(|c| {
                c.limits.request_timeout_ms = 500;
                c.redis.command_timeout_ms = 501;
            }),
        ),
        (
            "limits.placementWaitMs",
            Box::new(|c| c.limits.placement_wait_ms = Some(0)),
        ),
        (
            "limits.placementWaitMs",
            Box::new(|c| {
                c.limits.request_timeout_ms = 4_000;
                c.limits.placement_wait_ms = Some(4_000);
            }),
        ),
        (
            "redis.orderRetentionSeconds",
            Box::new(|c| c.redis.order_retention_seconds = 0),
        ),
        (
            "limits.headerReadTimeoutMs",
            Box::new(|c| c.limits.header_read_timeout_ms = 0),
        ),
        (
            "limits.idleTimeoutMs",
            Box::new(|c| c.limits.idle_timeout_ms = Some(c.limits.request_timeout_ms)),
        ),
        (
            "limits.maxConnections",
            Box::new(|c| c.limits.max_connections = 0),
        ),
        (
            "rateLimit.ipv6Prefix",
            Box::new(|c| c.rate_limit.ipv6_prefix = 129),
        ),
        (
            "faultInjection.errorRate",
            Box::new(|c| c.fault_injection.error_rate = 1.5),
        ),
        (
            "faultInjection.addedLatencyMs",
            Box::new(|c| c.fault_injection.added_latency_ms = 60_001),
        ),
        (
            "redis.password",
            Box::new(|c| c.redis.password = Some("pw".into())),
        ),
        (
            "redis.password",
            Box::new(|c| {
                c.redis_url = Some("redis://h".into());
                c.redis.password = Some(String::new());
            }),
        ),
        (
            "redis.caFile",
            Box::new(|c| {
                c.redis_url = Some("redis://h".into());
                c.redis.ca_file = Some("/ca.crt".into());
            }),
        ),
        (
            "redis.caFile",
            Box::new(|c| c.redis.ca_file = Some("/ca.crt".into())),
        ),
        (
            "settlement.credentialHeader",
            Box::new(|c| c.settlement.credential_header = "X Token".into()),
        ),
        (
            "settlement.credentialHeader",
            Box::new(|c| c.settlement.credential_header = String::new()),
        ),
        (
            "settlement.credentialHeader",
            Box::new(|c| c.settlement.credential_header = "Content-Type".into()),
        ),
        (
            "settlement.credential",
            Box::new(|c| {
                c.settlement.url = Some("http://s".into());
                c.settlement.credential = Some("Bearer a\r\nX-Evil: 1".into());
            }),
        ),
        (
            "settlement.credential",
            Box::new(|c| c.settlement.credential = Some("Bearer abc".into())),
        ),
        (
            "redis.clusterNodes",
            Box::new(|c| c.redis.cluster_nodes = vec!["r2:6379".into()]),
        ),
        (
            "redis.clusterNodes[1]",
            Box::new(|c| {
                c.redis.mode = RedisMode::Cluster;
                c.redis.cluster_nodes = vec!["r2:6379".into(), "redis://:pw@r3:6379".into()];
            }),
        ),
        (
            "redis.clusterNodes[0]",
            Box::new(|c| {
                c.redis.mode = RedisMode::Cluster;
                c.redis.cluster_nodes = vec!["r2:0".into()];
            }),
        ),
        (
            "redis.clusterNodes[0]",
            Box::new(|c| {
                c.redis.mode = RedisMode::Cluster;
                c.redis.cluster_nodes = vec!["[not-v6]:6379".into()];
            }),
        ),
        (
            "redis.replicaAcks",
            Box::new(|c| c.redis.replica_acks = Some(6)),
        ),
        (
            "redisUrl",
            Box::new(|c| {
                c.redis.mode = RedisMode::Cluster;
                c.redis_url = Some("redis://r:6379/3".into());
            }),
        ),
        (
            "saga.durableLog",
            Box::new(|c| {
                c.redis.mode = RedisMode::Cluster;
                c.redis_url = Some("redis://r:6379".into());
                c.saga.durable_log = false;
            }),
        ),
    ];
    for (key, mutate) in cases {
        let mut config = RelayerConfig::default();
        mutate(&mut config);
        match config.validate() {
            Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key),
            other => panic!("{key}: expected an invalid-key error, got {other:?}"),
        }
    }
}

#[test]
fn the_placement_wait_is_below_the_request_timeout_unless_set() {
    let mut config = RelayerConfig::default();
    assert_eq!(config.limits.placement_wait().as_millis(), 5_000);
    config.limits.request_timeout_ms = 3_000;
    assert_eq!(
        config.limits.placement_wait().as_millis(),
        1_500,
        "half of a short request timeout"
    );
    config
        .validate()
        .expect("a short request timeout alone is valid");
    config.limits.request_timeout_ms = 1;
    assert_eq!(config.limits.placement_wait().as_millis(), 1);
    config.limits.request_timeout_ms = 3_000;
    config.limits.placement_wait_ms = Some(2_500);
    assert_eq!(config.limits.placement_wait().as_millis(), 2_500);
    config.validate().expect("set below the request timeout");
}

#[test]
fn the_idle_timeout_is_above_the_request_timeout_unless_set() {
    let mut config = RelayerConfig::default();
    assert_eq!(config.limits.idle_timeout().as_millis(), 60_000);
    config.limits.request_timeout_ms = 120_000;
    assert_eq!(
        config.limits.idle_timeout().as_millis(),
        121_000,
        "a slow request is answered before its connection counts as idle"
    );
    config
        .validate()
        .expect("a long request timeout alone is valid");
    config.limits.idle_timeout_ms = Some(120_001);
    assert_eq!(config.limits.idle_timeout().as_millis(), 120_001);
    config.validate().expect("set above the request timeout");
}

#[test]
fn connection_limits_at_their_defaults_are_not_serialised() {
    let text = serde_json::to_string(&RelayerConfig::default().limits).expect("json");
    for key in ["headerReadTimeoutMs", "idleTimeoutMs", "maxConnections"] {
        assert!(!text.contains(key), "{key} in {text}");
    }
}

#[test]
fn a_password_in_both_places_is_refused_naming_both_keys() {
    let mut config = RelayerConfig {
        redis_url: Some("rediss://:in-url@redis:6380/0".into()),
        ..RelayerConfig::default()
    };
    config.redis.password = Some("in-config".into());
    let error = config.validate().expect_err("two passwords").to_string();
    assert!(
        error.contains("redis.password") && error.contains("redisUrl"),
        "{error}"
    );
    assert!(
        !error.contains("in-url") && !error.contains("in-config"),
        "no secret in {error}"
    );
    config.redis_url = Some("rediss://alice@redis:6380/0".into());
    config
        .validate()
        .expect("a user name in the URL with redis.password");
    config.redis.ca_file = Some("/etc/relayer/redis-ca/ca.crt".into());
    config.validate().expect("a CA with rediss://");
    config.redis.password = None;
    config.redis_url = Some("redis://:in-url@redis:6379/0".into());
    config.redis.ca_file = None;
    config.validate().expect("a password in the URL alone");
}

#[test]
fn a_settlement_credential_needs_a_url_and_a_header_name() {
    let mut config = RelayerConfig::default();
    config.settlement.url = Some("https://settle.example/v1".into());
    config.settlement.credential = Some("Bearer tok\u{e9}n".into());
    config
        .validate()
        .expect("a credential with the default header");
    config.settlement.credential_header = "X-Api-Key".into();
    config.validate().expect("another header name");
}

#[test]
fn the_ca_file_must_be_readable_pem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = RelayerConfig {
        redis_url: Some("rediss://redis:6380/0".into()),
        ..RelayerConfig::default()
    };
    let missing = dir.path().join("missing.crt");
    config.redis.ca_file = Some(missing.display().to_string());
    config.validate().expect("validate does not read files");
    let error = config
        .check_files()
        .expect_err("a missing file")
        .to_string();
    assert!(error.contains("redis.caFile"), "{error}");
    let not_pem = dir.path().join("not.crt");
    std::fs::write(&not_pem, "just text\n").expect("write");
    config.redis.ca_file = Some(not_pem.display().to_string());
    let error = config.check_files().expect_err("not PEM").to_string();
    assert!(
        error.contains("redis.caFile") && error.contains("no PEM certificate"),
        "{error}"
    );
    let pem = dir.path().join("ca.crt");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    config.redis.ca_file = Some(pem.display().to_string());
    config.check_files().expect("a PEM certificate");
    config.redis.ca_file = None;
    config.check_files().expect("no file to check");
}

#[test]
fn cluster_seed_nodes_are_host_and_port() {
    let mut config = RelayerConfig::default();
    config.redis.mode = RedisMode::Cluster;
    config.redis.cluster_nodes = vec![
        "redis-1.redis.svc:6379".into(),
        "10.0.0.7:7000".into(),
        "[fd00::7]:6379".into(),
    ];
    config.redis_url = Some("redis://r:6379/0".into());
    config.validate().expect("host:port seeds, database 0");
    config.redis_url = Some("rediss://alice@r:6380".into());
    config.validate().expect("no database named");
    assert_eq!(
        config.redis.effective_replica_acks(),
        1,
        "a cluster write waits for its replica"
    );
    config.redis.replica_acks = Some(0);
    assert_eq!(config.redis.effective_replica_acks(), 0);
    assert_eq!(RelayerConfig::default().redis.effective_replica_acks(), 0);
}
