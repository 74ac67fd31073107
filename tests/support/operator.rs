//! The operator's controller running inside the test process, stopped when dropped.

use std::sync::Arc;

use relayer_operator::controller;
use relayer_operator::metrics::Metrics;

/// A controller task of this test process; `metrics` is what it reports.
pub struct InProcessOperator {
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcessOperator {
    /// Runs `controller::run` with `config` against `client` until dropped.
    pub fn start(client: kube::Client, config: controller::Config) -> Self {
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(client, config, metrics.clone(), async {
            let _ = stopped.await;
        }));
        Self {
            metrics,
            stop: Some(stop),
            task,
        }
    }
}

impl Drop for InProcessOperator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}
