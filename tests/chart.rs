//! The Helm chart (`charts/relayer-operator`): `helm lint`, the values schema, the chart's CRDs
//! against the generated ones, the dashboard ConfigMaps and the PrometheusRule it renders, every
//! rendering accepted by the real API server (server-side dry run), `helm install` into the test
//! control plane, and the operator binary running under the chart's ServiceAccount (not admin)
//! reconciling the sample to Available.
//!
//! Run with `cargo test --test chart`. The full cutover under the chart's RBAC, and the check
//! that the chart grants nothing unused, are in `tests/chart_rbac.rs`; the queries of the
//! dashboards and alerts against live metrics are in `tests/observability.rs`.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use support::binaries::Binaries;
use support::operator::OperatorProcess;
use support::{TestEnv, wait_available};

const SETTLE: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/relayer-operator")
}

/// helm without a cluster (lint, template), its caches in a scratch folder.
fn offline_helm(scratch: &Path) -> Command {
    let binaries = Binaries::locate().unwrap_or_else(|message| panic!("{message}"));
    let mut command = Command::new(binaries.path("helm"));
    command
        .env("HELM_CACHE_HOME", scratch.join("cache"))
        .env("HELM_CONFIG_HOME", scratch.join("config"))
        .env("HELM_DATA_HOME", scratch.join("data"))
        .env("KUBECONFIG", scratch.join("no-cluster"));
    command
}

