//! The engine behind `shardbus bench` and the root crate's criterion benches: peers, workload
//! engine, verifier, and the shardbus runner, all run on the same deterministic workload and
//! checked by the same verifier in the same process.
//!
//! Lifecycle of a comparison:
//! 1. describe a [`Workload`] (producers, topics, message count, payload, topic distribution, seed);
//! 2. each runner plans it ([`Workload::plan`]: every producer's topic stream is generated
//!    before timing), spawns and pins its threads, and times from the start gate to the last
//!    planned message handled;
//! 3. every handler records into a [`Checker`]; they merge into a [`Verdict`]
//!    (exactly-once, per-(producer, topic) order, sampled latency) inside the [`RunResult`].
//!
//! ```
//! use shardbus_bench::{crossbeam_router, runner, seed, Distribution, RunOpts, Workload};
//!
//! let w = Workload {
//!     producers: 2,
//!     topics: 16,
//!     messages: 10_000,
//!     payload: 16,
//!     distribution: Distribution::Zipf(1.0),
//!     seed: 1,
//! };
//! for run in [seed::run, crossbeam_router::run, runner::run] {
//!     let r = run(&w, &RunOpts::default())?;
//!     assert!(r.verdict.is_exact(w.messages));
//!     println!("{:.1} M msgs/s", r.msgs_per_sec() / 1e6);
//! }
//! # Ok::<(), shardbus_bench::Error>(())
//! ```
//!
//! The peers: [`seed`] (the original Go design, ported literally), [`crossbeam_router`] (shards
//! with crossbeam inboxes), [`disruptor`] (the `disruptor` crate), and [`floor`] (bare hand-offs:
//! atomic and `ArrayQueue` ping-pong latency, SPSC throughput of a bare ring, `ArrayQueue`,
//! `sync_channel` and crossbeam `bounded`). [`runner`] runs the same workloads through
//! a shardbus [`Bus`](shardbus::Bus), memory-only or, with [`RunOpts::persist`], persistent;
//! [`persist`] holds the message codec, the raw append+sync baseline and the recovery timing.
//!
//! Every runner's consumer does what [`RunOpts::consume`] says: the exactly-once [`Checker`]
//! (the default), or, with [`Consume::Checksum`], only a count and a checksum compared with the
//! plan's at the end, so a table shows what each runtime costs by itself.
//!
//! Above them: [`session`] is one `shardbus bench` run (tables of runners, repetitions
//! interleaved), [`suite`] the reference suite behind `docs/benchmarks.md`, and [`report`]
//! what the runs become: the text tables, the JSON read back, the charts and the markdown
//! tables of `docs/benchmarks.md`.

mod harness;
mod peers;
pub mod persist;
pub mod report;
pub mod runner;
pub mod session;
pub mod suite;
mod verify;
mod workload;

pub use harness::{Error, RunOpts, RunResult};
pub use peers::{crossbeam_router, disruptor, floor, seed};
pub use verify::{checksum_term, Checker, Consume, Verdict};
pub use workload::{
    topic_name, BenchMsg, Distribution, Expected, Plan, Publisher, Sampling, Workload,
    WorkloadError, PAYLOADS,
};
