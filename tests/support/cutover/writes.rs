//! Writes through the active Service during a cutover, and what must hold afterwards.
//!
//! - [`request`]: one request (any method, optional bearer token and JSON body) through
//!   [`crate::support::http::exchange`], its JSON answer read.
//! - [`fund_traders`]: users funded and given API keys through the `/admin` routes.
//! - [`WriteLoad`]: one client per trader, each placing crossing orders (buys above and sells
//!   below the middle, so they trade), resting orders far from the middle that it cancels
//!   later, and reading depth, balances and its orders; every answer is recorded (order id,
//!   status, body). A 5xx, a connection error, a 401 or any unexpected status is a failure;
//!   409/422 are business refusals, counted apart; an injected fault (`500 injected_fault`,
//!   `faultInjection.errorRate` of a bad release) is counted apart too.
//! - [`verify`]: after the load, through the (new) active colour: every accepted order is
//!   visible with the state it was answered with or a later one consistent with it; the
//!   saga log runs dry; all open orders are cancelled; nothing stays reserved; collateral and
//!   shares equal the deposits in total and, per user, the deposits moved by the trades the
//!   settlement stub settled; each settlement key carried one body; each fill answered was
//!   settled as answered; `foresight_saga_active` is 0 on every pod. Every violation is
//!   collected and returned with the figures.
//!
//! The conservation check follows `relayer/tests/chaos.rs` (totals, per-user movements by
//! the settled trades, nothing reserved once every open order is cancelled).
//!
//! Uses tokio, serde_json, [`super::settlement::SettlementStub`] and
//! [`crate::support::metrics`] / [`crate::support::http`] (every request, and the pods'
//! `/metrics`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::netns::NetnsBackend;
use super::settlement::SettlementStub;
use crate::support::http;
use crate::support::metrics::Exposition;

/// The market every order is placed in.
pub const MARKET: &str = "80002:1";
/// The middle price (millionths): buys cross above it, sells below.
const MIDDLE: u64 = 500_000;
/// How long one request may take, connect to last byte (above the relayer's placement wait).
const TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP answer: status and JSON body (`Null` when empty, a string when not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The API error code (`{"error": {"code"}}`), or "".
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// `method path` on `addr`, with `Authorization: Bearer <bearer>` and a JSON body when given.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<Answer> {
    let authorization = bearer.map(|token| format!("Bearer {token}"));
    let mut headers = Vec::new();
    if let Some(value) = &authorization {
        headers.push(("Authorization", value.as_str()));
    }
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let payload = body.map(Value::to_string).unwrap_or_default();
    let (status, text) =
        http::exchange(addr, method, path, &headers, payload.as_bytes(), TIMEOUT).await?;
    let body = http::body_of(&text)?;
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()))
    };
    Ok(Answer { status, body })
}

/// A decimal string (or number) as u128; 0 when absent.
pub fn num(v: &Value) -> u128 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().map_or(0, u128::from),
        _ => 0,
    }
}

/// A funded user with its API key.
#[derive(Debug, Clone)]
pub struct Trader {
    pub index: usize,
    pub user_id: String,
    pub api_key: String,
}

/// What each trader was given.
#[derive(Debug, Clone, Copy)]
pub struct Funding {
    pub collateral: u64,
    pub shares: u64,
}

