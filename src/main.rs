//! `relayer-operator`: parses its arguments, then runs the RelayerDeployment controller while
//! it holds the leader Lease, with `/metrics`, `/health` and `/ready` on the side.
//!
//! May use: the library's `controller`, `controller::leader`, `metrics` and `telemetry`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use relayer_operator::controller::{self, leader};
use relayer_operator::metrics::{Metrics, RequestLabels};
use relayer_operator::telemetry::{self, Health};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Command-line arguments of the operator.
#[derive(Debug, Parser)]
#[command(version, about = "Reconciles RelayerDeployment resources")]
struct Args {
    /// Log filter, e.g. `info` or `relayer_operator=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
    /// Log JSON lines instead of text.
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
    /// Namespace to watch; all namespaces when absent.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the `/metrics`, `/health` and `/ready` server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    /// Run only while holding the leader Lease (turn off for a single local instance).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "relayer-operator")]
    lease_name: String,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Seconds a leader that stopped renewing keeps the Lease.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Networks of pod addresses the operator may contact for health gates, probe load and
    /// drain evidence (comma-separated CIDRs).
    #[arg(
        long,
        env = "POD_NETWORKS",
        default_value = "0.0.0.0/0,::/0",
        value_delimiter = ','
    )]
    pod_networks: Vec<controller::Network>,
    /// Networks a gate's webhooks may be at (comma-separated CIDRs). The default is the
    /// private ranges clusters use for Services and pods; link-local addresses (cloud
    /// metadata), loopback and public addresses need saying so.
    #[arg(
        long,
        env = "WEBHOOK_NETWORKS",
        default_value = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
        value_delimiter = ','
    )]
    webhook_networks: Vec<controller::Network>,
    /// Exchanges with pods (gate scrapes, drain evidence; probes have a pool of their own) in
    /// flight at once in the whole process; each reads at most 1 MiB, so this bounds that
    /// memory too.
    #[arg(long, env = "MAX_POD_REQUESTS", default_value_t = relayer_operator::gates::runner::DEFAULT_MAX_REQUESTS)]
    max_pod_requests: usize,
    /// Hosts a RelayerDeployment's Ingress may use: exact hosts or `*.suffix` (`*` is one
    /// DNS label), repeatable or comma-separated. Absent: any host.
    #[arg(
        long = "ingress-host-pattern",
        env = "INGRESS_HOST_PATTERNS",
        value_delimiter = ','
    )]
    ingress_host_patterns: Vec<relayer_operator::resources::HostPattern>,
    /// Types a RelayerDeployment's `spec.service.type` may take (comma-separated).
    #[arg(
        long,
        env = "ALLOWED_SERVICE_TYPES",
        default_value = "ClusterIP,NodePort",
        value_delimiter = ',',
        value_parser = relayer_operator::resources::parse_service_type
    )]
    allowed_service_types: Vec<relayer_operator::crd::ServiceType>,
    /// Seconds between resyncs of a converged RelayerDeployment.
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
}

// NB: two workers whatever the node's cores (tokio's default is one per core, and the chart sets
// no CPU limit). The watches and caches run on the main thread (`block_on`); the workers carry
// the reconciles (at most `controller::Config::concurrency`, mostly waiting on the API server),
// the connections, the metrics server and the gates. Each further worker costs resident memory
// of its own: 16 workers held 3.4 MiB more with 200 RelayerDeployments
// (scripts/bench-operator.sh).
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let traces =
        telemetry::init_logging(&args.log, args.log_json).context("invalid OTEL_* variable")?;
    let exit_code = run(args).await;
    if let Some(traces) = traces {
        // NB: flushing blocks (at most 5 s, the SDK's shutdown bound), so off the runtime's threads.
        tokio::task::spawn_blocking(move || traces.shutdown()).await?;
    }
    match exit_code? {
        0 => Ok(()),
        code => std::process::exit(code),
    }
}

