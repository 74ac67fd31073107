//! Unit tests of the order book: matching, self-trade prevention, undo and forgetting.

use super::*;
use crate::domain::{MarketKey, UserId};

fn user(n: u8) -> UserId {
    UserId::parse("userId", &format!("0x{}", format!("{n:02x}").repeat(20))).expect("valid")
}

fn order(id: &str, u: u8, side: Side, price: u64, amount: u64) -> Order {
    let market = MarketKey::parse("marketKey", "80002:1").expect("valid");
    Order::new(id.to_owned(), market, user(u), side, price, amount, 0)
}

fn place(book: &mut OrderBook, o: Order) -> MatchOutcome {
    book.place(o, |taker, i| format!("{taker}-{i}"))
}

#[test]
fn best_price_fills_first_then_earliest_at_that_price() {
    let mut book = OrderBook::default();
    place(&mut book, order("a1", 1, Side::Sell, 600_000, 10));
    place(&mut book, order("a2", 2, Side::Sell, 550_000, 10));
    place(&mut book, order("a3", 3, Side::Sell, 550_000, 10));
    let out = place(&mut book, order("b", 4, Side::Buy, 600_000, 25));
    let makers: Vec<_> = out
        .fills
        .iter()
        .map(|f| (f.maker_order_id.as_str(), f.amount, f.price))
        .collect();
    assert_eq!(
        makers,
        vec![("a2", 10, 550_000), ("a3", 10, 550_000), ("a1", 5, 600_000)]
    );
    assert_eq!(out.order.status, OrderStatus::Filled);
    assert_eq!(
        book.get("a1").map(|o| o.status),
        Some(OrderStatus::PartiallyFilled)
    );
}

#[test]
fn trades_cross_at_the_resting_price_and_refund_the_improvement() {
    let mut book = OrderBook::default();
    place(&mut book, order("ask", 1, Side::Sell, 400_000, 10));
    let out = place(&mut book, order("bid", 2, Side::Buy, 700_000, 10));
    assert_eq!(out.fills.len(), 1);
    let fill = &out.fills[0];
    assert_eq!(fill.price, 400_000);
    assert_eq!(fill.collateral, 4);
    // reserved ceil(0.7 * 10) = 7, paid 4.
    assert_eq!(fill.buyer_refund, 3);
    assert_eq!(out.order.paid, 4);
}

#[test]
fn a_sell_taker_hits_the_highest_bid_at_its_price() {
    let mut book = OrderBook::default();
    place(&mut book, order("b1", 1, Side::Buy, 300_000, 5));
    place(&mut book, order("b2", 2, Side::Buy, 500_000, 5));
    let out = place(&mut book, order("s", 3, Side::Sell, 250_000, 7));
    let got: Vec<_> = out
        .fills
        .iter()
        .map(|f| (f.maker_order_id.as_str(), f.price, f.amount))
        .collect();
    assert_eq!(got, vec![("b2", 500_000, 5), ("b1", 300_000, 2)]);
    // b2 filled completely: its refund is reserved - paid = ceil(2.5) - ceil(2.5) = 0.
    assert_eq!(out.fills[0].buyer_refund, 0);
    assert_eq!(book.get("b1").map(|o| o.remaining()), Some(3));
}

#[test]
fn partial_fill_rests_the_remainder() {
    let mut book = OrderBook::default();
    place(&mut book, order("ask", 1, Side::Sell, 500_000, 4));
    let out = place(&mut book, order("bid", 2, Side::Buy, 500_000, 10));
    assert_eq!(out.order.status, OrderStatus::PartiallyFilled);
    assert_eq!(out.order.remaining(), 6);
    let (bids, asks) = book.depth(10);
    assert_eq!(
        bids,
        vec![Level {
            price: 500_000,
            amount: 6,
            orders: 1
        }]
    );
    assert!(asks.is_empty());
}

#[test]
fn orders_that_do_not_cross_rest() {
    let mut book = OrderBook::default();
    place(&mut book, order("ask", 1, Side::Sell, 600_000, 4));
    let out = place(&mut book, order("bid", 2, Side::Buy, 590_000, 4));
    assert!(out.fills.is_empty());
    assert_eq!(book.open_orders(None).len(), 2);
}

