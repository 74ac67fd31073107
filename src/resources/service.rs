//! The active Service `<name>` and the preview Service `<name>-preview`, selecting by colour;
//! and the operator's restriction of the active Service's type ([`check_service_type`]).
//!
//! May use: [`super`] (names, labels, selectors) and [`crate::crd`]; no I/O.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{child_meta, color_selector, common_labels};
use crate::crd::{Color, RelayerDeployment, ServiceType};

/// `<name>`: the Service clients use.
pub fn service_name(rd: &RelayerDeployment) -> String {
    rd.name_any()
}

/// `<name>-preview`: the Service of the colour under test.
pub fn preview_service_name(rd: &RelayerDeployment) -> String {
    format!("{}-preview", rd.name_any())
}

/// The Service types a RelayerDeployment may ask for unless the operator is told otherwise
/// (`--allowed-service-types`): no LoadBalancer, which would expose the relayer outside the
/// cluster (and cost money) on the word of whoever may write a RelayerDeployment.
pub const DEFAULT_SERVICE_TYPES: [ServiceType; 2] = [ServiceType::ClusterIP, ServiceType::NodePort];

/// The Kubernetes name of a Service type.
pub fn service_type_name(type_: ServiceType) -> &'static str {
    match type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    }
}

/// A Service type by its Kubernetes name (`ClusterIP`, `NodePort`, `LoadBalancer`; any case).
pub fn parse_service_type(s: &str) -> Result<ServiceType, String> {
    [
        ServiceType::ClusterIP,
        ServiceType::NodePort,
        ServiceType::LoadBalancer,
    ]
    .into_iter()
    .find(|t| service_type_name(*t).eq_ignore_ascii_case(s.trim()))
    .ok_or_else(|| format!("{s:?} is not a Service type (ClusterIP, NodePort, LoadBalancer)"))
}

/// Whether `spec.service.type` is one of `allowed`; the error names the type and the allowed
/// set. (The preview Service is always ClusterIP.)
pub fn check_service_type(rd: &RelayerDeployment, allowed: &[ServiceType]) -> Result<(), String> {
    let wanted = rd.spec.service.type_;
    if allowed.contains(&wanted) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|t| service_type_name(*t)).collect();
    Err(format!(
        "spec.service.type {} is not allowed: this operator admits {} (--allowed-service-types)",
        service_type_name(wanted),
        if names.is_empty() {
            "no Service type".to_owned()
        } else {
            names.join(", ")
        }
    ))
}

/// The active Service, selecting the pods of `active`.
pub fn service(rd: &RelayerDeployment, active: Color) -> Service {
    let type_ = service_type_name(rd.spec.service.type_);
    build(rd, service_name(rd), active, type_)
}

/// The preview Service, selecting the pods of `preview` (none outside a rollout).
pub fn preview_service(rd: &RelayerDeployment, preview: Color) -> Service {
    build(rd, preview_service_name(rd), preview, "ClusterIP")
}

fn build(rd: &RelayerDeployment, name: String, color: Color, type_: &str) -> Service {
    let mut metadata = child_meta(rd, name, common_labels(rd));
    if !rd.spec.service.annotations.is_empty() {
        metadata.annotations = Some(rd.spec.service.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.to_owned()),
            selector: Some(color_selector(rd, color)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: rd.spec.service.port,
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::LABEL_COLOR;
    use super::super::fixtures::{rd, rd_with};
    use super::*;

    #[test]
    fn a_load_balancer_is_refused_unless_allowed() {
        let lb = rd_with(|s| s.service.type_ = ServiceType::LoadBalancer);
        assert_eq!(check_service_type(&rd(), &DEFAULT_SERVICE_TYPES), Ok(()));
        let err = check_service_type(&lb, &DEFAULT_SERVICE_TYPES).expect_err("refused");
        assert_eq!(
            err,
            "spec.service.type LoadBalancer is not allowed: this operator admits ClusterIP, \
             NodePort (--allowed-service-types)"
        );
        assert_eq!(
            check_service_type(&lb, &[ServiceType::ClusterIP, ServiceType::LoadBalancer]),
            Ok(())
        );
        let node_port = rd_with(|s| s.service.type_ = ServiceType::NodePort);
        assert!(check_service_type(&node_port, &[ServiceType::ClusterIP]).is_err());
        assert!(check_service_type(&rd(), &[]).is_err_and(|e| e.contains("no Service type")));
    }

    #[test]
    fn service_types_parse_by_their_kubernetes_names() {
        assert_eq!(
            parse_service_type("LoadBalancer"),
            Ok(ServiceType::LoadBalancer)
        );
        assert_eq!(parse_service_type(" nodeport"), Ok(ServiceType::NodePort));
        assert_eq!(parse_service_type("ClusterIP"), Ok(ServiceType::ClusterIP));
        assert!(parse_service_type("ExternalName").is_err());
        assert!(parse_service_type("").is_err());
    }

    #[test]
    fn active_and_preview_services_select_opposite_colours() {
        let rd = rd();
        let active = service(&rd, Color::Green);
        let preview = preview_service(&rd, Color::Blue);
        assert_eq!(active.metadata.name.as_deref(), Some("market"));
        assert_eq!(preview.metadata.name.as_deref(), Some("market-preview"));
        let colour = |s: &Service| {
            s.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .expect("selector")[LABEL_COLOR]
                .clone()
        };
        assert_eq!(colour(&active), "green");
        assert_eq!(colour(&preview), "blue");
        let port = &active
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .expect("ports")[0];
        assert_eq!(port.port, 80);
        assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
    }
}
