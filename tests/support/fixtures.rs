//! Fluent fixtures for RelayerDeployments, in the style of kube-rs controller-rs
//! (`Document::test().finalized()`):
//!
//! ```ignore
//! rd("market").replicas(2).rate_limit_disabled().blue_green(
//!     blue_green().auto_promote(false).pre_promotion(gate().samples(3)),
//! ).apply(&env, "my-test").await;
//! ```
//!
//! A fixture is the JSON a test applies: only what a test sets is in it (plus the required
//! `image`), so server-side apply owns exactly those fields, as it did when tests wrote the JSON
//! by hand. `None` for an optional field writes `null`.
//!
//! Uses the operator's CRD types and [`crate::support::TestEnv`].

use kube::api::{Patch, PatchParams};
use relayer_operator::crd::RelayerDeployment;
use serde_json::{Map, Value, json};

use super::TestEnv;

/// The image of a fixture unless [`Rd::image`] says otherwise.
pub const IMAGE: &str = "ghcr.io/foresight/relayer:1";

/// Address of the shared Redis of a fixture unless [`Rd::redis`] or [`Rd::in_memory`] says
/// otherwise. NB: `.invalid` resolves nowhere; only simulated pods (no process) may use it.
pub const REDIS_URL: &str = "redis://redis.invalid:6379/0";

/// A RelayerDeployment named `name` with [`IMAGE`] on the shared Redis [`REDIS_URL`], and
/// nothing else set.
pub fn rd(name: &str) -> Rd {
    Rd {
        name: name.to_owned(),
        spec: json!({ "image": IMAGE, "store": { "redis": { "url": REDIS_URL } } }),
    }
}

/// An empty `strategy.blueGreen`.
pub fn blue_green() -> BlueGreen {
    BlueGreen(Map::new())
}

/// An empty health gate.
pub fn gate() -> Gate {
    Gate(Map::new())
}

/// A RelayerDeployment being built; see [`rd`].
#[derive(Debug, Clone)]
pub struct Rd {
    name: String,
    spec: Value,
}

impl Rd {
    /// `spec.image`.
    pub fn image(self, image: &str) -> Self {
        self.set(&["image"], json!(image))
    }

    /// `spec.store.redis.url`.
    pub fn redis(self, url: &str) -> Self {
        self.set(&["store"], json!({ "redis": { "url": url } }))
    }

    /// `spec.store.redis.url` with the password from key `key` of Secret `secret`.
    pub fn redis_with_password(self, url: &str, secret: &str, key: &str) -> Self {
        self.set(
            &["store"],
            json!({ "redis": {
                "url": url,
                "passwordSecretRef": { "name": secret, "key": key },
            } }),
        )
    }

    /// `spec.store.memory`, accepting or not that a cutover loses the state.
    pub fn in_memory(self, accept_state_loss: bool) -> Self {
        self.set(
            &["store"],
            json!({ "memory": {}, "acceptStateLoss": accept_state_loss }),
        )
    }

    /// `spec.replicas`.
    pub fn replicas(self, replicas: i32) -> Self {
        self.set(&["replicas"], json!(replicas))
    }

    /// `spec.revisionHistoryLimit`.
    pub fn revision_history_limit(self, limit: i32) -> Self {
        self.set(&["revisionHistoryLimit"], json!(limit))
    }

    /// `spec.config.rateLimit.enabled: false`.
    pub fn rate_limit_disabled(self) -> Self {
        self.set(&["config", "rateLimit"], json!({ "enabled": false }))
    }

    /// `spec.config.shutdown`: how long a stopping relayer stays unready, then drains.
    pub fn shutdown(self, readiness_delay_ms: u64, drain_timeout_ms: u64) -> Self {
        self.set(
            &["config", "shutdown"],
            json!({ "readinessDelayMs": readiness_delay_ms, "drainTimeoutMs": drain_timeout_ms }),
        )
    }

    /// `spec.config.limits.maxOrderAmount`.
    pub fn max_order_amount(self, amount: u64) -> Self {
        self.set(&["config", "limits", "maxOrderAmount"], json!(amount))
    }

    /// `spec.ingress.host`.
    pub fn ingress(self, host: &str) -> Self {
        self.set(&["ingress"], json!({ "host": host }))
    }

    /// `spec.autoscaling` between `min` and `max` replicas.
    pub fn autoscaling(self, min: i32, max: i32) -> Self {
        self.set(
            &["autoscaling"],
            json!({ "minReplicas": min, "maxReplicas": max }),
        )
    }

    /// `spec.strategy.blueGreen`.
    pub fn blue_green(self, strategy: BlueGreen) -> Self {
        self.set(&["strategy", "blueGreen"], Value::Object(strategy.0))
    }

    /// The whole object, as JSON.
    pub fn json(&self) -> Value {
        json!({
            "apiVersion": "relayer.foresight.dev/v1alpha1",
            "kind": "RelayerDeployment",
            "metadata": { "name": self.name },
            "spec": self.spec,
        })
    }

