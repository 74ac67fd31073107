//! A small client of a relayer's HTTP API ([`Api`], [`Trader`]) for relayers started as
//! processes, and what tests check through it: [`check_invariants`] over every order and
//! balance, [`check_reservations`] (what is reserved is what open orders need), and [`num`]
//! for decimal-string fields; placements answered as a [`Reply`]
//! ([`post`], [`post_with`]), a trader's [`balances`], and the saga log ([`sagas`],
//! [`wait_no_sagas`], [`active_sagas`]).
//!
//! Uses [`super::fixtures::ADMIN_TOKEN`], [`super::metrics`], [`super::wait`], `reqwest` and
//! `serde_json`.

use std::time::Duration;

use serde_json::{Value, json};

use super::fixtures::ADMIN_TOKEN;
use super::metrics::{self, Metrics};
use super::wait::wait_for_ok;

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
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        assert_eq!(status, 201, "create api key: {body}");
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
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, 200, "deposit: {body}");
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

/// An answer of the relayer: status, the `Idempotent-Replayed` header, `Location`, the body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub replayed: bool,
    pub location: Option<String>,
    pub body: Value,
}

impl Reply {
    /// The error code of an error answer (`""` for any other).
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// `resp` read into a [`Reply`].
pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let replayed = header("idempotent-replayed").as_deref() == Some("true");
    let location = header("location");
    let body = resp.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        replayed,
        location,
        body,
    }
}

/// `POST /v2/orders` as `trader`, through `http`.
pub async fn post_with(
    http: &reqwest::Client,
    base: &str,
    trader: &Trader,
    order: &Value,
) -> reqwest::Result<Reply> {
    let resp = http
        .post(format!("{base}/v2/orders"))
        .bearer_auth(&trader.api_key)
        .json(order)
        .send()
        .await?;
    Ok(reply(resp).await)
}

/// `POST /v2/orders` as `trader`; the relayer must answer.
pub async fn post(api: &Api, base: &str, trader: &Trader, order: &Value) -> Reply {
    post_with(&api.http, base, trader, order)
        .await
        .expect("the relayer answers")
}

/// The trader's balances.
pub async fn balances(api: &Api, base: &str, trader: &Trader) -> Value {
    let (status, b) = api
        .get(&format!("{base}/v2/balances/{}", trader.user_id), trader)
        .await;
    assert_eq!(status, 200, "balances of {}: {b}", trader.user_id);
    b
}

/// The sagas the relayer's log holds (`/admin/sagas`).
pub async fn sagas(api: &Api, base: &str) -> Value {
    let resp = api
        .http
        .get(format!("{base}/admin/sagas"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin sagas");
    assert_eq!(resp.status(), 200, "admin sagas");
    resp.json::<Value>().await.expect("json")["sagas"].clone()
}

/// Each trader's reserved collateral and shares are exactly what their open orders in
/// `markets` still need (a buy: its price × amount, rounded up, less the collateral it paid;
/// a sell: its unfilled amount): nothing reserved is locked without an order, no open order
/// lacks its reservation. Read through `base`.
pub async fn check_reservations(
    api: &Api,
    base: &str,
    traders: &[Trader],
    markets: &[&str],
) -> Result<(), String> {
    for t in traders {
        let (mut need_c, mut need_s) = (0u128, std::collections::BTreeMap::<&str, u128>::new());
        for m in markets {
            let (status, open) = api
                .get(
                    &format!("{base}/orderbook/orders?marketKey={m}&userId={}", t.user_id),
                    t,
                )
                .await;
            if status != 200 {
                return Err(format!(
                    "open orders of {} in {m}: {status} {open}",
                    t.user_id
                ));
            }
            for o in open["orders"].as_array().cloned().unwrap_or_default() {
                let (price, amount, filled) =
                    (num(&o["price"]), num(&o["amount"]), num(&o["filled"]));
                if o["side"] == "buy" {
                    need_c += (price * amount).div_ceil(1_000_000) - num(&o["collateral"]);
                } else {
                    *need_s.entry(m).or_default() += amount - filled;
                }
            }
        }
        let (status, b) = api
            .get(&format!("{base}/v2/balances/{}", t.user_id), t)
            .await;
        if status != 200 {
            return Err(format!("balances of {}: {status} {b}", t.user_id));
        }
        let reserved_c = num(&b["collateral"]["reserved"]);
        if reserved_c != need_c {
            return Err(format!(
                "reserved collateral of {}: {reserved_c}, its open orders need {need_c}",
                t.user_id
            ));
        }
        for m in markets {
            let reserved = if b["shares"][*m].is_null() {
                0
            } else {
                num(&b["shares"][*m]["reserved"])
            };
            let need = need_s.get(m).copied().unwrap_or_default();
            if reserved != need {
                return Err(format!(
                    "reserved {m} of {}: {reserved}, its open orders need {need}",
                    t.user_id
                ));
            }
        }
    }
    Ok(())
}

/// Waits until `base`'s saga log is empty (every saga finished or compensated).
pub async fn wait_no_sagas(api: &Api, base: &str, deadline: Duration) {
    wait_for_ok("the saga log to be empty", deadline, async || {
        let s = sagas(api, base).await;
        if s == json!([]) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
}

/// `foresight_saga_active{saga="order"}` of `base`.
pub async fn active_sagas(api: &Api, base: &str) -> f64 {
    api.metrics(base)
        .await
        .value("foresight_saga_active", &[("saga", "order")])
}
