//! The I/O around the pure gate logic: a task per running gate that scrapes the pods under
//! test, an optional probe load, and the drain evidence of a colour being left.
//!
//! Everything here is bounded: each exchange has one deadline for all of it (connect, request,
//! every byte of the body) and a body cap counted while it streams, the probe load has a fixed
//! rate, and every exchange holds a permit of the process-wide [`Budget`] (scrapes and drain
//! evidence from one pool, probes from another), so what pods can make the operator hold is at
//! most permits × cap whatever their number or answers. A task
//! ends when its gate decides or its [`GateRun`] is dropped. The one network client, [`get`],
//! is hyper's HTTP/1.1 client on a connection per request; it parses nothing by hand, so no
//! length a pod sends is used in arithmetic here.
//!
//! May use: [`super`] (the pure gate logic), [`crate::crd`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::stats::{Decision, Judge};
use super::webhook::{self, Answer};
use super::{Scrape, Tally, Window, judge, parse};
use crate::crd::{GateSpec, GateVerdict, WebhookSpec, WebhookStatus, webhook_target};

/// Bound of one whole HTTP exchange with a pod: connect, request, head and every byte of the
/// body. NB: one deadline, not one per read, so a pod that trickles an endless body is cut off
/// at 2 s like one that never answers.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/metrics` body read. A relayer's is a few kilobytes (a few dozen series, with
/// histogram buckets per route); 1 MiB leaves two orders of magnitude of room and still bounds
/// what one pod can make the operator hold. A longer body is an error, noticed as soon as that
/// many bytes arrived.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest probe answer read (and dropped): probes ask for small JSON documents.
pub const MAX_PROBE_BODY: usize = 64 * 1024;
/// Probes in flight at once in the whole process. NB: apart from the scrape permits, because
/// a slow release under a probe load holds rate × latency probes open (40/s at 1.5 s is 60),
/// which must not starve the scrapes nor thin the probe load below the rate the gate asked
/// for; 256 × [`MAX_PROBE_BODY`] is 16 MiB at worst.
pub const MAX_PROBES: usize = 256;
/// How long a scrape waits for a permit of the [`Budget`] before it counts as a scrape error:
/// long enough for a few rounds of exchanges that run into [`HTTP_TIMEOUT`].
const PERMIT_WAIT: Duration = Duration::from_secs(10);
/// Exchanges with pods in flight at once in the whole process, unless `--max-pod-requests`
/// says otherwise: 16 × [`MAX_BODY`] is 16 MiB of bodies at worst (about twice that while a
/// body becomes text), far inside the chart's 256 Mi memory limit.
pub const DEFAULT_MAX_REQUESTS: usize = 16;

/// The process-wide budget of exchanges with pods, shared by every gate of every object: a
/// permit per exchange in flight, scrapes and drain evidence from `--max-pod-requests`
/// permits, probes from [`MAX_PROBES`] of their own. Cheap to clone (clones share the permits).
#[derive(Debug, Clone)]
pub struct Budget {
    /// One permit per scrape or drain exchange that may be in flight; an exchange holds its
    /// permit until its body is read or it failed.
    permits: Arc<Semaphore>,
    /// One permit per probe in flight ([`MAX_PROBES`]); a probe without one is skipped.
    probes: Arc<Semaphore>,
    /// Permits in all (at least 1).
    size: usize,
}

impl Budget {
    /// A budget of `max_requests` scrape and drain exchanges at once (at least 1), and
    /// [`MAX_PROBES`] probes.
    pub fn new(max_requests: usize) -> Self {
        let size = max_requests.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(size)),
            probes: Arc::new(Semaphore::new(MAX_PROBES)),
            size,
        }
    }

    /// Scrape and drain exchanges in flight now.
    pub fn in_use(&self) -> usize {
        self.size.saturating_sub(self.permits.available_permits())
    }

    /// A permit, waiting up to `wait` for one.
    async fn acquire(&self, wait: Duration) -> Result<OwnedSemaphorePermit, String> {
        match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err("the pod request budget is closed".to_owned()),
            Err(_) => Err(format!(
                "no free pod request slot within {wait:?} (all {} of --max-pod-requests busy)",
                self.size
            )),
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_REQUESTS)
    }
}

