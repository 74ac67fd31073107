//! Blue-green cutovers against the test control plane, with every pod backed by a real relayer
//! process in its own network namespace, so the health gates read real metrics.
//!
//! The zero-downtime tests run every relayer on one real `redis-server` (with a password, from
//! a Secret) and settle at a stub, while eight funded users place, cancel and read orders
//! through the proxy that follows the active Service; afterwards the new colour must show
//! every accepted order as answered, conserve collateral and shares, leave nothing reserved or
//! unfinished, and the stub must have seen each settlement key with one body
//! ([`support::cutover::writes`]).
//!
//! Run with `cargo build -p relayer && cargo test --test operator_cutover` as root (network
//! namespaces); add `-- --nocapture` to see the measured timings and the load's figures.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Patch, PatchParams};
use relayer_operator::crd::{RelayerDeployment, RolloutStep};
use serde_json::{Value, json};
use support::cutover::{
    Checked, Funding, InvariantWatcher, Invariants, NetnsBackend, NetnsGuard, Proxy, RedisStore,
    SettlementStub, Trader, Verification, WriteLoad, WriteReport, fund_traders, host_address,
    random_secret, verify,
};
use support::fixtures::{BlueGreen, Gate, Rd, blue_green, gate, rd};
use support::operator::{OperatorProcess, POD_NETWORK, start_operator};
use support::{TestEnv, http, wait_for, wait_for_every};

const SETTLE: Duration = Duration::from_secs(90);
const NAME: &str = "market";
const GATE_INTERVAL_MS: i64 = 300;
const GATE_SAMPLES: i64 = 3;

/// Latency the bad release of the rollback-with-writes test adds to every request, and the
/// post-promotion gate's p99 limit it breaks (well above what a good release shows here under
/// the write load, up to about 0.5 s on two busy cores).
const BAD_RELEASE_LATENCY_MS: u64 = 1_500;
const BAD_RELEASE_P99_LIMIT_MS: i64 = 1_000;

/// The gate of these tests: a short window of real traffic and the gate's own probe load.
fn fast_gate() -> Gate {
    gate()
        .interval_ms(GATE_INTERVAL_MS)
        .samples(GATE_SAMPLES)
        .failure_limit(0)
        .min_requests(5)
        .max_error_rate_basis_points(100)
        .probe(40)
}

/// A quick blue-green strategy with [`fast_gate`] before and after promotion.
fn strategy() -> BlueGreen {
    blue_green()
        .scale_down_delay_seconds(1)
        .max_scale_down_wait_seconds(30)
        .progress_deadline_seconds(60)
        .pre_promotion(fast_gate())
        .post_promotion(fast_gate())
}

/// Gate samples and scale-down delay of the zero-downtime tests: gates long enough that the
/// cutover window (spec change → old colour gone) holds at least [`MIN_WRITES`] writes.
const ZDT_GATE_SAMPLES: i64 = 16;
const ZDT_SCALE_DOWN_DELAY_S: i32 = 2;

/// [`strategy`] with the longer gates of the zero-downtime tests.
fn zdt_strategy() -> BlueGreen {
    let gate = fast_gate().samples(ZDT_GATE_SAMPLES);
    strategy()
        .scale_down_delay_seconds(ZDT_SCALE_DOWN_DELAY_S)
        .pre_promotion(gate.clone())
        .post_promotion(gate)
}

/// The relayer of these tests: `replicas` pods with the rate limiter off and a short drain.
fn market(replicas: i32, strategy: BlueGreen) -> Rd {
    rd(NAME)
        .image("ghcr.io/foresight/relayer:test")
        .replicas(replicas)
        .rate_limit_disabled()
        .shutdown(500, 2000)
        .blue_green(strategy)
}

/// Clients of the write load, each with its own funded user.
const CLIENTS: usize = 8;
/// What each user is given: enough that a refusal for funds stays rare.
const FUNDING: Funding = Funding {
    collateral: 10_000_000,
    shares: 1_000_000,
};
/// Held exclusively by the zero-downtime tests and shared by every other test here: their
/// floors count the writes inside one cutover window, and a sibling test's pods on the same
/// two cores halved that rate (1,277 and 1,386 writes against 2,276 alone), so they run alone.
static LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
/// Floors of the zero-downtime tests: requests in all, and writes from the spec change on.
const MIN_REQUESTS: u64 = 5_000;
const MIN_WRITES: u64 = 1_500;

/// The state every pod shares and the secrets they get: a `redis-server` with a password on
/// the host's address towards the pods, the settlement stub there, and the Secrets
/// `relayer-redis` (key `password`) and `relayer-admin` (key `token`) in the test namespace.
struct SharedState {
    store: RedisStore,
    stub: SettlementStub,
    admin_token: String,
}

impl SharedState {
    async fn start(env: &TestEnv) -> Self {
        let host = host_address().expect("the host's address towards the pods");
        let store = RedisStore::start(host, &env.namespace);
        assert!(
            store.refuses_without_password(),
            "the store must require its password"
        );
        let stub = SettlementStub::start(host).await;
        let admin_token = random_secret();
        env.create_secret("relayer-redis", "password", &store.password)
            .await;
        env.create_secret("relayer-admin", "token", &admin_token)
            .await;
        Self {
            store,
            stub,
            admin_token,
        }
    }

    /// `rd` on the shared store (`spec.store.redis`: its address, the password from its
    /// Secret), with the admin token from its Secret (`spec.secrets.adminToken`) and settlement
    /// at the stub; sagas recovered promptly.
    fn rd(&self, rd: Rd) -> Value {
        let mut json = rd.json();
        let spec = &mut json["spec"];
        spec["config"]["settlement"] = json!({ "url": self.stub.url });
        spec["config"]["saga"] = json!({ "leaseMs": 5000, "recoveryIntervalMs": 1000 });
        spec["store"] = json!({ "redis": {
            "url": self.store.url(),
            "passwordSecretRef": { "name": "relayer-redis", "key": "password" },
        } });
        spec["secrets"] = json!({ "adminToken": { "name": "relayer-admin", "key": "token" } });
        json
    }

    /// Every secret value the test gave out.
    fn secret_values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("the admin token", self.admin_token.clone()),
            ("the Redis password", self.store.password.clone()),
        ]
    }
}

/// A patch of `spec.pod.env` to `env`.
fn env_patch(env: Vec<Value>) -> Value {
    json!({ "spec": { "pod": { "env": env } } })
}

/// What a zero-downtime run measured.
struct Run {
    report: WriteReport,
    verification: Verification,
    /// Requests and writes from the spec change until the old colour was gone.
    window_requests: u64,
    window_writes: u64,
    /// Writes from the spec change until the load stopped.
    writes_since_change: u64,
    /// Spec change → the old colour scaled down and gone.
    to_scaled_down: Duration,
}