fn run(mut command: Command, what: &str) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` with `--set` values; stdout, or the error text.
fn template(scratch: &Path, namespace: &str, sets: &[&str]) -> Result<String, String> {
    let mut helm = offline_helm(scratch);
    helm.args(["template", "rel"])
        .arg(chart())
        .args(["--namespace", namespace]);
    for set in sets {
        helm.args(["--set", set]);
    }
    let out = run(helm, "helm template");
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

#[test]
fn helm_lint_passes_in_strict_mode() {
    let scratch = tempfile::tempdir().expect("scratch folder");
    let mut helm = offline_helm(scratch.path());
    helm.args(["lint", "--strict"]).arg(chart());
    let out = run(helm, "helm lint");
    assert!(
        out.status.success(),
        "helm lint --strict failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let with_everything = [
        "instance.enabled=true",
        "instance.redis.url=redis://redis:6379/0",
        "metrics.serviceMonitor.enabled=true",
        "operator.watchNamespace=apps",
        "dashboards.enabled=true",
        "alerts.enabled=true",
    ];
    let mut helm = offline_helm(scratch.path());
    helm.args(["lint", "--strict"]).arg(chart());
    for set in with_everything {
        helm.args(["--set", set]);
    }
    let out = run(helm, "helm lint with every option on");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn chart_crds_are_identical_to_the_generated_crds() {
    let names = |dir: PathBuf| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let top = names(repo().join("crds"));
    let in_chart = names(chart().join("crds"));
    assert_eq!(
        top, in_chart,
        "charts/relayer-operator/crds must hold exactly the files of crds/"
    );
    assert!(!top.is_empty());
    for name in &top {
        let a = std::fs::read(repo().join("crds").join(name)).expect("top-level CRD");
        let b = std::fs::read(chart().join("crds").join(name)).expect("chart CRD");
        assert!(
            a == b,
            "charts/relayer-operator/crds/{name} differs from crds/{name}; after \
             `cargo run --bin crdgen`, copy it: cp crds/{name} charts/relayer-operator/crds/"
        );
    }
    // And the committed CRD is what the code generates (so the chart's is too).
    let generated = relayer_operator::crd::crd_yaml().expect("CRD renders");
    let committed =
        std::fs::read_to_string(repo().join(relayer_operator::crd::CRD_FILE)).expect("CRD file");
    assert_eq!(
        generated, committed,
        "crds/ is stale: run cargo run --bin crdgen"
    );
}

#[test]
fn values_schema_refuses_bad_values_naming_them() {
    let scratch = tempfile::tempdir().expect("scratch folder");
    let cases: [(&[&str], &str); 19] = [
        (&["replicaCount=0"], "/replicaCount"),
        (&["replicaCount=two"], "/replicaCount"),
        (&["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (&["image.repository=has space"], "/image/repository"),
        (
            &["replicaCount=2", "operator.leaderElection.enabled=false"],
            "/operator/leaderElection/enabled",
        ),
        (&["operatr.logLevel=debug"], "'operatr' not allowed"),
        (
            &["operator.podNetworks={10.0.0.0}"],
            "/operator/podNetworks/0",
        ),
        (
            &["operator.watchNamespace=Not_A_Namespace"],
            "/operator/watchNamespace",
        ),
        (
            &["operator.ingressHostPatterns={Bad_Host.example.com}"],
            "/operator/ingressHostPatterns/0",
        ),
        (
            &["operator.allowedServiceTypes={ExternalName}"],
            "/operator/allowedServiceTypes/0",
        ),
        (
            &["operator.allowedServiceTypes={}"],
            "/operator/allowedServiceTypes",
        ),
        (&["metricsPort=70000"], "/metricsPort"),
        (
            &["metrics.serviceMonitor.interval=soon"],
            "/metrics/serviceMonitor/interval",
        ),
        (
            &["alerts.highErrorRate.threshold=2"],
            "/alerts/highErrorRate/threshold",
        ),
        (
            &["alerts.circuitBreakerOpen.for=soon"],
            "/alerts/circuitBreakerOpen/for",
        ),
        (&["dashboards.labelValue=not ok"], "/dashboards/labelValue"),
        (&["instance.enabled=true"], "/instance/redis/url"),
        (
            &[
                "instance.enabled=true",
                "instance.redis.url=http://redis:6379",
            ],
            "/instance/redis/url",
        ),
        (
            &[
                "instance.enabled=true",
                "instance.redis.url=redis://:hunter2@redis:6379/0",
            ],
            "/instance/redis/url",
        ),
    ];
    for (sets, named) in cases {
        let error = template(scratch.path(), "ops", sets)
            .err()
            .unwrap_or_else(|| panic!("{sets:?} was accepted"));
        assert!(
            error.contains("values don't meet the specifications of the schema"),
            "{sets:?}: not refused by the schema: {error}"
        );
        assert!(
            error.contains(named),
            "{sets:?}: {named:?} not named in: {error}"
        );
    }
    // One operator without leader election is fine; the defaults and a full set are too.
    for sets in [
        &["replicaCount=1", "operator.leaderElection.enabled=false"][..],
        &[][..],
        &[
            "instance.enabled=true",
            "instance.redis.url=rediss://redis:6379/0",
            "operator.podNetworks={10.244.0.0/16,fd00::/64}",
            "image.tag=1.2.3",
        ][..],
    ] {
        template(scratch.path(), "ops", sets).unwrap_or_else(|e| panic!("{sets:?} refused: {e}"));
    }
}

#[test]
fn the_rendered_deployment_is_hardened_and_elects_a_leader() {
    let scratch = tempfile::tempdir().expect("scratch folder");
    let rendered = template(scratch.path(), "ops", &[]).expect("defaults render");
    let deployment: Deployment = documents(&rendered)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .map(|d| serde_json::from_value(d).expect("a Deployment"))
        .expect("the chart renders a Deployment");
    let spec = deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("rel-relayer-operator")
    );
    let pod_security = pod.security_context.expect("pod security context");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(
        pod_security.seccomp_profile.map(|s| s.type_).as_deref(),
        Some("RuntimeDefault")
    );
    let container = &pod.containers[0];
    let security = container
        .security_context
        .clone()
        .expect("container security");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()])
    );
    let probe_path = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        p.and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe_path(container.liveness_probe.as_ref()).as_deref(),
        Some("/health")
    );
    assert_eq!(
        probe_path(container.readiness_probe.as_ref()).as_deref(),
        Some("/ready")
    );
    let args = container.args.clone().unwrap_or_default();
    assert!(
        args.contains(&"--leader-election=true".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--lease-name=rel-relayer-operator".to_owned()),
        "{args:?}"
    );
    assert!(
        container
            .resources
            .as_ref()
            .is_some_and(|r| r.limits.is_some())
    );
}

/// The operator container's arguments as rendered with `sets`.
fn operator_args(scratch: &Path, sets: &[&str]) -> Vec<String> {
    let rendered = template(scratch, "ops", sets).unwrap_or_else(|e| panic!("{sets:?}: {e}"));
    let deployment: Deployment = documents(&rendered)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .map(|d| serde_json::from_value(d).expect("a Deployment"))
        .expect("the chart renders a Deployment");
    let pod = deployment.spec.template.spec.expect("pod spec");
    pod.containers[0].args.clone().unwrap_or_default()
}

#[test]
fn ingress_host_patterns_and_service_types_reach_the_operators_flags() {
    let scratch = tempfile::tempdir().expect("scratch folder");
    let defaults = operator_args(scratch.path(), &[]);
    assert!(
        defaults.contains(&"--allowed-service-types=ClusterIP,NodePort".to_owned()),
        "no LoadBalancer by default: {defaults:?}"
    );
    assert!(
        !defaults
            .iter()
            .any(|a| a.starts_with("--ingress-host-pattern")),
        "no pattern by default (any host): {defaults:?}"
    );
    let set = operator_args(
        scratch.path(),
        &[
            "operator.ingressHostPatterns={*.apps.example.com,relayer.example.com}",
            "operator.allowedServiceTypes={ClusterIP,LoadBalancer}",
        ],
    );
    assert!(
        set.contains(&"--ingress-host-pattern=*.apps.example.com,relayer.example.com".to_owned()),
        "{set:?}"
    );
    assert!(
        set.contains(&"--allowed-service-types=ClusterIP,LoadBalancer".to_owned()),
        "{set:?}"
    );
}

#[test]
fn dashboards_and_alerts_render_for_the_grafana_sidecar_and_the_prometheus_operator() {
    let scratch = tempfile::tempdir().expect("scratch folder");
    let dashboards = |docs: &[serde_json::Value]| -> Vec<serde_json::Value> {
        docs.iter()
            .filter(|d| {
                d["kind"] == "ConfigMap"
                    && d["metadata"]["labels"]["app.kubernetes.io/component"] == "dashboards"
            })
            .cloned()
            .collect()
    };
    let alerts = |docs: &[serde_json::Value]| -> Vec<serde_json::Value> {
        docs.iter()
            .filter(|d| d["kind"] == "PrometheusRule")
            .flat_map(|d| d["spec"]["groups"].as_array().cloned().unwrap_or_default())
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let defaults = documents(&template(scratch.path(), "ops", &[]).expect("defaults render"));
    assert!(dashboards(&defaults).is_empty() && alerts(&defaults).is_empty());

    let on = ["dashboards.enabled=true", "alerts.enabled=true"];
    let docs = documents(&template(scratch.path(), "ops", &on).expect("renders"));
    let maps = dashboards(&docs);
    let names: Vec<&str> = maps
        .iter()
        .filter_map(|m| m["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "rel-relayer-operator-dashboard-relayer",
            "rel-relayer-operator-dashboard-operator"
        ]
    );
    for map in &maps {
        // What the kube-prometheus-stack Grafana sidecar watches by default.
        assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1", "{map}");
        assert_eq!(map["metadata"]["namespace"], "ops");
        let (file, json) = map["data"]
            .as_object()
            .and_then(|d| d.iter().next())
            .expect("one dashboard per ConfigMap");
        let dashboard: serde_json::Value = serde_json::from_str(json.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        assert!(dashboard["uid"].is_string(), "{file}");
    }
    let rules = alerts(&docs);
    let alert_names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        alert_names,
        [
            "RelayerSagaManual",
            "RelayerCircuitBreakerOpen",
            "RelayerHighErrorRate",
            "RelayerCutoverFailed",
            "RelayerOperatorNotReconciling"
        ]
    );
    for rule in &rules {
        assert!(rule["labels"]["severity"].is_string(), "{rule}");
        assert!(rule["annotations"]["summary"].is_string(), "{rule}");
        assert!(rule["annotations"]["description"].is_string(), "{rule}");
    }
    assert_eq!(rules[1]["for"], "5m");

    let tuned = [
        "dashboards.enabled=true",
        "dashboards.label=my_dashboard",
        "dashboards.labelValue=yes",
        "dashboards.annotations.grafana_folder=Foresight",
        "dashboards.namespace=grafana",
        "alerts.enabled=true",
        "alerts.ruleLabels.release=kube-prometheus-stack",
        "alerts.labels.team=trading",
        "alerts.circuitBreakerOpen.for=10m",
        "alerts.operatorNotReconciling.enabled=false",
    ];
    let docs = documents(&template(scratch.path(), "ops", &tuned).expect("renders"));
    for map in dashboards(&docs) {
        let meta = &map["metadata"];
        assert_eq!(meta["labels"]["my_dashboard"], "yes", "{meta}");
        assert_eq!(meta["annotations"]["grafana_folder"], "Foresight", "{meta}");
        assert_eq!(meta["namespace"], "grafana", "{meta}");
    }
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("the PrometheusRule");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let rules = alerts(&docs);
    assert_eq!(rules.len(), 4, "one alert switched off");
    assert!(rules.iter().all(|r| r["labels"]["team"] == "trading"));
    assert_eq!(rules[1]["for"], "10m");
}

/// Every YAML document of a rendering, as JSON values.
fn documents(rendered: &str) -> Vec<serde_json::Value> {
    rendered
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<serde_json::Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// A stand-in for a Prometheus Operator CRD (not available offline): the group, version, kind
/// (`kind`, `plural`) and scope are real; the schema accepts any spec.
fn monitoring_crd(kind: &str, plural: &str) -> String {
    let singular = kind.to_ascii_lowercase();
    format!(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{ name: {plural}.monitoring.coreos.com }}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {{ kind: {kind}, listKind: {kind}List, plural: {plural}, singular: {singular} }}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {{ type: object, x-kubernetes-preserve-unknown-fields: true }}
"#
    )
}

fn kubectl_with_stdin(env: &TestEnv, args: &[&str], stdin: &str) -> Result<String, String> {
    let mut child = env
        .control_plane
        .kubectl()
        .args(["--namespace", &env.namespace])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("kubectl: {e}"))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .map_err(|e| format!("writing to kubectl: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("kubectl: {e}"))?;
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

#[tokio::test]
async fn every_rendering_is_accepted_by_the_api_server_in_a_server_side_dry_run() {
    let env = TestEnv::new("chart-dry-run").await;
    env.install_crds(&chart().join("crds")).await;
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ] {
        let crd = monitoring_crd(kind, plural);
        kubectl_with_stdin(&env, &["apply", "--server-side", "-f", "-"], &crd)
            .expect("a Prometheus Operator stand-in CRD");
    }
    env.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    ])
    .expect("ServiceMonitor and PrometheusRule CRDs established");

    let scratch = tempfile::tempdir().expect("scratch folder");
    let ns = env.namespace.clone();
    let everything = [
        "instance.enabled=true",
        "instance.redis.url=redis://redis:6379/0",
        "instance.redis.passwordSecretRef.name=redis",
        "instance.redis.passwordSecretRef.key=redis-password",
        "instance.secrets.adminToken.name=relayer-admin",
        "instance.secrets.adminToken.key=token",
        "instance.autoscaling.minReplicas=3",
        "instance.autoscaling.maxReplicas=6",
        "instance.ingress.host=relayer.example.com",
        "metrics.serviceMonitor.enabled=true",
        "dashboards.enabled=true",
        "alerts.enabled=true",
    ];
    let watch_one = format!("operator.watchNamespace={ns}");
    let variants: [&[&str]; 4] = [
        &[],
        &everything,
        &[watch_one.as_str(), "replicaCount=1"],
        &[
            "rbac.create=false",
            "serviceAccount.create=false",
            "serviceAccount.name=ops",
        ],
    ];
    for sets in variants {
        let rendered = template(scratch.path(), &ns, sets).expect("renders");
        let applied = kubectl_with_stdin(
            &env,
            &["apply", "--dry-run=server", "--server-side", "-f", "-"],
            &rendered,
        )
        .unwrap_or_else(|e| panic!("{sets:?}: the API server refused the rendering: {e}"));
        let kinds = documents(&rendered).len();
        assert_eq!(
            applied
                .lines()
                .filter(|l| l.contains("(server dry run)"))
                .count(),
            kinds,
            "{sets:?}: every object validated:\n{applied}"
        );
        if sets.contains(&"instance.enabled=true") {
            // The instance's state is in the shared Redis, its secrets only by reference.
            let instance = documents(&rendered)
                .into_iter()
                .find(|d| d["kind"] == "RelayerDeployment")
                .expect("the instance");
            let spec = &instance["spec"];
            assert_eq!(
                spec["store"]["redis"]["url"], "redis://redis:6379/0",
                "{spec}"
            );
            assert_eq!(
                spec["store"]["redis"]["passwordSecretRef"],
                serde_json::json!({ "name": "redis", "key": "redis-password" })
            );
            assert_eq!(
                spec["secrets"]["adminToken"],
                serde_json::json!({ "name": "relayer-admin", "key": "token" })
            );
            assert!(spec["config"].get("redisUrl").is_none(), "{spec}");
            assert!(
                applied
                    .contains("relayerdeployment.relayer.foresight.dev/relayer serverside-applied"),
                "{applied}"
            );
            assert!(
                applied.contains("servicemonitor.monitoring.coreos.com"),
                "{applied}"
            );
            assert!(
                applied.contains("prometheusrule.monitoring.coreos.com"),
                "{applied}"
            );
        }
    }
    // The CRD's own validation applies to the chart's instance too.
    let bad = template(
        scratch.path(),
        &ns,
        &[
            "instance.enabled=true",
            "instance.redis.url=redis://redis:6379/0",
            "instance.autoscaling.minReplicas=9",
            "instance.autoscaling.maxReplicas=3",
        ],
    )
    .expect("renders");
    let refused = kubectl_with_stdin(&env, &["apply", "--dry-run=server", "-f", "-"], &bad)
        .expect_err("minReplicas > maxReplicas is refused by the CRD's CEL rule");
    assert!(refused.contains("minReplicas"), "{refused}");
}

fn helm_install(env: &TestEnv, release: &str, sets: &[String]) -> String {
    let mut helm = env.control_plane.helm();
    helm.args(["install", release]).arg(chart()).args([
        "--namespace",
        &env.namespace,
        "--wait",
        "--timeout",
        "120s",
    ]);
    for set in sets {
        helm.args(["--set", set]);
    }
    let out = run(helm, "helm install");
    assert!(
        out.status.success(),
        "helm install failed:\n{}{}{}",
        text(&out.stdout),
        text(&out.stderr),
        env.control_plane.diagnose()
    );
    text(&out.stdout)
}

#[tokio::test]
async fn helm_install_deploys_two_operator_replicas_with_their_account_and_metrics_service() {
    let env = TestEnv::new("chart-install").await;
    let notes = helm_install(&env, "ops", &[]);
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(
        notes.contains("leader Lease ops-relayer-operator"),
        "{notes}"
    );
    let deployment = env
        .api::<Deployment>()
        .get("ops-relayer-operator")
        .await
        .expect("operator Deployment");
    let status = deployment.status.expect("status");
    assert_eq!(status.ready_replicas, Some(2), "both replicas ready");
    env.api::<ServiceAccount>()
        .get("ops-relayer-operator")
        .await
        .expect("ServiceAccount");
    let service = env
        .api::<Service>()
        .get("ops-relayer-operator-metrics")
        .await
        .expect("metrics Service");
    let port = service.spec.and_then(|s| s.ports).unwrap_or_default();
    assert_eq!(port.first().map(|p| p.port), Some(8080));
    let crb = env
        .kubectl(&[
            "get",
            "clusterrolebinding",
            "ops-relayer-operator",
            "-o",
            "jsonpath={.subjects[0].name}/{.subjects[0].namespace}",
        ])
        .expect("ClusterRoleBinding");
    assert_eq!(crb, format!("ops-relayer-operator/{}", env.namespace));
    // The chart's CRDs are there (installed before the templates).
    env.kubectl(&["get", "crd", "relayerdeployments.relayer.foresight.dev"])
        .expect("CRD installed by the chart");

    let mut helm = env.control_plane.helm();
    helm.args(["uninstall", "ops", "--namespace", &env.namespace, "--wait"]);
    let out = run(helm, "helm uninstall");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let gone = env.kubectl(&["get", "clusterrole", "ops-relayer-operator"]);
    assert!(gone.is_err(), "the ClusterRole goes with the release");
}

#[tokio::test]
async fn the_operator_under_the_charts_service_account_reconciles_the_sample_to_available() {
    let env = TestEnv::new("chart-sample").await;
    // NB: the simulated pods' addresses must never be contacted; allow the netns range only.
    helm_install(
        &env,
        "ops",
        &[
            format!("operator.watchNamespace={}", env.namespace),
            "operator.podNetworks={10.244.0.0/16}".to_owned(),
            "operator.logJson=false".to_owned(),
        ],
    );
    let (_client, kubeconfig) = env
        .service_account_identity(&env.namespace, "ops-relayer-operator")
        .await
        .expect("act as the chart's ServiceAccount");
    let operator = OperatorProcess::like_the_chart(
        &env,
        &env.namespace,
        "ops-relayer-operator",
        &kubeconfig,
        "ops-0",
    )
    .await;

    let sample = repo().join("crds/samples/relayerdeployment.yaml");
    env.kubectl(&["apply", "-f", &sample.display().to_string()])
        .expect("kubectl apply the sample");
    wait_available(&env, "market-relayer", SETTLE).await;
    env.kubectl(&[
        "wait",
        "--for=condition=Available",
        "--timeout=10s",
        "rd/market-relayer",
    ])
    .expect("kubectl wait agrees");

    let lease = env
        .api::<Lease>()
        .get("ops-relayer-operator")
        .await
        .expect("the leader Lease in the release namespace");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("ops-0")
    );
    let metrics = operator.scrape().await.expect("the operator's metrics");
    assert_eq!(metrics.value("relayer_operator_leader"), 1.0, "{metrics:?}");
    let log = operator.log();
    assert!(
        // NB: a refusal reads `forbidden` and carries `code: 403`; a bare "403" also matches
        // the random ports and timestamps of the log.
        !log.to_ascii_lowercase().contains("forbidden") && !log.contains("code: 403"),
        "the operator was refused something:\n{log}"
    );
}
