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
            "faultInjection.errorRate",
            Box::new(|c| c.fault_injection.error_rate = 1.5),
        ),
        (
            "faultInjection.addedLatencyMs",
            Box::new(|c| c.fault_injection.added_latency_ms = 60_001),
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
