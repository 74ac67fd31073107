//! The operator binary against a real API server: two instances elect one leader with a Lease,
//! and killing the leader hands over within the lease time. An ignored test measures reconcile
//! latency, API requests per steady-state reconcile and resident memory with 200
//! RelayerDeployments (`cargo test --test operator_leader -- --ignored --nocapture`).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams};
use relayer_operator::crd::RelayerDeployment;
use support::fixtures::rd;
use support::metrics::Exposition;
use support::operator::OperatorProcess;
use support::{TestEnv, wait_for};

const SETTLE: Duration = Duration::from_secs(120);
/// Short, so the handover test is quick; the production default is 15 s.
const LEASE_SECONDS: u64 = 4;

/// The operator binary as `identity`, electing a leader with a short lease in the test's
/// namespace.
fn spawn_operator(env: &TestEnv, identity: &str, extra: &[&str]) -> OperatorProcess {
    OperatorProcess::launch(env, identity)
        .env("RUST_LOG", "info,relayer_operator=debug")
        .args(["--namespace", &env.namespace])
        .args(["--lease-namespace", &env.namespace])
        .args(["--lease-duration-seconds", &LEASE_SECONDS.to_string()])
        .args(["--identity", identity])
        .args(extra)
        .spawn()
}

/// Waits until `operator` serves its metrics and `name` reads `want`.
async fn wait_metric(what: &str, operator: &OperatorProcess, name: &str, want: f64) {
    wait_for(what, SETTLE, || async move {
        let value = operator.scrape().await?.get(name, &[])?;
        Ok((value == want).then_some(()))
    })
    .await;
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn create_rd(env: &TestEnv, name: &str, replicas: i32) {
    env.api::<RelayerDeployment>()
        .patch(
            name,
            &PatchParams::apply("operator-leader-test"),
            &Patch::Apply(
                rd(name)
                    .image("ghcr.io/foresight/relayer:0.1.0")
                    .replicas(replicas)
                    .build(),
            ),
        )
        .await
        .expect("apply a RelayerDeployment");
}

async fn wait_deployment(env: &TestEnv, name: &str) {
    let api: Api<Deployment> = env.api();
    let name = format!("{name}-blue");
    wait_for(&format!("Deployment {name}"), SETTLE, || {
        let (api, name) = (api.clone(), name.clone());
        async move { Ok(api.get_opt(&name).await?.map(|_| ())) }
    })
    .await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_killing_it_hands_over_within_the_lease_time() {
    let env = TestEnv::new("rd-leader").await;
    env.install_crds(&repo().join("crds")).await;
    let mut a = spawn_operator(&env, "operator-a", &[]);
    // Give `a` the head start that makes it the leader, so the roles are known.
    wait_metric("operator-a to lead", &a, "relayer_operator_leader", 1.0).await;
    let b = spawn_operator(&env, "operator-b", &[]);
    wait_for("operator-b to serve metrics", SETTLE, || async {
        b.scrape().await?.get("relayer_operator_leader", &[])?;
        Ok(Some(()))
    })
    .await;

    create_rd(&env, "first", 1).await;
    wait_deployment(&env, "first").await;
    let (a_metrics, b_metrics) = (
        a.scrape().await.expect("operator-a's metrics"),
        b.scrape().await.expect("operator-b's metrics"),
    );
    assert!(a_metrics.value("relayer_operator_reconcile_total") >= 1.0);
    assert_eq!(
        b_metrics.value("relayer_operator_leader"),
        0.0,
        "b stands by"
    );
    assert_eq!(
        b_metrics.value("relayer_operator_reconcile_total"),
        0.0,
        "the standby reconciled nothing"
    );

    let killed = Instant::now();
    a.kill();
    wait_metric(
        "operator-b to take over",
        &b,
        "relayer_operator_leader",
        1.0,
    )
    .await;
    let handover = killed.elapsed();
    create_rd(&env, "second", 1).await;
    wait_deployment(&env, "second").await;
    let retry = Duration::from_secs(LEASE_SECONDS) / 5;
    eprintln!("handover after SIGKILL of the leader: {handover:?} (lease {LEASE_SECONDS} s)");
    assert!(
        handover <= Duration::from_secs(LEASE_SECONDS) + retry * 2 + Duration::from_secs(1),
        "handover took {handover:?}, more than the lease time ({LEASE_SECONDS} s) plus a retry"
    );
    let lease = env
        .kubectl(&[
            "get",
            "lease",
            "relayer-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .expect("get lease");
    assert_eq!(lease.trim(), "operator-b");
}

/// Histogram quantile from cumulative buckets (upper bound of the bucket that holds it).
fn histogram_quantile(metrics: &Exposition, name: &str, q: f64) -> Option<f64> {
    quantile(&buckets(metrics, name), q)
}

/// Quantile of the observations made between two expositions.
fn window_quantile(before: &Exposition, after: &Exposition, name: &str, q: f64) -> Option<f64> {
    let old = buckets(before, name);
    let window: Vec<(f64, f64)> = buckets(after, name)
        .into_iter()
        .map(|(le, count)| {
            let earlier = old.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, c)| *c);
            (le, count - earlier)
        })
        .collect();
    quantile(&window, q)
}

fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(le, _)| *le)
}

