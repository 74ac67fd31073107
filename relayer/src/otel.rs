//! OpenTelemetry traces, off by default and switched on by the standard `OTEL_*` variables
//! alone, and the W3C trace-context helpers the relayer's rooms and the operator share.
//!
//! # Switching on
//! [`Settings::from_env`] reads, as the OpenTelemetry specification defines them:
//! - `OTEL_SDK_DISABLED=true` turns everything off;
//! - `OTEL_TRACES_EXPORTER`: `otlp` on, `none` off; anything else is refused by name;
//! - unset, traces are on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set;
//! - `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (the
//!   default) or `grpc` (plaintext); `http/json` and others are refused by name.
//!
//! The exporter reads the endpoint, `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT` and
//! `…_COMPRESSION` itself, the batch processor `OTEL_BSP_*`, the sampler `OTEL_TRACES_SAMPLER`,
//! and the resource `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the service name
//! defaults to the binary's, `relayer` or `relayer-operator`).
//!
//! # Cost when off
//! [`enabled`] is false and the rooms create no span at all ([`span_if_enabled`]), so a relayer
//! without the variables pays one atomic load per request.
//!
//! Room: a leaf beside [`crate::exposition`]; uses nothing of the crate. Built with the `otel`
//! feature (part of `server`; the operator enables `otel` alone).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Whether a tracer is installed in this process.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// How spans leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`), the specification's default.
    HttpProtobuf,
    /// OTLP/gRPC (`grpc`), plaintext.
    Grpc,
}

/// A variable that asks for something this build cannot do; it names the variable and value.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// An exporter other than `otlp` or `none`.
    #[error("{var}={value:?} is not supported: only `otlp` or `none`")]
    Exporter {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A protocol other than `http/protobuf` or `grpc`.
    #[error("{var}={value:?} is not supported: only `http/protobuf` or `grpc`")]
    Protocol {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The exporter could not be built (e.g. an endpoint that is no URL).
    #[error("cannot set up the OTLP trace exporter: {0}")]
    Build(String),
}

/// What the variables ask for: `None` when traces stay off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The transport.
    pub protocol: Protocol,
}

impl Settings {
    /// Reads the variables through `var` (pure; [`install`] passes the process environment).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, OtelError> {
        let set = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let on = match set("OTEL_TRACES_EXPORTER") {
            Some(value) => {
                let mut on = false;
                for name in value.split(',').map(str::trim) {
                    match name {
                        "otlp" => on = true,
                        "none" => {}
                        _ => {
                            return Err(OtelError::Exporter {
                                var: "OTEL_TRACES_EXPORTER",
                                value,
                            });
                        }
                    }
                }
                on
            }
            None => {
                set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
                    || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            }
        };
        if !on {
            return Ok(None);
        }
        let (var, value) = match (
            set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
            set("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ) {
            (Some(v), _) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v),
            (None, Some(v)) => ("OTEL_EXPORTER_OTLP_PROTOCOL", v),
            (None, None) => ("", "http/protobuf".to_owned()),
        };
        let protocol = match value.as_str() {
            "http/protobuf" => Protocol::HttpProtobuf,
            "grpc" => Protocol::Grpc,
            _ => return Err(OtelError::Protocol { var, value }),
        };
        Ok(Some(Self { protocol }))
    }
}

/// The installed tracer provider; [`Tracing::shutdown`] flushes what is queued.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports what is still queued (at most 5 s, the SDK's shutdown bound) and stops. Blocks:
    /// call it off the async runtime's threads (e.g. in `spawn_blocking`).
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Release);
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "traces not flushed at shutdown");
        }
    }
}

