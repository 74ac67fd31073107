//! One market's order book: price-time priority matching. Pure data, no I/O, no clock.
//!
//! Rules (the Redis store implements the same, and the store contract tests hold both to them):
//! - An incoming order matches resting orders on the other side whose price crosses its limit,
//!   best price first, and at one price the earliest first.
//! - A trade executes at the resting (maker) order's price.
//! - The buyer pays, per buy order, `ceil(Σ price × amount / 1e6)` over its fills so far; each
//!   fill carries the increase of that sum (none when an undone fill left the order having
//!   paid more than that sum: what was paid stays paid). Rounding therefore never exceeds one
//!   base unit per fill and a buy order never pays more than it reserved.
//! - Self-trade prevention, "cancel resting": when an incoming order would trade with a resting
//!   order of the same user, the resting order is cancelled (its reservation released) and
//!   matching continues.
//! - Whatever is left of the incoming order rests in the book (limit orders, good till
//!   cancelled).
//! - One placement makes at most [`MAX_FILLS_PER_ORDER`] fills and at most
//!   [`MAX_SELF_TRADE_CANCELS_PER_ORDER`] self-trade cancellations, so the work one request
//!   causes is bounded whatever the book holds. When either cap is reached matching stops and
//!   the remainder rests at its limit price like any remainder (it keeps its reservation, and
//!   the next orders on the other side trade with it at its price): nothing is released or
//!   moved that the fills did not, so balances are conserved. NB: the book can then be crossed
//!   (a bid at or above the best ask) until later orders trade through those levels.
//!
//! Undoing a match ([`OrderBook::undo`], the order saga's compensation when settlement says
//! "not settled") reverts each fill of one placement on its maker: a maker still resting gets
//! the shares back; a maker that left the book with that very fill goes back in at its original
//! priority (its arrival number); a maker that left the book since (cancelled, or filled by a
//! later trade) stays out, and what the undone fill would have taken from its reservation (and,
//! for a buy it completed, the refund the fill would have released) is handed back to the
//! caller to release. The incoming (taker) order is cancelled with its own
//! fills reverted. Self-trade-prevention cancellations are not undone (the resting order's
//! owner was already told, and the release of its reservation has happened or is due).
//! A placement is recorded by order id, so matching the same id again replays the first
//! outcome, and an undone placement cannot be matched again.
//!
//! Forgetting: a finished (filled or cancelled) order stays in the book, with its placement
//! record and its cancellation, until the caller forgets it ([`OrderBook::forget`]; an open
//! order is never forgotten). The book has no clock: it lists what finished
//! ([`OrderBook::take_finished`]) and its owner (the in-memory store) forgets each one when its
//! retention has passed, as Redis expires a finished order's keys.
//!
//! Open orders are also indexed by arrival number, for the market and per user, so a page of
//! them ([`OrderBook::open_orders_page`]) costs what it answers, never a walk of every order
//! the book remembers.
//!
//! Room: after `domain`; uses [`crate::domain`] and [`crate::tables`] (its per-order tables are
//! sharded, so the book never stalls as it grows).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::tables::ShardedMap;
use std::ops::Bound;

use crate::domain::{Fill, Order, OrderStatus, Side, UserId, ceil_div_scale};

/// Most fills one placement makes (see the module docs). NB: 100 keeps a placement's match
/// (and its undo, settlement and balance steps, one per fill) well under a Redis script's
/// milliseconds and a saga's lease, while a market order against a deep book still takes 100
/// price levels or resting orders in one go.
pub const MAX_FILLS_PER_ORDER: usize = 100;

/// Most resting orders of its own user one placement cancels by self-trade prevention (see the
/// module docs); the same bound as fills, for the same reason.
pub const MAX_SELF_TRADE_CANCELS_PER_ORDER: usize = 100;

/// Largest page of open orders ([`OrderBook::open_orders_page`], the store's listings).
pub const MAX_PAGE: usize = 500;

/// Where a listing of open orders starts and how much it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Only orders that arrived after this arrival number ([`Order::seq`]): the previous
    /// page's [`OrdersPage::next`]; `None` from the first.
    pub after: Option<u64>,
    /// At most this many orders (1 to [`MAX_PAGE`]; larger is taken as [`MAX_PAGE`]).
    pub limit: usize,
}

impl PageRequest {
    /// The first page of at most `limit` orders.
    pub fn first(limit: usize) -> Self {
        Self { after: None, limit }
    }

