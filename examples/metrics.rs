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
    let regions = ["eu", "us", "asia", "africa"];
    for region in regions {
        bus.subscribe(
            format!("orders.{region}"),
            |_: &mut Context<'_, u64>, _: &u64| {},
        )?;
    }
    bus.subscribe("audit", |_ctx: &mut Context<'_, u64>, id: &u64| {
        if *id == 13 {
            panic!("unlucky order"); // caught, counted, dead-lettered
        }
    })?;
    let mut publisher = bus.publisher();
    for id in 0..1000u64 {
        publisher.publish(format!("orders.{}", regions[id as usize % 4]), id)?;
        if id % 100 == 13 {
            publisher.publish("audit", 13)?;
        }
    }
    publisher.publish("orders.antarctica", 0)?; // no subscriber: a dead letter
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
