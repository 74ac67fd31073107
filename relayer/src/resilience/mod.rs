//! Resilience building blocks, usable on their own:
//! - [`breaker`]: circuit breakers and their registry;
//! - [`backoff`]: the one backoff schedule every retry loop uses (built without `server`);
//! - [`retry`]: exponential backoff with full jitter, strategies, classifiers, a retry budget;
//! - [`saga`]: steps with compensations, an executor with events and metrics.
//!
//! [`config`] holds their settings and builds without the `server` feature.
//!
//! Room: after `store`, before `settlement`; uses [`crate::clock`] (the breakers' time) and
//! nothing else of the crate.

pub mod backoff;
pub mod config;

#[cfg(feature = "server")]
pub mod breaker;
#[cfg(feature = "server")]
pub mod retry;
#[cfg(feature = "server")]
pub mod saga;
