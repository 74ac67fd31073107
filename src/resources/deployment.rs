//! The Deployment of one colour: `<name>-<colour>`, hardened, probed and drained.
//!
//! May use: [`super`] (names, labels, selectors) and [`crate::crd`]; no I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use serde_json::json;

use super::{
    CONFIG_FILE, CONFIG_MOUNT, LABEL_COLOR, LABEL_REVISION, REDIS_CA_FILE, REDIS_CA_MOUNT,
    child_meta, color_selector, common_labels, config_map_name,
};
use crate::crd::{Color, RelayerDeployment, SecretKeyRef};
use crate::{Error, Result};

/// Seconds the pod keeps serving after it is marked terminating and before the relayer gets
/// SIGTERM: time for EndpointSlice consumers (kube-proxy, ingress controllers) to drop it.
const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// Slack on top of the pre-stop sleep and the relayer's own drain before the kubelet kills it.
const TERMINATION_SLACK_SECONDS: i64 = 5;
/// UID and GID of the relayer process: the conventional distroless `nonroot` user.
const RUN_AS_ID: i64 = 65532;

/// `<name>-<colour>`.
pub fn deployment_name(rd: &RelayerDeployment, color: Color) -> String {
    format!("{}-{}", rd.name_any(), color)
}

/// The port of the relayer's `listen` address (validated before any child is built).
pub fn container_port(rd: &RelayerDeployment) -> Result<i32> {
    let addr: SocketAddr = rd.spec.config.listen.parse().map_err(|e| {
        Error::InvalidSpec(format!(
            "spec.config.listen {:?} is not a socket address: {e}",
            rd.spec.config.listen
        ))
    })?;
    Ok(i32::from(addr.port()))
}

/// Adds to `pod_spec`'s affinity (after the user's own terms) a term that keeps pods of
/// `revision` apart from this object's pods of any other revision: colour-free, so the
/// revision's template fits either colour.
fn add_anti_affinity(
    pod_spec: &mut serde_json::Value,
    rd: &RelayerDeployment,
    apart: &crate::crd::AntiAffinity,
    revision: &str,
) {
    let term = json!({
        "labelSelector": {
            "matchLabels": super::instance_selector(rd),
            "matchExpressions": [
                { "key": LABEL_REVISION, "operator": "NotIn", "values": [revision] },
            ],
        },
        "topologyKey": apart.topology_key,
    });
    let (field, entry) = match &apart.preferred {
        Some(p) => (
            "preferredDuringSchedulingIgnoredDuringExecution",
            json!({ "weight": p.weight.clamp(1, 100), "podAffinityTerm": term }),
        ),
        None => ("requiredDuringSchedulingIgnoredDuringExecution", term),
    };
    let terms = &mut pod_spec["affinity"]["podAntiAffinity"][field];
    match terms.as_array_mut() {
        Some(list) => list.push(entry),
        None => *terms = json!([entry]),
    }
}

