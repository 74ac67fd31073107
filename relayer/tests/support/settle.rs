//! A test settlement endpoint on `127.0.0.1:0`: told to succeed, fail with a status, hang,
//! settle and then hang (the answer is lost), or take its time and then settle; it records
//! every request's idempotency key and every distinct body sent under each key, and settles
//! each key at most once (as a real idempotent endpoint would). It can also require a
//! credential header ([`SettlementServer::require_header`]): a request without it is answered
//! 401 and settles nothing; the header of every request is kept, and so is every request's W3C
//! `traceparent`. It can also answer a redirect to a URL of its own that would settle
//! ([`Mode::Redirect`]; requests that follow it are kept, [`SettlementServer::followed`]), or a
//! 200 with a body of the test's choosing that settles nothing ([`Mode::Answer`]).
//!
//! Uses `axum` for the endpoint; no other support module.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde_json::{Value, json};

/// What the endpoint does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Settles (once per key) and answers 200.
    Succeed,
    /// Answers this status without settling.
    Fail(u16),
    /// Never answers (nothing settled).
    Hang,
    /// Settles, then never answers.
    SettleThenHang,
    /// Waits this many milliseconds, then settles (once per key) and answers 200; a caller
    /// that hangs up before then settles nothing.
    Delay(u64),
    /// Waits this many milliseconds, then answers the status without settling.
    FailAfter(u64, u16),
    /// Answers this 3xx status with `Location: /settled-elsewhere`, which would answer
    /// `{"settled": <Idempotency-Key>}` with 200 to any request; settles nothing here.
    Redirect(u16),
    /// Answers 200 with this body (as `application/json`) without settling.
    Answer(&'static str),
}

#[derive(Debug, Default)]
struct Inner {
    mode: Option<Mode>,
    /// Modes for the next requests, before `mode` applies again.
    script: VecDeque<Mode>,
    /// Idempotency keys of every request, in arrival order.
    requests: Vec<String>,
    /// Settled keys → how many times a settlement was recorded (always 1 when idempotent).
    settled: BTreeMap<String, u32>,
    /// Requests whose header and body keys differed or were missing.
    malformed: usize,
    /// Idempotency key → every distinct body sent with it, in arrival order.
    bodies: BTreeMap<String, Vec<Value>>,
    /// A header (name, value) every request must carry, else 401.
    required: Option<(String, String)>,
    /// The required header's value in each request (None: absent), in arrival order.
    credentials: Vec<Option<String>>,
    /// Requests answered 401 for a missing or wrong required header.
    unauthorized: usize,
    /// Each request's idempotency key and W3C `traceparent` header (None: absent), in arrival
    /// order.
    traceparents: Vec<(String, Option<String>)>,
    /// Requests that carried a `tracestate` header.
    tracestates: usize,
    /// The `Idempotency-Key` of every request that followed a redirect, in arrival order.
    followed: Vec<String>,
}

