//! Domain types of the exchange: identifiers, orders, fills and balances, with their validation
//! and the integer arithmetic of collateral. No I/O here.
//!
//! Room: after `clock`; uses no other module of the crate.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Prices are integers in millionths: `500000` is a probability of 0.5.
pub const PRICE_SCALE: u64 = 1_000_000;

/// Validation failure of one input field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Name of the field as the client spelled it (camelCase).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A market, `chainId:marketId`, e.g. `80002:1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MarketKey(String);

impl MarketKey {
    /// Parses `chainId:marketId` in its one canonical spelling, so that one market has one
    /// key: a chain id `1` to `9999999999999999999` in decimal without sign or leading zeros,
    /// and a market id that is either such a decimal (`0` allowed) or `0x` followed by 1 to 64
    /// lower-case hex digits (a condition id). As a regex: [`MarketKey::PATTERN`].
    /// `+80002:1`, `080002:1`, ` 1:2`, `1:01` and `1:0xAB` are refused, naming `field`.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldError> {
        let bad = || {
            FieldError::new(
                field,
                "must be `chainId:marketId` in decimal without sign or leading zeros (or a \
                 lower-case 0x market id), e.g. `80002:1`",
            )
        };
        let (chain, market) = raw.split_once(':').ok_or_else(bad)?;
        let chain_ok = canonical_decimal(chain) && chain != "0";
        let market_ok = canonical_decimal(market)
            || market.strip_prefix("0x").is_some_and(|hex| {
                (1..=64).contains(&hex.len())
                    && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
        if chain_ok && market_ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(bad())
        }
    }

    /// A key read back from the store: the canonical spelling or one that older releases
    /// accepted (a decimal chain id of up to 20 digits, a market id of 1 to 66 characters from
    /// `[A-Za-z0-9_-]`). NB: both colours of a cutover share one store, so balances and orders
    /// written under an older spelling must stay readable and movable; only new input must be
    /// canonical ([`MarketKey::parse`]). `None` for anything else (a corrupt field).
    pub fn stored(raw: &str) -> Option<Self> {
        if Self::parse("marketKey", raw).is_ok() {
            return Some(Self(raw.to_owned()));
        }
        let (chain, market) = raw.split_once(':')?;
        let chain_ok = !chain.is_empty() && chain.len() <= 20 && chain.parse::<u64>().is_ok();
        let market_ok = !market.is_empty()
            && market.len() <= 66
            && market
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        (chain_ok && market_ok).then(|| Self(raw.to_owned()))
    }

    /// The canonical market keys as a regular expression (the OpenAPI `pattern`).
    /// NB: 19 digits at most, so every match fits a u64 and the pattern is exact.
    pub const PATTERN: &'static str = "^[1-9][0-9]{0,18}:(0|[1-9][0-9]{0,18}|0x[0-9a-f]{1,64})$";

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MarketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `0` or a decimal of 1 to 19 digits without sign or leading zero (so it fits a u64).
fn canonical_decimal(s: &str) -> bool {
    match s.as_bytes() {
        [b'0'] => true,
        [first, rest @ ..] => {
            (b'1'..=b'9').contains(first) && rest.len() <= 18 && rest.iter().all(u8::is_ascii_digit)
        }
        [] => false,
    }
}

/// A user: an EVM address, `0x` and 40 hex digits, kept lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Parses `0x` + 40 hex digits (any case) and normalises to lower case.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldError> {
        let hex = raw
            .strip_prefix("0x")
            .or_else(|| raw.strip_prefix("0X"))
            .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex {
            Some(h) => Ok(Self(format!("0x{}", h.to_ascii_lowercase()))),
            None => Err(FieldError::new(
                field,
                "must be 0x followed by 40 hex digits",
            )),
        }
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-chosen order id (the idempotency key of placement): 1 to 64 characters from
/// `[A-Za-z0-9_.:-]`.
pub fn validate_order_id(field: &'static str, raw: &str) -> Result<String, FieldError> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(FieldError::new(
            field,
            "must be 1 to 64 characters of [A-Za-z0-9_.:-]",
        ))
    }
}

/// Parses a decimal string of a non-negative integer that fits in u64.
pub fn parse_u64(field: &'static str, raw: &str) -> Result<u64, FieldError> {
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new(
            field,
            "must be a decimal string of a non-negative integer",
        ));
    }
    raw.parse::<u64>()
        .map_err(|_| FieldError::new(field, "is larger than 18446744073709551615"))
}

/// Buy or sell outcome shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub enum Side {
    /// Pays collateral for shares.
    Buy,
    /// Delivers shares for collateral.
    Sell,
}

