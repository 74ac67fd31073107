//! The PodDisruptionBudget `<name>` over the pods of both colours.
//!
//! May use: [`super`] (names, labels, selectors) and [`crate::crd`]; no I/O.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{child_meta, common_labels, instance_selector};
use crate::crd::RelayerDeployment;

/// At most one relayer pod is voluntarily evicted at a time: a drain never takes more than one
/// pod's share of capacity, yet a single-pod relayer can still be evicted.
const MAX_UNAVAILABLE: i32 = 1;

/// The PDB of `rd`.
pub fn pdb(rd: &RelayerDeployment) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: child_meta(rd, rd.name_any(), common_labels(rd)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(MAX_UNAVAILABLE)),
            selector: Some(LabelSelector {
                match_labels: Some(instance_selector(rd)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::rd;
    use super::super::{LABEL_COLOR, LABEL_INSTANCE};
    use super::*;

    #[test]
    fn pdb_covers_both_colours_of_the_instance() {
        let spec = pdb(&rd()).spec.expect("spec");
        let labels = spec.selector.and_then(|s| s.match_labels).expect("labels");
        assert_eq!(labels[LABEL_INSTANCE], "market");
        assert!(!labels.contains_key(LABEL_COLOR));
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    }
}