fn buckets(metrics: &Exposition, name: &str) -> Vec<(f64, f64)> {
    metrics
        .buckets(name)
        .unwrap_or_else(|error| panic!("{error:#}"))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .ok()
}

#[tokio::test]
#[ignore = "measurement: run with --ignored --nocapture"]
async fn measure_two_hundred_relayer_deployments() {
    const COUNT: usize = 200;
    let env = TestEnv::new("rd-measure").await;
    env.install_crds(&repo().join("crds")).await;
    let operator = spawn_operator(
        &env,
        "measure",
        &[
            "--leader-election=false",
            "--resync-seconds",
            "5",
            "--log",
            "warn",
        ],
    );
    let started = Instant::now();
    for i in 0..COUNT {
        create_rd(&env, &format!("relayer-{i:03}"), 1).await;
    }
    let api: Api<RelayerDeployment> = env.api();
    wait_for(
        "every RelayerDeployment to be Stable",
        Duration::from_secs(900),
        || {
            let api = api.clone();
            async move {
                let list = api.list(&ListParams::default()).await?;
                let stable = list
                    .items
                    .iter()
                    .filter(|rd| {
                        rd.status
                            .as_ref()
                            .is_some_and(|s| s.phase == relayer_operator::crd::Phase::Stable)
                    })
                    .count();
                Ok((stable == COUNT).then_some(()))
            }
        },
    )
    .await;
    let converged = started.elapsed();
    let text = operator.scrape().await.expect("metrics");
    let p50 = histogram_quantile(&text, "relayer_operator_reconcile_duration_seconds", 0.5);
    let p99 = histogram_quantile(&text, "relayer_operator_reconcile_duration_seconds", 0.99);
    eprintln!("converged {COUNT} RelayerDeployments in {converged:?}");
    eprintln!(
        "reconcile latency while converging (bucket upper bounds): p50 <= {p50:?} s, p99 <= {p99:?} s"
    );

    // Steady state: resyncs every 5 s; count requests and reconciles over a window.
    // NB: these sleeps are the measurement window, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = operator.scrape().await.expect("metrics");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = operator.scrape().await.expect("metrics");
    let delta = |name: &str| after.value(name) - before.value(name);
    let reconciles = delta("relayer_operator_reconcile_total");
    let requests = delta("relayer_operator_api_requests_total");
    let writes = delta("relayer_operator_child_writes_total")
        + delta("relayer_operator_status_writes_total");
    let rss = rss_kib(operator.pid());
    let name = "relayer_operator_reconcile_duration_seconds";
    let steady_p50 = window_quantile(&before, &after, name, 0.5);
    let steady_p99 = window_quantile(&before, &after, name, 0.99);
    eprintln!(
        "steady state over 30 s: {reconciles} reconciles, {requests} API requests ({:.4} per reconcile), {writes} writes",
        requests / reconciles.max(1.0)
    );
    eprintln!("steady-state reconcile latency: p50 <= {steady_p50:?} s, p99 <= {steady_p99:?} s");
    eprintln!("operator RSS with {COUNT} RelayerDeployments: {rss:?} KiB");
    assert!(
        reconciles >= COUNT as f64,
        "every object resynced at least once"
    );
    assert_eq!(writes, 0.0, "steady state writes nothing");
}

/// The metrics reader of `tests/support` (tested here, in one test binary only).
mod metrics_reader {
    use crate::support::metrics::Exposition;

    const TEXT: &str = "# TYPE relayer_operator_leader gauge\n\
        relayer_operator_leader 1\n\
        relayer_operator_child_writes_total{kind=\"Deployment\",action=\"apply\"} 2\n\
        relayer_operator_child_writes_total{kind=\"Service\",action=\"apply\"} 3\n\
        d_seconds_bucket{le=\"0.1\"} 1\n\
        d_seconds_bucket{le=\"+Inf\"} 4\n\
        # EOF\n";

    #[test]
    fn a_missing_series_is_an_error_naming_it_never_zero() {
        let exposition = Exposition::parse(TEXT).expect("parse");
        let error = exposition
            .get("relayer_operator_leadr", &[])
            .expect_err("a misspelt name");
        assert!(
            format!("{error:#}").contains("relayer_operator_leadr"),
            "{error:#}"
        );
        assert!(
            exposition
                .get(
                    "relayer_operator_child_writes_total",
                    &[("kind", "Ingress")]
                )
                .is_err()
        );
    }

    #[test]
    fn values_sum_the_matching_series_and_buckets_sort_by_bound() {
        let exposition = Exposition::parse(TEXT).expect("parse");
        assert_eq!(exposition.value("relayer_operator_leader"), 1.0);
        assert_eq!(exposition.value("relayer_operator_child_writes_total"), 5.0);
        assert_eq!(
            exposition
                .get(
                    "relayer_operator_child_writes_total",
                    &[("kind", "Service")]
                )
                .expect("a Service series"),
            3.0
        );
        assert_eq!(
            exposition.buckets("d_seconds").expect("buckets"),
            vec![(0.1, 1.0), (f64::INFINITY, 4.0)]
        );
        assert!(Exposition::parse("not_a_number x\n").is_err());
    }
}
