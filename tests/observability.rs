//! The chart's Grafana dashboards, its PrometheusRule and the prometheus-adapter rule against
//! the metrics that really exist: every query parses (with `promql-parser`), and every metric it
//! names is in the live `/metrics` of a relayer process or of the operator binary.
//!
//! - The queries: `helm template` with `dashboards.enabled` and `alerts.enabled` renders the
//!   dashboard ConfigMaps and the PrometheusRule; each dashboard's panel targets and
//!   `label_values(...)` variables (Grafana's variables replaced from [`GRAFANA_VARIABLES`]),
//!   each alert, and both queries of the adapter rule
//!   (`charts/relayer-operator/adapter/prometheus-adapter-values.yaml`, its `<<...>>` templates
//!   replaced from [`ADAPTER_TEMPLATES`]).
//! - The metrics: `target/debug/relayer` settling through a stub that refuses the first call
//!   (so the breaker, retry and saga families have series) after two crossing orders, and the
//!   operator binary, leading, after it reconciled a RelayerDeployment on the test control
//!   plane. A name must be one the samples carry (`x_total`, `x_bucket`, `x_sum`, ...: what
//!   Prometheus stores), so a counter or histogram family's bare name is not enough.
//!
//! Run with `cargo build -p relayer --bin relayer && cargo test --test observability`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use relayer_operator::resources::RPS_METRIC;
use serde_json::{Value, json};
use support::binaries::Binaries;
use support::cutover::netns::relayer_binary;
use support::cutover::settlement::SettlementStub;
use support::fixtures::rd;
use support::http;
use support::metrics::Exposition;
use support::operator::{OperatorProcess, POD_NETWORK};
use support::{TestEnv, wait_available, wait_for};

/// Upper bound for the control plane, the operator and the relayer; seconds when warm.
const SETTLE: Duration = Duration::from_secs(90);

/// Grafana's variables as the dashboards write them, and a value of each as Grafana would
/// substitute it. A `$` left after these is an error: a variable this table does not know.
const GRAFANA_VARIABLES: [(&str, &str); 5] = [
    ("$__rate_interval", "1m"),
    ("$__range", "3h"),
    ("${namespace}", "relayers"),
    ("${relayerdeployment}", "market"),
    // NB: what "All" gives (the variable's allValue); one colour gives `blue`.
    ("${colour}", "blue|green"),
];

/// prometheus-adapter's templates and what it puts in their place for a Pods metric query.
const ADAPTER_TEMPLATES: [(&str, &str); 3] = [
    ("<<.Series>>", "foresight_http_requests_total"),
    (
        "<<.LabelMatchers>>",
        r#"namespace="relayers",pod=~"market-blue-7d9f8-abcde|market-blue-7d9f8-fghij""#,
    ),
    ("<<.GroupBy>>", "pod"),
];

/// The alerts the chart ships, with the default values.
const ALERTS: [&str; 5] = [
    "RelayerSagaManual",
    "RelayerCircuitBreakerOpen",
    "RelayerHighErrorRate",
    "RelayerCutoverFailed",
    "RelayerOperatorNotReconciling",
];

const ADMIN_TOKEN: &str = "observability-admin-token-0123456789";
const ALICE: &str = "0xa11ce00000000000000000000000000000000001";
const BOB: &str = "0xb0b0000000000000000000000000000000000002";
const MARKET: &str = "80002:1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/relayer-operator")
}

/// Whose `/metrics` a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reader {
    Relayer,
    Operator,
}

/// One query of the chart: where it is, whose metrics it reads, and its PromQL (variables
/// and templates already replaced).
#[derive(Debug)]
struct Query {
    what: String,
    reads: Reader,
    expr: String,
}

