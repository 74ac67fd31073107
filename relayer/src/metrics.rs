//! Prometheus metrics of the relayer: the registry every module registers into, the HTTP
//! request metrics, and their OpenMetrics text. Names are a contract: the operator's health
//! gates read them (listed under "Metrics" in the README).
//! Labels are bounded: route templates, never raw paths. The middleware that records each
//! request is `crate::http::middleware::track`; nothing here knows axum.
//!
//! Room: after `ratelimit`, before `http`; uses no other module of the crate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of `foresight_http_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HttpLabels {
    /// HTTP method.
    pub method: String,
    /// Route template, e.g. `/v2/orders/{id}`, or `unmatched`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of `foresight_http_request_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The relayer's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    http_in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "foresight_http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "foresight_http_request_duration",
            "Time to answer an HTTP request",
            Unit::Seconds,
            http_duration.clone(),
        );
        let http_in_flight = Gauge::default();
        registry.register(
            "foresight_http_requests_in_flight",
            "HTTP requests being processed now (probes and /metrics excluded)",
            http_in_flight.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
        }
    }
}

impl Metrics {
    /// The registry, for other modules to register their metrics.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // NB: writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> i64 {
        self.http_in_flight.get()
    }
}

/// Decrements the in-flight gauge also when the request future is dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Counts a request in flight until the guard is dropped.
    pub fn in_flight_guard(&self) -> InFlight<'_> {
        self.http_in_flight.inc();
        InFlight(&self.http_in_flight)
    }

    /// Records an answered request: its time and its count by method, route template and
    /// status.
    pub fn observe_http_request(&self, method: String, route: String, status: u16, seconds: f64) {
        let labels = RouteLabels { method, route };
        self.http_duration.get_or_create(&labels).observe(seconds);
        self.http_requests
            .get_or_create(&HttpLabels {
                method: labels.method,
                route: labels.route,
                status,
            })
            .inc();
    }
}
