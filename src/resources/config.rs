//! The ConfigMap holding the rendered relayer config, named by the config's hash so that a new
//! config is a new object (and a new revision) rather than an edit under running pods.
//!
//! May use: [`super`] (names, labels, selectors) and [`crate::crd`]; no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::{LABEL_CONFIG_HASH, child_meta, common_labels, short_hash};
use crate::crd::RelayerDeployment;
use crate::{Error, Result};

/// Key of the config file in the ConfigMap.
pub const CONFIG_FILE: &str = "config.yaml";
/// Directory the ConfigMap is mounted at in the relayer container.
pub const CONFIG_MOUNT: &str = "/etc/relayer";

/// Directory the Redis CA certificate is mounted at (from `spec.store.redis.tls.ca`).
pub const REDIS_CA_MOUNT: &str = "/etc/relayer/redis-ca";
/// File name of the Redis CA certificate in [`REDIS_CA_MOUNT`].
pub const REDIS_CA_FILE: &str = "ca.crt";

/// The config the pods run: `spec.config` with what the operator derives from `spec.store`
/// and `spec.secrets` (the store's address, the CA file, the settlement credential's header).
/// Never a secret: those reach the pods as environment from their Secrets.
pub fn effective_config(rd: &RelayerDeployment) -> relayer::config::RelayerConfig {
    let mut config = rd.spec.config.clone();
    if let Some(redis) = rd.spec.redis() {
        // NB: with `urlSecretRef` the URL comes from the environment (RELAYER_REDIS_URL).
        config.redis_url = redis.url.clone();
        config.redis.mode = redis.mode.unwrap_or_default();
        config.redis.cluster_nodes = redis.cluster_nodes.clone();
        if redis.tls.as_ref().and_then(|t| t.ca.as_ref()).is_some() {
            config.redis.ca_file = Some(format!("{REDIS_CA_MOUNT}/{REDIS_CA_FILE}"));
        }
    }
    if let Some(credential) = &rd.spec.secrets.settlement_credential {
        config.settlement.credential_header = credential.header.clone();
    }
    config
}

/// The relayer config of `rd` as the YAML file the relayer reads with `--config`.
pub fn render_config(rd: &RelayerDeployment) -> Result<String> {
    serde_yaml::to_string(&effective_config(rd)).map_err(Error::Yaml)
}

/// `<name>-config-<hash of the rendered config>`.
pub fn config_map_name(rd: &RelayerDeployment) -> Result<String> {
    Ok(format!("{}-config-{}", rd.name_any(), config_hash(rd)?))
}

fn config_hash(rd: &RelayerDeployment) -> Result<String> {
    short_hash(&effective_config(rd))
}

/// The ConfigMap of `rd`'s current config.
pub fn config_map(rd: &RelayerDeployment) -> Result<ConfigMap> {
    let mut labels = common_labels(rd);
    labels.insert(LABEL_CONFIG_HASH.to_owned(), config_hash(rd)?);
    Ok(ConfigMap {
        metadata: child_meta(rd, config_map_name(rd)?, labels),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            render_config(rd)?,
        )])),
        // NB: immutable, because its name already changes with its content; the API server then
        // rejects edits instead of letting running pods see a config that no revision recorded.
        immutable: Some(true),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{rd, rd_with};
    use super::*;

    #[test]
    fn the_store_mode_and_seed_nodes_reach_the_relayer_config() {
        let rd = rd_with(|s| {
            s.store = Some(crate::crd::StoreSpec {
                redis: Some(crate::crd::RedisStoreSpec {
                    url: Some("redis://redis-0.redis:6379".into()),
                    url_secret_ref: None,
                    password_secret_ref: None,
                    tls: None,
                    mode: Some(relayer::config::RedisMode::Cluster),
                    cluster_nodes: vec!["redis-1.redis:6379".into()],
                }),
                ..crate::crd::StoreSpec::default()
            })
        });
        let config = effective_config(&rd);
        assert_eq!(config.redis.mode, relayer::config::RedisMode::Cluster);
        assert_eq!(config.redis.cluster_nodes, ["redis-1.redis:6379"]);
        assert_eq!(config.redis.effective_replica_acks(), 1);
        config.validate().expect("the rendered config is valid");
        let rendered = render_config(&rd).expect("render");
        assert!(rendered.contains("mode: cluster"), "{rendered}");
    }

    #[test]
    fn config_map_round_trips_the_config_and_is_named_by_its_hash() {
        let rd = rd_with(|s| {
            s.store = Some(crate::crd::StoreSpec {
                redis: Some(crate::crd::RedisStoreSpec {
                    url: Some("redis://redis:6379/0".into()),
                    url_secret_ref: None,
                    password_secret_ref: None,
                    tls: None,
                    mode: None,
                    cluster_nodes: Vec::new(),
                }),
                ..crate::crd::StoreSpec::default()
            })
        });
        let cm = config_map(&rd).expect("config map");
        let name = cm.metadata.name.clone().expect("name");
        assert!(name.starts_with("market-config-"), "{name}");
        let text = &cm.data.as_ref().expect("data")[CONFIG_FILE];
        let parsed: relayer::config::RelayerConfig =
            serde_yaml::from_str(text).expect("the relayer can parse what we render");
        assert_eq!(parsed.redis_url.as_deref(), Some("redis://redis:6379/0"));
        assert_eq!(parsed, effective_config(&rd));
        assert_eq!(cm.immutable, Some(true));
    }

    #[test]
    fn the_pods_config_names_the_mounted_ca_and_the_credential_header_and_holds_no_secret() {
        let rd = rd_with(|s| {
            *s = serde_json::from_value(serde_json::json!({
                "image": "relayer:1",
                "store": { "redis": {
                    "url": "rediss://redis:6380/0",
                    "passwordSecretRef": { "name": "redis", "key": "password" },
                    "tls": { "ca": { "secretKeyRef": { "name": "ca", "key": "ca.pem" } } },
                } },
                "secrets": { "settlementCredential": {
                    "header": "X-Api-Key",
                    "secretKeyRef": { "name": "settle", "key": "key" },
                } },
                "config": { "settlement": { "url": "https://settle.example/settle" } },
            }))
            .expect("spec");
        });
        let config = effective_config(&rd);
        assert_eq!(config.redis_url.as_deref(), Some("rediss://redis:6380/0"));
        assert_eq!(
            config.redis.ca_file.as_deref(),
            Some("/etc/relayer/redis-ca/ca.crt")
        );
        assert_eq!(config.settlement.credential_header, "X-Api-Key");
        assert_eq!(
            (
                &config.redis.password,
                &config.settlement.credential,
                &config.admin_token
            ),
            (&None, &None, &None)
        );
        config.validate().expect("the relayer accepts it");
    }

    #[test]
    fn a_config_change_changes_the_name_and_a_scale_does_not() {
        let base = config_map_name(&rd()).expect("name");
        let scaled = rd_with(|s| s.replicas = 9);
        assert_eq!(base, config_map_name(&scaled).expect("name"));
        let changed = rd_with(|s| s.config.shutdown.drain_timeout_ms = 1_000);
        assert_ne!(base, config_map_name(&changed).expect("name"));
    }
}
