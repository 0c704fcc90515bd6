//! `shardbus inspect` (being written in the persistence issue).

use std::process::ExitCode;

/// Arguments of `shardbus inspect`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("shardbus inspect: not built yet");
    ExitCode::FAILURE
}
