//! The Foresight relayer: an HTTP service that takes orders for prediction-market outcome
//! shares, keeps an order book per market, matches orders with price-time priority and moves
//! collateral and shares between users.
//!
//! # Layout
//! Rooms, each using only rooms listed before it (`relayer/tests/layering.rs` holds the crate
//! to this order):
//! - [`exposition`]: the parser of the Prometheus text on `/metrics` (the operator's gates and
//!   the tests read it with this one). Pure.
//! - [`otel`]: OpenTelemetry traces from the standard `OTEL_*` variables (off by default) and
//!   the W3C trace-context helpers; uses nothing of the crate (the operator uses it too).
//! - [`tables`]: tables that grow without stalls (sharded maps, chunked expiry queues) for the
//!   in-memory state.
//! - [`clock`]: the one wall clock ([`clock::Clock`]: system and manual).
//! - [`domain`]: identifiers, orders, fills, balances and their validation. Pure.
//! - [`book`]: one market's order book and its matching rules. Pure.
//! - [`store`]: where state lives, as atomic single-slot operations: in memory
//!   ([`store::MemoryStore`]) or in Redis shared by every replica ([`store::RedisStore`]).
//! - [`resilience`]: circuit breakers, retries with backoff and jitter, sagas.
//! - [`settlement`]: the settlement client (breaker, retries) and the embedded ledger.
//! - [`order_saga`]: the order saga, its durable log and the recovery of abandoned sagas.
//! - [`exchange`]: the use cases (place, cancel, deposit, …) as sequences of store steps.
//! - [`ratelimit`]: the tiered sliding-window rate limiter (config, window, counters, client
//!   IP, limiter); no HTTP framework.
//! - [`metrics`]: the Prometheus registry and the HTTP request metrics; no HTTP framework.
//! - [`http`]: the only room that knows axum: state, the one error type, authentication,
//!   bodies and OpenAPI, routes, middlewares and [`app()`].
//! - [`server`]: [`serve`] with graceful shutdown, [`shutdown_signal`].
//! - `main.rs` (the binary): config, tracing, start-up.
//!
//! [`config`] (the typed configuration, also `spec.config` of a RelayerDeployment) may be used
//! by every room; it uses only the leaf config modules [`ratelimit::config`] and
//! [`resilience::config`], which use nothing of the crate. These three, [`exposition`]
//! and [`resilience::backoff`] are all that is built without the `server` feature.
#![forbid(unsafe_code)]

pub mod config;
pub mod exposition;
#[cfg(feature = "otel")]
pub mod otel;
pub mod ratelimit;
pub mod resilience;

#[cfg(feature = "server")]
pub mod book;
#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod domain;
#[cfg(feature = "server")]
pub mod exchange;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod order_saga;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod settlement;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod tables;

#[cfg(feature = "server")]
pub use http::{AppState, app};
#[cfg(feature = "server")]
pub use server::{serve, shutdown_signal};
