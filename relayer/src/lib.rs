//! The Foresight relayer: an HTTP service that takes orders for prediction-market outcome
//! shares, keeps an order book per market, matches orders with price-time priority and moves
//! collateral and shares between users.
//!
//! # Layout
//! - [`config`]: the typed configuration (also `spec.config` of a RelayerDeployment). The only
//!   module built without the `server` feature.
//! - [`domain`]: identifiers, orders, fills, balances and their validation. Pure.
//! - [`book`]: one market's order book and its matching rules. Pure.
//! - [`store`]: where state lives, as atomic single-slot operations; in-memory backend.
//! - [`exchange`]: the use cases (place, cancel, deposit, …) as sequences of store steps.
//! - [`api`]: routes, bodies, authentication; [`error`]: the JSON error type and extractors.
//! - [`ratelimit`]: the tiered sliding-window rate limiter (its `config` is built without the
//!   `server` feature too).
//! - [`resilience`]: circuit breakers, retries with backoff and jitter, sagas.
//! - [`settlement`]: the settlement client (breaker, retries) and the embedded ledger.
//! - [`order_saga`]: the order saga, its durable log and the recovery of abandoned sagas.
//! - [`metrics`]: Prometheus metrics; [`server`]: state, router, graceful shutdown.
#![forbid(unsafe_code)]

pub mod config;
pub mod ratelimit;
pub mod resilience;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod book;
#[cfg(feature = "server")]
pub mod domain;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod exchange;
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
pub use server::{AppState, app, serve, shutdown_signal};
