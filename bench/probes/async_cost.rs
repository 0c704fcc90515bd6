//! What an awaited publish costs beyond the blocking one, in instructions: one producer
//! publishes `N` 16-byte messages through a `Publisher` into a one-shard bus whose handler
//! only looks at them, either with the blocking `publish` (`sync`) or by awaiting
//! `publish_async` on a current-thread tokio runtime (`async`), lanes and inbox of 4,096.
//! Run it under callgrind, each mode once; the difference of the two totals over `N` is the
//! future's own cost per message (the shard's work is the same in both):
//!
//! ```sh
//! cargo build --release -p shardbus-bench --example async_cost
//! for mode in sync async; do
//!     taskset -c 0 valgrind --tool=callgrind --fair-sched=yes \
//!         --callgrind-out-file=target/callgrind.async_cost.$mode \
//!         target/release/examples/async_cost $mode 200000
//! done
//! ```
//!
//! `size` prints the size of the futures `Publisher::publish_async` and `Bus::publish_async`
//! return (each is moved at least once per publish).

use std::hint::black_box;

use shardbus::{Bus, Context};

type Msg = (u64, u64);

fn usage() -> ! {
    eprintln!("usage: async_cost sync|async|size [messages]");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| usage());
    let n: u64 = match args.next() {
        Some(v) => v.parse().unwrap_or_else(|_| usage()),
        None => 200_000,
    };
    let bus = Bus::<Msg>::builder()
        .shards(1)
        .capacity(4096)
        .lane_capacity(4096)
        .build()
        .expect("bus builds");
    bus.subscribe("bench", |_: &mut Context<'_, Msg>, m: &Msg| {
        black_box(m);
    })
    .expect("subscribes");
    let topic = bus.topic("bench").expect("topic");
    let mut publisher = bus.publisher();
    match mode.as_str() {
        "sync" => {
            for i in 0..n {
                publisher.publish(topic, (0, i)).expect("published");
            }
        }
        "async" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(async {
                for i in 0..n {
                    publisher
                        .publish_async(topic, (0, i))
                        .await
                        .expect("published");
                }
            });
        }
        "size" => {
            let lane = publisher.publish_async(topic, (0, 0));
            println!("Publisher::publish_async: {} bytes", size_of_val(&lane));
            drop(lane);
            let ring = bus.publish_async(topic, (0, 0));
            println!("Bus::publish_async: {} bytes", size_of_val(&ring));
            return;
        }
        _ => usage(),
    }
    drop(publisher);
    let handled = bus.shutdown().handled();
    assert_eq!(handled, n, "handled");
    println!("{mode}: {n} messages published and handled");
}