impl Run {
    fn print(&self, test: &str) {
        let r = &self.report;
        eprintln!(
            "{test}: {} requests ({} writes, {} reads), {} failed {:?}; injected faults {} {:?}; \
             business refusals {} {:?}; during the cutover window (spec change → old colour gone, \
             {} ms): {} requests, {} writes; writes from the change to the end of the load {}",
            r.requests,
            r.writes,
            r.reads,
            r.failed(),
            r.failures,
            r.injected_faults(),
            r.injected,
            r.business_refusals(),
            r.refusals,
            self.to_scaled_down.as_millis(),
            self.window_requests,
            self.window_writes,
            self.writes_since_change,
        );
        eprintln!("{test}: answers {:?}", r.statuses);
        eprintln!("{test}: afterwards {}", self.verification);
        for v in self.verification.violations.iter().take(20) {
            eprintln!("{test}: VIOLATION {v}");
        }
    }

    /// The checks both zero-downtime tests share; `injected_allowed`: the release injects
    /// faults (they are counted apart, never as accepted writes).
    fn assert_zero_downtime(&self, injected_allowed: bool) {
        let r = &self.report;
        assert_eq!(r.failed(), 0, "failed requests: {:?}", r.failures);
        if !injected_allowed {
            assert_eq!(r.injected_faults(), 0, "{:?}", r.injected);
        }
        assert!(r.requests >= MIN_REQUESTS, "{} requests", r.requests);
        assert!(
            self.window_writes >= MIN_WRITES,
            "{} writes during the cutover window (spec change → old colour gone)",
            self.window_writes
        );
        // A refusal for a business reason (funds, an order filled before its cancel) is no
        // failure, but the load is built so that it stays rare.
        assert!(
            r.business_refusals() * 100 <= r.writes,
            "business refusals are not rare: {:?} of {} writes",
            r.refusals,
            r.writes
        );
        assert!(
            self.verification.orders_checked >= 1_000,
            "{} orders checked",
            self.verification.orders_checked
        );
        assert!(self.verification.trades_settled > 100, "too few trades");
        assert!(
            self.verification.violations.is_empty(),
            "{} violations, the first: {:#?}",
            self.verification.violations.len(),
            &self.verification.violations[..self.verification.violations.len().min(10)]
        );
        assert!(self.verification.conserved());
    }
}

/// Traders funded through the proxy, then the load, until some writes went through.
async fn start_writes(
    h: &Harness,
    shared: &SharedState,
    proxy: &Proxy,
    run: &str,
) -> (Vec<Trader>, WriteLoad) {
    let traders = fund_traders(proxy.addr, &shared.admin_token, CLIENTS, FUNDING)
        .await
        .expect("fund the traders through the proxy");
    let load = WriteLoad::start(proxy.addr, &traders, run);
    let counts = load.counts.clone();
    wait_for("some writes before the change", SETTLE, || {
        let n = counts.writes();
        async move { Ok((n >= 300).then_some(())) }
    })
    .await;
    assert_eq!(
        h.backend.sources().into_iter().collect::<Vec<_>>(),
        vec![match shared.store.addr.ip() {
            std::net::IpAddr::V4(ip) => ip,
            other => panic!("store on {other}"),
        }],
        "every pod routes back to the store's address"
    );
    (traders, load)
}

/// Keeps the load on until the floors are met, then stops it and verifies through `proxy`.
#[allow(clippy::too_many_arguments)]
async fn finish_writes(
    h: &Harness,
    shared: &SharedState,
    proxy: &Proxy,
    traders: &[Trader],
    load: WriteLoad,
    writes_at_change: u64,
    window: (u64, u64, Duration),
) -> Run {
    let counts = load.counts.clone();
    wait_for(
        "5,000 requests and 1,500 writes since the change",
        SETTLE,
        || {
            let (requests, writes) = (counts.requests(), counts.writes());
            async move {
                Ok(
                    (requests >= MIN_REQUESTS && writes - writes_at_change >= MIN_WRITES)
                        .then_some(()),
                )
            }
        },
    )
    .await;
    let report = load.stop().await;
    let writes_since_change = report.writes - writes_at_change;
    let verification = verify(
        Checked {
            addr: proxy.addr,
            admin_token: &shared.admin_token,
            traders,
            funding: FUNDING,
            stub: &shared.stub,
            backend: &h.backend,
        },
        &report,
    )
    .await;
    Run {
        report,
        verification,
        window_requests: window.0,
        window_writes: window.1,
        writes_since_change,
        to_scaled_down: window.2,
    }
}

struct Harness {
    env: TestEnv,
    backend: Arc<NetnsBackend>,
    _guard: NetnsGuard,
    /// Every relayer of the test runs on its store and settles at its stub.
    shared: SharedState,
}