/// Runs the operator until it is told to stop (0) or loses the leader Lease (1).
async fn run(args: Args) -> anyhow::Result<i32> {
    let metrics = Arc::new(Metrics::default());
    let client = client(&metrics).await?;
    let health = Health::new(metrics.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let listener = TcpListener::bind(&args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /health and /ready");
    let server = tokio::spawn(telemetry::serve(
        listener,
        health.clone(),
        stopped(stop_rx.clone()),
    ));

    let config = controller::Config {
        namespace: args.namespace.clone(),
        resync: Duration::from_secs(args.resync_seconds),
        pod_networks: args.pod_networks.clone(),
        webhook_networks: args.webhook_networks.clone(),
        max_pod_requests: args.max_pod_requests,
        ingress_host_patterns: args.ingress_host_patterns.clone(),
        allowed_service_types: args.allowed_service_types.clone(),
        ..controller::Config::default()
    };

    let mut exit_code = 0;
    if args.leader_election {
        let identity = args
            .identity
            .clone()
            .unwrap_or_else(|| format!("relayer-operator-{}", std::process::id()));
        let timing =
            leader::Timing::from_lease_duration(Duration::from_secs(args.lease_duration_seconds));
        let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
        let mut elector = leader::Elector::new(leases, &args.lease_name, &identity, timing);
        health.set_ready(true);
        tracing::info!(%identity, lease = %args.lease_name, "waiting for the leader lease");
        tokio::select! {
            () = elector.acquire() => {}
            () = stopped(stop_rx.clone()) => {
                server.await??;
                return Ok(0);
            }
        }
        tracing::info!(%identity, "leading");
        metrics.leader.set(1);
        // NB: the receiver only keeps the channel open; losing the Lease ends `keep_renewing`.
        let (leading_tx, _leading_rx) = watch::channel(true);
        let lost = tokio::select! {
            () = controller::run(client.clone(), config, metrics.clone(), stopped(stop_rx.clone())) => false,
            // Dropping the controller here aborts reconciles in flight: a leader that could not
            // renew must stop acting before anyone else may take over.
            () = elector.keep_renewing(leading_tx) => true,
        };
        metrics.leader.set(0);
        if lost {
            tracing::error!("lost the leader lease; exiting so a restart re-joins the election");
            exit_code = 1;
        } else if let Err(error) = elector.release().await {
            tracing::warn!(%error, "releasing the leader lease");
        }
    } else {
        health.set_ready(true);
        controller::run(client, config, metrics, stopped(stop_rx.clone())).await;
    }
    health.set_ready(false);
    if exit_code == 0 {
        server.await??;
    }
    Ok(exit_code)
}

/// A client whose every request is counted in `relayer_operator_api_requests_total`.
async fn client(metrics: &Arc<Metrics>) -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer()
        .await
        .context("no kubeconfig or in-cluster config")?;
    let counter = metrics.api_requests.clone();
    let layer =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            counter
                .get_or_create(&RequestLabels {
                    method: request.method().to_string(),
                })
                .inc();
            request
        });
    let client = kube::client::ClientBuilder::try_from(config)
        .context("building the Kubernetes client")?
        .with_layer(&layer)
        .build();
    Ok(client)
}

/// Completes once `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "listening for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "listening for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use relayer_operator::crd::ServiceType;

    use super::Args;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("relayer-operator").chain(args.iter().copied()))
    }

    #[test]
    fn without_flags_any_ingress_host_and_no_load_balancer_is_admitted() {
        let args = parse(&[]).expect("defaults");
        assert!(args.ingress_host_patterns.is_empty());
        assert_eq!(
            args.allowed_service_types,
            [ServiceType::ClusterIP, ServiceType::NodePort]
        );
    }

    #[test]
    fn host_patterns_repeat_or_split_on_commas_and_bad_values_stop_the_start() {
        let args = parse(&[
            "--ingress-host-pattern=*.apps.example.com,relayer.example.com",
            "--ingress-host-pattern",
            "*.preview.example.com",
            "--allowed-service-types=ClusterIP,LoadBalancer",
        ])
        .expect("flags");
        let patterns: Vec<String> = args
            .ingress_host_patterns
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            patterns,
            [
                "*.apps.example.com",
                "relayer.example.com",
                "*.preview.example.com"
            ]
        );
        assert_eq!(
            args.allowed_service_types,
            [ServiceType::ClusterIP, ServiceType::LoadBalancer]
        );
        assert!(parse(&["--ingress-host-pattern=*"]).is_err());
        assert!(parse(&["--allowed-service-types=ExternalName"]).is_err());
    }
}
