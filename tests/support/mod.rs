//! The one support module of the operator's integration tests (`tests/*.rs`): the control
//! plane they run against, the ways to run the operator, waits, the metrics reader and the
//! fixtures.
//!
//! Layout (each module uses only the ones listed before it, and [`TestEnv`] in this file):
//! - [`binaries`]: finds the binaries built by `tests/k8s/build.sh`.
//! - [`pki`]: certificates and keys generated per control plane.
//! - [`process`]: children under a watchdog, so nothing outlives the test process.
//! - [`pod_sim`]: a fake node and kubelet that make pods Running and Ready.
//! - [`control_plane`]: etcd + kube-apiserver + kube-controller-manager, one per test binary
//!   (or the cluster named by `KUBECONFIG_TEST`), with its pod simulator.
//! - [`wait`]: [`wait_for`] a condition with a deadline, [`wait_step`] of a rollout.
//! - [`http`]: a minimal HTTP `GET` (probes, load, scrapes).
//! - [`metrics`]: reads a Prometheus text with the operator's own gate parser; a missing
//!   series is an error, never 0.
//! - [`fixtures`]: fluent RelayerDeployment fixtures (`rd("market").replicas(2)…`).
//! - [`operator`]: the operator in this process ([`operator::InProcessOperator`]) or as its
//!   binary ([`operator::OperatorProcess`], also started the way the chart's pod runs it).
//! - [`cutover`]: pods backed by real relayer processes in network namespaces, a kube-proxy
//!   stand-in, a load generator and an invariant watcher (cutover, chart RBAC, demo).
//! - this file: [`TestEnv`], the per-test view (own namespace, own clients) and small helpers.
//!
//! Use it from a test file with `mod support;`:
//!
//! ```ignore
//! let env = TestEnv::new("my-test").await;          // control plane + own namespace
//! let deployments = env.api::<Deployment>();         // admin client in that namespace
//! env.kubectl(&["get", "pods"])?;                    // the built kubectl
//! env.control_plane.helm().args(["install", ...]);   // the built helm
//! let (client, kubeconfig) = env.service_account_identity(&ns, "operator").await?;
//! let (client, kubeconfig) = env.user_identity("jane", Some("viewers")).await?;
//! if let Some(sim) = env.control_plane.simulator() { sim.register(backend) }
//! ```
//!
//! The binaries come from `tests/k8s/build.sh` (see `tests/k8s/README.md`).

// NB: each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod binaries;
pub mod control_plane;
pub mod cutover;
pub mod fixtures;
pub mod http;
pub mod metrics;
pub mod operator;
pub mod pki;
pub mod pod_sim;
pub mod process;
pub mod wait;

use std::fmt::Debug;
use std::path::PathBuf;

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use kube::core::{NamespaceResourceScope, Status};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

pub use control_plane::ControlPlane;
#[allow(unused_imports)] // NB: not every test binary waits.
pub use wait::{wait_available, wait_for, wait_for_every, wait_step};

/// One test's slice of the shared control plane: its own namespace and an admin client.
pub struct TestEnv {
    pub control_plane: &'static ControlPlane,
    pub client: Client,
    pub namespace: String,
}

