//! Rate-limiter benchmark on `GET /v2/depth`, all scenarios in one run, interleaved in rounds:
//!
//! - `off`: the relayer with the limiter off (the baseline);
//! - `off-again`: the same relayer again, a control: its ratio to `off` shows how far two runs
//!   of the same code differ on this machine (the noise floor of every other ratio);
//! - `memory`: all four tiers, in-memory counters;
//! - `redis`: all four tiers, Redis counters (one EVALSHA per request);
//! - `naive-zset`: the naive reference design, one Redis sorted-set sliding log per tier and a
//!   round trip per tier (MULTI: ZREMRANGEBYSCORE, ZADD, ZCARD, PEXPIRE).
//!
//! Then, side by side, `off`, `off-again` and `memory` (those of them chosen) once more, served
//! at the same time on the same core, each by a relayer thread of its own and loaded by a wrk of
//! its own. Each thread's CPU time over the requests it served is its cost per request, taken in
//! the same seconds as the others': the machine's drift, which moves one-after-another runs by
//! ±20 %, reaches them all alike. `off`'s cost over another's is that one's capacity relative to
//! `off` (requests/s the core serves when it does nothing else), split into user and kernel time.
//!
//! Limits are set high so nothing is denied: this measures the limiter's cost, not its answers.
//! The market holds `BOOK_LEVELS` (default 100) resting levels per side; `BOOK_LEVELS=0` gives
//! the empty book, where the limiter's share of each request is largest.
//! Each request carries an API key, so the per-user tier applies too. `BENCH_CONNECTIONS` sets
//! wrk's connections (default 32).
//!
//! Run with `scripts/bench-ratelimit.sh` (it installs `wrk` and `redis-server` when missing), or
//! `cargo run --release -p relayer --example ratelimit_bench -- [seconds per run] [rounds]
//! [scenarios, e.g. off,memory]`.

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use relayer::AppState;
use relayer::clock::{Clock, SystemClock};
use relayer::config::RelayerConfig;
use relayer::ratelimit::config::TierLimit;
use relayer::ratelimit::counters::{
    Check, CounterStore, Decision, MemoryCounters, Outcomes, RedisCounters,
};
use relayer::ratelimit::window::Outcome;
use relayer::store::{RedisTarget, Store, StoreError};
use support::median;

/// The relayer binary's allocator, so the relayer measured here is the one that ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USER: &str = "0xa11ce00000000000000000000000000000000001";
const ADMIN: &str = "bench-admin-token-0123456789";
const SCENARIOS: [&str; 5] = ["off", "off-again", "memory", "redis", "naive-zset"];

/// The naive reference: a sorted-set log per tier, one MULTI round trip per tier, checked one
/// tier after another (a request denied late still consumed the earlier tiers' quota).
struct NaiveZsetLog {
    conn: ConnectionManager,
    seq: AtomicU64,
}

impl std::fmt::Debug for NaiveZsetLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NaiveZsetLog")
    }
}

impl CounterStore for NaiveZsetLog {
    fn check<'a>(&'a self, checks: &'a [Check<'a>]) -> BoxFuture<'a, Result<Decision, StoreError>> {
        Box::pin(async move {
            let now = SystemClock.now_ms();
            let mut outcomes = Outcomes::new();
            for c in checks {
                let member = format!("{now}-{}", self.seq.fetch_add(1, Ordering::Relaxed));
                let key = format!("naive:{}", c.key);
                let mut conn = self.conn.clone();
                let (count,): (u64,) = redis::pipe()
                    .atomic()
                    .zrembyscore(&key, "-inf", now.saturating_sub(c.spec.window_ms))
                    .ignore()
                    .zadd(&key, &member, now)
                    .ignore()
                    .zcard(&key)
                    .pexpire(&key, i64::try_from(c.spec.window_ms).unwrap_or(i64::MAX))
                    .ignore()
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                outcomes.push(Outcome {
                    allowed: count <= c.spec.limit,
                    count,
                    limit: c.spec.limit,
                    remaining: c.spec.limit.saturating_sub(count),
                    retry_after_ms: 0,
                    reset_ms: c.spec.window_ms,
                });
            }
            Ok(Decision {
                outcomes,
                now_ms: now,
            })
        })
    }
}