/// `n` users, each given an API key and `funding` (collateral and shares of [`MARKET`])
/// through the `/admin` routes at `addr` with `admin_token`.
pub async fn fund_traders(
    addr: SocketAddr,
    admin_token: &str,
    n: usize,
    funding: Funding,
) -> anyhow::Result<Vec<Trader>> {
    let mut traders = Vec::with_capacity(n);
    for index in 0..n {
        let user_id = format!("0x{:040x}", 0x00c0_ffee_0000_u64 + index as u64);
        let key = request(
            addr,
            "POST",
            "/admin/api-keys",
            Some(admin_token),
            Some(&json!({ "userId": user_id })),
        )
        .await?;
        anyhow::ensure!(key.status == 201, "issuing an API key: {key:?}");
        let api_key = key.body["apiKey"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no apiKey in {:?}", key.body))?
            .to_owned();
        for (asset, amount) in [("collateral", funding.collateral), (MARKET, funding.shares)] {
            let deposit = request(
                addr,
                "POST",
                "/admin/deposits",
                Some(admin_token),
                Some(&json!({ "userId": user_id, "asset": asset, "amount": amount.to_string() })),
            )
            .await?;
            anyhow::ensure!(deposit.status == 200, "deposit of {asset}: {deposit:?}");
        }
        traders.push(Trader {
            index,
            user_id,
            api_key,
        });
    }
    Ok(traders)
}

/// One `POST /v2/orders` and what it was answered (`None`: no answer, a failure).
#[derive(Debug, Clone)]
pub struct Placement {
    pub order_id: String,
    pub body: Value,
    pub answer: Option<Answer>,
}

/// One `DELETE /v2/orders/{id}` and its answer.
#[derive(Debug, Clone)]
pub struct Cancel {
    pub order_id: String,
    pub answer: Option<Answer>,
}

/// Everything one client (or all of them) did and was answered.
#[derive(Debug, Default, Clone)]
pub struct WriteReport {
    pub requests: u64,
    pub writes: u64,
    pub reads: u64,
    /// 5xx (other than injected faults), connection errors, 401 and unexpected statuses, by
    /// what and why.
    pub failures: BTreeMap<String, u64>,
    /// `500 injected_fault` answers (the release's own fault injection), by route.
    pub injected: BTreeMap<String, u64>,
    /// 409/422 business refusals, by route and code.
    pub refusals: BTreeMap<String, u64>,
    /// Answers by route and status.
    pub statuses: BTreeMap<String, u64>,
    pub placements: Vec<(usize, Placement)>,
    pub cancels: Vec<(usize, Cancel)>,
}

impl WriteReport {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn injected_faults(&self) -> u64 {
        self.injected.values().sum()
    }

    pub fn business_refusals(&self) -> u64 {
        self.refusals.values().sum()
    }

    fn merge(&mut self, other: WriteReport) {
        self.requests += other.requests;
        self.writes += other.writes;
        self.reads += other.reads;
        for (into, from) in [
            (&mut self.failures, other.failures),
            (&mut self.injected, other.injected),
            (&mut self.refusals, other.refusals),
            (&mut self.statuses, other.statuses),
        ] {
            for (k, v) in from {
                *into.entry(k).or_default() += v;
            }
        }
        self.placements.extend(other.placements);
        self.cancels.extend(other.cancels);
    }

    /// Records one answer (or error) of `route`; whether it counts as a success.
    fn record(&mut self, route: &str, write: bool, answer: &anyhow::Result<Answer>) {
        self.requests += 1;
        if write {
            self.writes += 1;
        } else {
            self.reads += 1;
        }
        match answer {
            Err(error) => {
                let why: String = error.to_string().chars().take(80).collect();
                *self.failures.entry(format!("{route}: {why}")).or_default() += 1;
                *self.statuses.entry(format!("{route} error")).or_default() += 1;
            }
            Ok(a) => {
                *self
                    .statuses
                    .entry(format!("{route} {}", a.status))
                    .or_default() += 1;
                match a.status {
                    200..=202 => {}
                    409 | 422 => {
                        *self
                            .refusals
                            .entry(format!("{route} {} {}", a.status, a.code()))
                            .or_default() += 1;
                    }
                    500 if a.code() == "injected_fault" => {
                        *self.injected.entry(route.to_owned()).or_default() += 1;
                    }
                    status => {
                        *self
                            .failures
                            .entry(format!("{route}: HTTP {status} {}", a.code()))
                            .or_default() += 1;
                    }
                }
            }
        }
    }
}

/// Live counts of a [`WriteLoad`], readable while it runs.
#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub writes: AtomicU64,
    /// Failures as [`WriteReport::failures`] counts them.
    pub failed: AtomicU64,
}

impl Counts {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// A small deterministic generator per client (xorshift), so the load needs no RNG crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// One client per trader, until stopped.
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<WriteReport>>,
    pub counts: Arc<Counts>,
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl WriteLoad {
    /// Starts one client per trader against `addr`; order ids start with `run`.
    pub fn start(addr: SocketAddr, traders: &[Trader], run: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let tasks = traders
            .iter()
            .cloned()
            .map(|trader| {
                let stop = stop.clone();
                let counts = counts.clone();
                let run = run.to_owned();
                tokio::spawn(async move { client(addr, trader, run, stop, counts).await })
            })
            .collect();
        Self {
            stop,
            tasks,
            counts,
        }
    }

    /// Stops every client (each finishes the request it is in) and merges their reports.
    pub async fn stop(mut self) -> WriteReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = WriteReport::default();
        for t in std::mem::take(&mut self.tasks) {
            match t.await {
                Ok(report) => total.merge(report),
                Err(error) => {
                    *total
                        .failures
                        .entry(format!("a client task failed: {error}"))
                        .or_default() += 1;
                }
            }
        }
        total
    }
}