impl Harness {
    async fn new(test: &str) -> Self {
        assert!(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/debug/relayer")
                .exists(),
            "build the relayer first: cargo build -p relayer"
        );
        let env = TestEnv::new(test).await;
        env.install_crds(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"))
            .await;
        let (backend, guard) = NetnsBackend::register(&env.namespace);
        let shared = SharedState::start(&env).await;
        Self {
            env,
            backend,
            _guard: guard,
            shared,
        }
    }

    /// Applies `rd` on the test's store, secrets and settlement stub ([`SharedState::rd`]).
    async fn apply(&self, rd: Rd) {
        self.apply_json(self.shared.rd(rd)).await;
    }

    /// Server-side applies a RelayerDeployment given as JSON (see [`SharedState::rd`]).
    async fn apply_json(&self, rd: Value) {
        self.env
            .api::<RelayerDeployment>()
            .patch(
                NAME,
                &PatchParams::apply("cutover-test").force(),
                &Patch::Apply(&rd),
            )
            .await
            .expect("apply the RelayerDeployment");
    }

    async fn patch(&self, patch: serde_json::Value) {
        self.env
            .api::<RelayerDeployment>()
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch the RelayerDeployment");
    }

    /// Waits until the cutover (if any) is over in `step` on `colour` for the current spec.
    async fn wait_step(&self, step: RolloutStep, colour: &str) -> RelayerDeployment {
        support::wait_step(&self.env, NAME, step, colour, SETTLE).await
    }

    /// After a rollback from green: the active Service selected blue, green, then blue, never a
    /// colour without available pods, and blue (`blue_pods` pods, at least 2) stayed warm at 2
    /// while green was active.
    async fn assert_back_on_warm_blue(&self, invariants: &Invariants, blue_pods: usize) {
        assert_eq!(
            invariants.selected,
            vec!["blue", "green", "blue"],
            "promoted, then back"
        );
        assert!(
            invariants.violations.is_empty(),
            "{:?}",
            invariants.violations
        );
        assert!(blue_pods >= 2);
        assert_eq!(
            invariants
                .min_replicas
                .get(&format!("{NAME}-blue"))
                .copied(),
            Some(2),
            "blue stayed warm while green was active"
        );
        assert_eq!(self.selector().await, "blue");
    }

    async fn selector(&self) -> String {
        let svc = self.env.api::<Service>().get(NAME).await.expect("service");
        svc.spec
            .and_then(|s| s.selector)
            .and_then(|s| s.get("relayer.foresight.dev/color").cloned())
            .unwrap_or_default()
    }

    async fn replicas(&self, colour: &str) -> i32 {
        self.env
            .api::<Deployment>()
            .get(&format!("{NAME}-{colour}"))
            .await
            .ok()
            .and_then(|d| d.spec.replicas)
            .unwrap_or(0)
    }
}

fn step_ms(rd: &RelayerDeployment, step: &str) -> i64 {
    rd.status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .and_then(|r| r.step_durations_ms.get(step).copied())
        .unwrap_or(0)
}

fn rollout(rd: &RelayerDeployment) -> relayer_operator::crd::RolloutStatus {
    rd.status
        .as_ref()
        .and_then(|s| s.rollout.clone())
        .expect("rollout status")
}

#[tokio::test]
async fn a_good_release_cuts_over_with_zero_failed_requests_and_drains_on_evidence() {
    let _alone = LOAD.write().await;
    let h = Harness::new("cut-good").await;
    let shared = &h.shared;
    let _operator = start_operator(&h.env);
    h.apply(market(2, zdt_strategy())).await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    let watcher = InvariantWatcher::start(h.env.client.clone(), &h.env.namespace, NAME);
    let proxy = Proxy::start(h.env.client.clone(), &h.env.namespace, NAME).await;
    wait_for("the proxy to know blue's endpoints", SETTLE, || {
        let addr = proxy.addr;
        async move { Ok(matches!(http::get(addr, "/ready").await, Ok((200, _))).then_some(())) }
    })
    .await;
    let (traders, load) = start_writes(&h, shared, &proxy, "good").await;
    let counts = load.counts.clone();

    let (requests_at_change, writes_at_change) = (counts.requests(), counts.writes());
    let changed = Instant::now();
    h.patch(env_patch(vec![json!({ "name": "RELEASE", "value": "2" })]))
        .await;
    let rd = h.wait_step(RolloutStep::Stable, "green").await;
    let to_stable = changed.elapsed();
    // Keep the load on through the scale-down of blue, and until the floors are met.
    wait_for("blue to be scaled down and gone", SETTLE, || {
        let backend = h.backend.clone();
        let env = &h.env;
        async move {
            let blue = env.api::<Deployment>().get(&format!("{NAME}-blue")).await?;
            let gone =
                blue.status.and_then(|s| s.replicas).unwrap_or(0) == 0 && backend.running() == 2;
            Ok(gone.then_some(()))
        }
    })
    .await;
    let window = (
        counts.requests() - requests_at_change,
        counts.writes() - writes_at_change,
        changed.elapsed(),
    );
    let run = finish_writes(&h, shared, &proxy, &traders, load, writes_at_change, window).await;
    let invariants = watcher.snapshot();

    let r = rollout(&rd);
    let deploying = step_ms(&rd, "Deploying");
    let pre = step_ms(&rd, "PrePromotion");
    let post = step_ms(&rd, "PostPromotion");
    let scaling = step_ms(&rd, "ScalingDown");
    // A gate needs a baseline scrape and then `samples` more, one interval apart.
    let gate_floor = ZDT_GATE_SAMPLES * GATE_INTERVAL_MS;
    let configured = 2 * gate_floor + i64::from(ZDT_SCALE_DOWN_DELAY_S) * 1_000;
    let measured = i64::try_from(to_stable.as_millis()).unwrap_or(i64::MAX);
    let overhead = measured - deploying - configured;
    eprintln!(
        "cutover: spec change → Stable {measured} ms = waiting for pods {deploying} ms + gate windows {pre} + {post} ms (configured {gate_floor} ms each) + drain {scaling} ms (scaleDownDelay {ZDT_SCALE_DOWN_DELAY_S} s); operator overhead beyond pods and configured waits: {overhead} ms"
    );
    run.print("zero downtime");
    eprintln!(
        "zero downtime: invariant checks {}, selected {:?}; scale-down: {:?}",
        invariants.checks, invariants.selected, r.scale_down
    );
    run.assert_zero_downtime(false);
    assert!(
        invariants.violations.is_empty(),
        "{:?}",
        invariants.violations
    );
    assert_eq!(
        invariants.selected,
        vec!["blue", "green"],
        "one switch, no flapping"
    );
    assert!(
        r.scale_down
            .as_deref()
            .is_some_and(|s| s.contains("drained")),
        "scaled down on evidence, not on the timer: {:?}",
        r.scale_down
    );
    assert!(
        r.gates
            .iter()
            .all(|g| g.verdict == relayer_operator::crd::GateVerdict::Passed)
    );
    assert!(overhead < 1_000, "operator overhead {overhead} ms");
}

#[tokio::test]
async fn a_bad_release_fails_the_pre_promotion_gate_and_traffic_never_leaves_blue() {
    let _shared = LOAD.read().await;
    let h = Harness::new("cut-bad").await;
    let _operator = start_operator(&h.env);
    h.apply(market(2, strategy())).await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    let watcher = InvariantWatcher::start(h.env.client.clone(), &h.env.namespace, NAME);
    h.patch(json!({ "spec": { "pod": { "env": [
        { "name": "RELAYER_FAULT_INJECTION__ERROR_RATE", "value": "0.5" },
        { "name": "RELAYER_FAULT_INJECTION__ADDED_LATENCY_MS", "value": "20" },
    ] } } }))
    .await;
    let rd = h.wait_step(RolloutStep::Aborted, "blue").await;
    let r = rollout(&rd);
    assert_eq!(r.failed_gate.as_deref(), Some("prePromotion"));
    let reason = r.abort_reason.clone().unwrap_or_default();
    assert!(reason.contains("error rate"), "{reason}");
    let pre = r
        .gates
        .iter()
        .find(|g| g.name == "prePromotion")
        .expect("gate status");
    assert_eq!(pre.verdict, relayer_operator::crd::GateVerdict::Failed);
    assert!(
        pre.last_values
            .as_deref()
            .is_some_and(|v| v.contains("errorRate"))
    );
    assert_eq!(
        rd.status.as_ref().map(|s| s.phase),
        Some(relayer_operator::crd::Phase::Degraded)
    );
    wait_for("green to be scaled to zero", SETTLE, || {
        let h = &h;
        async move { Ok((h.replicas("green").await == 0).then_some(())) }
    })
    .await;
    assert_eq!(h.selector().await, "blue");
    let invariants = watcher.snapshot();
    assert_eq!(invariants.selected, vec!["blue"], "traffic never left blue");
    assert!(
        invariants.violations.is_empty(),
        "{:?}",
        invariants.violations
    );
    let events = h
        .env
        .kubectl(&["get", "events", "-o", "jsonpath={.items[*].reason}"])
        .expect("events");
    assert!(
        events.contains("GateFailed") && events.contains("Aborted"),
        "{events}"
    );
}

/// Latency every release of the statistical-gate tests adds to each request, and the slow
/// release's: 30 % more. Large beside what a relayer adds itself here (a few ms), so the
/// release's own latency is what the colours differ by.
const STAT_LATENCY_MS: u64 = 100;
const STAT_SLOW_LATENCY_MS: u64 = 130;

/// A pre-promotion gate whose only threshold is a loose p99 limit (ten times the slow
/// release's latency), with the statistical judge on its defaults (0.98, ±25 %, every metric)
/// over 12 intervals, its probe load sent to both colours.
fn statistical_strategy() -> BlueGreen {
    let gate = fast_gate()
        .samples(12)
        .max_error_rate_basis_points(None)
        .max_p99_latency_ms(1_300)
        .statistical(json!({ "minSamples": 10 }));
    blue_green()
        .scale_down_delay_seconds(1)
        .max_scale_down_wait_seconds(30)
        .progress_deadline_seconds(60)
        .pre_promotion(gate)
}

/// `market` with every pod adding `latency_ms` to each request, and `release` as a label of
/// the release (so two releases of one latency differ in revision only).
fn latency_env(latency_ms: u64, release: &str) -> Value {
    env_patch(vec![
        json!({ "name": "RELAYER_FAULT_INJECTION__ADDED_LATENCY_MS", "value": latency_ms.to_string() }),
        json!({ "name": "RELEASE", "value": release }),
    ])
}

/// The prePromotion gate of the last cutover.
fn pre_gate(rd: &RelayerDeployment) -> relayer_operator::crd::GateStatus {
    rollout(rd)
        .gates
        .into_iter()
        .find(|g| g.name == "prePromotion")
        .expect("prePromotion gate status")
}

fn judged<'a>(
    gate: &'a relayer_operator::crd::GateStatus,
    metric: &str,
) -> &'a relayer_operator::crd::MetricJudgement {
    gate.statistics
        .iter()
        .find(|m| m.metric == metric)
        .unwrap_or_else(|| panic!("{metric} judged: {gate:?}"))
}

