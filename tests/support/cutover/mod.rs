//! Support of the cutover tests: pods backed by real relayer processes in their own network
//! namespaces ([`netns`]), traffic through a kube-proxy stand-in that follows the active
//! Service's EndpointSlices and a load generator ([`traffic`]), an invariant watcher
//! ([`invariants`]), the shared Redis the pods use ([`store`]), a settlement stub
//! ([`settlement`]) and a write load with its checks afterwards ([`writes`]).
//!
//! Uses the rest of [`crate::support`] (control plane, pod simulator, HTTP client, metrics);
//! the tests that use it run as root (network namespaces) after `cargo build -p relayer`.

pub mod invariants;
pub mod netns;
pub mod settlement;
pub mod store;
pub mod traffic;
pub mod writes;

// NB: each test binary uses some of these.
#[allow(unused_imports)]
pub use invariants::{InvariantWatcher, Invariants};
#[allow(unused_imports)]
pub use netns::{NetnsBackend, NetnsGuard, RELAYER_PORT, host_address};
#[allow(unused_imports)]
pub use settlement::SettlementStub;
#[allow(unused_imports)]
pub use store::{RedisStore, random_secret};
#[allow(unused_imports)]
pub use traffic::{Load, LoadReport, Proxy};
#[allow(unused_imports)]
pub use writes::{
    Checked, Funding, Trader, Verification, WriteLoad, WriteReport, fund_traders, verify,
};
