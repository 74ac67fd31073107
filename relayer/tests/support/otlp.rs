//! An OTLP trace receiver on `127.0.0.1:0` ([`OtlpReceiver`]), over HTTP (it decodes each
//! `POST /v1/traces` body as the protobuf `ExportTraceServiceRequest`, the types of
//! `opentelemetry-proto`; a body that does not decode is answered 400 and counted) or over
//! gRPC (the `TraceService` of `opentelemetry-proto`, on tonic). Either keeps every span as a
//! [`SpanRecord`], with its service's name.
//!
//! Uses `axum`, `tonic`, `prost` and `opentelemetry-proto`; no other support module.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

/// One span as received, ids in lowercase hex (the parent's empty for a root span).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// `service.name` of the resource that sent it.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// `SpanKind` as the protobuf numbers it: 2 server, 3 client, 1 internal.
    pub kind: i32,
    /// Attributes, each value as text.
    pub attributes: BTreeMap<String, String>,
    /// Links as (trace id, span id).
    pub links: Vec<(String, String)>,
}

impl SpanRecord {
    /// The attribute's value, or "" when absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// OTLP's `SpanKind` numbers.
pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;

#[derive(Debug, Default)]
struct Inner {
    spans: Vec<SpanRecord>,
    undecodable: usize,
}

/// The running receiver; stops when dropped.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

async fn traces(State(inner): State<Arc<Mutex<Inner>>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .undecodable += 1;
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    keep(&inner, request);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// The gRPC face: the same spans, through `TraceService/Export`.
struct Grpc(Arc<Mutex<Inner>>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn keep(inner: &Mutex<Inner>, request: ExportTraceServiceRequest) {
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .and_then(|a| a.get("service.name").cloned())
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(SpanRecord {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                        .collect(),
                });
            }
        }
    }
    inner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .spans
        .extend(received);
}

impl OtlpReceiver {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        Self::serve(|listener, inner| async move {
            let app = axum::Router::new()
                .route("/v1/traces", post(traces))
                .with_state(inner);
            let _ = axum::serve(listener, app).await;
        })
        .await
    }

    /// Binds a free loopback port and runs `server` on it, with the spans' store, until
    /// dropped.
    async fn serve<F, Fut>(server: F) -> Self
    where
        F: FnOnce(tokio::net::TcpListener, Arc<Mutex<Inner>>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(server(listener, inner.clone()));
        Self {
            endpoint,
            inner,
            task,
        }
    }

    /// Starts a gRPC receiver on a free loopback port (`endpoint` for
    /// `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`).
    pub async fn start_grpc() -> Self {
        Self::serve(|listener, inner| async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Grpc(inner)))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        })
        .await
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .spans
            .clone()
    }

    /// The spans of trace `trace_id`.
    pub fn trace(&self, trace_id: &str) -> Vec<SpanRecord> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Bodies that were not an `ExportTraceServiceRequest`.
    pub fn undecodable(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .undecodable
    }
}