#[tokio::test]
async fn a_preview_thirty_percent_slower_fails_the_statistical_gate_that_a_loose_p99_limit_passes()
{
    let _shared = LOAD.read().await;
    use relayer_operator::crd::{GateVerdict, MetricVerdict};
    let h = Harness::new("cut-stat-slow").await;
    let operator = start_operator(&h.env);
    let mut rd = h.shared.rd(market(2, statistical_strategy()));
    rd["spec"]["pod"] = latency_env(STAT_LATENCY_MS, "1")["spec"]["pod"].clone();
    h.apply_json(rd).await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    let watcher = InvariantWatcher::start(h.env.client.clone(), &h.env.namespace, NAME);
    h.patch(latency_env(STAT_SLOW_LATENCY_MS, "2")).await;
    let rd = h.wait_step(RolloutStep::Aborted, "blue").await;
    let r = rollout(&rd);
    assert_eq!(r.failed_gate.as_deref(), Some("prePromotion"), "{r:?}");
    let reason = r.abort_reason.clone().unwrap_or_default();
    assert!(reason.contains("statistical judge"), "{reason}");
    assert!(reason.contains("meanLatency worse"), "{reason}");
    let pre = pre_gate(&rd);
    assert_eq!(pre.verdict, GateVerdict::Failed);
    // The thresholds alone passed: every sample was within the loose p99 limit.
    assert_eq!(pre.failed, 0, "{pre:?}");
    assert!(pre.passed >= 12, "{pre:?}");
    let mean = judged(&pre, "meanLatency");
    assert_eq!(mean.verdict, MetricVerdict::Failed, "{mean:?}");
    assert!(
        mean.under_test_samples >= 10 && mean.baseline_samples >= 10,
        "{mean:?}"
    );
    assert!(mean.p_value.is_some_and(|p| p < 0.02), "{mean:?}");
    assert!(mean.shift_percent.is_some_and(|s| s > 25.0), "{mean:?}");
    assert_eq!(judged(&pre, "errorRate").verdict, MetricVerdict::Passed);
    assert_eq!(
        judged(&pre, "sagaCompensationRate").verdict,
        MetricVerdict::NoData,
        "a read-only probe finishes no saga"
    );
    println!(
        "statistical gate, 30 % slower: meanLatency {:?} vs {:?} ms, p={:?}, shift {:?} %",
        mean.under_test_median, mean.baseline_median, mean.p_value, mean.shift_percent
    );
    assert_eq!(h.selector().await, "blue");
    let invariants = watcher.snapshot();
    assert_eq!(invariants.selected, vec!["blue"], "traffic never left blue");
    let metrics = operator.metrics.encode().expect("the operator's metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "relayer_operator_gate_statistic_verdicts_total{gate=\"prePromotion\",metric=\"meanLatency\",verdict=\"failed\"}"
        ) && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn identical_releases_pass_the_statistical_gate() {
    let _shared = LOAD.read().await;
    use relayer_operator::crd::{GateVerdict, MetricVerdict};
    let h = Harness::new("cut-stat-same").await;
    let _operator = start_operator(&h.env);
    let mut rd = h.shared.rd(market(2, statistical_strategy()));
    rd["spec"]["pod"] = latency_env(STAT_LATENCY_MS, "1")["spec"]["pod"].clone();
    h.apply_json(rd).await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    h.patch(latency_env(STAT_LATENCY_MS, "2")).await;
    let rd = h.wait_step(RolloutStep::Stable, "green").await;
    let pre = pre_gate(&rd);
    assert_eq!(pre.verdict, GateVerdict::Passed, "{pre:?}");
    for metric in ["p99Latency", "meanLatency", "errorRate"] {
        let m = judged(&pre, metric);
        assert_eq!(m.verdict, MetricVerdict::Passed, "{m:?}");
        assert!(m.under_test_samples >= 10 && m.p_value.is_some(), "{m:?}");
    }
    let mean = judged(&pre, "meanLatency");
    println!(
        "statistical gate, identical: meanLatency {:?} vs {:?} ms, p={:?}, shift {:?} %",
        mean.under_test_median, mean.baseline_median, mean.p_value, mean.shift_percent
    );
}

#[tokio::test]
async fn the_automatic_promotion_waits_out_its_pause_after_the_gates_pass() {
    let _shared = LOAD.read().await;
    let h = Harness::new("cut-pause").await;
    let _operator = start_operator(&h.env);
    h.apply(market(2, strategy().auto_promotion_seconds(3)))
        .await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    h.patch(env_patch(vec![json!({ "name": "RELEASE", "value": "2" })]))
        .await;
    let rd = h.wait_step(RolloutStep::Stable, "green").await;
    let paused = step_ms(&rd, "AwaitingPromotion");
    assert!(
        (3_000..60_000).contains(&paused),
        "AwaitingPromotion took {paused} ms: {:?}",
        rollout(&rd).step_durations_ms
    );
    let events = h
        .env
        .kubectl(&["get", "events", "-o", "jsonpath={.items[*].reason}"])
        .expect("events");
    assert!(
        events.contains("AutoPromotion") && events.contains("Promoted"),
        "{events}"
    );
}

#[tokio::test]
async fn an_aborted_preview_stays_up_for_the_abort_delay_then_goes_to_zero() {
    let _shared = LOAD.read().await;
    const DELAY_S: u64 = 4;
    let h = Harness::new("cut-abort-delay").await;
    let _operator = start_operator(&h.env);
    h.apply(market(
        2,
        strategy().abort_scale_down_delay_seconds(i32::try_from(DELAY_S).unwrap_or(4)),
    ))
    .await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    h.patch(env_patch(vec![json!({
        "name": "RELAYER_FAULT_INJECTION__ERROR_RATE", "value": "0.5"
    })]))
    .await;
    let rd = h.wait_step(RolloutStep::Aborted, "blue").await;
    let aborted = Instant::now();
    assert_eq!(
        rd.status.as_ref().and_then(|s| s.preview_color),
        Some(relayer_operator::crd::Color::Green),
        "the aborted preview is still listed"
    );
    // Kept at its size, without traffic, for most of the delay.
    while aborted.elapsed() < Duration::from_secs(DELAY_S - 2) {
        assert_eq!(h.replicas("green").await, 2, "green kept during the delay");
        assert_eq!(h.selector().await, "blue");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for("green to be scaled to zero", SETTLE, || {
        let h = &h;
        async move { Ok((h.replicas("green").await == 0).then_some(())) }
    })
    .await;
    assert!(
        aborted.elapsed() >= Duration::from_secs(DELAY_S - 2),
        "scaled down after {:?}",
        aborted.elapsed()
    );
    assert_eq!(h.selector().await, "blue");
}

/// A webhook receiver on loopback for the operator of the test: answers every call with the
/// status it is set to, and keeps each call's JSON body.
struct Receiver {
    url: String,
    status: Arc<std::sync::atomic::AtomicU16>,
    calls: Arc<std::sync::Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(status: u16) -> Self {
        use axum::http::StatusCode;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let answer = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (a, c) = (answer.clone(), calls.clone());
        let app = axum::Router::new().route(
            "/confirm",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (a, c) = (a.clone(), c.clone());
                async move {
                    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    c.lock().expect("calls").push(json);
                    StatusCode::from_u16(a.load(std::sync::atomic::Ordering::SeqCst))
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/confirm"),
            status: answer,
            calls,
            task,
        }
    }

    fn answer(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    fn calls(&self) -> Vec<Value> {
        self.calls.lock().expect("calls").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// [`strategy`] with a pre-promotion webhook at `receiver` (one retry).
fn webhook_strategy(receiver: &Receiver) -> BlueGreen {
    strategy().pre_promotion(fast_gate().webhook("confirm", &receiver.url, 1))
}

#[tokio::test]
async fn a_webhook_answering_500_aborts_the_cutover() {
    let _shared = LOAD.read().await;
    let receiver = Receiver::start(500).await;
    let h = Harness::new("cut-hook-500").await;
    let _operator = start_operator(&h.env);
    h.apply(market(2, webhook_strategy(&receiver))).await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    let watcher = InvariantWatcher::start(h.env.client.clone(), &h.env.namespace, NAME);
    h.patch(env_patch(vec![json!({ "name": "RELEASE", "value": "2" })]))
        .await;
    let rd = h.wait_step(RolloutStep::Aborted, "blue").await;
    let r = rollout(&rd);
    assert_eq!(r.failed_gate.as_deref(), Some("prePromotion"), "{r:?}");
    let reason = r.abort_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("webhook confirm failed 2 calls (1 retries): HTTP 500"),
        "{reason}"
    );
    let pre = pre_gate(&rd);
    assert_eq!(pre.webhooks.len(), 1, "{pre:?}");
    assert_eq!(
        pre.webhooks[0].verdict,
        relayer_operator::crd::WebhookVerdict::Failed
    );
    let calls = receiver.calls();
    assert_eq!(calls.len(), 2, "one call and one retry: {calls:?}");
    let context = &calls[0];
    assert_eq!(context["name"], NAME);
    assert_eq!(context["gate"], "prePromotion");
    assert_eq!(context["underTestColor"], "green");
    assert_eq!(context["activeColor"], "blue");
    assert_eq!(context["revision"], json!(r.target_revision));
    assert!(
        context["previewAddress"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("http://{NAME}-preview."))),
        "{context}"
    );
    assert_eq!(h.selector().await, "blue");
    assert_eq!(
        watcher.snapshot().selected,
        vec!["blue"],
        "traffic never left blue"
    );
}

#[tokio::test]
async fn a_webhook_that_holds_keeps_the_cutover_waiting_until_it_answers_200() {
    let _shared = LOAD.read().await;
    use relayer_operator::crd::{GateVerdict, WebhookVerdict};
    let receiver = Receiver::start(423).await;
    let h = Harness::new("cut-hook-hold").await;
    let _operator = start_operator(&h.env);
    h.apply(market(2, webhook_strategy(&receiver))).await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    h.patch(env_patch(vec![json!({ "name": "RELEASE", "value": "2" })]))
        .await;
    // Held: asked again every interval, the cutover waits in PrePromotion on blue.
    let held = wait_for("the webhook asked five times while holding", SETTLE, || {
        let h = &h;
        let calls = receiver.calls().len();
        async move {
            let rd = h.env.api::<RelayerDeployment>().get(NAME).await?;
            let held = rd
                .status
                .as_ref()
                .and_then(|s| s.rollout.as_ref())
                .and_then(|r| r.gates.iter().find(|g| g.name == "prePromotion"))
                .is_some_and(|g| {
                    g.webhooks
                        .first()
                        .is_some_and(|w| w.verdict == WebhookVerdict::Held)
                });
            Ok((calls >= 5 && held).then_some(rd))
        }
    })
    .await;
    let r = rollout(&held);
    assert_eq!(r.step, RolloutStep::PrePromotion, "{r:?}");
    assert_eq!(pre_gate(&held).verdict, GateVerdict::Running);
    assert_eq!(h.selector().await, "blue", "no promotion while held");
    receiver.answer(200);
    let rd = h.wait_step(RolloutStep::Stable, "green").await;
    let pre = pre_gate(&rd);
    assert_eq!(pre.verdict, GateVerdict::Passed, "{pre:?}");
    assert_eq!(pre.webhooks[0].verdict, WebhookVerdict::Passed);
    assert!(pre.webhooks[0].calls >= 6, "{pre:?}");
}

/// The dedupe keys of `event` among the bodies a receiver got (generic format), one per call.
fn keys_of(calls: &[Value], event: &str) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c["event"] == event)
        .filter_map(|c| c["key"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn notifications_arrive_once_each_across_an_operator_restart_mid_cutover() {
    let _shared = LOAD.read().await;
    let generic = Receiver::start(200).await;
    let slack = Receiver::start(200).await;
    let h = Harness::new("cut-notify").await;
    let operator = start_operator(&h.env);
    // A longer pre-promotion gate, so the operator can be stopped while it runs.
    let gate = fast_gate().samples(10);
    let mut rd = h.shared.rd(market(2, strategy().pre_promotion(gate)));
    rd["spec"]["notifications"] = json!([
        { "name": "ops", "url": generic.url },
        { "name": "chat", "url": slack.url, "format": "Slack",
          "events": ["Promoted", "Aborted", "RolledBack"] },
    ]);
    h.apply_json(rd).await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    assert!(
        generic.calls().is_empty(),
        "creating the object is no cutover"
    );
    h.patch(env_patch(vec![json!({ "name": "RELEASE", "value": "2" })]))
        .await;
    wait_for("CutoverStarted delivered", SETTLE, || {
        let calls = generic.calls();
        async move { Ok((!keys_of(&calls, "CutoverStarted").is_empty()).then_some(())) }
    })
    .await;
    // Stopped mid-cutover (its task aborted, as a crash would), then a new operator.
    drop(operator);
    let _operator = start_operator(&h.env);
    let rd = h.wait_step(RolloutStep::Stable, "green").await;
    wait_for("Stable delivered", SETTLE, || {
        let calls = generic.calls();
        async move { Ok((!keys_of(&calls, "Stable").is_empty()).then_some(())) }
    })
    .await;
    // Then a bad release: the gate fails and the cutover aborts.
    h.patch(env_patch(vec![json!({
        "name": "RELAYER_FAULT_INJECTION__ERROR_RATE", "value": "0.5"
    })]))
    .await;
    h.wait_step(RolloutStep::Aborted, "green").await;
    wait_for("Aborted delivered to both", SETTLE, || {
        let (calls, chat) = (generic.calls(), slack.calls());
        async move { Ok((!keys_of(&calls, "Aborted").is_empty() && chat.len() >= 2).then_some(())) }
    })
    .await;
    // Time for anything re-sent to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = generic.calls();
    let events: Vec<&str> = calls.iter().filter_map(|c| c["event"].as_str()).collect();
    assert_eq!(
        events,
        [
            "CutoverStarted",
            "Promoted",
            "Stable",
            "CutoverStarted",
            "GateFailed",
            "Aborted"
        ],
        "each event once, in order: {calls:?}"
    );
    let mut keys: Vec<&str> = calls.iter().filter_map(|c| c["key"].as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), calls.len(), "no key twice: {calls:?}");
    let uid = rd.metadata.uid.clone().unwrap_or_default();
    assert!(
        keys.iter().all(|k| k.starts_with(&format!("{uid}/"))),
        "{keys:?}"
    );
    let chat = slack.calls();
    let texts: Vec<&str> = chat.iter().filter_map(|c| c["text"].as_str()).collect();
    assert_eq!(texts.len(), 2, "only the events it asked for: {chat:?}");
    assert!(
        texts[0].contains(" Promoted: ") && texts[1].contains(" Aborted: "),
        "{texts:?}"
    );
    let rd = h
        .env
        .api::<RelayerDeployment>()
        .get(NAME)
        .await
        .expect("rd");
    let record = rd
        .status
        .and_then(|s| s.notifications)
        .expect("the record in status");
    assert!(record.outbox.is_empty(), "{record:?}");
    assert_eq!(record.delivered.len(), 6, "{record:?}");
}

#[tokio::test]
async fn a_release_failing_after_promotion_rolls_back_to_the_still_warm_colour() {
    let _shared = LOAD.read().await;
    let h = Harness::new("cut-post").await;
    let _operator = start_operator(&h.env);
    // The pre-promotion gate checks latency only; the fault (errors) shows after promotion.
    let pre = fast_gate()
        .max_error_rate_basis_points(None)
        .max_p99_latency_ms(1000);
    h.apply(market(2, strategy().pre_promotion(pre))).await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    let watcher = InvariantWatcher::start(h.env.client.clone(), &h.env.namespace, NAME);
    let blue_pods_before = h.backend.running();
    h.patch(json!({ "spec": { "pod": { "env": [
        { "name": "RELAYER_FAULT_INJECTION__ERROR_RATE", "value": "0.5" },
    ] } } }))
    .await;
    let rd = h.wait_step(RolloutStep::Aborted, "blue").await;
    let r = rollout(&rd);
    assert_eq!(r.failed_gate.as_deref(), Some("postPromotion"), "{r:?}");
    h.assert_back_on_warm_blue(&watcher.snapshot(), blue_pods_before)
        .await;
}

#[tokio::test]
async fn with_writes_a_release_failing_after_promotion_rolls_back_and_no_secret_leaks() {
    let _alone = LOAD.write().await;
    let h = Harness::new("cut-post-writes").await;
    let shared = &h.shared;
    // NB: the binary, so that everything the operator logs is in a file to search.
    let operator = OperatorProcess::launch(&h.env, "post-writes")
        .env("RUST_LOG", "info,relayer_operator=debug")
        .args(["--namespace", &h.env.namespace])
        .args(["--leader-election", "false"])
        .args(["--pod-networks", POD_NETWORK])
        .spawn();
    // The bad release is slow, not failing, so every client answer stays good and the test
    // can ask for 0 failed requests: the pre-promotion gate checks errors only, the
    // post-promotion gate the p99 latency too, which the release's added latency breaks.
    // NB: a longer pre-promotion gate, as the post-promotion one ends at its first failing
    // sample, so that the window holds the writes it must.
    let pre = fast_gate().samples(2 * ZDT_GATE_SAMPLES);
    // NB: ten failing samples (3 s) before the rollback, so that green serves some of the load
    // (each client waits the added latency on green).
    let post = fast_gate()
        .samples(ZDT_GATE_SAMPLES)
        .failure_limit(9)
        .max_p99_latency_ms(BAD_RELEASE_P99_LIMIT_MS);
    h.apply(market(
        2,
        zdt_strategy().pre_promotion(pre).post_promotion(post),
    ))
    .await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    let watcher = InvariantWatcher::start(h.env.client.clone(), &h.env.namespace, NAME);
    let proxy = Proxy::start(h.env.client.clone(), &h.env.namespace, NAME).await;
    wait_for("the proxy to know blue's endpoints", SETTLE, || {
        let addr = proxy.addr;
        async move { Ok(matches!(http::get(addr, "/ready").await, Ok((200, _))).then_some(())) }
    })
    .await;
    let (traders, load) = start_writes(&h, shared, &proxy, "post").await;
    let counts = load.counts.clone();
    let blue_pods_before = h.backend.running();

    let (requests_at_change, writes_at_change) = (counts.requests(), counts.writes());
    let changed = Instant::now();
    h.patch(env_patch(vec![json!({
        "name": "RELAYER_FAULT_INJECTION__ADDED_LATENCY_MS",
        "value": BAD_RELEASE_LATENCY_MS.to_string(),
    })]))
    .await;
    let rd = h.wait_step(RolloutStep::Aborted, "blue").await;
    let to_aborted = changed.elapsed();
    wait_for("green to be scaled down and gone", SETTLE, || {
        let h = &h;
        async move {
            let gone = h.replicas("green").await == 0 && h.backend.running() == blue_pods_before;
            Ok(gone.then_some(()))
        }
    })
    .await;
    let window = (
        counts.requests() - requests_at_change,
        counts.writes() - writes_at_change,
        changed.elapsed(),
    );
    let run = finish_writes(&h, shared, &proxy, &traders, load, writes_at_change, window).await;
    let invariants = watcher.snapshot();
    let r = rollout(&rd);
    eprintln!(
        "rollback: spec change → Aborted (back on blue) {} ms; {:?}",
        to_aborted.as_millis(),
        r.step_durations_ms
    );
    run.print("rollback with writes");
    eprintln!("rollback with writes: {:?}", r.abort_reason);

    assert_eq!(r.failed_gate.as_deref(), Some("postPromotion"), "{r:?}");
    let reason = r.abort_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("p99 latency"),
        "rolled back for the release's latency: {reason}"
    );
    h.assert_back_on_warm_blue(&invariants, blue_pods_before)
        .await;
    // The bad release answered slowly but correctly: not one request failed, and what green
    // served (its writes among it) is checked on blue like the rest.
    let blue_now: std::collections::BTreeSet<_> = h.backend.addresses().into_iter().collect();
    let by_green: u64 = proxy
        .served()
        .iter()
        .filter(|(addr, _)| !blue_now.contains(*addr))
        .map(|(_, n)| n)
        .sum();
    eprintln!("rollback with writes: connections served by green through the proxy: {by_green}");
    assert!(
        by_green >= 5,
        "green served {by_green} connections of the load"
    );
    run.assert_zero_downtime(false);

    // No secret value in any ConfigMap, ControllerRevision, Event, the RelayerDeployment (its
    // status included) or the operator's log; raw or base64-encoded.
    let kubectl = |args: &[&str]| h.env.kubectl(args).expect("kubectl get");
    let places = [
        (
            "the ConfigMaps",
            kubectl(&["get", "configmaps", "-o", "yaml"]),
        ),
        (
            "the ControllerRevisions",
            kubectl(&["get", "controllerrevisions", "-o", "yaml"]),
        ),
        ("the Events", kubectl(&["get", "events", "-o", "yaml"])),
        (
            "the RelayerDeployment",
            kubectl(&["get", "relayerdeployment", NAME, "-o", "yaml"]),
        ),
        ("the operator's log", operator.log()),
    ];
    // The search is not vacuous: each place holds what the cutover wrote there.
    assert!(places[0].1.contains("config.yaml") && places[0].1.contains(&shared.stub.url));
    assert!(
        places[1].1.matches("kind: ControllerRevision").count() >= 2,
        "{}",
        places[1].1
    );
    assert!(places[2].1.contains("GateFailed"), "{}", places[2].1);
    assert!(places[3].1.contains("postPromotion"));
    assert!(places[4].1.lines().count() > 10, "{}", places[4].1);
    let started = h.backend.started();
    assert!(
        started.values().any(|(_, env)| env
            .iter()
            .any(|(k, v)| k == "RELAYER_ADMIN_TOKEN" && *v == shared.admin_token)),
        "the pods got the admin token from its Secret"
    );
    assert!(
        started.values().any(|(_, env)| env
            .iter()
            .any(|(k, v)| k == "RELAYER_REDIS__PASSWORD" && *v == shared.store.password)),
        "the pods got the Redis password from its Secret"
    );
    for (what, value) in shared.secret_values() {
        let encoded = serde_json::to_value(k8s_openapi::ByteString(value.as_bytes().to_vec()))
            .expect("base64");
        let encoded = encoded.as_str().unwrap_or_default().to_owned();
        for (place, text) in &places {
            assert!(!text.contains(&value), "{what} is in {place}");
            assert!(!text.contains(&encoded), "{what} (base64) is in {place}");
        }
    }
    drop(operator);
}

/// The kubelet stand-in resolves `valueFrom.secretKeyRef`: a pod whose Secret is missing does
/// not start (a kubelet's `CreateContainerConfigError`) and starts, with the value, once the
/// Secret exists and the pod is retried.
#[tokio::test]
async fn a_pod_whose_secret_is_missing_does_not_start_until_the_secret_exists() {
    let _shared = LOAD.read().await;
    let h = Harness::new("cut-secret").await;
    let _operator = start_operator(&h.env);
    let mut rd = h.shared.rd(market(1, strategy()));
    rd["spec"]["secrets"]["adminToken"] = json!({ "name": "late-admin", "key": "token" });
    h.apply_json(rd).await;
    let pods = h.env.api::<k8s_openapi::api::core::v1::Pod>();
    let pod = wait_for("the pod to be bound to the node", SETTLE, || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&Default::default()).await?;
            Ok(list
                .items
                .into_iter()
                .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()))
        }
    })
    .await;
    let name = kube::ResourceExt::name_any(&pod);
    // NB: a bounded look at a state that must last: nothing starts while the Secret is missing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.backend.running(), 0, "a pod started without its Secret");
    let token = random_secret();
    h.env.create_secret("late-admin", "token", &token).await;
    // A kubelet retries on its own; the simulator retries at the pod's next event.
    h.env
        .kubectl(&["annotate", "pod", &name, "retry=1"])
        .expect("kubectl annotate");
    wait_for("the pod to start with its Secret", SETTLE, || {
        let backend = h.backend.clone();
        let (name, token) = (name.clone(), token.clone());
        async move {
            Ok(backend.started().get(&name).and_then(|(_, env)| {
                env.iter()
                    .any(|(k, v)| k == "RELAYER_ADMIN_TOKEN" && *v == token)
                    .then_some(())
            }))
        }
    })
    .await;
    h.wait_step(RolloutStep::Stable, "blue").await;
}

