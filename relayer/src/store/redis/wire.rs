//! Reading what Redis answers: the scripts' replies and stored hashes and JSON decoded into
//! domain types, the few encodings the scripts expect (asset fields, bucket and side codes),
//! and the classification of Redis errors into [`StoreError`]s.
//!
//! May use: `domain`, `book`, and the store's own types.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use serde::Deserialize;

use crate::domain::{
    Account, Asset, Balance, Bucket, Fill, MarketKey, Order, OrderStatus, Side, UserId,
};
use crate::store::{Claim, StoreError};

pub(super) fn unavailable(what: &str, e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis {what}: {e}"))
}

pub(super) fn corrupt(what: &str, detail: impl fmt::Display) -> StoreError {
    tracing::error!(%detail, what, "unexpected data in redis");
    StoreError::Corrupt(format!("redis {what}: {detail}"))
}

/// A server's refusal of our own script or an answer we cannot read is a defect or corrupt
/// data; everything else (I/O, refused connections, LOADING, BUSY, …) means "not now".
pub(super) fn classify(what: &str, e: RedisError) -> StoreError {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ResponseError)
        | ErrorKind::Parse
        | ErrorKind::UnexpectedReturnType => corrupt(what, e),
        _ => unavailable(what, e),
    }
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt("encode", e))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    raw: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| corrupt(what, e))
}

pub(super) fn parse_num<T: std::str::FromStr>(
    what: &str,
    raw: Option<&String>,
) -> Result<T, StoreError> {
    raw.and_then(|r| r.parse().ok())
        .ok_or_else(|| corrupt(what, format!("not a number: {raw:?}")))
}

pub(super) fn asset_field(asset: &Asset) -> String {
    match asset {
        Asset::Collateral => "c".to_owned(),
        Asset::Shares(m) => format!("s:{m}"),
    }
}

pub(super) fn bucket_code(bucket: Bucket) -> &'static str {
    match bucket {
        Bucket::Available => "a",
        Bucket::Reserved => "r",
        Bucket::External => "e",
    }
}