/// The running endpoint.
pub struct SettlementServer {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SettlementServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn settle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let header = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let key = body["idempotencyKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mode = {
        let mut s = lock(&inner);
        if header.is_empty() || header != key {
            s.malformed += 1;
        }
        s.requests.push(key.clone());
        let traceparent = headers
            .get("traceparent")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if headers.contains_key("tracestate") {
            s.tracestates += 1;
        }
        s.traceparents.push((key.clone(), traceparent));
        if let Some((name, value)) = s.required.clone() {
            let got = headers
                .get(name.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let ok = got.as_deref() == Some(value.as_str());
            s.credentials.push(got);
            if !ok {
                s.unauthorized += 1;
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"error": "credential missing or wrong"})),
                )
                    .into_response();
            }
        }
        let bodies = s.bodies.entry(key.clone()).or_default();
        if !bodies.contains(&body) {
            bodies.push(body.clone());
        }
        let mode = s.script.pop_front().or(s.mode).unwrap_or(Mode::Succeed);
        if matches!(mode, Mode::Succeed | Mode::SettleThenHang) {
            s.settled.entry(key.clone()).or_insert(1);
        }
        mode
    };
    match mode {
        Mode::Redirect(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
            [(header::LOCATION, "/settled-elsewhere")],
        )
            .into_response(),
        Mode::Answer(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response(),
        Mode::Succeed => (StatusCode::OK, Json(json!({"settled": key}))).into_response(),
        Mode::Fail(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(json!({"error": "told to fail"})),
        )
            .into_response(),
        Mode::Hang | Mode::SettleThenHang => {
            // NB: this sleep is the scenario (an endpoint that never answers), not a wait.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (StatusCode::OK, Json(json!({}))).into_response()
        }
        Mode::FailAfter(ms, status) => {
            // NB: this sleep is the scenario (a slow endpoint that then refuses), not a wait.
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                Json(json!({"error": "told to fail"})),
            )
                .into_response()
        }
        Mode::Delay(ms) => {
            // NB: this sleep is the scenario (a slow endpoint), not a wait.
            tokio::time::sleep(Duration::from_millis(ms)).await;
            lock(&inner).settled.entry(key.clone()).or_insert(1);
            (StatusCode::OK, Json(json!({"settled": key}))).into_response()
        }
    }
}

/// Where [`Mode::Redirect`] points: answers any request as settled (by its `Idempotency-Key`
/// header, which a client following a redirect keeps) and records that it was followed.
async fn settled_elsewhere(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let key = headers
        .get("idempotency-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    lock(&inner).followed.push(key.clone());
    (StatusCode::OK, Json(json!({"settled": key})))
}

impl SettlementServer {
    /// Starts on a free loopback port, succeeding.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}/settle", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .route("/settle", post(settle))
            .route("/settled-elsewhere", any(settled_elsewhere))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner, task }
    }

    /// What every later request does.
    pub fn set_mode(&self, mode: Mode) {
        let mut s = lock(&self.inner);
        s.mode = Some(mode);
        s.script.clear();
    }

    /// What the next requests do, one mode each, before the standing mode applies again.
    pub fn script(&self, modes: &[Mode]) {
        lock(&self.inner).script.extend(modes.iter().copied());
    }

    /// Idempotency keys of every request so far.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.inner).requests.clone()
    }

    /// Settled keys and how often each was settled.
    pub fn settled(&self) -> BTreeMap<String, u32> {
        lock(&self.inner).settled.clone()
    }

    /// Every distinct body sent under each idempotency key (more than one body under a key is
    /// a key reused for a different trade).
    pub fn bodies(&self) -> BTreeMap<String, Vec<Value>> {
        lock(&self.inner).bodies.clone()
    }

    /// Requests without matching header and body keys.
    pub fn malformed(&self) -> usize {
        lock(&self.inner).malformed
    }

    /// From now on every request must carry `name: value`; any other is answered 401 and
    /// settles nothing.
    pub fn require_header(&self, name: &str, value: &str) {
        lock(&self.inner).required = Some((name.to_ascii_lowercase(), value.to_owned()));
    }

    /// The required header's value in each request since [`Self::require_header`] (None:
    /// absent), in arrival order.
    pub fn credentials(&self) -> Vec<Option<String>> {
        lock(&self.inner).credentials.clone()
    }

    /// Requests answered 401 for a missing or wrong required header.
    pub fn unauthorized(&self) -> usize {
        lock(&self.inner).unauthorized
    }

    /// The `Idempotency-Key` of every request that followed a [`Mode::Redirect`].
    pub fn followed(&self) -> Vec<String> {
        lock(&self.inner).followed.clone()
    }

    /// Requests that carried a `tracestate` header.
    pub fn tracestates(&self) -> usize {
        lock(&self.inner).tracestates
    }

    /// Each request's idempotency key and `traceparent` header (None: absent), in arrival order.
    pub fn traceparents(&self) -> Vec<(String, Option<String>)> {
        lock(&self.inner).traceparents.clone()
    }
}
