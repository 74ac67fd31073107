//! Careless and hostile input at the RelayerDeployment API, against a real API server: the CRD
//! and the README's sample apply without a single warning (every format in the schema is one
//! the API server knows, so its bounds are enforced), a probe path that would smuggle headers
//! into the operator's probe requests is refused, and so are integers outside their Rust type.
//!
//! Run with `cargo test --test operator_crd_input` (the harness builds or reuses the control
//! plane binaries; see tests/support).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use kube::api::ListParams;
use relayer_operator::crd::RelayerDeployment;
use serde_json::{Value, json};
use support::TestEnv;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the built kubectl in the test's namespace; returns its whole output, success or not.
fn kubectl(env: &TestEnv, args: &[&str]) -> Output {
    env.control_plane
        .kubectl()
        .arg("--namespace")
        .arg(&env.namespace)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running kubectl {} (tests/k8s/build.sh): {e}",
                args.join(" ")
            )
        })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kubectl apply -f` of `rd` written to `dir`: the error text when the API server refuses it,
/// a panic when it stores it.
fn refused(env: &TestEnv, dir: &Path, case: &str, rd: &Value) -> String {
    let path = dir.join(format!("{case}.json"));
    std::fs::write(&path, rd.to_string()).expect("write the fixture");
    let out = kubectl(env, &["apply", "-f", &path.display().to_string()]);
    assert!(
        !out.status.success(),
        "{case}: the API server stored it: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// `kubectl apply -f` of `rd`, which must be stored.
fn accepted(env: &TestEnv, dir: &Path, case: &str, rd: &Value) {
    let path = dir.join(format!("{case}.json"));
    std::fs::write(&path, rd.to_string()).expect("write the fixture");
    let out = kubectl(env, &["apply", "-f", &path.display().to_string()]);
    assert!(
        out.status.success(),
        "{case}: refused: {}",
        text(&out.stderr)
    );
}

/// A valid RelayerDeployment `name` with `spec` merged over a minimal one (shared Redis).
fn rd(name: &str, spec: Value) -> Value {
    let mut full = json!({
        "image": "relayer:1",
        "store": { "redis": { "url": "redis://redis.invalid:6379/0" } },
    });
    if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        full.extend(extra.clone());
    }
    json!({
        "apiVersion": "relayer.foresight.dev/v1alpha1",
        "kind": "RelayerDeployment",
        "metadata": { "name": name },
        "spec": full,
    })
}

/// A RelayerDeployment whose pre-promotion gate probes `path`.
fn probing(name: &str, path: &str) -> Value {
    rd(
        name,
        json!({ "strategy": { "blueGreen": { "prePromotion": {
            "probe": { "path": path, "requestsPerSecond": 5 },
        } } } }),
    )
}

/// A RelayerDeployment with `config.settlement.retry.maxRetries` (a `u32` in the relayer).
fn max_retries(name: &str, value: Value) -> Value {
    rd(
        name,
        json!({ "config": { "settlement": { "retry": { "maxRetries": value } } } }),
    )
}

#[tokio::test]
async fn the_crd_and_the_readme_sample_apply_without_a_warning() {
    let env = TestEnv::new("crd-warnings").await;

    // NB: the API server warns about a format only when a CRD is created, or when an update
    // brings a new one; the control plane may hold the CRD already (another test of this
    // binary, or KUBECONFIG_TEST). A server-side dry run creating the same CRD under another
    // group sees every format, whatever the cluster holds, and stores nothing.
    let crd_file = repo().join(relayer_operator::crd::CRD_FILE);
    let mut crd: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&crd_file).expect("the generated CRD"))
            .expect("the CRD is YAML");
    crd["spec"]["group"] = "crd-input.foresight.test".into();
    crd["metadata"]["name"] = "relayerdeployments.crd-input.foresight.test".into();
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("crd.yaml");
    std::fs::write(&copy, serde_yaml::to_string(&crd).expect("YAML")).expect("write the copy");
    let created = kubectl(
        &env,
        &[
            "create",
            "--dry-run=server",
            "-f",
            &copy.display().to_string(),
        ],
    );
    assert!(
        created.status.success(),
        "the API server refused the CRD: {}",
        text(&created.stderr)
    );
    assert_eq!(
        text(&created.stderr),
        "",
        "creating the CRD printed warnings (a format the API server does not know is not \
         validated)"
    );

    // The README's steps: the CRDs, then the sample.
    env.install_crds(&repo().join("crds")).await;
    let sample = repo().join("crds/samples/relayerdeployment.yaml");
    let applied = kubectl(&env, &["apply", "-f", &sample.display().to_string()]);
    assert!(
        applied.status.success(),
        "the sample was refused: {}",
        text(&applied.stderr)
    );
    assert_eq!(
        text(&applied.stderr),
        "",
        "kubectl apply of the sample printed warnings"
    );
}

#[tokio::test]
async fn a_probe_path_with_cr_lf_or_other_unsendable_characters_is_refused() {
    let env = TestEnv::new("crd-probe-path").await;
    env.install_crds(&repo().join("crds")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("header-injection", "/x\r\nHost: evil"),
        ("line-feed", "/x\nX-Injected: 1"),
        ("space", "/x HTTP/1.1"),
        ("tab", "/x\ty"),
        ("nul", "/x\u{0}y"),
        ("delete", "/x\u{7f}"),
        ("non-ascii", "/d\u{e9}p\u{f4}t"),
        ("no-leading-slash", "v2/depth"),
    ];
    for (i, (case, path)) in cases.into_iter().enumerate() {
        let error = refused(&env, dir.path(), case, &probing(&format!("p{i}"), path));
        assert!(
            error.contains("spec.strategy.blueGreen.prePromotion.probe.path"),
            "{case}: the refusal should name spec.strategy.blueGreen.prePromotion.probe.path: \
             {error}"
        );
    }
    let stored = env
        .api::<RelayerDeployment>()
        .list(&ListParams::default())
        .await
        .expect("list RelayerDeployments");
    assert!(stored.items.is_empty(), "nothing invalid was stored");

    // A request target with a query, as the default one.
    accepted(
        &env,
        dir.path(),
        "query",
        &probing("ok", "/v2/depth?marketKey=80002:1&depth=5%20"),
    );
}

#[tokio::test]
async fn an_unsigned_field_refuses_negative_and_too_large_values() {
    let env = TestEnv::new("crd-unsigned").await;
    env.install_crds(&repo().join("crds")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    const FIELD: &str = "spec.config.settlement.retry.maxRetries";
    for (case, value) in [
        ("negative", json!(-1)),
        ("above-u32", json!(4_294_967_296_u64)),
        ("above-i64", json!(u64::MAX)),
    ] {
        let error = refused(&env, dir.path(), case, &max_retries(case, value));
        assert!(
            error.contains(FIELD),
            "{case}: the refusal should name {FIELD}: {error}"
        );
    }

    // The bounds of the Rust type themselves are stored, and the operator reads them back.
    for (name, value) in [("zero", 0_u32), ("most", u32::MAX)] {
        accepted(&env, dir.path(), name, &max_retries(name, json!(value)));
        let stored = env
            .api::<RelayerDeployment>()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: the typed client cannot read it: {e}"));
        assert_eq!(
            stored.spec.config.settlement.retry.max_retries,
            Some(value),
            "{name}"
        );
    }
}

/// A RelayerDeployment with `blue_green` as its blue-green strategy and `extra` merged into
/// its spec.
fn with_strategy(name: &str, blue_green: Value, extra: Value) -> Value {
    let mut spec = json!({ "strategy": { "blueGreen": blue_green } });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    rd(name, spec)
}

#[tokio::test]
async fn webhook_and_notification_urls_statistical_metrics_and_anti_affinity_are_checked() {
    let env = TestEnv::new("crd-gates").await;
    env.install_crds(&repo().join("crds")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let hook = |url: &str| json!({ "prePromotion": { "webhooks": [{ "name": "w", "url": url }] } });
    let notify = |url: &str| json!({ "notifications": [{ "name": "n", "url": url }] });
    let bad_urls = [
        ("https", "https://approver.ns.svc/confirm"),
        ("userinfo", "http://user:secret@approver/confirm"),
        ("crlf", "http://approver/x\r\nHost: evil"),
        ("space", "http://approver/x y"),
        ("no-host", "http:///confirm"),
    ];
    for (i, (case, url)) in bad_urls.into_iter().enumerate() {
        let error = refused(
            &env,
            dir.path(),
            &format!("hook-{case}"),
            &with_strategy(&format!("h{i}"), hook(url), json!({})),
        );
        assert!(
            error.contains("webhook url must be http://"),
            "{case}: {error}"
        );
        let error = refused(
            &env,
            dir.path(),
            &format!("notify-{case}"),
            &with_strategy(&format!("n{i}"), json!({}), notify(url)),
        );
        assert!(
            error.contains("webhook url must be http://"),
            "{case}: {error}"
        );
    }
    let refusals = [
        (
            "duplicate-webhooks",
            json!({ "prePromotion": { "webhooks": [
                { "name": "w", "url": "http://a/x" }, { "name": "w", "url": "http://b/x" },
            ] } }),
            "gate webhooks must not repeat a name",
        ),
        (
            "duplicate-metrics",
            json!({ "prePromotion": { "probe": {}, "statistical": { "metrics": [
                { "name": "MeanLatency" }, { "name": "MeanLatency" },
            ] } } }),
            "statistical metrics must not repeat a name",
        ),
        (
            "low-confidence",
            json!({ "prePromotion": { "probe": {}, "statistical": { "confidenceBasisPoints": 100 } } }),
            "confidenceBasisPoints",
        ),
        (
            "statistical-without-probe",
            json!({ "postPromotion": { "statistical": {} } }),
            "a gate with a statistical judge needs a probe",
        ),
        (
            "both-anti-affinities",
            json!({ "antiAffinity": { "preferred": { "weight": 10 }, "required": {} } }),
            "exactly one of preferred and required",
        ),
        (
            "no-anti-affinity",
            json!({ "antiAffinity": {} }),
            "exactly one of preferred and required",
        ),
    ];
    for (i, (case, blue_green, message)) in refusals.into_iter().enumerate() {
        let error = refused(
            &env,
            dir.path(),
            case,
            &with_strategy(&format!("r{i}"), blue_green, json!({})),
        );
        assert!(error.contains(message), "{case}: {error}");
    }
    let stored = env
        .api::<RelayerDeployment>()
        .list(&ListParams::default())
        .await
        .expect("list RelayerDeployments");
    assert!(stored.items.is_empty(), "nothing invalid was stored");

    accepted(
        &env,
        dir.path(),
        "valid",
        &with_strategy(
            "ok",
            json!({
                "autoPromotionSeconds": 30,
                "abortScaleDownDelaySeconds": 60,
                "antiAffinity": { "preferred": { "weight": 50 } },
                "prePromotion": {
                    "webhooks": [
                        { "name": "dns", "url": "http://approver.ns.svc:8080/confirm?x=1" },
                        { "name": "v6", "url": "http://[fd00::1]/confirm", "retries": 0 },
                    ],
                    "probe": { "requestsPerSecond": 10 },
                    "statistical": { "minSamples": 12, "metrics": [
                        { "name": "MeanLatency" }, { "name": "ErrorRate", "noData": "Wait" },
                    ] },
                },
            }),
            json!({ "notifications": [
                { "name": "ops", "url": "http://10.0.0.9/hook" },
                { "name": "chat", "url": "http://chat.ns.svc/hooks/x", "format": "Slack",
                  "events": ["Promoted", "RolledBack"] },
            ] }),
        ),
    );
}
