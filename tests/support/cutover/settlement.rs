//! [`SettlementStub`]: the settlement endpoint of the cutover tests, on the host's source
//! address towards the pods (so relayers in their network namespaces reach it). It settles
//! every trade (200), or refuses the first few requests (503) when started so, and records,
//! per `Idempotency-Key`, every distinct body it settled, and requests whose header and body
//! keys differ.
//!
//! Uses `axum` and tokio only.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Debug, Default)]
struct Inner {
    /// Requests received.
    requests: u64,
    /// Requests answered 503 (not settled) before the first 200.
    refuse_first: u64,
    /// Idempotency key → every distinct body sent with it, in arrival order.
    bodies: BTreeMap<String, Vec<Value>>,
    /// Requests without a key, or whose header and body keys differ.
    malformed: u64,
}

/// The running stub; stopped when dropped.
pub struct SettlementStub {
    /// `http://<addr>/settle`.
    pub url: String,
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SettlementStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn settle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let header = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let key = body["idempotencyKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    s.requests += 1;
    if s.requests <= s.refuse_first {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "refused by the test" })),
        );
    }
    if header.is_empty() || header != key {
        s.malformed += 1;
    }
    let bodies = s.bodies.entry(key.clone()).or_default();
    if !bodies.contains(&body) {
        bodies.push(body);
    }
    (StatusCode::OK, Json(json!({ "settled": key })))
}

impl SettlementStub {
    /// Starts on a free port of `address`.
    pub async fn start(address: Ipv4Addr) -> Self {
        Self::start_refusing_first(address, 0).await
    }

    /// Starts on a free port of `address`, answering 503 (not settled, retryable) to the first
    /// `refused` requests.
    pub async fn start_refusing_first(address: Ipv4Addr, refused: u64) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            refuse_first: refused,
            ..Inner::default()
        }));
        let listener = tokio::net::TcpListener::bind((address, 0))
            .await
            .expect("bind the settlement stub");
        let addr = listener.local_addr().expect("stub address");
        let app = axum::Router::new()
            .route("/settle", post(settle))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/settle"),
            addr,
            inner,
            task,
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// Requests without a key, or whose header and body keys differ.
    pub fn malformed(&self) -> u64 {
        self.lock().malformed
    }

    /// Every key seen → the first body sent with it.
    pub fn settled(&self) -> BTreeMap<String, Value> {
        self.lock()
            .bodies
            .iter()
            .filter_map(|(k, b)| Some((k.clone(), b.first()?.clone())))
            .collect()
    }

    /// Keys sent with more than one distinct body.
    pub fn keys_with_several_bodies(&self) -> BTreeMap<String, Vec<Value>> {
        self.lock()
            .bodies
            .iter()
            .filter(|(_, b)| b.len() > 1)
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
