//! The pods of one colour as the cutover sees them: [`PodTargets`] (the ready pods of the
//! colour's own Deployment inside `--pod-networks`, as gate targets) and the drain evidence
//! of a colour being left (EndpointSlices first, then each pod's in-flight and saga gauges).
//!
//! NB: labels alone never make a pod a target: anyone who may create pods could carry them.
//! A pod counts only when its controller is a ReplicaSet whose controller is the Deployment
//! of that colour, itself controlled by the RelayerDeployment, all by uid ([`owned_pods`]).
//!
//! May use: [`super::super::Context`] (caches, config, the pod request budget),
//! [`crate::gates::runner`], [`crate::resources`], [`crate::crd`].

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::super::{Context, Network, Stores};
use super::decide::DrainEvidence;
use crate::crd::{Color, RelayerDeployment};
use crate::gates::runner::{self, Drain, Target, Targets};
use crate::resources::{self, LABEL_COLOR, LABEL_INSTANCE};

/// Pods of one colour, as gate and drain targets.
pub(super) struct PodTargets {
    stores: Stores,
    namespace: String,
    instance: String,
    /// The RelayerDeployment's uid: the controller of the Deployments whose pods count.
    owner_uid: String,
    under_test: Color,
    active: Color,
    port: u16,
    networks: Vec<Network>,
}

impl PodTargets {
    /// The pods of `rd` with `under_test` as the colour under test and `active` as the one to
    /// compare with, from `ctx`'s caches, contacted on the relayer's port.
    pub(super) fn new(
        ctx: &Context,
        rd: &RelayerDeployment,
        under_test: Color,
        active: Color,
    ) -> Self {
        let port = resources::container_port(rd)
            .ok()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(3000);
        Self {
            stores: ctx.stores.clone(),
            namespace: rd.namespace().unwrap_or_default(),
            instance: rd.name_any(),
            owner_uid: rd.uid().unwrap_or_default(),
            under_test,
            active,
            port,
            networks: ctx.config.pod_networks.clone(),
        }
    }

    fn of(&self, color: Color, ready_only: bool) -> Vec<Target> {
        self.pods(color)
            .into_iter()
            .filter(|p| !ready_only || is_ready(p))
            .filter_map(|p| {
                let ip: std::net::IpAddr = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
                // NB: never contact an address outside the allowed networks.
                self.networks
                    .iter()
                    .any(|n| n.contains(ip))
                    .then(|| Target {
                        key: format!("{}/{}", p.name_any(), p.uid().unwrap_or_default()),
                        addr: SocketAddr::new(ip, self.port),
                    })
            })
            .collect()
    }

    /// The pods of `color` that belong to the RelayerDeployment (see [`owned_pods`]).
    fn pods(&self, color: Color) -> Vec<Arc<Pod>> {
        let deployment = format!("{}-{}", self.instance, color.as_str());
        let deployments = self.stores.deployments.state();
        let replica_sets = self.stores.replica_sets.state();
        let pods = self.stores.pods.state();
        owned_pods(
            &Owners {
                namespace: &self.namespace,
                instance: &self.instance,
                owner_uid: &self.owner_uid,
                color,
                deployment: &deployment,
            },
            &deployments,
            &replica_sets,
            &pods,
        )
    }
}

impl Targets for PodTargets {
    fn under_test(&self) -> Vec<Target> {
        self.of(self.under_test, true)
    }

    fn active(&self) -> Vec<Target> {
        self.of(self.active, true)
    }
}

/// Whose pods [`owned_pods`] looks for.
pub(super) struct Owners<'a> {
    /// Namespace of the RelayerDeployment (and of all its children).
    pub(super) namespace: &'a str,
    /// Its name (the instance label).
    pub(super) instance: &'a str,
    /// Its uid.
    pub(super) owner_uid: &'a str,
    /// The colour.
    pub(super) color: Color,
    /// The name of that colour's Deployment.
    pub(super) deployment: &'a str,
}

/// The pods of colour `who.color` of RelayerDeployment `who`: labelled so, and controlled by a
/// ReplicaSet that is controlled by the Deployment `who.deployment`, which `who.owner_uid`
/// controls, each link by controller owner reference and uid. Pure: the caches' contents in,
/// the pods out.
pub(super) fn owned_pods(
    who: &Owners<'_>,
    deployments: &[Arc<Deployment>],
    replica_sets: &[Arc<ReplicaSet>],
    pods: &[Arc<Pod>],
) -> Vec<Arc<Pod>> {
    if who.owner_uid.is_empty() {
        return Vec::new();
    }
    let in_ns = |meta: &ObjectMeta| meta.namespace.as_deref() == Some(who.namespace);
    let Some(deployment_uid) = deployments
        .iter()
        .find(|d| {
            in_ns(&d.metadata)
                && d.metadata.name.as_deref() == Some(who.deployment)
                && controller_uid(&d.metadata, "relayer.foresight.dev/", "RelayerDeployment")
                    == Some(who.owner_uid)
        })
        .and_then(|d| d.metadata.uid.as_deref())
    else {
        return Vec::new();
    };
    let replica_set_uids: Vec<&str> = replica_sets
        .iter()
        .filter(|rs| {
            in_ns(&rs.metadata)
                && controller_uid(&rs.metadata, "apps/", "Deployment") == Some(deployment_uid)
        })
        .filter_map(|rs| rs.metadata.uid.as_deref())
        .collect();
    pods.iter()
        .filter(|p| {
            in_ns(&p.metadata)
                && p.labels().get(LABEL_INSTANCE).map(String::as_str) == Some(who.instance)
                && p.labels().get(LABEL_COLOR).map(String::as_str) == Some(who.color.as_str())
                && controller_uid(&p.metadata, "apps/", "ReplicaSet")
                    .is_some_and(|uid| replica_set_uids.contains(&uid))
        })
        .cloned()
        .collect()
}