/// A command for the load side (wrk, redis-server): pinned to `BENCH_CLIENT_CPU` when set, so
/// the relayer (pinned to another CPU by the caller) does not share its core with the client.
fn client_command(program: &str) -> Command {
    match std::env::var("BENCH_CLIENT_CPU") {
        Ok(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu, program]);
            c
        }
        Err(_) => Command::new(program),
    }
}

/// CPU time used so far, in µs: in user space and in the kernel.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    user: u64,
    kernel: u64,
}

impl Cpu {
    fn total(self) -> u64 {
        self.user + self.kernel
    }
}

/// CPU time this process (the relayer under test) has used, from /proc/self/stat.
fn process_cpu() -> anyhow::Result<Cpu> {
    cpu("/proc/self/stat")
}

/// CPU time one thread of this process has used.
fn thread_cpu(tid: u32) -> anyhow::Result<Cpu> {
    cpu(&format!("/proc/self/task/{tid}/stat"))
}

/// User and system time from a `/proc` stat file.
fn cpu(path: &str) -> anyhow::Result<Cpu> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    // NB: fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("malformed {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Linux reports these in USER_HZ, 100 per second on every supported architecture.
    Ok(Cpu {
        user: ticks(11) * 10_000,
        kernel: ticks(12) * 10_000,
    })
}

/// This thread's id (as `/proc/self/task` names it).
fn thread_id() -> anyhow::Result<u32> {
    let link = std::fs::read_link("/proc/thread-self").context("read /proc/thread-self")?;
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no thread id in {}", link.display()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> anyhow::Result<Redis> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let child = client_command("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start redis-server (apt-get install redis-server)")?;
    let redis = Redis {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..100 {
        if redis_cli(port, &["PING"]).is_ok_and(|o| o.contains("PONG")) {
            return Ok(redis);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("redis-server did not answer on port {port}")
}

fn redis_cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .context("run redis-cli")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn commandstat(port: u16, command: &str) -> anyhow::Result<u64> {
    let info = redis_cli(port, &["INFO", "commandstats"])?;
    let prefix = format!("cmdstat_{command}:calls=");
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

struct Run {
    rps: f64,
    /// Relayer CPU time per request served, µs.
    cpu_us: f64,
    /// The part of it spent in the kernel, µs.
    kernel_us: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
}

fn parse_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Some(v) = text.strip_suffix("us") {
        v.parse::<f64>().ok().map(|v| v / 1000.0)
    } else if let Some(v) = text.strip_suffix("ms") {
        v.parse().ok()
    } else if let Some(v) = text.strip_suffix('s') {
        v.parse::<f64>().ok().map(|v| v * 1000.0)
    } else {
        None
    }
}

fn wrk(url: &str, key: &str, seconds: u64) -> anyhow::Result<Run> {
    let out = client_command("wrk")
        .args([
            "-t1",
            &format!("-c{}", connections()),
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
        ])
        .arg(format!("authorization: Bearer {key}"))
        .arg(url)
        .output()
        .context("run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
    };
    let rps = field("Requests/sec:").and_then(|v| v.trim().parse().ok());
    let p50 = field("50%").and_then(|v| parse_ms(&v));
    let p99 = field("99%").and_then(|v| parse_ms(&v));
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let non_2xx = field("Non-2xx or 3xx responses:");
    if let Some(n) = non_2xx {
        bail!("{n} non-2xx responses: the benchmark must not be rate limited\n{text}");
    }
    match (rps, p50, p99, requests) {
        (Some(rps), Some(p50_ms), Some(p99_ms), Some(requests)) => Ok(Run {
            rps,
            cpu_us: 0.0,
            kernel_us: 0.0,
            p50_ms,
            p99_ms,
            requests,
        }),
        _ => bail!("cannot read wrk's output:\n{text}"),
    }
}

fn config() -> RelayerConfig {
    let mut config = RelayerConfig {
        admin_token: Some(ADMIN.to_owned()),
        ..RelayerConfig::default()
    };
    let huge = |window_ms| TierLimit {
        window_ms,
        max_requests: 1_000_000_000,
    };
    let limits = &mut config.rate_limit;
    limits.global = Some(huge(1_000));
    limits.per_ip = Some(huge(60_000));
    limits.per_user = Some(huge(60_000));
    limits.per_endpoint = BTreeMap::from([("GET /v2/depth".to_owned(), huge(60_000))]);
    config.log.filter = "error".to_owned();
    config
}

// NB: one worker: the script pins this process to one CPU and the load to the other.
/// Rests `levels` bids and `levels` asks, one order per price, in the benchmarked market.
async fn populate(state: &AppState, levels: u64) -> anyhow::Result<()> {
    use relayer::domain::{Asset, MarketKey, Side, UserId};
    let maker = UserId::parse("userId", "0xb0b0000000000000000000000000000000000002")?;
    let market = MarketKey::parse("marketKey", "80002:1")?;
    let exchange = state.exchange();
    exchange
        .deposit(&maker, Asset::Collateral, 1_000_000_000)
        .await?;
    exchange
        .deposit(&maker, Asset::Shares(market.clone()), 1_000_000_000)
        .await?;
    for i in 0..levels {
        for (side, price) in [
            (Side::Buy, 100_000 + i * 1_000),
            (Side::Sell, 600_000 + i * 1_000),
        ] {
            let order = relayer::exchange::NewOrder {
                order_id: format!("book-{side:?}-{i}"),
                market_key: market.clone(),
                user_id: maker.clone(),
                side,
                price,
                amount: 10,
            };
            exchange.place(order, 0).await?;
        }
    }
    Ok(())
}

/// A relayer on a thread of its own (a current-thread runtime), so that its CPU time can be
/// read apart from the other relayers served side by side in this process.
struct Threaded {
    target: String,
    key: String,
    tid: u32,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

/// Starts `scenario` (`off`, `off-again` or `memory`) on a thread of its own.
fn start_threaded(scenario: &'static str, levels: u64) -> anyhow::Result<Threaded> {
    let (ready, readied) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // NB: named after the scenario, so a profiler tells the three relayers apart.
    let thread = std::thread::Builder::new()
        .name(scenario.to_owned())
        .spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let counters: Option<Arc<dyn CounterStore>> = match scenario {
                    "memory" => Some(Arc::new(MemoryCounters::new(
                        100_000,
                        Arc::new(SystemClock),
                    ))),
                    _ => None,
                };
                let state = AppState::with_limiter(config(), Store::memory(), counters)?;
                let user = relayer::domain::UserId::parse("userId", USER)?;
                let (_, key) = state.exchange().issue_api_key(&user, 0).await?;
                populate(&state, levels).await?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let target = format!(
                    "http://{}/v2/depth?marketKey=80002:1",
                    listener.local_addr()?
                );
                let _ = ready.send((target, key, thread_id()?));
                relayer::serve(listener, state, async move {
                    let _ = stopped.await;
                })
                .await?;
                Ok(())
            })
        })
        .context("spawn a relayer thread")?;
    match readied.recv() {
        Ok((target, key, tid)) => Ok(Threaded {
            target,
            key,
            tid,
            stop,
            thread,
        }),
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e.context(format!("start the {scenario} relayer"))),
            _ => bail!("the {scenario} relayer's thread stopped before serving"),
        },
    }
}

