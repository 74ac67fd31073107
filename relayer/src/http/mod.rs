//! The HTTP face of the relayer, and the only room that knows axum.
//!
//! - [`state`]: [`AppState`] (what every request shares) and how it is built from the config;
//!   the start-up error [`StartupError`].
//! - [`error`]: [`ApiError`], the one error type and JSON error body (the rate limiter's 429
//!   included), and the JSON body extractor.
//! - [`auth`]: the bearer token, the API-key user and the admin token.
//! - [`views`]: request and response bodies, and the OpenAPI document.
//! - [`routes`]: the handlers by group (orders, book, balances, admin, ops).
//! - [`middleware`]: guard, track (metrics), faults and the rate limiter's tower service.
//! - [`app`](mod@app): [`app()`](app::app), the whole [`axum::Router`].
//!
//! Room: after `metrics`, before `server`; uses every room before it ([`crate::clock`],
//! [`crate::domain`], [`crate::book`], [`crate::store`], [`crate::resilience`],
//! [`crate::settlement`], [`crate::order_saga`], [`crate::exchange`], [`crate::ratelimit`],
//! [`crate::metrics`]) and [`crate::config`].

pub mod app;
pub mod auth;
pub mod error;
pub mod middleware;
pub mod routes;
pub mod state;
pub mod views;

pub use self::app::app;
pub use self::error::ApiError;
pub use self::state::{AppState, Lifecycle, StartupError};