/// One pod under test.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Pod name and uid, to tell a replaced pod from its predecessor.
    pub key: String,
    /// Pod IP and the relayer's port.
    pub addr: SocketAddr,
}

/// Where the pods are now; asked at every interval, so pods that come and go are followed.
pub trait Targets: Send + Sync + 'static {
    /// Pods under test.
    fn under_test(&self) -> Vec<Target>;
    /// Pods of the active colour (for relative gates).
    fn active(&self) -> Vec<Target>;
}

/// Largest webhook answer read (and dropped): only its status counts.
pub const MAX_WEBHOOK_BODY: usize = 64 * 1024;

/// What a gate's webhooks are told and where they may be: the cutover's context (the JSON
/// body of every call) and the addresses the operator may contact (`--webhook-networks`).
#[derive(Clone)]
pub struct HookEnv {
    /// The body of every call.
    pub context: serde_json::Value,
    /// The namespace a one-label host name is in (the RelayerDeployment's).
    pub namespace: String,
    /// Whether an address may be contacted.
    pub allowed: Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>,
}

impl Default for HookEnv {
    /// No context, and no address allowed.
    fn default() -> Self {
        Self {
            context: serde_json::Value::Null,
            namespace: String::new(),
            allowed: Arc::new(|_| false),
        }
    }
}

/// A running gate; dropping it stops its tasks.
pub struct GateRun {
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<JoinHandle<()>>,
}

