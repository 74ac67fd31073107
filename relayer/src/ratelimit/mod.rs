//! The tiered sliding-window rate limiter: the relayer's first line of defence.
//!
//! - [`config`]: `rateLimit` of the relayer config (built without the `server` feature; a leaf
//!   that uses nothing of the crate).
//! - [`window`]: the sliding-window arithmetic and its error bound. Pure.
//! - [`counters`]: counters in memory (per replica) or in Redis (shared), both deciding every
//!   tier of a request in one atomic step.
//! - [`client_ip`]: the client's IP behind trusted proxies.
//! - [`limiter`]: the [`Limiter`] (which counters a request touches, metrics, the store-failure
//!   policy) and the rate-limit response fields.
//!
//! The tower service that runs the limiter in front of the business routes, and its 429 body,
//! live in `crate::http::middleware::ratelimit`: nothing here knows axum.
//!
//! Tiers: `global` (one key), `perIp`, `perUser` (when the request carries a valid API key) and
//! `perEndpoint` (route template and method, per client: the user when authenticated, else the
//! IP). A request is admitted only if every tier admits it, and a denied request counts against
//! no tier.
//!
//! Room: after `exchange`, before `metrics`; uses [`crate::clock`], [`crate::domain`],
//! [`crate::store`] (its error type) and [`crate::config`].

#[cfg(feature = "server")]
pub mod client_ip;
pub mod config;
#[cfg(feature = "server")]
pub mod counters;
#[cfg(feature = "server")]
pub mod limiter;
#[cfg(feature = "server")]
pub mod window;

#[cfg(feature = "server")]
pub use limiter::{Checks, Limiter, RateHeaders, Tier, TierOutcome, Verdict};