    /// The limit, within 1 to [`MAX_PAGE`].
    pub fn bounded_limit(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE)
    }
}

/// One page of open orders, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrdersPage {
    /// The orders.
    pub orders: Vec<Order>,
    /// Where the next page starts ([`PageRequest::after`]), when there are more.
    pub next: Option<u64>,
}

/// What placing an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchOutcome {
    /// The incoming order after matching.
    pub order: Order,
    /// Trades, in execution order.
    pub fills: Vec<Fill>,
    /// Resting orders of the same user cancelled by self-trade prevention.
    pub self_trade_cancelled: Vec<Order>,
}

/// What undoing a placement's match did ([`OrderBook::undo`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UndoOutcome {
    /// The taker as it is now (cancelled), when the placement had reached the book.
    pub taker: Option<Order>,
    /// The fills that were reverted.
    pub fills: Vec<Fill>,
    /// Orders the placement cancelled by self-trade prevention (not undone).
    pub self_trade_cancelled: Vec<Order>,
    /// Reservations to release for makers that are no longer in the book: (order id, user,
    /// asset, amount).
    pub maker_releases: Vec<MakerRelease>,
    /// Whether the taker had rested after its placement and then left the book before the
    /// undo (cancelled by its owner or by self-trade prevention, or filled by later orders):
    /// what was left of its reservation then is not this undo's to release (a cancellation
    /// released it; a later fill's balance moves consume it, or that fill's own undo hands it
    /// back as a maker release).
    #[serde(default)]
    pub taker_left: bool,
}

impl UndoOutcome {
    /// What the taker still has reserved for this placement once its match is undone, for the
    /// compensation to release: all that is not spoken for (its reservation less what later
    /// orders' fills took), or, when it had left the book already ([`UndoOutcome::taker_left`]),
    /// only what this placement's own fills held (the rest was released when it left).
    /// `None` when the placement never reached the book.
    pub fn taker_release(&self) -> Option<u64> {
        let taker = self.taker.as_ref()?;
        if !self.taker_left {
            return Some(taker.still_reserved());
        }
        let held = self.fills.iter().map(|f| match taker.side {
            Side::Buy => f.collateral,
            Side::Sell => f.amount,
        });
        Some(held.fold(0_u64, u64::saturating_add))
    }
}

/// A reservation a maker no longer needs once a fill on it is undone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MakerRelease {
    /// The undone trade.
    pub trade_id: String,
    /// The maker order.
    pub order_id: String,
    /// Its owner.
    pub user_id: crate::domain::UserId,
    /// What to release.
    pub asset: crate::domain::Asset,
    /// How much.
    pub amount: u64,
}

/// A placement as the book remembers it by order id.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recorded {
    /// Matched: the outcome, and per fill whether the maker left the book with it.
    Matched(MatchOutcome, Vec<bool>),
    /// Undone: what the undo did.
    Undone(UndoOutcome),
}

/// Why a placement cannot be matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The placement was matched and then undone; its order id is spent.
    #[error("placement {0} was undone")]
    Undone(String),
}

/// Why an order could not be cancelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// No such order in this book (or it belongs to someone else).
    #[error("order not found")]
    NotFound,
    /// The order is already filled or cancelled.
    #[error("order is already {0:?}")]
    NotOpen(OrderStatus),
}

/// Aggregated depth at one price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    /// Price in millionths.
    pub price: u64,
    /// Σ remaining shares at that price.
    pub amount: u128,
    /// Number of resting orders.
    pub orders: usize,
}

/// A market's book.
#[derive(Debug, Default, Clone)]
pub struct OrderBook {
    /// Bids by price; each level in time order. Best bid is the highest key.
    bids: BTreeMap<u64, VecDeque<String>>,
    /// Asks by price; best ask is the lowest key.
    asks: BTreeMap<u64, VecDeque<String>>,
    /// Every order of this market, open or finished.
    orders: ShardedMap<String, Order>,
    /// Next arrival sequence number.
    next_seq: u64,
    /// Placements by taker order id (see the module docs).
    recorded: ShardedMap<String, Recorded>,
    /// Orders their owner cancelled ([`OrderBook::cancel_once`]).
    /// Orders their owner cancelled ([`OrderBook::cancel_once`]), with what the cancellation
    /// left to release.
    cancelled_by_owner: ShardedMap<String, u64>,
    /// Orders that finished, and placements undone before they reached the book, since the
    /// last [`OrderBook::take_finished`] (an id may repeat; the owner drains it after each
    /// change, so it holds one call's worth).
    finished: Vec<String>,
    /// The resting orders by arrival number: exactly the ids queued in `bids` and `asks`.
    open_by_seq: BTreeMap<u64, String>,
    /// The same, per user (a user with no resting order has no entry).
    open_by_user: HashMap<UserId, BTreeMap<u64, String>>,
}

