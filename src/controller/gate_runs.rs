//! The health gate running per RelayerDeployment: at most one per object (a cutover runs one
//! step at a time), started and stopped by the cutover reconcile, read as a [`RunningGate`]
//! snapshot. Keeps the `gates_running` gauge equal to the number of running gates.
//!
//! May use: [`crate::gates::runner`] (the [`GateRun`] it holds), [`crate::gates::Tally`],
//! [`crate::rollout::GateKind`], [`crate::crd`].

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kube::runtime::reflector::ObjectRef;
use prometheus_client::metrics::gauge::Gauge;

use crate::crd::RelayerDeployment;
use crate::gates::Tally;
use crate::gates::runner::GateRun;
use crate::rollout::GateKind;

/// What a reconcile sees of the gate running for an object.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningGate {
    /// Which gate.
    pub kind: GateKind,
    /// The revision it judges.
    pub revision: String,
    /// Its tally at the moment it was read.
    pub tally: Tally,
}

/// The gate running per object. Dropping a gate (on [`GateRuns::stop`] or when a new one
/// replaces it) stops its tasks.
pub struct GateRuns {
    running: Mutex<HashMap<ObjectRef<RelayerDeployment>, Active>>,
    /// `relayer_operator_gates_running`: one per entry of `running`.
    gauge: Gauge,
}

struct Active {
    kind: GateKind,
    revision: String,
    run: GateRun,
}

impl GateRuns {
    /// No gate running; `gauge` counts the running ones from now on.
    pub fn new(gauge: Gauge) -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
            gauge,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectRef<RelayerDeployment>, Active>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The gate running for `key`, with its tally now.
    pub fn observe(&self, key: &ObjectRef<RelayerDeployment>) -> Option<RunningGate> {
        let running = self.lock();
        let active = running.get(key)?;
        Some(RunningGate {
            kind: active.kind,
            revision: active.revision.clone(),
            tally: active.run.tally(),
        })
    }

    /// Makes `run` the gate of `key`, stopping the one it replaces.
    pub fn start(
        &self,
        key: ObjectRef<RelayerDeployment>,
        kind: GateKind,
        revision: String,
        run: GateRun,
    ) {
        let replaced = self.lock().insert(
            key,
            Active {
                kind,
                revision,
                run,
            },
        );
        if replaced.is_none() {
            self.gauge.inc();
        }
    }

    /// Stops the gate of `key`, if one runs.
    pub fn stop(&self, key: &ObjectRef<RelayerDeployment>) {
        let stopped = self.lock().remove(key);
        if stopped.is_some() {
            self.gauge.dec();
        }
    }
}
