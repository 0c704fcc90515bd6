//! Helpers shared by the integration tests, each written once. Every test binary
//! includes this module (`mod common;`, or `#[path = "../common/mod.rs"] mod common;` in
//! a family's `main.rs`) and uses a different subset of it.
//!
//! - `rt`: buses for the runtime tests, `tests/rt/` (`bus`, `PATIENCE`, `names`,
//!   `name_on_shard`, `assert_quiescent_stats`, `not_exactly_once`, `within`);
//! - `ledger`: `Tracked` messages that account for their own destruction;
//! - `persist`: a persistent bus on `SimStorage` for `tests/persist/` (not re-exported:
//!   its names are short and generic, `persist::builder`, `persist::seen`);
//! - `recorder`: `Log<T>`, what handlers saw, for the test thread to wait on;
//! - `shard_log`: records to append to a `ShardLog` and read back (the `log_*` tests);
//! - `dir`: `TestDir`, a temporary directory on the real filesystem;
//! - `counting`: `Counting`, a counting global allocator, and `allocations`.
#![allow(dead_code)] // each test binary uses a different subset

pub mod counting;
mod dir;
mod ledger;
pub mod persist;
mod recorder;
mod rt;
mod shard_log;

// Flat, as a crate's `lib.rs` re-exports; each binary uses a different subset.
#[allow(unused_imports)]
pub use self::{
    counting::{allocations, Counting},
    dir::TestDir,
    ledger::{subscribe_counting, tracked_bus, Ledger, Tracked},
    recorder::{reason_text, Log},
    rt::{assert_quiescent_stats, bus, name_on_shard, names, not_exactly_once, within, PATIENCE},
    shard_log::{config, expected, read_all, refs, seq_of, sim_open, Msg},
};
