//! `shardbus`: the command-line tool.
//!
//! - `shardbus bench`: throughput and latency of shardbus beside its peers.
//! - `shardbus inspect DIR`: the persistent log of a bus, shard by shard.

use std::process::ExitCode;

use clap::Parser;

mod bench;
mod inspect;

#[derive(Parser)]
#[command(
    name = "shardbus",
    version,
    about = "shardbus: benchmarks and log inspection"
)]
enum Command {
    /// Measure publish → handle throughput and latency (optionally beside the peers).
    Bench(Box<bench::Args>),
    /// Show (and verify) a persistent log directory.
    Inspect(inspect::Args),
}

fn main() -> ExitCode {
    match Command::parse() {
        Command::Bench(args) => bench::run(*args),
        Command::Inspect(args) => inspect::run(args),
    }
}
