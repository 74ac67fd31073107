//! Opening Redis connections: the one place that turns a URL, an AUTH password and a CA file
//! into a connection manager, for the store and for the rate limiter's own Redis alike.
//!
//! - `rediss://` is TLS through rustls (its process-default provider, aws-lc-rs): with
//!   [`RedisAccess::ca_file`] only that CA is trusted (the redis crate's
//!   `Client::build_with_tls`), without it the public web PKI roots (webpki-roots).
//! - [`RedisAccess::password`] is the AUTH password of every connection (with the URL's user
//!   name, if it has one); a password inside the URL works too, but not both.
//! - Connections are opened lazily, each attempt bounded by the timeout. A server that is
//!   down, a certificate that does not verify or a refused password all surface the same way:
//!   calls fail with [`StoreError::Unavailable`] (the relayer stays not ready), and the message
//!   says which key to check ([`hint`]).
//!
//! - [`RedisConnection`] is one multiplexed connection, to one node (`standalone`, a
//!   connection manager) or to a Redis Cluster (`cluster`, the redis crate's async cluster
//!   client: it learns the slot map from the seed nodes and refreshes it after a failover; MOVED
//!   and ASK are followed here, never a re-send of a command that may have run). Both reconnect
//!   in the background; callers bound each call.
//!
//! No message here ever holds the URL or the password.
//!
//! May use: the store's [`StoreError`] and the config's URL helpers and types.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{
    Client, Cmd, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    ServerErrorKind, TlsCertificates, Value,
};

pub use crate::config::RedisMode;
use crate::config::{RelayerConfig, url_password};
use crate::store::StoreError;

/// Where to reach the store's Redis: the URL and topology, and how many extra seed nodes.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `redisUrl` (or `rateLimit.redisUrl`): the node, or one seed node of a cluster.
    pub url: String,
    /// Standalone or cluster.
    pub mode: RedisMode,
    /// More seed nodes of a cluster, `host:port`, reached like `url` (scheme, user, password).
    pub cluster_nodes: Vec<String>,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &crate::config::redact_url(&self.url))
            .field("mode", &self.mode)
            .field("cluster_nodes", &self.cluster_nodes)
            .finish()
    }
}

impl RedisTarget {
    /// A standalone node at `url`.
    pub fn standalone(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            mode: RedisMode::Standalone,
            cluster_nodes: Vec::new(),
        }
    }

    /// A cluster reached through the seed node `url`.
    pub fn cluster(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            mode: RedisMode::Cluster,
            cluster_nodes: Vec::new(),
        }
    }
}

/// One multiplexed connection to a node or to a cluster; cheap to clone, one per call.
#[derive(Clone)]
pub struct RedisConnection(Kind);

