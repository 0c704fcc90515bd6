//! Three actors on three shards pass an order along: parse → price → audit.
//!
//! Each stage is a `Handler` that owns its state (no locks) and publishes the next
//! stage's message through its `Context`, across shards. The final statistics show
//! where each message went.

use shardbus::{Bus, Context, Handler, Topic};

/// The message type: one enum for the whole pipeline.
#[derive(Debug, Clone)]
enum Order {
    Raw(String),
    Parsed {
        id: u32,
        item: String,
        qty: u32,
    },
    Priced {
        id: u32,
        item: String,
        qty: u32,
        cents: u64,
    },
}

struct Parser {
    next: Topic,
}

impl Handler<Order> for Parser {
    fn handle(&mut self, ctx: &mut Context<'_, Order>, msg: &Order) {
        let Order::Raw(line) = msg else { return };
        // "id,item,qty"
        let mut parts = line.split(',');
        let (Some(id), Some(item), Some(qty)) = (parts.next(), parts.next(), parts.next()) else {
            eprintln!("parse: malformed order {line:?}");
            return;
        };
        let (Ok(id), Ok(qty)) = (id.trim().parse(), qty.trim().parse()) else {
            eprintln!("parse: malformed numbers in {line:?}");
            return;
        };
        let parsed = Order::Parsed {
            id,
            item: item.trim().to_string(),
            qty,
        };
        ctx.publish(self.next, parsed).expect("the bus is running");
    }
}

struct Pricer {
    next: Topic,
}

impl Handler<Order> for Pricer {
    fn handle(&mut self, ctx: &mut Context<'_, Order>, msg: &Order) {
        let Order::Parsed { id, item, qty } = msg else {
            return;
        };
        let unit = match item.as_str() {
            "widget" => 250,
            "gadget" => 1_999,
            _ => 100,
        };
        let priced = Order::Priced {
            id: *id,
            item: item.clone(),
            qty: *qty,
            cents: unit * u64::from(*qty),
        };
        ctx.publish(self.next, priced).expect("the bus is running");
    }
}

#[derive(Default)]
struct Auditor {
    orders: u32,
    total_cents: u64,
}

impl Handler<Order> for Auditor {
    fn handle(&mut self, ctx: &mut Context<'_, Order>, msg: &Order) {
        let Order::Priced {
            id,
            item,
            qty,
            cents,
        } = msg
        else {
            return;
        };
        self.orders += 1;
        self.total_cents += cents;
        println!(
            "audit (shard {}): order {id}: {qty} x {item} = {}.{:02}",
            ctx.shard().index(),
            cents / 100,
            cents % 100
        );
    }

    fn on_stop(&mut self, _ctx: &mut Context<'_, Order>) {
        println!(
            "audit: {} orders, {}.{:02} in total",
            self.orders,
            self.total_cents / 100,
            self.total_cents % 100
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<Order>::builder().shards(3).build()?;

    // Pick three stage topics that land on three different shards.
    let mut stages: Vec<Topic> = Vec::new();
    for i in 0.. {
        let topic = bus.topic(&format!("orders.stage-{i}"))?;
        if stages.iter().all(|t| t.shard() != topic.shard()) {
            stages.push(topic);
        }
        if stages.len() == 3 {
            break;
        }
    }
    let (parse, price, audit) = (stages[0], stages[1], stages[2]);
    for (name, t) in [("parse", parse), ("price", price), ("audit", audit)] {
        println!(
            "{name:>5}: topic {:?} on shard {}",
            t.name(),
            t.shard().index()
        );
    }

    bus.subscribe(parse, Parser { next: price })?;
    bus.subscribe(price, Pricer { next: audit })?;
    bus.subscribe(audit, Auditor::default())?;

    let mut publisher = bus.publisher();
    for (i, line) in ["1, widget, 4", "2, gadget, 1", "3, bolt, 30"]
        .iter()
        .enumerate()
    {
        publisher.publish(parse, Order::Raw(line.to_string()))?;
        println!("published order {}", i + 1);
    }

    // Shutdown follows every order through all three stages before it returns.
    let stats = bus.shutdown();
    for s in &stats.shards {
        println!(
            "shard {}: received {}, handled {}, dead letters {}, handler p50 {} ns",
            s.shard, s.received, s.handled, s.dead_letters, s.handler_time.p50_ns
        );
    }
    assert_eq!(stats.handled(), 9, "three orders through three stages");
    Ok(())
}