/// Builds the exporter and the tracer when the process environment asks for traces
/// ([`Settings::from_env`]); `service` is the default `service.name`. Must run inside the tokio
/// runtime (the gRPC exporter's channel lives on it). Also installs the W3C trace-context
/// propagator globally.
pub fn install(service: &'static str) -> Result<Option<(Tracing, SdkTracer)>, OtelError> {
    let env = |name: &str| std::env::var(name).ok();
    let Some(settings) = Settings::from_env(env)? else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match settings.protocol {
        Protocol::HttpProtobuf => exporter.with_http().build(),
        Protocol::Grpc => exporter.with_tonic().build(),
    }
    .map_err(|e| OtelError::Build(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = env("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| v.contains("service.name="));
    if !named {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer(service);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Release);
    Ok(Some((Tracing { provider }, tracer)))
}

/// Whether traces are on in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// `make()` when traces are on, else a disabled span (no allocation, nothing recorded).
pub fn span_if_enabled(make: impl FnOnce() -> Span) -> Span {
    if enabled() { make() } else { Span::none() }
}

/// Makes `span` (not yet entered) a child of the W3C `traceparent` in `headers`, if there is a
/// valid one; a malformed header is ignored (the span starts a trace of its own).
pub fn set_remote_parent(span: &Span, headers: &http::HeaderMap) {
    if headers.get("traceparent").is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        // NB: fails only for a span already started or without the layer: it keeps its own.
        let _ = span.set_parent(cx);
    }
}

/// Adds `span`'s `traceparent` to `headers`; nothing when traces are off. Never `tracestate`:
/// that would forward whatever a client sent (up to 32 members of 256-byte values) to the
/// settlement endpoint, whose proxies may refuse the request for its size.
pub fn inject(span: &Span, headers: &mut http::HeaderMap) {
    if let Some(value) = traceparent(span).and_then(|v| http::HeaderValue::from_str(&v).ok()) {
        headers.insert("traceparent", value);
    }
}

/// `span`'s W3C `traceparent`, for a record that outlives the process (the saga log); `None`
/// when traces are off.
pub fn traceparent(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Links `span` (not yet entered) to the span a `traceparent` names, e.g. a saga's original
/// request when another replica recovers it; a malformed value is ignored.
pub fn link_to(span: &Span, traceparent: &str) {
    if let Some(cx) = parse_traceparent(traceparent) {
        span.add_link(cx);
    }
}

/// The span context a W3C `traceparent` names, if it is valid.
pub fn parse_traceparent(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Records `span`'s trace id, in hex, as its field `trace_id` (declared `Empty`), so the log
/// lines inside it name the trace; nothing when traces are off.
pub fn record_trace_id(span: &Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id);
    }
}

/// `span`'s trace id in hex; `None` when traces are off.
fn trace_id(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn traces_are_off_without_the_variables_and_on_with_an_endpoint_alone() {
        assert_eq!(Settings::from_env(env(&[])).expect("valid"), None);
        let on = Settings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]));
        assert_eq!(
            on.expect("valid"),
            Some(Settings {
                protocol: Protocol::HttpProtobuf
            })
        );
        let traces_only =
            Settings::from_env(env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c")]));
        assert!(traces_only.expect("valid").is_some());
        let blank = Settings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]));
        assert_eq!(blank.expect("valid"), None);
    }

    #[test]
    fn the_exporter_variable_switches_on_or_off_and_the_sdk_can_be_disabled() {
        let otlp = Settings::from_env(env(&[("OTEL_TRACES_EXPORTER", "otlp")]));
        assert!(otlp.expect("valid").is_some());
        let none = Settings::from_env(env(&[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ]));
        assert_eq!(none.expect("valid"), None);
        let disabled = Settings::from_env(env(&[
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ]));
        assert_eq!(disabled.expect("valid"), None);
        let error = Settings::from_env(env(&[("OTEL_TRACES_EXPORTER", "otlp,zipkin")]))
            .expect_err("zipkin is not built in");
        assert_eq!(
            error.to_string(),
            "OTEL_TRACES_EXPORTER=\"otlp,zipkin\" is not supported: only `otlp` or `none`"
        );
    }

    #[test]
    fn the_protocol_is_http_protobuf_or_grpc_and_the_traces_variable_wins() {
        let grpc = Settings::from_env(env(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]));
        assert_eq!(
            grpc.expect("valid").map(|s| s.protocol),
            Some(Protocol::Grpc)
        );
        let traces = Settings::from_env(env(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]));
        assert_eq!(
            traces.expect("valid").map(|s| s.protocol),
            Some(Protocol::HttpProtobuf)
        );
        let error = Settings::from_env(env(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]))
        .expect_err("no json");
        assert_eq!(
            error.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\" is not supported: only `http/protobuf` or `grpc`"
        );
    }

    #[test]
    fn a_traceparent_parses_only_when_valid() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(tp).expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }
}