#[derive(Clone)]
enum Kind {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Whether this is a cluster connection (keys of one call must then share a slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Kind::Cluster(_))
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Kind::Standalone(c) => c.req_packed_command(cmd),
            Kind::Cluster(c) => {
                let c = c.clone();
                Box::pin(follow(REDIRECTS, move |hop| {
                    let mut c = c.clone();
                    async move {
                        match hop {
                            Hop::BySlot => c.req_packed_command(cmd).await,
                            Hop::Ask(host, port) => {
                                let mut asking = redis::pipe();
                                asking.cmd("ASKING").ignore().add_command(cmd.clone());
                                c.route_pipeline(asking, 1, 1, by_node(&host, port))
                                    .await
                                    .and_then(|mut v| v.pop().ok_or_else(no_reply))
                            }
                        }
                    }
                }))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Kind::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Kind::Cluster(c) => Box::pin(async move {
                // NB: a redirect is followed only when it says that nothing of the pipeline
                // ran: one keyed command (ours are a command and its WAIT), and no MULTI/EXEC
                // (whose replies `ASKING` would shift).
                let keyed = pipeline.cmd_iter().filter(|cmd| !keyless(cmd)).count();
                let redirects = if keyed <= 1 && !pipeline.is_transaction() {
                    REDIRECTS
                } else {
                    0
                };
                let c = c.clone();
                follow(redirects, move |hop| {
                    let mut c = c.clone();
                    async move {
                        match hop {
                            Hop::BySlot => c.req_packed_commands(pipeline, offset, count).await,
                            Hop::Ask(host, port) => {
                                let mut asking = redis::pipe();
                                asking.cmd("ASKING").ignore();
                                for cmd in pipeline.cmd_iter() {
                                    asking.add_command(cmd.clone());
                                }
                                c.route_pipeline(asking, offset + 1, count, by_node(&host, port))
                                    .await
                            }
                        }
                    }
                })
                .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Kind::Standalone(c) => c.get_db(),
            Kind::Cluster(c) => c.get_db(),
        }
    }
}

/// Most redirects (MOVED, ASK) and waits (TRYAGAIN, CLUSTERDOWN, …) one cluster call follows;
/// the caller's timeout bounds them all.
const REDIRECTS: usize = 5;

/// Where a cluster call goes next.
enum Hop {
    /// By the key's slot, as the client's slot map says.
    BySlot,
    /// To the node an ASK named, after `ASKING` on the same connection (a slot migrating).
    Ask(String, u16),
}

/// Sends with `send` by slot, then, while it fails with an error that says nothing ran, to
/// where [`next_hop`] says, at most `redirects` times.
async fn follow<T, F, Fut>(redirects: usize, mut send: F) -> Result<T, RedisError>
where
    F: FnMut(Hop) -> Fut,
    Fut: std::future::Future<Output = Result<T, RedisError>>,
{
    let mut hop = Hop::BySlot;
    let mut followed = 0;
    loop {
        match send(hop).await {
            Err(e) if followed < redirects => {
                followed += 1;
                hop = next_hop(&e).await.ok_or(e)?;
            }
            other => return other,
        }
    }
}

/// The next hop after `error`, for the errors that say the command did not run: ASK (to the
/// node named), MOVED (by slot again, once the client refreshed its slot map, which a MOVED
/// starts: the node named may be one the client has no connection to yet), TRYAGAIN,
/// CLUSTERDOWN, MASTERDOWN, LOADING and READONLY (by slot again, after a short wait).
/// Anything else, a lost connection or a timeout above all (the command may have run), is the
/// caller's to handle: never re-sent here.
///
/// NB: this is why the cluster client itself is built without retries: it would re-send on
/// those too.
async fn next_hop(error: &RedisError) -> Option<Hop> {
    let node = || {
        let (addr, _slot) = error.redirect_node()?;
        let (host, port) = addr.rsplit_once(':')?;
        Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
    };
    match error.kind() {
        ErrorKind::Server(ServerErrorKind::Ask) => node().map(|(h, p)| Hop::Ask(h, p)),
        ErrorKind::Server(
            ServerErrorKind::Moved
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::ReadOnly,
        ) => {
            tokio::time::sleep(Duration::from_millis(25)).await;
            Some(Hop::BySlot)
        }
        _ => None,
    }
}

/// Whether `cmd` is one of the keyless commands our pipelines carry beside their one keyed
/// command (`WAIT`, `ASKING`, `PING`).
fn keyless(cmd: &Cmd) -> bool {
    matches!(
        cmd.args_iter().next(),
        Some(redis::Arg::Simple(name))
            if [&b"WAIT"[..], b"ASKING", b"PING"].iter().any(|k| name.eq_ignore_ascii_case(k))
    )
}

fn by_node(host: &str, port: u16) -> SingleNodeRoutingInfo {
    SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    }
}

fn no_reply() -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        "no reply from the redirected node",
    ))
}

/// A lazily connecting connection to `target` with `access`; `key` names the URL's config
/// key in errors. Every connection attempt and every answer is bounded by `timeout`.
pub fn connect(
    target: &RedisTarget,
    access: &RedisAccess,
    key: &str,
    timeout: Duration,
) -> Result<RedisConnection, StoreError> {
    match target.mode {
        RedisMode::Standalone => connection_manager(&target.url, access, key, timeout)
            .map(|c| RedisConnection(Kind::Standalone(c))),
        RedisMode::Cluster => cluster_connection(target, access, key, timeout)
            .map(|c| RedisConnection(Kind::Cluster(c))),
    }
}

