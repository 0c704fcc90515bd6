//! The runtime through its public API: one test binary for the family, one module per
//! concern, named for it (`cargo test --test rt routing::` runs one concern).
//!
//! One binary rather than a file each because every test binary links the crate and its
//! dependencies again, and on a 2-core CI the links add up. Three runtime tests keep
//! binaries of their own, beside this folder: `rt_alloc.rs` (its counting global
//! allocator must see no other test's allocations), `rt_stress.rs` (a seeded soak of
//! about 20 seconds, tuned by environment variables) and `rt_host.rs` (the cores a bus
//! takes depend on the other buses of the process, and it sets an environment variable).
//! Request-reply has its own two: `rt_request.rs` (tokio runtimes beside std threads) and
//! `rt_request_alloc.rs` (a counting global allocator again).

#[path = "../common/mod.rs"]
mod common;

mod actors;
mod backpressure;
mod builder;
mod dead_letters;
mod delivery;
mod fences;
mod flush_order;
mod from_handler;
mod idle;
mod lifecycle;
mod overflow;
mod panics;
mod partitions;
mod patterns;
mod routing;
mod runs;
mod shutdown;
mod shutdown_timeout;
mod stats;
mod subscriptions;
mod supervision;
