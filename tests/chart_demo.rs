//! The local demo, for people without a cluster: one command starts the test control plane,
//! installs the chart, runs the operator under the chart's ServiceAccount, backs every relayer
//! pod by a real relayer process in its own network namespace, applies the sample with health
//! gates, and performs a blue-green cutover and a rollback while `kubectl relayer status
//! --watch` shows the progress. Every relayer runs on one real `redis-server` (its password
//! and the admin token in the Secrets the sample references) and settles at a stub, while
//! eight funded users place, cancel and read orders through a kube-proxy stand-in; at the end
//! the state is checked through the active colour (every order as answered, collateral and
//! shares conserved, nothing reserved or unfinished, one body per settlement key).
//!
//! ```text
//! cargo build -p relayer && sudo -E cargo test --test chart_demo -- --ignored --nocapture
//! ```
//!
//! (Root for the network namespaces; about a minute when the build is warm.)

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use relayer_operator::crd::RelayerDeployment;
use serde_json::{Value, json};
use support::cutover::{
    Checked, Funding, NetnsBackend, Proxy, RedisStore, SettlementStub, WriteLoad, fund_traders,
    host_address, random_secret, verify,
};
use support::operator::OperatorProcess;
use support::{TestEnv, http, wait_for};

const SETTLE: Duration = Duration::from_secs(180);
const NAME: &str = "market-relayer";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn say(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}

/// `kubectl relayer <args>` with its output on the terminal; whether it exited 0.
async fn plugin(env: &TestEnv, args: &[&str]) -> bool {
    println!("$ kubectl relayer {}", args.join(" "));
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-relayer"));
    command
        .env("KUBECONFIG", env.control_plane.kubeconfig())
        .args(["-n", &env.namespace])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    tokio::task::spawn_blocking(move || command.status())
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|s| s.success())
}

/// NB: p99 up to a second: placements (a saga with a settlement call each) on a shared
/// two-core machine reach half a second at the p99 now and then.
fn gate() -> Value {
    json!({
        "intervalMs": 500, "samples": 4, "failureLimit": 0, "minRequests": 5,
        "maxErrorRateBasisPoints": 100, "maxP99LatencyMs": 1000,
        "probe": { "requestsPerSecond": 40 },
    })
}

