//! Support of the chart tests and the local demo: the operator binary run the way the chart's
//! pod runs it (the Deployment's arguments and environment as installed), with a kubeconfig of
//! the caller's choosing, typically the chart's ServiceAccount.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use crate::support::TestEnv;

/// The operator binary started like the chart's pod; killed (SIGKILL) when dropped.
pub struct ChartOperator {
    child: Child,
    pub metrics: SocketAddr,
    log: PathBuf,
}

impl ChartOperator {
    /// Starts the operator with the container of Deployment `deployment` in `release_ns`,
    /// `kubeconfig` as its identity and `pod` as its pod name.
    pub async fn start(
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
        let metrics = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let log = env
            .control_plane
            .work_dir()
            .join(format!("operator-{}-{pod}.log", env.namespace));
        let file = std::fs::File::create(&log).expect("operator log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_relayer-operator"));
        command.env("KUBECONFIG", kubeconfig);
        for arg in container.args.unwrap_or_default() {
            // NB: the pod's 0.0.0.0:8080 would collide on the test machine.
            if arg.starts_with("--metrics-addr=") {
                command.arg(format!("--metrics-addr={metrics}"));
            } else {
                command.arg(arg);
            }
        }
        for var in container.env.unwrap_or_default() {
            let value = match (var.value, var.value_from.and_then(|f| f.field_ref)) {
                (Some(value), _) => value,
                (None, Some(field)) if field.field_path == "metadata.name" => pod.to_owned(),
                (None, Some(field)) if field.field_path == "metadata.namespace" => {
                    release_ns.to_owned()
                }
                other => panic!("unexpected env source of {}: {other:?}", var.name),
            };
            command.env(&var.name, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .expect("start relayer-operator");
        Self {
            child,
            metrics,
            log,
        }
    }

    /// `GET path` of the operator's metrics server, or `None` while it is not serving.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(1)).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// Everything the operator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where it logs.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for ChartOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
