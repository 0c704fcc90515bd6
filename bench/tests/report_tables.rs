//! The markdown tables of `docs/benchmarks.md` rendered from the committed suite run
//! (`docs/bench-suite.json`), and the section they replace in a document.

use std::path::{Path, PathBuf};

use shardbus_bench::report::{
    replace_section, suite_section, write_suite_section, MissingHeading, ReportError, SUITE_HEADING,
};
use shardbus_bench::suite::SuiteReport;

fn committed_suite() -> SuiteReport {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench-suite.json");
    SuiteReport::read(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("shardbus-bench-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn committed_suite_renders_its_rows() {
    let section = suite_section(&committed_suite());
    let lines: Vec<&str> = section.lines().collect();
    assert_eq!(lines[0], SUITE_HEADING);
    assert_eq!(
        lines[2],
        "Written by `shardbus report suite --write docs/benchmarks.md` from \
         `docs/bench-suite.json` (the run the targets above quote)."
    );
    for row in [
        "### Hand-off: 1 producer -> 1 shard, 1 topic, 16 B",
        "`shardbus bench --suite --reps 5 --json docs/bench-suite.json` · 2026-11-26T22:12:08Z · \
         AMD EPYC · 2 cores · fences membarrier · median of 5 interleaved runs (range) · \
         4,000,000 messages per run",
        "| shardbus (park) | 25.24 (24.53–25.74) | 404 | 2.1 µs | 15.5 µs | 70.2 µs | 1.1 ms | yes \
         | [4000000] |",
        "| seed | 0.05 (0.04–0.05) | 1 | 35.1 µs | 8.4 ms | 35.0 ms | 130.3 ms | yes \
         | 10000 threads, 26–78 each |",
        "Ratios of medians: shardbus / seed = 99.41×; shardbus / crossbeam_router = 2.00×",
        "| 2 | 200 | 2.59 | 2.53, 2.56, 2.59, 2.59, 2.59 | [2062180, 1938076] | yes |",
        "- work 200: 2 shards / 1 shard = 1.71×",
        "- host compute scaling in the same run (2 pinned threads / 1): 1.99×, 1.97×, 2.00×, \
         1.99×, 1.98× (median 1.99×)",
        "| shardbus park, 10 us pacing | 1 / 10 µs | 2 | 736 ns | 5795 ns | 20735 ns | 225919 ns \
         | 1106 / 11223 / 28735 ns | 100.0%, 0.0% | [626, 646, 736, 751, 816] |",
        "| floor/atomic_ping_pong | back to back | — | 180 ns | 240 ns | 280 ns | 507903 ns | — | — \
         | [180, 180, 180, 180, 180] |",
    ] {
        assert!(lines.contains(&row), "missing {row:?} in\n{section}");
    }
    // Six throughput tables, the closed loop and the latency table.
    assert_eq!(lines.iter().filter(|l| l.starts_with("### ")).count(), 8);
    assert!(section.ends_with("| [601, 601, 605, 605, 606] |\n\n\n"));
}

#[test]
fn write_replaces_only_the_section() {
    let dir = scratch("write-section");
    let doc = dir.join("benchmarks.md");
    let before = "# Benchmarks\n\nintro\n\n## Tables of the committed run\n\nold tables\n\n\
                  ## criterion\n\nkept\n";
    std::fs::write(&doc, before).unwrap();
    let json = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench-suite.json");
    write_suite_section(&json, &doc).unwrap();
    let after = std::fs::read_to_string(&doc).unwrap();
    let section = suite_section(&committed_suite());
    assert_eq!(
        after,
        format!("# Benchmarks\n\nintro\n\n{section}## criterion\n\nkept\n")
    );
    assert_eq!(replace_section(before, &section).unwrap(), after);

    // Without the heading the document is left untouched and the error says why.
    let other = "# Benchmarks\n\n## criterion\n";
    std::fs::write(&doc, other).unwrap();
    match write_suite_section(&json, &doc) {
        Err(ReportError::Section { path, source }) => {
            assert_eq!((path, source), (doc.clone(), MissingHeading));
        }
        r => panic!("expected a missing heading, got {r:?}"),
    }
    assert_eq!(std::fs::read_to_string(&doc).unwrap(), other);
    std::fs::remove_dir_all(&dir).unwrap();
}