/// Lifecycle of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub enum OrderStatus {
    /// Resting in the book, nothing filled.
    Open,
    /// Resting in the book, partly filled.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// Cancelled by its owner or by self-trade prevention; the rest was released.
    Cancelled,
}

impl OrderStatus {
    /// Whether the order still rests in the book.
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::Open | OrderStatus::PartiallyFilled)
    }
}

/// What a user holds: collateral or the outcome shares of one market.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Asset {
    /// The collateral token, in its base units.
    Collateral,
    /// Outcome shares of a market.
    Shares(MarketKey),
}

impl Asset {
    /// Parses the `asset` of a deposit: `collateral` or a market key.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldError> {
        if raw == "collateral" {
            Ok(Asset::Collateral)
        } else {
            MarketKey::parse(field, raw)
                .map(Asset::Shares)
                .map_err(|_| {
                    FieldError::new(
                        field,
                        "must be `collateral` or a marketKey `chainId:marketId`",
                    )
                })
        }
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Asset::Collateral => f.write_str("collateral"),
            Asset::Shares(m) => write!(f, "shares of {m}"),
        }
    }
}

/// Collateral needed to buy `amount` shares at `price`: `ceil(price * amount / 1e6)`.
///
/// The product is taken in u128, so it cannot overflow; the result is at most `amount`
/// because `price < 1e6`.
pub fn collateral_for(price: u64, amount: u64) -> u64 {
    let notional = u128::from(price) * u128::from(amount);
    ceil_div_scale(notional)
}

/// `ceil(notional / 1e6)`, saturating at u64::MAX (unreachable for valid prices).
pub fn ceil_div_scale(notional: u128) -> u64 {
    let scale = u128::from(PRICE_SCALE);
    u64::try_from(notional.div_ceil(scale)).unwrap_or(u64::MAX)
}

/// One resting or finished order, as the book keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// The relayer's id of this placement, unique for ever (a new one for every placement,
    /// even of a reused client order id): the book's key, the saga's id, and the base of the
    /// trade ids and operation ids. (Records of older builds have the client's id here.)
    pub order_id: String,
    /// The client's order id (its idempotency key, unique per user); empty in records of
    /// older builds, where it is [`Order::order_id`] (see [`Order::client_id`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_order_id: String,
    /// Market it trades in.
    pub market_key: MarketKey,
    /// Owner.
    pub user_id: UserId,
    /// Buy or sell.
    pub side: Side,
    /// Limit price in millionths.
    pub price: u64,
    /// Shares ordered.
    pub amount: u64,
    /// Shares filled so far.
    pub filled: u64,
    /// Σ price × amount over the fills (u128: exact).
    pub notional: u128,
    /// What placement reserved: collateral for a buy, shares for a sell.
    pub reserved: u64,
    /// Collateral the buyer has paid so far, or the seller has received.
    pub paid: u64,
    /// Lifecycle.
    pub status: OrderStatus,
    /// Arrival sequence in its market (time priority).
    pub seq: u64,
    /// Arrival time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

impl Order {
    /// A new, unfilled order with its reservation computed.
    pub fn new(
        order_id: String,
        market_key: MarketKey,
        user_id: UserId,
        side: Side,
        price: u64,
        amount: u64,
        created_at_ms: u64,
    ) -> Self {
        let reserved = match side {
            Side::Buy => collateral_for(price, amount),
            Side::Sell => amount,
        };
        Self {
            order_id,
            client_order_id: String::new(),
            market_key,
            user_id,
            side,
            price,
            amount,
            filled: 0,
            notional: 0,
            reserved,
            paid: 0,
            status: OrderStatus::Open,
            seq: 0,
            created_at_ms,
        }
    }

    /// The same order under the client's order id `client_order_id`.
    pub fn with_client_id(mut self, client_order_id: String) -> Self {
        self.client_order_id = client_order_id;
        self
    }

    /// The client's order id: what the API shows and the user refers to.
    pub fn client_id(&self) -> &str {
        if self.client_order_id.is_empty() {
            &self.order_id
        } else {
            &self.client_order_id
        }
    }

    /// Shares not yet filled.
    pub fn remaining(&self) -> u64 {
        self.amount - self.filled
    }

    /// The asset this order reserved.
    pub fn reserved_asset(&self) -> Asset {
        match self.side {
            Side::Buy => Asset::Collateral,
            Side::Sell => Asset::Shares(self.market_key.clone()),
        }
    }

    /// What is still reserved for this order: unpaid collateral of a buy, unfilled shares of a
    /// sell. Released when the order is cancelled or (for a buy, the price improvement and
    /// rounding left over) when it fills completely.
    pub fn still_reserved(&self) -> u64 {
        match self.side {
            Side::Buy => self.reserved - self.paid,
            Side::Sell => self.remaining(),
        }
    }
}

