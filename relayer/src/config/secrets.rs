//! The config's secrets kept out of sight: [`RelayerConfig::redacted`] (what
//! `relayer --print-config` prints), the `Debug` of the config types that hold a secret, and the
//! userinfo of URLs ([`url_password`], [`redact_url`]).
//!
//! Secrets: `adminToken`, `redis.password`, `settlement.credential`, and the password (the
//! userinfo) of every URL: `redisUrl`, `rateLimit.redisUrl`, `settlement.url`.
//!
//! Part of the `config` room; uses the config types only.

use std::fmt;

use super::{RedisConfig, RelayerConfig, SettlementConfig};

/// What a secret is shown as.
pub const REDACTED: &str = "<redacted>";

impl RelayerConfig {
    /// This config with every secret replaced by `<redacted>`: `adminToken`, `redis.password`,
    /// `settlement.credential`, and the password of `redisUrl`, `rateLimit.redisUrl` and
    /// `settlement.url` (the whole userinfo when it has no `:`, as some clients read a lone
    /// userinfo as a password or token). Absent secrets stay absent.
    pub fn redacted(&self) -> RelayerConfig {
        let mut r = self.clone();
        let hide = |s: &mut Option<String>| {
            if s.is_some() {
                *s = Some(REDACTED.to_owned());
            }
        };
        let hide_url = |s: &mut Option<String>| {
            if let Some(url) = s {
                *url = redact_url(url);
            }
        };
        hide(&mut r.admin_token);
        hide(&mut r.redis.password);
        hide(&mut r.settlement.credential);
        hide_url(&mut r.redis_url);
        hide_url(&mut r.rate_limit.redis_url);
        hide_url(&mut r.settlement.url);
        r
    }
}

/// The userinfo of `url` (`scheme://<userinfo>@host…`), if it has one, and where it starts.
fn userinfo(url: &str) -> Option<(usize, &str)> {
    let after_scheme = url.find(':')? + 1;
    // NB: as the url crate (and so reqwest) reads an http(s) URL, any run of `/` and `\` after
    // the scheme leads to the authority: `https:///user:pw@host` sends `user:pw`.
    let rest = url[after_scheme..].trim_start_matches(['/', '\\']);
    let start = url.len() - rest.len();
    let authority = &rest[..rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    Some((start, &authority[..at]))
}

/// The password inside `url` (`scheme://user:password@host`), if any; an empty one is none.
pub fn url_password(url: &str) -> Option<&str> {
    let (_, info) = userinfo(url)?;
    let (_, password) = info.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// `url` with its password replaced by `<redacted>`: `redis://user:<redacted>@host`, and
/// `https://<redacted>@host` for a userinfo without `:`.
pub fn redact_url(url: &str) -> String {
    let Some((start, info)) = userinfo(url) else {
        return url.to_owned();
    };
    let end = start + info.len();
    let shown = match info.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None if info.is_empty() => String::new(),
        None => REDACTED.to_owned(),
    };
    format!("{}{shown}{}", &url[..start], &url[end..])
}

/// `Some("<redacted>")` for a secret that is set.
fn shown(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| REDACTED)
}

// NB: destructured, so that a new field breaks these impls until it is decided whether it is a
// secret.
impl fmt::Debug for RelayerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.redacted();
        let RelayerConfig {
            listen,
            redis_url,
            redis,
            admin_token,
            limits,
            shutdown,
            log,
            fault_injection,
            rate_limit,
            settlement,
            circuit_breakers,
            saga,
        } = &r;
        f.debug_struct("RelayerConfig")
            .field("listen", listen)
            .field("redis_url", redis_url)
            .field("redis", redis)
            .field("admin_token", admin_token)
            .field("limits", limits)
            .field("shutdown", shutdown)
            .field("log", log)
            .field("fault_injection", fault_injection)
            .field("rate_limit", rate_limit)
            .field("settlement", settlement)
            .field("circuit_breakers", circuit_breakers)
            .field("saga", saga)
            .finish()
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RedisConfig {
            key_prefix,
            command_timeout_ms,
            order_retention_seconds,
            password,
            ca_file,
            mode,
            cluster_nodes,
            replica_acks,
        } = self;
        f.debug_struct("RedisConfig")
            .field("key_prefix", key_prefix)
            .field("command_timeout_ms", command_timeout_ms)
            .field("order_retention_seconds", order_retention_seconds)
            .field("password", &shown(password))
            .field("ca_file", ca_file)
            .field("mode", mode)
            .field("cluster_nodes", cluster_nodes)
            .field("replica_acks", replica_acks)
            .finish()
    }
}