impl OrderBook {
    /// An order by id.
    pub fn get(&self, order_id: &str) -> Option<&Order> {
        self.orders.get(order_id)
    }

    /// Matches `order` against the book and rests what is left. `trade_id` names each trade
    /// (it receives the taker's id and the fill's index within this placement).
    pub fn place(
        &mut self,
        mut order: Order,
        trade_id: impl Fn(&str, usize) -> String,
    ) -> MatchOutcome {
        order.seq = self.next_seq;
        self.next_seq += 1;
        let mut fills = Vec::new();
        let mut self_trade_cancelled = Vec::new();

        while order.remaining() > 0
            && fills.len() < MAX_FILLS_PER_ORDER
            && self_trade_cancelled.len() < MAX_SELF_TRADE_CANCELS_PER_ORDER
        {
            let best = match order.side {
                Side::Buy => self
                    .asks
                    .first_key_value()
                    .map(|(p, q)| (*p, q.front().cloned())),
                Side::Sell => self
                    .bids
                    .last_key_value()
                    .map(|(p, q)| (*p, q.front().cloned())),
            };
            let Some((level_price, Some(maker_id))) = best else {
                break;
            };
            let crosses = match order.side {
                Side::Buy => level_price <= order.price,
                Side::Sell => level_price >= order.price,
            };
            if !crosses {
                break;
            }
            let Some(mut maker) = self.orders.get(&maker_id).cloned() else {
                // NB: unreachable while the invariant "every queued id is in `orders`" holds;
                // drop the dangling id rather than loop forever.
                self.pop_front(order.side.opposite(), level_price);
                continue;
            };
            if maker.user_id == order.user_id {
                self.pop_front(maker.side, level_price);
                self.index_leave(&maker);
                maker.status = OrderStatus::Cancelled;
                self.finished.push(maker_id.clone());
                self.orders.insert(maker_id, maker.clone());
                self_trade_cancelled.push(maker);
                continue;
            }

            let amount = order.remaining().min(maker.remaining());
            let price = maker.price;
            let trade_id = trade_id(&order.order_id, fills.len());
            let maker_client_order_id = maker.client_order_id.clone();
            let taker_order_id = order.order_id.clone();
            let market_key = order.market_key.clone();
            let (buy, sell) = match order.side {
                Side::Buy => (&mut order, &mut maker),
                Side::Sell => (&mut maker, &mut order),
            };
            let collateral = execute(buy, sell, price, amount);
            let buyer_refund = if buy.remaining() == 0 {
                buy.reserved - buy.paid
            } else {
                0
            };
            fills.push(Fill {
                trade_id,
                market_key,
                maker_order_id: maker_id.clone(),
                maker_client_order_id,
                taker_order_id,
                buyer: buy.user_id.clone(),
                seller: sell.user_id.clone(),
                buy_order_id: buy.order_id.clone(),
                sell_order_id: sell.order_id.clone(),
                price,
                amount,
                collateral,
                buyer_refund,
            });
            if maker.remaining() == 0 {
                self.pop_front(maker.side, level_price);
                self.index_leave(&maker);
                self.finished.push(maker_id.clone());
            }
            self.orders.insert(maker_id, maker);
        }

        if order.remaining() > 0 {
            let levels = match order.side {
                Side::Buy => &mut self.bids,
                Side::Sell => &mut self.asks,
            };
            levels
                .entry(order.price)
                .or_default()
                .push_back(order.order_id.clone());
            self.index_rest(&order);
        } else {
            self.finished.push(order.order_id.clone());
        }
        self.orders.insert(order.order_id.clone(), order.clone());
        MatchOutcome {
            order,
            fills,
            self_trade_cancelled,
        }
    }

