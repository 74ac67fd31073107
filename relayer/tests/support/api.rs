//! A small client of a relayer's HTTP API ([`Api`], [`Trader`]) for relayers started as
//! processes, and what tests check through it: [`check_invariants`] over every order and
//! balance, and [`num`] for decimal-string fields.
//!
//! Uses [`super::fixtures::ADMIN_TOKEN`], [`super::metrics`], `reqwest` and `serde_json`.

use std::time::Duration;

use super::fixtures::ADMIN_TOKEN;
use super::metrics::{self, Metrics};

/// A user of the HTTP API: its address and API key.
#[derive(Debug, Clone)]
pub struct Trader {
    pub user_id: String,
    pub api_key: String,
}

/// A small client of the relayer's HTTP API.
#[derive(Debug, Clone)]
pub struct Api {
    pub http: reqwest::Client,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }
}

impl Api {
    /// Creates an API key for `user_id` (admin).
    pub async fn trader(&self, base: &str, user_id: &str) -> Trader {
        let resp = self
            .http
            .post(format!("{base}/admin/api-keys"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "userId": user_id }))
            .send()
            .await
            .expect("create api key");
        assert_eq!(resp.status(), 201, "create api key");
        let body: serde_json::Value = resp.json().await.expect("json");
        Trader {
            user_id: user_id.to_owned(),
            api_key: body["apiKey"].as_str().expect("apiKey").to_owned(),
        }
    }

    /// Credits `amount` of `asset` (admin).
    pub async fn deposit(&self, base: &str, user_id: &str, asset: &str, amount: u64) {
        let resp = self
            .http
            .post(format!("{base}/admin/deposits"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "userId": user_id, "asset": asset, "amount": amount.to_string() }))
            .send()
            .await
            .expect("deposit");
        assert_eq!(resp.status(), 200, "deposit");
    }

    /// Places an order; the status and the JSON body.
    pub async fn place(
        &self,
        base: &str,
        trader: &Trader,
        order: &serde_json::Value,
    ) -> reqwest::Result<(u16, serde_json::Value)> {
        let resp = self
            .http
            .post(format!("{base}/v2/orders"))
            .bearer_auth(&trader.api_key)
            .json(order)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, body))
    }

    /// GET with the trader's key; the status and the JSON body.
    pub async fn get(&self, url: &str, trader: &Trader) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .get(url)
            .bearer_auth(&trader.api_key)
            .send()
            .await
            .expect("get");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A scrape of `{base}/metrics`.
    pub async fn metrics(&self, base: &str) -> Metrics {
        metrics::scrape(&self.http, base).await
    }

    /// Status of `/ready`.
    pub async fn ready(&self, base: &str) -> u16 {
        match self.http.get(format!("{base}/ready")).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }
}

/// A decimal string field of a JSON body as u128.
pub fn num(v: &serde_json::Value) -> u128 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a decimal string: {v}"))
}

/// Every order's state as the relayer reports it, and the balances of every trader; then the
/// invariants that must hold after any traffic: no order over-filled, buyers and sellers of
/// each market filled and paid alike, and collateral and shares equal to the deposits.
pub async fn check_invariants(
    api: &Api,
    base: &str,
    traders: &[Trader],
    orders: &[(String, usize)],
    markets: &[&str],
    collateral_deposited: u128,
    shares_deposited: u128,
) -> Result<(), String> {
    let mut bought: std::collections::BTreeMap<String, (u128, u128)> = Default::default();
    let mut sold: std::collections::BTreeMap<String, (u128, u128)> = Default::default();
    for (id, owner) in orders {
        let (status, o) = api
            .get(&format!("{base}/v2/orders/{id}"), &traders[*owner])
            .await;
        if status == 404 {
            continue; // refused before it reached the book
        }
        if status != 200 {
            return Err(format!("GET order {id}: {status} {o}"));
        }
        let (filled, amount, paid) = (num(&o["filled"]), num(&o["amount"]), num(&o["collateral"]));
        if filled > amount {
            return Err(format!("order {id} over-filled: {o}"));
        }
        let market = o["marketKey"].as_str().unwrap_or_default().to_owned();
        let side = if o["side"] == "buy" {
            &mut bought
        } else {
            &mut sold
        };
        let e = side.entry(market).or_default();
        e.0 += filled;
        e.1 += paid;
    }
    if bought != sold {
        return Err(format!(
            "fills do not pair up: bought (shares, paid) {bought:?} vs sold {sold:?}"
        ));
    }
    let mut collateral = 0u128;
    let mut shares: std::collections::BTreeMap<String, u128> = Default::default();
    for t in traders {
        let (status, b) = api
            .get(&format!("{base}/v2/balances/{}", t.user_id), t)
            .await;
        if status != 200 {
            return Err(format!("GET balances: {status} {b}"));
        }
        collateral += num(&b["collateral"]["available"]) + num(&b["collateral"]["reserved"]);
        for m in markets {
            let s = &b["shares"][*m];
            if !s.is_null() {
                *shares.entry((*m).to_owned()).or_default() +=
                    num(&s["available"]) + num(&s["reserved"]);
            }
        }
    }
    if collateral != collateral_deposited {
        return Err(format!(
            "collateral {collateral} != deposited {collateral_deposited}"
        ));
    }
    for m in markets {
        let got = shares.get(*m).copied().unwrap_or_default();
        if got != shares_deposited {
            return Err(format!(
                "shares of {m}: {got} != deposited {shares_deposited}"
            ));
        }
    }
    Ok(())
}
