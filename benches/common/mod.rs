//! What the criterion benches share: the quick profile switch, group settings, and running a
//! whole verified workload as one criterion iteration.
//!
//! Profiles: the full matrix by default (`cargo bench`, 702 s on the 2-core reference machine);
//! `SHARDBUS_BENCH_QUICK=1 cargo bench` runs a reduced matrix with smaller runs (79 s there). criterion's own filters and `--quick` combine with either, e.g.
//! `cargo bench --bench throughput -- 'p1-s1-t64' --quick`.

#![allow(dead_code)]

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use shardbus_bench::{Error, RunOpts, RunResult, Workload};

/// A throughput runner: the shardbus runner or a peer.
pub type Runner = fn(&Workload, &RunOpts) -> Result<RunResult, Error>;

/// Whether `SHARDBUS_BENCH_QUICK` asks for the reduced profile.
pub fn quick() -> bool {
    std::env::var_os("SHARDBUS_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// A group whose iterations are whole runs: flat sampling, 10 samples, short warm-up.
pub fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(if quick() { 1 } else { 2 }));
    g
}

/// Benches every runner on `w`, each iteration one verified run of `w.messages` messages; the
/// time of an iteration is the run's gate-to-last-handled time (setup and teardown excluded).
pub fn throughput(
    c: &mut Criterion,
    name: &str,
    w: &Workload,
    runners: &[(&str, Runner, RunOpts)],
) {
    let mut g = group(c, name);
    g.throughput(Throughput::Elements(w.messages));
    for (runner, run, opts) in runners {
        g.bench_function(*runner, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let r = run(w, opts).unwrap_or_else(|e| panic!("{runner} on {w:?}: {e}"));
                    assert!(
                        r.verdict.is_exact(w.messages),
                        "{runner} failed verification on {w:?}: {:?}",
                        r.verdict
                    );
                    total += r.elapsed;
                }
                total
            })
        });
    }
    g.finish();
}
