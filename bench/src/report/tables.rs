//! The markdown tables of `docs/benchmarks.md`: the section "Tables of the committed run",
//! rendered from a suite JSON read back into [`SuiteReport`], and criterion's M msgs/s table,
//! read from `target/criterion`.
//!
//! `shardbus report suite [FILE] [--write DOC]` and `shardbus report criterion [DIR]` print
//! them. The numbers are formatted as Python's `format` does (`{:.2f}`, `{:,}`): the tables
//! were first written by Python scripts, and this port reproduced their output byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use super::ReportError;
use crate::suite::{Group, SuiteReport};
use crate::Consume;

/// The heading of the section [`suite_section`] renders.
pub const SUITE_HEADING: &str = "## Tables of the committed run";

/// How the stamp under each table names the command that made the suite file.
const SUITE_COMMAND: &str = "shardbus bench --suite --reps {reps} --json docs/bench-suite.json";

/// The document has no line [`SUITE_HEADING`] whose section could be replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no line `{SUITE_HEADING}` to replace")]
pub struct MissingHeading;

/// The section "Tables of the committed run" of `docs/benchmarks.md`, from its heading to the
/// blank lines before the next `## ` heading: one table per throughput group (with the ratios
/// of the medians), the closed loop and the latency rows.
pub fn suite_section(suite: &SuiteReport) -> String {
    let mut lines: Vec<String> = vec![
        SUITE_HEADING.into(),
        String::new(),
        "Written by `shardbus report suite --write docs/benchmarks.md` from `docs/bench-suite.json` \
         (the run the targets above quote)."
            .into(),
        String::new(),
    ];
    for group in &suite.groups {
        group_table(&mut lines, suite, group);
    }
    closed_loop(&mut lines, suite);
    latency(&mut lines, suite);
    // Only in runs that measured them (older suite files have none).
    super::floors::legs_table(&mut lines, suite);
    super::light::light_table(&mut lines, suite);
    super::floors::persist_table(&mut lines, suite);
    super::floors::targets_table(&mut lines, suite);
    lines.join("\n") + "\n\n"
}

/// Replaces, in `doc`, the section from the line [`SUITE_HEADING`] up to the next line that
/// starts with `## ` (or the end of `doc`) with `section`; everything else is left as it is.
pub fn replace_section(doc: &str, section: &str) -> Result<String, MissingHeading> {
    let mut at = 0;
    let start = loop {
        let line_end = doc[at..].find('\n').map_or(doc.len(), |i| at + i);
        if doc[at..line_end].trim_end() == SUITE_HEADING {
            break at;
        }
        if line_end == doc.len() {
            return Err(MissingHeading);
        }
        at = line_end + 1;
    };
    let end = doc[start + SUITE_HEADING.len()..]
        .find("\n## ")
        .map_or(doc.len(), |i| start + SUITE_HEADING.len() + i + 1);
    Ok(format!("{}{section}{}", &doc[..start], &doc[end..]))
}

/// Renders the section from `suite_json` and writes it over the section in the file `doc`.
pub fn write_suite_section(suite_json: &Path, doc: &Path) -> Result<(), ReportError> {
    let section = suite_section(&SuiteReport::read(suite_json)?);
    let text = std::fs::read_to_string(doc).map_err(|source| ReportError::Read {
        path: doc.to_owned(),
        source,
    })?;
    let text = replace_section(&text, &section).map_err(|source| ReportError::Section {
        path: doc.to_owned(),
        source,
    })?;
    std::fs::write(doc, text).map_err(|source| ReportError::Write {
        path: doc.to_owned(),
        source,
    })
}

