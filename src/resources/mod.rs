//! Pure builders of every child object of a `RelayerDeployment`.
//!
//! Each function takes the RelayerDeployment (and the [`Plan`] the controller decided on) and
//! returns the object to server-side apply; none does I/O. Names are deterministic, so applying
//! the same plan twice addresses the same objects.
//!
//! May use: [`crate::crd`]; [`status`] also reads [`crate::rollout::State`].

mod config;
mod deployment;
mod hpa;
mod ingress;
mod pdb;
mod revision;
mod service;
pub mod status;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::{Color, RelayerDeployment};
use crate::{Error, Result};

pub use config::{
    CONFIG_FILE, CONFIG_MOUNT, REDIS_CA_FILE, REDIS_CA_MOUNT, config_map, config_map_name,
    effective_config, render_config,
};
pub use deployment::{check_pod_env, container_port, deployment, deployment_name};
pub use hpa::{RPS_METRIC, hold_scale_down, hpa};
pub use ingress::{HostPattern, check_hosts, ingress};
pub use pdb::pdb;
pub use revision::{
    ANNOTATION_AUTOSCALING, controller_revision, controller_revision_name, history,
};
pub use service::{
    DEFAULT_SERVICE_TYPES, check_service_type, parse_service_type, preview_service,
    preview_service_name, service, service_name, service_type_name,
};

/// Field manager of every server-side apply the operator makes.
pub const MANAGER: &str = "relayer-operator";

/// `app.kubernetes.io/name` of every object: the application.
pub const APP_NAME: &str = "relayer";
/// Label with the instance (the RelayerDeployment's name).
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Label with the application name.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label naming the operator as the manager; the controller's watches select on it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label with the colour of a Deployment and its pods.
pub const LABEL_COLOR: &str = "relayer.foresight.dev/color";
/// Label with the revision hash of pods, ConfigMaps and ControllerRevisions.
pub const LABEL_REVISION: &str = "relayer.foresight.dev/revision";
/// Label with the config hash of a ConfigMap.
pub const LABEL_CONFIG_HASH: &str = "relayer.foresight.dev/config-hash";
/// Label selector of everything the operator manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=relayer-operator";

/// What the controller decided this reconcile should realise: the spec's revision and the
/// colour it runs on. The builders take the colour and revision from here rather than from the
/// spec, so the cutover ([`crate::rollout::layout`]) can run an older revision on one colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Colour the active Service selects.
    pub active: Color,
    /// Revision hash of the spec's template plus config.
    pub revision: String,
    /// Ordinal of that revision (its ControllerRevision's `revision`).
    pub revision_number: i64,
}

/// What one revision runs and how it scales: the whole bundle a rollback restores.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// Container image.
    pub image: String,
    /// Pod overrides.
    #[serde(default)]
    pub pod: crate::crd::PodOverrides,
    /// Relayer config.
    #[serde(default)]
    pub config: relayer::config::RelayerConfig,
    /// Autoscaling settings last used with this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<crate::crd::AutoscalingSpec>,
    /// The store (references to Secrets, never their values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<crate::crd::StoreSpec>,
    /// The Secrets the pods read (references, never values).
    #[serde(default)]
    pub secrets: crate::crd::SecretsSpec,
    /// How its pods keep apart from the other colour's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<crate::crd::AntiAffinity>,
}

impl Bundle {
    /// The bundle the spec asks for.
    pub fn of(rd: &RelayerDeployment) -> Self {
        Self {
            image: rd.spec.image.clone(),
            pod: rd.spec.pod.clone(),
            config: rd.spec.config.clone(),
            autoscaling: rd.spec.autoscaling.clone(),
            store: rd.spec.store.clone(),
            secrets: rd.spec.secrets.clone(),
            anti_affinity: rd.spec.strategy.blue_green.anti_affinity.clone(),
        }
    }

    /// The bundle a ControllerRevision kept (template and config from its data, autoscaling
    /// from its annotation); `None` when its data is not one.
    pub fn from_revision(cr: &k8s_openapi::api::apps::v1::ControllerRevision) -> Option<Self> {
        let mut bundle: Bundle = serde_json::from_value(cr.data.0.clone()).ok()?;
        bundle.autoscaling = cr
            .annotations()
            .get(ANNOTATION_AUTOSCALING)
            .and_then(|a| serde_json::from_str(a).ok())
            .flatten();
        Some(bundle)
    }

    /// `rd` as if its spec ran this bundle at `replicas` pods, for the builders.
    pub fn apply_to(&self, rd: &RelayerDeployment, replicas: i32) -> RelayerDeployment {
        let mut rd = rd.clone();
        rd.spec.image = self.image.clone();
        rd.spec.pod = self.pod.clone();
        rd.spec.config = self.config.clone();
        rd.spec.store = self.store.clone();
        rd.spec.secrets = self.secrets.clone();
        rd.spec.strategy.blue_green.anti_affinity = self.anti_affinity.clone();
        rd.spec.replicas = replicas;
        rd
    }
}

