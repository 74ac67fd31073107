//! The ways the tests run the operator: [`InProcessOperator`], its controller as a task of the
//! test process (stopped when dropped), and [`OperatorProcess`], its binary as a child process
//! (SIGKILLed when dropped), started with [`OperatorProcess::launch`] for chosen flags or
//! [`OperatorProcess::like_the_chart`] with the arguments and environment of the chart's pod.
//!
//! Uses [`crate::support::TestEnv`], [`crate::support::http`] and [`crate::support::metrics`].

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use relayer_operator::controller;
use relayer_operator::metrics::Metrics;

use super::TestEnv;
use super::http;
use super::metrics::Exposition;

/// The only network the operator may contact in tests: the pods of the network-namespace
/// backend ([`crate::support::cutover::NetnsBackend`]). NB: simulated pods have addresses in
/// 198.18.0.0/15 that nothing may contact.
pub const POD_NETWORK: &str = "10.244.0.0/16";

/// A controller task of this test process; `metrics` is what it reports.
pub struct InProcessOperator {
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcessOperator {
    /// Runs `controller::run` with `config` against `client` until dropped.
    pub fn start(client: kube::Client, config: controller::Config) -> Self {
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(client, config, metrics.clone(), async {
            let _ = stopped.await;
        }));
        Self {
            metrics,
            stop: Some(stop),
            task,
        }
    }
}

impl Drop for InProcessOperator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Starts the controller in this test process for this test's namespace, allowed to contact
/// pods in [`POD_NETWORK`] only and webhooks on loopback only.
pub fn start_operator(env: &TestEnv) -> InProcessOperator {
    InProcessOperator::start(
        env.client.clone(),
        controller::Config {
            namespace: Some(env.namespace.clone()),
            pod_networks: vec![POD_NETWORK.parse().expect("network")],
            webhook_networks: vec!["127.0.0.0/8".parse().expect("network")],
            ..controller::Config::default()
        },
    )
}

/// The operator binary, about to start: its flags, environment and identity.
pub struct Launch {
    command: Command,
    args: Vec<String>,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Launch {
    /// Adds flags (`["--namespace", "x"]` or `["--leader-election=false"]`).
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    /// Uses `kubeconfig` as its identity instead of the admin's.
    pub fn kubeconfig(mut self, kubeconfig: &Path) -> Self {
        self.command.env("KUBECONFIG", kubeconfig);
        self
    }

    /// Starts it, logging to its log file, with `--metrics-addr` on a free loopback port
    /// (replacing one given, such as the chart pod's `0.0.0.0:8080`, which would collide on
    /// the test machine).
    pub fn spawn(mut self) -> OperatorProcess {
        let file = std::fs::File::create(&self.log).expect("operator log");
        let mut args = Vec::with_capacity(self.args.len() + 1);
        let mut given = self.args.into_iter();
        while let Some(arg) = given.next() {
            if arg == "--metrics-addr" {
                given.next();
            } else if !arg.starts_with("--metrics-addr=") {
                args.push(arg);
            }
        }
        args.push(format!("--metrics-addr={}", self.metrics));
        let child = self
            .command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .expect("start relayer-operator");
        OperatorProcess {
            child,
            metrics: self.metrics,
            log: self.log,
        }
    }
}

/// The operator binary running as a child process; killed (SIGKILL) when dropped.
pub struct OperatorProcess {
    child: Child,
    /// Where it serves `/metrics`, `/health` and `/ready`.
    pub metrics: SocketAddr,
    log: PathBuf,
}

impl OperatorProcess {
    /// The binary as `name` (which names its log file), with the admin kubeconfig and no
    /// flags yet.
    pub fn launch(env: &TestEnv, name: &str) -> Launch {
        let mut command = Command::new(env!("CARGO_BIN_EXE_relayer-operator"));
        command.env("KUBECONFIG", env.control_plane.kubeconfig());
        Self::launch_command(env, name, command)
    }

    /// Like [`Self::launch`], but `command` runs the operator (for example its image through
    /// `scripts/image-run.sh`), with the identity and environment it already has.
    pub fn launch_command(env: &TestEnv, name: &str, command: Command) -> Launch {
        let metrics = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let log = env
            .control_plane
            .work_dir()
            .join(format!("operator-{}-{name}.log", env.namespace));
        Launch {
            command,
            args: Vec::new(),
            metrics,
            log,
        }
    }

    /// The binary started like the chart's pod: the arguments and environment of the
    /// container of Deployment `deployment` in `release_ns`, with `kubeconfig` as its identity
    /// and `pod` as its pod name.
    pub async fn like_the_chart(
        env: &TestEnv,
        release_ns: &str,
        deployment: &str,
        kubeconfig: &Path,
        pod: &str,
    ) -> Self {
        let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), release_ns);
        let deployment = deployments
            .get(deployment)
            .await
            .expect("the chart's Deployment");
        let container = deployment
            .spec
            .template
            .spec
            .map(|p| p.containers[0].clone())
            .expect("a container");
        let mut launch = Self::launch(env, pod)
            .kubeconfig(kubeconfig)
            .args(container.args.unwrap_or_default());
        for var in container.env.unwrap_or_default() {
            let value = match (var.value, var.value_from.and_then(|f| f.field_ref)) {
                (Some(value), _) => value,
                (None, Some(field)) if field.field_path == "metadata.name" => pod.to_owned(),
                (None, Some(field)) if field.field_path == "metadata.namespace" => {
                    release_ns.to_owned()
                }
                other => panic!("unexpected env source of {}: {other:?}", var.name),
            };
            launch = launch.env(&var.name, &value);
        }
        launch.spawn()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its `/metrics` text; an error while it is not serving.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        http::get_body(self.metrics, "/metrics").await
    }

    /// Its `/metrics`, parsed; an error while it is not serving.
    pub async fn scrape(&self) -> anyhow::Result<Exposition> {
        Exposition::parse(&self.metrics_text().await?)
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where it logs.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGKILL, and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