impl GateRun {
    /// The tally so far.
    pub fn tally(&self) -> Tally {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for GateRun {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts gate `spec` from `tally` (fresh, or restored from status after a restart), its
/// exchanges within `budget`, its webhooks told and bounded by `hooks`; calls `changed` after
/// every sample or scrape error.
pub fn spawn(
    spec: GateSpec,
    tally: Tally,
    targets: Arc<dyn Targets>,
    budget: Budget,
    hooks: HookEnv,
    changed: Arc<dyn Fn() + Send + Sync>,
) -> GateRun {
    let shared = Arc::new(Mutex::new(tally));
    let mut tasks = Vec::new();
    if let Some(probe) = spec.probe.clone() {
        tasks.push(tokio::spawn(probe_load(
            probe.path,
            probe.requests_per_second,
            spec.statistical.is_some(),
            targets.clone(),
            budget.clone(),
        )));
    }
    tasks.push(tokio::spawn(sample_loop(
        spec,
        shared.clone(),
        targets,
        budget,
        hooks,
        changed,
    )));
    GateRun {
        tally: shared,
        tasks,
    }
}

async fn sample_loop(
    spec: GateSpec,
    tally: Arc<Mutex<Tally>>,
    targets: Arc<dyn Targets>,
    budget: Budget,
    hooks: HookEnv,
    changed: Arc<dyn Fn() + Send + Sync>,
) {
    let interval = Duration::from_millis(u64::try_from(spec.interval_ms.max(100)).unwrap_or(100));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let relative = spec.relative_to_active.is_some() || spec.statistical.is_some();
    // NB: a judge starts afresh with its task (after an operator restart too); it decides only
    // on intervals it saw itself.
    let mut stats = spec.statistical.clone().map(Judge::new);
    #[allow(clippy::cast_precision_loss)]
    let min_requests = spec.min_requests as f64;
    let mut previous: HashMap<String, Scrape> = HashMap::new();
    let mut previous_active: HashMap<String, Scrape> = HashMap::new();
    loop {
        ticker.tick().await;
        let pods = targets.under_test();
        let round = if pods.is_empty() {
            Err("no ready pod to scrape".to_owned())
        } else {
            scrape_all(&budget, &pods).await
        };
        let scrapes = match round {
            Ok(scrapes) => scrapes,
            Err(what) => {
                // NB: a pod that did not answer has no baseline any more.
                previous.clear();
                let mut t = lock(&tally);
                t.scrape_error(&spec, &what);
                let done = t.decided();
                drop(t);
                changed();
                if done {
                    return;
                }
                continue;
            }
        };
        let window = windows(&mut previous, scrapes);
        let active_window = if relative {
            match scrape_all(&budget, &targets.active()).await {
                Ok(scrapes) => windows(&mut previous_active, scrapes),
                Err(_) => {
                    previous_active.clear();
                    None
                }
            }
        } else {
            None
        };
        let Some(window) = window else {
            continue; // the first scrape is the baseline
        };
        let sample = judge(&spec, &window, active_window.as_ref());
        let mut values = window.describe();
        if let Some(active) = &active_window {
            values.push_str(&format!("; active: {}", active.describe()));
        }
        let ask = {
            let mut t = lock(&tally);
            t.record(&spec, sample, values);
            if let Some(stats) = stats.as_mut() {
                match &active_window {
                    Some(active) => stats.add(&window, active, min_requests),
                    None => stats.missed(),
                }
                judge_statistically(&spec, &mut t, stats);
            }
            // NB: the gate is held while its webhooks are asked (outside the lock), so a
            // reconcile reading the tally meanwhile never sees it passed before they agreed.
            if t.0.verdict == GateVerdict::Passed && !spec.webhooks.is_empty() {
                t.0.verdict = GateVerdict::Running;
                Some(webhook::records(&spec.webhooks, &t.0.webhooks))
            } else {
                None
            }
        };
        if let Some(mut records) = ask {
            changed();
            ask_webhooks(&spec.webhooks, &mut records, &hooks).await;
            let mut t = lock(&tally);
            match webhook::decide(&spec.webhooks, &records) {
                webhook::Decision::Pass if !t.decided() => t.0.verdict = GateVerdict::Passed,
                webhook::Decision::Fail(reason) if !t.decided() => t.fail(reason),
                _ => {}
            }
            t.0.webhooks = records;
        }
        let done = lock(&tally).decided();
        changed();
        if done {
            return;
        }
    }
}

/// Asks every webhook that has not agreed yet, each up to `1 + retries` calls with backoff;
/// a hold ends its calls for this interval.
pub(super) async fn ask_webhooks(
    specs: &[WebhookSpec],
    records: &mut [WebhookStatus],
    env: &HookEnv,
) {
    let body = Bytes::from(serde_json::to_vec(&env.context).unwrap_or_default());
    for (spec, status) in specs.iter().zip(records.iter_mut()) {
        if status.verdict == crate::crd::WebhookVerdict::Passed {
            continue;
        }
        let retries = u32::try_from(spec.retries.clamp(0, 10)).unwrap_or(0);
        for attempt in 0..=retries {
            if attempt > 0 {
                tokio::time::sleep(webhook::backoff(attempt)).await;
            }
            let answer = webhook::classify(&call_webhook(spec, body.clone(), env).await);
            webhook::record(status, &answer, attempt == retries);
            if !matches!(answer, Answer::Retry(_)) {
                break;
            }
        }
    }
}

/// One `POST` of `body` to `spec`'s URL ([`post_json`] within the webhook's timeout).
async fn call_webhook(spec: &WebhookSpec, body: Bytes, env: &HookEnv) -> Result<u16, String> {
    let timeout =
        Duration::from_secs(u64::try_from(spec.timeout_seconds.clamp(1, 60)).unwrap_or(5));
    post_json(
        &spec.url,
        &env.namespace,
        body,
        timeout,
        env.allowed.as_ref(),
        None,
    )
    .await
}

/// One `POST` of the JSON `body` to `url` (an `http://` URL as [`webhook_target`] admits),
/// on a connection of its own, to the first address its host resolves to that `allowed`
/// admits; with `key` as its `Idempotency-Key` header when given. A one-label host name is a
/// Service of `namespace` (`<host>.<namespace>.svc`), not of the operator's namespace its
/// resolver would pick. Bounded by `timeout` as a whole (resolving, connecting, the request
/// and [`MAX_WEBHOOK_BODY`] of answer). Returns the status.
pub async fn post_json(
    url: &str,
    namespace: &str,
    body: Bytes,
    timeout: Duration,
    allowed: &(dyn Fn(std::net::IpAddr) -> bool + Send + Sync),
    key: Option<&str>,
) -> Result<u16, String> {
    let target = webhook_target(url, "webhook")?;
    let name = if target.host.contains(['.', ':']) || namespace.is_empty() {
        target.host.clone()
    } else {
        format!("{}.{namespace}.svc", target.host)
    };
    let exchange = async move {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), target.port))
            .await
            .map_err(|e| format!("resolve {}: {e}", target.host))?
            .collect();
        // NB: the address connected to is the one checked, so a name that resolves elsewhere
        // later cannot lead the operator outside the allowed networks.
        let addr = addrs
            .iter()
            .copied()
            .find(|a| allowed(a.ip().to_canonical()))
            .ok_or_else(|| {
                format!(
                    "{} resolves to {addrs:?}, none inside --webhook-networks",
                    target.host
                )
            })?;
        post(addr, &target.host, &target.path, body, key).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no whole answer within {timeout:?}"))?
}

async fn post(
    addr: SocketAddr,
    host: &str,
    path: &str,
    body: Bytes,
    key: Option<&str>,
) -> Result<u16, String> {
    let (mut sender, _abort) = open(addr).await?;
    let mut request = Request::post(path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "relayer-operator")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONNECTION, "close");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let status = response.status().as_u16();
    // NB: the answer is read (bounded) so the webhook's server sees a whole exchange.
    let _ = Limited::new(response.into_body(), MAX_WEBHOOK_BODY)
        .collect()
        .await;
    Ok(status)
}