/// One side-by-side round: every scenario served at once, on this process's one core, each by a
/// relayer thread of its own and loaded by a wrk of its own for `seconds`. Per scenario: the
/// requests/s it served and its thread's CPU µs per request, both from the same seconds as the
/// others', so a drift of the machine's speed reaches them all alike.
fn side_by_side_round(
    scenarios: &[&'static str],
    levels: u64,
    seconds: u64,
) -> anyhow::Result<Vec<Run>> {
    let relayers = scenarios
        .iter()
        .map(|s| start_threaded(s, levels))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let before = relayers
        .iter()
        .map(|r| thread_cpu(r.tid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let loads: Vec<_> = relayers
        .iter()
        .map(|r| {
            let (target, key) = (r.target.clone(), r.key.clone());
            std::thread::spawn(move || wrk(&target, &key, seconds))
        })
        .collect();
    let mut runs = Vec::new();
    for load in loads {
        runs.push(
            load.join()
                .map_err(|_| anyhow::anyhow!("a wrk thread panicked"))??,
        );
    }
    for ((run, relayer), before) in runs.iter_mut().zip(&relayers).zip(before) {
        let after = thread_cpu(relayer.tid)?;
        #[allow(clippy::cast_precision_loss)]
        {
            let requests = run.requests.max(1) as f64;
            run.cpu_us = after.total().saturating_sub(before.total()) as f64 / requests;
            run.kernel_us = after.kernel.saturating_sub(before.kernel) as f64 / requests;
        }
    }
    for relayer in relayers {
        let _ = relayer.stop.send(());
        relayer
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("a relayer thread panicked"))??;
    }
    Ok(runs)
}

/// The side-by-side measurement of the in-process scenarios among `scenarios`, over `rounds`.
fn side_by_side(
    scenarios: &[&'static str],
    levels: u64,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let chosen: Vec<&'static str> = ["off", "off-again", "memory"]
        .into_iter()
        .filter(|s| scenarios.contains(s))
        .collect();
    if chosen.len() < 2 {
        return Ok(());
    }
    let mut results: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for round in 0..rounds {
        let runs = side_by_side_round(&chosen, levels, seconds)?;
        for (scenario, run) in chosen.iter().zip(runs) {
            eprintln!(
                "side by side, round {} {scenario:>10}: {:>8.0} req/s  {:>5.1} µs CPU/req ({:.1} in the kernel)",
                round + 1,
                run.rps,
                run.cpu_us,
                run.kernel_us,
            );
            results.entry(scenario).or_default().push(run);
        }
    }
    println!(
        "\nSide by side: {} served at once on the one core, each by its own thread and its own wrk (-t1 -c{}), {rounds} rounds of {seconds} s.",
        chosen.join(", "),
        connections()
    );
    println!(
        "CPU µs/req is each relayer thread's own CPU time over the requests it served, taken in the same seconds as the others'; capacity/off is off's CPU/req over this one's (requests/s the core would serve, as a ratio), median of the rounds."
    );
    println!(
        "{:<11} {:>9} {:>11} {:>10} {:>11} {:>13}",
        "scenario", "req/s", "CPU µs/req", "user µs", "kernel µs", "capacity/off"
    );
    for s in &chosen {
        let capacity: Vec<f64> = results["off"]
            .iter()
            .zip(&results[s])
            .map(|(o, r)| o.cpu_us / r.cpu_us)
            .collect();
        println!(
            "{s:<11} {:>9.0} {:>11.1} {:>10.1} {:>11.1} {:>13.3}",
            median(results[s].iter().map(|r| r.rps).collect()),
            median(results[s].iter().map(|r| r.cpu_us).collect()),
            median(results[s].iter().map(|r| r.cpu_us - r.kernel_us).collect()),
            median(results[s].iter().map(|r| r.kernel_us).collect()),
            median(capacity.clone())
        );
        if *s != "off" {
            println!(
                "  {s}/off capacity per round: {:?}",
                per_round(capacity.iter().copied())
            );
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = support::arg(args.next(), 3, "seconds per run")?;
    let rounds: usize = support::arg(args.next(), 7, "rounds")?;
    // Resting levels per side in the market (GET /v2/depth returns up to 50 of them).
    let levels: u64 = std::env::var("BOOK_LEVELS")
        .map_or(Ok(100), |v| v.parse())
        .context("BOOK_LEVELS")?;
    // Optional: a comma-separated subset of the scenarios (for profiling one of them).
    let scenarios = support::scenarios(&SCENARIOS, args.next())?;
    if !scenarios.contains(&"off") || rounds == 0 {
        bail!("the scenarios must include `off`, the baseline, and there must be a round");
    }
    let redis = start_redis()?;
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let client = redis::Client::open(url.as_str())?;
    let naive_conn = ConnectionManager::new(client).await?;

    let mut results: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    let mut round_trips = Vec::new();
    for round in 0..rounds {
        // Every other round runs the scenarios in reverse, so a drift of the machine's speed
        // during a round does not favour the scenarios that run first.
        let mut order = scenarios.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for &scenario in &order {
            let counters: Option<Arc<dyn CounterStore>> = match scenario {
                "off" | "off-again" => None,
                "memory" => Some(Arc::new(MemoryCounters::new(
                    100_000,
                    Arc::new(SystemClock),
                ))),
                "redis" => Some(Arc::new(RedisCounters::connect(
                    &RedisTarget::standalone(url.clone()),
                    &format!("bench{round}:"),
                    Duration::from_secs(1),
                )?)),
                _ => Some(Arc::new(NaiveZsetLog {
                    conn: naive_conn.clone(),
                    seq: AtomicU64::new(0),
                })),
            };
            let state = AppState::with_limiter(config(), Store::memory(), counters)
                .expect("state builds without a settlement URL");
            let user = relayer::domain::UserId::parse("userId", USER)?;
            let (_, key) = state.exchange().issue_api_key(&user, 0).await?;
            populate(&state, levels).await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(relayer::serve(listener, state, async move {
                let _ = stopped.await;
            }));
            let target = format!("http://{addr}/v2/depth?marketKey=80002:1");
            redis_cli(redis.port, &["CONFIG", "RESETSTAT"])?;
            let cpu_before = process_cpu()?.total();
            let mut run = tokio::task::spawn_blocking({
                let key = key.clone();
                move || wrk(&target, &key, seconds)
            })
            .await??;
            #[allow(clippy::cast_precision_loss)]
            {
                run.cpu_us = process_cpu()?.total().saturating_sub(cpu_before) as f64
                    / run.requests.max(1) as f64;
            }
            if scenario == "redis" {
                let evalsha = commandstat(redis.port, "evalsha")?;
                #[allow(clippy::cast_precision_loss)]
                round_trips.push(evalsha as f64 / run.requests as f64);
            }
            let _ = stop.send(());
            let _ = server.await;
            eprintln!(
                "round {} {scenario:>10}: {:>8.0} req/s  {:>5.1} µs CPU/req  p50 {:>6.2} ms  p99 {:>6.2} ms",
                round + 1,
                run.rps,
                run.cpu_us,
                run.p50_ms,
                run.p99_ms
            );
            results.entry(scenario).or_default().push(run);
        }
    }

    let stat = |s: &str, f: fn(&Run) -> f64| median(results[s].iter().map(f).collect());
    // Ratios are paired: each round's run over the same round's baseline (run next to it), then
    // the median over rounds. The machine's speed drifts between rounds; a pair shares it.
    let ratio = |s: &str, base: &str, f: fn(&Run) -> f64| {
        median(
            results[s]
                .iter()
                .zip(&results[base])
                .map(|(r, b)| f(r) / f(b))
                .collect(),
        )
    };
    println!(
        "\nGET /v2/depth of a book with {levels} levels per side, {rounds} rounds of {seconds} s per scenario (wrk -t1 -c{}).",
        connections()
    );
    println!(
        "Absolute figures are medians over rounds; ratios are medians of each round's ratio to that round's `off` run."
    );
    println!(
        "{:<11} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10} {:>10}",
        "scenario", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "rps/off", "p99/off", "CPU/off"
    );
    for &s in &scenarios {
        println!(
            "{s:<11} {:>9.0} {:>9.2} {:>9.2} {:>11.1} {:>10.3} {:>10.3} {:>10.3}",
            stat(s, |r| r.rps),
            stat(s, |r| r.p50_ms),
            stat(s, |r| r.p99_ms),
            stat(s, |r| r.cpu_us),
            ratio(s, "off", |r| r.rps),
            ratio(s, "off", |r| r.p99_ms),
            ratio(s, "off", |r| r.cpu_us)
        );
    }
    for s in ["off-again", "memory"] {
        if let Some(runs) = results.get(s) {
            println!(
                "{s}/off throughput per round: {:?}",
                per_round(runs.iter().zip(&results["off"]).map(|(m, o)| m.rps / o.rps))
            );
        }
    }
    if results.contains_key("redis") && results.contains_key("naive-zset") {
        println!(
            "redis limiter vs naive-zset throughput: {:.2}x",
            ratio("redis", "naive-zset", |r| r.rps)
        );
    }
    println!(
        "redis round trips per request (EVALSHA calls / requests served, per round): {:?}",
        per_round(round_trips.iter().copied())
    );
    let chosen = scenarios.clone();
    tokio::task::spawn_blocking(move || side_by_side(&chosen, levels, seconds, rounds)).await??;
    Ok(())
}

/// Per-round figures, three decimals each.
fn per_round(values: impl Iterator<Item = f64>) -> Vec<String> {
    values.map(|v| format!("{v:.3}")).collect()
}

/// Concurrent connections wrk keeps open (`BENCH_CONNECTIONS`, default 32).
fn connections() -> u32 {
    std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32)
}