/// The Deployment of `color` running `revision` of `rd`.
pub fn deployment(rd: &RelayerDeployment, color: Color, revision: &str) -> Result<Deployment> {
    let spec = &rd.spec;
    let selector = color_selector(rd, color);
    let mut labels = common_labels(rd);
    labels.insert(LABEL_COLOR.to_owned(), color.as_str().to_owned());

    let mut pod_labels: BTreeMap<String, String> = spec.pod.labels.clone();
    pod_labels.extend(labels.clone());
    pod_labels.insert(LABEL_REVISION.to_owned(), revision.to_owned());

    let shutdown = &spec.config.shutdown;
    let drain_seconds =
        (shutdown.readiness_delay_ms + shutdown.drain_timeout_ms).div_ceil(1000) as i64;
    let grace = PRE_STOP_SLEEP_SECONDS + drain_seconds + TERMINATION_SLACK_SECONDS;

    let mut container = json!({
        "name": "relayer",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--config", format!("{CONFIG_MOUNT}/{CONFIG_FILE}")],
        "ports": [{ "name": "http", "containerPort": container_port(rd)?, "protocol": "TCP" }],
        "livenessProbe": {
            "httpGet": { "path": "/health", "port": "http" },
            "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": { "path": "/ready", "port": "http" },
            "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2,
        },
        "lifecycle": { "preStop": { "sleep": { "seconds": PRE_STOP_SLEEP_SECONDS } } },
        "securityContext": {
            "runAsNonRoot": true,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "volumeMounts": [
            { "name": "config", "mountPath": CONFIG_MOUNT, "readOnly": true },
            { "name": "tmp", "mountPath": "/tmp" },
        ],
    });
    let mut env = secret_env(rd);
    env.extend(
        to_json("env", &spec.pod.env)?
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    if !env.is_empty() {
        container["env"] = json!(env);
    }
    let mut volumes = vec![
        json!({ "name": "config", "configMap": { "name": config_map_name(rd)? } }),
        json!({ "name": "tmp", "emptyDir": { "sizeLimit": "64Mi" } }),
    ];
    if let Some(ca) = rd.spec.redis().and_then(|r| r.tls.as_ref()?.ca.as_ref()) {
        let item = |key: &str| json!([{ "key": key, "path": REDIS_CA_FILE }]);
        volumes.push(match (&ca.secret_key_ref, &ca.config_map_key_ref) {
            (Some(s), _) => {
                json!({ "name": "redis-ca", "secret": { "secretName": s.name, "items": item(&s.key) } })
            }
            (None, Some(c)) => {
                json!({ "name": "redis-ca", "configMap": { "name": c.name, "items": item(&c.key) } })
            }
            (None, None) => {
                return Err(Error::InvalidSpec(
                    "spec.store.redis.tls.ca must set secretKeyRef or configMapKeyRef".into(),
                ));
            }
        });
        container["volumeMounts"]
            .as_array_mut()
            .ok_or(Error::Missing("container volumeMounts"))?
            .push(json!({ "name": "redis-ca", "mountPath": REDIS_CA_MOUNT, "readOnly": true }));
    }
    if let Some(resources) = &spec.pod.resources {
        container["resources"] = to_json("resources", resources)?;
    }

    let mut pod_spec = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": grace,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": RUN_AS_ID,
            "runAsGroup": RUN_AS_ID,
            "fsGroup": RUN_AS_ID,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "containers": [container],
        "volumes": volumes,
    });
    if let Some(account) = &spec.pod.service_account_name {
        pod_spec["serviceAccountName"] = json!(account);
    }
    if !spec.pod.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(spec.pod.node_selector);
    }
    if !spec.pod.tolerations.is_empty() {
        pod_spec["tolerations"] = to_json("tolerations", &spec.pod.tolerations)?;
    }
    if let Some(affinity) = &spec.pod.affinity {
        pod_spec["affinity"] = to_json("affinity", affinity)?;
    }
    if let Some(apart) = &spec.strategy.blue_green.anti_affinity {
        add_anti_affinity(&mut pod_spec, rd, apart, revision);
    }

    let mut template_meta = json!({ "labels": pod_labels });
    if !spec.pod.annotations.is_empty() {
        template_meta["annotations"] = json!(spec.pod.annotations);
    }

    let spec_json = json!({
        "replicas": spec.replicas,
        // NB: the operator's own revisions are ControllerRevisions; two ReplicaSets are enough
        // for the Deployment controller's rolling update inside one colour.
        "revisionHistoryLimit": 2,
        "selector": { "matchLabels": selector },
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": 0 },
        },
        "template": { "metadata": template_meta, "spec": pod_spec },
    });
    Ok(Deployment {
        metadata: child_meta(rd, deployment_name(rd, color), labels),
        spec: from_json("deployment spec", spec_json)?,
        status: None,
    })
}

/// Config keys the operator sets from `spec.secrets` and `spec.store` (as environment).
const OPERATOR_KEYS: [&str; 4] = [
    "adminToken",
    "redisUrl",
    "redis.password",
    "settlement.credential",
];

/// Why `spec.pod.env` would put a secret into the Deployment and every ControllerRevision, if it
/// would: a variable of a key the operator sets itself, or a literal value that would set a
/// secret, in any spelling the relayer reads (any case, a trailing `_`, a `{key="…"}` table,
/// credentials in a URL; [`relayer::config::env_sets_secret`]).
pub fn check_pod_env(rd: &RelayerDeployment) -> std::result::Result<(), String> {
    for (i, var) in rd.spec.pod.env.iter().enumerate() {
        let Some(key) = relayer::config::env_key(&var.name) else {
            continue;
        };
        if OPERATOR_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "spec.pod.env[{i}] ({}) must not be set: it is config key {key}, which the \
                 operator sets from spec.secrets and spec.store",
                var.name
            ));
        }
        let literal = var.value.as_deref().unwrap_or_default();
        if let Some(secret) = relayer::config::env_sets_secret(&var.name, literal) {
            return Err(format!(
                "spec.pod.env[{i}] ({}) must not hold a secret in its value (it sets config \
                 key {secret}): use valueFrom.secretKeyRef",
                var.name
            ));
        }
    }
    Ok(())
}

