//! The suite's floor sections, as markdown (`docs/benchmarks.md`) and as the text
//! `shardbus bench --suite` prints: one bus leg beside the atomic leg, the persistent bus beside
//! its raw appends, and the targets with their verdicts. Each is left out of a run without it.

use std::fmt::Write as _;

use super::tables::{ns, python_median, stamp};
use super::{median, TargetRow};
use crate::suite::SuiteReport;

/// `### One leg`: p50 / p99 / p99.9 / max of each leg and of the round trips / 2 it was
/// measured in.
pub(super) fn legs_table(out: &mut Vec<String>, suite: &SuiteReport) {
    if suite.legs.is_empty() {
        return;
    }
    out.extend([
        "### One leg (publish → handler entry on the other core, busy-spin, timed directly)".into(),
        String::new(),
        stamp(suite, None),
        String::new(),
        "| leg | p50 | p99 | p99.9 | max | RTT/2 p50 | RTT/2 p99.9 | p50 of each run |".into(),
        "|---|---|---|---|---|---|---|---|".into(),
    ]);
    for leg in &suite.legs {
        let (o, r) = (&leg.one_way, &leg.rtt_half);
        let p50s: Vec<String> = leg.p50s.iter().map(u64::to_string).collect();
        out.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} | [{}] |",
            leg.name,
            ns(o.p50),
            ns(o.p99),
            ns(o.p999),
            ns(o.max),
            ns(r.p50),
            ns(r.p999),
            p50s.join(", ")
        ));
    }
    out.push(String::new());
}

/// `### Persistence beside its floors`: the buses and the raw appends, records per second.
pub(super) fn persist_table(out: &mut Vec<String>, suite: &SuiteReport) {
    let Some(p) = &suite.persist else {
        return;
    };
    let w = &p.workload;
    out.extend([
        format!(
            "### Persistence beside its floors: {} producer -> 1 shard, {} topics, {}, {} B, {} records per write",
            w.producers, w.topics, w.distribution, w.payload, p.batch
        ),
        String::new(),
        stamp(suite, Some(w.messages)),
        String::new(),
        "| row | M records/s (range) | MB/s | verified |".into(),
        "|---|---|---|---|".into(),
    ]);
    let row = |name: &str, rates: &[f64], mb: Option<f64>, checked: &str| {
        let m = python_median(rates).map_or(0.0, |m| m / 1e6);
        let lo = rates.iter().copied().fold(f64::INFINITY, f64::min) / 1e6;
        let hi = rates.iter().copied().fold(f64::NEG_INFINITY, f64::max) / 1e6;
        let mb = mb.map_or_else(|| "—".to_owned(), |mb| format!("{mb:.0}"));
        format!("| {name} | {m:.2} ({lo:.2}–{hi:.2}) | {mb} | {checked} |")
    };
    for s in &p.series {
        let rates: Vec<f64> = s.runs.iter().map(|r| r.msgs_per_sec).collect();
        if rates.is_empty() {
            let why = s.error.as_deref().unwrap_or("no run");
            out.push(format!("| {} | {why} | | |", s.name));
            continue;
        }
        let mb = s.median().map(|m| m.payload_mb_per_sec);
        let checked = if s.all_exact() { "yes" } else { "**no**" };
        out.push(row(&s.name, &rates, mb, checked));
    }
    for r in &p.raw {
        if r.records_per_sec.is_empty() {
            let why = r.error.as_deref().unwrap_or("no run");
            out.push(format!("| {} | {why} | | |", r.name));
            continue;
        }
        out.push(row(
            &r.name,
            &r.records_per_sec,
            median(&r.mb_per_sec),
            "— (floor)",
        ));
    }
    out.push(String::new());
}

/// `### Targets`: each bound, the measured value and the verdict.
pub(super) fn targets_table(out: &mut Vec<String>, suite: &SuiteReport) {
    if suite.targets.is_empty() {
        return;
    }
    out.extend([
        "### Targets of this run".into(),
        String::new(),
        stamp(suite, None),
        String::new(),
    ]);
    // The column of per-repetition ratios, in runs that record them.
    let paired = suite.targets.iter().any(|t| !t.per_rep.is_empty());
    if paired {
        out.extend([
            "| what | target | measured | verdict | each repetition |".into(),
            "|---|---|---|---|---|".into(),
        ]);
    } else {
        out.extend([
            "| what | target | measured | verdict |".into(),
            "|---|---|---|---|".into(),
        ]);
    }
    for t in &suite.targets {
        let mut row = format!(
            "| {} | {} | {} | {} |",
            t.what,
            t.target,
            t.measured,
            verdict_md(t)
        );
        if paired {
            let each = if t.per_rep.is_empty() {
                "—".to_owned()
            } else {
                t.per_rep.join(", ")
            };
            row.push_str(&format!(" {each} |"));
        }
        out.push(row);
    }
    out.push(String::new());
}