/// The chart rendered with its dashboards and alerts on, by the helm of the test binaries.
fn render_chart() -> String {
    let binaries = Binaries::locate().unwrap_or_else(|message| panic!("{message}"));
    let scratch = tempfile::tempdir().expect("scratch folder for helm");
    let out = Command::new(binaries.path("helm"))
        .env("HELM_CACHE_HOME", scratch.path().join("cache"))
        .env("HELM_CONFIG_HOME", scratch.path().join("config"))
        .env("HELM_DATA_HOME", scratch.path().join("data"))
        .env("KUBECONFIG", scratch.path().join("no-cluster"))
        .args(["template", "rel"])
        .arg(chart())
        .args(["--namespace", "monitoring"])
        .args([
            "--set",
            "dashboards.enabled=true",
            "--set",
            "alerts.enabled=true",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run helm template");
    assert!(
        out.status.success(),
        "helm template with dashboards and alerts failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// Every YAML document of a rendering, as JSON values.
fn documents(rendered: &str) -> Vec<Value> {
    rendered
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok())
        .filter(Value::is_object)
        .collect()
}

/// `text` with every Grafana variable of [`GRAFANA_VARIABLES`] replaced; an error naming
/// what is left when another `$` remains.
fn grafana_substituted(text: &str) -> Result<String, String> {
    let mut out = text.to_owned();
    for (variable, value) in GRAFANA_VARIABLES {
        out = out.replace(variable, value);
    }
    match out.find('$') {
        Some(at) => Err(format!(
            "a Grafana variable the test does not know (add it to GRAFANA_VARIABLES): {}",
            &out[at..]
        )),
        None => Ok(out),
    }
}

/// `text` with prometheus-adapter's templates replaced; an error when another `<<` remains.
fn adapter_substituted(text: &str) -> Result<String, String> {
    let mut out = text.to_owned();
    for (template, value) in ADAPTER_TEMPLATES {
        out = out.replace(template, value);
    }
    match out.find("<<") {
        Some(at) => Err(format!(
            "an adapter template the test does not know: {}",
            &out[at..]
        )),
        None => Ok(out),
    }
}

/// The queries of one dashboard: every panel target's `expr` (rows' nested panels too) and the
/// selector of every `label_values(selector, label)` variable.
fn dashboard_queries(file: &str, dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let name = variable["name"].as_str().unwrap_or("?");
        let definition = variable["definition"].as_str().unwrap_or_default();
        // NB: `label_values(label)` alone names no metric; these dashboards never use it.
        let selector = definition
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.rsplit_once(','))
            .map_or(definition, |(selector, _label)| selector.trim());
        found.push((format!("{file} variable {name}"), selector.to_owned()));
    }
    let mut panels: Vec<Value> = dashboard["panels"].as_array().cloned().unwrap_or_default();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested.iter().cloned());
        }
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let reference = target["refId"].as_str().unwrap_or("?");
                found.push((
                    format!("{file} panel {title:?} {reference}"),
                    expr.to_owned(),
                ));
            }
        }
    }
    found
}