#[tokio::test]
#[ignore = "demo: run with --ignored --nocapture as root"]
async fn demo_a_blue_green_cutover_and_a_rollback_with_real_relayers() {
    assert!(
        repo().join("target/debug/relayer").exists(),
        "build the relayer first: cargo build -p relayer"
    );
    say("a local control plane (etcd, kube-apiserver, kube-controller-manager, pod simulator)");
    let env = TestEnv::new("demo").await;
    let release_ns = support::control_plane::create_namespace(&env.client, "relayer-system")
        .await
        .expect("the operator's namespace");
    let (backend, _guard) = NetnsBackend::register(&env.namespace);
    println!(
        "export KUBECONFIG={}   # to look around while it runs",
        env.control_plane.kubeconfig().display()
    );

    say("helm install relayer-operator charts/relayer-operator");
    let out = env
        .control_plane
        .helm()
        .args(["install", "relayer-operator"])
        .arg(repo().join("charts/relayer-operator"))
        .args(["--namespace", &release_ns, "--wait", "--timeout", "120s"])
        .args(["--set", "operator.podNetworks={10.244.0.0/16}"])
        .args(["--set", "operator.logJson=false"])
        .output()
        .expect("helm install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_account, kubeconfig) = env
        .service_account_identity(&release_ns, "relayer-operator")
        .await
        .expect("the chart's ServiceAccount");
    let operator = OperatorProcess::like_the_chart(
        &env,
        &release_ns,
        "relayer-operator",
        &kubeconfig,
        "relayer-operator-0",
    )
    .await;
    println!(
        "operator running as the chart's ServiceAccount; log: {}",
        operator.log_path().display()
    );

    say("a redis-server with a password, and the Secrets the sample references");
    let host = host_address().expect("the host's address towards the pods");
    let store = RedisStore::start(host, &env.namespace);
    let stub = SettlementStub::start(host).await;
    let admin_token = random_secret();
    env.create_secret("redis", "redis-password", &store.password)
        .await;
    env.create_secret("market-relayer-admin", "token", &admin_token)
        .await;
    println!(
        "redis-server on {} (requirepass), settlement stub {}",
        store.addr, stub.url
    );

    say("kubectl apply -f crds/samples/relayerdeployment.yaml (with health gates for the demo)");
    let sample = std::fs::read_to_string(repo().join("crds/samples/relayerdeployment.yaml"))
        .expect("the sample");
    let mut rd: Value = serde_yaml::from_str(&sample).expect("sample YAML");
    rd["spec"]["replicas"] = json!(2);
    rd["spec"]["autoscaling"]["minReplicas"] = json!(2);
    rd["spec"]["config"]["shutdown"] = json!({ "readinessDelayMs": 500, "drainTimeoutMs": 2000 });
    rd["spec"]["config"]["rateLimit"] = json!({ "enabled": false });
    rd["spec"]["config"]["settlement"] = json!({ "url": stub.url });
    // NB: the sample's store with this demo's address (`redis-master` resolves nowhere here).
    rd["spec"]["store"]["redis"]["url"] = json!(store.url());
    rd["spec"]["strategy"]["blueGreen"] = json!({
        "autoPromote": true, "scaleDownDelaySeconds": 2, "maxScaleDownWaitSeconds": 30,
        "progressDeadlineSeconds": 120, "prePromotion": gate(), "postPromotion": gate(),
    });
    env.api::<RelayerDeployment>()
        .patch(
            NAME,
            &PatchParams::apply("demo").force(),
            &Patch::Apply(&rd),
        )
        .await
        .expect("apply the sample");
    assert!(
        plugin(&env, &["status", NAME, "--watch", "--timeout", "3m"]).await,
        "the sample became Stable"
    );

    say("traffic through a kube-proxy stand-in that follows the active Service");
    let proxy = Proxy::start(env.client.clone(), &env.namespace, NAME).await;
    wait_for("the proxy to reach the relayers", SETTLE, || {
        let addr = proxy.addr;
        async move { Ok(matches!(http::get(addr, "/ready").await, Ok((200, _))).then_some(())) }
    })
    .await;
    let funding = Funding {
        collateral: 10_000_000,
        shares: 1_000_000,
    };
    let traders = fund_traders(proxy.addr, &admin_token, 8, funding)
        .await
        .expect("fund eight users through the proxy");
    let load = WriteLoad::start(proxy.addr, &traders, "demo");

    say("kubectl relayer set-image market-relayer ghcr.io/foresight/relayer:0.2.0");
    let started = Instant::now();
    assert!(
        plugin(
            &env,
            &["set-image", NAME, "ghcr.io/foresight/relayer:0.2.0"]
        )
        .await
    );
    assert!(plugin(&env, &["status", NAME, "--watch", "--timeout", "3m"]).await);
    let cutover = started.elapsed();

    say("kubectl relayer rollback market-relayer");
    let started = Instant::now();
    assert!(plugin(&env, &["rollback", NAME]).await);
    assert!(plugin(&env, &["status", NAME, "--watch", "--timeout", "3m"]).await);
    let rollback = started.elapsed();
    assert!(plugin(&env, &["history", NAME]).await);
    // NB: Stable is written before the old colour's scale-down: the load goes on until it is
    // gone.
    wait_for("the old colour to be gone", SETTLE, || {
        let running = backend.running();
        async move { Ok((running == 2).then_some(())) }
    })
    .await;

    let report = load.stop().await;
    say("the state, through the active colour");
    let verification = verify(
        Checked {
            addr: proxy.addr,
            admin_token: &admin_token,
            traders: &traders,
            funding,
            stub: &stub,
            backend: &backend,
        },
        &report,
    )
    .await;
    say("summary");
    println!(
        "cutover {:.1}s, rollback {:.1}s; {} requests ({} writes), {} failed, {} business refusals; {} relayer processes started",
        cutover.as_secs_f64(),
        rollback.as_secs_f64(),
        report.requests,
        report.writes,
        report.failed(),
        report.business_refusals(),
        backend.started().len()
    );
    println!("{verification}");
    assert_eq!(report.failed(), 0, "{:?}", report.failures);
    assert_eq!(report.injected_faults(), 0, "{:?}", report.injected);
    assert!(
        verification.violations.is_empty(),
        "{:#?}",
        &verification.violations[..verification.violations.len().min(10)]
    );
}