/// The seed nodes of `target`: its URL, then each `clusterNodes` entry with the URL's scheme,
/// user and password.
fn seed_infos(target: &RedisTarget, key: &str) -> Result<Vec<ConnectionInfo>, StoreError> {
    let bad = |e: RedisError| StoreError::Unavailable(format!("invalid redis URL in `{key}`: {e}"));
    let mut infos = vec![target.url.as_str().into_connection_info().map_err(bad)?];
    if target.cluster_nodes.is_empty() {
        return Ok(infos);
    }
    let (scheme, rest) = target
        .url
        .split_once("://")
        .ok_or_else(|| invalid(key, "has no scheme"))?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
    for (i, node) in target.cluster_nodes.iter().enumerate() {
        let url = match userinfo {
            Some(u) => format!("{scheme}://{u}@{node}{}", &rest[authority_end..]),
            None => format!("{scheme}://{node}{}", &rest[authority_end..]),
        };
        infos.push(url.as_str().into_connection_info().map_err(|e| {
            StoreError::Unavailable(format!("invalid node in `redis.clusterNodes[{i}]`: {e}"))
        })?);
    }
    Ok(infos)
}

/// A cluster connection through the seed nodes of `target`: the slot map is read in the
/// background, so a cluster that is down at start makes calls fail, not the start.
fn cluster_connection(
    target: &RedisTarget,
    access: &RedisAccess,
    key: &str,
    timeout: Duration,
) -> Result<ClusterConnection, StoreError> {
    let seeds = seed_infos(target, key)?;
    let mut builder = ClusterClientBuilder::new(seeds)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        // NB: no retries in the client, like the standalone connection manager: it would
        // re-send a command after a dropped connection or a timeout, when it may have run
        // already, and a write without an operation id (a deposit) must not run twice.
        // `RedisConnection` follows MOVED and ASK itself (`next_hop`), which say it did not.
        .retries(0);
    if let Some(password) = &access.password {
        if url_password(&target.url).is_some() {
            return Err(invalid(
                "redis.password",
                format_args!("{key} holds a password too; give it in one of them"),
            ));
        }
        builder = builder.password(password);
    }
    if let Some(ca_file) = &access.ca_file {
        if !target.url.starts_with("rediss://") {
            return Err(invalid(
                "redis.caFile",
                format_args!("needs a rediss:// {key} (a CA is only used for TLS)"),
            ));
        }
        let pem = std::fs::read(ca_file)
            .map_err(|e| invalid("redis.caFile", format_args!("cannot read {ca_file}: {e}")))?;
        builder = builder.certs(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        });
    }
    let client = builder
        .build()
        .map_err(|e| StoreError::Unavailable(format!("invalid redis cluster in `{key}`: {e}")))?;
    let config = ClusterConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    Ok(client.get_pending_async_connection_with_config(config))
}

/// What a connection needs besides its URL: the secrets and trust the URL does not carry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisAccess {
    /// AUTH password (`redis.password`); the URL must then hold none.
    pub password: Option<String>,
    /// PEM file of the only CA trusted for `rediss://` (`redis.caFile`); absent: the web PKI
    /// roots.
    pub ca_file: Option<String>,
}

impl fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAccess")
            .field(
                "password",
                &self.password.as_ref().map(|_| crate::config::REDACTED),
            )
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl RedisAccess {
    /// The access to the store's Redis (`redisUrl`) that `config` gives.
    pub fn from_config(config: &RelayerConfig) -> Self {
        Self {
            password: config.redis.password.clone(),
            ca_file: config.redis.ca_file.clone(),
        }
    }
}

/// A configuration the store cannot use, naming its key.
fn invalid(key: &str, message: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("invalid config key `{key}`: {message}"))
}

/// A client for `url` with `access`; `key` names the URL's config key in errors.
fn client(url: &str, access: &RedisAccess, key: &str) -> Result<Client, StoreError> {
    // NB: the redis crate's parse errors do not echo the URL; ours must not either.
    let mut info = url
        .into_connection_info()
        .map_err(|e| StoreError::Unavailable(format!("invalid redis URL in `{key}`: {e}")))?;
    if let Some(password) = &access.password {
        if url_password(url).is_some() {
            return Err(invalid(
                "redis.password",
                format_args!("{key} holds a password too; give it in one of them"),
            ));
        }
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let Some(ca_file) = &access.ca_file else {
        return Client::open(info)
            .map_err(|e| StoreError::Unavailable(format!("invalid redis URL in `{key}`: {e}")));
    };
    if !url.starts_with("rediss://") {
        return Err(invalid(
            "redis.caFile",
            format_args!("needs a rediss:// {key} (a CA is only used for TLS)"),
        ));
    }
    let pem = std::fs::read(ca_file)
        .map_err(|e| invalid("redis.caFile", format_args!("cannot read {ca_file}: {e}")))?;
    let certificates = TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Client::build_with_tls(info, certificates).map_err(|e| {
        invalid(
            "redis.caFile",
            format_args!("{ca_file} is not a usable CA: {e}"),
        )
    })
}

/// A lazily connecting manager for `url` with `access`: every connection attempt and every
/// answer bounded by `timeout`, one attempt per call (the manager's own retries would make one
/// call wait through several reconnections; one attempt, bounded, keeps a 503 prompt).
fn connection_manager(
    url: &str,
    access: &RedisAccess,
    key: &str,
    timeout: Duration,
) -> Result<ConnectionManager, StoreError> {
    let client = client(url, access, key)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(timeout);
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| StoreError::Unavailable(format!("redis connect: {e}")))
}