    /// The whole object, typed.
    pub fn build(&self) -> RelayerDeployment {
        serde_json::from_value(self.json()).expect("a RelayerDeployment fixture")
    }

    /// Server-side applies it (forced) in the test's namespace as field manager `manager`.
    pub async fn apply(&self, env: &TestEnv, manager: &str) {
        env.api::<RelayerDeployment>()
            .patch(
                &self.name,
                &PatchParams::apply(manager).force(),
                &Patch::Apply(&self.json()),
            )
            .await
            .unwrap_or_else(|e| panic!("apply RelayerDeployment {}: {e}", self.name));
    }

    fn set(mut self, path: &[&str], value: Value) -> Self {
        let mut at = &mut self.spec;
        for key in path {
            if !at.is_object() {
                *at = json!({});
            }
            at = &mut at[*key];
        }
        *at = value;
        self
    }
}

/// `spec.strategy.blueGreen` being built; see [`blue_green`].
#[derive(Debug, Clone)]
pub struct BlueGreen(Map<String, Value>);

impl BlueGreen {
    /// `autoPromote`.
    pub fn auto_promote(self, auto: bool) -> Self {
        self.set("autoPromote", json!(auto))
    }

    /// `scaleDownDelaySeconds`.
    pub fn scale_down_delay_seconds(self, seconds: i32) -> Self {
        self.set("scaleDownDelaySeconds", json!(seconds))
    }

    /// `maxScaleDownWaitSeconds`.
    pub fn max_scale_down_wait_seconds(self, seconds: i32) -> Self {
        self.set("maxScaleDownWaitSeconds", json!(seconds))
    }

    /// `progressDeadlineSeconds`.
    pub fn progress_deadline_seconds(self, seconds: i32) -> Self {
        self.set("progressDeadlineSeconds", json!(seconds))
    }

    /// `autoPromotionSeconds`.
    pub fn auto_promotion_seconds(self, seconds: i32) -> Self {
        self.set("autoPromotionSeconds", json!(seconds))
    }

    /// `abortScaleDownDelaySeconds`.
    pub fn abort_scale_down_delay_seconds(self, seconds: i32) -> Self {
        self.set("abortScaleDownDelaySeconds", json!(seconds))
    }

    /// `prePromotion` (`None`: `null`, no gate).
    pub fn pre_promotion(self, gate: impl Into<Option<Gate>>) -> Self {
        let gate = gate.into().map_or(Value::Null, |g| Value::Object(g.0));
        self.set("prePromotion", gate)
    }

    /// `postPromotion` (`None`: `null`, no gate).
    pub fn post_promotion(self, gate: impl Into<Option<Gate>>) -> Self {
        let gate = gate.into().map_or(Value::Null, |g| Value::Object(g.0));
        self.set("postPromotion", gate)
    }

    fn set(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_owned(), value);
        self
    }
}

/// A health gate being built; see [`gate`].
#[derive(Debug, Clone)]
pub struct Gate(Map<String, Value>);

impl Gate {
    /// `intervalMs`.
    pub fn interval_ms(self, ms: i64) -> Self {
        self.set("intervalMs", json!(ms))
    }

    /// `samples`.
    pub fn samples(self, samples: i64) -> Self {
        self.set("samples", json!(samples))
    }

    /// `failureLimit`.
    pub fn failure_limit(self, limit: i32) -> Self {
        self.set("failureLimit", json!(limit))
    }

    /// `minRequests`.
    pub fn min_requests(self, requests: i64) -> Self {
        self.set("minRequests", json!(requests))
    }

    /// `maxErrorRateBasisPoints` (`None`: `null`, no error-rate check).
    pub fn max_error_rate_basis_points(self, basis_points: impl Into<Option<i32>>) -> Self {
        self.set("maxErrorRateBasisPoints", json!(basis_points.into()))
    }

    /// `maxP99LatencyMs`.
    pub fn max_p99_latency_ms(self, ms: i64) -> Self {
        self.set("maxP99LatencyMs", json!(ms))
    }

    /// `statistical`: the statistical judge, as given (`{}` for its defaults).
    pub fn statistical(self, judge: Value) -> Self {
        self.set("statistical", judge)
    }

    /// One more of `webhooks`: `name` at `url`, with `retries` and a 1 s timeout.
    pub fn webhook(mut self, name: &str, url: &str, retries: i32) -> Self {
        let hook = json!({ "name": name, "url": url, "retries": retries, "timeoutSeconds": 1 });
        match self.0.get_mut("webhooks") {
            Some(Value::Array(hooks)) => hooks.push(hook),
            _ => {
                self.0.insert("webhooks".to_owned(), json!([hook]));
            }
        }
        self
    }

    /// `probe.requestsPerSecond`: the gate's own probe load.
    pub fn probe(self, requests_per_second: i32) -> Self {
        self.set("probe", json!({ "requestsPerSecond": requests_per_second }))
    }

    fn set(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_owned(), value);
        self
    }
}
