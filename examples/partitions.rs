//! Keyed partitions: orders keyed by customer on one partitioned topic, spread over every
//! shard, each customer's orders handled in order by one actor instance; an audit actor
//! sees every order.
//!
//! The audit actor subscribes the plain topic `orders.audit`, to which each instance
//! forwards what it handled. (With subject wildcards it would subscribe `orders.>`
//! instead and the instances would not forward.)

use std::collections::HashMap;

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
    fn handle(&mut self, ctx: &mut Context<'_, Order>, order: &Order) {
        let (next, balance) = self.balances.entry(order.customer).or_default();
        // Same key, same instance, publish order: no customer's orders interleave.
        assert_eq!(order.number, *next, "customer {}", order.customer);
        *next += 1;
        *balance += order.cents;
        ctx.publish("orders.audit", order.clone())
            .expect("forward to the audit");
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

/// Sees every order, whichever partition handled it.
#[derive(Default)]
struct Audit {
    orders: u64,
    cents: u64,
}

impl Handler<Order> for Audit {
    fn handle(&mut self, _: &mut Context<'_, Order>, order: &Order) {
        self.orders += 1;
        self.cents += order.cents;
    }

    fn on_stop(&mut self, _: &mut Context<'_, Order>) {
        println!("audit: {} orders, {} cents", self.orders, self.cents);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<Order>::builder().shards(2).partitions(8).build()?;

    let orders = bus.subscribe_partitioned("orders", Supervision::Restart, |partition| Ledger {
        partition,
        ..Ledger::default()
    })?;
    bus.subscribe("orders.audit", Audit::default())?;

    // Resolve once: a keyed publish then hashes only its key.
    let topic = bus.partitioned_topic("orders")?;
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
    let stats = bus.shutdown();
    assert_eq!(handled, 10_000);
    assert_eq!(stats.handled(), 20_000, "every order, then its audit");
    Ok(())
}
