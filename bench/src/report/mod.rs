//! What the runs become: serializable summaries of runs and their medians, and the two SVG
//! charts of `docs/benchmarks.md`.

mod chart;
mod summary;

pub use chart::write_from_suite;
pub use summary::{median, Machine, Percentiles, RunSummary, Series};
