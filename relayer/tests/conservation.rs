//! Property: for any sequence of deposits, orders and cancels, collateral and shares are
//! conserved (they only move between users), no balance goes negative, and what each user has
//! reserved is exactly what their open orders still need.

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use relayer::domain::{Asset, MarketKey, Side, UserId};
use relayer::exchange::{Exchange, ExchangeError};
use relayer::store::Store;
use support::fixtures::Order;

const USERS: usize = 4;
const MARKETS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Deposit {
        user: usize,
        market: Option<usize>,
        amount: u64,
    },
    Place {
        user: usize,
        market: usize,
        buy: bool,
        price: u64,
        amount: u64,
    },
    Cancel {
        pick: usize,
        user: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..USERS, proptest::option::of(0..MARKETS), 1u64..5_000).prop_map(
            |(user, market, amount)| Op::Deposit {
                user,
                market,
                amount
            }
        ),
        // Prices on a coarse grid so that orders cross often; odd amounts so rounding matters.
        (0..USERS, 0..MARKETS, any::<bool>(), 1u64..20, 1u64..300).prop_map(
            |(user, market, buy, tick, amount)| {
                Op::Place {
                    user,
                    market,
                    buy,
                    price: tick * 50_000 - 1,
                    amount,
                }
            }
        ),
        (any::<usize>(), 0..USERS).prop_map(|(pick, user)| Op::Cancel { pick, user }),
    ]
}

fn user(i: usize) -> UserId {
    UserId::parse("userId", &format!("0x{:040x}", i + 1)).expect("valid user")
}

fn market(i: usize) -> MarketKey {
    MarketKey::parse("marketKey", &format!("80002:{i}")).expect("valid market")
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let exchange = Exchange::new(Store::memory());
    let mut deposited: BTreeMap<Asset, u128> = BTreeMap::new();
    let mut placed: Vec<String> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Deposit {
                user: u,
                market: m,
                amount,
            } => {
                let asset = m.map_or(Asset::Collateral, |m| Asset::Shares(market(m)));
                exchange
                    .deposit(&user(u), asset.clone(), amount)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                *deposited.entry(asset).or_default() += u128::from(amount);
            }
            Op::Place {
                user: u,
                market: m,
                buy,
                price,
                amount,
            } => {
                let new = Order::side(if buy { Side::Buy } else { Side::Sell })
                    .id(format!("o{i}"))
                    .market(market(m))
                    .user(user(u))
                    .price(price)
                    .amount(amount)
                    .new_order();
                match exchange.place(new, 0).await {
                    Ok(_) => placed.push(format!("o{i}")),
                    Err(ExchangeError::Balance(_)) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("place failed: {e}"))),
                }
            }
            Op::Cancel { pick, user: u } => {
                if placed.is_empty() {
                    continue;
                }
                let id = &placed[pick % placed.len()];
                match exchange.cancel(id, &user(u)).await {
                    Ok(_) | Err(ExchangeError::OrderNotFound | ExchangeError::OrderNotOpen(_)) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("cancel failed: {e}"))),
                }
            }
        }
    }

    // Conservation: Σ over users of (available + reserved) equals the deposits, per asset.
    let mut held: BTreeMap<Asset, u128> = BTreeMap::new();
    for u in 0..USERS {
        let account = exchange
            .account(&user(u))
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        *held.entry(Asset::Collateral).or_default() +=
            account.collateral.available + account.collateral.reserved;
        for (m, b) in &account.shares {
            *held.entry(Asset::Shares(m.clone())).or_default() += b.available + b.reserved;
        }

        // Reservations equal what open orders still need.
        let mut need: BTreeMap<Asset, u128> = BTreeMap::new();
        for m in 0..MARKETS {
            for o in exchange
                .open_orders(&market(m), Some(&user(u)))
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?
            {
                *need.entry(o.reserved_asset()).or_default() += u128::from(o.still_reserved());
            }
        }
        prop_assert_eq!(
            account.collateral.reserved,
            need.get(&Asset::Collateral).copied().unwrap_or(0),
            "user {}",
            u
        );
        for m in 0..MARKETS {
            let asset = Asset::Shares(market(m));
            prop_assert_eq!(
                account.balance(&asset).reserved,
                need.get(&asset).copied().unwrap_or(0),
                "user {} market {}",
                u,
                m
            );
        }
    }
    held.retain(|_, v| *v > 0);
    deposited.retain(|_, v| *v > 0);
    prop_assert_eq!(held, deposited);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn balances_are_conserved_and_reservations_match_open_orders(ops in proptest::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| TestCaseError::fail(e.to_string()))?;
        rt.block_on(run(ops))?;
    }
}