/// Every desired child of one RelayerDeployment for one [`Plan`].
#[derive(Debug, Clone)]
pub struct Children {
    /// The ConfigMap with the rendered relayer config.
    pub config_map: k8s_openapi::api::core::v1::ConfigMap,
    /// The active colour's Deployment.
    pub deployment: k8s_openapi::api::apps::v1::Deployment,
    /// The active Service (`<name>`).
    pub service: k8s_openapi::api::core::v1::Service,
    /// The preview Service (`<name>-preview`).
    pub preview_service: k8s_openapi::api::core::v1::Service,
    /// The HorizontalPodAutoscaler, when autoscaling is on.
    pub hpa: Option<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
    /// The Ingress, when one is asked for.
    pub ingress: Option<k8s_openapi::api::networking::v1::Ingress>,
    /// The PodDisruptionBudget.
    pub pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget,
    /// The ControllerRevision of the plan's revision.
    pub revision: k8s_openapi::api::apps::v1::ControllerRevision,
}

/// Builds every desired child.
pub fn children(rd: &RelayerDeployment, plan: &Plan) -> Result<Children> {
    Ok(Children {
        config_map: config_map(rd)?,
        deployment: deployment(rd, plan.active, &plan.revision)?,
        service: service(rd, plan.active),
        preview_service: service::preview_service(rd, plan.active.other()),
        hpa: hpa(rd),
        ingress: ingress(rd),
        pdb: pdb(rd),
        revision: controller_revision(rd, plan)?,
    })
}

/// Revision hash of a spec: everything that changes what a pod runs (image, pod overrides,
/// config, listen port), not what scales or routes it. 10 hex characters.
pub fn revision_hash(rd: &RelayerDeployment) -> Result<String> {
    #[derive(Serialize)]
    struct Revisioned<'a> {
        image: &'a str,
        pod: &'a crate::crd::PodOverrides,
        config: &'a relayer::config::RelayerConfig,
        // NB: skipped when absent, so revisions from before the store and the secrets were in
        // the API keep their hashes.
        #[serde(skip_serializing_if = "Option::is_none")]
        store: Option<&'a crate::crd::StoreSpec>,
        #[serde(skip_serializing_if = "Option::is_none")]
        secrets: Option<&'a crate::crd::SecretsSpec>,
        #[serde(skip_serializing_if = "Option::is_none")]
        anti_affinity: Option<&'a crate::crd::AntiAffinity>,
    }
    let secrets = &rd.spec.secrets;
    // NB: accepting a loss of state permits a cutover; it is not one.
    let store = rd.spec.store.clone().map(|mut s| {
        s.accept_state_loss = false;
        s
    });
    short_hash(&Revisioned {
        image: &rd.spec.image,
        pod: &rd.spec.pod,
        config: &rd.spec.config,
        store: store.as_ref(),
        secrets: (secrets != &crate::crd::SecretsSpec::default()).then_some(secrets),
        anti_affinity: rd.spec.strategy.blue_green.anti_affinity.as_ref(),
    })
}

/// First 10 hex characters of the SHA-256 of `value`'s JSON (field order is fixed by the
/// types, maps are ordered, so equal values hash equally).
fn short_hash<T: Serialize>(value: &T) -> Result<String> {
    let json = serde_json::to_vec(value).map_err(|source| Error::Render {
        what: "hash input",
        source,
    })?;
    let digest = Sha256::digest(&json);
    Ok(hex::encode(&digest[..5]))
}

/// Labels of every child: `app.kubernetes.io/*` with the instance.
pub fn common_labels(rd: &RelayerDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), APP_NAME.to_owned()),
        (LABEL_INSTANCE.to_owned(), rd.name_any()),
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "relayer".to_owned(),
        ),
        (
            "app.kubernetes.io/part-of".to_owned(),
            "foresight".to_owned(),
        ),
    ])
}

/// Labels that select the pods of one instance (both colours).
pub fn instance_selector(rd: &RelayerDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), APP_NAME.to_owned()),
        (LABEL_INSTANCE.to_owned(), rd.name_any()),
    ])
}

/// Labels that select the pods of one colour.
pub fn color_selector(rd: &RelayerDeployment, color: Color) -> BTreeMap<String, String> {
    let mut labels = instance_selector(rd);
    labels.insert(LABEL_COLOR.to_owned(), color.as_str().to_owned());
    labels
}

