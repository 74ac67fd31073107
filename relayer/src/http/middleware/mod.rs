//! The middlewares of the HTTP application, outermost first as `crate::http::app` stacks
//! them: [`track`] (metrics of every request), [`guard`] (refuses new requests while stopping,
//! bounds each request's time); and around each business handler [`ratelimit`] (the tower
//! service of the rate limiter) and [`faults`] (injected latency and errors).
//!
//! Room: part of `http/`; its files use [`crate::ratelimit`], [`crate::metrics`],
//! [`crate::exchange`], [`crate::domain`] and the `http` modules `state`, `error` and `auth`.

pub mod faults;
pub mod guard;
pub mod ratelimit;
pub mod track;

/// The service `poll_ready` readied, for a future that calls it later; a clone takes its place
/// for the next call. (Only the readied instance may be called: its clones are not ready.)
pub(crate) fn take_readied<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}
