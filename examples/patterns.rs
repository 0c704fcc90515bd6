//! Subject patterns: an audit actor on `orders.>` sees every order topic, those that
//! existed before it and those first published later, each through its own actor on the
//! topic's shard; the actors share one tally through the factory.
//!
//! `cargo run --example patterns`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shardbus::{Bus, Context, Error, Supervision};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<u64>::builder().shards(2).build()?;
    // A topic that exists before the pattern.
    bus.publish("orders.eu.created", 10)?;

    // One tally for all the pattern's actors: shared through the factory.
    let tally: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let shared = tally.clone();
    let audit = bus.subscribe_pattern("orders.>", Supervision::Restart, move || {
        let tally = shared.clone();
        // This actor serves one topic (`ctx.topic()`), on that topic's shard.
        move |ctx: &mut Context<'_, u64>, amount: &u64| {
            *tally
                .lock()
                .unwrap()
                .entry(ctx.topic().to_owned())
                .or_default() += amount;
        }
    })?;

    bus.publish("orders.eu.created", 20)?;
    bus.publish("orders.us.created", 5)?; // first seen after the pattern
    bus.publish("orders.us.paid", 5)?;
    bus.publish("billing.us", 99)?; // does not match

    // A pattern is never a publish target.
    match bus.topic("orders.*") {
        Err(Error::InvalidSubject { name, reason }) => println!("refused {name:?}: {reason}"),
        other => panic!("unexpected {other:?}"),
    }

    bus.flush()?;
    for (topic, total) in tally.lock().unwrap().iter() {
        println!("{topic}: {total}");
    }
    bus.unsubscribe(audit)?;
    bus.shutdown();
    Ok(())
}