async fn client(
    addr: SocketAddr,
    trader: Trader,
    run: String,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> WriteReport {
    let mut report = WriteReport::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((trader.index as u64 + 1) * 0x1000_0001));
    let key = trader.api_key.clone();
    let user = trader.user_id.clone();
    // Far-resting orders answered open, oldest first: what this client cancels.
    let mut resting: VecDeque<String> = VecDeque::new();
    let mut last_order: Option<String> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let step = n % 10;
        let before = report.failed();
        match step {
            1 => {
                let path = format!("/v2/depth?marketKey={MARKET}&levels=10");
                let a = request(addr, "GET", &path, None, None).await;
                report.record("GET /v2/depth", false, &a);
            }
            3 => {
                let path = format!("/v2/balances/{user}");
                let a = request(addr, "GET", &path, Some(&key), None).await;
                report.record("GET /v2/balances", false, &a);
            }
            7 => {
                let path = match &last_order {
                    Some(id) => format!("/v2/orders/{id}"),
                    None => format!("/v2/depth?marketKey={MARKET}&levels=10"),
                };
                let a = request(addr, "GET", &path, Some(&key), None).await;
                report.record("GET /v2/orders/{id}", false, &a);
            }
            5 if !resting.is_empty() => {
                let Some(id) = resting.pop_front() else {
                    continue;
                };
                let a = request(
                    addr,
                    "DELETE",
                    &format!("/v2/orders/{id}"),
                    Some(&key),
                    None,
                )
                .await;
                report.record("DELETE /v2/orders/{id}", true, &a);
                report.cancels.push((
                    trader.index,
                    Cancel {
                        order_id: id,
                        answer: a.ok(),
                    },
                ));
            }
            _ => {
                // Crossing orders most of the time; every tenth (and when nothing rests to
                // cancel) an order far from the middle that nobody takes, to cancel later.
                let far = step == 8 || step == 5;
                let buy = rng.next(2) == 0;
                let price = match (far, buy) {
                    (false, true) => MIDDLE + rng.next(10) * 1_000,
                    (false, false) => MIDDLE - rng.next(10) * 1_000,
                    (true, true) => 300_000 + rng.next(10) * 1_000,
                    (true, false) => 700_000 - rng.next(10) * 1_000,
                };
                let order_id = format!("{run}-{}-{n}", trader.index);
                let body = json!({
                    "orderId": order_id,
                    "marketKey": MARKET,
                    "userId": user,
                    "side": if buy { "buy" } else { "sell" },
                    "price": price.to_string(),
                    "amount": (1 + rng.next(5)).to_string(),
                });
                let a = request(addr, "POST", "/v2/orders", Some(&key), Some(&body)).await;
                report.record("POST /v2/orders", true, &a);
                if let Ok(answer) = &a {
                    if answer.status == 201 {
                        last_order = Some(order_id.clone());
                        if far && answer.body["order"]["status"] == "open" {
                            resting.push_back(order_id.clone());
                        }
                    } else if answer.status == 202 {
                        last_order = Some(order_id.clone());
                    }
                }
                report.placements.push((
                    trader.index,
                    Placement {
                        order_id,
                        body,
                        answer: a.ok(),
                    },
                ));
            }
        }
        counts.requests.fetch_add(1, Ordering::Relaxed);
        if !matches!(step, 1 | 3 | 7) {
            counts.writes.fetch_add(1, Ordering::Relaxed);
        }
        if report.failed() > before {
            counts.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    report
}

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct Verification {
    /// Accepted orders (201 or 202) read back.
    pub orders_checked: u64,
    /// Cancellations answered 200 read back.
    pub cancels_checked: u64,
    /// Orders answered 202 and how they ended.
    pub pending: BTreeMap<String, u64>,
    /// Placements answered with an injected fault, read back as never placed.
    pub injected_checked: u64,
    /// Open orders cancelled afterwards.
    pub cancelled_afterwards: u64,
    pub collateral: u128,
    pub collateral_deposited: u128,
    pub shares: u128,
    pub shares_deposited: u128,
    /// Trades the settlement stub settled, and requests it received.
    pub trades_settled: usize,
    pub settlement_requests: u64,
    /// Fills answered in 201s, each checked against the stub.
    pub fills_checked: u64,
    pub violations: Vec<String>,
}

impl Verification {
    /// Whether collateral and shares equal the deposits, in total and by user.
    pub fn conserved(&self) -> bool {
        self.collateral == self.collateral_deposited
            && self.shares == self.shares_deposited
            && !self.violations.iter().any(|v| v.contains("conservation"))
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "orders checked {} (cancellations {}, answered 202: {:?}, injected faults read back as never placed: {}); \
             open orders cancelled afterwards {}; conservation {}: collateral {} of {} deposited, shares {} of {}; \
             trades settled {} ({} settlement requests), fills checked against the stub {}; violations {}",
            self.orders_checked,
            self.cancels_checked,
            self.pending,
            self.injected_checked,
            self.cancelled_afterwards,
            if self.conserved() { "held" } else { "BROKEN" },
            self.collateral,
            self.collateral_deposited,
            self.shares,
            self.shares_deposited,
            self.trades_settled,
            self.settlement_requests,
            self.fills_checked,
            self.violations.len(),
        )
    }
}

