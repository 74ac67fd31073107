//! Fixtures: the fluent [`Order`] every test builds its orders with (as an HTTP body, a
//! [`NewOrder`] for the exchange, or a book [`relayer::domain::Order`] for the store), the admin
//! token of test relayers, test addresses, and the crossing orders of the multi-client tests.
//!
//! Uses the relayer crate's `domain` and `exchange` types and `serde_json`; nothing else here.

use relayer::domain::{MarketKey, Side, UserId};
use relayer::exchange::NewOrder;
use serde_json::{Value, json};

/// The admin token every test relayer (in-process or a process) runs with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The market an [`Order`] is in unless told otherwise.
pub const MARKET: &str = "80002:1";

/// The markets the multi-client tests trade in.
pub const MARKETS: [&str; 2] = ["80002:1", "80002:2"];

/// When a book order built by [`Order::book`] was created, unless told otherwise.
pub const CREATED_AT_MS: u64 = 1_700_000_000_000;

/// `0x` and 40 hex digits made from `n`.
pub fn address(n: usize) -> String {
    format!("0x{:040x}", n + 0xa11ce)
}

/// An order to place, built fluently: `Order::buy().price(510_000).amount(3)`.
///
/// Defaults: market [`MARKET`], price 500_000 (0.5), 1 share, no order id, no user (set one
/// with [`Order::user`] before turning it into anything but an HTTP body), created at
/// [`CREATED_AT_MS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    order_id: Option<String>,
    market: String,
    user: Option<String>,
    side: Side,
    price: u64,
    amount: u64,
    created_at_ms: u64,
}

impl Order {
    /// A buy order.
    pub fn buy() -> Self {
        Self::side(Side::Buy)
    }

    /// A sell order.
    pub fn sell() -> Self {
        Self::side(Side::Sell)
    }

    /// An order on `side`.
    pub fn side(side: Side) -> Self {
        Self {
            order_id: None,
            market: MARKET.to_owned(),
            user: None,
            side,
            price: 500_000,
            amount: 1,
            created_at_ms: CREATED_AT_MS,
        }
    }

    /// The client-chosen order id (`orderId`).
    #[must_use]
    pub fn id(mut self, order_id: impl Into<String>) -> Self {
        self.order_id = Some(order_id.into());
        self
    }

    /// The market (`marketKey`), e.g. `"80002:2"` or a [`MarketKey`].
    #[must_use]
    pub fn market(mut self, market: impl ToString) -> Self {
        self.market = market.to_string();
        self
    }

    /// The owner (`userId`), an address or a [`UserId`].
    #[must_use]
    pub fn user(mut self, user: impl ToString) -> Self {
        self.user = Some(user.to_string());
        self
    }

    /// The limit price in millionths.
    #[must_use]
    pub fn price(mut self, price: u64) -> Self {
        self.price = price;
        self
    }

    /// The number of shares.
    #[must_use]
    pub fn amount(mut self, amount: u64) -> Self {
        self.amount = amount;
        self
    }

    /// When the book order was created ([`Order::book`] only).
    #[must_use]
    pub fn created_at_ms(mut self, ms: u64) -> Self {
        self.created_at_ms = ms;
        self
    }

    /// The JSON body of `POST /v2/orders`: decimal strings for price and amount, `orderId` and
    /// `userId` only when set.
    pub fn json(&self) -> Value {
        let mut body = json!({
            "marketKey": self.market,
            "side": match self.side {
                Side::Buy => "buy",
                Side::Sell => "sell",
            },
            "price": self.price.to_string(),
            "amount": self.amount.to_string(),
        });
        if let Some(id) = &self.order_id {
            body["orderId"] = json!(id);
        }
        if let Some(user) = &self.user {
            body["userId"] = json!(user);
        }
        body
    }

    /// The validated order the exchange places.
    pub fn new_order(&self) -> NewOrder {
        NewOrder {
            order_id: self.order_id(),
            market_key: self.market_key(),
            user_id: self.user_id(),
            side: self.side,
            price: self.price,
            amount: self.amount,
        }
    }

    /// The order as the book holds it before it matches.
    pub fn book(&self) -> relayer::domain::Order {
        relayer::domain::Order::new(
            self.order_id(),
            self.market_key(),
            self.user_id(),
            self.side,
            self.price,
            self.amount,
            self.created_at_ms,
        )
    }

    fn order_id(&self) -> String {
        self.order_id
            .clone()
            .expect("an order fixture for the exchange or the book has an .id()")
    }

    fn market_key(&self) -> MarketKey {
        MarketKey::parse("marketKey", &self.market).expect("the fixture's market is valid")
    }

    fn user_id(&self) -> UserId {
        let user = self
            .user
            .as_deref()
            .expect("an order fixture for the exchange or the book has a .user()");
        UserId::parse("userId", user).expect("the fixture's user is valid")
    }
}

/// A pseudo-random order from `seed` (one step of a 64-bit LCG): buy or sell in one of
/// [`MARKETS`], on a narrow grid around 0.5 so that most orders cross, 1 to 40 shares.
pub fn crossing_order(seed: u64, order_id: &str, user_id: &str) -> Order {
    let buy = (seed >> 33) & 1 == 0;
    let tick = (seed >> 40) % 9;
    let (side, price) = if buy {
        (Side::Buy, 460_000 + tick * 10_000)
    } else {
        (Side::Sell, 540_000 - tick * 10_000)
    };
    Order::side(side)
        .id(order_id)
        .market(MARKETS[(seed >> 50) as usize % 2])
        .user(user_id)
        .price(price)
        .amount(1 + (seed >> 20) % 40)
}
