//! The I/O around the pure gate logic: a task per running gate that scrapes the pods under
//! test, an optional probe load, and the drain evidence of a colour being left.
//!
//! Everything here is bounded: each exchange has a timeout and a body cap, the probe load has
//! a fixed rate, and a task ends when its gate decides or its [`GateRun`] is dropped. The one
//! network client, [`get`], is hyper's HTTP/1.1 client on a connection per request.
//!
//! May use: [`super`] (the pure gate logic), [`crate::crd`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::{Scrape, Tally, Window, judge, parse};
use crate::crd::GateSpec;

/// Bound of one HTTP exchange with a pod (connect, write, read).
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest body read (a `/metrics` text; a relayer's is a few kilobytes): a longer one is an
/// error, noticed as soon as that many bytes arrived.
const MAX_BODY: usize = 4 * 1024 * 1024;

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

/// Starts gate `spec` from `tally` (fresh, or restored from status after a restart); calls
/// `changed` after every sample or scrape error.
pub fn spawn(
    spec: GateSpec,
    tally: Tally,
    targets: Arc<dyn Targets>,
    changed: Arc<dyn Fn() + Send + Sync>,
) -> GateRun {
    let shared = Arc::new(Mutex::new(tally));
    let mut tasks = Vec::new();
    if let Some(probe) = spec.probe.clone() {
        tasks.push(tokio::spawn(probe_load(
            probe.path,
            probe.requests_per_second,
            targets.clone(),
        )));
    }
    tasks.push(tokio::spawn(sample_loop(
        spec,
        shared.clone(),
        targets,
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
    changed: Arc<dyn Fn() + Send + Sync>,
) {
    let interval = Duration::from_millis(u64::try_from(spec.interval_ms.max(100)).unwrap_or(100));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let relative = spec.relative_to_active.is_some();
    let mut previous: HashMap<String, Scrape> = HashMap::new();
    let mut previous_active: HashMap<String, Scrape> = HashMap::new();
    loop {
        ticker.tick().await;
        let pods = targets.under_test();
        let round = if pods.is_empty() {
            Err("no ready pod to scrape".to_owned())
        } else {
            scrape_all(&pods).await
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
            match scrape_all(&targets.active()).await {
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
        let mut t = lock(&tally);
        t.record(&spec, sample, values);
        let done = t.decided();
        drop(t);
        changed();
        if done {
            return;
        }
    }
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

async fn scrape_all(pods: &[Target]) -> Result<Vec<(String, Scrape)>, String> {
    let results = futures::future::join_all(pods.iter().map(|pod| async move {
        let text = get(pod.addr, "/metrics").await.and_then(|(status, body)| {
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
/// own connection (as short-lived clients would). Answers are not judged here: the pods'
/// own metrics count them.
async fn probe_load(path: String, rate: i32, targets: Arc<dyn Targets>) {
    let rate = u64::try_from(rate.clamp(1, 1000)).unwrap_or(1);
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next = 0usize;
    loop {
        ticker.tick().await;
        let pods = targets.under_test();
        if pods.is_empty() {
            continue;
        }
        let addr = pods[next % pods.len()].addr;
        next = next.wrapping_add(1);
        let path = path.clone();
        tokio::spawn(async move {
            let _ = get(addr, &path).await;
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

/// Asks every pod of a colour being left whether it is idle.
pub async fn drain_evidence(pods: &[Target]) -> Drain {
    match scrape_all(pods).await {
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
/// HTTP/1.1 client; returns the status and the body. Bounded: 2 s for the whole exchange
/// (connect, request, body) and 4 MiB of body, counted while it streams.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    get_limited(addr, path, MAX_BODY).await
}

/// [`get`] with another body cap (for tests).
pub(super) async fn get_limited(
    addr: SocketAddr,
    path: &str,
    limit: usize,
) -> Result<(u16, String), String> {
    tokio::time::timeout(HTTP_TIMEOUT, exchange(addr, path, limit))
        .await
        .map_err(|_| format!("no answer within {HTTP_TIMEOUT:?}"))?
}

async fn exchange(addr: SocketAddr, path: &str, limit: usize) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // NB: the connection task ends with the exchange (the server closes it, or the request is
    // dropped on timeout and the connection with it).
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let _abort = AbortOnDrop(connection);
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
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
