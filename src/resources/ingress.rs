//! The optional Ingress: `host` to the active Service, `previewHost` to the preview Service;
//! and the operator's restriction of those hosts ([`HostPattern`], [`check_hosts`]).
//!
//! May use: [`super`] (names, labels, selectors) and [`crate::crd`]; no I/O.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::{child_meta, common_labels, preview_service_name, service_name};
use crate::crd::RelayerDeployment;
use kube::ResourceExt;

/// A host an RD's Ingress may use (`--ingress-host-pattern`): an exact host
/// (`relayer.example.com`) or a wildcard `*.apps.example.com`, whose `*` stands for exactly one
/// DNS label (`a.apps.example.com`, neither `apps.example.com` nor `a.b.apps.example.com`), as
/// in an Ingress rule and a TLS certificate. Compared in lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// The host, or what follows `*.` in a wildcard.
    suffix: String,
    wildcard: bool,
}

impl HostPattern {
    /// Whether `host` (lower case, as the CRD's schema admits it) matches.
    pub fn matches(&self, host: &str) -> bool {
        if !self.wildcard {
            return host == self.suffix;
        }
        host.strip_suffix(self.suffix.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.'))
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.suffix)
    }
}

impl std::str::FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (wildcard, suffix) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        // NB: a bare `*` or `*.com`-like catch-all is still a DNS name after the `*.`; "any
        // host" is the empty list, so that a typo cannot silently open every host.
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if suffix.is_empty() || suffix.len() > 253 || !suffix.split('.').all(label_ok) {
            return Err(format!(
                "{s:?} is not a host pattern (a DNS name, optionally starting with `*.`)"
            ));
        }
        Ok(Self {
            suffix: suffix.to_owned(),
            wildcard,
        })
    }
}

/// Whether every host `rd`'s Ingress asks for matches one of `patterns` (an empty list allows
/// any host); the error names the field, the host and the allowed patterns.
pub fn check_hosts(rd: &RelayerDeployment, patterns: &[HostPattern]) -> Result<(), String> {
    let Some(spec) = rd.spec.ingress.as_ref() else {
        return Ok(());
    };
    if patterns.is_empty() {
        return Ok(());
    }
    let hosts = std::iter::once(("spec.ingress.host", &spec.host)).chain(
        spec.preview_host
            .iter()
            .map(|h| ("spec.ingress.previewHost", h)),
    );
    for (field, host) in hosts {
        if !patterns.iter().any(|p| p.matches(host)) {
            let allowed: Vec<String> = patterns.iter().map(ToString::to_string).collect();
            return Err(format!(
                "{field} {host:?} is not allowed: this operator admits Ingress hosts matching {} \
                 (--ingress-host-pattern)",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

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

    fn with_hosts(host: &str, preview: Option<&str>) -> RelayerDeployment {
        rd_with(|s| {
            s.ingress = Some(
                serde_json::from_value(serde_json::json!({
                    "host": host, "previewHost": preview,
                }))
                .expect("ingress spec"),
            )
        })
    }

    fn patterns(list: &[&str]) -> Vec<HostPattern> {
        list.iter().map(|p| p.parse().expect("pattern")).collect()
    }

    #[test]
    fn a_wildcard_pattern_stands_for_exactly_one_label() {
        let p: HostPattern = "*.Apps.example.com".parse().expect("pattern");
        assert_eq!(p.to_string(), "*.apps.example.com");
        assert!(p.matches("market.apps.example.com"));
        assert!(!p.matches("apps.example.com"));
        assert!(!p.matches("a.b.apps.example.com"));
        assert!(!p.matches("marketapps.example.com"));
        assert!(!p.matches("market.apps.example.com.evil.io"));
        let exact: HostPattern = "relayer.example.com".parse().expect("pattern");
        assert!(exact.matches("relayer.example.com"));
        assert!(!exact.matches("x.relayer.example.com"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "",
            "*",
            "*.",
            "**.example.com",
            "a.*.example.com",
            "-a.example.com",
            "a..example.com",
            "exa mple.com",
            "a_b.example.com",
        ] {
            assert!(
                bad.parse::<HostPattern>().is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn hosts_outside_the_patterns_are_refused_naming_field_host_and_patterns() {
        let allowed = patterns(&["*.apps.example.com", "relayer.example.com"]);
        assert_eq!(
            check_hosts(&rd(), &allowed),
            Ok(()),
            "no Ingress, nothing to check"
        );
        assert_eq!(
            check_hosts(&with_hosts("evil.example.org", None), &[]),
            Ok(())
        );
        assert_eq!(
            check_hosts(
                &with_hosts("m.apps.example.com", Some("relayer.example.com")),
                &allowed
            ),
            Ok(())
        );
        let err = check_hosts(&with_hosts("bank.example.org", None), &allowed)
            .expect_err("outside the patterns");
        assert!(
            err.starts_with("spec.ingress.host \"bank.example.org\" is not allowed"),
            "{err}"
        );
        assert!(
            err.contains("*.apps.example.com, relayer.example.com"),
            "{err}"
        );
        let err = check_hosts(
            &with_hosts("m.apps.example.com", Some("preview.bank.example.org")),
            &allowed,
        )
        .expect_err("the preview host too");
        assert!(err.starts_with("spec.ingress.previewHost"), "{err}");
    }

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
