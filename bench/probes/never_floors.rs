//! The `fsync never` row beside every split of its work, repetitions interleaved: the bus
//! (`fsync never`, 1 shard), the two- and three-thread floors of `floor` (the consumer
//! frames and writes; the same synced behind; the write on a third thread; the producer
//! frames; the same synced behind), the one-thread framed append synced behind
//! (`persist::raw_buffered_append_synced`: a thread syncs the file every 10,000 records, as
//! the bus's I/O thread syncs its log before each checkpoint) and the one-thread framed
//! append (`persist::raw_buffered_append`, the target's floor). The suite's
//! persistence workload: 1 producer, 64 topics, 256 B, uniform. Prints each row's median and
//! single runs in M msgs/s, and its ratio to the framed append. Every run of the bus and the
//! floors is verified (each message exactly once, in per-topic order), or the probe stops.
//!
//! `cargo run --release -p shardbus-bench --example never_floors -- [DIR] [--messages N]
//! [--reps N]`
//!
//! `DIR` (default `target/bench-data`, relative to the working directory) must be on the disk
//! being measured, never a tmpfs. It measures time: run it on a quiet machine.

use std::path::PathBuf;

use shardbus::log::FsyncPolicy;
use shardbus_bench::persist::{self, PersistOpts, RawResult, RawWork, SHARD_BATCH};
use shardbus_bench::report::Machine;
use shardbus_bench::{floor, runner, suite, Error, RunOpts, RunResult, Workload};

fn usage(why: &str) -> ! {
    eprintln!("never_floors: {why}");
    eprintln!("usage: never_floors [DIR] [--messages N] [--reps N]");
    std::process::exit(2)
}

fn fail(name: &str, e: Error) -> ! {
    usage(&format!("{name} failed: {e}"))
}

type Floor = fn(&Workload, &RunOpts, &std::path::Path) -> Result<RunResult, Error>;

fn main() {
    let (mut dir, mut messages, mut reps) = (PathBuf::from("target/bench-data"), 2_000_000u64, 5);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| usage(&format!("{arg} takes a positive number")))
        };
        match arg.as_str() {
            "--messages" => messages = number(),
            "--reps" => reps = number() as usize,
            flag if flag.starts_with("--") => usage(&format!("unknown flag {flag}")),
            _ => dir = PathBuf::from(arg),
        }
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        usage(&format!("{}: {e}", dir.display()));
    }
    let w = suite::persistence_workload(messages);
    let bus = RunOpts {
        shards: 1,
        persist: Some(PersistOpts {
            dir: dir.clone(),
            fsync: FsyncPolicy::Never,
        }),
        ..RunOpts::default()
    };
    let floors: [(&str, Floor); 5] = [
        (
            "floor: consumer frames + writes (2 threads)",
            floor::ring_framed_append,
        ),
        (
            "floor: consumer frames + writes, synced behind",
            floor::ring_framed_append_synced,
        ),
        (
            "floor: write on a third thread (3 threads)",
            floor::ring_framed_append_writer,
        ),
        (
            "floor: producer frames (2 threads)",
            floor::ring_preframed_append,
        ),
        (
            "floor: producer frames, synced behind",
            floor::ring_preframed_append_synced,
        ),
    ];
    let topics = w.topic_names();
    let machine = Machine::detect();
    println!(
        "{} | {} cores | {} | 1 producer, 64 topics, 256 B, {messages} msgs x {reps} runs",
        machine.date, machine.cores, machine.cpu
    );
    let mut rows: Vec<(&str, Vec<f64>)> = vec![("shardbus fsync never", Vec::new())];
    rows.extend(floors.iter().map(|(name, _)| (*name, Vec::new())));
    rows.push(("framed append, synced behind (2 threads)", Vec::new()));
    rows.push(("framed append (1 thread)", Vec::new()));
    // A run counts only if every message arrived exactly once, in order.
    let verified = |name: &str, r: RunResult| {
        if !r.verdict.is_exact(messages) {
            usage(&format!("{name}: verification failed: {:?}", r.verdict));
        }
        r.msgs_per_sec() / 1e6
    };
    for _ in 0..reps {
        let r = runner::run(&w, &bus).unwrap_or_else(|e| fail(rows[0].0, e));
        let rate = verified(rows[0].0, r);
        rows[0].1.push(rate);
        for (i, (name, run)) in floors.iter().enumerate() {
            let r = run(&w, &RunOpts::default(), &dir).unwrap_or_else(|e| fail(name, e));
            rows[i + 1].1.push(verified(name, r));
        }
        let synced = persist::raw_buffered_append_synced(
            &dir,
            &topics,
            256,
            SHARD_BATCH,
            messages,
            persist::CHECKPOINT_RECORDS,
        )
        .unwrap_or_else(|e| fail("the synced append", e));
        rows[floors.len() + 1]
            .1
            .push(RawResult::records_per_sec(&synced) / 1e6);
        let raw =
            persist::raw_buffered_append(&dir, &topics, 256, SHARD_BATCH, messages, RawWork::Frame)
                .unwrap_or_else(|e| fail("the framed append", e));
        rows[floors.len() + 2]
            .1
            .push(RawResult::records_per_sec(&raw) / 1e6);
    }
    let median = |xs: &[f64]| shardbus_bench::report::median(xs).unwrap_or(f64::NAN);
    let framed = median(&rows[floors.len() + 2].1);
    println!("{:46} {:>8} {:>8}  runs", "row", "M msgs/s", "/ framed");
    for (name, runs) in &rows {
        let m = median(runs);
        let each: Vec<String> = runs.iter().map(|x| format!("{x:.2}")).collect();
        println!(
            "{name:46} {m:>8.2} {:>7.1}%  {}",
            100.0 * m / framed,
            each.join(" ")
        );
    }
}
