//! The active Service `<name>` and the preview Service `<name>-preview`, selecting by colour.
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

/// The active Service, selecting the pods of `active`.
pub fn service(rd: &RelayerDeployment, active: Color) -> Service {
    let type_ = match rd.spec.service.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
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
    use super::super::fixtures::rd;
    use super::*;

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
