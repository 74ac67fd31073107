//! The pods of one colour as the cutover sees them: [`PodTargets`] (the ready pods inside
//! `--pod-networks`, as gate targets) and the drain evidence of a colour being left
//! (EndpointSlices first, then each pod's in-flight and saga gauges).
//!
//! May use: [`super::super::Context`] (caches, config), [`crate::gates::runner`],
//! [`crate::resources`], [`crate::crd`].

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::super::{Context, Network};
use super::decide::DrainEvidence;
use crate::crd::{Color, RelayerDeployment};
use crate::gates::runner::{self, Drain, Target, Targets};
use crate::resources::{self, LABEL_COLOR, LABEL_INSTANCE};

/// Pods of one colour, as gate and drain targets.
pub(super) struct PodTargets {
    pub(super) pods: kube::runtime::reflector::Store<Pod>,
    pub(super) namespace: String,
    pub(super) instance: String,
    pub(super) under_test: Color,
    pub(super) active: Color,
    pub(super) port: u16,
    pub(super) networks: Vec<Network>,
}

impl PodTargets {
    fn of(&self, color: Color, ready_only: bool) -> Vec<Target> {
        pods_of(&self.pods, &self.namespace, &self.instance, color)
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
}

impl Targets for PodTargets {
    fn under_test(&self) -> Vec<Target> {
        self.of(self.under_test, true)
    }

    fn active(&self) -> Vec<Target> {
        self.of(self.active, true)
    }
}

fn pods_of(
    pods: &kube::runtime::reflector::Store<Pod>,
    ns: &str,
    instance: &str,
    color: Color,
) -> Vec<Arc<Pod>> {
    pods.state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(ns)
                && p.labels().get(LABEL_INSTANCE).map(String::as_str) == Some(instance)
                && p.labels().get(LABEL_COLOR).map(String::as_str) == Some(color.as_str())
        })
        .collect()
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
    let old = pods_of(&ctx.stores.pods, ns, &rd.name_any(), left);
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
    let port = resources::container_port(rd)
        .ok()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(3000);
    let targets = PodTargets {
        pods: ctx.stores.pods.clone(),
        namespace: ns.to_owned(),
        instance: rd.name_any(),
        under_test: left,
        active: left.other(),
        port,
        networks: ctx.config.pod_networks.clone(),
    };
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
    match runner::drain_evidence(&reachable).await {
        Drain::Idle => (
            true,
            format!("{left} drained: no endpoints, requests or sagas left"),
        ),
        Drain::Busy(why) => (false, format!("waiting: {why}")),
    }
}
