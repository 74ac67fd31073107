//! The operator binary against a real API server: two instances elect one leader with a Lease,
//! and killing the leader hands over within the lease time. An ignored test measures reconcile
//! latency, API requests per steady-state reconcile and resident memory with 200
//! RelayerDeployments (`cargo test --test operator_leader -- --ignored --nocapture`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams};
use relayer_operator::crd::RelayerDeployment;
use serde_json::json;
use support::{TestEnv, wait_for};

const SETTLE: Duration = Duration::from_secs(120);
/// Short, so the handover test is quick; the production default is 15 s.
const LEASE_SECONDS: u64 = 4;

/// One operator process; killed (SIGKILL) when dropped.
struct OperatorProcess {
    child: Child,
    metrics: SocketAddr,
}

impl OperatorProcess {
    fn spawn(env: &TestEnv, identity: &str, extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let log = env
            .control_plane
            .work_dir()
            .join(format!("operator-{}-{identity}.log", env.namespace));
        let log = std::fs::File::create(&log).expect("operator log file");
        let child = Command::new(env!("CARGO_BIN_EXE_relayer-operator"))
            .env("KUBECONFIG", env.control_plane.kubeconfig())
            .env("RUST_LOG", "info,relayer_operator=debug")
            .args(["--namespace", &env.namespace])
            .args(["--lease-namespace", &env.namespace])
            .args(["--lease-duration-seconds", &LEASE_SECONDS.to_string()])
            .args(["--identity", identity])
            .args(["--metrics-addr", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start relayer-operator");
        Self {
            child,
            metrics: port,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The operator's `/metrics` text, or `None` while it is not serving yet.
    fn metrics_text(&self) -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(1)).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    }

    fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics_text()?, name)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sum of the samples of `name` (all label sets) in a Prometheus text exposition.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn relayer_deployment(name: &str, replicas: i32) -> RelayerDeployment {
    serde_json::from_value(json!({
        "apiVersion": "relayer.foresight.dev/v1alpha1",
        "kind": "RelayerDeployment",
        "metadata": { "name": name },
        "spec": { "image": "ghcr.io/foresight/relayer:0.1.0", "replicas": replicas },
    }))
    .expect("relayer deployment fixture")
}

async fn create_rd(env: &TestEnv, name: &str, replicas: i32) {
    env.api::<RelayerDeployment>()
        .patch(
            name,
            &PatchParams::apply("operator-leader-test"),
            &Patch::Apply(relayer_deployment(name, replicas)),
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
    let mut a = OperatorProcess::spawn(&env, "operator-a", &[]);
    // Give `a` the head start that makes it the leader, so the roles are known.
    wait_for("operator-a to lead", SETTLE, || {
        let leading = a.metric("relayer_operator_leader") == Some(1.0);
        async move { Ok(leading.then_some(())) }
    })
    .await;
    let b = OperatorProcess::spawn(&env, "operator-b", &[]);
    wait_for("operator-b to serve metrics", SETTLE, || {
        let up = b.metric("relayer_operator_leader").is_some();
        async move { Ok(up.then_some(())) }
    })
    .await;

    create_rd(&env, "first", 1).await;
    wait_deployment(&env, "first").await;
    assert!(a.metric("relayer_operator_reconcile_total").unwrap_or(0.0) >= 1.0);
    assert_eq!(
        b.metric("relayer_operator_leader"),
        Some(0.0),
        "b stands by"
    );
    assert_eq!(
        b.metric("relayer_operator_reconcile_total"),
        Some(0.0),
        "the standby reconciled nothing"
    );

    let killed = Instant::now();
    a.kill();
    wait_for("operator-b to take over", SETTLE, || {
        let leading = b.metric("relayer_operator_leader") == Some(1.0);
        async move { Ok(leading.then_some(())) }
    })
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

/// Histogram quantile from cumulative `_bucket` lines (upper bound of the bucket that holds it).
fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    quantile(&buckets(text, name), q)
}

/// Quantile of the observations made between two expositions.
fn window_quantile(before: &str, after: &str, name: &str, q: f64) -> Option<f64> {
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

fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{name}_bucket{{le=\""))?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
    buckets
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
    let operator = OperatorProcess::spawn(
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
    let text = operator.metrics_text().expect("metrics");
    let p50 = histogram_quantile(&text, "relayer_operator_reconcile_duration_seconds", 0.5);
    let p99 = histogram_quantile(&text, "relayer_operator_reconcile_duration_seconds", 0.99);
    eprintln!("converged {COUNT} RelayerDeployments in {converged:?}");
    eprintln!(
        "reconcile latency while converging (bucket upper bounds): p50 <= {p50:?} s, p99 <= {p99:?} s"
    );

    // Steady state: resyncs every 5 s; count requests and reconciles over a window.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = operator.metrics_text().expect("metrics");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = operator.metrics_text().expect("metrics");
    let delta = |name: &str| {
        metric_value(&after, name).unwrap_or(0.0) - metric_value(&before, name).unwrap_or(0.0)
    };
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