impl fmt::Debug for SettlementConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SettlementConfig {
            url,
            timeout_ms,
            retry,
            credential,
            credential_header,
        } = self;
        f.debug_struct("SettlementConfig")
            .field("url", &url.as_deref().map(redact_url))
            .field("timeout_ms", timeout_ms)
            .field("retry", retry)
            .field("credential", &shown(credential))
            .field("credential_header", credential_header)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_found_and_redacted() {
        let cases = [
            ("redis://h:6379/0", None, "redis://h:6379/0"),
            (
                "redis://:pw@h:6379/0",
                Some("pw"),
                "redis://:<redacted>@h:6379/0",
            ),
            (
                "rediss://alice:p%40ss@h/0",
                Some("p%40ss"),
                "rediss://alice:<redacted>@h/0",
            ),
            ("redis://alice@h", None, "redis://<redacted>@h"),
            ("redis://alice:@h", None, "redis://alice:<redacted>@h"),
            (
                "https://u:a@b@settle.example/x?y=@z",
                Some("a@b"),
                "https://u:<redacted>@settle.example/x?y=@z",
            ),
            ("http://settle/path@x", None, "http://settle/path@x"),
            // Extra slashes and backslashes still lead to the authority (url crate, reqwest).
            (
                "https:///settler:s3cret@settle.example/v1",
                Some("s3cret"),
                "https:///settler:<redacted>@settle.example/v1",
            ),
            (
                "https:\\\\u:pw@settle.example/v1",
                Some("pw"),
                "https:\\\\u:<redacted>@settle.example/v1",
            ),
            ("not a url", None, "not a url"),
        ];
        for (url, password, redacted) in cases {
            assert_eq!(url_password(url), password, "{url}");
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    fn with_every_secret() -> RelayerConfig {
        let mut c = RelayerConfig {
            admin_token: Some("admin-token-0123456789".into()),
            redis_url: Some("rediss://default:url-secret@redis:6380/0".into()),
            ..RelayerConfig::default()
        };
        c.redis.password = Some("redis-secret".into());
        c.redis.ca_file = Some("/etc/relayer/redis-ca/ca.crt".into());
        c.rate_limit.redis_url = Some("redis://:limiter-secret@limiter:6379".into());
        c.settlement.url = Some("https://settler:settle-url-secret@settle.example/v1".into());
        c.settlement.credential = Some("Bearer settle-credential".into());
        c
    }

    const SECRETS: [&str; 6] = [
        "admin-token-0123456789",
        "url-secret",
        "redis-secret",
        "limiter-secret",
        "settle-url-secret",
        "settle-credential",
    ];

    #[test]
    fn redacted_hides_every_secret_and_keeps_the_rest() {
        let c = with_every_secret();
        let r = c.redacted();
        let json = serde_json::to_string(&r).expect("json");
        for secret in SECRETS {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        assert_eq!(r.admin_token.as_deref(), Some(REDACTED));
        assert_eq!(r.redis.password.as_deref(), Some(REDACTED));
        assert_eq!(r.settlement.credential.as_deref(), Some(REDACTED));
        assert_eq!(
            r.redis_url.as_deref(),
            Some("rediss://default:<redacted>@redis:6380/0")
        );
        assert_eq!(
            r.rate_limit.redis_url.as_deref(),
            Some("redis://:<redacted>@limiter:6379")
        );
        assert_eq!(
            r.settlement.url.as_deref(),
            Some("https://settler:<redacted>@settle.example/v1")
        );
        assert_eq!(r.redis.ca_file, c.redis.ca_file, "a path is no secret");
        assert_eq!(r.settlement.credential_header, "Authorization");
        let mut unredacted = r.clone();
        unredacted.admin_token = c.admin_token.clone();
        unredacted.redis.password = c.redis.password.clone();
        unredacted.settlement.credential = c.settlement.credential.clone();
        unredacted.redis_url = c.redis_url.clone();
        unredacted.rate_limit.redis_url = c.rate_limit.redis_url.clone();
        unredacted.settlement.url = c.settlement.url.clone();
        assert_eq!(unredacted, c, "only the secrets changed");
        assert_eq!(
            RelayerConfig::default().redacted(),
            RelayerConfig::default(),
            "absent secrets stay absent"
        );
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let c = with_every_secret();
        for text in [
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{:?}", c.redis),
            format!("{:?}", c.settlement),
        ] {
            for secret in SECRETS {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert!(text.contains(REDACTED), "{text}");
        }
    }
}
