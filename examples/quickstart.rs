//! The original design's `main()`, done right: two handlers, two messages, a clean
//! shutdown that drains both before returning.

use shardbus::{Bus, Context};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<String>::builder().build()?;

    bus.subscribe("topic1", |ctx: &mut Context<'_, String>, msg: &String| {
        println!(
            "handler 1 on {} (shard {}): {msg}",
            ctx.topic(),
            ctx.shard().index()
        );
    })?;
    bus.subscribe("topic2", |ctx: &mut Context<'_, String>, msg: &String| {
        println!(
            "handler 2 on {} (shard {}): {msg}",
            ctx.topic(),
            ctx.shard().index()
        );
    })?;

    bus.publish("topic1", "message1".to_string())?;
    bus.publish("topic2", "message2".to_string())?;

    let stats = bus.shutdown();
    println!(
        "handled {} messages on {} shards",
        stats.handled(),
        stats.shards.len()
    );
    assert_eq!(stats.handled(), 2);
    Ok(())
}
