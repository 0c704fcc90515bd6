//! Publish durably, get killed, restart, replay.
//!
//! `cargo run --example durable` runs itself three times:
//! 1. a child publishes 1..=1000 to ten topics on a persistent bus and crashes
//!    (`abort`) in a handler, at message 700, with no clean shutdown;
//! 2. the parent starts the bus on the same directory: `build()` replays what the
//!    handlers had not finished (the handler sees `ctx.is_replay()`), then new messages
//!    follow;
//! 3. a clean shutdown writes the checkpoint, so a last start replays nothing.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shardbus::{Bus, Context, Persistence};

fn open_bus(dir: &std::path::Path, replayed: Arc<AtomicU64>, abort_at: Option<u64>) -> Bus<String> {
    let mut b = Bus::<String>::builder()
        .shards(2)
        .persist(Persistence::new(dir).checkpoint_every(100, Duration::from_millis(50)));
    for t in 0..10 {
        let replayed = replayed.clone();
        b = b.subscribe(
            format!("topic-{t}"),
            move |ctx: &mut Context<'_, String>, msg: &String| {
                if ctx.is_replay() {
                    replayed.fetch_add(1, Ordering::Relaxed);
                }
                let n: u64 = msg.parse().unwrap_or(0);
                if abort_at == Some(n) {
                    // A crash in the middle of handling: no shutdown, no final checkpoint.
                    std::process::abort();
                }
            },
        );
    }
    b.build().expect("open the bus directory")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("shardbus-durable-example-{}", std::process::id()));
    if let Ok(child_dir) = std::env::var("DURABLE_EXAMPLE_CHILD") {
        let bus = open_bus(child_dir.as_ref(), Arc::default(), Some(700));
        let mut publisher = bus.publisher();
        for n in 1..=1000u64 {
            publisher.publish(format!("topic-{}", n % 10), n.to_string())?;
        }
        // The handlers run (and abort at 700) as batches become durable; whatever was
        // logged and not yet checkpointed is replayed at the restart.
        publisher.wait_durable()?;
        std::thread::sleep(Duration::from_secs(10)); // the handler aborts long before
        return Ok(());
    }

    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new(std::env::current_exe()?)
        .env("DURABLE_EXAMPLE_CHILD", &dir)
        .status()?;
    println!("child ended: {status} (killed by abort)");

    let replayed = Arc::new(AtomicU64::new(0));
    let bus = open_bus(&dir, replayed.clone(), None);
    println!(
        "restart: build() replayed {} messages the handlers had not finished",
        replayed.load(Ordering::Relaxed)
    );
    bus.publish_durable("topic-1", "1001".to_owned())?;
    bus.shutdown();

    let again = Arc::new(AtomicU64::new(0));
    open_bus(&dir, again.clone(), None).shutdown();
    println!(
        "after a clean shutdown: {} replayed",
        again.load(Ordering::Relaxed)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
