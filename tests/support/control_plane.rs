//! One real Kubernetes control plane per test binary: etcd, kube-apiserver (RBAC on) and
//! kube-controller-manager on free loopback ports, plus the pod simulator; or, when
//! `KUBECONFIG_TEST` names a kubeconfig, an existing cluster such as kind or k3d.
//!
//! NB: the control plane lives in a static, which Rust never drops. Teardown therefore does
//! not rely on destructors: every process runs under the watchdog of [`super::process`],
//! which stops it when the test process is gone (normal exit, panic or SIGKILL), and a
//! janitor removes the scratch folder afterwards (`FORESIGHT_K8S_KEEP=1` keeps it).
//!
//! Clients are not shared between tests: each `#[tokio::test]` has its own runtime, and a
//! client's connections die with the runtime that made them. Tests build theirs from the
//! kubeconfig, while the simulator runs on a runtime owned by the harness thread.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::binaries::Binaries;
use super::pki::Pki;
use super::pod_sim::PodSimulator;
use super::process::{Group, Supervised};

/// Names an existing cluster's kubeconfig to test against instead of starting one.
pub const EXTERNAL_KUBECONFIG_ENV: &str = "KUBECONFIG_TEST";

/// Keeps the scratch folder (logs, kubeconfig, certificates) after the tests when set to 1.
pub const KEEP_ENV: &str = "FORESIGHT_K8S_KEEP";

/// Generous bounds for a loaded 2-core machine; a healthy start takes a fraction of them.
const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);
const APISERVER_START_TIMEOUT: Duration = Duration::from_secs(120);
const CONTROLLER_MANAGER_START_TIMEOUT: Duration = Duration::from_secs(90);

/// Controllers the controller-manager runs: all defaults except node IPAM (no pod CIDRs
/// here) and the node lifecycle controller, which would taint and evict the simulated node's
/// pods whenever a busy test process delays a heartbeat. The cloud controllers (node
/// lifecycle, routes, service load balancers) are no longer part of this binary in v1.37.
const CONTROLLERS: &str = "*,-node-ipam-controller,-node-lifecycle-controller";

/// A running control plane (or an external cluster) shared by one test binary.
#[derive(Debug)]
pub struct ControlPlane {
    kubeconfig: PathBuf,
    work_dir: PathBuf,
    binaries: Option<Binaries>,
    /// The cluster CA and friends (`None` for an external cluster).
    pki: Option<Pki>,
    simulator: Option<PodSimulator>,
    processes: Mutex<Group>,
    started_in: Duration,
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// The control plane of this test binary, started on first use.
    ///
    /// Panics with the reason (for example the missing binaries and the script that builds
    /// them) when it cannot start: a test that needs a cluster must not pass without one.
    pub fn shared() -> &'static Self {
        match SHARED.get_or_init(start_on_harness_thread) {
            Ok(control_plane) => control_plane,
            Err(message) => panic!("test control plane unavailable: {message}"),
        }
    }

    /// The admin kubeconfig (cluster-admin through `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Scratch folder: logs, certificates, kubeconfigs.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// True when the tests run against `KUBECONFIG_TEST` instead of a local control plane.
    pub fn is_external(&self) -> bool {
        self.simulator.is_none()
    }

    /// The pod simulator (`None` against an external cluster, whose kubelets run pods).
    pub fn simulator(&self) -> Option<&PodSimulator> {
        self.simulator.as_ref()
    }

    /// How long the start took (zero for an external cluster).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// A binary built by `tests/k8s/build.sh` (kubectl, helm, ...).
    ///
    /// Against an external cluster without built binaries, falls back to the one on PATH.
    pub fn binary(&self, name: &str) -> PathBuf {
        match &self.binaries {
            Some(binaries) => binaries.path(name),
            None => PathBuf::from(name),
        }
    }

    /// The local control plane's certificates (`None` against `KUBECONFIG_TEST`).
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    /// A fresh admin client for the calling test's runtime.
    pub async fn client(&self) -> anyhow::Result<Client> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// `kubectl --kubeconfig <admin kubeconfig>`, ready for more arguments.
    pub fn kubectl(&self) -> Command {
        self.kubectl_as(&self.kubeconfig)
    }

    /// kubectl with another identity's kubeconfig.
    ///
    /// NB: its discovery cache goes to the scratch folder: every control plane has a new port,
    /// and kubectl would otherwise leave a cache folder per run in `~/.kube/cache`.
    pub fn kubectl_as(&self, kubeconfig: &Path) -> Command {
        let mut command = Command::new(self.binary("kubectl"));
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.work_dir.join("kubectl-cache"));
        command
    }

    /// helm with the admin kubeconfig, its cache, config and data kept in the scratch folder.
    pub fn helm(&self) -> Command {
        self.helm_as(&self.kubeconfig)
    }

    /// helm with another identity's kubeconfig (for example the chart's ServiceAccount).
    pub fn helm_as(&self, kubeconfig: &Path) -> Command {
        let home = self.work_dir.join("helm");
        let mut command = Command::new(self.binary("helm"));
        command
            .env("KUBECONFIG", kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        command
    }

    /// The pod simulator's latest notes and the log tails of every component that is no
    /// longer running, for failure messages.
    pub fn diagnose(&self) -> String {
        let mut processes = match self.processes.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out = String::new();
        let sim_log = self.work_dir.join("logs").join("pod-sim.log");
        if let Ok(text) = std::fs::read_to_string(&sim_log) {
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            out += &format!("\npod simulator notes (last 20):\n{}", tail.join("\n"));
        }
        for process in processes.iter_mut() {
            if let Some(status) = process.exit_status() {
                out += &format!(
                    "\n{} exited ({status}); log tail:\n{}",
                    process.name(),
                    process.log_tail(4000)
                );
            }
        }
        out
    }
}