/// `n` with a comma between each group of three digits (Python's `{:,}`).
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The median of `xs` as Python's `statistics.median` takes it: the middle value, or the mean
/// of the two middle values for an even count; `None` if empty.
pub(super) fn python_median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// A duration in ns as the tables print it.
pub(super) fn ns(v: u64) -> String {
    let v = v as f64;
    if v < 1000.0 {
        format!("{v:.0} ns")
    } else if v < 1_000_000.0 {
        format!("{:.1} µs", v / 1000.0)
    } else {
        format!("{:.1} ms", v / 1_000_000.0)
    }
}

/// Per-thread handled counts: the list, or a summary for more than eight threads.
fn handled(counts: &[u64]) -> String {
    if counts.len() > 8 {
        let (lo, hi) = (counts.iter().min(), counts.iter().max());
        return format!(
            "{} threads, {}–{} each",
            counts.len(),
            thousands(lo.copied().unwrap_or(0)),
            thousands(hi.copied().unwrap_or(0))
        );
    }
    let list: Vec<String> = counts.iter().map(u64::to_string).collect();
    format!("[{}]", list.join(", "))
}

fn verified(exact: bool) -> &'static str {
    if exact {
        "yes"
    } else {
        "**no**"
    }
}

/// The line under each table heading: command, machine, repetitions (and messages per run).
pub(super) fn stamp(suite: &SuiteReport, messages: Option<u64>) -> String {
    let m = &suite.machine;
    let mut parts = vec![
        format!(
            "`{}`",
            SUITE_COMMAND.replace("{reps}", &suite.reps.to_string())
        ),
        m.date.clone(),
        m.cpu.clone(),
        format!("{} cores", m.cores),
        format!("fences {}", m.fences),
        format!("median of {} interleaved runs (range)", suite.reps),
    ];
    if let Some(n) = messages {
        parts.push(format!("{} messages per run", thousands(n)));
    }
    parts.join(" · ")
}

