//! `relayer-operator`: the operator binary (skeleton until the RelayerDeployment API lands).

use clap::Parser;

/// Command-line arguments of the operator.
#[derive(Debug, Parser)]
#[command(version, about = "Reconciles RelayerDeployment resources")]
struct Args {
    /// Log filter, e.g. `info` or `relayer_operator=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .init();
    tracing::info!("relayer-operator skeleton: no controllers are wired yet");
    Ok(())
}