/// Builds a client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    Ok(Client::try_from(config)?)
}

/// Starts the control plane on a dedicated thread whose runtime lives as long as the process,
/// so the simulator keeps running across tests (each test has its own runtime).
fn start_on_harness_thread() -> Result<ControlPlane, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("k8s-harness".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = tx.send(Err(format!("cannot build the harness runtime: {error}")));
                    return;
                }
            };
            let result = runtime
                .block_on(start())
                .map_err(|error| format!("{error:#}"));
            let _ = tx.send(result);
            // Keep the simulator's tasks alive until the process ends.
            runtime.block_on(std::future::pending::<()>());
        });
    if let Err(error) = spawned {
        return Err(format!("cannot spawn the harness thread: {error}"));
    }
    match rx.recv() {
        Ok(result) => result,
        Err(_) => Err("the harness thread died while starting the control plane".into()),
    }
}

/// Attempts at starting when a component lost its port to another process.
const START_ATTEMPTS: usize = 3;

async fn start() -> anyhow::Result<ControlPlane> {
    if let Some(path) = std::env::var_os(EXTERNAL_KUBECONFIG_ENV).filter(|p| !p.is_empty()) {
        return start_external(PathBuf::from(path)).await;
    }
    let binaries = Binaries::locate().map_err(anyhow::Error::msg)?;
    let mut attempt = 1;
    loop {
        match start_local(&binaries).await {
            Err(error)
                if attempt < START_ATTEMPTS
                    && format!("{error:#}").contains("address already in use") =>
            {
                announce(&format!(
                    "a port was taken meanwhile, starting again: {error:#}"
                ));
                attempt += 1;
            }
            result => return result,
        }
    }
}