/// The relayer's secrets as environment from their Secrets (never a value): the admin token,
/// the Redis URL or password, the settlement credential.
fn secret_env(rd: &RelayerDeployment) -> Vec<serde_json::Value> {
    let from = |name: &str, r: &SecretKeyRef| json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": r.name, "key": r.key } } });
    let spec = &rd.spec;
    let redis = spec.redis();
    [
        ("RELAYER_ADMIN_TOKEN", spec.secrets.admin_token.as_ref()),
        (
            "RELAYER_REDIS_URL",
            redis.and_then(|r| r.url_secret_ref.as_ref()),
        ),
        (
            "RELAYER_REDIS__PASSWORD",
            redis.and_then(|r| r.password_secret_ref.as_ref()),
        ),
        (
            "RELAYER_SETTLEMENT__CREDENTIAL",
            spec.secrets
                .settlement_credential
                .as_ref()
                .map(|c| &c.secret_key_ref),
        ),
    ]
    .into_iter()
    .filter_map(|(name, r)| Some(from(name, r?)))
    .collect()
}

fn to_json<T: serde::Serialize>(what: &'static str, value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|source| Error::Render { what, source })
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    value: serde_json::Value,
) -> Result<T> {
    serde_json::from_value(value).map_err(|source| Error::Render { what, source })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{rd, rd_with};
    use super::*;

    fn blue(rd: &RelayerDeployment) -> serde_json::Value {
        serde_json::to_value(deployment(rd, Color::Blue, "abc123").expect("deployment"))
            .expect("json")
    }

    #[test]
    fn deployment_is_named_by_colour_and_selects_its_colour() {
        let d = blue(&rd());
        assert_eq!(d["metadata"]["name"], "market-blue");
        assert_eq!(d["spec"]["replicas"], 3);
        let selector = &d["spec"]["selector"]["matchLabels"];
        assert_eq!(selector[LABEL_COLOR], "blue");
        let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
        assert_eq!(pod_labels[LABEL_COLOR], "blue");
        assert_eq!(pod_labels[LABEL_REVISION], "abc123");
    }

    #[test]
    fn pods_are_hardened() {
        let d = blue(&rd());
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(pod["automountServiceAccountToken"], false);
        let c = &pod["containers"][0]["securityContext"];
        assert_eq!(c["allowPrivilegeEscalation"], false);
        assert_eq!(c["readOnlyRootFilesystem"], true);
        assert_eq!(c["privileged"], false);
        assert_eq!(c["capabilities"]["drop"], json!(["ALL"]));
    }

    #[test]
    fn probes_drain_and_grace_follow_the_config() {
        let rd = rd_with(|s| {
            s.config.listen = "0.0.0.0:8080".into();
            s.config.shutdown.readiness_delay_ms = 3_000;
            s.config.shutdown.drain_timeout_ms = 20_500;
        });
        let d = blue(&rd);
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
        // 5 s pre-stop + ceil(23.5 s) of relayer drain + 5 s slack.
        assert_eq!(pod["terminationGracePeriodSeconds"], 34);
        let volume = &pod["volumes"][0]["configMap"]["name"];
        assert_eq!(volume, &json!(config_map_name(&rd).expect("name")));
    }

    #[test]
    fn pod_overrides_reach_the_pod_but_cannot_replace_operator_labels() {
        let rd = rd_with(|s| {
            s.pod.labels.insert("team".into(), "markets".into());
            s.pod
                .annotations
                .insert("example.com/scrape".into(), "true".into());
            s.pod.node_selector.insert("pool".into(), "relayers".into());
            s.pod.env =
                vec![serde_json::from_value(json!({"name": "A", "value": "1"})).expect("env var")];
        });
        let d = blue(&rd);
        let template = &d["spec"]["template"];
        assert_eq!(template["metadata"]["labels"]["team"], "markets");
        assert_eq!(template["metadata"]["labels"][LABEL_COLOR], "blue");
        assert_eq!(
            template["metadata"]["annotations"]["example.com/scrape"],
            "true"
        );
        assert_eq!(template["spec"]["nodeSelector"]["pool"], "relayers");
        assert_eq!(template["spec"]["containers"][0]["env"][0]["name"], "A");
    }

    #[test]
    fn secrets_reach_the_pod_only_as_references_to_their_secrets() {
        let rd = rd_with(|s| {
            *s = serde_json::from_value(json!({
                "image": "relayer:1",
                "store": { "redis": {
                    "urlSecretRef": { "name": "redis-url", "key": "url" },
                    "passwordSecretRef": { "name": "redis", "key": "redis-password" },
                    "tls": { "ca": { "configMapKeyRef": { "name": "redis-ca", "key": "root.pem" } } },
                } },
                "secrets": {
                    "adminToken": { "name": "admin", "key": "token" },
                    "settlementCredential": {
                        "header": "X-Api-Key",
                        "secretKeyRef": { "name": "settle", "key": "key" },
                    },
                },
                "pod": { "env": [{ "name": "A", "value": "1" }] },
            }))
            .expect("spec");
        });
        let pod = &blue(&rd)["spec"]["template"]["spec"];
        let env = pod["containers"][0]["env"].as_array().expect("env");
        let by_name = |name: &str| {
            env.iter()
                .find(|e| e["name"] == name)
                .unwrap_or_else(|| panic!("{name} in {env:?}"))
                .clone()
        };
        for (name, secret, key) in [
            ("RELAYER_ADMIN_TOKEN", "admin", "token"),
            ("RELAYER_REDIS_URL", "redis-url", "url"),
            ("RELAYER_REDIS__PASSWORD", "redis", "redis-password"),
            ("RELAYER_SETTLEMENT__CREDENTIAL", "settle", "key"),
        ] {
            let var = by_name(name);
            assert_eq!(
                var["valueFrom"]["secretKeyRef"],
                json!({ "name": secret, "key": key })
            );
            assert!(var.get("value").is_none(), "{name} has no literal value");
        }
        assert_eq!(by_name("A")["value"], "1", "the user's own env follows");
        let ca = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "redis-ca")
            .expect("CA volume");
        assert_eq!(
            ca["configMap"],
            json!({ "name": "redis-ca", "items": [{ "key": "root.pem", "path": REDIS_CA_FILE }] })
        );
        let mounts = pod["containers"][0]["volumeMounts"].to_string();
        assert!(mounts.contains(REDIS_CA_MOUNT), "{mounts}");
    }

    #[test]
    fn secret_variables_and_credentials_in_url_variables_of_pod_env_are_refused() {
        let with_env = |name: &str, value: &str| {
            rd_with(|s| {
                s.pod.env = vec![
                    serde_json::from_value(json!({ "name": name, "value": value }))
                        .expect("env var"),
                ];
            })
        };
        for (name, value) in [
            ("relayer_admin_token", "0123456789abcdef"),
            ("Relayer_Redis__Password", "hunter2"),
            ("RELAYER_SETTLEMENT__URL", "https://u:pw@settle.example/v1"),
            ("relayer_rate_limit__redis_url", "redis://:pw@counters:6379"),
            (
                "RELAYER_SETTLEMENT__URL",
                "https:///token@settle.example/v1",
            ),
            ("RELAYER_ADMIN_TOKEN_", "0123456789abcdef"),
            ("RELAYER_REDIS", "{password=\"hunter2\"}"),
        ] {
            let error = check_pod_env(&with_env(name, value)).expect_err(name);
            assert!(error.contains("spec.pod.env[0]"), "{error}");
            assert!(
                !error.contains(value),
                "the message repeats no value: {error}"
            );
        }
        for (name, value) in [
            ("RELAYER_SETTLEMENT__URL", "https://settle.example/v1"),
            ("RELEASE", "2"),
            ("MY_URL", "https://u:pw@elsewhere"),
        ] {
            check_pod_env(&with_env(name, value)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn a_listen_address_without_a_port_is_an_invalid_spec() {
        let rd = rd_with(|s| s.config.listen = "nope".into());
        assert!(matches!(container_port(&rd), Err(Error::InvalidSpec(_))));
    }

    #[test]
    fn anti_affinity_keeps_a_revision_apart_from_the_others_after_the_users_own_terms() {
        let user = json!({ "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [
            { "weight": 5, "podAffinityTerm": { "topologyKey": "zone",
              "labelSelector": { "matchLabels": { "app": "other" } } } },
        ] } });
        let rd = rd_with(|rd| {
            rd.pod.affinity = Some(serde_json::from_value(user.clone()).expect("affinity"));
            rd.strategy.blue_green.anti_affinity = Some(crate::crd::AntiAffinity {
                preferred: Some(crate::crd::PreferredAntiAffinity { weight: 80 }),
                required: None,
                topology_key: "kubernetes.io/hostname".into(),
            });
        });
        let d = blue(&rd);
        let terms = &d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
        assert_eq!(terms.as_array().map(Vec::len), Some(2), "{terms}");
        assert_eq!(terms[0]["weight"], 5, "the user's term first");
        let ours = &terms[1];
        assert_eq!(ours["weight"], 80);
        let term = &ours["podAffinityTerm"];
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(
            term["labelSelector"]["matchLabels"][super::super::LABEL_INSTANCE],
            "market"
        );
        assert_eq!(
            term["labelSelector"]["matchExpressions"],
            json!([{ "key": LABEL_REVISION, "operator": "NotIn", "values": ["abc123"] }])
        );
        assert!(
            !term.to_string().contains(LABEL_COLOR),
            "colour-free, so a revision's template fits either colour: {term}"
        );
        let required = rd_with(|rd| {
            rd.strategy.blue_green.anti_affinity = Some(crate::crd::AntiAffinity {
                preferred: None,
                required: Some(crate::crd::RequiredAntiAffinity {}),
                topology_key: "zone".into(),
            });
        });
        let d = blue(&required);
        let terms = &d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        assert_eq!(terms[0]["topologyKey"], "zone");
        assert!(
            blue(&super::super::fixtures::rd())
                .pointer("/spec/template/spec/affinity")
                .is_none()
        );
    }
}
