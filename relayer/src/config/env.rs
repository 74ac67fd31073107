//! How `RELAYER_*` environment variables name config keys (`RELAYER_REDIS__PASSWORD` →
//! `redis.password`; any case, `__` between levels), and which of them would set a secret: for
//! the operator, which must not let a literal secret into a pod spec.
//!
//! Part of the `config` room; uses `secrets` (URL credentials) only.

use super::secrets::redact_url;

/// Config keys holding a secret.
const SECRET_KEYS: [&str; 3] = ["adminToken", "redis.password", "settlement.credential"];
/// Config keys holding a URL, which may carry credentials.
const URL_KEYS: [&str; 3] = ["redisUrl", "rateLimit.redisUrl", "settlement.url"];

/// `SHUTDOWN__DRAIN_TIMEOUT_MS` (prefix already stripped) → `shutdown.drainTimeoutMs`.
pub(super) fn key_to_path(key: &str) -> String {
    key.split("__")
        .map(|segment| {
            let mut out = String::with_capacity(segment.len());
            let mut upper = false;
            for c in segment.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.extend(c.to_uppercase());
                    upper = false;
                } else {
                    out.extend(c.to_lowercase());
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The config key the variable `name` names, when it is a `RELAYER_*` variable (in any case).
pub fn env_key(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    upper.strip_prefix("RELAYER_").map(key_to_path)
}

/// The secret config key that the variable `name` with the literal `value` would set, if any:
/// a secret key itself, a URL key whose value carries credentials, or a table value (figment
/// reads `{password="…"}` as one) given to a parent of either.
pub fn env_sets_secret(name: &str, value: &str) -> Option<String> {
    let key = env_key(name)?;
    let secret = SECRET_KEYS.contains(&key.as_str())
        || (URL_KEYS.contains(&key.as_str()) && redact_url(value) != value);
    let table = value.trim_start().starts_with('{')
        && SECRET_KEYS
            .iter()
            .chain(URL_KEYS.iter())
            .any(|k| key.is_empty() || k.starts_with(&format!("{key}.")));
    (secret || table).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_that_would_set_a_secret_are_found_in_any_spelling() {
        for (name, value) in [
            ("RELAYER_ADMIN_TOKEN", "x"),
            ("relayer_admin_token", "x"),
            ("RELAYER_ADMIN_TOKEN_", "x"),
            ("Relayer_Redis__Password", "x"),
            ("RELAYER_SETTLEMENT__CREDENTIAL", "Bearer x"),
            ("RELAYER_SETTLEMENT__URL", "https://u:p@settle/v1"),
            ("RELAYER_RATE_LIMIT__REDIS_URL", "redis://:p@counters"),
            ("RELAYER_REDIS", "{password=\"x\"}"),
            ("RELAYER_SETTLEMENT", " {credential=\"x\"}"),
        ] {
            assert!(env_sets_secret(name, value).is_some(), "{name}={value}");
        }
        for (name, value) in [
            ("RELAYER_SETTLEMENT__URL", "https://settle/v1"),
            ("RELAYER_REDIS__KEY_PREFIX", "{team}"),
            ("RELAYER_LIMITS", "{requestTimeoutMs=5000}"),
            ("OTHER_ADMIN_TOKEN", "x"),
        ] {
            assert_eq!(env_sets_secret(name, value), None, "{name}={value}");
        }
    }
}