async fn start_local(binaries: &Binaries) -> anyhow::Result<ControlPlane> {
    let began = Instant::now();
    let keep = keep_work_dir();
    let work_dir = tempfile::Builder::new()
        .prefix("foresight-k8s-")
        .tempdir()?
        .keep();
    let logs = work_dir.join("logs");
    std::fs::create_dir_all(&logs)?;

    let mut processes = Group::default();
    if !keep {
        processes.push(janitor(&work_dir)?);
    }

    let pki = Pki::generate(&work_dir.join("pki"))?;

    // etcd
    let etcd_port = free_port()?;
    let etcd_peer_port = free_port()?;
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
    let etcd_args = vec![
        "--name=default".to_owned(),
        format!("--data-dir={}", work_dir.join("etcd").display()),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        // NB: throwaway data; skipping fsync makes every write of the suite cheaper.
        "--unsafe-no-fsync=true".to_owned(),
        "--log-level=warn".to_owned(),
    ];
    processes.push(Supervised::spawn(
        "etcd",
        &binaries.path("etcd"),
        &etcd_args,
        &logs.join("etcd.log"),
    )?);
    let t_etcd = Instant::now();
    wait_for_port(etcd_port, ETCD_START_TIMEOUT, &mut processes).await?;
    let etcd_took = t_etcd.elapsed();

    // kube-apiserver
    let api_port = free_port()?;
    let server = format!("https://127.0.0.1:{api_port}");
    let apiserver_args = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--secure-port={api_port}"),
        format!("--cert-dir={}", work_dir.join("apiserver-certs").display()),
        format!("--tls-cert-file={}", pki.serving_cert.display()),
        format!("--tls-private-key-file={}", pki.serving_key.display()),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        "--authorization-mode=Node,RBAC".to_owned(),
        // NB: the endpoint reconciler refuses a loopback advertise address.
        "--endpoint-reconciler-type=none".to_owned(),
        "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        format!("--service-account-key-file={}", pki.sa_public_key.display()),
        format!(
            "--service-account-signing-key-file={}",
            pki.sa_private_key.display()
        ),
        // NB: never resolve a node's hostname (a DNS query leaves the machine); the simulated
        // node's only address is loopback.
        "--kubelet-preferred-address-types=InternalIP".to_owned(),
        "--allow-privileged=true".to_owned(),
        "--profiling=false".to_owned(),
        "--v=1".to_owned(),
    ];
    processes.push(Supervised::spawn(
        "kube-apiserver",
        &binaries.path("kube-apiserver"),
        &apiserver_args,
        &logs.join("kube-apiserver.log"),
    )?);
    let kubeconfig = work_dir.join("kubeconfig");
    write_admin_kubeconfig(
        &kubeconfig,
        &server,
        &pki.ca_cert,
        &pki.admin_cert,
        &pki.admin_key,
    )?;
    let client = client_from_kubeconfig(&kubeconfig).await?;
    let t_api = Instant::now();
    wait_for_readyz(&client, &mut processes).await?;
    let api_took = t_api.elapsed();

    // kube-controller-manager
    let kcm_port = free_port()?;
    let kcm_args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--secure-port={kcm_port}"),
        format!("--cert-dir={}", work_dir.join("kcm-certs").display()),
        format!(
            "--service-account-private-key-file={}",
            pki.sa_private_key.display()
        ),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        format!("--cluster-signing-cert-file={}", pki.ca_cert.display()),
        format!("--cluster-signing-key-file={}", pki.ca_key.display()),
        format!("--controllers={CONTROLLERS}"),
        "--leader-elect=false".to_owned(),
        "--use-service-account-credentials=false".to_owned(),
        // NB: the defaults (tens of seconds) would make GC and rollouts in tests sluggish.
        "--concurrent-gc-syncs=5".to_owned(),
        "--profiling=false".to_owned(),
        "--v=1".to_owned(),
    ];
    processes.push(Supervised::spawn(
        "kube-controller-manager",
        &binaries.path("kube-controller-manager"),
        &kcm_args,
        &logs.join("kube-controller-manager.log"),
    )?);
    let t_kcm = Instant::now();
    wait_for_controller_manager(&client, &mut processes).await?;
    let kcm_took = t_kcm.elapsed();

    let simulator = PodSimulator::start(client, logs.join("pod-sim.log")).await?;
    let started_in = began.elapsed();
    announce(&format!(
        "control plane ready in {:.1}s (etcd {:.1}s, kube-apiserver {:.1}s, \
         kube-controller-manager {:.1}s); kubeconfig {}",
        started_in.as_secs_f64(),
        etcd_took.as_secs_f64(),
        api_took.as_secs_f64(),
        kcm_took.as_secs_f64(),
        kubeconfig.display()
    ));
    Ok(ControlPlane {
        kubeconfig,
        work_dir,
        binaries: Some(binaries.clone()),
        pki: Some(pki),
        simulator: Some(simulator),
        processes: Mutex::new(processes),
        started_in,
    })
}

async fn start_external(kubeconfig: PathBuf) -> anyhow::Result<ControlPlane> {
    let client = client_from_kubeconfig(&kubeconfig).await?;
    let version = client.apiserver_version().await.with_context(|| {
        format!(
            "{EXTERNAL_KUBECONFIG_ENV}={} does not reach a cluster",
            kubeconfig.display()
        )
    })?;
    announce(&format!(
        "using the existing cluster of {EXTERNAL_KUBECONFIG_ENV}={} (Kubernetes {})",
        kubeconfig.display(),
        version.git_version
    ));
    let work_dir = tempfile::Builder::new()
        .prefix("foresight-k8s-ext-")
        .tempdir()?
        .keep();
    let mut processes = Group::default();
    if !keep_work_dir() {
        processes.push(janitor(&work_dir)?);
    }
    Ok(ControlPlane {
        kubeconfig,
        work_dir,
        binaries: Binaries::locate().ok(),
        pki: None,
        simulator: None,
        processes: Mutex::new(processes),
        started_in: Duration::ZERO,
    })
}

