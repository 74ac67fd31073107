//! [`InvariantWatcher`]: watches the active Service and the colours' Deployments during a
//! cutover and records every moment the Service selected a colour without available pods.
//!
//! Uses the Kubernetes API only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

/// Records, at every observed change of the active Service or a colour's Deployment, whether
/// the Service selects a colour with available pods, and the colours it selected in order.
pub struct InvariantWatcher {
    state: Arc<Mutex<Invariants>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default, Clone)]
pub struct Invariants {
    /// Colours the active Service selected, in order (repeats collapsed).
    pub selected: Vec<String>,
    /// Observations where the selected colour had no available pod.
    pub violations: Vec<String>,
    /// Observations made.
    pub checks: u64,
    /// Highest `spec.replicas` of each Deployment seen, and the first non-zero one.
    pub first_replicas: BTreeMap<String, i32>,
    /// Lowest non-zero `spec.replicas` of each Deployment while the other colour was active.
    pub min_replicas: BTreeMap<String, i32>,
}

impl Drop for InvariantWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl InvariantWatcher {
    pub fn start(client: Client, namespace: &str, name: &str) -> Self {
        let state = Arc::new(Mutex::new(Invariants::default()));
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let deployments: Api<Deployment> = Api::namespaced(client, namespace);
        let (svc_reader, svc_writer) = kube::runtime::reflector::store();
        let (dep_reader, dep_writer) = kube::runtime::reflector::store();
        let name = name.to_owned();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let svc = watcher(
                services,
                watcher::Config::default().fields(&format!("metadata.name={name}")),
            )
            .default_backoff()
            .reflect(svc_writer)
            .map(|_| ());
            let dep = watcher(deployments, watcher::Config::default())
                .default_backoff()
                .reflect(dep_writer)
                .map(|_| ());
            let both = futures::stream::select(svc, dep);
            let mut both = std::pin::pin!(both);
            while both.next().await.is_some() {
                let Some(service) = svc_reader.state().into_iter().next() else {
                    continue;
                };
                let Some(color) = service
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|s| s.get("relayer.foresight.dev/color"))
                    .cloned()
                else {
                    continue;
                };
                let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
                st.checks += 1;
                if st.selected.last() != Some(&color) {
                    st.selected.push(color.clone());
                }
                let mut available = None;
                for d in dep_reader.state() {
                    let dname = d.name_any();
                    let replicas = d.spec.replicas.unwrap_or(0);
                    if replicas > 0 {
                        st.first_replicas.entry(dname.clone()).or_insert(replicas);
                        if !dname.ends_with(&format!("-{color}")) {
                            let min = st.min_replicas.entry(dname.clone()).or_insert(replicas);
                            *min = (*min).min(replicas);
                        }
                    }
                    if dname == format!("{name}-{color}") {
                        available = Some(
                            d.status
                                .as_ref()
                                .and_then(|s| s.available_replicas)
                                .unwrap_or(0),
                        );
                    }
                }
                if let Some(n) = available
                    && n < 1
                {
                    st.violations.push(format!(
                        "the Service selects {color}, which has {n} available pods"
                    ));
                }
            }
        });
        Self { state, task }
    }

    pub fn snapshot(&self) -> Invariants {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
