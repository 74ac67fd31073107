//! Unit tests of the breaker: core transitions at given times, the async shell, the registry.

use super::*;

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        success_threshold: 2,
        open_duration: 1_000,
        timeout: 100,
        error_rate_threshold: 0.5,
        min_requests: 4,
        window: 10_000,
        slow_call_duration_threshold: 50,
        slow_call_rate_threshold: 0.75,
        half_open_max_calls: 1,
    }
}

const FAST: Duration = Duration::from_millis(1);
const SLOW: Duration = Duration::from_millis(60);

fn call(core: &mut BreakerCore, now: Instant, result: CallResult, took: Duration) -> bool {
    match core.try_acquire(now) {
        Some(p) => {
            core.on_result(now, p, result, took);
            true
        }
        None => false,
    }
}

#[test]
fn consecutive_failures_open_then_half_open_probes_close() {
    let t0 = Instant::now();
    let mut core = BreakerCore::new(config());
    call(&mut core, t0, CallResult::Failure, FAST);
    call(&mut core, t0, CallResult::Failure, FAST);
    assert_eq!(core.state(t0), State::Closed);
    call(&mut core, t0, CallResult::Failure, FAST);
    assert_eq!(core.state(t0), State::Open);
    assert!(
        core.try_acquire(t0 + Duration::from_millis(999)).is_none(),
        "rejected while open"
    );
    let t1 = t0 + Duration::from_millis(1_000);
    assert_eq!(core.state(t1), State::HalfOpen);
    assert!(call(&mut core, t1, CallResult::Success, FAST));
    assert_eq!(core.state(t1), State::HalfOpen, "one success of two");
    assert!(call(&mut core, t1, CallResult::Success, FAST));
    assert_eq!(core.state(t1), State::Closed);
}

#[test]
fn a_success_resets_the_consecutive_count() {
    let t0 = Instant::now();
    let mut core = BreakerCore::new(BreakerConfig {
        min_requests: 100,
        ..config()
    });
    for _ in 0..10 {
        call(&mut core, t0, CallResult::Failure, FAST);
        call(&mut core, t0, CallResult::Failure, FAST);
        call(&mut core, t0, CallResult::Success, FAST);
    }
    assert_eq!(core.state(t0), State::Closed);
}

#[test]
fn a_failed_probe_reopens_for_another_open_duration() {
    let t0 = Instant::now();
    let mut core = BreakerCore::new(config());
    for _ in 0..3 {
        call(&mut core, t0, CallResult::Failure, FAST);
    }
    let t1 = t0 + Duration::from_millis(1_000);
    assert!(call(&mut core, t1, CallResult::Failure, FAST));
    assert_eq!(core.state(t1), State::Open);
    assert_eq!(core.state(t1 + Duration::from_millis(999)), State::Open);
    assert_eq!(
        core.state(t1 + Duration::from_millis(1_000)),
        State::HalfOpen
    );
}

#[test]
fn half_open_admits_only_the_probe_cap() {
    let t0 = Instant::now();
    let mut core = BreakerCore::new(BreakerConfig {
        half_open_max_calls: 2,
        ..config()
    });
    for _ in 0..3 {
        call(&mut core, t0, CallResult::Failure, FAST);
    }
    let t1 = t0 + Duration::from_millis(1_000);
    let p1 = core.try_acquire(t1).expect("first probe");
    let p2 = core.try_acquire(t1).expect("second probe");
    assert!(
        core.try_acquire(t1).is_none(),
        "third concurrent probe rejected"
    );
    core.release(p1);
    let p3 = core.try_acquire(t1).expect("slot freed");
    core.on_result(t1, p2, CallResult::Success, FAST);
    core.on_result(t1, p3, CallResult::Success, FAST);
    assert_eq!(core.state(t1), State::Closed);
}

#[test]
fn the_error_rate_opens_once_the_window_has_min_requests() {
    let t0 = Instant::now();
    let mut core = BreakerCore::new(BreakerConfig {
        failure_threshold: 100,
        ..config()
    });
    // F S F: 3 calls, below minRequests.
    call(&mut core, t0, CallResult::Failure, FAST);
    call(&mut core, t0, CallResult::Success, FAST);
    call(&mut core, t0, CallResult::Failure, FAST);
    assert_eq!(core.state(t0), State::Closed);
    // 4th call: 2 failures of 4 = 0.5 >= threshold.
    call(&mut core, t0, CallResult::Success, FAST);
    assert_eq!(core.state(t0), State::Open);
}

