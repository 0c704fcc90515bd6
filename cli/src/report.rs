//! `shardbus report`: the markdown tables of `docs/benchmarks.md`, from files the benchmarks
//! wrote.
//!
//! - `shardbus report suite [FILE] [--write DOC]`: the section "Tables of the committed run"
//!   from a suite JSON file (`shardbus bench --suite --json FILE`), printed, or written over that
//!   section of DOC.
//! - `shardbus report criterion [DIR]`: the M msgs/s table of the criterion benches.

use std::path::PathBuf;
use std::process::ExitCode;

use shardbus_bench::report::{criterion_table, suite_section, write_suite_section};
use shardbus_bench::suite::SuiteReport;

use crate::check;

/// Arguments of `shardbus report`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    table: Table,
}

#[derive(clap::Subcommand)]
enum Table {
    /// Print the section "## Tables of the committed run" of docs/benchmarks.md, rendered from
    /// a suite JSON file (`shardbus bench --suite --json FILE`).
    Suite {
        /// The suite JSON file.
        #[arg(default_value = "docs/bench-suite.json")]
        file: PathBuf,
        /// Instead of printing the section, replace it in DOC: from its heading
        /// `## Tables of the committed run` to the next `## ` heading, the rest left as it is.
        /// An error if DOC has no such heading.
        #[arg(long, value_name = "DOC")]
        write: Option<PathBuf>,
    },
    /// Print the M msgs/s table of the criterion benches (groups throughput/* and scaling/*:
    /// messages per iteration over criterion's median time per iteration).
    Criterion {
        /// criterion's output directory.
        #[arg(default_value = "target/criterion")]
        dir: PathBuf,
    },
}

/// Runs `shardbus report`.
pub fn run(args: Args) -> ExitCode {
    let done = match args.table {
        Table::Suite { file, write: None } => {
            SuiteReport::read(&file).map(|suite| print!("{}", suite_section(&suite)))
        }
        Table::Suite {
            file,
            write: Some(doc),
        } => write_suite_section(&file, &doc).map(|()| println!("wrote {}", doc.display())),
        Table::Criterion { dir } => criterion_table(&dir).map(|table| print!("{table}")),
    };
    match check(done, "report", 1) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