/// Every query of the rendered chart and of the adapter rule, and what made one unreadable.
fn chart_queries(rendered: &str) -> (Vec<Query>, Vec<String>) {
    let mut queries = Vec::new();
    let mut problems = Vec::new();
    let docs = documents(rendered);

    let mut shipped = BTreeSet::new();
    for config_map in docs.iter().filter(|d| {
        d["kind"] == "ConfigMap"
            && d["metadata"]["labels"]["app.kubernetes.io/component"] == "dashboards"
    }) {
        for (file, text) in config_map["data"].as_object().into_iter().flatten() {
            let reads = match file.as_str() {
                "relayer.json" => Reader::Relayer,
                "operator.json" => Reader::Operator,
                other => panic!("no reader known for the dashboard {other}: add it here"),
            };
            let dashboard: Value = serde_json::from_str(text.as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("dashboard {file} is not JSON: {e}"));
            for (what, text) in dashboard_queries(file, &dashboard) {
                match grafana_substituted(&text) {
                    Ok(expr) => queries.push(Query { what, reads, expr }),
                    Err(error) => problems.push(format!("{what}: {error}\n    query: {text}")),
                }
            }
            shipped.insert(file.clone());
        }
    }
    let files: BTreeSet<String> = std::fs::read_dir(chart().join("dashboards"))
        .expect("charts/relayer-operator/dashboards")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        shipped, files,
        "every file of charts/relayer-operator/dashboards is in a ConfigMap"
    );

    let rules: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "PrometheusRule")
        .collect();
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    for group in rules[0]["spec"]["groups"].as_array().into_iter().flatten() {
        let reads = match group["name"].as_str() {
            Some("foresight-relayer") => Reader::Relayer,
            Some("foresight-relayer-operator") => Reader::Operator,
            other => panic!("no reader known for the rule group {other:?}: add it here"),
        };
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["alert"].as_str().unwrap_or("?");
            queries.push(Query {
                what: format!("alert {name}"),
                reads,
                expr: rule["expr"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }

    for (index, rule) in adapter_rules().iter().enumerate() {
        for key in ["seriesQuery", "metricsQuery"] {
            let what = format!("adapter rule {index} {key}");
            let text = rule[key].as_str().unwrap_or_default();
            match adapter_substituted(text) {
                Ok(expr) => queries.push(Query {
                    what,
                    reads: Reader::Relayer,
                    expr,
                }),
                Err(error) => problems.push(format!("{what}: {error}\n    query: {text}")),
            }
        }
    }
    (queries, problems)
}

/// `rules.custom` of the prometheus-adapter values the chart ships.
fn adapter_rules() -> Vec<Value> {
    let path = chart().join("adapter/prometheus-adapter-values.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let values: Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    values["rules"]["custom"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The metric names a query's selectors name, plain (`x`) or as `{__name__="x"}`.
#[derive(Default)]
struct MetricNames(BTreeSet<String>);

impl ExprVisitor for MetricNames {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(selector) => selector,
            Expr::MatrixSelector(matrix) => &matrix.vs,
            _ => return Ok(true),
        };
        let by_matcher = || {
            selector
                .matchers
                .matchers
                .iter()
                .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
                .map(|m| m.value.clone())
        };
        let name = selector
            .name
            .clone()
            .or_else(by_matcher)
            .ok_or_else(|| format!("the selector {selector} names no single metric"))?;
        self.0.insert(name);
        Ok(true)
    }
}

/// Parses `expr`; the metric names it reads, or the parser's error.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let ast = parser::parse(expr)?;
    let mut names = MetricNames::default();
    walk_expr(&mut names, &ast)?;
    Ok(names.0)
}

/// What one process serves: its sample names, and its families by `# TYPE` line (for hints).
struct Served {
    samples: BTreeSet<String>,
    families: BTreeMap<String, String>,
}

impl Served {
    fn of(text: &str) -> Self {
        let exposition = Exposition::parse(text).expect("a Prometheus text");
        let families = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
            .collect();
        Self {
            samples: exposition.names().into_iter().map(str::to_owned).collect(),
            families,
        }
    }

    /// Why `name` may be missing: it is a family's name, or another sample of its family.
    fn hint(&self, name: &str) -> String {
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        match self.families.get(name).or_else(|| self.families.get(base)) {
            Some(kind) => {
                let family = if self.families.contains_key(name) {
                    name
                } else {
                    base
                };
                let samples: Vec<&str> = self
                    .samples
                    .iter()
                    .filter(|s| {
                        s.strip_prefix(family)
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
                    })
                    .map(String::as_str)
                    .collect();
                format!(
                    " ({family} is a {kind} family; its samples: {})",
                    samples.join(", ")
                )
            }
            None => String::new(),
        }
    }
}

/// The relayer binary as a child process on a loopback port; SIGKILLed when dropped.
struct RelayerProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl RelayerProcess {
    /// Starts `target/debug/relayer` with its settlement at `settlement`, logging to a file
    /// in `dir`.
    fn start(settlement: &str, dir: &Path) -> Self {
        let binary = relayer_binary();
        assert!(
            binary.is_file(),
            "{} is missing: run `cargo build -p relayer --bin relayer` first",
            binary.display()
        );
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let log = dir.join("relayer.log");
        let file = std::fs::File::create(&log).expect("relayer log");
        let child = Command::new(&binary)
            .env("RELAYER_LISTEN", addr.to_string())
            .env("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RELAYER_SETTLEMENT__URL", settlement)
            // NB: the first attempt is refused; the retry comes at once.
            .env("RELAYER_SETTLEMENT__RETRY__INITIAL_DELAY_MS", "10")
            .env("RELAYER_SETTLEMENT__RETRY__MAX_DELAY_MS", "50")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        Self { child, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `POST path` with `token` and a JSON `body`: the status and the JSON answer.
    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let bearer = format!("Bearer {token}");
        let headers = [
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ];
        let body = body.to_string();
        let (status, text) = http::exchange(
            self.addr,
            "POST",
            path,
            &headers,
            body.as_bytes(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e:#}\n{}", self.log()));
        let answer = http::body_of(&text)
            .ok()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        (status, answer)
    }
}

impl Drop for RelayerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A relayer's `/metrics` after two funded users traded once, the settlement refused once.
async fn relayer_metrics() -> String {
    let stub = SettlementStub::start_refusing_first(Ipv4Addr::LOCALHOST, 1).await;
    let dir = tempfile::tempdir().expect("scratch folder for the relayer");
    let relayer = RelayerProcess::start(&stub.url, dir.path());
    wait_for("the relayer to serve /ready", SETTLE, || async {
        Ok(matches!(http::get(relayer.addr, "/ready").await, Ok((200, _))).then_some(()))
    })
    .await;

    let mut keys = BTreeMap::new();
    for user in [ALICE, BOB] {
        let (status, answer) = relayer
            .post("/admin/api-keys", ADMIN_TOKEN, json!({ "userId": user }))
            .await;
        assert_eq!(status, 201, "create an API key: {answer}");
        let key = answer["apiKey"].as_str().expect("apiKey").to_owned();
        keys.insert(user, key);
    }
    for (user, asset, amount) in [(ALICE, "collateral", "1000"), (BOB, MARKET, "100")] {
        let (status, answer) = relayer
            .post(
                "/admin/deposits",
                ADMIN_TOKEN,
                json!({ "userId": user, "asset": asset, "amount": amount }),
            )
            .await;
        assert_eq!(status, 200, "deposit: {answer}");
    }
    for (user, side, price) in [(BOB, "sell", "600000"), (ALICE, "buy", "650000")] {
        let order = json!({
            "marketKey": MARKET, "userId": user, "side": side, "price": price, "amount": "40",
        });
        let (status, answer) = relayer.post("/v2/orders", &keys[user], order).await;
        assert_eq!(status, 201, "{side} order: {answer}\n{}", relayer.log());
    }
    assert_eq!(
        stub.requests(),
        2,
        "the trade was refused once and settled on the retry"
    );
    http::get_body(relayer.addr, "/metrics")
        .await
        .expect("the relayer's /metrics")
}

/// The operator binary's `/metrics` once, leading, it reconciled a RelayerDeployment to
/// Available.
async fn operator_metrics(env: &TestEnv) -> String {
    env.install_crds(&repo().join("crds")).await;
    let operator = OperatorProcess::launch(env, "observability")
        .args(["--namespace", &env.namespace])
        .args(["--lease-namespace", &env.namespace])
        .args(["--identity", "observability-0"])
        .args(["--pod-networks", POD_NETWORK])
        .spawn();
    rd("market").replicas(1).apply(env, "observability").await;
    wait_available(env, "market", SETTLE).await;
    let text = operator
        .metrics_text()
        .await
        .expect("the operator's /metrics");
    let scrape = Exposition::parse(&text).expect("the operator's metrics");
    assert_eq!(
        scrape.value("relayer_operator_leader"),
        1.0,
        "{}",
        operator.log()
    );
    assert!(scrape.value("relayer_operator_reconcile_total") >= 1.0);
    text
}

#[test]
fn every_query_of_the_dashboards_alerts_and_adapter_rule_parses() {
    let (queries, mut problems) = chart_queries(&render_chart());
    for query in &queries {
        if let Err(error) = metric_names(&query.expr) {
            problems.push(format!(
                "{}: does not parse: {error}\n    query: {}",
                query.what, query.expr
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let count = |prefix: &str| {
        queries
            .iter()
            .filter(|q| q.what.starts_with(prefix))
            .count()
    };
    assert!(count("relayer.json panel") >= 20, "{queries:#?}");
    assert!(count("operator.json panel") >= 10, "{queries:#?}");
    let alerts: BTreeSet<&str> = queries
        .iter()
        .filter_map(|q| q.what.strip_prefix("alert "))
        .collect();
    assert_eq!(alerts, BTreeSet::from(ALERTS), "the alerts the chart ships");

    // The adapter serves the Pods metric the operator's HPA asks for, per pod and namespace.
    let rules = adapter_rules();
    assert_eq!(rules.len(), 1, "one adapter rule: {rules:#?}");
    let rule = &rules[0];
    assert_eq!(rule["name"]["as"], RPS_METRIC, "{rule:#}");
    assert_eq!(rule["name"]["matches"], "^foresight_http_requests_total$");
    assert_eq!(
        rule["resources"]["overrides"],
        json!({ "namespace": { "resource": "namespace" }, "pod": { "resource": "pod" } })
    );
    let series = rule["seriesQuery"].as_str().unwrap_or_default();
    assert_eq!(
        metric_names(series),
        Ok(BTreeSet::from(["foresight_http_requests_total".to_owned()]))
    );
}

#[tokio::test]
async fn every_metric_the_dashboards_alerts_and_adapter_rule_read_is_served_live() {
    let (queries, problems) = chart_queries(&render_chart());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let env = TestEnv::new("observability").await;
    let served = BTreeMap::from([
        (Reader::Relayer, Served::of(&relayer_metrics().await)),
        (Reader::Operator, Served::of(&operator_metrics(&env).await)),
    ]);

    let mut problems = Vec::new();
    let mut used: BTreeMap<Reader, BTreeSet<String>> = BTreeMap::new();
    for query in &queries {
        let names = match metric_names(&query.expr) {
            Ok(names) => names,
            Err(error) => {
                problems.push(format!("{}: does not parse: {error}", query.what));
                continue;
            }
        };
        let by = &served[&query.reads];
        for name in names {
            if !by.samples.contains(&name) {
                problems.push(format!(
                    "{}: {name} is not in the {:?}'s /metrics{}\n    query: {}",
                    query.what,
                    query.reads,
                    by.hint(&name),
                    query.expr
                ));
            }
            used.entry(query.reads).or_default().insert(name);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for (reader, names) in &used {
        eprintln!("{reader:?} metrics the chart reads: {names:?}");
    }
}