fn verdict_md(t: &TargetRow) -> String {
    match t.met {
        Some(false) => format!("**{}**", t.verdict()),
        _ => t.verdict().to_owned(),
    }
}

/// The text form of the three sections, for `shardbus bench --suite`.
pub(super) fn floors_text(out: &mut String, report: &SuiteReport) {
    if !report.legs.is_empty() {
        let _ = writeln!(
            out,
            "== one leg (ns, timed directly; RTT/2 of the same rounds)"
        );
        for l in &report.legs {
            let (o, r) = (&l.one_way, &l.rtt_half);
            let _ = writeln!(
                out,
                "{:<46} p50 {:>6} p99 {:>7} p99.9 {:>8} max {:>9} | RTT/2 p50 {} p99.9 {} | p50s {:?}",
                l.name, o.p50, o.p99, o.p999, o.max, r.p50, r.p999, l.p50s
            );
        }
    }
    if let Some(p) = &report.persist {
        let _ = writeln!(
            out,
            "== persistence beside its floors ({} B, {} topics, {} records per write, {} msgs)",
            p.workload.payload, p.workload.topics, p.batch, p.workload.messages
        );
        out.push_str(&super::series_table(&p.series));
        for r in &p.raw {
            match &r.error {
                Some(e) => {
                    let _ = writeln!(out, "{:<30} n/a: {e}", r.name);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{:<30} {:>10.3} M records/s (runs {:?}), {:.1} MB/s",
                        r.name,
                        median(&r.records_per_sec).unwrap_or(f64::NAN) / 1e6,
                        r.records_per_sec
                            .iter()
                            .map(|x| format!("{:.3}", x / 1e6))
                            .collect::<Vec<_>>(),
                        median(&r.mb_per_sec).unwrap_or(f64::NAN)
                    );
                }
            }
        }
    }
    if !report.targets.is_empty() {
        let _ = writeln!(out, "== targets");
        out.push_str(&super::targets_text(&report.targets));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{suite_section, suite_text, Machine, Percentiles, RunSummary, Series};
    use crate::suite::{LegRow, LightRow, LightSide, PersistFloors, RawSeries, WorkloadDesc};

    fn pct(p50: u64, p999: u64) -> Percentiles {
        Percentiles {
            samples: 10,
            p50,
            p90: p50,
            p99: p50,
            p999,
            p9999: p999,
            max: p999,
        }
    }

    fn suite() -> SuiteReport {
        let run = RunSummary {
            msgs_per_sec: 2e6,
            payload_mb_per_sec: 512.0,
            elapsed_s: 1.0,
            handled: 2,
            exact: true,
            duplicates: 0,
            missing: 0,
            order_violations: 0,
            unexpected: 0,
            latency: Percentiles::default(),
            per_thread_handled: vec![2],
            consume: crate::Consume::Verify,
            checksum_mismatches: 0,
        };
        SuiteReport {
            machine: Machine {
                cpu: "x".into(),
                cores: 2,
                date: "d".into(),
                fences: "f".into(),
            },
            reps: 1,
            groups: vec![],
            scaling: vec![],
            cpu_scaling: vec![],
            latency: vec![],
            legs: vec![LegRow {
                name: "bus".into(),
                one_way: pct(210, 850),
                rtt_half: pct(180, 900),
                p50s: vec![210],
            }],
            light: vec![LightRow {
                interval_us: 100,
                rounds: 1_000,
                bus: LightSide {
                    leg_p50s: vec![37_200, 37_300, 36_900],
                    rtt_half_p50s: vec![18_700, 18_800, 18_600],
                    cpu: vec![0.105, 0.11, 0.10],
                },
                channel: LightSide {
                    leg_p50s: vec![37_000, 37_200, 37_100],
                    rtt_half_p50s: vec![18_700, 18_700, 18_700],
                    cpu: vec![0.115, 0.10, 0.12],
                },
                idle_cpu: vec![0.0, 0.0, 0.0],
                wake_p50s: vec![36_000, 36_100, 35_900],
                block: 500,
            }],
            persist: Some(PersistFloors {
                workload: WorkloadDesc {
                    producers: 1,
                    topics: 64,
                    messages: 2,
                    payload: 256,
                    distribution: "uniform".into(),
                },
                batch: 1024,
                series: vec![Series {
                    name: "shardbus fsync never".into(),
                    runs: vec![run],
                    error: None,
                }],
                raw: vec![RawSeries {
                    name: "raw buffered append (framed)".into(),
                    records_per_sec: vec![4e6],
                    mb_per_sec: vec![1248.0],
                    error: None,
                }],
            }),
            targets: vec![
                TargetRow::share_at_least("never / framed", Some(0.5), 0.8),
                TargetRow::fraction("bus / ring", Some(0.25)),
                TargetRow::ratio_at_least(
                    "a / b",
                    crate::report::paired(&[2.0, 1.0, 3.0], &[1.0, 2.0, 1.0]),
                    1.0,
                ),
            ],
        }
    }

    /// The light-load row: medians of each side, their ratios, and the two targets of a
    /// pace decided from them (the leg's p50 1.0027× the channel's is a miss, shown as one).
    #[test]
    fn the_light_load_section_renders_and_decides_its_targets() {
        let s = suite();
        let md = suite_section(&s);
        let row = "| 1 msg / 100 us | 37.2 µs | 37.1 µs | 1.00× | 36.0 µs | 18.7 µs | 18.7 µs | \
                   10.5 % (10.0–11.0) | 11.5 % (10.0–12.0) | 0.91× | 0.0 % (0.0–0.0) |";
        assert!(md.lines().any(|l| l == row), "missing {row:?} in\n{md}");
        assert!(
            md.contains("fed in turns: blocks of 50 ms worth of messages (500 at 1 msg / 100 us)"),
            "{md}"
        );
        let targets = crate::suite::light_targets(&s.light);
        let shown: Vec<String> = targets
            .iter()
            .map(|t| format!("{} {} {} {}", t.what, t.target, t.measured, t.verdict()))
            .collect();
        assert_eq!(
            shown,
            [
                "light load 1 msg / 100 us: shardbus park shard CPU / crossbeam-channel consumer CPU <= 1.20x 0.91x MET",
                "light load 1 msg / 100 us: shardbus park leg p50 / crossbeam-channel consumer's <= 1.000x 1.003x MISSED",
                "light load 1 msg / 100 us: shardbus park RTT/2 p50 / crossbeam-channel consumer's — 1.00x —",
                "light load 1 msg / 100 us: shardbus park leg p50 / bare park-unpark leg p50 — 1.03x —",
                "light load 1 msg / 100 us: crossbeam-channel consumer leg p50 / bare park-unpark leg p50 — 1.03x —",
            ]
        );
        let text = suite_text(&s, "cmd");
        assert!(
            text.contains("1 msg / 100 us   shardbus park  leg p50s [37200, 37300, 36900]"),
            "{text}"
        );
    }

    #[test]
    fn floor_sections_render_in_markdown_and_text() {
        let s = suite();
        let md = suite_section(&s);
        for row in [
            "| bus | 210 ns | 210 ns | 850 ns | 850 ns | 180 ns | 900 ns | [210] |",
            "| shardbus fsync never | 2.00 (2.00–2.00) | 512 | yes |",
            "| raw buffered append (framed) | 4.00 (4.00–4.00) | 1248 | — (floor) |",
            "| never / framed | >= 80% | 50.0% | **MISSED** | — |",
            "| bus / ring | — | 0.25x | — | — |",
            "| a / b | >= 1.00x | 2.00x | MET | 2.00x, 0.50x, 3.00x |",
        ] {
            assert!(md.lines().any(|l| l == row), "missing {row:?} in\n{md}");
        }
        let text = suite_text(&s, "cmd");
        assert!(
            text.contains("target: never / framed >= 80%: 50.0% MISSED\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "target: a / b >= 1.00x: 2.00x MET [each repetition: 2.00x, 0.50x, 3.00x]"
            ),
            "{text}"
        );
        assert!(
            text.contains("raw buffered append (framed)        4.000 M records/s"),
            "{text}"
        );
        // A suite file without these sections renders none of them.
        let bare = SuiteReport {
            legs: vec![],
            light: vec![],
            persist: None,
            targets: vec![],
            ..s.clone()
        };
        let headings = |md: &str| md.lines().filter(|l| l.starts_with("### ")).count();
        // The closed loop and the latency table always; one leg, light load, persistence,
        // targets here.
        assert_eq!((headings(&md), headings(&suite_section(&bare))), (6, 2));
    }
}
