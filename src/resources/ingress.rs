//! The optional Ingress: `host` to the active Service, `previewHost` to the preview Service.
//!
//! May use: [`super`] (names, labels, selectors) and [`crate::crd`]; no I/O.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::{child_meta, common_labels, preview_service_name, service_name};
use crate::crd::RelayerDeployment;
use kube::ResourceExt;

/// The Ingress of `rd`, or `None` when none is asked for.
pub fn ingress(rd: &RelayerDeployment) -> Option<Ingress> {
    let spec = rd.spec.ingress.as_ref()?;
    let rule = |host: &str, service: String| IngressRule {
        host: Some(host.to_owned()),
        http: Some(HTTPIngressRuleValue {
            paths: vec![HTTPIngressPath {
                path: Some("/".to_owned()),
                path_type: "Prefix".to_owned(),
                backend: IngressBackend {
                    service: Some(IngressServiceBackend {
                        name: service,
                        port: Some(ServiceBackendPort {
                            name: Some("http".to_owned()),
                            number: None,
                        }),
                    }),
                    resource: None,
                },
            }],
        }),
    };
    let mut rules = vec![rule(&spec.host, service_name(rd))];
    let mut hosts = vec![spec.host.clone()];
    if let Some(preview) = &spec.preview_host {
        rules.push(rule(preview, preview_service_name(rd)));
        hosts.push(preview.clone());
    }
    let tls = spec.tls_secret_name.as_ref().map(|secret| {
        vec![IngressTLS {
            hosts: Some(hosts),
            secret_name: Some(secret.clone()),
        }]
    });
    let mut metadata = child_meta(rd, rd.name_any(), common_labels(rd));
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: Some(spec.class_name.clone()),
            rules: Some(rules),
            tls,
            default_backend: None,
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{rd, rd_with};
    use super::*;

    #[test]
    fn no_ingress_spec_means_no_ingress() {
        assert!(ingress(&rd()).is_none());
    }

    #[test]
    fn ingress_routes_both_hosts_with_tls_and_default_class() {
        let rd = rd_with(|s| {
            s.ingress = Some(
                serde_json::from_value(serde_json::json!({
                    "host": "relayer.example.com",
                    "previewHost": "preview.relayer.example.com",
                    "tlsSecretName": "relayer-tls",
                }))
                .expect("ingress spec"),
            )
        });
        let spec = ingress(&rd).and_then(|i| i.spec).expect("ingress spec");
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rules = spec.rules.expect("rules");
        let backend = |i: usize| {
            rules[i].http.as_ref().expect("http").paths[0]
                .backend
                .service
                .as_ref()
                .expect("service")
                .name
                .clone()
        };
        assert_eq!(backend(0), "market");
        assert_eq!(backend(1), "market-preview");
        let tls = &spec.tls.expect("tls")[0];
        assert_eq!(tls.secret_name.as_deref(), Some("relayer-tls"));
        assert_eq!(tls.hosts.as_ref().map(Vec::len), Some(2));
    }
}