/// Sagas in the log at `addr` that are not finished (running, pending, compensating or
/// manual), described.
async fn unfinished_sagas(addr: SocketAddr, admin_token: &str) -> anyhow::Result<Vec<String>> {
    let a = request(addr, "GET", "/admin/sagas", Some(admin_token), None).await?;
    anyhow::ensure!(a.status == 200, "GET /admin/sagas: {a:?}");
    Ok(a.body["sagas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            ["running", "pending", "compensating", "manual"]
                .contains(&s["state"].as_str().unwrap_or_default())
        })
        .map(|s| {
            format!(
                "{} {} {} at {} ({})",
                s["saga"], s["sagaId"], s["state"], s["step"], s["error"]
            )
        })
        .collect())
}

/// Polls until the saga log at `addr` has nothing unfinished, at most `deadline`; the last
/// list otherwise.
async fn quiet(addr: SocketAddr, admin_token: &str, deadline: Duration) -> Result<(), String> {
    let end = Instant::now() + deadline;
    loop {
        let left = unfinished_sagas(addr, admin_token).await;
        match left {
            Ok(left) if left.is_empty() => return Ok(()),
            Ok(left) if Instant::now() > end => {
                return Err(format!(
                    "{} sagas unfinished after {deadline:?}, e.g. {:?}",
                    left.len(),
                    &left[..left.len().min(5)]
                ));
            }
            Err(e) if Instant::now() > end => return Err(format!("saga log: {e:#}")),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Whether `now` (an order read back) is `then` (as answered) or a later state of it.
fn consistent(then: &Value, now: &Value) -> Result<(), String> {
    for field in ["side", "price", "amount", "marketKey", "userId"] {
        if then[field] != now[field] {
            return Err(format!("{field} changed: answered {then}, now {now}"));
        }
    }
    let (filled_then, filled_now) = (num(&then["filled"]), num(&now["filled"]));
    if filled_now < filled_then {
        return Err(format!("filled went back: answered {then}, now {now}"));
    }
    match then["status"].as_str().unwrap_or_default() {
        s @ ("filled" | "cancelled") if now["status"] != s || filled_now != filled_then => {
            Err(format!("a final state changed: answered {then}, now {now}"))
        }
        "filled" | "cancelled" | "open" | "partially_filled" => Ok(()),
        other => Err(format!("answered an unknown status {other:?}: {then}")),
    }
}

/// Reads back one trader's accepted orders and cancellations through `addr`.
async fn check_orders(
    addr: SocketAddr,
    trader: &Trader,
    placements: &[&Placement],
    cancels: &[&Cancel],
    out: &mut Verification,
) {
    let key = Some(trader.api_key.as_str());
    for p in placements {
        let Some(answer) = &p.answer else { continue };
        let got = request(
            addr,
            "GET",
            &format!("/v2/orders/{}", p.order_id),
            key,
            None,
        )
        .await;
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                out.violations
                    .push(format!("reading order {}: {e:#}", p.order_id));
                continue;
            }
        };
        match answer.status {
            201 => {
                out.orders_checked += 1;
                if got.status != 200 {
                    out.violations.push(format!(
                        "order {} answered 201 reads {} {}",
                        p.order_id, got.status, got.body
                    ));
                } else if let Err(e) = consistent(&answer.body["order"], &got.body) {
                    out.violations.push(format!("order {}: {e}", p.order_id));
                }
            }
            202 => {
                out.orders_checked += 1;
                let ended = match got.status {
                    200 => got.body["status"].as_str().unwrap_or("?").to_owned(),
                    status => format!("{status} {}", got.code()),
                };
                if got.status == 200 {
                    for field in ["side", "price", "amount"] {
                        if got.body[field] != p.body[field] {
                            out.violations.push(format!(
                                "order {} answered 202 reads {field} {} (placed {})",
                                p.order_id, got.body[field], p.body[field]
                            ));
                        }
                    }
                } else if got.status == 202 {
                    out.violations.push(format!(
                        "order {} still pending with the saga log dry",
                        p.order_id
                    ));
                } else {
                    // NB: the settlement stub never fails, so an accepted placement ends placed.
                    out.violations.push(format!(
                        "order {} answered 202 ended {ended}, not placed",
                        p.order_id
                    ));
                }
                *out.pending.entry(ended).or_default() += 1;
            }
            500 if answer.code() == "injected_fault" => {
                out.injected_checked += 1;
                if got.status != 404 {
                    out.violations.push(format!(
                        "order {} answered an injected fault reads {} {} (expected never placed)",
                        p.order_id, got.status, got.body
                    ));
                }
            }
            _ => {}
        }
    }
    for c in cancels {
        let Some(answer) = &c.answer else { continue };
        if answer.status == 202 {
            // An accepted cancellation still in flight then: it must have ended cancelled (the
            // clean-up that cancels every open order afterwards would hide a lost one).
            out.cancels_checked += 1;
            match request(
                addr,
                "GET",
                &format!("/v2/orders/{}", c.order_id),
                key,
                None,
            )
            .await
            {
                Ok(got) if got.status == 200 && got.body["status"] == "cancelled" => {}
                Ok(got) => out.violations.push(format!(
                    "cancellation of {} answered 202 reads {} {}",
                    c.order_id, got.status, got.body
                )),
                Err(e) => out
                    .violations
                    .push(format!("reading order {}: {e:#}", c.order_id)),
            }
            continue;
        }
        if answer.status != 200 {
            continue;
        }
        out.cancels_checked += 1;
        let got = request(
            addr,
            "GET",
            &format!("/v2/orders/{}", c.order_id),
            key,
            None,
        )
        .await;
        match got {
            Ok(got) if got.status == 200 => {
                if answer.body["status"] != "cancelled" {
                    out.violations.push(format!(
                        "cancel of {} answered 200 with {}",
                        c.order_id, answer.body
                    ));
                } else if let Err(e) = consistent(&answer.body, &got.body) {
                    out.violations
                        .push(format!("cancelled order {}: {e}", c.order_id));
                }
            }
            Ok(got) => out.violations.push(format!(
                "cancelled order {} reads {} {}",
                c.order_id, got.status, got.body
            )),
            Err(e) => out
                .violations
                .push(format!("reading cancelled order {}: {e:#}", c.order_id)),
        }
    }
}

/// Balances of a trader: (collateral available, reserved; shares available, reserved).
async fn holding(addr: SocketAddr, t: &Trader) -> anyhow::Result<(u128, u128, u128, u128)> {
    let a = request(
        addr,
        "GET",
        &format!("/v2/balances/{}", t.user_id),
        Some(&t.api_key),
        None,
    )
    .await?;
    anyhow::ensure!(a.status == 200, "balances of {}: {a:?}", t.user_id);
    let b = &a.body;
    Ok((
        num(&b["collateral"]["available"]),
        num(&b["collateral"]["reserved"]),
        num(&b["shares"][MARKET]["available"]),
        num(&b["shares"][MARKET]["reserved"]),
    ))
}

/// Everything [`verify`] needs besides the load's report.
pub struct Checked<'a> {
    /// The active Service, through the proxy.
    pub addr: SocketAddr,
    pub admin_token: &'a str,
    pub traders: &'a [Trader],
    pub funding: Funding,
    pub stub: &'a SettlementStub,
    /// The relayers (each one's `/metrics`, read from those running at the end).
    pub backend: &'a NetnsBackend,
}

