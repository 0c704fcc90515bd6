//! The persistence rows of a session's table: the raw baselines, each persistent bus against
//! memory-only and its floors, and the targets with their verdicts.

use std::fmt::Write as _;

use super::{min_max, PersistConfig, PersistReport, Session, Table, BUFFERED};
use crate::persist::RawResult;
use crate::report::{median, targets_text, Series, TargetRow};

impl Session {
    /// The raw baseline's row, each persistent row against memory and raw, and the targets.
    pub(super) fn persist_rows(
        &self,
        out: &mut String,
        t: &Table,
        record: usize,
        runs: &[RawResult],
        p: &PersistConfig,
    ) -> PersistReport {
        let rps: Vec<f64> = runs.iter().map(RawResult::records_per_sec).collect();
        let mbps: Vec<f64> = runs.iter().map(RawResult::mb_per_sec).collect();
        let us: Vec<f64> = runs.iter().map(RawResult::us_per_batch).collect();
        let (lo, hi) = min_max(&rps);
        let raw_rate = median(&rps).unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "{:<30} {:>10.3} {:>21} {:>8.1}  records of {record} B, {} per sync_data, {:.0} µs per write+sync (median)",
            "raw append+sync",
            raw_rate / 1e6,
            format!("({:.3}–{:.3})", lo / 1e6, hi / 1e6),
            median(&mbps).unwrap_or(f64::NAN),
            p.raw_batch,
            median(&us).unwrap_or(f64::NAN),
        );
        let rate = |name: &str| {
            t.series
                .iter()
                .find(|s| s.name.starts_with(name))
                .and_then(Series::median)
                .map(|m| m.msgs_per_sec)
        };
        let mut buffered_rates = Vec::new();
        for ((_, name), runs) in BUFFERED.iter().zip(&t.buffered) {
            let rps: Vec<f64> = runs.iter().map(RawResult::records_per_sec).collect();
            let mbps: Vec<f64> = runs.iter().map(RawResult::mb_per_sec).collect();
            let (lo, hi) = min_max(&rps);
            let _ = writeln!(
                out,
                "{:<30} {:>10.3} {:>21} {:>8.1}  {} records per write, no sync",
                name,
                median(&rps).unwrap_or(f64::NAN) / 1e6,
                format!("({:.3}–{:.3})", lo / 1e6, hi / 1e6),
                median(&mbps).unwrap_or(f64::NAN),
                p.raw_batch,
            );
            buffered_rates.push(rps);
        }
        let buffered_rate = median(&buffered_rates[0]).unwrap_or(f64::NAN);
        let mut target_rows = Vec::new();
        if let Some(never) = rate("shardbus fsync never") {
            let _ = writeln!(
                out,
                "{:<32} / raw buffered append (framed) {:>7.1}%",
                "shardbus fsync never",
                100.0 * never / buffered_rate
            );
        }
        let mut targets = Vec::new();
        if let Some(memory) = rate("shardbus (memory)") {
            for s in &t.series[1..] {
                if let Some(m) = s.median() {
                    let _ = writeln!(
                        out,
                        "{:<32} / memory {:>6.1}%   / raw append+sync {:>7.1}%",
                        s.name,
                        100.0 * m.msgs_per_sec / memory,
                        100.0 * m.msgs_per_sec / raw_rate
                    );
                }
            }
            if let Some(batch) = rate("shardbus fsync batch") {
                let r = batch / raw_rate;
                let _ = writeln!(
                    out,
                    "target: fsync batch >= 70% of raw append+sync: {:.1}% {}",
                    100.0 * r,
                    if r >= 0.7 { "MET" } else { "MISSED" }
                );
                targets.push(("batch / raw append+sync".to_owned(), r));
                target_rows.push(TargetRow::share_at_least(
                    "fsync batch / raw append+sync",
                    Some(r),
                    0.7,
                ));
            }
            if let Some(never) = rate("shardbus fsync never") {
                let row = TargetRow::share_at_least(
                    "fsync never / raw buffered append (framed)",
                    Some(never / buffered_rate),
                    0.8,
                );
                out.push_str(&targets_text(std::slice::from_ref(&row)));
                targets.push((
                    "never / raw buffered append".to_owned(),
                    never / buffered_rate,
                ));
                target_rows.push(row);
            }
            if let Some(never) = rate("shardbus fsync never") {
                let r = never / memory;
                let _ = writeln!(
                    out,
                    "target ({} B; set for 256 B): fsync never >= 50% of memory-only: {:.1}% {}",
                    t.workload.payload,
                    100.0 * r,
                    if r >= 0.5 { "MET" } else { "MISSED" }
                );
                targets.push(("never / memory".to_owned(), r));
                target_rows.push(TargetRow::share_at_least(
                    format!(
                        "fsync never / memory-only ({} B; set for 256 B)",
                        t.workload.payload
                    ),
                    Some(r),
                    0.5,
                ));
            }
        }
        PersistReport {
            fsync_interval_ms: p.fsync_interval.as_millis() as u64,
            raw_batch: p.raw_batch,
            raw_record_bytes: record,
            raw_records_per_sec: rps,
            raw_mb_per_sec: mbps,
            targets,
            buffered_batch: p.raw_batch,
            raw_buffered_bytes_records_per_sec: buffered_rates.pop().unwrap_or_default(),
            raw_buffered_records_per_sec: buffered_rates.pop().unwrap_or_default(),
            target_rows,
        }
    }
}