/// The uid of the controller of `meta` when that controller is a `kind` of an API version
/// starting with `group` (`apps/`); `None` without one, or with another kind of controller.
fn controller_uid<'a>(meta: &'a ObjectMeta, group: &str, kind: &str) -> Option<&'a str> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .filter(|o| o.kind == kind && o.api_version.starts_with(group))
        .map(|o| o.uid.as_str())
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the colour `left` (being left) is drained, and what status should say about it.
pub(super) async fn drain_evidence(
    ctx: &Context,
    rd: &RelayerDeployment,
    ns: &str,
    left: Color,
) -> DrainEvidence {
    let (drained, note) = drain_of(ctx, rd, ns, left).await;
    DrainEvidence {
        color: left,
        drained,
        note,
    }
}

async fn drain_of(ctx: &Context, rd: &RelayerDeployment, ns: &str, left: Color) -> (bool, String) {
    let targets = PodTargets::new(ctx, rd, left, left.other());
    let old = targets.pods(left);
    let names: Vec<String> = old.iter().map(|p| p.name_any()).collect();
    let service = resources::service_name(rd);
    let listed = ctx
        .stores
        .slices
        .state()
        .into_iter()
        .filter(|sl| {
            sl.namespace().as_deref() == Some(ns)
                && sl.labels().get("kubernetes.io/service-name") == Some(&service)
        })
        .flat_map(|sl| sl.endpoints.clone().unwrap_or_default())
        .filter(|e| {
            e.target_ref
                .as_ref()
                .and_then(|t| t.name.as_ref())
                .is_some_and(|n| names.contains(n))
        })
        .count();
    if listed > 0 {
        return (
            false,
            format!(
                "waiting: the active Service's EndpointSlices still list {listed} pods of {left}"
            ),
        );
    }
    let reachable = targets.of(left, false);
    let with_ip = old
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
        .count();
    if reachable.len() < with_ip {
        return (
            false,
            format!(
                "waiting: {} pods of {left} are outside --pod-networks, so their drain cannot be read",
                with_ip - reachable.len()
            ),
        );
    }
    match runner::drain_evidence(&ctx.pod_requests, &reachable).await {
        Drain::Idle => (
            true,
            format!("{left} drained: no endpoints, requests or sagas left"),
        ),
        Drain::Busy(why) => (false, format!("waiting: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn owned(kind: &str, api_version: &str, uid: &str) -> serde_json::Value {
        json!([{ "apiVersion": api_version, "kind": kind, "name": "x", "uid": uid, "controller": true }])
    }

    fn object<K: serde::de::DeserializeOwned>(
        name: &str,
        uid: &str,
        owners: serde_json::Value,
    ) -> Arc<K> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {
                    "name": name, "namespace": "ns", "uid": uid, "ownerReferences": owners,
                    "labels": { LABEL_INSTANCE: "market", LABEL_COLOR: "blue" },
                },
            }))
            .expect("object"),
        )
    }

    #[test]
    fn only_pods_of_the_colours_own_replica_sets_count_whatever_their_labels() {
        let rd_uid = "rd-uid";
        let deployments: Vec<Arc<Deployment>> = vec![
            object(
                "market-blue",
                "d-uid",
                owned(
                    "RelayerDeployment",
                    "relayer.foresight.dev/v1alpha1",
                    rd_uid,
                ),
            ),
            // Same name in another namespace would not match; this one is another owner's.
            object(
                "market-green",
                "d2-uid",
                owned(
                    "RelayerDeployment",
                    "relayer.foresight.dev/v1alpha1",
                    "other",
                ),
            ),
        ];
        let replica_sets: Vec<Arc<ReplicaSet>> = vec![
            object(
                "market-blue-1",
                "rs-uid",
                owned("Deployment", "apps/v1", "d-uid"),
            ),
            object(
                "stranger-1",
                "rs2-uid",
                owned("Deployment", "apps/v1", "someone-else"),
            ),
        ];
        let pods: Vec<Arc<Pod>> = vec![
            object("good", "p1", owned("ReplicaSet", "apps/v1", "rs-uid")),
            object("bare", "p2", json!([])),
            object(
                "foreign-rs",
                "p3",
                owned("ReplicaSet", "apps/v1", "rs2-uid"),
            ),
            object(
                "unknown-rs",
                "p4",
                owned("ReplicaSet", "apps/v1", "missing"),
            ),
            object("job-owned", "p5", owned("Job", "batch/v1", "rs-uid")),
        ];
        let who = Owners {
            namespace: "ns",
            instance: "market",
            owner_uid: rd_uid,
            color: Color::Blue,
            deployment: "market-blue",
        };
        let names = |pods: Vec<Arc<Pod>>| pods.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(
            names(owned_pods(&who, &deployments, &replica_sets, &pods)),
            vec!["good"]
        );
        let foreign_deployment = Owners {
            deployment: "market-green",
            ..who
        };
        assert!(owned_pods(&foreign_deployment, &deployments, &replica_sets, &pods).is_empty());
        let green = Owners {
            color: Color::Green,
            deployment: "market-blue",
            ..who
        };
        assert!(
            owned_pods(&green, &deployments, &replica_sets, &pods).is_empty(),
            "labels still count"
        );
        let no_uid = Owners {
            owner_uid: "",
            ..who
        };
        assert!(owned_pods(&no_uid, &deployments, &replica_sets, &pods).is_empty());
    }
}