#[tokio::test]
async fn rollback_to_a_named_revision_restores_its_config() {
    let _shared = LOAD.read().await;
    let h = Harness::new("cut-rollback").await;
    let _operator = start_operator(&h.env);
    let first =
        market(1, strategy().pre_promotion(None).post_promotion(None)).max_order_amount(1111);
    h.apply(first).await;
    let rd = h.wait_step(RolloutStep::Stable, "blue").await;
    let revision_one = rd
        .status
        .and_then(|s| s.current_revision)
        .expect("revision");
    h.patch(json!({ "spec": { "config": { "limits": { "maxOrderAmount": 2222 } } } }))
        .await;
    let rd = h.wait_step(RolloutStep::Stable, "green").await;
    let revision_two = rd
        .status
        .and_then(|s| s.current_revision)
        .expect("revision");
    assert_ne!(revision_one, revision_two);

    h.env
        .kubectl(&[
            "annotate",
            "rd",
            NAME,
            &format!("relayer.foresight.dev/rollback-to={revision_one}"),
        ])
        .expect("kubectl annotate rollback-to");
    let rd = h.wait_step(RolloutStep::Stable, "blue").await;
    let status = rd.status.clone().expect("status");
    assert_eq!(
        status.current_revision.as_deref(),
        Some(revision_one.as_str())
    );
    assert_eq!(
        rd.spec.config.limits.max_order_amount, 1111,
        "the spec got the old config"
    );
    assert!(
        !rd.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("relayer.foresight.dev/rollback-to")
    );
    // The pods that now serve read the old config.
    let blue = h
        .env
        .api::<Deployment>()
        .get(&format!("{NAME}-blue"))
        .await
        .expect("blue");
    let config_map = blue
        .spec
        .template
        .spec
        .and_then(|p| p.volumes)
        .and_then(|v| v.into_iter().find_map(|v| v.config_map.map(|c| c.name)))
        .expect("config volume");
    let cm = h
        .env
        .api::<ConfigMap>()
        .get(&config_map)
        .await
        .expect("config map");
    let text = cm
        .data
        .unwrap_or_default()
        .remove("config.yaml")
        .unwrap_or_default();
    assert!(text.contains("maxOrderAmount: 1111"), "{text}");
    let started = h.backend.started();
    let newest_blue = started
        .iter()
        .filter(|(pod, _)| pod.starts_with(&format!("{NAME}-blue")))
        .map(|(_, (config, _))| config.clone())
        .collect::<Vec<_>>();
    assert!(
        newest_blue
            .iter()
            .any(|c| c.contains("maxOrderAmount: 1111"))
    );
}

