//! What the runs become: serializable summaries of runs and their medians, the plain-text
//! tables `shardbus bench` prints, and, from the JSON read back, the two SVG charts and the
//! markdown tables of `docs/benchmarks.md`.

mod chart;
mod floors;
mod light;
mod summary;
mod tables;
mod text;

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use chart::write_from_suite;
pub use summary::{
    median, paired, ratios, Machine, Measured, Percentiles, RunSummary, Series, TargetRow,
};
pub use tables::{
    criterion_table, replace_section, suite_section, write_suite_section, MissingHeading,
    SUITE_HEADING,
};
pub use text::{series_table, suite_text, targets_text};

/// Writes `value` to `path` as pretty-printed JSON with a final newline.
pub fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// Why a report could not be read, drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A document has no section to replace.
    #[error("{}: {source}", path.display())]
    Section {
        /// The document.
        path: PathBuf,
        /// What is missing.
        source: MissingHeading,
    },
    /// A JSON file is not what its writer writes.
    #[error("{}: not the expected JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What did not parse.
        source: serde_json::Error,
    },
}
