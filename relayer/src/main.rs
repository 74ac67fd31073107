//! `relayer`: runs the relayer HTTP service: parses the arguments, loads the config, starts
//! tracing, builds the store and the state, starts saga recovery and serves until SIGTERM.
//!
//! Secrets stay out of its output: `--print-config` prints [`RelayerConfig::redacted`], and
//! the start-up log names the backends, never a URL or a credential.
//!
//! Room: the last; uses the library (`relayer::…`) through its public paths.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use relayer::config::{LogFormat, RelayerConfig};
use relayer::store::Store;

/// mimalloc instead of the system allocator: glibc's malloc spends a large and erratic share of
/// each request consolidating its free lists under the relayer's allocation pattern (many small
/// blocks beside response bodies of a few KiB); see "Benchmarks" in README.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command-line arguments; every config key can also be set with a `RELAYER_*` variable.
#[derive(Debug, Parser)]
#[command(version, about = "The Foresight order relayer")]
struct Args {
    /// YAML config file (camelCase keys); `RELAYER_*` variables override its keys.
    #[arg(long, env = "RELAYER_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (JSON, which is also valid YAML), every secret as
    /// `<redacted>`, and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = RelayerConfig::load(args.config.as_deref()).context("invalid configuration")?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&config.redacted())?);
        return Ok(());
    }
    let traces = init_tracing(&config)?;
    // NB: the store's errors name their key (`redisUrl`, `redis.caFile`, …) and never hold
    // the URL or a password.
    let store = Store::from_config(&config).context("cannot set up the store")?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        store = store.backend(),
        redis_tls = config.redis_url.as_deref().is_some_and(|u| u.starts_with("rediss://")),
        admin = config.admin_token.is_some(),
        settlement_credential = config.settlement.credential.is_some(),
        "relayer listening"
    );
    let recovery_interval = std::time::Duration::from_millis(config.saga.recovery_interval_ms);
    let state = relayer::AppState::new(config, store)?;
    // Finishes or compensates sagas abandoned by dead replicas: at start, then periodically.
    let sagas = state.exchange().sagas().clone();
    tokio::spawn(sagas.recover_periodically(recovery_interval, std::future::pending()));
    relayer::serve(listener, state, relayer::shutdown_signal()).await?;
    tracing::info!("relayer stopped");
    if let Some(traces) = traces {
        // NB: flushing blocks (at most 5 s, the SDK's shutdown bound), so off the runtime's threads.
        tokio::task::spawn_blocking(move || traces.shutdown()).await?;
    }
    Ok(())
}

/// Installs the log subscriber (`log.filter`, `log.format`) and, when the `OTEL_*` variables
/// ask for them, the OpenTelemetry layer (the relayer's own spans at `info`, whatever the log
/// filter says); answers the tracer provider to flush at exit.
fn init_tracing(config: &RelayerConfig) -> anyhow::Result<Option<relayer::otel::Tracing>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.filter)
        .with_context(|| format!("invalid config key `log.filter`: {:?}", config.log.filter))?;
    let logs = match config.log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    let (traces, spans) =
        match relayer::otel::install("relayer").context("invalid OTEL_* variable")? {
            Some((traces, tracer)) => {
                let spans = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(
                        tracing_subscriber::filter::Targets::new()
                            .with_target("relayer", tracing::Level::INFO),
                    );
                (Some(traces), Some(spans))
            }
            None => (None, None),
        };
    // NB: the log lines of a request then name the spans they happened in, each with its
    // `trace_id`, whatever level `log.filter` asks for.
    let our_spans = tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_span()
            && meta.target().starts_with("relayer")
            && *meta.level() <= tracing::Level::INFO
    });
    let logs = match spans {
        Some(_) => logs.with_filter(filter.or(our_spans)).boxed(),
        None => logs.with_filter(filter).boxed(),
    };
    tracing_subscriber::registry().with(spans).with(logs).init();
    Ok(traces)
}
