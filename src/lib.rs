//! The Foresight relayer operator.
//!
//! # Layout
//! - [`Error`] and [`Result`]: the one error type of the operator.
//! - `crd` (coming with the RelayerDeployment API): the custom resource types.
//! - `controller`, `resources/`, `rollout`, `gates`: reconciliation, child builders, the
//!   blue-green state machine and the health gates (later issues).
//!
//! Today the package is a compiling skeleton: the binary parses its arguments and exits.

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes api: {0}")]
    Kube(#[source] kube::Error),
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
        }
    }
}

/// Result with the operator's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