/// Holds a gate whose thresholds passed until the statistical judge decides, and fails it
/// when the judge does; records the judgement in the tally either way.
fn judge_statistically(spec: &GateSpec, t: &mut Tally, stats: &mut Judge) {
    if t.0.verdict == GateVerdict::Passed {
        match stats.decide(spec.samples, spec.inconclusive_limit) {
            Decision::Pass => {}
            Decision::Wait => t.0.verdict = GateVerdict::Running,
            Decision::Fail(reason) => t.fail(reason),
        }
    }
    t.0.statistics = stats.status();
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The summed window of the pods seen in the previous round too; `None` when none was.
fn windows(
    previous: &mut HashMap<String, Scrape>,
    scrapes: Vec<(String, Scrape)>,
) -> Option<Window> {
    let mut total: Option<Window> = None;
    let mut next = HashMap::new();
    for (key, scrape) in scrapes {
        if let Some(before) = previous.get(&key) {
            let w = scrape.delta(before);
            match total.as_mut() {
                Some(t) => t.add(&w),
                None => total = Some(w),
            }
        }
        next.insert(key, scrape);
    }
    *previous = next;
    total
}

async fn scrape_all(budget: &Budget, pods: &[Target]) -> Result<Vec<(String, Scrape)>, String> {
    let results = futures::future::join_all(pods.iter().map(|pod| async move {
        let text = get(budget, pod.addr, "/metrics")
            .await
            .and_then(|(status, body)| {
                if status == 200 {
                    Ok(body)
                } else {
                    Err(format!("HTTP {status}"))
                }
            });
        let scrape = text.and_then(|t| parse(&t).map_err(|e| e.to_string()));
        (pod, scrape)
    }))
    .await;
    let mut out = Vec::with_capacity(results.len());
    for (pod, result) in results {
        match result {
            Ok(scrape) => out.push((pod.key.clone(), scrape)),
            Err(what) => return Err(format!("scraping {} ({}): {what}", pod.key, pod.addr)),
        }
    }
    Ok(out)
}

/// Sends `GET path` at `rate` per second, round robin over the pods under test, each on its
/// own connection (as short-lived clients would); with `both`, the same rate to the colour
/// they are compared with as well, alternately, so a statistical judge compares like with
/// like. Answers are not judged here: the pods' own metrics count them. NB: a probe that
/// finds no free probe permit of `budget` is skipped, not queued, so slow pods cannot pile up
/// probe tasks.
async fn probe_load(
    path: String,
    rate: i32,
    both: bool,
    targets: Arc<dyn Targets>,
    budget: Budget,
) {
    let rate = u64::try_from(rate.clamp(1, 1000)).unwrap_or(1) * if both { 2 } else { 1 };
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut next, mut next_other, mut turn) = (0usize, 0usize, false);
    loop {
        ticker.tick().await;
        turn = both && !turn;
        let (pods, index) = if turn {
            (targets.active(), &mut next_other)
        } else {
            (targets.under_test(), &mut next)
        };
        if pods.is_empty() {
            continue;
        }
        let Some(addr) = pods.get(*index % pods.len()).map(|p| p.addr) else {
            continue;
        };
        *index = index.wrapping_add(1);
        let Ok(permit) = budget.probes.clone().try_acquire_owned() else {
            continue;
        };
        let path = path.clone();
        tokio::spawn(async move {
            let _ = bounded(addr, &path, MAX_PROBE_BODY).await;
            drop(permit);
        });
    }
}

