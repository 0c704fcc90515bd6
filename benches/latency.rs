//! Latency: a publisher ↔ replying-actor ping-pong across two cores for every wait strategy,
//! beside the floors (a bare cache-padded atomic and crossbeam `ArrayQueue`s bounced between two
//! pinned threads). criterion times round trips; after the groups, hdrhistogram percentiles of
//! RTT/2 and of publish → handler entry are printed for back-to-back messages (saturation of a
//! single in-flight message) and for light load (one message every 10 µs), with the CPU share of
//! an idle shard under the parking default.

mod common;

use std::time::Duration;

use common::{group, quick};
use criterion::{criterion_group, criterion_main, Criterion};
use shardbus::WaitStrategy;
use shardbus_bench::report::Percentiles;
use shardbus_bench::runner::ping_pong;
use shardbus_bench::{floor, RunOpts};

const WAITS: [(&str, WaitStrategy); 3] = [
    ("spin", WaitStrategy::BusySpin),
    ("yield", WaitStrategy::Yield),
    ("park", WaitStrategy::Park),
];

fn opts(wait: WaitStrategy, shards: usize) -> RunOpts {
    RunOpts {
        wait,
        shards,
        ..RunOpts::default()
    }
}

fn benches(c: &mut Criterion) {
    let mut g = group(c, "latency/round-trip");
    for (name, wait) in WAITS {
        let o = opts(wait, 1);
        g.bench_function(format!("shardbus-{name}"), |b| {
            b.iter_custom(|iters| ping_pong(iters, None, &o).expect("ping-pong runs").elapsed)
        });
    }
    let o = RunOpts::default();
    g.bench_function("floor-atomic", |b| {
        b.iter_custom(|iters| floor::atomic_ping_pong(iters, &o).expect("runs").elapsed)
    });
    g.bench_function("floor-array_queue", |b| {
        b.iter_custom(|iters| {
            floor::array_queue_ping_pong(iters, &o)
                .expect("runs")
                .elapsed
        })
    });
    g.finish();

    let rounds = if quick() { 20_000 } else { 100_000 };
    let pct = |p: Percentiles| {
        format!(
            "p50 {} p99 {} p99.9 {} max {} ns",
            p.p50, p.p99, p.p999, p.max
        )
    };
    for (name, wait) in WAITS {
        for (load, interval, shards) in [
            ("back-to-back", None, 1),
            ("10 us pacing", Some(Duration::from_micros(10)), 2),
        ] {
            if wait == WaitStrategy::BusySpin && shards == 2 {
                // A second spinning shard would share the publisher's core.
                continue;
            }
            let r = ping_pong(rounds, interval, &opts(wait, shards)).expect("ping-pong runs");
            println!(
                "latency shardbus-{name} {load} ({shards} shard(s)): RTT/2 {} | publish->handler {} | shard CPU {:?}",
                pct(Percentiles::of(&r.rtt_half)),
                pct(Percentiles::of(&r.one_way)),
                r.shard_cpu
            );
        }
    }
    let o = RunOpts::default();
    let a = floor::atomic_ping_pong(rounds, &o).expect("runs");
    println!(
        "latency floor-atomic: RTT/2 {}",
        pct(Percentiles::of(&a.one_way))
    );
    let q = floor::array_queue_ping_pong(rounds, &o).expect("runs");
    println!(
        "latency floor-array_queue: RTT/2 {}",
        pct(Percentiles::of(&q.one_way))
    );
}

criterion_group!(latency_benches, benches);
criterion_main!(latency_benches);