fn keep_work_dir() -> bool {
    std::env::var(KEEP_ENV).is_ok_and(|v| v == "1")
}

/// A watchdog around `sleep` whose only job is to remove `work_dir` once the test process is
/// gone (the scratch folder outlives every destructor, like the control plane).
fn janitor(work_dir: &Path) -> anyhow::Result<Supervised> {
    // NB: `sleep` prints nothing, and a log inside the folder it removes would be pointless.
    Supervised::spawn_with_cleanup(
        "janitor",
        Path::new("sleep"),
        &["infinity".to_owned()],
        Path::new("/dev/null"),
        Some(work_dir),
    )
}

/// Writes the admin kubeconfig; certificate material is referenced by absolute path.
fn write_admin_kubeconfig(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    client_cert: &Path,
    client_key: &Path,
) -> anyhow::Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "foresight-test",
            "cluster": { "server": server, "certificate-authority": ca_cert },
        }],
        "users": [{
            "name": "admin",
            "user": { "client-certificate": client_cert, "client-key": client_key },
        }],
        "contexts": [{
            "name": "foresight-test-admin",
            "context": { "cluster": "foresight-test", "user": "admin" },
        }],
        "current-context": "foresight-test-admin",
    });
    std::fs::write(path, serde_yaml::to_string(&config)?)?;
    Ok(())
}

/// One line on the real stderr: libtest captures `eprintln!` of the test that happened to
/// start the control plane, and these lines (start time, which cluster) matter in CI logs.
fn announce(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "[k8s] {message}");
}

/// A port that was free a moment ago on 127.0.0.1.
///
/// NB: drawn below Linux's ephemeral range (32768 and up), so the outgoing connections of
/// other processes cannot take it between this check and the component's own bind; only a
/// second harness drawing the same number could, and [`start`] retries that case.
fn free_port() -> anyhow::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    const LOW: u64 = 20_000;
    const HIGH: u64 = 32_768;
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    for attempt in 0..64u64 {
        hasher.write_u64(attempt);
        let Ok(port) = u16::try_from(LOW + hasher.finish() % (HIGH - LOW)) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Fails with the component's log when any supervised process has exited.
fn ensure_running(processes: &mut Group) -> anyhow::Result<()> {
    for process in processes.iter_mut() {
        if let Some(status) = process.exit_status() {
            anyhow::bail!(
                "{} exited ({status}) during start-up; log tail:\n{}",
                process.name(),
                process.log_tail(6000)
            );
        }
    }
    Ok(())
}

async fn wait_for_port(port: u16, timeout: Duration, processes: &mut Group) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        ensure_running(processes)?;
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("etcd did not listen on 127.0.0.1:{port} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_readyz(client: &Client, processes: &mut Group) -> anyhow::Result<()> {
    let deadline = Instant::now() + APISERVER_START_TIMEOUT;
    loop {
        ensure_running(processes)?;
        let request = http::Request::get("/readyz").body(Vec::new())?;
        let last = match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => body,
            Err(error) => error.to_string(),
        };
        if Instant::now() > deadline {
            anyhow::bail!(
                "kube-apiserver not ready within {APISERVER_START_TIMEOUT:?}; last answer: {last}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The controller-manager is working once its service-account controller has created the
/// `default` ServiceAccount of the `default` namespace (pods need it to pass admission).
async fn wait_for_controller_manager(client: &Client, processes: &mut Group) -> anyhow::Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + CONTROLLER_MANAGER_START_TIMEOUT;
    loop {
        ensure_running(processes)?;
        if accounts.get_opt("default").await?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "kube-controller-manager created no default ServiceAccount within \
                 {CONTROLLER_MANAGER_START_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates a namespace named after `prefix` with a server-generated suffix.
pub async fn create_namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    clean.truncate(40);
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {
            "generateName": format!("{}-", clean.trim_matches('-')),
            "labels": { "foresight.dev/test": "true" },
        }
    }))?;
    let created = namespaces
        .create(&PostParams::default(), &namespace)
        .await?;
    created
        .metadata
        .name
        .context("the API server returned a namespace without a name")
}
