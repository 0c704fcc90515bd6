//! Persistence through the public API, on `SimStorage` (crashes, power loss, failing
//! syncs and full disks on demand): one test binary for the family, one module per
//! concern, named for it (`cargo test --test persist replay::` runs one concern).
//!
//! One binary rather than a file each because every test binary links the crate and its
//! dependencies again, and on a 2-core CI the links add up. The process-crash test on the real filesystem keeps a binary of
//! its own, `persist_crash.rs`: it re-executes that binary and kills it. `lock` (one bus per
//! directory) works on the real filesystem too, since `flock` is what it tests, and
//! re-executes this binary as a child that holds a directory. `encode` tests a
//! `PostcardCodec` type too with the `postcard` feature.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod durable;
mod encode;
mod flush;
mod from_handler;
mod inspect;
mod lock;
mod panics;
mod partitions;
mod patterns;
mod poison;
mod replay;
mod reshard;
mod retention;
