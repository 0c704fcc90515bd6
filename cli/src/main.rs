//! `shardbus`: the command-line tool.
//!
//! - `shardbus bench`: throughput and latency of shardbus beside its peers.
//! - `shardbus inspect DIR`: the persistent log of a bus, shard by shard.
//! - `shardbus report suite|criterion`: the markdown tables of `docs/benchmarks.md`.

use std::process::ExitCode;

use clap::Parser;

mod bench;
mod inspect;
mod report;

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
    /// Print the markdown tables of docs/benchmarks.md from a suite JSON or criterion's output.
    Report(report::Args),
}

fn main() -> ExitCode {
    match Command::parse() {
        Command::Bench(args) => bench::run(*args),
        Command::Inspect(args) => inspect::run(args),
        Command::Report(args) => report::run(args),
    }
}

/// The command line, as the tables head it.
fn command() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Prints `message` to stderr; the exit status `code`.
fn fail(message: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(code)
}

/// `Ok(v)` for `Ok(v)`; for `Err(e)`, prints `shardbus {context}: {e}` and returns the exit
/// status `code` as the error.
fn check<T, E: std::fmt::Display>(r: Result<T, E>, context: &str, code: u8) -> Result<T, ExitCode> {
    r.map_err(|e| fail(format_args!("shardbus {context}: {e}"), code))
}