/// The checks of the module doc, after the load stopped.
pub async fn verify(c: Checked<'_>, report: &WriteReport) -> Verification {
    let mut out = Verification::default();
    let addr = c.addr;
    // Placements answered 202 finish first (or are recovered).
    if let Err(e) = quiet(addr, c.admin_token, Duration::from_secs(45)).await {
        out.violations.push(format!("after the load: {e}"));
    }

    // Every answer read back, the traders in parallel.
    let mut reads = Vec::new();
    for t in c.traders {
        let t = t.clone();
        let placements: Vec<Placement> = report
            .placements
            .iter()
            .filter(|(i, _)| *i == t.index)
            .map(|(_, p)| p.clone())
            .collect();
        let cancels: Vec<Cancel> = report
            .cancels
            .iter()
            .filter(|(i, _)| *i == t.index)
            .map(|(_, c)| c.clone())
            .collect();
        reads.push(tokio::spawn(async move {
            let mut part = Verification::default();
            let p: Vec<&Placement> = placements.iter().collect();
            let c: Vec<&Cancel> = cancels.iter().collect();
            check_orders(addr, &t, &p, &c, &mut part).await;
            part
        }));
    }
    for r in reads {
        match r.await {
            Ok(part) => {
                out.orders_checked += part.orders_checked;
                out.cancels_checked += part.cancels_checked;
                out.injected_checked += part.injected_checked;
                for (k, v) in part.pending {
                    *out.pending.entry(k).or_default() += v;
                }
                out.violations.extend(part.violations);
            }
            Err(e) => out.violations.push(format!("a reading task failed: {e}")),
        }
    }

    // Every open order cancelled by its owner.
    let mut open_left = Vec::new();
    for _round in 0..5 {
        open_left.clear();
        for t in c.traders {
            let path = format!("/orderbook/orders?marketKey={MARKET}&userId={}", t.user_id);
            let book = match request(addr, "GET", &path, None, None).await {
                Ok(a) if a.status == 200 => a.body,
                other => {
                    out.violations
                        .push(format!("open orders of {}: {other:?}", t.user_id));
                    continue;
                }
            };
            for o in book["orders"].as_array().into_iter().flatten() {
                let id = o["orderId"].as_str().unwrap_or_default().to_owned();
                open_left.push(id.clone());
                let a = request(
                    addr,
                    "DELETE",
                    &format!("/v2/orders/{id}"),
                    Some(&t.api_key),
                    None,
                )
                .await;
                match a {
                    Ok(a) if a.status == 200 || a.status == 202 => out.cancelled_afterwards += 1,
                    other => out
                        .violations
                        .push(format!("cancelling {id} afterwards: {other:?}")),
                }
            }
        }
        if open_left.is_empty() {
            break;
        }
        if let Err(e) = quiet(addr, c.admin_token, Duration::from_secs(20)).await {
            out.violations.push(format!("after cancelling: {e}"));
        }
    }
    if !open_left.is_empty() {
        out.violations.push(format!(
            "{} orders still open after five rounds of cancels, e.g. {:?}",
            open_left.len(),
            &open_left[..open_left.len().min(5)]
        ));
    }
    if let Err(e) = quiet(addr, c.admin_token, Duration::from_secs(20)).await {
        out.violations.push(format!("at the end: {e}"));
    }

    // No saga active on any pod (NB: those running now: an address of a pod gone would be
    // routed off the host).
    for pod in &c.backend.addresses() {
        let active = match http::get(*pod, "/metrics").await {
            Ok((200, text)) => text
                .split_once("\r\n\r\n")
                .ok_or_else(|| "no end of headers".to_owned())
                .and_then(|(_, body)| {
                    Exposition::parse(body)
                        .and_then(|e| e.get("foresight_saga_active", &[]))
                        .map_err(|e| format!("{e:#}"))
                }),
            Ok((status, text)) => Err(format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )),
            Err(e) => Err(format!("{e:#}")),
        };
        match active {
            Ok(n) if n.abs() < 0.5 => {}
            Ok(n) => out
                .violations
                .push(format!("pod {pod}: foresight_saga_active {n}")),
            Err(e) => out
                .violations
                .push(format!("pod {pod}: reading foresight_saga_active: {e}")),
        }
    }

    // Nothing reserved (bounded: a release left to recovery takes a moment).
    let end = Instant::now() + Duration::from_secs(20);
    let holdings = loop {
        let mut all = Vec::new();
        let mut error = None;
        for t in c.traders {
            match holding(addr, t).await {
                Ok(h) => all.push(h),
                Err(e) => error = Some(format!("{e:#}")),
            }
        }
        let held: Vec<String> = c
            .traders
            .iter()
            .zip(&all)
            .filter(|(_, h)| h.1 != 0 || h.3 != 0)
            .map(|(t, h)| format!("{}: collateral {} shares {}", t.user_id, h.1, h.3))
            .collect();
        if error.is_none() && held.is_empty() {
            break all;
        }
        if Instant::now() > end {
            out.violations.push(format!(
                "orphaned reservations with no open order: {held:?} {}",
                error.unwrap_or_default()
            ));
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Conservation: totals, and each user's change is what the settled trades moved.
    let n = c.traders.len() as u128;
    out.collateral_deposited = n * u128::from(c.funding.collateral);
    out.shares_deposited = n * u128::from(c.funding.shares);
    out.collateral = holdings.iter().map(|h| h.0 + h.1).sum();
    out.shares = holdings.iter().map(|h| h.2 + h.3).sum();
    if out.collateral != out.collateral_deposited || out.shares != out.shares_deposited {
        out.violations.push(format!(
            "conservation: collateral {} != deposited {} or shares {} != deposited {}",
            out.collateral, out.collateral_deposited, out.shares, out.shares_deposited
        ));
    }
    let settled = c.stub.settled();
    out.trades_settled = settled.len();
    out.settlement_requests = c.stub.requests();
    let index: BTreeMap<&str, usize> = c
        .traders
        .iter()
        .map(|t| (t.user_id.as_str(), t.index))
        .collect();
    let mut moved_collateral = vec![0i128; c.traders.len()];
    let mut moved_shares = vec![0i128; c.traders.len()];
    for (key, t) in &settled {
        let buyer = t["buyer"].as_str().and_then(|u| index.get(u)).copied();
        let seller = t["seller"].as_str().and_then(|u| index.get(u)).copied();
        let (Some(buyer), Some(seller)) = (buyer, seller) else {
            out.violations
                .push(format!("settled {key} between unknown users: {t}"));
            continue;
        };
        let amount = i128::try_from(num(&t["amount"])).unwrap_or(i128::MAX);
        let paid = i128::try_from(num(&t["collateral"])).unwrap_or(i128::MAX);
        moved_collateral[buyer] -= paid;
        moved_collateral[seller] += paid;
        moved_shares[buyer] += amount;
        moved_shares[seller] -= amount;
    }
    if holdings.len() == c.traders.len() {
        for (t, h) in c.traders.iter().zip(&holdings) {
            let collateral =
                i128::try_from(h.0 + h.1).unwrap_or(i128::MAX) - i128::from(c.funding.collateral);
            let shares =
                i128::try_from(h.2 + h.3).unwrap_or(i128::MAX) - i128::from(c.funding.shares);
            if collateral != moved_collateral[t.index] || shares != moved_shares[t.index] {
                out.violations.push(format!(
                    "conservation of {}: collateral changed by {collateral} and shares by {shares}, \
                     the settled trades move {} and {}",
                    t.user_id, moved_collateral[t.index], moved_shares[t.index]
                ));
            }
        }
    }

    // One body per settlement key, and every fill answered was settled as answered.
    let several = c.stub.keys_with_several_bodies();
    if let Some((key, bodies)) = several.iter().next() {
        out.violations.push(format!(
            "{} settlement keys with more than one body, e.g. {key}: {bodies:?}",
            several.len()
        ));
    }
    if c.stub.malformed() != 0 {
        out.violations.push(format!(
            "{} settlement requests whose header and body keys differ",
            c.stub.malformed()
        ));
    }
    for (_, p) in &report.placements {
        let Some(answer) = p.answer.as_ref().filter(|a| a.status == 201) else {
            continue;
        };
        for fill in answer.body["fills"].as_array().into_iter().flatten() {
            out.fills_checked += 1;
            let key = format!("trade:{}", fill["tradeId"].as_str().unwrap_or_default());
            let same = settled.get(&key).is_some_and(|t| {
                num(&t["amount"]) == num(&fill["amount"])
                    && num(&t["collateral"]) == num(&fill["collateral"])
                    && num(&t["price"]) == num(&fill["price"])
            });
            if !same {
                out.violations.push(format!(
                    "fill {fill} of order {} was not settled as answered ({:?})",
                    p.order_id,
                    settled.get(&key)
                ));
            }
        }
    }
    out
}