/// A trade between a resting (maker) and an incoming (taker) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fill {
    /// Unique id of the trade (also its settlement idempotency key).
    pub trade_id: String,
    /// Market.
    pub market_key: MarketKey,
    /// The resting order (its placement id, [`Order::order_id`]).
    pub maker_order_id: String,
    /// The resting order's client order id (what the API shows); empty in records of older
    /// builds, where it is `maker_order_id`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub maker_client_order_id: String,
    /// The incoming order.
    pub taker_order_id: String,
    /// The buying user.
    pub buyer: UserId,
    /// The selling user.
    pub seller: UserId,
    /// The buy order.
    pub buy_order_id: String,
    /// The sell order.
    pub sell_order_id: String,
    /// Execution price: the resting order's price.
    pub price: u64,
    /// Shares traded.
    pub amount: u64,
    /// Collateral paid by the buyer to the seller for this fill.
    pub collateral: u64,
    /// Collateral released back to the buyer because the buy order completed with this fill
    /// (price improvement and rounding left over from its reservation).
    pub buyer_refund: u64,
}

impl Fill {
    /// The resting order's client order id (see [`Fill::maker_client_order_id`]).
    pub fn maker_client_id(&self) -> &str {
        if self.maker_client_order_id.is_empty() {
            &self.maker_order_id
        } else {
            &self.maker_client_order_id
        }
    }

    /// The resting order's owner.
    pub fn maker_user(&self) -> &UserId {
        if self.maker_order_id == self.buy_order_id {
            &self.buyer
        } else {
            &self.seller
        }
    }
}

/// Where a quantity sits in an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bucket {
    /// Free to use.
    Available,
    /// Held for open orders.
    Reserved,
    /// Outside this account: a deposit comes from here, a fill's payment goes there.
    External,
}

/// A quantity of one asset moving between buckets of one account. Every state change of a
/// balance is a list of moves applied atomically: all or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// What moves.
    pub asset: Asset,
    /// From where.
    pub from: Bucket,
    /// To where.
    pub to: Bucket,
    /// How much.
    pub amount: u64,
}

impl Move {
    /// Available → Reserved.
    pub fn reserve(asset: Asset, amount: u64) -> Self {
        Self {
            asset,
            from: Bucket::Available,
            to: Bucket::Reserved,
            amount,
        }
    }
    /// Reserved → Available.
    pub fn release(asset: Asset, amount: u64) -> Self {
        Self {
            asset,
            from: Bucket::Reserved,
            to: Bucket::Available,
            amount,
        }
    }
    /// External → Available.
    pub fn credit(asset: Asset, amount: u64) -> Self {
        Self {
            asset,
            from: Bucket::External,
            to: Bucket::Available,
            amount,
        }
    }
    /// Reserved → External.
    pub fn debit_reserved(asset: Asset, amount: u64) -> Self {
        Self {
            asset,
            from: Bucket::Reserved,
            to: Bucket::External,
            amount,
        }
    }
}

/// One asset's balance. u128 so that credits from fills can never overflow; deposits keep each
/// balance within u64 (see [`Account::apply`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Free to use.
    pub available: u128,
    /// Held for open orders.
    pub reserved: u128,
}

/// Why a list of moves could not be applied. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// Not enough in the source bucket.
    #[error("insufficient {asset} {bucket}: has {has}, needs {needs}")]
    Insufficient {
        /// The asset.
        asset: Asset,
        /// `available` or `reserved`.
        bucket: &'static str,
        /// What the bucket holds.
        has: u128,
        /// What the move needed.
        needs: u128,
    },
    /// A deposit would take a balance beyond u64::MAX.
    #[error("{asset} balance would exceed {max}", max = u64::MAX)]
    Overflow {
        /// The asset.
        asset: Asset,
    },
}

/// Everything one user holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Collateral.
    pub collateral: Balance,
    /// Shares per market.
    pub shares: BTreeMap<MarketKey, Balance>,
}

impl Account {
    /// The balance of one asset.
    pub fn balance(&self, asset: &Asset) -> Balance {
        match asset {
            Asset::Collateral => self.collateral,
            Asset::Shares(m) => self.shares.get(m).copied().unwrap_or_default(),
        }
    }

    fn balance_mut(&mut self, asset: &Asset) -> &mut Balance {
        match asset {
            Asset::Collateral => &mut self.collateral,
            Asset::Shares(m) => self.shares.entry(m.clone()).or_default(),
        }
    }

