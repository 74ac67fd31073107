//! The `kubectl relayer` plugin binary against the test control plane, with the operator's
//! controller running in this process: every command through a cutover (set-image, promote,
//! abort, retry, pause, resume, rollback, history, status with --watch and -o json|yaml), the
//! error cases (no such object, no cutover in progress, unknown revision, forbidden), explain
//! of a gate status written through the status subresource, and kubectl finding the plugin on
//! PATH.
//!
//! Run with `cargo test --test plugin`. Pods are simulated (no processes), so no gates run and
//! the operator may contact only a network no simulated pod is in.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{Patch, PatchParams};
use relayer_operator::crd::{RelayerDeployment, RolloutStep};
use serde_json::{Value, json};
use support::fixtures::{blue_green, gate, rd};
use support::operator::start_operator;
use support::{TestEnv, wait_for};

const SETTLE: Duration = Duration::from_secs(90);
const NAME: &str = "market";

/// What one run of the plugin printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the plugin binary with `kubeconfig` in the test namespace. NB: a blocking run inside
/// an async test is fine here: the operator's tasks run on the test runtime's other threads.
async fn plugin_as(env: &TestEnv, kubeconfig: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-relayer"));
    command
        .env("KUBECONFIG", kubeconfig)
        .args(["-n", &env.namespace])
        .args(args)
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run kubectl-relayer");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn plugin(env: &TestEnv, args: &[&str]) -> Run {
    plugin_as(env, env.control_plane.kubeconfig(), args).await
}

fn ok(run: &Run, what: &str) {
    assert_eq!(run.code, 0, "{what}: {run:?}");
}

async fn step(env: &TestEnv) -> Option<RolloutStep> {
    let rd = env.api::<RelayerDeployment>().get(NAME).await.ok()?;
    let status = rd.status?;
    (status.observed_generation == rd.metadata.generation).then_some(())?;
    status.rollout.map(|r| r.step)
}

async fn wait_step(env: &TestEnv, want: RolloutStep) {
    support::wait_step(env, NAME, want, None, SETTLE).await;
}

async fn apply(env: &TestEnv) {
    rd(NAME)
        .image("ghcr.io/foresight/relayer:1")
        .replicas(2)
        .blue_green(
            blue_green()
                .auto_promote(false)
                .scale_down_delay_seconds(0)
                .max_scale_down_wait_seconds(1)
                .progress_deadline_seconds(60),
        )
        .apply(env, "plugin-test")
        .await;
}