/// `k=v,k=v` form of a label map, as the scale subresource's `status.selector` wants it.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Metadata of a child: name, namespace, labels and the controller owner reference.
fn child_meta(
    rd: &RelayerDeployment,
    name: String,
    labels: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: rd.namespace(),
        labels: Some(labels),
        owner_references: owner_reference(rd).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The controller owner reference to `rd` (none before the API server has given it a uid).
fn owner_reference(rd: &RelayerDeployment) -> Option<OwnerReference> {
    let mut owner = rd.controller_owner_ref(&())?;
    owner.block_owner_deletion = Some(true);
    Some(owner)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use kube::api::ObjectMeta;
    use serde_json::json;

    use crate::crd::{RelayerDeployment, RelayerDeploymentSpec};

    /// A RelayerDeployment as the API server would return it (defaults filled, uid set).
    pub fn rd() -> RelayerDeployment {
        let spec: RelayerDeploymentSpec = serde_json::from_value(json!({
            "image": "ghcr.io/foresight/relayer:1.0.0",
            "store": { "redis": { "url": "redis://redis:6379/0" } },
        }))
        .expect("fixture spec");
        let mut rd = RelayerDeployment::new("market", spec);
        rd.metadata = ObjectMeta {
            name: Some("market".into()),
            namespace: Some("trading".into()),
            uid: Some("0b4c-uid".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        rd
    }

    /// [`rd`] with a spec patched by `f`.
    pub fn rd_with(f: impl FnOnce(&mut RelayerDeploymentSpec)) -> RelayerDeployment {
        let mut rd = rd();
        f(&mut rd.spec);
        rd
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{rd, rd_with};
    use super::*;

    /// An object written before `spec.store` and `spec.secrets` existed keeps its revision
    /// and its ConfigMap after an operator upgrade (else every upgrade would restart or cut
    /// over every RelayerDeployment, and re-write immutable ControllerRevisions). The values
    /// were computed by the operator of the previous release for this spec.
    #[test]
    fn an_object_from_before_the_store_was_in_the_api_keeps_its_revision_and_config_map() {
        let spec: crate::crd::RelayerDeploymentSpec = serde_json::from_value(serde_json::json!({
            "image": "ghcr.io/foresight/relayer:1.0.0",
            "config": { "settlement": { "url": "https://settle.example/settle" } },
        }))
        .expect("spec");
        let mut rd = RelayerDeployment::new("market", spec);
        rd.metadata.namespace = Some("trading".into());
        assert_eq!(revision_hash(&rd).expect("hash"), "aa5f7c7fa0");
        assert_eq!(
            config_map_name(&rd).expect("name"),
            "market-config-ccca28c67c"
        );
        let plan = Plan {
            active: Color::Blue,
            revision: "aa5f7c7fa0".into(),
            revision_number: 1,
        };
        let data = controller_revision(&rd, &plan).expect("revision").data.0;
        let keys: Vec<&String> = data.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["config", "configMap", "image", "pod", "template"]);
    }

    #[test]
    fn accepting_a_state_loss_is_no_revision() {
        let base = revision_hash(&rd()).expect("hash");
        let accepting = rd_with(|s| {
            if let Some(store) = s.store.as_mut() {
                store.accept_state_loss = true;
            }
        });
        assert_eq!(base, revision_hash(&accepting).expect("hash"));
    }

    #[test]
    fn revision_hash_is_stable_and_follows_what_pods_run() {
        let base = revision_hash(&rd()).expect("hash");
        assert_eq!(base.len(), 10);
        assert_eq!(base, revision_hash(&rd()).expect("hash"), "deterministic");
        let scaled = rd_with(|s| s.replicas = 7);
        assert_eq!(
            base,
            revision_hash(&scaled).expect("hash"),
            "scale is not a revision"
        );
        let new_image = rd_with(|s| s.image = "ghcr.io/foresight/relayer:1.0.1".into());
        assert_ne!(base, revision_hash(&new_image).expect("hash"));
        let new_config = rd_with(|s| s.config.limits.request_timeout_ms = 5_000);
        assert_ne!(base, revision_hash(&new_config).expect("hash"));
    }

    #[test]
    fn every_child_carries_the_owner_reference_and_common_labels() {
        let rd = rd();
        let plan = Plan {
            active: Color::Blue,
            revision: revision_hash(&rd).expect("hash"),
            revision_number: 1,
        };
        let c = children(&rd, &plan).expect("children");
        let metas = [
            &c.config_map.metadata,
            &c.deployment.metadata,
            &c.service.metadata,
            &c.preview_service.metadata,
            &c.pdb.metadata,
            &c.revision.metadata,
        ];
        for meta in metas {
            let owner = &meta.owner_references.as_ref().expect("owner refs")[0];
            assert_eq!(owner.kind, "RelayerDeployment");
            assert_eq!(owner.name, "market");
            assert_eq!(owner.uid, "0b4c-uid");
            assert_eq!(owner.controller, Some(true));
            let labels = meta.labels.as_ref().expect("labels");
            assert_eq!(labels[LABEL_INSTANCE], "market");
            assert_eq!(labels[LABEL_MANAGED_BY], MANAGER);
            assert_eq!(meta.namespace.as_deref(), Some("trading"));
        }
    }

    #[test]
    fn selector_string_is_sorted_key_value_pairs() {
        assert_eq!(
            selector_string(&color_selector(&rd(), Color::Green)),
            "app.kubernetes.io/instance=market,app.kubernetes.io/name=relayer,relayer.foresight.dev/color=green"
        );
    }
}