pub(super) fn side_code(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

pub(super) fn parse_status(raw: &str) -> Result<OrderStatus, StoreError> {
    match raw {
        "open" => Ok(OrderStatus::Open),
        "partially_filled" => Ok(OrderStatus::PartiallyFilled),
        "filled" => Ok(OrderStatus::Filled),
        "cancelled" => Ok(OrderStatus::Cancelled),
        other => Err(corrupt("order status", other)),
    }
}

/// An account from its hash's fields (`c:a`, `c:r`, `s:<market>:a`, `s:<market>:r`).
pub(super) fn parse_account(flat: &[String]) -> Result<Account, StoreError> {
    let mut account = Account::default();
    let mut shares: BTreeMap<MarketKey, Balance> = BTreeMap::new();
    for pair in flat.chunks(2) {
        let [field, value] = pair else {
            return Err(corrupt("account", "odd number of fields"));
        };
        let amount: u128 = parse_num("balance", Some(value))?;
        let (asset, bucket) = field
            .rsplit_once(':')
            .ok_or_else(|| corrupt("account field", field))?;
        let balance = if asset == "c" {
            &mut account.collateral
        } else {
            let market = asset
                .strip_prefix("s:")
                .and_then(|m| MarketKey::parse("marketKey", m).ok())
                .ok_or_else(|| corrupt("account field", field))?;
            shares.entry(market).or_default()
        };
        match bucket {
            "a" => balance.available = amount,
            "r" => balance.reserved = amount,
            _ => return Err(corrupt("account field", field)),
        }
    }
    account.shares = shares;
    Ok(account)
}

pub(super) fn parse_claim(
    claim: Option<&String>,
    result: Option<&String>,
) -> Result<Claim, StoreError> {
    let raw = claim.ok_or_else(|| corrupt("claim", "missing"))?;
    let mut claim: Claim = from_json("claim", raw)?;
    claim.result = match result.map(String::as_str) {
        None | Some("") => None,
        Some(r) => Some(from_json("placement record", r)?),
    };
    Ok(claim)
}

/// An order as the scripts keep it: every field a decimal string.
#[derive(Debug, Deserialize)]
pub(super) struct WireOrder {
    id: String,
    user: String,
    side: String,
    price: String,
    amount: String,
    filled: String,
    notional: String,
    reserved: String,
    paid: String,
    status: String,
    seq: String,
    created: String,
}

impl WireOrder {
    pub(super) fn from_fields(mut f: HashMap<String, String>) -> Result<Self, StoreError> {
        let mut take = |k: &str| {
            f.remove(k)
                .ok_or_else(|| corrupt("order", format!("missing field {k}")))
        };
        Ok(Self {
            id: take("id")?,
            user: take("user")?,
            side: take("side")?,
            price: take("price")?,
            amount: take("amount")?,
            filled: take("filled")?,
            notional: take("notional")?,
            reserved: take("reserved")?,
            paid: take("paid")?,
            status: take("status")?,
            seq: take("seq")?,
            created: take("created")?,
        })
    }

    pub(super) fn into_order(self, market: &MarketKey) -> Result<Order, StoreError> {
        let side = match self.side.as_str() {
            "buy" => Side::Buy,
            "sell" => Side::Sell,
            other => return Err(corrupt("order side", other)),
        };
        Ok(Order {
            market_key: market.clone(),
            user_id: UserId::parse("userId", &self.user).map_err(|e| corrupt("order user", e))?,
            side,
            price: parse_num("price", Some(&self.price))?,
            amount: parse_num("amount", Some(&self.amount))?,
            filled: parse_num("filled", Some(&self.filled))?,
            notional: parse_num("notional", Some(&self.notional))?,
            reserved: parse_num("reserved", Some(&self.reserved))?,
            paid: parse_num("paid", Some(&self.paid))?,
            status: parse_status(&self.status)?,
            seq: parse_num("seq", Some(&self.seq))?,
            created_at_ms: parse_num("created", Some(&self.created))?,
            order_id: self.id,
        })
    }
}

pub(super) fn parse_order(market: &MarketKey, raw: &str) -> Result<Order, StoreError> {
    from_json::<WireOrder>("order", raw)?.into_order(market)
}

/// A fill as `match_order.lua` reports it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFill {
    trade_id: String,
    maker: String,
    taker: String,
    buyer: String,
    seller: String,
    buy_order: String,
    sell_order: String,
    price: String,
    amount: String,
    collateral: String,
    refund: String,
    maker_done: String,
}

/// A maker release as `undo_match.lua` reports it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireRelease {
    pub(super) trade_id: String,
    pub(super) order_id: String,
    pub(super) user: String,
    pub(super) side: String,
    pub(super) amount: String,
}

/// A fill, and whether its maker order finished with it.
pub(super) fn parse_fill(market: &MarketKey, raw: &str) -> Result<(Fill, bool), StoreError> {
    let w: WireFill = from_json("fill", raw)?;
    let user = |u: &str| UserId::parse("userId", u).map_err(|e| corrupt("fill user", e));
    let fill = Fill {
        trade_id: w.trade_id,
        market_key: market.clone(),
        maker_order_id: w.maker,
        taker_order_id: w.taker,
        buyer: user(&w.buyer)?,
        seller: user(&w.seller)?,
        buy_order_id: w.buy_order,
        sell_order_id: w.sell_order,
        price: parse_num("price", Some(&w.price))?,
        amount: parse_num("amount", Some(&w.amount))?,
        collateral: parse_num("collateral", Some(&w.collateral))?,
        buyer_refund: parse_num("refund", Some(&w.refund))?,
    };
    Ok((fill, w.maker_done == "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_parse_from_hash_fields() {
        let flat: Vec<String> = [
            "c:a",
            "10",
            "c:r",
            "5",
            "s:80002:1:a",
            "7",
            "s:80002:1:r",
            "0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let account = parse_account(&flat).expect("valid");
        assert_eq!(
            account.collateral,
            Balance {
                available: 10,
                reserved: 5
            }
        );
        let market = MarketKey::parse("m", "80002:1").expect("valid");
        assert_eq!(account.balance(&Asset::Shares(market)).available, 7);
        assert!(parse_account(&["x:a".to_owned(), "1".to_owned()]).is_err());
        assert!(parse_account(&["c:a".to_owned(), "-1".to_owned()]).is_err());
    }
}
