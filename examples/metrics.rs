//! The `metrics` feature with a Prometheus exporter: install the recorder, build the bus,
//! run a small workload, shut down, print the rendered text format once.
//!
//! ```text
//! cargo run --example metrics --features metrics
//! ```
//!
//! The exporter is built without its HTTP listener (`default-features = false`): the text
//! comes from its handle. A service would serve `handle.render()` from its own HTTP
//! endpoint, or enable the exporter's `http-listener` feature and bind it to an address of
//! its choice.

use metrics_exporter_prometheus::PrometheusBuilder;
use shardbus::{Bus, Context};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The recorder first: each shard registers its series when the bus is built.
    let handle = PrometheusBuilder::new().install_recorder()?;

    let bus = Bus::<u64>::builder()
        .shards(2)
        .metrics_label("orders")
        .build()?;
    bus.subscribe("orders.placed", |_ctx: &mut Context<'_, u64>, _id: &u64| {})?;
    bus.subscribe("orders.audited", |_ctx: &mut Context<'_, u64>, id: &u64| {
        if *id == 13 {
            panic!("unlucky order"); // caught, counted, dead-lettered
        }
    })?;
    let mut publisher = bus.publisher();
    for id in 0..1000u64 {
        publisher.publish("orders.placed", id)?;
        if id % 100 == 13 {
            publisher.publish("orders.audited", id % 100)?;
        }
    }
    publisher.publish("orders.lost", 0)?; // no subscriber: a dead letter
    drop(publisher);
    let stats = bus.shutdown(); // the last export happens before this returns

    println!("{}", handle.render());
    eprintln!(
        "handled {} messages, {} panics, {} dead letters",
        stats.handled(),
        stats.panics(),
        stats.dead_letters()
    );
    Ok(())
}