    /// [`OrderBook::place`] at most once per order id: a repeat answers the first outcome.
    pub fn place_once(
        &mut self,
        order: Order,
        trade_id: impl Fn(&str, usize) -> String,
    ) -> Result<MatchOutcome, PlaceError> {
        match self.recorded.get(&order.order_id) {
            Some(Recorded::Matched(outcome, _)) => return Ok(outcome.clone()),
            Some(Recorded::Undone(_)) => return Err(PlaceError::Undone(order.order_id)),
            None => {}
        }
        let id = order.order_id.clone();
        let outcome = self.place(order, trade_id);
        let done = outcome
            .fills
            .iter()
            .map(|f| {
                self.orders
                    .get(&f.maker_order_id)
                    .is_some_and(|m| m.remaining() == 0)
            })
            .collect::<Vec<_>>();
        // NB: a maker filled by an earlier fill of the same placement cannot trade again in it,
        // so "remaining is zero now" marks exactly the fill that finished it (the last one).
        let done = mark_last_only(&outcome.fills, done);
        self.recorded
            .insert(id, Recorded::Matched(outcome.clone(), done));
        Ok(outcome)
    }

    /// Undoes the match of placement `taker_id` (see the module docs). Idempotent: a repeat
    /// answers the first undo. A placement that never reached the book is marked undone, so a
    /// late match of it is refused, and the answer has no taker.
    pub fn undo(&mut self, taker_id: &str) -> UndoOutcome {
        let (outcome, done) = match self.recorded.get(taker_id) {
            Some(Recorded::Undone(u)) => return u.clone(),
            Some(Recorded::Matched(o, d)) => (o.clone(), d.clone()),
            None => {
                let u = UndoOutcome {
                    taker: None,
                    fills: Vec::new(),
                    self_trade_cancelled: Vec::new(),
                    maker_releases: Vec::new(),
                    taker_left: false,
                };
                self.recorded
                    .insert(taker_id.to_owned(), Recorded::Undone(u.clone()));
                self.finished.push(taker_id.to_owned());
                return u;
            }
        };
        let mut maker_releases = Vec::new();
        for (fill, maker_done) in outcome.fills.iter().zip(done).rev() {
            let Some(mut maker) = self.orders.get(&fill.maker_order_id).cloned() else {
                continue;
            };
            let was_open = maker.status.is_open();
            let back_in = maker.status == OrderStatus::Filled && maker_done;
            revert(&mut maker, fill);
            if was_open || back_in {
                maker.status = reopened_status(&maker);
                if back_in {
                    self.insert_by_seq(&maker);
                }
            } else {
                maker.status = OrderStatus::Cancelled;
                self.finished.push(maker.order_id.clone());
                // NB: a buy that this fill completed also gets back its refund (the fill's
                // balance moves, which would have released it, never ran).
                let amount = match maker.side {
                    Side::Buy => fill.collateral.saturating_add(fill.buyer_refund),
                    Side::Sell => fill.amount,
                };
                maker_releases.push(MakerRelease {
                    trade_id: fill.trade_id.clone(),
                    order_id: maker.order_id.clone(),
                    user_id: maker.user_id.clone(),
                    asset: maker.reserved_asset(),
                    amount,
                });
            }
            self.orders.insert(maker.order_id.clone(), maker);
        }
        let rested = outcome.order.status.is_open();
        let mut taker_left = false;
        let taker = self.orders.get(taker_id).cloned().map(|mut t| {
            taker_left = rested && !t.status.is_open();
            if t.status.is_open() {
                self.remove_from_queue(&t);
            }
            for fill in &outcome.fills {
                revert(&mut t, fill);
            }
            t.status = OrderStatus::Cancelled;
            self.finished.push(t.order_id.clone());
            self.orders.insert(t.order_id.clone(), t.clone());
            t
        });
        let u = UndoOutcome {
            taker,
            fills: outcome.fills,
            self_trade_cancelled: outcome.self_trade_cancelled,
            maker_releases,
            taker_left,
        };
        self.recorded
            .insert(taker_id.to_owned(), Recorded::Undone(u.clone()));
        u
    }

    fn insert_by_seq(&mut self, order: &Order) {
        self.index_rest(order);
        let levels = match order.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let queue = levels.entry(order.price).or_default();
        let at = queue
            .iter()
            .position(|id| self.orders.get(id).is_some_and(|o| o.seq > order.seq))
            .unwrap_or(queue.len());
        queue.insert(at, order.order_id.clone());
    }

