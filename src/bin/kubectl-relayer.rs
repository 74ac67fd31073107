//! `kubectl-relayer`: the `kubectl relayer` plugin. Shows and drives the blue-green cutovers of
//! RelayerDeployments through the operator's interface (spec patches and annotations, see
//! `relayer_operator::plugin`), so everything it does is also possible with plain kubectl.
//!
//! Install by putting the binary on PATH (`cargo install --path . --bin kubectl-relayer`), or
//! with krew from the manifest and archive `scripts/krew.sh` writes; kubectl then runs it as
//! `kubectl relayer ...`.
//!
//! May use: the library's `plugin` and `crd` only.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use relayer_operator::crd::RelayerDeployment;
use relayer_operator::plugin::{self, PluginError, Request};

/// Conflicts tolerated while the operator writes status between our read and our patch.
const CONFLICT_RETRIES: usize = 5;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl relayer",
    version,
    about = "Show and drive blue-green cutovers of RelayerDeployments",
    after_help = "Exit codes: 0 ok; 1 API or connection error, or (status --watch) the cutover was \
                  aborted or timed out; 2 usage; 3 no such RelayerDeployment; 4 no cutover in \
                  progress (or not in a step the command applies to); 5 forbidden; 6 invalid \
                  request."
)]
struct Args {
    /// Namespace of the RelayerDeployment (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config or the in-cluster config).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Output format: human-readable text (default), or as JSON or YAML the object (history,
    /// explain: their own document).
    #[arg(short = 'o', long, global = true, value_enum)]
    output: Option<Output>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Phase, colours, revisions, cutover step and progress, gate results.
    Status {
        name: String,
        /// Follow changes until the cutover settles: exit 0 when Stable on the current spec,
        /// 1 when aborted.
        #[arg(short, long)]
        watch: bool,
        /// With --watch: give up (exit 1) after this long, e.g. 90s, 10m.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Roll out a new image (a blue-green cutover).
    SetImage { name: String, image: String },
    /// Promote the preview now (or keep a new colour whose post-promotion gate failed).
    Promote { name: String },
    /// Abort the cutover: traffic stays on, or returns to, the last good colour.
    Abort { name: String },
    /// Start an aborted cutover again.
    Retry { name: String },
    /// Hold the rollout where it is (an abort still works).
    Pause { name: String },
    /// Continue a paused rollout.
    Resume { name: String },
    /// Roll back to the previous revision, or to a kept one: image, pod, config, store, Secret
    /// references and autoscaling.
    Rollback {
        name: String,
        /// Revision number (see `history`).
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// Kept revisions, newest first, and which colour runs each.
    History { name: String },
    /// Why each gate of the current or last cutover passed, failed or is waiting, with the
    /// numbers (samples, limits, medians, p-values); -o json|yaml prints the same as a document.
    Explain { name: String },
}

impl Cmd {
    fn name(&self) -> &str {
        match self {
            Cmd::Status { name, .. }
            | Cmd::SetImage { name, .. }
            | Cmd::Promote { name }
            | Cmd::Abort { name }
            | Cmd::Retry { name }
            | Cmd::Pause { name }
            | Cmd::Resume { name }
            | Cmd::Rollback { name, .. }
            | Cmd::History { name }
            | Cmd::Explain { name } => name,
        }
    }

    fn request(&self) -> Option<Request> {
        Some(match self {
            Cmd::SetImage { image, .. } => Request::SetImage(image.clone()),
            Cmd::Promote { .. } => Request::Promote,
            Cmd::Abort { .. } => Request::Abort,
            Cmd::Retry { .. } => Request::Retry,
            Cmd::Pause { .. } => Request::Pause,
            Cmd::Resume { .. } => Request::Resume,
            Cmd::Rollback { to_revision, .. } => Request::Rollback(*to_revision),
            Cmd::Status { .. } | Cmd::History { .. } | Cmd::Explain { .. } => return None,
        })
    }
}

/// `90`, `90s`, `10m`, `1h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s or 10m"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{text:?}: use s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1))
        }
    }
}

async fn client(args: &Args) -> Result<(Client, String), PluginError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&args.kubeconfig, &args.context) {
        (Some(path), _) => match Kubeconfig::read_from(path) {
            Ok(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        },
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| e.to_string()),
        (None, None) => Config::infer().await.map_err(|e| e.to_string()),
    }
    .map_err(|e| PluginError::Api(format!("no usable kubeconfig: {e}")))?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)
        .map_err(|e| PluginError::Api(format!("building the client: {e}")))?;
    Ok((client, namespace))
}