#[test]
fn old_calls_leave_the_error_rate_window() {
    let t0 = Instant::now();
    let mut core = BreakerCore::new(BreakerConfig {
        failure_threshold: 100,
        ..config()
    });
    call(&mut core, t0, CallResult::Failure, FAST);
    call(&mut core, t0, CallResult::Failure, FAST);
    // Ten seconds later those failures are out of the window.
    let t1 = t0 + Duration::from_millis(10_001);
    for _ in 0..4 {
        call(&mut core, t1, CallResult::Success, FAST);
    }
    call(&mut core, t1, CallResult::Failure, FAST);
    assert_eq!(core.state(t1), State::Closed, "1 failure in 5 recent calls");
    assert_eq!(core.window_counts(), (5, 1));
}

#[test]
fn slow_calls_open_at_their_rate() {
    let t0 = Instant::now();
    let mut core = BreakerCore::new(config());
    for _ in 0..3 {
        call(&mut core, t0, CallResult::Success, SLOW);
    }
    call(&mut core, t0, CallResult::Success, FAST);
    assert_eq!(core.state(t0), State::Open, "3 of 4 slow = 0.75");
}

#[test]
fn results_of_calls_admitted_before_opening_are_ignored() {
    let t0 = Instant::now();
    let mut core = BreakerCore::new(config());
    let late = core.try_acquire(t0).expect("admitted while closed");
    for _ in 0..3 {
        call(&mut core, t0, CallResult::Failure, FAST);
    }
    core.on_result(t0, late, CallResult::Success, FAST);
    assert_eq!(core.state(t0), State::Open);
}

#[tokio::test(start_paused = true)]
async fn timeouts_count_as_failures_and_fallback_answers_when_open() {
    let breaker = CircuitBreaker::new("test", config());
    for _ in 0..3 {
        let r = breaker
            .call(
                async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok::<_, ()>(1)
                },
                |_| true,
            )
            .await;
        assert!(matches!(r, Err(BreakerError::Timeout(_))));
    }
    assert_eq!(breaker.state(), State::Open);
    let called = std::sync::atomic::AtomicBool::new(false);
    let v = breaker
        .call_with_fallback(
            async {
                called.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, ()>(1)
            },
            |_| true,
            |e| {
                assert!(matches!(e, BreakerError::Open(_)));
                42
            },
        )
        .await;
    assert_eq!(v, 42);
    assert!(
        !called.load(std::sync::atomic::Ordering::SeqCst),
        "no call while open"
    );
}

#[tokio::test]
async fn errors_the_classifier_ignores_do_not_open() {
    let breaker = CircuitBreaker::new("test", config());
    for _ in 0..10 {
        let r: Result<(), _> = breaker
            .call(async { Err::<(), u16>(400) }, |status| *status >= 500)
            .await;
        assert!(matches!(r, Err(BreakerError::Inner(400))));
    }
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test]
async fn an_open_breaker_half_opens_when_its_clock_says_the_open_time_is_up() {
    let clock = Arc::new(crate::clock::ManualClock::at(5_000));
    let breaker = CircuitBreaker::new("test", config()).with_clock(clock.clone());
    for _ in 0..3 {
        let r: Result<(), _> = breaker.call(async { Err::<(), ()>(()) }, |_| true).await;
        assert!(matches!(r, Err(BreakerError::Inner(()))));
    }
    assert_eq!(breaker.state(), State::Open);
    clock.advance(999);
    assert_eq!(breaker.state(), State::Open);
    clock.advance(1);
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[test]
fn registry_returns_one_breaker_per_name_with_stats() {
    let registry = BreakerRegistry::new(&mut Registry::default());
    let a = registry.get_or_create("settlement", &config());
    let b = registry.get_or_create("settlement", &BreakerConfig::default());
    assert!(Arc::ptr_eq(&a, &b));
    registry.get_or_create("other", &config());
    let names: Vec<_> = registry.stats().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["other", "settlement"]);
}