fn group_table(out: &mut Vec<String>, suite: &SuiteReport, group: &Group) {
    out.extend([
        format!("### {}", group.title),
        String::new(),
        stamp(suite, Some(group.workload.messages)),
        String::new(),
        "| runner | M msgs/s (range) | MB/s payload | p50 | p99 | p99.9 | max | verified \
         | per-thread handled (median run) |"
            .into(),
        "|---|---|---|---|---|---|---|---|---|".into(),
    ]);
    let mut medians = Vec::new();
    for s in &group.series {
        // The lower median run by rate, as the rows have always shown it.
        let mut runs: Vec<_> = s.runs.iter().collect();
        runs.sort_by(|a, b| a.msgs_per_sec.total_cmp(&b.msgs_per_sec));
        let (Some(med), Some(m)) = (
            runs.get(runs.len().saturating_sub(1) / 2),
            python_median(
                &s.runs
                    .iter()
                    .map(|r| r.msgs_per_sec / 1e6)
                    .collect::<Vec<_>>(),
            ),
        ) else {
            let why = s.error.as_deref().filter(|e| !e.is_empty());
            out.push(format!(
                "| {} | {} | | | | | | | |",
                s.name,
                why.unwrap_or("no run")
            ));
            medians.push(None);
            continue;
        };
        medians.push(Some(m));
        let rates = s.runs.iter().map(|r| r.msgs_per_sec / 1e6);
        let lo = rates.clone().fold(f64::INFINITY, f64::min);
        let hi = rates.fold(f64::NEG_INFINITY, f64::max);
        let lat = &med.latency;
        // Checksum-only consumers read no clock: no latency, and "verified" is count and sum.
        let (p50, p99, p999, max, checked) = if med.consume == Consume::Checksum {
            let dash = || "—".to_owned();
            let checked = match verified(s.runs.iter().all(|r| r.exact)) {
                "yes" => "count, sum",
                no => no,
            };
            (dash(), dash(), dash(), dash(), checked)
        } else {
            let exact = verified(s.runs.iter().all(|r| r.exact));
            (ns(lat.p50), ns(lat.p99), ns(lat.p999), ns(lat.max), exact)
        };
        out.push(format!(
            "| {} | {m:.2} ({lo:.2}–{hi:.2}) | {:.0} | {p50} | {p99} | {p999} | {max} | {checked} | {} |",
            s.name,
            med.payload_mb_per_sec,
            handled(&med.per_thread_handled),
        ));
    }
    let first = group.series.first().map_or("", |s| s.name.as_str());
    let ratios: Vec<String> = match medians.first() {
        Some(&Some(ours)) if ours != 0.0 => group.series[1..]
            .iter()
            .zip(&medians[1..])
            .filter_map(|(s, m)| match *m {
                Some(m) if m != 0.0 => Some(format!("{first} / {} = {:.2}×", s.name, ours / m)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    out.extend([
        String::new(),
        format!("Ratios of medians: {}", ratios.join("; ")),
        String::new(),
    ]);
}

fn closed_loop(out: &mut Vec<String>, suite: &SuiteReport) {
    out.extend([
        "### Closed loop (64 actors, 256 tokens in flight)".into(),
        String::new(),
        stamp(suite, None),
        String::new(),
        "| shards | work rounds / msg | M msgs/s median | runs | per-shard handled | verified |"
            .into(),
        "|---|---|---|---|---|---|".into(),
    ]);
    let mut medians = BTreeMap::new();
    for row in &suite.scaling {
        let rates: Vec<f64> = row.msgs_per_sec.iter().map(|r| r / 1e6).collect();
        // A point whose every repetition failed has no median (the rows never had one).
        let m = python_median(&rates);
        if let Some(m) = m {
            medians.insert((row.shards, row.work), m);
        }
        let runs: Vec<String> = rates.iter().map(|r| format!("{r:.2}")).collect();
        out.push(format!(
            "| {} | {} | {} | {} | {} | {} |",
            row.shards,
            row.work,
            m.map_or_else(|| "n/a".to_owned(), |m| format!("{m:.2}")),
            runs.join(", "),
            handled(&row.per_shard_handled),
            verified(row.exact),
        ));
    }
    out.push(String::new());
    let works: BTreeSet<u32> = medians.keys().map(|&(_, w)| w).collect();
    for work in works {
        if let (Some(one), Some(two)) = (medians.get(&(1, work)), medians.get(&(2, work))) {
            out.push(format!(
                "- work {work}: 2 shards / 1 shard = {:.2}×",
                two / one
            ));
        }
    }
    if let Some(m) = python_median(&suite.cpu_scaling) {
        let each: Vec<String> = suite
            .cpu_scaling
            .iter()
            .map(|c| format!("{c:.2}×"))
            .collect();
        out.push(format!(
            "- host compute scaling in the same run (2 pinned threads / 1): {} (median {m:.2}×)",
            each.join(", ")
        ));
    }
    out.push(String::new());
}

fn latency(out: &mut Vec<String>, suite: &SuiteReport) {
    out.extend([
        "### Latency (ping-pong, RTT/2; shardbus rows also publish → handler entry)".into(),
        String::new(),
        stamp(suite, None),
        String::new(),
        "| runner | pacing | shards | RTT/2 p50 | p99 | p99.9 | max \
         | publish→handler p50 / p99 / p99.9 | shard CPU | p50 of each run |"
            .into(),
        "|---|---|---|---|---|---|---|---|---|---|".into(),
    ]);
    for row in &suite.latency {
        let pacing = row
            .interval_us
            .map_or_else(|| "back to back".to_owned(), |us| format!("1 / {us} µs"));
        let shards = match row.shards {
            0 => "—".to_owned(),
            n => n.to_string(),
        };
        let rtt = &row.rtt_half;
        let one_way = row.one_way.as_ref().map_or_else(
            || "—".to_owned(),
            |o| format!("{} / {} / {} ns", o.p50, o.p99, o.p999),
        );
        let cpu: Vec<String> = row
            .shard_cpu
            .iter()
            .map(|c| format!("{:.1}%", c * 100.0))
            .collect();
        let cpu = if cpu.is_empty() {
            "—".to_owned()
        } else {
            cpu.join(", ")
        };
        let p50s: Vec<String> = row.p50s.iter().map(u64::to_string).collect();
        out.push(format!(
            "| {} | {pacing} | {shards} | {} ns | {} ns | {} ns | {} ns | {one_way} | {cpu} | [{}] |",
            row.name,
            rtt.p50,
            rtt.p99,
            rtt.p999,
            rtt.max,
            p50s.join(", ")
        ));
    }
    out.push(String::new());
}

/// The runners in the column order of the criterion table; others follow, sorted by name.
const CRITERION_COLUMNS: [&str; 11] = [
    "shardbus",
    "shardbus-batch64",
    "crossbeam_router",
    "seed",
    "disruptor",
    "floor-crossbeam_bounded",
    "floor-std_sync_channel",
    "floor-array_queue",
    "floor-ring",
    "shards=1",
    "shards=2",
];

/// The criterion groups the table shows.
const CRITERION_GROUPS: [&str; 2] = ["throughput/", "scaling/"];

/// `new/benchmark.json` of a criterion benchmark: who it is and what one iteration moves.
#[derive(Deserialize)]
struct CriterionBenchmark {
    group_id: String,
    function_id: Option<String>,
    throughput: Option<CriterionThroughput>,
}

/// criterion's `Throughput`; only `Elements` (messages per iteration) makes a row.
#[derive(Deserialize)]
struct CriterionThroughput {
    #[serde(rename = "Elements")]
    elements: Option<u64>,
}

/// `new/estimates.json` of a criterion benchmark: the median time per iteration, in ns.
#[derive(Deserialize)]
struct CriterionEstimates {
    median: CriterionEstimate,
}

#[derive(Deserialize)]
struct CriterionEstimate {
    point_estimate: f64,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::Json {
        path: path.to_owned(),
        source,
    })
}

/// group → runner → M msgs/s, from every `*/new/benchmark.json` under `dir`.
type CriterionRows = BTreeMap<String, BTreeMap<String, f64>>;

fn criterion_rows(dir: &Path, rows: &mut CriterionRows) -> Result<(), ReportError> {
    let read_err = |source| ReportError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    let benchmark = dir.join("benchmark.json");
    if dir.file_name().is_some_and(|n| n == "new") && benchmark.is_file() {
        let bench: CriterionBenchmark = read_json(&benchmark)?;
        let elements = bench.throughput.and_then(|t| t.elements).unwrap_or(0);
        let shown = CRITERION_GROUPS
            .iter()
            .any(|g| bench.group_id.starts_with(g));
        if let (true, true, Some(function)) = (shown, elements > 0, bench.function_id) {
            let estimates: CriterionEstimates = read_json(&dir.join("estimates.json"))?;
            let rate = elements as f64 / estimates.median.point_estimate * 1e3;
            rows.entry(bench.group_id)
                .or_default()
                .insert(function, rate);
        }
    }
    for entry in entries {
        // Not followed: a symbolic link to a directory (as `os.walk` does not).
        if entry.file_type().map_err(read_err)?.is_dir() {
            criterion_rows(&entry.path(), rows)?;
        }
    }
    Ok(())
}

/// criterion's M msgs/s table from its output directory (`target/criterion`): for every
/// benchmark of the `throughput/*` and `scaling/*` groups with `Throughput::Elements`, elements
/// over the median time per iteration; one row per group, one column per runner.
pub fn criterion_table(dir: &Path) -> Result<String, ReportError> {
    let mut rows = CriterionRows::new();
    criterion_rows(dir, &mut rows)?;
    let extra: BTreeSet<&str> = rows
        .values()
        .flat_map(|r| r.keys().map(String::as_str))
        .filter(|c| !CRITERION_COLUMNS.contains(c))
        .collect();
    let columns: Vec<&str> = CRITERION_COLUMNS.iter().copied().chain(extra).collect();
    let mut out = String::new();
    let _ = writeln!(out, "| group | {} |", columns.join(" | "));
    let _ = writeln!(out, "{}|", "|---".repeat(columns.len() + 1));
    for (group, rates) in &rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                rates
                    .get(*c)
                    .map_or_else(String::new, |r| format!("{r:.2}"))
            })
            .collect();
        let _ = writeln!(out, "| `{group}` | {} |", cells.join(" | "));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_as_the_tables_always_did() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(4_000_256), "4,000,256");
        assert_eq!(ns(999), "999 ns");
        assert_eq!(ns(1_272), "1.3 µs");
        assert_eq!(ns(2_026_495), "2.0 ms");
        assert_eq!(python_median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(python_median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(python_median(&[]), None);
        assert_eq!(handled(&[1, 2]), "[1, 2]");
        assert_eq!(handled(&[5_000; 9]), "9 threads, 5,000–5,000 each");
    }

    #[test]
    fn replaces_only_the_section() {
        let doc = "# Title\n\nintro\n\n## Tables of the committed run\n\nold\n\n## Next\n\nkept\n";
        let got = replace_section(doc, "## Tables of the committed run\n\nnew\n\n").unwrap();
        assert_eq!(
            got,
            "# Title\n\nintro\n\n## Tables of the committed run\n\nnew\n\n## Next\n\nkept\n"
        );
        // The last section runs to the end of the document.
        let last = "intro\n## Tables of the committed run\nold\n";
        assert_eq!(replace_section(last, "S\n").unwrap(), "intro\nS\n");
        // A deeper heading with the same words is not the section.
        let deeper = "### Tables of the committed run\n\n## Next\n";
        assert_eq!(replace_section(deeper, "S"), Err(MissingHeading));
    }

    #[test]
    fn missing_heading_is_an_error() {
        assert_eq!(
            replace_section("# Title\n\n## Other\n", "S"),
            Err(MissingHeading)
        );
        assert_eq!(replace_section("", "S"), Err(MissingHeading));
    }

    #[test]
    fn criterion_table_reads_new_estimates() {
        let dir = std::env::temp_dir().join(format!(
            "shardbus-bench-test-criterion-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let bench = |group: &str, function: &str, throughput: &str, median: f64| {
            let new = dir.join(group.replace('/', "_")).join(function).join("new");
            std::fs::create_dir_all(&new).unwrap();
            let id = format!(
                r#"{{"group_id":"{group}","function_id":"{function}","value_str":null,"throughput":{throughput},"full_id":"{group}/{function}","directory_name":"x","title":"x"}}"#
            );
            std::fs::write(new.join("benchmark.json"), id).unwrap();
            let estimates = format!(r#"{{"median":{{"point_estimate":{median}}}}}"#);
            std::fs::write(new.join("estimates.json"), estimates).unwrap();
        };
        bench(
            "throughput/p1-s1",
            "shardbus",
            r#"{"Elements":200000}"#,
            8e6,
        );
        bench("throughput/p1-s1", "zeta", r#"{"Elements":200000}"#, 4e6);
        bench("scaling/closed", "shards=2", r#"{"Elements":1000}"#, 1e6);
        bench("latency/x", "shardbus", r#"{"Elements":1}"#, 1.0);
        bench("throughput/bytes", "shardbus", r#"{"Bytes":5}"#, 1.0);
        let table = criterion_table(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let cols = CRITERION_COLUMNS.join(" | ");
        assert_eq!(
            table,
            format!(
                "| group | {cols} | zeta |\n{}|\n\
                 | `scaling/closed` |  |  |  |  |  |  |  |  |  |  | 1.00 |  |\n\
                 | `throughput/p1-s1` | 25.00 |  |  |  |  |  |  |  |  |  |  | 50.00 |\n",
                "|---".repeat(13)
            )
        );
    }
}
