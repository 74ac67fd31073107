//! Reading what Redis answers: the scripts' replies and stored hashes and JSON decoded into
//! domain types, the few encodings the scripts expect (asset fields, bucket and side codes),
//! and the classification of Redis errors into [`StoreError`]s.
//!
//! May use: `domain`, `book`, and the store's own types.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use serde::Deserialize;

use crate::book::{Level, MakerRelease, MatchOutcome, UndoOutcome};
use crate::domain::{
    Account, Asset, Balance, BalanceError, Bucket, Fill, MarketKey, Move, Order, OrderStatus, Side,
    UserId,
};
use crate::store::{Claim, SagaEntry, StoreError};

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
                .and_then(MarketKey::stored)
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
    failed: Option<&String>,
) -> Result<Claim, StoreError> {
    let raw = claim.ok_or_else(|| corrupt("claim", "missing"))?;
    let mut claim: Claim = from_json("claim", raw)?;
    claim.result = match result.map(String::as_str) {
        None | Some("") => None,
        Some(r) => Some(from_json("placement record", r)?),
    };
    claim.failed = match failed.map(String::as_str) {
        None | Some("") => None,
        Some(r) => Some(from_json("failed placement", r)?),
    };
    Ok(claim)
}

/// An order as the scripts keep it: every field a decimal string.
#[derive(Debug, Deserialize)]
pub(super) struct WireOrder {
    id: String,
    /// The client order id; absent in orders of older builds.
    #[serde(default)]
    cid: Option<String>,
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
        let cid = f.remove("cid");
        let mut take = |k: &str| {
            f.remove(k)
                .ok_or_else(|| corrupt("order", format!("missing field {k}")))
        };
        Ok(Self {
            id: take("id")?,
            cid,
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
            client_order_id: self.cid.unwrap_or_default(),
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
    #[serde(default)]
    maker_cid: Option<String>,
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
struct WireRelease {
    trade_id: String,
    order_id: String,
    user: String,
    side: String,
    amount: String,
}

/// A fill, and whether its maker order finished with it.
fn parse_fill(market: &MarketKey, raw: &str) -> Result<(Fill, bool), StoreError> {
    let w: WireFill = from_json("fill", raw)?;
    let user = |u: &str| UserId::parse("userId", u).map_err(|e| corrupt("fill user", e));
    let fill = Fill {
        trade_id: w.trade_id,
        market_key: market.clone(),
        maker_order_id: w.maker,
        maker_client_order_id: w.maker_cid.unwrap_or_default(),
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

/// The reply of `apply_moves.lua`: the account after the moves, or the move refused and why.
pub(super) fn parse_apply_moves(
    reply: &[String],
    moves: &[Move],
) -> Result<Result<Account, BalanceError>, StoreError> {
    let move_at = |raw: Option<&String>| -> Result<&Move, StoreError> {
        raw.and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| moves.get(i))
            .ok_or_else(|| corrupt("apply_moves", format!("bad move index in {reply:?}")))
    };
    match reply.first().map(String::as_str) {
        Some("ok") => Ok(Ok(parse_account(reply.get(2..).unwrap_or_default())?)),
        Some("fenced") => Err(StoreError::Fenced),
        Some("insufficient") => {
            let m = move_at(reply.get(1))?;
            let bucket = if reply.get(2).map(String::as_str) == Some("reserved") {
                "reserved"
            } else {
                "available"
            };
            let has = parse_num::<u128>("balance", reply.get(3))?;
            Ok(Err(BalanceError::Insufficient {
                asset: m.asset.clone(),
                bucket,
                has,
                needs: u128::from(m.amount),
            }))
        }
        Some("overflow") => {
            let m = move_at(reply.get(1))?;
            Ok(Err(BalanceError::Overflow {
                asset: m.asset.clone(),
            }))
        }
        _ => Err(corrupt(
            "apply_moves",
            format!("unexpected reply {reply:?}"),
        )),
    }
}

/// The reply of `match_order.lua`: the outcome, and the maker orders it finished (filled or
/// cancelled by self-trade prevention), whose claims live in other slots: (owner, client
/// order id).
pub(super) fn parse_match(
    market: &MarketKey,
    order_id: &str,
    reply: &[String],
) -> Result<(MatchOutcome, Vec<(UserId, String)>), StoreError> {
    let (head, fill_count) = match reply {
        [tag] if tag == "fenced" => return Err(StoreError::Fenced),
        [tag] if tag == "undone" => {
            return Err(StoreError::Corrupt(format!(
                "placement {order_id} was undone"
            )));
        }
        [head, count, ..] => (head, count),
        _ => return Err(corrupt("match_order", format!("short reply {reply:?}"))),
    };
    let order = parse_order(market, head)?;
    let fill_count: usize = parse_num("fill count", Some(fill_count))?;
    let rest = reply.get(2..).unwrap_or_default();
    let (fill_json, cancelled_json) = rest.split_at(fill_count.min(rest.len()));
    let mut fills = Vec::with_capacity(fill_json.len());
    let mut finished = Vec::new();
    for raw in fill_json {
        let (fill, maker_done) = parse_fill(market, raw)?;
        if maker_done {
            finished.push((fill.maker_user().clone(), fill.maker_client_id().to_owned()));
        }
        fills.push(fill);
    }
    let self_trade_cancelled = cancelled_json
        .iter()
        .map(|raw| parse_order(market, raw))
        .collect::<Result<Vec<_>, _>>()?;
    finished.extend(
        self_trade_cancelled
            .iter()
            .map(|o| (o.user_id.clone(), o.client_id().to_owned())),
    );
    Ok((
        MatchOutcome {
            order,
            fills,
            self_trade_cancelled,
        },
        finished,
    ))
}

/// The mark `undo_match.lua` puts on the taker it answers (see [`UndoOutcome::taker_left`]).
#[derive(Debug, Deserialize)]
struct TakerLeft {
    #[serde(default)]
    left: Option<bool>,
}

/// The reply of `undo_match.lua`: what undoing the match did.
pub(super) fn parse_undo(market: &MarketKey, reply: &[String]) -> Result<UndoOutcome, StoreError> {
    let bad = || corrupt("undo_match", format!("unexpected reply {reply:?}"));
    let (taker_json, rest) = match reply {
        [tag] if tag == "fenced" => return Err(StoreError::Fenced),
        [tag, taker, rest @ ..] if tag == "undone" => (taker, rest),
        _ => return Err(bad()),
    };
    let (taker, taker_left) = if taker_json.is_empty() {
        (None, false)
    } else {
        let left = from_json::<TakerLeft>("undone taker", taker_json)?.left;
        (Some(parse_order(market, taker_json)?), left == Some(true))
    };
    let (count, rest) = rest.split_first().ok_or_else(bad)?;
    let n: usize = parse_num("fill count", Some(count))?;
    if rest.len() < n + 1 {
        return Err(bad());
    }
    let (fill_json, rest) = rest.split_at(n);
    let fills = fill_json
        .iter()
        .map(|raw| parse_fill(market, raw).map(|(f, _)| f))
        .collect::<Result<Vec<_>, _>>()?;
    let (count, rest) = rest.split_first().ok_or_else(bad)?;
    let c: usize = parse_num("cancelled count", Some(count))?;
    if rest.len() < c {
        return Err(bad());
    }
    let (cancelled_json, release_json) = rest.split_at(c);
    let self_trade_cancelled = cancelled_json
        .iter()
        .map(|raw| parse_order(market, raw))
        .collect::<Result<Vec<_>, _>>()?;
    let maker_releases = release_json
        .iter()
        .map(|raw| {
            let w: WireRelease = from_json("release", raw)?;
            Ok(MakerRelease {
                trade_id: w.trade_id,
                order_id: w.order_id,
                user_id: UserId::parse("userId", &w.user)
                    .map_err(|e| corrupt("release user", e))?,
                asset: if w.side == "buy" {
                    Asset::Collateral
                } else {
                    Asset::Shares(market.clone())
                },
                amount: parse_num("release amount", Some(&w.amount))?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(UndoOutcome {
        taker_left,
        taker,
        fills,
        self_trade_cancelled,
        maker_releases,
    })
}

/// The reply of `depth.lua`: the depth version it was read at, the bid count, then (price,
/// amount, orders) per level, bids first.
pub(super) fn parse_depth(
    reply: &[String],
) -> Result<(String, Vec<Level>, Vec<Level>), StoreError> {
    let [version, count, flat @ ..] = reply else {
        return Err(corrupt("depth", format!("short reply {reply:?}")));
    };
    let bid_count: usize = parse_num("bid count", Some(count))?;
    if flat.len() % 3 != 0 || bid_count * 3 > flat.len() {
        return Err(corrupt("depth", format!("malformed reply {reply:?}")));
    }
    let levels = flat
        .chunks_exact(3)
        .map(|c| {
            Ok(Level {
                price: parse_num("price", c.first())?,
                amount: parse_num("level amount", c.get(1))?,
                orders: parse_num("level orders", c.get(2))?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut bids = levels;
    let asks = bids.split_off(bid_count);
    Ok((version.clone(), bids, asks))
}

/// The reply of `saga_claim.lua`: the entry taken over, or nothing.
pub(super) fn parse_saga_claim(
    id: &str,
    reply: &[String],
) -> Result<Option<SagaEntry>, StoreError> {
    match reply {
        [] => Ok(None),
        [owner, lease, state, record, epoch] => Ok(Some(SagaEntry {
            id: id.to_owned(),
            owner: owner.clone(),
            epoch: parse_num("saga epoch", Some(epoch))?,
            lease_until_ms: parse_num("saga lease", Some(lease))?,
            state: state.clone(),
            record: record.clone(),
        })),
        _ => Err(corrupt("saga_claim", format!("unexpected reply {reply:?}"))),
    }
}

/// The entries of one saga-log shard from its hash's fields (`<id>:meta`, `<id>:rec`).
pub(super) fn parse_saga_shard(
    fields: &HashMap<String, String>,
) -> Result<Vec<SagaEntry>, StoreError> {
    let mut entries = Vec::new();
    for (field, meta) in fields {
        let Some(id) = field.strip_suffix(":meta") else {
            continue;
        };
        let mut parts = meta.split(' ');
        // NB: entries of older builds have no epoch (0).
        let (Some(owner), Some(lease), Some(state), epoch, None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(corrupt("saga meta", meta));
        };
        entries.push(SagaEntry {
            id: id.to_owned(),
            owner: owner.to_owned(),
            epoch: parse_num("saga epoch", Some(&epoch.unwrap_or("0").to_owned()))?,
            lease_until_ms: parse_num("saga lease", Some(&lease.to_owned()))?,
            state: state.to_owned(),
            record: fields
                .get(&format!("{id}:rec"))
                .cloned()
                .unwrap_or_default(),
        });
    }
    Ok(entries)
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
        assert!(parse_account(&["s:80002 1:a".to_owned(), "1".to_owned()]).is_err());
    }

    #[test]
    fn shares_written_under_an_older_market_spelling_stay_readable() {
        // Older releases accepted these spellings; the store may still hold such balances.
        for legacy in ["080002:1", "80002:0xABC", "80002:a_b", "1:01"] {
            assert!(
                MarketKey::parse("m", legacy).is_err(),
                "{legacy} is not new input"
            );
            let flat = [format!("s:{legacy}:a"), "7".to_owned()];
            let account = parse_account(&flat).unwrap_or_else(|e| panic!("{legacy}: {e}"));
            let market = MarketKey::stored(legacy).expect("an older spelling");
            assert_eq!(account.balance(&Asset::Shares(market)).available, 7);
        }
    }
}
