//! publish → handle throughput, shardbus beside its peers on the same verified workload:
//! 1, 64 and 10,000 topics; uniform and Zipf(1.0); 1 and 2 shards; 1 and 2 producers; 16 B and
//! 256 B. Groups are named `p{producers}-s{shards}-t{topics}-{distribution}-{payload}B`.
//!
//! Peers in each group: `crossbeam_router` (same shard count) always; `seed` in the 1-shard
//! groups (it has no shards), except at 10,000 topics where only the `p1-s1-…-uniform-16B`
//! group runs it (each seed run spawns 10,000 threads, several seconds of setup); the disruptor
//! and the floors (`crossbeam_bounded`, `std_sync_channel`, `array_queue`, bare ring) in the
//! one-producer, one-topic groups, where they apply. See `common` for the profiles.

mod common;

use common::{quick, throughput, Runner};
use criterion::{criterion_group, criterion_main, Criterion};
use shardbus_bench::{
    crossbeam_router, disruptor, floor, runner, seed, Distribution, RunOpts, Workload,
};

fn shardbus(w: &Workload, o: &RunOpts) -> Result<shardbus_bench::RunResult, shardbus_bench::Error> {
    runner::run(w, o)
}

fn benches(c: &mut Criterion) {
    let quick = quick();
    let topic_sets: &[(usize, &[Distribution])] = if quick {
        &[
            (1, &[Distribution::Uniform]),
            (64, &[Distribution::Uniform]),
        ]
    } else {
        &[
            (1, &[Distribution::Uniform]),
            (64, &[Distribution::Uniform, Distribution::Zipf(1.0)]),
            (10_000, &[Distribution::Uniform, Distribution::Zipf(1.0)]),
        ]
    };
    let payloads: &[usize] = if quick { &[16] } else { &[16, 256] };
    for &(topics, dists) in topic_sets {
        for &distribution in dists {
            for &payload in payloads {
                for producers in [1, 2] {
                    for shards in [1, 2] {
                        let messages = match (quick, topics) {
                            (true, _) => 100_000,
                            (false, 10_000) => 500_000,
                            (false, _) => 200_000,
                        };
                        let w = Workload {
                            producers,
                            topics,
                            messages,
                            payload,
                            distribution,
                            seed: 1,
                        };
                        let opts = RunOpts {
                            shards,
                            ..RunOpts::default()
                        };
                        let mut runners: Vec<(&str, Runner, RunOpts)> = vec![
                            ("shardbus", shardbus, opts.clone()),
                            (
                                "shardbus-batch64",
                                shardbus,
                                RunOpts {
                                    batch: 64,
                                    ..opts.clone()
                                },
                            ),
                            ("crossbeam_router", crossbeam_router::run, opts.clone()),
                        ];
                        let seed_applies = shards == 1
                            && (topics <= 64
                                || (producers == 1
                                    && payload == 16
                                    && distribution == Distribution::Uniform));
                        if seed_applies {
                            runners.push(("seed", seed::run, opts.clone()));
                        }
                        if producers == 1 && topics == 1 && shards == 1 {
                            runners.push(("disruptor", disruptor::run, opts.clone()));
                            runners.push((
                                "floor-crossbeam_bounded",
                                floor::crossbeam_bounded,
                                opts.clone(),
                            ));
                            runners.push((
                                "floor-std_sync_channel",
                                floor::std_sync_channel,
                                opts.clone(),
                            ));
                            runners.push(("floor-array_queue", floor::array_queue, opts.clone()));
                            runners.push(("floor-ring", floor::ring, opts.clone()));
                        }
                        let dist = match distribution {
                            Distribution::Uniform => "uniform".to_owned(),
                            Distribution::Zipf(s) => format!("zipf{s}"),
                        };
                        let name = format!(
                            "throughput/p{producers}-s{shards}-t{topics}-{dist}-{payload}B"
                        );
                        throughput(c, &name, &w, &runners);
                    }
                }
            }
        }
    }
}

criterion_group!(throughput_benches, benches);
criterion_main!(throughput_benches);