#[test]
fn self_trade_cancels_the_resting_order_and_continues() {
    let mut book = OrderBook::default();
    place(&mut book, order("mine", 1, Side::Sell, 500_000, 5));
    place(&mut book, order("theirs", 2, Side::Sell, 510_000, 5));
    let out = place(&mut book, order("bid", 1, Side::Buy, 600_000, 5));
    assert_eq!(out.self_trade_cancelled.len(), 1);
    assert_eq!(out.self_trade_cancelled[0].order_id, "mine");
    assert_eq!(out.fills.len(), 1);
    assert_eq!(out.fills[0].maker_order_id, "theirs");
    assert_eq!(
        book.get("mine").map(|o| o.status),
        Some(OrderStatus::Cancelled)
    );
}

#[test]
fn rounding_is_cumulative_per_buy_order() {
    // Two fills of 1 share at 0.5: each alone would round up to 1, together they cost 1.
    let mut book = OrderBook::default();
    place(&mut book, order("bid", 1, Side::Buy, 500_000, 2));
    let f1 = place(&mut book, order("s1", 2, Side::Sell, 500_000, 1)).fills;
    let f2 = place(&mut book, order("s2", 3, Side::Sell, 500_000, 1)).fills;
    assert_eq!(f1[0].collateral + f2[0].collateral, 1);
    assert_eq!(book.get("bid").map(|o| o.paid), Some(1));
}

#[test]
fn cancel_is_owner_only_and_once() {
    let mut book = OrderBook::default();
    place(&mut book, order("bid", 1, Side::Buy, 500_000, 2));
    assert_eq!(book.cancel("bid", &user(2)), Err(CancelError::NotFound));
    let cancelled = book.cancel("bid", &user(1)).expect("owner cancels");
    assert_eq!(cancelled.still_reserved(), 1);
    assert_eq!(
        book.cancel("bid", &user(1)),
        Err(CancelError::NotOpen(OrderStatus::Cancelled))
    );
    assert!(book.depth(10).0.is_empty());
}

fn place_once(book: &mut OrderBook, o: Order) -> MatchOutcome {
    book.place_once(o, |taker, i| format!("{taker}#{i}"))
        .expect("not undone")
}

#[test]
fn the_book_lists_what_finished_once() {
    let mut book = OrderBook::default();
    place_once(&mut book, order("mine", 1, Side::Sell, 500_000, 5));
    place_once(&mut book, order("ask", 2, Side::Sell, 510_000, 5));
    place_once(&mut book, order("rest", 3, Side::Buy, 100_000, 5));
    assert!(book.take_finished().is_empty(), "nothing finished yet");
    place_once(&mut book, order("bid", 1, Side::Buy, 600_000, 5));
    book.cancel_once("rest", &user(3), true)
        .expect("owner cancels");
    assert_eq!(book.take_finished(), ["mine", "ask", "bid", "rest"]);
    assert!(book.take_finished().is_empty(), "drained");
    book.undo("never-placed");
    assert_eq!(book.take_finished(), ["never-placed"]);
}

#[test]
fn forgetting_removes_a_finished_order_its_record_and_its_cancellation() {
    let mut book = OrderBook::default();
    place_once(&mut book, order("ask", 1, Side::Sell, 400_000, 1));
    place_once(&mut book, order("bid", 2, Side::Buy, 500_000, 1));
    place_once(&mut book, order("rest", 2, Side::Buy, 100_000, 1));
    place_once(&mut book, order("open", 3, Side::Sell, 900_000, 1));
    book.cancel_once("rest", &user(2), true)
        .expect("owner cancels");
    book.undo("never-placed");
    assert_eq!(book.sizes(), (4, 5, 1));
    for id in ["ask", "bid", "rest", "never-placed"] {
        assert!(book.forget(id), "{id} is finished");
    }
    assert!(!book.forget("open"), "an open order is kept");
    assert!(!book.forget("ask"), "already forgotten");
    assert_eq!(
        book.sizes(),
        (1, 1, 0),
        "only the open order and its record"
    );
    assert!(book.get("bid").is_none());
    assert_eq!(
        book.cancel_once("rest", &user(2), true),
        Err(CancelError::NotFound),
        "a forgotten cancellation is not replayed"
    );
    assert_eq!(book.get("open").map(|o| o.status), Some(OrderStatus::Open));
    assert_eq!(book.open_orders(None).len(), 1);
}

