//! What the runs become: serializable summaries of runs and their medians, the plain-text
//! tables `shardbus bench` prints, and the two SVG charts of `docs/benchmarks.md`.

mod chart;
mod summary;
mod text;

use std::path::Path;

use serde::Serialize;

pub use chart::write_from_suite;
pub use summary::{median, ratios, Machine, Percentiles, RunSummary, Series};
pub use text::{series_table, suite_text};

/// Writes `value` to `path` as pretty-printed JSON with a final newline.
pub fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}
