//! Persistent-bus throughput beside the memory-only bus and the physical limit, per payload:
//! groups `persist/p1-s1-t64-uniform-{16,256}B` (memory-only, `never`, `batch`,
//! `interval-10ms`), `persist-always/…` (one `fdatasync` per message, so far fewer messages)
//! and `persist-raw/…` (the same record bytes appended `SHARD_BATCH` (1,024) per `sync_data`:
//! `shardbus_bench::persist::raw_append`). Each run writes into a fresh directory under
//! `SHARDBUS_BENCH_PERSIST_DIR` (default `target/bench-persist` of this crate; put it on the
//! disk you mean to measure, never on a tmpfs), removed after the run.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{group, quick, throughput, Runner};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardbus::log::FsyncPolicy;
use shardbus_bench::persist::{self, PersistOpts, SHARD_BATCH};
use shardbus_bench::{runner, Distribution, RunOpts, Workload};

fn shardbus(w: &Workload, o: &RunOpts) -> Result<shardbus_bench::RunResult, shardbus_bench::Error> {
    runner::run(w, o)
}

fn dir() -> PathBuf {
    std::env::var_os("SHARDBUS_BENCH_PERSIST_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-persist"),
        PathBuf::from,
    )
}

fn benches(c: &mut Criterion) {
    let dir = dir();
    let persistent = |fsync| RunOpts {
        shards: 1,
        persist: Some(PersistOpts {
            dir: dir.clone(),
            fsync,
        }),
        ..RunOpts::default()
    };
    let memory = RunOpts {
        shards: 1,
        ..RunOpts::default()
    };
    let payloads: &[usize] = if quick() { &[256] } else { &[16, 256] };
    for &payload in payloads {
        let w = Workload {
            producers: 1,
            topics: 64,
            messages: if quick() { 100_000 } else { 200_000 },
            payload,
            distribution: Distribution::Uniform,
            seed: 1,
        };
        let name = format!("p1-s1-t64-uniform-{payload}B");
        let runners: Vec<(&str, Runner, RunOpts)> = vec![
            ("memory", shardbus, memory.clone()),
            ("never", shardbus, persistent(FsyncPolicy::Never)),
            ("batch", shardbus, persistent(FsyncPolicy::Batch)),
            (
                "interval-10ms",
                shardbus,
                persistent(FsyncPolicy::Interval(Duration::from_millis(10))),
            ),
        ];
        throughput(c, &format!("persist/{name}"), &w, &runners);
        let always = Workload {
            messages: 1_000,
            ..w.clone()
        };
        throughput(
            c,
            &format!("persist-always/{name}"),
            &always,
            &[("always", shardbus, persistent(FsyncPolicy::Always))],
        );
        let record = w
            .topic_names()
            .iter()
            .map(|t| persist::record_len(t, payload))
            .sum::<usize>()
            .div_ceil(w.topics);
        let mut g = group(c, &format!("persist-raw/{name}"));
        g.throughput(Throughput::Elements(w.messages));
        g.bench_function("raw-append-sync", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        persist::raw_append(&dir, record, SHARD_BATCH, w.messages)
                            .unwrap_or_else(|e| panic!("raw append+sync: {e}"))
                            .elapsed
                    })
                    .sum()
            })
        });
        g.finish();
    }
}

criterion_group!(persist_benches, benches);
criterion_main!(persist_benches);
