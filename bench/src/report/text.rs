//! The plain-text tables `shardbus bench` prints: one row per runner, and the suite's sections.

use std::fmt::Write as _;

use super::{ratios, Series, TargetRow};
use crate::suite::{scaling_median, SuiteReport};
use crate::Consume;

/// One row per series: median rate and range, MB/s, the median run's latency percentiles, the
/// verifier's counts over every run, and the median run's per-thread handled counts.
pub fn series_table(series: &[Series]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<30} {:>10} {:>21} {:>8} {:>8} {:>8} {:>9} {:>10}  {:<13} per-thread handled",
        "runner",
        "M msgs/s",
        "(range)",
        "MB/s",
        "p50 ns",
        "p99 ns",
        "p99.9 ns",
        "max ns",
        "dup/miss/ord/unexp"
    );
    for s in series {
        let (Some(m), Some((lo, hi))) = (s.median(), s.range()) else {
            let _ = writeln!(
                out,
                "{:<30} n/a: {}",
                s.name,
                s.error.as_deref().unwrap_or("no run")
            );
            continue;
        };
        let (dup, miss, ord, unexp) = s.runs.iter().fold((0, 0, 0, 0), |a, r| {
            (
                a.0 + r.duplicates,
                a.1 + r.missing,
                a.2 + r.order_violations,
                a.3 + r.unexpected,
            )
        });
        let sums: u64 = s.runs.iter().map(|r| r.checksum_mismatches).sum();
        let _ = writeln!(
            out,
            "{:<30} {:>10.3} {:>21} {:>8.1} {:>8} {:>8} {:>9} {:>10}  {:<18} {:?}",
            s.name,
            m.msgs_per_sec / 1e6,
            format!("({:.3}–{:.3})", lo / 1e6, hi / 1e6),
            m.payload_mb_per_sec,
            m.latency.p50,
            m.latency.p99,
            m.latency.p999,
            m.latency.max,
            match (m.consume, sums) {
                (Consume::Verify, _) => format!("{dup}/{miss}/{ord}/{unexp}"),
                (Consume::Checksum, 0) => format!("sum ok -/{miss}/-/{unexp}"),
                (Consume::Checksum, bad) => format!("SUM x{bad} -/{miss}/-/{unexp}"),
            },
            m.per_thread_handled,
        );
    }
    out
}

/// One line per target: `target: WHAT TARGET: MEASURED VERDICT`, or `ratio: WHAT: MEASURED`
/// for a row without a bound ([`TargetRow::fraction`]); each followed by `[each repetition:
/// …]` for a median of per-repetition ratios.
pub fn targets_text(targets: &[TargetRow]) -> String {
    let mut out = String::new();
    for t in targets {
        let each = if t.per_rep.is_empty() {
            String::new()
        } else {
            format!(" [each repetition: {}]", t.per_rep.join(", "))
        };
        if t.verdict() == t.target {
            let _ = writeln!(out, "ratio: {}: {}{each}", t.what, t.measured);
            continue;
        }
        let _ = writeln!(
            out,
            "target: {} {}: {} {}{each}",
            t.what,
            t.target,
            t.measured,
            t.verdict()
        );
    }
    out
}

/// What `shardbus bench --suite` prints, headed by `command`: every group's table and ratios,
/// the closed-loop scaling, the host's compute scaling and the latency rows.
pub fn suite_text(report: &SuiteReport, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{command}");
    let _ = writeln!(
        out,
        "{} | {} cores | {} | fences {} | {} runs each, interleaved",
        report.machine.date,
        report.machine.cores,
        report.machine.cpu,
        report.machine.fences,
        report.reps
    );
    for g in &report.groups {
        let _ = writeln!(out, "== {} ({} msgs)", g.title, g.workload.messages);
        out.push_str(&series_table(&g.series));
        for (peer, ratio) in ratios(&g.series) {
            let _ = writeln!(out, "{} / {peer}: {ratio:.2}x", g.series[0].name);
        }
    }
    let _ = writeln!(out, "== closed loop (64 actors, 256 tokens in flight)");
    for p in &report.scaling {
        let _ = writeln!(
            out,
            "{} shard(s), work {:>3}: {:.3} M msgs/s (runs {:?}), per shard {:?}, exact {}",
            p.shards,
            p.work,
            scaling_median(p) / 1e6,
            p.msgs_per_sec
                .iter()
                .map(|r| format!("{:.3}", r / 1e6))
                .collect::<Vec<_>>(),
            p.per_shard_handled,
            p.exact
        );
    }
    let _ = writeln!(
        out,
        "host compute scaling, 2 threads / 1: {:?}",
        report
            .cpu_scaling
            .iter()
            .map(|x| format!("{x:.2}x"))
            .collect::<Vec<_>>()
    );
    let _ = writeln!(out, "== latency (ns; RTT/2 unless one-way)");
    for l in &report.latency {
        let ow = l
            .one_way
            .as_ref()
            .map(|o| {
                format!(
                    " | one-way p50 {} p99 {} p99.9 {} max {}",
                    o.p50, o.p99, o.p999, o.max
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<32} p50 {:>6} p99 {:>7} p99.9 {:>8} max {:>9}{ow} | cpu {:?} | p50s {:?}",
            l.name,
            l.rtt_half.p50,
            l.rtt_half.p99,
            l.rtt_half.p999,
            l.rtt_half.max,
            l.shard_cpu,
            l.p50s
        );
    }
    super::light::light_text(&mut out, report);
    super::floors::floors_text(&mut out, report);
    out
}
