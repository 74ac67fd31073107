//! The HorizontalPodAutoscaler `<name>`, targeting the RelayerDeployment's scale subresource
//! (never a colour's Deployment, so a cutover cannot strand it on the old colour).
//!
//! May use: [`super`] (names, labels, selectors) and [`crate::crd`]; no I/O.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{Resource, ResourceExt};

use super::{child_meta, common_labels};
use crate::crd::RelayerDeployment;

/// Pods metric read for requests per second (served by a custom metrics adapter, e.g. a
/// prometheus-adapter rule over `foresight_http_requests_total`).
pub const RPS_METRIC: &str = "foresight_http_requests_per_second";

/// The HPA of `rd`, or `None` when autoscaling is off.
pub fn hpa(rd: &RelayerDeployment) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = rd.spec.autoscaling.as_ref()?;
    let resource = |name: &str, percent: i32| MetricSpec {
        type_: "Resource".to_owned(),
        resource: Some(ResourceMetricSource {
            name: name.to_owned(),
            target: MetricTarget {
                type_: "Utilization".to_owned(),
                average_utilization: Some(percent),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    let mut metrics = Vec::new();
    if let Some(cpu) = autoscaling.target_cpu_utilization_percentage {
        metrics.push(resource("cpu", cpu));
    }
    if let Some(memory) = autoscaling.target_memory_utilization_percentage {
        metrics.push(resource("memory", memory));
    }
    if let Some(rps) = autoscaling.target_requests_per_second {
        metrics.push(MetricSpec {
            type_: "Pods".to_owned(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: RPS_METRIC.to_owned(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".to_owned(),
                    average_value: Some(Quantity(canonical_quantity(i64::from(rps)))),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    // NB: the scale-down select policy is always written (the user's, or the API's default
    // `Max`), so that lifting a cutover's hold is a visible difference to apply.
    let mut behavior = autoscaling.behavior.clone().unwrap_or_default();
    let scale_down = behavior.scale_down.get_or_insert_with(Default::default);
    if scale_down.select_policy.is_none() {
        scale_down.select_policy = Some("Max".to_owned());
    }
    Some(HorizontalPodAutoscaler {
        metadata: child_meta(rd, rd.name_any(), common_labels(rd)),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(RelayerDeployment::api_version(&()).into_owned()),
                kind: RelayerDeployment::kind(&()).into_owned(),
                name: rd.name_any(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            behavior: Some(behavior),
        },
        status: None,
    })
}

/// `hpa` with its scale-down disabled (`behavior.scaleDown.selectPolicy: Disabled`), so the
/// autoscaler cannot shrink the RelayerDeployment while a cutover is in flight. Scale-up
/// keeps working.
pub fn hold_scale_down(mut hpa: HorizontalPodAutoscaler) -> HorizontalPodAutoscaler {
    let behavior = hpa.spec.behavior.get_or_insert_with(Default::default);
    let scale_down = behavior.scale_down.get_or_insert_with(Default::default);
    scale_down.select_policy = Some("Disabled".to_owned());
    hpa
}

/// `n` in the API server's canonical decimal form (`1000` is stored as `1k`), so the desired
/// HPA compares equal to the stored one and an idle resync does not re-apply it.
pub fn canonical_quantity(n: i64) -> String {
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    let (mut mantissa, mut exponent) = (n, 0);
    while mantissa != 0 && mantissa % 1000 == 0 && exponent + 1 < SUFFIXES.len() {
        mantissa /= 1000;
        exponent += 1;
    }
    format!("{mantissa}{}", SUFFIXES[exponent])
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantities_are_written_the_way_the_api_server_stores_them() {
        assert_eq!(canonical_quantity(1000), "1k");
        assert_eq!(canonical_quantity(1500), "1500");
        assert_eq!(canonical_quantity(2_000_000), "2M");
        assert_eq!(canonical_quantity(7), "7");
        assert_eq!(canonical_quantity(0), "0");
    }

    use super::super::fixtures::{rd, rd_with};
    use super::*;
    use crate::crd::AutoscalingSpec;

    #[test]
    fn no_autoscaling_means_no_hpa() {
        assert!(hpa(&rd()).is_none());
    }

    #[test]
    fn hpa_targets_the_relayer_deployment_with_cpu_memory_and_rps() {
        let rd = rd_with(|s| {
            s.autoscaling = Some(AutoscalingSpec {
                target_requests_per_second: Some(1000),
                ..AutoscalingSpec::default()
            })
        });
        let spec = hpa(&rd).map(|h| h.spec).expect("hpa spec");
        assert_eq!(spec.scale_target_ref.kind, "RelayerDeployment");
        assert_eq!(
            spec.scale_target_ref.api_version.as_deref(),
            Some("relayer.foresight.dev/v1alpha1")
        );
        assert_eq!(spec.scale_target_ref.name, "market");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(3), 20));
        let metrics = spec.metrics.expect("metrics");
        let kinds: Vec<&str> = metrics.iter().map(|m| m.type_.as_str()).collect();
        assert_eq!(kinds, ["Resource", "Resource", "Pods"]);
        let pods = metrics[2].pods.as_ref().expect("pods metric");
        assert_eq!(pods.metric.name, RPS_METRIC);
        assert_eq!(pods.target.average_value, Some(Quantity("1k".into())));
    }

    #[test]
    fn rps_metric_is_left_out_when_not_set() {
        let rd = rd_with(|s| s.autoscaling = Some(AutoscalingSpec::default()));
        let metrics = hpa(&rd).and_then(|h| h.spec.metrics);
        assert_eq!(metrics.map(|m| m.len()), Some(2));
    }
}