async fn run(args: Args) -> Result<ExitCode, PluginError> {
    let (client, namespace) = client(&args).await?;
    let api: Api<RelayerDeployment> = Api::namespaced(client, &namespace);
    let name = args.command.name().to_owned();
    let kube_error = |e: kube::Error| PluginError::from_kube(e, &name, &namespace);
    let get = || async { api.get(&name).await.map_err(kube_error) };

    match &args.command {
        Cmd::Status { watch, timeout, .. } => {
            let rd = get().await?;
            print_status(&rd, args.output)?;
            if !watch {
                return Ok(ExitCode::SUCCESS);
            }
            follow(&api, &name, &namespace, rd, args.output, *timeout).await
        }
        Cmd::History { .. } => {
            let rd = get().await?;
            match args.output {
                None => print!("{}", plugin::render_history(&rd)),
                Some(format) => print_document(&plugin::history_document(&rd), format)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Explain { .. } => {
            let rd = get().await?;
            let explanation = plugin::explanation(&rd, now_ms());
            match args.output {
                None => print!("{}", plugin::explain::render(&explanation)),
                Some(format) => print_document(&explanation, format)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let Some(request) = command.request() else {
                return Ok(ExitCode::SUCCESS);
            };
            let updated = apply_request(&api, &name, &namespace, &request).await?;
            match args.output {
                None => println!("{}", done_message(&name, &request)),
                Some(format) => print_document(&updated, format)?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads the object, checks the request against its state and patches it; a command that
/// depends on the state is fenced by the resourceVersion it was checked against and checked
/// again after a conflict.
async fn apply_request(
    api: &Api<RelayerDeployment>,
    name: &str,
    namespace: &str,
    request: &Request,
) -> Result<RelayerDeployment, PluginError> {
    let kube_error = |e: kube::Error| PluginError::from_kube(e, name, namespace);
    let fenced = matches!(
        request,
        Request::Promote | Request::Abort | Request::Retry | Request::Rollback(_)
    );
    let mut attempt = 0;
    loop {
        attempt += 1;
        let rd = api.get(name).await.map_err(kube_error)?;
        let mut patch = plugin::plan(request, &rd)?;
        if fenced && let Some(meta) = patch.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.insert(
                "resourceVersion".to_owned(),
                serde_json::Value::from(rd.metadata.resource_version.clone()),
            );
        }
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => return Ok(updated),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < CONFLICT_RETRIES => {}
            Err(error) => return Err(kube_error(error)),
        }
    }
}

fn done_message(name: &str, request: &Request) -> String {
    let object = format!("relayerdeployment.relayer.foresight.dev/{name}");
    match request {
        Request::SetImage(image) => format!(
            "{object} image set to {image}; follow the cutover with: kubectl relayer status {name} --watch"
        ),
        Request::Promote => format!("{object} promote requested"),
        Request::Abort => format!("{object} abort requested"),
        Request::Retry => format!("{object} retry requested"),
        Request::Pause => format!("{object} paused"),
        Request::Resume => format!("{object} resumed"),
        Request::Rollback(Some(n)) => format!("{object} rollback to revision {n} requested"),
        Request::Rollback(None) => format!("{object} rollback to the previous revision requested"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn print_status(rd: &RelayerDeployment, output: Option<Output>) -> Result<(), PluginError> {
    match output {
        None => {
            print!("{}", plugin::render_status(rd, now_ms()));
            Ok(())
        }
        Some(format) => print_document(rd, format),
    }
}

fn print_document<T: serde::Serialize>(value: &T, format: Output) -> Result<(), PluginError> {
    let text = match format {
        Output::Json => serde_json::to_string_pretty(value)
            .map(|t| format!("{t}\n"))
            .map_err(|e| PluginError::Api(format!("rendering JSON: {e}")))?,
        Output::Yaml => serde_yaml::to_string(value)
            .map(|t| format!("---\n{t}"))
            .map_err(|e| PluginError::Api(format!("rendering YAML: {e}")))?,
    };
    print!("{text}");
    Ok(())
}

/// Prints every change of the object until its cutover settles.
async fn follow(
    api: &Api<RelayerDeployment>,
    name: &str,
    namespace: &str,
    first: RelayerDeployment,
    output: Option<Output>,
    timeout: Option<Duration>,
) -> Result<ExitCode, PluginError> {
    if let Some(outcome) = plugin::settled(&first) {
        return Ok(settled_exit(&first, outcome));
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), config).applied_objects().boxed();
    let mut last = first.metadata.resource_version.clone();
    loop {
        let next = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        eprintln!(
                            "error: timed out after {:?} waiting for {namespace}/{name} to settle",
                            timeout.unwrap_or_default()
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            None => stream.next().await,
        };
        match next {
            Some(Ok(rd)) => {
                if rd.metadata.resource_version == last {
                    continue;
                }
                last = rd.metadata.resource_version.clone();
                if output.is_none() {
                    println!();
                }
                print_status(&rd, output)?;
                if let Some(outcome) = plugin::settled(&rd) {
                    return Ok(settled_exit(&rd, outcome));
                }
            }
            Some(Err(watcher::Error::InitialListFailed(kube::Error::Api(status))))
            | Some(Err(watcher::Error::WatchStartFailed(kube::Error::Api(status))))
                if status.code == 403 =>
            {
                return Err(PluginError::Forbidden(status.message.clone()));
            }
            Some(Err(error)) => {
                eprintln!("warning: watch interrupted ({error}); resuming");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            None => return Err(PluginError::Api("the watch ended".to_owned())),
        }
    }
}

fn settled_exit(rd: &RelayerDeployment, stable: bool) -> ExitCode {
    let name = rd.metadata.name.as_deref().unwrap_or("");
    if stable {
        eprintln!("{name}: Stable");
        ExitCode::SUCCESS
    } else {
        let reason = rd
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .and_then(|r| r.abort_reason.clone())
            .unwrap_or_default();
        eprintln!("{name}: cutover aborted: {reason}");
        ExitCode::FAILURE
    }
}
