//! Core scaling: the closed-loop actor workload (tokens hop between 64 actors on random shards,
//! 256 in flight) at 1 and 2 shards, with no per-message work and with 200 rounds of a 64-bit
//! mix per message; beside it the open-loop 2-producer, 64-topic workload at 1 and 2 shards for
//! shardbus and the crossbeam router. After the criterion groups, each closed-loop configuration
//! runs 3 more times and the median rates and the scaling efficiency
//! (rate at 2 shards / (2 × rate at 1 shard)) are printed.

mod common;

use std::time::Duration;

use common::{group, quick, throughput, Runner};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardbus_bench::runner::{closed_loop, ClosedLoop};
use shardbus_bench::{crossbeam_router, runner, Distribution, RunOpts, Workload};

fn config(shards: usize, work: u32) -> ClosedLoop {
    ClosedLoop {
        shards,
        actors: 64,
        tokens: 256,
        hops: if quick() { 400 } else { 1_000 },
        work,
        seed: 5,
    }
}

fn shardbus(w: &Workload, o: &RunOpts) -> Result<shardbus_bench::RunResult, shardbus_bench::Error> {
    runner::run(w, o)
}

fn benches(c: &mut Criterion) {
    let opts = RunOpts::default();
    for work in [0u32, 200] {
        let mut g = group(c, &format!("scaling/closed-loop-work{work}"));
        let per_run = config(1, work);
        g.throughput(Throughput::Elements(
            per_run.tokens as u64 * (per_run.hops + 1),
        ));
        for shards in [1, 2] {
            let cfg = config(shards, work);
            g.bench_function(format!("shards={shards}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let r = closed_loop(&cfg, &opts).expect("closed loop runs");
                        assert!(r.exact, "closed loop lost or duplicated tokens: {r:?}");
                        total += r.elapsed;
                    }
                    total
                })
            });
        }
        g.finish();
    }
    let w = Workload {
        producers: 2,
        topics: 64,
        messages: if quick() { 100_000 } else { 200_000 },
        payload: 16,
        distribution: Distribution::Uniform,
        seed: 1,
    };
    for shards in [1, 2] {
        let o = RunOpts {
            shards,
            ..RunOpts::default()
        };
        let runners: [(&str, Runner, RunOpts); 2] = [
            ("shardbus", shardbus, o.clone()),
            ("crossbeam_router", crossbeam_router::run, o),
        ];
        throughput(
            c,
            &format!("scaling/open-loop-p2-t64-s{shards}"),
            &w,
            &runners,
        );
    }
    for work in [0u32, 200] {
        let rate = |shards| {
            let mut rates: Vec<f64> = (0..3)
                .map(|_| {
                    closed_loop(&config(shards, work), &opts)
                        .expect("runs")
                        .msgs_per_sec()
                })
                .collect();
            rates.sort_by(f64::total_cmp);
            rates[1]
        };
        let (one, two) = (rate(1), rate(2));
        println!(
            "closed loop, work {work}: 1 shard {:.3} M msgs/s, 2 shards {:.3} M msgs/s, \
             speed-up {:.2}x, scaling efficiency {:.0}% (medians of 3)",
            one / 1e6,
            two / 1e6,
            two / one,
            50.0 * two / one
        );
    }
}

criterion_group!(scaling_benches, benches);
criterion_main!(scaling_benches);
