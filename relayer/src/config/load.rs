//! [`RelayerConfig::load`] (server feature): defaults, then the YAML file, then `RELAYER_*`
//! variables (`RELAYER_REDIS__PASSWORD` → `redis.password`, `RELAYER_SETTLEMENT__CREDENTIAL`
//! → `settlement.credential`), then validation and the checks of files the config names.
//!
//! Part of the `config` room; uses the config types only.

use std::path::Path;

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Yaml},
};

use super::env::key_to_path as env_key_to_path;
use super::{ConfigError, RelayerConfig};

impl RelayerConfig {
    /// Defaults, then `file` (if given; it must exist), then `RELAYER_*` variables, then
    /// [`RelayerConfig::validate`] and [`RelayerConfig::check_files`].
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("RELAYER_"))
    }

    /// [`RelayerConfig::load`] with an explicit environment provider (for tests).
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RelayerConfig::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(super::validate::invalid(
                    "--config",
                    format!("{} does not exist or is not a file", path.display()),
                ));
            }
            figment = figment.merge(Yaml::file_exact(path));
        }
        // NB: `RELAYER_CONFIG` names the file itself (a CLI flag), not a key.
        let env = env
            .ignore(&["config"])
            .map(|k| env_key_to_path(k.as_str()).into())
            // NB: must come after `map`: every `filter`/`map` resets it to `true`.
            .lowercase(false);
        let config: RelayerConfig = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        config.check_files()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_text_values_stay_text() {
        let config: RelayerConfig = Figment::from(Serialized::defaults(RelayerConfig::default()))
            .merge(Yaml::string(
                "adminToken: 12345678901234567890\nlog:\n  filter: info\n\
                 redis:\n  password: 12345678\nsettlement:\n  credential: 42\n",
            ))
            .extract()
            .expect("a numeric token is text");
        assert_eq!(config.admin_token.as_deref(), Some("12345678901234567890"));
        assert_eq!(config.redis.password.as_deref(), Some("12345678"));
        assert_eq!(config.settlement.credential.as_deref(), Some("42"));
    }

    #[test]
    fn env_keys_become_camel_case_paths() {
        // (and text keys keep a string schema despite their lenient deserializer)
        let schema = serde_json::to_value(schemars::schema_for!(RelayerConfig)).expect("schema");
        assert_eq!(schema["properties"]["listen"]["type"], "string");
        assert_eq!(
            schema["properties"]["adminToken"]["type"],
            serde_json::json!(["string", "null"])
        );
        assert_eq!(env_key_to_path("REDIS_URL"), "redisUrl");
        assert_eq!(
            env_key_to_path("SHUTDOWN__DRAIN_TIMEOUT_MS"),
            "shutdown.drainTimeoutMs"
        );
        assert_eq!(env_key_to_path("listen"), "listen");
        assert_eq!(env_key_to_path("REDIS__PASSWORD"), "redis.password");
        assert_eq!(env_key_to_path("REDIS__CA_FILE"), "redis.caFile");
        assert_eq!(
            env_key_to_path("SETTLEMENT__CREDENTIAL"),
            "settlement.credential"
        );
        assert_eq!(
            env_key_to_path("SETTLEMENT__CREDENTIAL_HEADER"),
            "settlement.credentialHeader"
        );
    }
}
