//! Fuzz targets for the shardbus log's readers: recovery, [`shardbus::log::Reader`] and
//! [`shardbus::log::inspect`], over shard directories in a [`shardbus::log::SimStorage`].
//!
//! Run with `scripts/fuzz.sh` (all targets, briefly) or, from the repository root,
//! `cargo fuzz run <target> --sanitizer none` (stable Rust). Targets:
//!
//! - `recover`: recovery of a damaged log; never panics, agrees with `inspect`, and what it
//!   recovers reads back identically (replay, a `Reader`, a second recovery, an append).
//! - `read`: `Reader` from any sequence number and `inspect`; the iterator contract, and a
//!   reader started mid-log agrees with one that read from the start.
//!
//! Every target runs under [`alloc_limit`]: no single allocation above 1 MiB.

pub mod alloc_limit;
pub mod check;
pub mod scenario;

pub use scenario::{Built, MaxRecord, Scenario, SeqPick, DIR, MAX_FILE_LEN, MAX_SEQ};
