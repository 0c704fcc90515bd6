//! Keyed partitions: orders keyed by customer on one partitioned topic, `orders.placed`,
//! spread over every shard, each customer's orders handled in order by one actor instance;
//! an audit on the pattern `orders.>` sees every order.
//!
//! A pattern's actors run beside the topics they match: here one audit actor per partition,
//! on the partition's shard, with no hop; they add to one tally shared through the factory.
//!
//! `cargo run --example partitions`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shardbus::{Bus, Context, Handler, Supervision};

#[derive(Clone, Debug)]
struct Order {
    customer: u32,
    /// Per customer: 0, 1, 2, ... in the order the customer placed them.
    number: u64,
    cents: u64,
}

/// One instance per partition: the running balance of each of its customers.
#[derive(Default)]
struct Ledger {
    partition: usize,
    balances: HashMap<u32, (u64, u64)>,
}

impl Handler<Order> for Ledger {
    fn handle(&mut self, _: &mut Context<'_, Order>, order: &Order) {
        let (next, balance) = self.balances.entry(order.customer).or_default();
        // Same key, same instance, publish order: no customer's orders interleave.
        assert_eq!(order.number, *next, "customer {}", order.customer);
        *next += 1;
        *balance += order.cents;
    }

    fn on_stop(&mut self, ctx: &mut Context<'_, Order>) {
        if !self.balances.is_empty() {
            println!(
                "partition {:2} on shard {}: {} customers",
                self.partition,
                ctx.shard().index(),
                self.balances.len()
            );
        }
    }
}

/// The audit's tally: every order, whichever partition handled it.
#[derive(Default)]
struct Tally {
    orders: AtomicU64,
    cents: AtomicU64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<Order>::builder().shards(2).partitions(8).build()?;

    let orders =
        bus.subscribe_partitioned("orders.placed", Supervision::Restart, |partition| Ledger {
            partition,
            ..Ledger::default()
        })?;
    let tally = Arc::new(Tally::default());
    let shared = tally.clone();
    bus.subscribe_pattern("orders.>", Supervision::Restart, move || {
        let tally = shared.clone();
        move |_: &mut Context<'_, Order>, order: &Order| {
            // Relaxed: a count read after `flush`, which orders every handler before it.
            tally.orders.fetch_add(1, Ordering::Relaxed);
            tally.cents.fetch_add(order.cents, Ordering::Relaxed);
        }
    })?;

    // Resolve once: a keyed publish then hashes only its key.
    let topic = bus.partitioned_topic("orders.placed")?;
    let mut publisher = bus.publisher();
    let mut numbers: HashMap<u32, u64> = HashMap::new();
    for i in 0..10_000u64 {
        let customer = (i * 7 % 101) as u32;
        let number = numbers.entry(customer).or_default();
        let order = Order {
            customer,
            number: *number,
            cents: 100 + i % 900,
        };
        *number += 1;
        publisher.publish_keyed(&topic, customer, order)?;
    }
    bus.flush()?;

    for p in orders.stats() {
        println!(
            "partition {} (shard {}): {} orders handled",
            p.partition,
            p.shard.index(),
            p.handled
        );
    }
    let handled: u64 = orders.stats().iter().map(|p| p.handled).sum();
    println!(
        "audit (orders.>): {} orders, {} cents",
        tally.orders.load(Ordering::Relaxed),
        tally.cents.load(Ordering::Relaxed)
    );
    let stats = bus.shutdown();
    assert_eq!(handled, 10_000);
    assert_eq!(tally.orders.load(Ordering::Relaxed), 10_000);
    // A message counts once however many subscribers it reached (its ledger, the audit).
    assert_eq!(stats.handled(), 10_000);
    Ok(())
}