impl TestEnv {
    /// Starts (or reuses) the binary's control plane and creates a fresh namespace.
    pub async fn new(test_name: &str) -> Self {
        let control_plane = ControlPlane::shared();
        let client = control_plane
            .client()
            .await
            .expect("admin client from the harness kubeconfig");
        let namespace = control_plane::create_namespace(&client, test_name)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "creating the test namespace: {error:#}{}",
                    control_plane.diagnose()
                )
            });
        Self {
            control_plane,
            client,
            namespace,
        }
    }

    /// An API for namespaced objects in this test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A second identity with exactly `rules` in this namespace: a ServiceAccount bound to a
    /// Role, authenticated by a token from the TokenRequest API. Returns its client and a
    /// kubeconfig file for other clients (kubectl, helm).
    pub async fn restricted_identity(
        &self,
        name: &str,
        rules: Vec<PolicyRule>,
    ) -> anyhow::Result<(Client, PathBuf)> {
        let pp = PostParams::default();
        let account: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
        }))?;
        self.api::<ServiceAccount>().create(&pp, &account).await?;
        let role = Role {
            metadata: kube::core::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            rules: Some(rules),
        };
        self.api::<Role>().create(&pp, &role).await?;
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": self.namespace }],
        }))?;
        self.api::<RoleBinding>().create(&pp, &binding).await?;
        self.service_account_identity(&self.namespace, name).await
    }

    /// Acts as an existing ServiceAccount (for example the one a Helm chart created, with the
    /// RBAC the chart grants it): a token from the TokenRequest API, a kubeconfig file using
    /// it (for kubectl or helm) and a client.
    pub async fn service_account_identity(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<(Client, PathBuf)> {
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "spec": { "expirationSeconds": 3600 },
        }))?;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let issued: TokenRequest = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name}"))?;
        let token = issued
            .status
            .context("TokenRequest answered without a status")?
            .token
            .context("TokenRequest answered without a token")?;

        // The admin kubeconfig's current cluster entry, as it is (a file path for the local
        // control plane, embedded data for kind and friends).
        let admin = Kubeconfig::read_from(self.control_plane.kubeconfig())?;
        let cluster_name = admin
            .current_context
            .as_ref()
            .and_then(|current| admin.contexts.iter().find(|c| &c.name == current))
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .or_else(|| admin.clusters.first().map(|c| c.name.clone()))
            .context("the admin kubeconfig names no cluster")?;
        let cluster = admin
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .context("the admin kubeconfig lacks its current cluster")?;
        let user = format!("{namespace}-{name}");
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{ "name": user, "user": { "token": token } }],
            "contexts": [{
                "name": user,
                "context": { "cluster": cluster_name, "user": user, "namespace": namespace },
            }],
            "current-context": user,
        });
        let path = self
            .control_plane
            .work_dir()
            .join(format!("kubeconfig-{user}"));
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        let client = control_plane::client_from_kubeconfig(&path).await?;
        Ok((client, path))
    }

    /// A user authenticated by a client certificate from the cluster CA (CN `user`, O
    /// `group`), with whatever RBAC the test binds to that user or group; for example a
    /// platform engineer running kubectl. Only on the local control plane, whose CA key the
    /// harness holds.
    pub async fn user_identity(
        &self,
        user: &str,
        group: Option<&str>,
    ) -> anyhow::Result<(Client, PathBuf)> {
        let pki = self.control_plane.pki().context(
            "client certificates need the local control plane's CA; against KUBECONFIG_TEST \
             use service_account_identity",
        )?;
        let dir = self.control_plane.work_dir().join("users");
        std::fs::create_dir_all(&dir)?;
        let (cert, key) = pki.issue_client(&dir, user, group)?;
        let admin = Kubeconfig::read_from(self.control_plane.kubeconfig())?;
        let cluster = admin
            .clusters
            .first()
            .context("the admin kubeconfig has no cluster")?;
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{
                "name": user,
                "user": { "client-certificate": cert, "client-key": key },
            }],
            "contexts": [{
                "name": user,
                "context": { "cluster": cluster.name, "user": user, "namespace": self.namespace },
            }],
            "current-context": user,
        });
        let path = dir.join(format!(
            "kubeconfig-{}",
            cert.file_stem().unwrap_or_default().to_string_lossy()
        ));
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        let client = control_plane::client_from_kubeconfig(&path).await?;
        Ok((client, path))
    }

    /// `kubectl apply --server-side -f <dir>` of the CRDs in `dir`, once per test binary, then
    /// waits until the RelayerDeployment CRD is established.
    pub async fn install_crds(&self, dir: &std::path::Path) {
        static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        INSTALLED
            .get_or_init(|| async {
                self.kubectl(&["apply", "--server-side", "-f", &dir.display().to_string()])
                    .unwrap_or_else(|e| panic!("kubectl apply -f {}: {e:#}", dir.display()));
                // NB: right after the apply the CRD may have no status.conditions yet, and
                // kubectl wait then fails at once instead of waiting: ask again, bounded.
                let wait = || {
                    self.kubectl(&[
                        "wait",
                        "--for=condition=Established",
                        "--timeout=60s",
                        "crd/relayerdeployments.relayer.foresight.dev",
                    ])
                };
                for _ in 0..10 {
                    if wait().is_ok() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                wait().expect("the CRD becomes established");
            })
            .await;
    }

    /// Creates the Secret `name` in this namespace holding `value` under `key`.
    pub async fn create_secret(&self, name: &str, key: &str, value: &str) {
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": name },
                "stringData": { key: value },
            }))
            .expect("a Secret");
        self.api::<k8s_openapi::api::core::v1::Secret>()
            .create(&kube::api::PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("create the Secret {name}: {e}"));
    }

    /// Runs the built kubectl against the admin kubeconfig in this namespace; returns stdout,
    /// or an error carrying stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .control_plane
            .kubectl()
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .output()
            .with_context(|| {
                format!(
                    "running {} (build it with tests/k8s/build.sh)",
                    self.control_plane.binary("kubectl").display()
                )
            })?;
        if !output.status.success() {
            anyhow::bail!(
                "kubectl {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for TestEnv {
    /// On an external cluster, removes the namespace of a test that passed (a failed test's
    /// namespace stays for inspection). A local control plane goes away as a whole.
    fn drop(&mut self) {
        if !self.control_plane.is_external() || std::thread::panicking() {
            return;
        }
        let deleted = self
            .control_plane
            .kubectl()
            .args(["delete", "namespace", &self.namespace, "--wait=false"])
            .output();
        if let Err(error) = deleted {
            eprintln!("could not delete namespace {}: {error}", self.namespace);
        }
    }
}

/// Unwraps the API server's refusal of a request: the 403 Status, or a panic that says what
/// happened instead.
pub fn expect_forbidden<T: Debug>(result: kube::Result<T>, what: &str) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => status,
        Err(kube::Error::Api(status)) => panic!(
            "{what}: expected 403 Forbidden, got HTTP {} {}: {}",
            status.code, status.reason, status.message
        ),
        Err(other) => panic!("{what}: expected 403 Forbidden, got a client error: {other}"),
        Ok(value) => panic!("{what}: expected 403 Forbidden, but it was allowed: {value:?}"),
    }
}

/// Parses one YAML or JSON document into `K`.
pub fn from_yaml<K: DeserializeOwned>(text: &str) -> K {
    serde_yaml::from_str(text).expect("valid test fixture YAML")
}