#[tokio::test]
async fn with_the_hpa_at_seven_the_preview_comes_up_at_seven_and_scale_down_is_held() {
    let _shared = LOAD.read().await;
    let h = Harness::new("cut-hpa").await;
    let _operator = start_operator(&h.env);
    let s = market(3, strategy().pre_promotion(fast_gate().samples(4))).autoscaling(3, 10);
    h.apply(s).await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    // Act as the HPA: it scales the RelayerDeployment through its scale subresource.
    h.env
        .kubectl(&["scale", "rd", NAME, "--replicas=7"])
        .expect("kubectl scale");
    let api = h.env.api::<RelayerDeployment>();
    wait_for("blue at 7 ready pods", SETTLE, || {
        let api = api.clone();
        async move {
            let rd = api.get(NAME).await?;
            Ok(rd
                .status
                .is_some_and(|s| s.ready_replicas == 7)
                .then_some(()))
        }
    })
    .await;
    let watcher = InvariantWatcher::start(h.env.client.clone(), &h.env.namespace, NAME);
    h.patch(json!({ "spec": { "pod": { "env": [{ "name": "RELEASE", "value": "2" }] } } }))
        .await;
    h.wait_step(RolloutStep::PrePromotion, "blue").await;
    // The HPA tries to shrink mid-cutover: the operator holds both colours.
    h.env
        .kubectl(&["scale", "rd", NAME, "--replicas=4"])
        .expect("kubectl scale");
    let hpa = h
        .env
        .api::<HorizontalPodAutoscaler>()
        .get(NAME)
        .await
        .expect("hpa");
    let policy = hpa
        .spec
        .behavior
        .and_then(|b| b.scale_down)
        .and_then(|s| s.select_policy);
    assert_eq!(
        policy.as_deref(),
        Some("Disabled"),
        "HPA scale-down held mid-cutover"
    );
    h.wait_step(RolloutStep::Stable, "green").await;
    let invariants = watcher.snapshot();
    assert_eq!(
        invariants
            .first_replicas
            .get(&format!("{NAME}-green"))
            .copied(),
        Some(7),
        "green came up at the HPA's 7, not minReplicas"
    );
    assert_eq!(
        invariants
            .min_replicas
            .get(&format!("{NAME}-green"))
            .copied(),
        Some(7),
        "never shrunk before the switch"
    );
    assert_eq!(
        invariants
            .min_replicas
            .get(&format!("{NAME}-blue"))
            .copied(),
        Some(7),
        "blue held while green was active"
    );
    assert!(
        invariants.violations.is_empty(),
        "{:?}",
        invariants.violations
    );
    // After the cutover the hold is lifted and the active colour follows the HPA.
    wait_for("green to follow the HPA down to 4", SETTLE, || {
        let h = &h;
        async move { Ok((h.replicas("green").await == 4).then_some(())) }
    })
    .await;
    // NB: the Deployment and the HPA are two writes of one reconcile: green may be seen at 4
    // a moment before the HPA's scale-down policy is restored.
    wait_for("the HPA's scale-down to be released (Max)", SETTLE, || {
        let api = h.env.api::<HorizontalPodAutoscaler>();
        async move {
            let hpa = api.get(NAME).await?;
            let policy = hpa
                .spec
                .behavior
                .and_then(|b| b.scale_down)
                .and_then(|s| s.select_policy);
            Ok((policy.as_deref() == Some("Max")).then_some(()))
        }
    })
    .await;
}

