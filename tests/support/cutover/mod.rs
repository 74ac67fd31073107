//! Support of the cutover tests: pods backed by real relayer processes in their own network
//! namespaces ([`netns`]), traffic through a kube-proxy stand-in that follows the active
//! Service's EndpointSlices and a load generator ([`traffic`]), and an invariant watcher
//! ([`invariants`]).
//!
//! Uses the rest of [`crate::support`] (control plane, pod simulator, HTTP client); the tests
//! that use it run as root (network namespaces) after `cargo build -p relayer`.

pub mod invariants;
pub mod netns;
pub mod traffic;

// NB: each test binary uses some of these.
#[allow(unused_imports)]
pub use invariants::{InvariantWatcher, Invariants};
#[allow(unused_imports)]
pub use netns::{NetnsBackend, NetnsGuard, RELAYER_PORT};
#[allow(unused_imports)]
pub use traffic::{Load, LoadReport, Proxy};
