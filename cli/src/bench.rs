//! `shardbus bench` (being written in the benchmarks issue).

use std::process::ExitCode;

/// Arguments of `shardbus bench`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("shardbus bench: not built yet");
    ExitCode::FAILURE
}
