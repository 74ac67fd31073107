//! The Foresight relayer operator.
//!
//! # Layout
//! - [`Error`] and [`Result`]: the one error type of the operator.
//! - [`crd`]: the `RelayerDeployment` API types (spec, status, schema and CEL rules).
//! - [`resources`]: pure builders of every child object from a `RelayerDeployment`, and the
//!   status it reports ([`resources::status`], one condition-transition rule).
//! - [`controller`]: the kube-runtime `Controller`, its `Context` and per-object state,
//!   reconcile and error policy (a private `apply` module holds the server-side apply helpers,
//!   prune, the status write and Events).
//! - [`controller::cutover`]: the reconcile of a valid object as observe → decide
//!   ([`controller::cutover::decide`], pure) → record status → act.
//! - [`controller::leader`]: Lease-based leader election, so two replicas never both act.
//! - [`metrics`]: Prometheus metrics of the reconciler; [`telemetry`]: logging setup and the
//!   `/metrics`, `/health` and `/ready` server.
//! - [`rollout`]: the blue-green state machine (pure: state × event → next state + actions) and
//!   the layout of both colours it implies.
//! - [`gates`]: health gates: parsing the relayer's `/metrics` ([`gates::Exposition`] reads
//!   one series by name and labels, for tests too), deltas, verdicts, and the scrape, probe
//!   and drain-evidence tasks around them ([`gates::runner`], on hyper's client); the
//!   statistical judge ([`gates::stats`]) and what webhooks' answers mean ([`gates::webhook`]).
//! - [`notify`]: cutover notifications (pure): the outbox in status, dedupe keys, bodies,
//!   retries; the controller sends them.
//! - [`plugin`]: the pure core of the `kubectl relayer` plugin (`src/bin/kubectl-relayer.rs`).
//!
//! Rooms from the bottom up, each using only rooms listed before it: `crd` → `rollout` →
//! `resources` → `gates` → `notify` → `metrics` → `controller` → `telemetry`; `plugin` uses `crd` and the
//! annotation names of `controller::cutover`.

#![forbid(unsafe_code)]

pub mod controller;
pub mod crd;
pub mod gates;
pub mod metrics;
pub mod notify;
pub mod plugin;
pub mod resources;
pub mod rollout;
pub mod telemetry;

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes api: {0}")]
    Kube(#[source] kube::Error),
    /// The object cannot be reconciled as written (e.g. an invalid relayer config).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A child object could not be serialized or rendered.
    #[error("rendering {what}: {source}")]
    Render {
        /// Which object or document.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The relayer config could not be rendered to YAML.
    #[error("rendering the relayer config: {0}")]
    Yaml(#[source] serde_yaml::Error),
    /// An object the API server returned lacks a field every such object has.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The reconcile panicked (caught by `controller::caught`, so other objects go on).
    #[error("reconcile panicked: {0}")]
    Panicked(String),
    /// A child's name is taken by an object the RelayerDeployment does not control; nothing
    /// was written to it.
    #[error("{kind} {name} exists and {holder}; it is not this RelayerDeployment's to write")]
    NameCollision {
        /// Kind of the child.
        kind: String,
        /// Its name.
        name: String,
        /// Who controls the existing object, as a phrase ("has no controller", ...).
        holder: String,
    },
}

impl Error {
    /// Every label [`Error::metric_label`] returns (the operator's metrics create their series at
    /// zero).
    pub const METRIC_LABELS: [&'static str; 7] = [
        "kube",
        "invalid_spec",
        "render",
        "yaml",
        "missing",
        "panic",
        "name_collision",
    ];

    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Render { .. } => "render",
            Error::Yaml(_) => "yaml",
            Error::Missing(_) => "missing",
            Error::Panicked(_) => "panic",
            Error::NameCollision { .. } => "name_collision",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(error)
    }
}

/// Result with the operator's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