    /// Applies all moves or none. A deposit (External → Available) may not take the asset's
    /// total beyond u64::MAX.
    pub fn apply(&mut self, moves: &[Move]) -> Result<(), BalanceError> {
        let mut next = self.clone();
        for m in moves {
            let bal = next.balance_mut(&m.asset);
            let amount = u128::from(m.amount);
            let source = match m.from {
                Bucket::Available => Some((&mut bal.available, "available")),
                Bucket::Reserved => Some((&mut bal.reserved, "reserved")),
                Bucket::External => None,
            };
            if let Some((slot, bucket)) = source {
                *slot = slot.checked_sub(amount).ok_or(BalanceError::Insufficient {
                    asset: m.asset.clone(),
                    bucket,
                    has: *slot,
                    needs: amount,
                })?;
            }
            let overflow = || BalanceError::Overflow {
                asset: m.asset.clone(),
            };
            match m.to {
                Bucket::Available => {
                    bal.available = bal.available.checked_add(amount).ok_or_else(overflow)?
                }
                Bucket::Reserved => {
                    bal.reserved = bal.reserved.checked_add(amount).ok_or_else(overflow)?
                }
                Bucket::External => {}
            }
            if m.from == Bucket::External && bal.available + bal.reserved > u128::from(u64::MAX) {
                return Err(overflow());
            }
        }
        next.shares.retain(|_, b| *b != Balance::default());
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market() -> MarketKey {
        MarketKey::parse("marketKey", "80002:1").expect("valid")
    }

    #[test]
    fn market_keys_need_chain_and_market() {
        for bad in ["", "80002", ":1", "80002:", "x:1", "80002:1:2", "80002:a b"] {
            assert!(
                MarketKey::parse("marketKey", bad).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(MarketKey::parse("marketKey", "80002:0xabc").is_ok());
    }

    #[test]
    fn market_keys_have_one_spelling_per_market() {
        let longest = format!("1:0x{}", "f".repeat(64));
        for good in [
            "80002:1",
            "1:0",
            "9999999999999999999:9999999999999999999",
            "80002:0x0123456789abcdef",
            &longest,
        ] {
            assert!(
                MarketKey::parse("marketKey", good).is_ok(),
                "{good:?} refused"
            );
        }
        let too_long = format!("1:0x{}", "f".repeat(65));
        for bad in [
            "+80002:1",
            "080002:1",
            " 1:2",
            "1:2 ",
            "-1:2",
            "0:1",
            "00:1",
            "1:01",
            "1:+2",
            "1:00",
            "10000000000000000000:1",
            "1:10000000000000000000",
            "80002:0xABC",
            "80002:0x",
            &too_long,
            "80002:abc",
            "80002:a_b",
            "\u{661}:1",
        ] {
            let err = MarketKey::parse("marketKey", bad).expect_err(bad);
            assert_eq!(err.field, "marketKey", "{bad:?}");
        }
    }

    #[test]
    fn user_ids_are_normalised_to_lower_case() {
        let u =
            UserId::parse("userId", "0xABCDEF0123456789abcdef0123456789ABCDEF01").expect("valid");
        assert_eq!(u.as_str(), "0xabcdef0123456789abcdef0123456789abcdef01");
        assert!(UserId::parse("userId", "0x123").is_err());
        assert!(UserId::parse("userId", "abcdef0123456789abcdef0123456789abcdef0123").is_err());
    }

    #[test]
    fn collateral_rounds_up_and_never_exceeds_amount() {
        assert_eq!(collateral_for(500_000, 1), 1);
        assert_eq!(collateral_for(500_000, 2), 1);
        assert_eq!(collateral_for(500_000, 3), 2);
        assert_eq!(
            collateral_for(999_999, u64::MAX),
            18_446_725_626_965_477_906
        );
        assert!(collateral_for(999_999, u64::MAX) < u64::MAX);
        assert_eq!(collateral_for(1, u64::MAX), 18_446_744_073_710);
    }

    #[test]
    fn moves_apply_all_or_nothing() {
        let mut acct = Account::default();
        acct.apply(&[Move::credit(Asset::Collateral, 100)])
            .expect("deposit");
        let err = acct
            .apply(&[
                Move::reserve(Asset::Collateral, 60),
                Move::reserve(Asset::Collateral, 60),
            ])
            .expect_err("second reserve lacks funds");
        assert!(matches!(
            err,
            BalanceError::Insufficient {
                has: 40,
                needs: 60,
                ..
            }
        ));
        assert_eq!(
            acct.collateral,
            Balance {
                available: 100,
                reserved: 0
            }
        );
    }

    #[test]
    fn deposits_cannot_exceed_u64() {
        let mut acct = Account::default();
        let shares = Asset::Shares(market());
        acct.apply(&[Move::credit(shares.clone(), u64::MAX)])
            .expect("max deposit");
        assert!(matches!(
            acct.apply(&[Move::credit(shares, 1)]),
            Err(BalanceError::Overflow { .. })
        ));
    }
}