/// The operator binary (run `n` of the test), without leader election, allowed to contact
/// [`POD_NETWORK`] only.
fn spawn_operator(env: &TestEnv, n: usize) -> OperatorProcess {
    OperatorProcess::launch(env, &n.to_string())
        .env("RUST_LOG", "info")
        .args(["--namespace", &env.namespace])
        .args(["--leader-election", "false"])
        .args(["--pod-networks", POD_NETWORK])
        .spawn()
}

#[tokio::test]
async fn the_operator_killed_in_every_phase_still_finishes_the_cutover_once() {
    let _shared = LOAD.read().await;
    let h = Harness::new("cut-kill").await;
    let mut runs = 0;
    let mut operator = spawn_operator(&h.env, runs);
    let slow_gate = fast_gate().interval_ms(400).samples(4);
    h.apply(market(
        2,
        strategy()
            .auto_promote(false)
            .scale_down_delay_seconds(3)
            .pre_promotion(slow_gate.clone())
            .post_promotion(slow_gate),
    ))
    .await;
    h.wait_step(RolloutStep::Stable, "blue").await;
    let watcher = InvariantWatcher::start(h.env.client.clone(), &h.env.namespace, NAME);
    h.patch(json!({ "spec": { "pod": { "env": [{ "name": "RELEASE", "value": "2" }] } } }))
        .await;
    let api = h.env.api::<RelayerDeployment>();
    let mut killed = Vec::new();
    for step in [
        RolloutStep::Deploying,
        RolloutStep::PrePromotion,
        RolloutStep::AwaitingPromotion,
        RolloutStep::PostPromotion,
        RolloutStep::ScalingDown,
    ] {
        // NB: every 20 ms, as some steps last only a moment.
        let api = &api;
        wait_for_every(
            &format!("the cutover to be in {step:?}"),
            SETTLE,
            Duration::from_millis(20),
            || async move {
                let rd = api.get(NAME).await?;
                let now = rd
                    .status
                    .as_ref()
                    .and_then(|s| s.rollout.as_ref())
                    .map(|r| r.step);
                anyhow::ensure!(now == Some(step), "never saw {step:?} (at {now:?})");
                Ok(Some(()))
            },
        )
        .await;
        drop(operator); // SIGKILL mid-step
        killed.push(step);
        runs += 1;
        operator = spawn_operator(&h.env, runs);
        if step == RolloutStep::AwaitingPromotion {
            h.env
                .kubectl(&[
                    "annotate",
                    "rd",
                    NAME,
                    "relayer.foresight.dev/command=promote",
                ])
                .expect("kubectl annotate promote");
        }
    }
    let rd = h.wait_step(RolloutStep::Stable, "green").await;
    // NB: status is written before the children, so blue's scale-down follows the Stable
    // status (in the same reconcile, or in the next one after a crash between the two).
    wait_for("blue to be scaled to zero", SETTLE, || {
        let h = &h;
        async move { Ok((h.replicas("blue").await == 0).then_some(())) }
    })
    .await;
    drop(operator);
    let invariants = watcher.snapshot();
    eprintln!("killed in {killed:?}; selected {:?}", invariants.selected);
    assert_eq!(killed.len(), 5);
    assert_eq!(
        invariants.selected,
        vec!["blue", "green"],
        "promoted exactly once"
    );
    assert!(
        invariants.violations.is_empty(),
        "{:?}",
        invariants.violations
    );
    let r = rollout(&rd);
    assert!(
        r.gates
            .iter()
            .all(|g| g.verdict == relayer_operator::crd::GateVerdict::Passed),
        "{:?}",
        r.gates
    );
    assert!(
        !rd.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("relayer.foresight.dev/command")
    );
}
