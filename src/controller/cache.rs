//! What the controller's caches keep of each kind ([`Trim`]): every watch trims its objects
//! before they are cached, and the comparison of a desired child with the cached one (`ensure`
//! in the private `apply` module) trims the desired object the same way first, so a trimmed
//! field can neither be read nor make a converged child look changed.
//!
//! A field is trimmed only when nothing in the controller reads it from a cached object (the
//! comment of each impl names the readers of what stays). Managed fields go everywhere: they
//! are never read and are most of an object's bytes.
//!
//! May use: [`crate::crd`] only.

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{Resource, ResourceExt};

use crate::crd::RelayerDeployment;

/// kubectl's copy of an object as last applied by hand (`kubectl apply` without
/// `--server-side`).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object as the controller caches it.
pub trait Trim: Resource + Sized {
    /// Removes what the controller never reads of a cached object of this kind.
    fn trim(&mut self) {
        self.managed_fields_mut().clear();
        self.trim_kind();
    }

    /// What this kind drops besides the managed fields; nothing unless said.
    fn trim_kind(&mut self) {}
}

// Whole (but the managed fields): children compared with their desired objects, and read
// beyond their metadata (Deployment and HPA status, EndpointSlice endpoints).
impl Trim for Deployment {}
impl Trim for Service {}
impl Trim for ConfigMap {}
impl Trim for HorizontalPodAutoscaler {}
impl Trim for Ingress {}
impl Trim for PodDisruptionBudget {}
impl Trim for EndpointSlice {}

/// Without kubectl's [`LAST_APPLIED`] copy of the spec. NB: of the annotations a reconcile reads
/// only the cutover commands, and the one write of a whole object, a rollback's replace, is
/// made from a fresh read, never from the cache (`cutover::needs_fresh_read`).
impl Trim for RelayerDeployment {
    fn trim_kind(&mut self) {
        if let Some(annotations) = self.metadata.annotations.as_mut() {
            annotations.remove(LAST_APPLIED);
        }
    }
}

/// Metadata (name, uid, labels, controller reference, deletion), `status.podIP` and
/// `status.conditions`: what the cutover's `pods` module reads. NB: the spec and the container
/// statuses are most of a pod's bytes; the operator never writes a pod.
impl Trim for Pod {
    fn trim_kind(&mut self) {
        self.spec = None;
        self.status = self.status.take().map(|status| PodStatus {
            pod_ip: status.pod_ip,
            conditions: status.conditions,
            ..PodStatus::default()
        });
    }
}

/// Metadata and the small rest of the spec, without its pod template: only the uid and the
/// controller reference are read (which Deployment a pod's ReplicaSet belongs to). The
/// operator never writes a ReplicaSet.
impl Trim for ReplicaSet {
    fn trim_kind(&mut self) {
        self.spec.template = None;
        self.status = None;
    }
}

/// Without `data.template`, the pod template of the revision (half of its data). What is read
/// stays: the rest of `data` (the bundle a rollback restores and the other colour runs,
/// `configMap` for pruning, `image` for the history), labels, annotations and `revision`.
/// NB: `data` is immutable in the API server, so a desired revision whose template differs
/// from the stored one (same name, same hash) could not be written anyway.
impl Trim for ControllerRevision {
    fn trim_kind(&mut self) {
        if let Some(data) = self.data.0.as_object_mut() {
            data.remove("template");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_trimmed_pod_keeps_its_metadata_address_and_conditions_only() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "market-blue-1", "namespace": "ns", "uid": "p1",
                "labels": { "app.kubernetes.io/instance": "market" },
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "r1",
                    "controller": true,
                }],
                "managedFields": [{ "manager": "kube-controller-manager" }],
            },
            "spec": { "containers": [{ "name": "relayer", "image": "relayer:1" }] },
            "status": {
                "phase": "Running", "podIP": "10.244.0.7",
                "conditions": [{ "type": "Ready", "status": "True" }],
                "containerStatuses": [{
                    "name": "relayer", "image": "relayer:1", "imageID": "", "ready": true,
                    "restartCount": 0,
                }],
            },
        }))
        .expect("pod");
        let metadata = pod.metadata.clone();
        pod.trim();
        assert_eq!(pod.spec, None);
        assert_eq!(pod.metadata.managed_fields, Some(Vec::new()));
        assert_eq!(pod.metadata.owner_references, metadata.owner_references);
        assert_eq!(pod.metadata.labels, metadata.labels);
        let status = pod.status.expect("status");
        assert_eq!(status.pod_ip.as_deref(), Some("10.244.0.7"));
        assert_eq!(status.conditions.map(|c| c.len()), Some(1));
        assert_eq!(status.container_statuses, None);
        assert_eq!(status.phase, None);
    }

    #[test]
    fn a_trimmed_revision_keeps_the_bundle_and_a_relayerdeployment_its_commands() {
        let mut cr: ControllerRevision = serde_json::from_value(json!({
            "metadata": { "name": "market-abc", "labels": { "relayer.foresight.dev/revision": "abc" } },
            "data": {
                "image": "relayer:1", "configMap": "market-config-1", "config": {},
                "template": { "spec": { "containers": [] } },
            },
            "revision": 3,
        }))
        .expect("revision");
        cr.trim();
        assert_eq!(
            cr.data.0,
            json!({ "image": "relayer:1", "configMap": "market-config-1", "config": {} })
        );
        assert_eq!(cr.revision, Some(3));

        let mut rd = crate::resources::fixtures::rd();
        rd.metadata.annotations = Some(
            [
                (LAST_APPLIED, "{\"spec\":{}}"),
                ("relayer.foresight.dev/command", "promote"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let spec = rd.spec.clone();
        rd.trim();
        let annotations = rd.metadata.annotations.expect("annotations");
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["relayer.foresight.dev/command"]
        );
        assert_eq!(rd.spec, spec);
    }
}