    fn remove_from_queue(&mut self, order: &Order) {
        self.index_leave(order);
        let levels = match order.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if let Some(queue) = levels.get_mut(&order.price) {
            queue.retain(|id| id != &order.order_id);
            if queue.is_empty() {
                levels.remove(&order.price);
            }
        }
    }

    /// Cancels an open order of `user`. The returned order carries what is still reserved
    /// ([`Order::still_reserved`]) for the caller to release.
    pub fn cancel(
        &mut self,
        order_id: &str,
        user: &crate::domain::UserId,
    ) -> Result<Order, CancelError> {
        let order = self
            .orders
            .get_mut(order_id)
            .filter(|o| &o.user_id == user)
            .ok_or(CancelError::NotFound)?;
        if !order.status.is_open() {
            return Err(CancelError::NotOpen(order.status));
        }
        order.status = OrderStatus::Cancelled;
        let order = order.clone();
        self.index_leave(&order);
        self.finished.push(order.order_id.clone());
        let levels = match order.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if let Some(queue) = levels.get_mut(&order.price) {
            queue.retain(|id| id != order_id);
            if queue.is_empty() {
                levels.remove(&order.price);
            }
        }
        Ok(order)
    }

    /// [`OrderBook::cancel`], recorded with what it leaves to release (the order's
    /// [`Order::still_reserved`] at that moment), which it answers too. `again` (the recovery
    /// of an interrupted cancellation): an order its owner already cancelled answers the
    /// cancelled order and the release recorded then (not recomputed: an undo may have
    /// changed the order's figures since), while one cancelled otherwise (self-trade
    /// prevention, an undone match) is still [`CancelError::NotOpen`].
    pub fn cancel_once(
        &mut self,
        order_id: &str,
        user: &crate::domain::UserId,
        again: bool,
    ) -> Result<(Order, u64), CancelError> {
        if again
            && let Some(release) = self.cancelled_by_owner.get(order_id)
            && let Some(order) = self.orders.get(order_id).filter(|o| &o.user_id == user)
        {
            return Ok((order.clone(), *release));
        }
        let order = self.cancel(order_id, user)?;
        let release = order.still_reserved();
        self.cancelled_by_owner.insert(order_id.to_owned(), release);
        Ok((order, release))
    }

    /// Aggregated levels, best first: (bids, asks), at most `max_levels` each.
    pub fn depth(&self, max_levels: usize) -> (Vec<Level>, Vec<Level>) {
        let level = |(price, ids): (&u64, &VecDeque<String>)| Level {
            price: *price,
            amount: ids
                .iter()
                .filter_map(|id| self.orders.get(id))
                .map(|o| u128::from(o.remaining()))
                .sum(),
            orders: ids.len(),
        };
        let bids = self.bids.iter().rev().take(max_levels).map(level).collect();
        let asks = self.asks.iter().take(max_levels).map(level).collect();
        (bids, asks)
    }

    /// Every open order, optionally of one user, in arrival order (from the index: the cost
    /// of the answer).
    pub fn open_orders(&self, user: Option<&UserId>) -> Vec<Order> {
        let Some(index) = self.open_index(user) else {
            return Vec::new();
        };
        index
            .values()
            .filter_map(|id| self.orders.get(id))
            .cloned()
            .collect()
    }

    /// One page of the open orders, optionally of one user, in arrival order: at most
    /// [`PageRequest::bounded_limit`] of them, read from the index (`limit + 1` entries, to
    /// know whether more follow), so its cost is the page's.
    pub fn open_orders_page(&self, user: Option<&UserId>, page: PageRequest) -> OrdersPage {
        let Some(index) = self.open_index(user) else {
            return OrdersPage::default();
        };
        let start = page.after.map_or(Bound::Unbounded, Bound::Excluded);
        let limit = page.bounded_limit();
        let mut entries = index.range((start, Bound::Unbounded));
        let mut orders = Vec::with_capacity(limit);
        let mut last = None;
        for (seq, id) in entries.by_ref().take(limit) {
            last = Some(*seq);
            if let Some(order) = self.orders.get(id) {
                orders.push(order.clone());
            }
        }
        let next = entries.next().and(last);
        OrdersPage { orders, next }
    }

    fn open_index(&self, user: Option<&UserId>) -> Option<&BTreeMap<u64, String>> {
        match user {
            None => Some(&self.open_by_seq),
            Some(u) => self.open_by_user.get(u),
        }
    }

