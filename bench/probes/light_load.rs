//! The light-load latency probe of the suite (publisher → actor ping-pong, one message
//! every 10 µs, parking shards), for quick checks of park latency and shard CPU:
//! `cargo run --release -p shardbus-bench --example light_load -- [rounds] [reps]`.
//! Set `SHARDBUS_NO_MEMBARRIER=1` to compare the fence-on-both-sides mode.

use std::time::Duration;

use shardbus::WaitStrategy;
use shardbus_bench::runner::ping_pong;
use shardbus_bench::RunOpts;

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let reps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let opts = RunOpts {
        wait: WaitStrategy::Park,
        shards: 2,
        ..RunOpts::default()
    };
    println!("fences: {}", shardbus::__fence_mode());
    for _ in 0..reps {
        match ping_pong(rounds, Some(Duration::from_micros(10)), &opts) {
            Ok(p) => println!(
                "RTT/2 p50 {} ns, p99 {} ns, p99.9 {} ns; shard CPU {:?}",
                p.rtt_half.value_at_quantile(0.5),
                p.rtt_half.value_at_quantile(0.99),
                p.rtt_half.value_at_quantile(0.999),
                p.shard_cpu
                    .iter()
                    .map(|c| format!("{:.1}%", c * 100.0))
                    .collect::<Vec<_>>()
            ),
            Err(e) => println!("error: {e}"),
        }
    }
}