/// What to check when a call failed with `error` on a connection that is TLS or not: the keys
/// behind a refused password or a TLS handshake that failed (a certificate that does not verify,
/// or no TLS on that port); empty for anything else (a server that is down, a stall).
pub(super) fn hint(error: &RedisError, tls: bool) -> &'static str {
    let code = error.code().unwrap_or_default();
    let text = error.to_string();
    if error.kind() == ErrorKind::AuthenticationFailed
        || matches!(code, "NOAUTH" | "WRONGPASS")
        || text.contains("NOAUTH")
    {
        return AUTH_HINT;
    }
    let text = text.to_ascii_lowercase();
    if ["certificate", "tls", "handshake", "corrupt message"]
        .iter()
        .any(|w| text.contains(w))
    {
        return TLS_HINT;
    }
    if error.is_timeout() {
        return timeout_hint(tls);
    }
    ""
}

/// What to check when a call on a connection that is TLS or not got no answer in time: a
/// server without TLS never answers a TLS handshake (it waits for the end of a command line).
pub(super) fn timeout_hint(tls: bool) -> &'static str {
    if tls { NO_TLS_HINT } else { "" }
}

/// Appended to a refused password.
const AUTH_HINT: &str =
    " (authentication refused: check redis.password or the password in redisUrl)";
/// Appended to a failed TLS handshake.
const TLS_HINT: &str = " (TLS failed: check that redisUrl's server speaks TLS and that \
                        redis.caFile holds the CA of its certificate)";
/// Appended to a call over TLS that got no answer.
const NO_TLS_HINT: &str = " (over TLS: a server without TLS on redisUrl's port never \
                           answers the TLS handshake; else it is down or stalled)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_needs_rediss_and_a_readable_file() {
        let access = RedisAccess {
            password: None,
            ca_file: Some("/nonexistent/ca.crt".into()),
        };
        let plain = client("redis://127.0.0.1:1/", &access, "redisUrl")
            .expect_err("a CA without TLS")
            .to_string();
        assert!(plain.contains("redis.caFile"), "{plain}");
        let missing = client("rediss://127.0.0.1:1/", &access, "redisUrl")
            .expect_err("no CA file")
            .to_string();
        assert!(
            missing.contains("redis.caFile") && missing.contains("/nonexistent/ca.crt"),
            "{missing}"
        );
    }

    #[test]
    fn a_password_in_both_places_is_refused_without_showing_either() {
        let access = RedisAccess {
            password: Some("from-config".into()),
            ca_file: None,
        };
        let error = client("redis://:in-url@127.0.0.1:1/", &access, "redisUrl")
            .expect_err("two passwords")
            .to_string();
        assert!(
            error.contains("redis.password") && error.contains("redisUrl"),
            "{error}"
        );
        assert!(
            !error.contains("from-config") && !error.contains("in-url"),
            "{error}"
        );
        client("redis://alice@127.0.0.1:1/", &access, "redisUrl")
            .expect("a user name in the URL and the password from the config");
        client("rediss://127.0.0.1:1/", &RedisAccess::default(), "redisUrl")
            .expect("TLS with the web PKI roots");
    }

    #[test]
    fn a_bad_url_is_named_but_not_echoed() {
        let error = client("redis://:secret@[::1", &RedisAccess::default(), "redisUrl")
            .expect_err("not a URL")
            .to_string();
        assert!(error.contains("redisUrl"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn debug_hides_the_password() {
        let access = RedisAccess {
            password: Some("hunter2".into()),
            ca_file: None,
        };
        assert!(!format!("{access:?}").contains("hunter2"));
    }
}
