//! A relayer served in-process on a `127.0.0.1:0` listener ([`Server`]), with a small HTTP
//! client around it: calls with a bearer token, API keys, deposits, scrapes.
//!
//! Uses the relayer crate's config, store and server entry points, [`super::fixtures`] and
//! [`super::metrics`].

use std::time::Duration;

use relayer::config::RelayerConfig;
use relayer::store::Store;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::fixtures::ADMIN_TOKEN;
use super::metrics::{self, Metrics};

/// A running server; stop it with [`Server::stop`] to check it exits cleanly.
pub struct Server {
    pub base: String,
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Starts a server whose config is the default with an admin token, small limits, no
    /// readiness delay, and whatever `tweak` changes (a `redisUrl` selects the Redis store).
    pub async fn start(tweak: impl FnOnce(&mut RelayerConfig)) -> Self {
        let mut config = RelayerConfig {
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            ..RelayerConfig::default()
        };
        config.limits.max_body_bytes = 1024;
        config.limits.max_order_amount = 1_000_000;
        config.shutdown.readiness_delay_ms = 0;
        tweak(&mut config);
        config.validate().expect("test config is valid");
        let store = Store::from_config(&config).expect("store");
        let state = relayer::AppState::new(config, store).expect("state");
        Self::serve(state).await
    }

    /// Serves an already built state.
    pub async fn serve(state: relayer::AppState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relayer::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self {
            base,
            client,
            stop: Some(stop),
            task,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = auth {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = auth {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let value = resp.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn api_key(&self, user: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/admin/api-keys",
                Some(ADMIN_TOKEN),
                Some(json!({"userId": user})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["apiKey"].as_str().expect("apiKey").to_owned()
    }

    pub async fn deposit(&self, user: &str, asset: &str, amount: u64) {
        let (status, body) = self
            .call(
                Method::POST,
                "/admin/deposits",
                Some(ADMIN_TOKEN),
                Some(json!({"userId": user, "asset": asset, "amount": amount.to_string()})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// A scrape of `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        metrics::scrape(&self.client, &self.base).await
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops in time");
        result.expect("server task").expect("server exits cleanly");
    }
}
