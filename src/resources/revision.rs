//! The ControllerRevision `<name>-<revision>`: the pod template and config of one revision, so
//! that a rollback restores exactly what ran.
//!
//! May use: [`super`] (names, labels, selectors) and [`crate::crd`]; no I/O.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt;
use serde_json::json;

use super::{
    LABEL_COLOR, LABEL_REVISION, Plan, child_meta, common_labels, config_map_name, deployment,
};
use crate::Result;
use crate::crd::{RelayerDeployment, RevisionRecord};

/// Annotation of a ControllerRevision with the autoscaling settings last used with it (JSON;
/// `null` for none). Data is immutable; these settings are not part of the revision hash, so
/// they live here and follow the spec while the revision is the current one.
pub const ANNOTATION_AUTOSCALING: &str = "relayer.foresight.dev/autoscaling";

/// `<name>-<revision hash>`.
pub fn controller_revision_name(rd: &RelayerDeployment, revision: &str) -> String {
    format!("{}-{revision}", rd.name_any())
}

/// The ControllerRevision of the plan's revision: image, pod template, config and ConfigMap.
pub fn controller_revision(rd: &RelayerDeployment, plan: &Plan) -> Result<ControllerRevision> {
    let mut template = deployment(rd, plan.active, &plan.revision)?.spec.template;
    // NB: a revision is colour-free (it may run on either colour later) and its data is
    // immutable, so the colour label is left out and added back when the template is used.
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(LABEL_COLOR);
    }
    let mut labels = common_labels(rd);
    labels.insert(LABEL_REVISION.to_owned(), plan.revision.clone());
    let mut metadata = child_meta(rd, controller_revision_name(rd, &plan.revision), labels);
    let autoscaling =
        serde_json::to_string(&rd.spec.autoscaling).map_err(|source| crate::Error::Render {
            what: "autoscaling annotation",
            source,
        })?;
    metadata.annotations = Some(std::collections::BTreeMap::from([(
        ANNOTATION_AUTOSCALING.to_owned(),
        autoscaling,
    )]));
    let mut data = json!({
        "image": rd.spec.image,
        "pod": rd.spec.pod,
        "config": rd.spec.config,
        "configMap": config_map_name(rd)?,
        "template": template,
    });
    // NB: data is immutable, so it holds exactly what the revision hash covers: no store or
    // secrets when there are none (revisions written before they existed stay equal), and not
    // the acceptance of a state loss (which is no revision).
    if let Some(store) = &rd.spec.store {
        let mut store = store.clone();
        store.accept_state_loss = false;
        data["store"] = json!(store);
    }
    if rd.spec.secrets != crate::crd::SecretsSpec::default() {
        data["secrets"] = json!(rd.spec.secrets);
    }
    if let Some(anti_affinity) = &rd.spec.strategy.blue_green.anti_affinity {
        data["antiAffinity"] = json!(anti_affinity);
    }
    Ok(ControllerRevision {
        metadata,
        data: RawExtension(data),
        revision: Some(plan.revision_number),
    })
}

/// Revision records of the known ControllerRevisions, newest first (for `status.revisionHistory`).
pub fn history(revisions: &[Arc<ControllerRevision>]) -> Vec<RevisionRecord> {
    let mut records: Vec<RevisionRecord> = revisions
        .iter()
        .filter_map(|r| {
            Some(RevisionRecord {
                revision: r.labels().get(LABEL_REVISION)?.clone(),
                number: r.revision.unwrap_or(0),
                image: r.data.0.get("image")?.as_str()?.to_owned(),
            })
        })
        .collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.number));
    records
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::rd;
    use super::super::revision_hash;
    use super::*;
    use crate::crd::Color;

    #[test]
    fn controller_revision_keeps_template_and_config() {
        let rd = rd();
        let plan = Plan {
            active: Color::Blue,
            revision: revision_hash(&rd).expect("hash"),
            revision_number: 4,
        };
        let cr = controller_revision(&rd, &plan).expect("revision");
        assert_eq!(cr.metadata.name, Some(format!("market-{}", plan.revision)));
        assert_eq!(cr.revision, Some(4));
        let data = cr.data.0;
        assert_eq!(data["image"], "ghcr.io/foresight/relayer:1.0.0");
        assert_eq!(data["config"]["listen"], "0.0.0.0:3000");
        assert_eq!(
            data["template"]["metadata"]["labels"][LABEL_REVISION],
            json!(plan.revision)
        );
    }

    #[test]
    fn a_revision_keeps_the_store_and_secret_references_and_a_bundle_restores_them() {
        use crate::crd::{SecretKeyRef, SecretsSpec};
        use crate::resources::{Bundle, revision_hash};
        let rd = crate::resources::fixtures::rd_with(|s| {
            s.secrets = SecretsSpec {
                admin_token: Some(SecretKeyRef {
                    name: "admin".into(),
                    key: "token".into(),
                }),
                settlement_credential: None,
            };
        });
        assert_ne!(
            revision_hash(&rd).expect("hash"),
            revision_hash(&crate::resources::fixtures::rd()).expect("hash"),
            "a secret reference is part of the revision"
        );
        let plan = Plan {
            active: Color::Blue,
            revision: revision_hash(&rd).expect("hash"),
            revision_number: 1,
        };
        let cr = controller_revision(&rd, &plan).expect("revision");
        let bundle = Bundle::from_revision(&cr).expect("bundle");
        assert_eq!(bundle.store, rd.spec.store);
        assert_eq!(bundle.secrets, rd.spec.secrets);
        let restored = bundle.apply_to(&crate::resources::fixtures::rd(), 3);
        assert_eq!(restored.spec.secrets, rd.spec.secrets);
    }

    #[test]
    fn anti_affinity_is_part_of_the_revision_and_a_bundle_restores_it() {
        use crate::crd::{AntiAffinity, RequiredAntiAffinity};
        use crate::resources::{Bundle, revision_hash};
        let plain = crate::resources::fixtures::rd();
        let apart = crate::resources::fixtures::rd_with(|s| {
            s.strategy.blue_green.anti_affinity = Some(AntiAffinity {
                preferred: None,
                required: Some(RequiredAntiAffinity {}),
                topology_key: "kubernetes.io/hostname".into(),
            });
        });
        assert_ne!(
            revision_hash(&apart).expect("hash"),
            revision_hash(&plain).expect("hash"),
            "a change of it rolls out as a cutover"
        );
        let plan = Plan {
            active: Color::Blue,
            revision: revision_hash(&apart).expect("hash"),
            revision_number: 2,
        };
        let cr = controller_revision(&apart, &plan).expect("revision");
        let bundle = Bundle::from_revision(&cr).expect("bundle");
        assert_eq!(
            bundle.anti_affinity,
            apart.spec.strategy.blue_green.anti_affinity
        );
        let as_run = bundle.apply_to(&plain, 3);
        assert_eq!(
            as_run.spec.strategy.blue_green.anti_affinity,
            apart.spec.strategy.blue_green.anti_affinity,
            "the revision's pods keep their rule whatever the spec says now"
        );
        let without = Bundle::from_revision(
            &controller_revision(
                &plain,
                &Plan {
                    revision: revision_hash(&plain).expect("hash"),
                    ..plan
                },
            )
            .expect("revision"),
        )
        .expect("bundle");
        assert_eq!(without.anti_affinity, None);
    }
}
