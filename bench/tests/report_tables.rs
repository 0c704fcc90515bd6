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
    // The rendering follows the committed run, whatever its figures: checked against what
    // the JSON holds, not against numbers copied into the test (a new run rewrites both).
    let suite = committed_suite();
    let section = suite_section(&suite);
    let lines: Vec<&str> = section.lines().collect();
    assert_eq!(lines[0], SUITE_HEADING);
    assert_eq!(
        lines[2],
        "Written by `shardbus report suite --write docs/benchmarks.md` from \
         `docs/bench-suite.json` (the run the targets above quote)."
    );
    // Every group has its heading, the run's line (its date and CPU) and a row per runner
    // that ran.
    for group in &suite.groups {
        let heading = format!("### {}", group.title);
        assert!(
            lines.contains(&heading.as_str()),
            "missing {heading:?} in\n{section}"
        );
        for series in group.series.iter().filter(|s| s.error.is_none()) {
            let row = format!("| {} | ", series.name);
            assert!(
                lines.iter().any(|l| l.starts_with(&row)),
                "missing a row for {:?} in group {:?}",
                series.name,
                group.key
            );
        }
    }
    let stamp = format!(" · {} · {} · ", suite.machine.date, suite.machine.cpu);
    assert!(
        lines.iter().filter(|l| l.contains(&stamp)).count() >= suite.groups.len(),
        "each group's table names the run ({stamp:?})"
    );
    // The committed document holds exactly this section: it was written from this file.
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    let doc = std::fs::read_to_string(&doc).unwrap();
    assert!(
        doc.contains(&section),
        "docs/benchmarks.md's tables are not those of docs/bench-suite.json: \
         run `shardbus report suite docs/bench-suite.json --write docs/benchmarks.md`"
    );
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