    /// Indexes an order that now rests in the book.
    fn index_rest(&mut self, order: &Order) {
        self.open_by_seq.insert(order.seq, order.order_id.clone());
        self.open_by_user
            .entry(order.user_id.clone())
            .or_default()
            .insert(order.seq, order.order_id.clone());
    }

    /// Takes an order that left the book out of the index.
    fn index_leave(&mut self, order: &Order) {
        self.open_by_seq.remove(&order.seq);
        if let Some(mine) = self.open_by_user.get_mut(&order.user_id) {
            mine.remove(&order.seq);
            if mine.is_empty() {
                self.open_by_user.remove(&order.user_id);
            }
        }
    }

    /// Every order of this book, open or finished.
    pub fn orders(&self) -> impl Iterator<Item = &Order> {
        self.orders.values()
    }

    /// The orders that finished (filled or cancelled, also by an undo), and the placements
    /// undone before they reached the book, since the last call, in the order it happened. An
    /// id may appear more than once; an order listed may have been reopened since (an undo
    /// puts a maker back), which [`OrderBook::forget`] checks.
    pub fn take_finished(&mut self) -> Vec<String> {
        std::mem::take(&mut self.finished)
    }

    /// Forgets a finished order: the order, its placement record and its cancellation; or the
    /// record of a placement undone before it reached the book. An open order is kept. True
    /// when something was forgotten.
    ///
    /// Afterwards the id is unknown here: [`OrderBook::get`] answers `None`, and a placement
    /// with the same id would be matched as new (placement ids are never reused). An undo of
    /// a placement that traded with a forgotten maker leaves that maker out, as Redis does
    /// with an expired order.
    pub fn forget(&mut self, order_id: &str) -> bool {
        if self
            .orders
            .get(order_id)
            .is_some_and(|o| o.status.is_open())
        {
            return false;
        }
        let order = self.orders.remove(order_id).is_some();
        let record = self.recorded.remove(order_id).is_some();
        let cancelled = self.cancelled_by_owner.remove(order_id).is_some();
        order || record || cancelled
    }

    /// How many orders, placement records and owner cancellations the book holds (open and
    /// finished), for tests of its bounds.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.orders.len(),
            self.recorded.len(),
            self.cancelled_by_owner.len(),
        )
    }

    fn pop_front(&mut self, side: Side, price: u64) {
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if let Some(queue) = levels.get_mut(&price) {
            queue.pop_front();
            if queue.is_empty() {
                levels.remove(&price);
            }
        }
    }
}

/// Records a fill of `amount` at `price` on both orders; returns the collateral the buyer pays.
fn execute(buy: &mut Order, sell: &mut Order, price: u64, amount: u64) -> u64 {
    let notional = u128::from(price) * u128::from(amount);
    let paid_before = buy.paid;
    buy.notional += notional;
    // NB: after an undone fill a buy may have paid more than `ceil(notional)` (the rounding
    // went its way earlier): that stays paid, and this fill costs only what exceeds it.
    let collateral = ceil_div_scale(buy.notional).saturating_sub(paid_before);
    buy.paid = paid_before + collateral;
    sell.notional += notional;
    sell.paid += collateral;
    for o in [buy, sell] {
        o.filled += amount;
        o.status = if o.remaining() == 0 {
            OrderStatus::Filled
        } else {
            OrderStatus::PartiallyFilled
        };
    }
    collateral
}

/// Keeps `true` only on the last fill of each maker (see [`OrderBook::place_once`]).
fn mark_last_only(fills: &[Fill], done: Vec<bool>) -> Vec<bool> {
    done.iter()
        .enumerate()
        .map(|(i, d)| {
            *d && !fills[i + 1..]
                .iter()
                .any(|later| later.maker_order_id == fills[i].maker_order_id)
        })
        .collect()
}

/// Takes one fill back out of an order's figures (either side of it).
fn revert(order: &mut Order, fill: &Fill) {
    order.filled = order.filled.saturating_sub(fill.amount);
    order.notional = order
        .notional
        .saturating_sub(u128::from(fill.price) * u128::from(fill.amount));
    order.paid = order.paid.saturating_sub(fill.collateral);
}

fn reopened_status(order: &Order) -> OrderStatus {
    if order.filled == 0 {
        OrderStatus::Open
    } else {
        OrderStatus::PartiallyFilled
    }
}

impl Side {
    /// The other side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

#[cfg(test)]
mod tests;