/// What the drain of a colour's pods looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drain {
    /// Every pod answered: none has a request in flight (besides the scrape) or an active
    /// saga.
    Idle,
    /// Some pod is busy or could not be asked; the text says which and why.
    Busy(String),
}

/// Asks every pod of a colour being left whether it is idle, within `budget`.
pub async fn drain_evidence(budget: &Budget, pods: &[Target]) -> Drain {
    match scrape_all(budget, pods).await {
        Err(what) => Drain::Busy(what),
        Ok(scrapes) => {
            for (key, s) in scrapes {
                // NB: the relayer leaves probes and scrapes out of its in-flight gauge.
                if s.in_flight > 0.0 || s.sagas_active > 0.0 {
                    return Drain::Busy(format!(
                        "{key} has {} requests in flight and {} active sagas",
                        s.in_flight, s.sagas_active
                    ));
                }
            }
            Drain::Idle
        }
    }
}

/// `GET path` from `addr` on a connection of its own (`Connection: close`), over hyper's
/// HTTP/1.1 client, holding a permit of `budget` (waiting up to 10 s for one); returns the
/// status and the body. Bounded: 2 s for the whole exchange (connect, request, body) and
/// [`MAX_BODY`] of body, counted while it streams.
pub async fn get(budget: &Budget, addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    get_limited(budget, addr, path, MAX_BODY).await
}

/// [`get`] with another body cap (for tests).
pub(super) async fn get_limited(
    budget: &Budget,
    addr: SocketAddr,
    path: &str,
    limit: usize,
) -> Result<(u16, String), String> {
    let permit = budget.acquire(PERMIT_WAIT).await?;
    let result = bounded(addr, path, limit).await;
    drop(permit);
    result
}

/// One exchange under [`HTTP_TIMEOUT`] as a whole.
async fn bounded(addr: SocketAddr, path: &str, limit: usize) -> Result<(u16, String), String> {
    tokio::time::timeout(HTTP_TIMEOUT, exchange(addr, path, limit))
        .await
        .map_err(|_| format!("no whole answer within {HTTP_TIMEOUT:?}"))?
}

/// A connection of its own to `addr` over hyper's HTTP/1.1 client, and its task, aborted when
/// the guard is dropped. NB: the connection task ends with the exchange (the server closes it,
/// or the request is dropped on timeout and the connection with it).
async fn open<B>(
    addr: SocketAddr,
) -> Result<(hyper::client::conn::http1::SendRequest<B>, AbortOnDrop), String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((sender, AbortOnDrop(connection)))
}

async fn exchange(addr: SocketAddr, path: &str, limit: usize) -> Result<(u16, String), String> {
    let (mut sender, _abort) = open(addr).await?;
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "relayer-operator")
        .header(header::ACCEPT, "text/plain")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                format!("read: body longer than {limit} bytes")
            } else {
                format!("read: {e}")
            }
        })?
        .to_bytes();
    // NB: no second copy of a valid body (the common case).
    let text = match String::from_utf8(Vec::from(body)) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok((status, text))
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