fn json_of(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

#[tokio::test]
async fn a_missing_object_exits_3_naming_it() {
    let env = TestEnv::new("plugin-missing").await;
    env.install_crds(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"))
        .await;
    for args in [
        &["status", "nope"][..],
        &["promote", "nope"],
        &["set-image", "nope", "relayer:2"],
        &["history", "nope", "-o", "json"],
    ] {
        let run = plugin(&env, args).await;
        assert_eq!(run.code, 3, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains(&format!(
                "relayerdeployment \"nope\" not found in namespace \"{}\"",
                env.namespace
            )),
            "{args:?}: {run:?}"
        );
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
    }
}

#[tokio::test]
async fn every_command_drives_a_cutover_and_refuses_what_does_not_apply() {
    let env = TestEnv::new("plugin-cutover").await;
    env.install_crds(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"))
        .await;
    let _operator = start_operator(&env);
    apply(&env).await;

    // status --watch follows until Stable and exits 0.
    let run = plugin(&env, &["status", NAME, "--watch", "--timeout", "90s"]).await;
    ok(&run, "status --watch to the first Stable");
    assert!(run.stdout.contains("Cutover:    Stable"), "{run:?}");
    assert!(run.stderr.contains("market: Stable"), "{run:?}");

    // Nothing in flight: promote, abort and retry say so, with exit code 4.
    for (command, says) in [
        ("promote", "no cutover in progress"),
        ("abort", "no cutover in progress"),
        ("retry", "no aborted cutover"),
    ] {
        let run = plugin(&env, &[command, NAME]).await;
        assert_eq!(run.code, 4, "{command}: {run:?}");
        assert!(run.stderr.contains(says), "{command}: {run:?}");
    }

    // set-image starts a cutover that waits for promotion (autoPromote: false).
    let run = plugin(&env, &["set-image", NAME, "ghcr.io/foresight/relayer:2"]).await;
    ok(&run, "set-image");
    assert!(
        run.stdout
            .contains("image set to ghcr.io/foresight/relayer:2"),
        "{run:?}"
    );
    wait_step(&env, RolloutStep::AwaitingPromotion).await;
    let run = plugin(&env, &["status", NAME]).await;
    ok(&run, "status");
    for expected in [
        "Cutover:    AwaitingPromotion",
        "Image:      ghcr.io/foresight/relayer:2",
        "Active:     blue",
        "Other:      green",
        "kubectl relayer promote market",
    ] {
        assert!(run.stdout.contains(expected), "{expected:?}: {run:?}");
    }
    let document = json_of(&plugin(&env, &["status", NAME, "-o", "json"]).await);
    assert_eq!(document["status"]["rollout"]["step"], "AwaitingPromotion");
    let run = plugin(&env, &["status", NAME, "-o", "yaml"]).await;
    ok(&run, "status -o yaml");
    let document: Value = serde_yaml::from_str(&run.stdout).expect("YAML");
    assert_eq!(document["spec"]["image"], "ghcr.io/foresight/relayer:2");

    // abort: traffic stays on blue; status --watch reports the abort with exit 1.
    ok(&plugin(&env, &["abort", NAME]).await, "abort");
    let run = plugin(&env, &["status", NAME, "--watch", "--timeout", "90s"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("cutover aborted: aborted by command"),
        "{run:?}"
    );
    let run = plugin(&env, &["promote", NAME]).await;
    assert_eq!(run.code, 4, "nothing to promote after an abort: {run:?}");

    // retry, then promote: green takes over.
    ok(&plugin(&env, &["retry", NAME]).await, "retry");
    wait_step(&env, RolloutStep::AwaitingPromotion).await;
    let run = plugin(&env, &["promote", NAME, "-o", "json"]).await;
    ok(&run, "promote");
    assert_eq!(
        json_of(&run)["metadata"]["annotations"]["relayer.foresight.dev/command"],
        "promote",
        "-o json prints the object as patched"
    );
    ok(
        &plugin(&env, &["status", NAME, "--watch", "--timeout", "90s"]).await,
        "status --watch to Stable on green",
    );
    let rd = env.api::<RelayerDeployment>().get(NAME).await.expect("rd");
    assert_eq!(
        rd.status
            .as_ref()
            .and_then(|s| s.active_color)
            .map(|c| c.as_str()),
        Some("green")
    );

    // history: two revisions, newest first, the active one marked.
    let run = plugin(&env, &["history", NAME]).await;
    ok(&run, "history");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:?}");
    assert!(
        lines[1].starts_with("2 ") && lines[1].contains("active (green)"),
        "{run:?}"
    );
    assert!(
        lines[2].starts_with("1 ") && lines[2].ends_with("ghcr.io/foresight/relayer:1"),
        "{run:?}"
    );
    let history = json_of(&plugin(&env, &["history", NAME, "-o", "json"]).await);
    let numbers: Vec<i64> = history["revisions"]
        .as_array()
        .expect("revisions")
        .iter()
        .filter_map(|r| r["number"].as_i64())
        .collect();
    assert_eq!(numbers, vec![2, 1]);

    // pause holds a new change; resume lets it go.
    ok(&plugin(&env, &["pause", NAME]).await, "pause");
    ok(
        &plugin(&env, &["set-image", NAME, "ghcr.io/foresight/relayer:3"]).await,
        "set-image while paused",
    );
    wait_for("the paused status", SETTLE, || async {
        let rd = env.api::<RelayerDeployment>().get(NAME).await?;
        let paused = rd.status.as_ref().is_some_and(|s| {
            s.observed_generation == rd.metadata.generation
                && s.rollout.as_ref().is_some_and(|r| r.paused)
        });
        Ok(paused.then_some(rd))
    })
    .await;
    assert_eq!(
        step(&env).await,
        Some(RolloutStep::Stable),
        "held while paused"
    );
    let run = plugin(&env, &["status", NAME]).await;
    assert!(run.stdout.contains("Stable, PAUSED"), "{run:?}");
    ok(&plugin(&env, &["resume", NAME]).await, "resume");
    wait_step(&env, RolloutStep::AwaitingPromotion).await;
    ok(&plugin(&env, &["promote", NAME]).await, "promote 3");
    ok(
        &plugin(&env, &["status", NAME, "--watch", "--timeout", "90s"]).await,
        "Stable on 3",
    );

    // rollback: an unknown revision is refused; revision 1 comes back, image and all.
    let run = plugin(&env, &["rollback", NAME, "--to-revision", "99"]).await;
    assert_eq!(run.code, 6, "{run:?}");
    assert!(
        run.stderr
            .contains("has no revision 99; kept revisions: 3, 2, 1"),
        "{run:?}"
    );
    let run = plugin(&env, &["rollback", NAME, "--to-revision", "1"]).await;
    ok(&run, "rollback --to-revision 1");
    wait_for("the spec to carry revision 1's image", SETTLE, || async {
        let rd = env.api::<RelayerDeployment>().get(NAME).await?;
        Ok((rd.spec.image == "ghcr.io/foresight/relayer:1").then_some(()))
    })
    .await;
    wait_step(&env, RolloutStep::AwaitingPromotion).await;
    ok(
        &plugin(&env, &["promote", NAME]).await,
        "promote the rollback",
    );
    ok(
        &plugin(&env, &["status", NAME, "--watch", "--timeout", "90s"]).await,
        "Stable on revision 1",
    );
    let run = plugin(&env, &["rollback", NAME]).await;
    ok(&run, "rollback to the previous revision");
    wait_for("the spec to carry the previous image", SETTLE, || async {
        let rd = env.api::<RelayerDeployment>().get(NAME).await?;
        Ok((rd.spec.image == "ghcr.io/foresight/relayer:3").then_some(()))
    })
    .await;
}

#[tokio::test]
async fn a_caller_without_write_access_gets_exit_5_and_the_servers_reason() {
    let env = TestEnv::new("plugin-forbidden").await;
    env.install_crds(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"))
        .await;
    apply(&env).await;
    let read_only = PolicyRule {
        api_groups: Some(vec!["relayer.foresight.dev".to_owned()]),
        resources: Some(vec!["relayerdeployments".to_owned()]),
        verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
        ..PolicyRule::default()
    };
    let (_client, kubeconfig) = env
        .restricted_identity("viewer", vec![read_only])
        .await
        .expect("a read-only identity");
    let run = plugin_as(&env, &kubeconfig, &["status", NAME, "-o", "json"]).await;
    ok(&run, "reading is allowed");
    for args in [&["set-image", NAME, "relayer:2"][..], &["pause", NAME]] {
        let run = plugin_as(&env, &kubeconfig, args).await;
        assert_eq!(run.code, 5, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("forbidden")
                && run
                    .stderr
                    .contains("cannot patch resource \"relayerdeployments\""),
            "{args:?}: {run:?}"
        );
    }
    // No read access at all: forbidden too, not "not found".
    let (_client, nobody) = env
        .restricted_identity("nobody", vec![])
        .await
        .expect("an identity without rules");
    let run = plugin_as(&env, &nobody, &["status", NAME]).await;
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("cannot get resource"), "{run:?}");
}

#[tokio::test]
async fn explain_says_why_a_gate_failed_from_the_status_and_exits_3_for_a_missing_object() {
    let env = TestEnv::new("plugin-explain").await;
    env.install_crds(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"))
        .await;
    // NB: no operator here, so the status written below stays as written.
    rd(NAME)
        .blue_green(
            blue_green().auto_promote(false).pre_promotion(
                gate()
                    .samples(12)
                    .max_p99_latency_ms(1000)
                    .probe(20)
                    .statistical(
                        json!({ "metrics": [{ "name": "MeanLatency" }, { "name": "ErrorRate" }] }),
                    ),
            ),
        )
        .apply(&env, "plugin-test")
        .await;
    let reason = "statistical judge: meanLatency worse than the other colour";
    let status = json!({ "status": {
        "activeColor": "blue",
        "revisionHistory": [
            { "revision": "bbbbbbbbbbbbbbbb", "number": 2, "image": "relayer:2" },
            { "revision": "aaaaaaaaaaaaaaaa", "number": 1, "image": "relayer:1" },
        ],
        "rollout": {
            "step": "Aborted", "activeRevision": "aaaaaaaaaaaaaaaa",
            "targetRevision": "bbbbbbbbbbbbbbbb",
            "abortReason": format!("prePromotion failed: {reason}"),
            "failedGate": "prePromotion",
            "gates": [{
                "name": "prePromotion", "revision": "bbbbbbbbbbbbbbbb", "verdict": "Failed",
                "samples": 12, "passed": 12, "failed": 0, "inconclusive": 0, "scrapeErrors": 0,
                "reason": reason,
                "statistics": [
                    { "metric": "meanLatency", "verdict": "Failed",
                      "underTestSamples": 12, "baselineSamples": 12,
                      "underTestMedian": 131.7, "baselineMedian": 101.7,
                      "pValue": 0.0000213, "shift": 30.0, "shiftPercent": 29.5 },
                    { "metric": "errorRate", "verdict": "Passed",
                      "underTestSamples": 12, "baselineSamples": 12,
                      "underTestMedian": 0.0, "baselineMedian": 0.0, "pValue": 1.0, "shift": 0.0 },
                ],
            }],
        },
    } });
    env.api::<RelayerDeployment>()
        .patch_status(NAME, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write the status");

    let run = plugin(&env, &["explain", NAME]).await;
    ok(&run, "explain");
    for expected in [
        "Gate prePromotion: Failed, revision bbbbbbbbbb (#2)",
        reason,
        "meanLatency: FAILED — under test median 131.7 ms vs 101.7 ms",
        "p=0.000021 < 0.02 and shift outside ±25 %",
        "errorRate: passed — p=1.0000 ≥ 0.02",
    ] {
        assert!(run.stdout.contains(expected), "{expected:?}: {run:?}");
    }
    let document = json_of(&plugin(&env, &["explain", NAME, "-o", "json"]).await);
    let metric = &document["gates"][0]["statistics"][0];
    assert_eq!(metric["metric"], "meanLatency", "{document}");
    assert_eq!(metric["verdict"], "Failed", "{document}");

    let run = plugin(&env, &["explain", "missing"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "relayerdeployment \"missing\" not found in namespace \"{}\"",
            env.namespace
        )),
        "{run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[tokio::test]
async fn kubectl_runs_the_plugin_found_on_path() {
    let env = TestEnv::new("plugin-path").await;
    env.install_crds(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"))
        .await;
    apply(&env).await;
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-relayer"))
        .parent()
        .expect("bin folder")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut kubectl = Command::new(env.control_plane.binary("kubectl"));
    kubectl
        .env("PATH", path)
        .env("KUBECONFIG", env.control_plane.kubeconfig())
        .args([
            "relayer",
            "-n",
            &env.namespace,
            "status",
            NAME,
            "-o",
            "json",
        ]);
    let out = tokio::task::spawn_blocking(move || kubectl.output())
        .await
        .expect("join")
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let document: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(document["metadata"]["name"], NAME);
}