#[test]
fn a_maker_put_back_by_an_undo_is_not_forgotten() {
    let mut book = OrderBook::default();
    place_once(&mut book, order("ask", 1, Side::Sell, 400_000, 1));
    place_once(&mut book, order("bid", 2, Side::Buy, 500_000, 1));
    book.undo("bid");
    assert_eq!(book.take_finished(), ["ask", "bid", "bid"]);
    assert!(!book.forget("ask"), "the maker is back in the book");
    assert!(book.forget("bid"), "the undone taker is cancelled");
    assert_eq!(book.open_orders(None).len(), 1);
    assert_eq!(book.depth(10).1.len(), 1, "the maker still rests");
}

/// The open orders by a walk of every order the book holds: what the index must answer.
fn open_by_walk(book: &OrderBook, user: Option<&UserId>) -> Vec<String> {
    let mut open: Vec<&Order> = book
        .orders()
        .filter(|o| o.status.is_open() && user.is_none_or(|u| &o.user_id == u))
        .collect();
    open.sort_by_key(|o| o.seq);
    open.into_iter().map(|o| o.order_id.clone()).collect()
}

#[test]
fn the_open_order_index_follows_every_placement_cancellation_and_undo() {
    let mut book = OrderBook::default();
    let mut seed = 11_u64;
    for i in 0..400_u64 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let u = (seed >> 33) as u8 % 3 + 1;
        let side = if (seed >> 20).is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = 400_000 + (seed >> 40) % 5 * 50_000;
        let id = format!("o{i}");
        match (seed >> 55) % 6 {
            0 => {
                let victim = format!("o{}", (seed >> 8) % (i + 1));
                let _ = book.cancel(&victim, &user(u));
            }
            1 => {
                let victim = format!("o{}", (seed >> 8) % (i + 1));
                book.undo(&victim);
            }
            _ => {
                let _ = book
                    .place_once(order(&id, u, side, price, 1 + (seed >> 50) % 4), |t, n| {
                        format!("{t}-{n}")
                    });
            }
        }
        for who in [None, Some(user(1)), Some(user(2)), Some(user(3))] {
            let walked = open_by_walk(&book, who.as_ref());
            let listed: Vec<String> = book
                .open_orders(who.as_ref())
                .into_iter()
                .map(|o| o.order_id)
                .collect();
            assert_eq!(listed, walked, "step {i}, user {who:?}");
            let mut paged = Vec::new();
            let mut page = PageRequest::first(3);
            for _ in 0..1_000 {
                let got = book.open_orders_page(who.as_ref(), page);
                paged.extend(got.orders.into_iter().map(|o| o.order_id));
                match got.next {
                    Some(after) => page.after = Some(after),
                    None => break,
                }
            }
            assert_eq!(paged, walked, "step {i}, user {who:?}, by pages");
        }
    }
}

#[test]
fn one_placement_stops_at_the_fill_cap_and_rests_the_remainder() {
    let mut book = OrderBook::default();
    for i in 0..MAX_FILLS_PER_ORDER + 1 {
        place(
            &mut book,
            order(&format!("a{i}"), 1, Side::Sell, 500_000, 1),
        );
    }
    let out = place(&mut book, order("b", 2, Side::Buy, 600_000, 1_000));
    assert_eq!(out.fills.len(), MAX_FILLS_PER_ORDER);
    assert_eq!(out.order.status, OrderStatus::PartiallyFilled);
    let open: Vec<String> = book
        .open_orders(None)
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    assert_eq!(open, [format!("a{MAX_FILLS_PER_ORDER}"), "b".to_owned()]);
}
