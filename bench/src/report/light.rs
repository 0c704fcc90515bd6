//! The suite's light-load section, as markdown (`docs/benchmarks.md`) and as the text
//! `shardbus bench --suite` prints. Left out of a run without it.

use std::fmt::Write as _;

use super::median;
use super::tables::{ns, stamp};
use crate::suite::{pace, LightSide, SuiteReport};

/// `medians (lo–hi)` of CPU fractions, as percentages.
fn cpu(v: &[f64]) -> String {
    let Some(m) = median(v) else {
        return "—".into();
    };
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.1} % ({:.1}–{:.1})", m * 100.0, lo * 100.0, hi * 100.0)
}

fn p50(v: &[u64]) -> String {
    let Some(m) = median(&v.iter().map(|&x| x as f64).collect::<Vec<_>>()) else {
        return "—".into();
    };
    ns(m as u64)
}

fn ratio(a: &LightSide, b: &LightSide, pick: fn(&LightSide) -> Option<f64>) -> String {
    match (pick(a), pick(b)) {
        (Some(x), Some(y)) if y > 0.0 => format!("{:.2}×", x / y),
        _ => "—".into(),
    }
}

/// `### Light load`: per pace, the leg and RTT/2 p50 and the serving thread's CPU of each,
/// their ratios, and the idle shard's CPU.
pub(super) fn light_table(out: &mut Vec<String>, suite: &SuiteReport) {
    if suite.light.is_empty() {
        return;
    }
    out.extend([
        "### Light load (park, 2 shards, beside a crossbeam-channel consumer; ping-pong, one message in flight)".into(),
        String::new(),
        stamp(suite, None),
        String::new(),
        how_run(suite),
        String::new(),
        "| pace | shardbus leg p50 | channel leg p50 | leg ratio | bare wake-up leg p50 | shardbus RTT/2 p50 | channel RTT/2 p50 | serving shard CPU | channel consumer CPU | CPU ratio | idle shard CPU |".into(),
        "|---|---|---|---|---|---|---|---|---|---|---|".into(),
    ]);
    for row in &suite.light {
        let (b, c) = (&row.bus, &row.channel);
        out.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            pace(row.interval_us),
            p50(&b.leg_p50s),
            p50(&c.leg_p50s),
            ratio(b, c, |s| s.medians().0),
            p50(&row.wake_p50s),
            p50(&b.rtt_half_p50s),
            p50(&c.rtt_half_p50s),
            cpu(&b.cpu),
            cpu(&c.cpu),
            ratio(b, c, |s| s.medians().2),
            cpu(&row.idle_cpu),
        ));
    }
    out.push(String::new());
}

/// How the sides shared the machine: in turns (blocks of so many messages), or each in its
/// own run (runs recorded before the turns).
fn how_run(suite: &SuiteReport) -> String {
    let slowest = suite
        .light
        .iter()
        .filter(|r| r.block > 0)
        .max_by_key(|r| r.interval_us);
    match slowest {
        Some(r) => format!(
            "The three sides (the shard, the channel's consumer, the bare wake-up) in one run per \
             pace and repetition, fed in turns: blocks of {} ms worth of messages ({} at {}), one \
             side after the other.",
            r.block * r.interval_us / 1_000,
            r.block,
            pace(r.interval_us)
        ),
        None => {
            "Each side in a run of its own, one after the other, per pace and repetition.".into()
        }
    }
}

/// The text form, for `shardbus bench --suite`.
pub(super) fn light_text(out: &mut String, report: &SuiteReport) {
    if report.light.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "== light load (park, 2 shards; leg and RTT/2 p50 in ns, CPU of the serving thread)"
    );
    for row in &report.light {
        for (name, side) in [
            ("shardbus park", &row.bus),
            ("crossbeam-channel", &row.channel),
        ] {
            let _ = writeln!(
                out,
                "{:<16} {:<14} leg p50s {:?} RTT/2 p50s {:?} cpu {}",
                pace(row.interval_us),
                name,
                side.leg_p50s,
                side.rtt_half_p50s,
                cpu(&side.cpu)
            );
        }
        let _ = writeln!(
            out,
            "{:<16} idle shard cpu {}; bare park/unpark leg p50s {:?}",
            pace(row.interval_us),
            cpu(&row.idle_cpu),
            row.wake_p50s
        );
    }
}
