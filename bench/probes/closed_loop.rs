//! The closed-loop core-scaling workload at 1 and 2 shards, for quick probes:
//! `cargo run --release -p shardbus-bench --example closed_loop -- [park|spin|yield] [work] [reps]`.

use shardbus::WaitStrategy;
use shardbus_bench::runner::{closed_loop, ClosedLoop};
use shardbus_bench::RunOpts;

fn main() {
    let mut args = std::env::args().skip(1);
    let wait = match args.next().as_deref() {
        Some("spin") => WaitStrategy::BusySpin,
        Some("yield") => WaitStrategy::Yield,
        _ => WaitStrategy::Park,
    };
    let work: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let reps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let opts = RunOpts {
        wait,
        ..RunOpts::default()
    };
    for _ in 0..reps {
        for shards in [1, 2] {
            let cfg = ClosedLoop {
                shards,
                actors: 64,
                tokens: 256,
                hops: 4_000,
                work,
                seed: 5,
            };
            let r = closed_loop(&cfg, &opts).expect("closed loop runs");
            println!(
                "{wait:?} work {work} shards {shards}: {:.3} M msgs/s per shard {:?} exact {}",
                r.msgs_per_sec() / 1e6,
                r.per_shard_handled,
                r.exact
            );
        }
    }
}
