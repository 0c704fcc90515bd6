//! One `shardbus bench` run (all but `--suite` and `--charts`): a table per payload size, each
//! with the shardbus runner and, as asked, the peers on the same workload or the persistent buses
//! beside the raw append+sync baseline (the physical limit); every runner repeated and the
//! repetitions interleaved (all runners once, then all again); then, optionally, recovery.
//!
//! [`Session::new`] plans the tables, [`Session::run`] measures them, [`Session::report`] writes
//! the text tables and the JSON reports, [`Session::recovery`] times a replay.

mod persist_rows;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use shardbus::log::FsyncPolicy;
use shardbus::WaitStrategy;

use crate::persist::{self, PersistOpts, RawResult, RawWork};
use crate::report::{ratios, series_table, write_json, Machine, RunSummary, Series, TargetRow};
use crate::suite::WorkloadDesc;
use crate::{
    crossbeam_router, disruptor, floor, runner, seed, Consume, Error, RunOpts, RunResult, Workload,
    WorkloadError,
};

/// When a persistent bus of the session syncs (one row per policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// [`FsyncPolicy::Never`].
    Never,
    /// [`FsyncPolicy::Batch`].
    Batch,
    /// [`FsyncPolicy::Interval`] of [`PersistConfig::fsync_interval`].
    Interval,
    /// [`FsyncPolicy::Always`].
    Always,
}

impl Fsync {
    fn policy(self, interval: Duration) -> FsyncPolicy {
        match self {
            Self::Never => FsyncPolicy::Never,
            Self::Batch => FsyncPolicy::Batch,
            Self::Interval => FsyncPolicy::Interval(interval),
            Self::Always => FsyncPolicy::Always,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Batch => "batch",
            Self::Interval => "interval",
            Self::Always => "always",
        }
    }
}

/// The persistence rows of a session.
#[derive(Clone, Debug)]
pub struct PersistConfig {
    /// Every persistent run gets a fresh directory under this one, removed after the run.
    pub dir: PathBuf,
    /// One persistent bus per policy, in this order; empty means [`Fsync::Batch`] only.
    pub fsyncs: Vec<Fsync>,
    /// The period of [`Fsync::Interval`].
    pub fsync_interval: Duration,
    /// Messages per run of [`Fsync::Always`] (one sync per message: far slower than the rest).
    pub always_messages: u64,
    /// Records per `sync_data` of the raw append+sync baseline.
    pub raw_batch: usize,
}

/// What a session runs.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The workload of every table; each table replaces its `payload`.
    pub workload: Workload,
    /// Payload bytes: one table each, their repetitions interleaved.
    pub payloads: Vec<usize>,
    /// Options of every run (shards, wait strategy, batch).
    pub opts: RunOpts,
    /// Repetitions per runner; the tables show the median and the range.
    pub reps: usize,
    /// Also run the seed baseline and the crossbeam router, with the ratios.
    pub compare: bool,
    /// Also run the disruptor and, on one-producer workloads, the hand-off floors: the SPSC ring
    /// in both publish forms, std `sync_channel`, crossbeam `bounded` and `ArrayQueue`.
    pub floors: bool,
    /// Also run persistent buses and the raw append+sync baseline.
    pub persist: Option<PersistConfig>,
}

/// One row of a table: a runner on a workload with options.
struct Entry {
    name: String,
    run: fn(&Workload, &RunOpts) -> Result<RunResult, Error>,
    workload: Workload,
    opts: RunOpts,
}

/// One payload size's table, with its raw append+sync baseline when persistence is measured.
struct Table {
    workload: Workload,
    entries: Vec<Entry>,
    series: Vec<Series>,
    /// `(record bytes, runs)` of the raw baseline.
    raw: Option<(usize, Vec<RawResult>)>,
    /// With persistence: the runs of the `Never` policy's floor, [`RawWork::Frame`] then
    /// [`RawWork::Bytes`] (see [`persist::raw_buffered_append`]).
    buffered: [Vec<RawResult>; 2],
}

/// The two forms of the raw buffered append, in the order of [`Table::buffered`].
const BUFFERED: [(RawWork, &str); 2] = [
    (RawWork::Frame, "raw buffered append (framed)"),
    (RawWork::Bytes, "raw buffered append (bytes)"),
];

/// The tables of one `shardbus bench` run, planned, then measured.
pub struct Session {
    config: SessionConfig,
    fsyncs: Vec<Fsync>,
    tables: Vec<Table>,
}

/// What `--json` writes for a table.
#[derive(Clone, Debug, Serialize)]
pub struct TableReport {
    /// The command line.
    pub command: String,
    /// Where and when.
    pub machine: Machine,
    /// The table's workload.
    pub workload: WorkloadDesc,
    /// Shards of the bus.
    pub shards: usize,
    /// How idle shards wait: `spin`, `yield` or `park`.
    pub wait: String,
    /// `Publisher::publish_batch` size; 0 = one by one.
    pub batch: usize,
    /// Repetitions per runner.
    pub reps: usize,
    /// Published by topic name rather than through `Topic` handles.
    pub by_name: bool,
    /// What the consumers did: `verify` or `checksum`.
    pub consume: Consume,
    /// One series per runner.
    pub series: Vec<Series>,
    /// shardbus median rate / peer median rate.
    pub ratios: Vec<(String, f64)>,
    /// Every run of every runner verified.
    pub all_exact: bool,
    /// With persistence: the raw baseline and the target ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persist: Option<PersistReport>,
}

/// What `--json` writes about the persistence rows of a table.
#[derive(Clone, Debug, Serialize)]
pub struct PersistReport {
    /// The period of `fsync interval`.
    pub fsync_interval_ms: u64,
    /// Records per `sync_data` of the raw baseline.
    pub raw_batch: usize,
    /// Record bytes of the raw baseline (the log's mean record on this workload).
    pub raw_record_bytes: usize,
    /// Raw baseline records per second, per repetition.
    pub raw_records_per_sec: Vec<f64>,
    /// Raw baseline MB/s, per repetition.
    pub raw_mb_per_sec: Vec<f64>,
    /// (name, value): the target ratios.
    pub targets: Vec<(String, f64)>,
    /// Records per `write_all` of the raw buffered append (no sync).
    pub buffered_batch: usize,
    /// Raw buffered append, framed and checksummed in the timed loop: records per second, per
    /// repetition (the floor of `fsync never`).
    pub raw_buffered_records_per_sec: Vec<f64>,
    /// Raw buffered append of ready bytes: records per second, per repetition.
    pub raw_buffered_bytes_records_per_sec: Vec<f64>,
    /// Every target with its bound, the measured value and the verdict.
    pub target_rows: Vec<TargetRow>,
}

/// What `--json` writes for a recovery run.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryReport {
    /// Shards of the bus.
    pub shards: usize,
    /// Topics written.
    pub topics: usize,
    /// Log bytes on disk.
    pub log_bytes: u64,
    /// Records written.
    pub records: u64,
    /// Records replayed by `build()`.
    pub replayed: u64,
    /// Seconds to write the log.
    pub write_s: f64,
    /// Seconds of the timed `build()`.
    pub build_s: f64,
    /// Records replayed per second.
    pub records_per_sec: f64,
    /// Log MB recovered per second.
    pub mb_per_sec: f64,
}

/// The text tables and the JSON reports of a measured session.
#[derive(Clone, Debug)]
pub struct SessionReport {
    /// What `shardbus bench` prints, line by line.
    pub text: String,
    /// One report per table.
    pub tables: Vec<TableReport>,
}

impl SessionReport {
    /// Whether every run verified (and, given a recovery, it replayed every record).
    pub fn all_exact(&self, recovery: Option<&RecoveryReport>) -> bool {
        self.tables.iter().all(|r| r.all_exact) && recovery.is_none_or(|r| r.replayed == r.records)
    }

    /// Writes the JSON: the table itself for one table and no recovery, else
    /// `{"recovery": …, "tables": […]}`.
    pub fn write_json(
        &self,
        path: &Path,
        recovery: Option<&RecoveryReport>,
    ) -> std::io::Result<()> {
        match (&self.tables[..], recovery) {
            ([one], None) => write_json(path, one),
            _ => write_json(
                path,
                &serde_json::json!({ "tables": self.tables, "recovery": recovery }),
            ),
        }
    }
}

/// How `shardbus bench` names a wait strategy (a strategy added later reads as its
/// `Debug` form would not be `'static`, so it is "other").
fn wait_name(wait: WaitStrategy) -> &'static str {
    match wait {
        WaitStrategy::BusySpin => "Spin",
        WaitStrategy::Yield => "Yield",
        WaitStrategy::Park => "Park",
        _ => "other",
    }
}

fn shardbus_run(w: &Workload, o: &RunOpts) -> Result<RunResult, Error> {
    runner::run(w, o)
}

fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

impl Session {
    /// Plans the tables: validates each payload's workload.
    pub fn new(config: SessionConfig) -> Result<Self, WorkloadError> {
        let opts = &config.opts;
        let fsyncs = match &config.persist {
            Some(p) if !p.fsyncs.is_empty() => p.fsyncs.clone(),
            _ => vec![Fsync::Batch],
        };
        let mut tables = Vec::new();
        for &payload in &config.payloads {
            let w = Workload {
                payload,
                ..config.workload.clone()
            };
            w.validate()?;
            let entry = |name: &str, run, workload: &Workload, opts: &RunOpts| Entry {
                name: name.to_owned(),
                run,
                workload: workload.clone(),
                opts: opts.clone(),
            };
            let mut entries = vec![entry("shardbus", shardbus_run, &w, opts)];
            if config.compare {
                entries.push(entry("seed", seed::run, &w, opts));
                entries.push(entry("crossbeam_router", crossbeam_router::run, &w, opts));
            }
            if config.floors {
                entries.push(entry("disruptor", disruptor::run, &w, opts));
            }
            // The SPSC floors take one producer; with more, only the disruptor runs.
            if config.floors && w.producers == 1 {
                entries.push(entry(
                    "floor/std_sync_channel",
                    floor::std_sync_channel,
                    &w,
                    opts,
                ));
                entries.push(entry(
                    "floor/crossbeam_bounded",
                    floor::crossbeam_bounded,
                    &w,
                    opts,
                ));
                entries.push(entry("floor/array_queue", floor::array_queue, &w, opts));
                entries.push(entry("floor/ring", floor::ring, &w, opts));
                entries.push(entry("floor/ring_batch 64", floor::ring_batch, &w, opts));
            }
            let mut raw = None;
            if let Some(p) = &config.persist {
                entries[0].name = "shardbus (memory)".to_owned();
                for &f in &fsyncs {
                    let o = RunOpts {
                        persist: Some(PersistOpts {
                            dir: p.dir.clone(),
                            fsync: f.policy(p.fsync_interval),
                        }),
                        ..opts.clone()
                    };
                    let fw = Workload {
                        messages: if f == Fsync::Always {
                            p.always_messages
                        } else {
                            w.messages
                        },
                        ..w.clone()
                    };
                    let name = if f == Fsync::Interval {
                        format!(
                            "shardbus fsync interval({}ms)",
                            p.fsync_interval.as_millis()
                        )
                    } else {
                        format!("shardbus fsync {}", f.name())
                    };
                    entries.push(entry(&name, shardbus_run, &fw, &o));
                }
                // The log's mean record size on this workload's topics.
                let record = w
                    .topic_names()
                    .iter()
                    .map(|t| persist::record_len(t, payload))
                    .sum::<usize>()
                    .div_ceil(w.topics);
                raw = Some((record, Vec::new()));
            }
            let series = entries.iter().map(|e| Series::new(&e.name)).collect();
            tables.push(Table {
                workload: w,
                entries,
                series,
                raw,
                buffered: [Vec::new(), Vec::new()],
            });
        }
        Ok(Self {
            config,
            fsyncs,
            tables,
        })
    }

    /// Steps [`Session::run`] reports to `progress` (for a progress bar's length).
    pub fn steps(&self) -> u64 {
        let per_rep: usize = self
            .tables
            .iter()
            .map(|t| t.entries.len() + 3 * usize::from(t.raw.is_some()))
            .sum();
        (self.config.reps * per_rep) as u64
    }

    /// Runs every repetition of every table, interleaved; calls `progress` before each step. A
    /// runner that fails keeps its error in its series and is not run again; a raw baseline that
    /// fails ends the session.
    pub fn run(&mut self, progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
        let persist = self.config.persist.as_ref();
        for _ in 0..self.config.reps {
            for t in &mut self.tables {
                for (e, s) in t.entries.iter().zip(&mut t.series) {
                    progress(&format!("{} {} B", e.name, e.workload.payload));
                    if s.error.is_none() {
                        match (e.run)(&e.workload, &e.opts) {
                            Ok(r) => s.runs.push(RunSummary::of(&e.workload, &r)),
                            Err(err) => s.error = Some(err.to_string()),
                        }
                    }
                }
                if let (Some((record, runs)), Some(p)) = (&mut t.raw, persist) {
                    progress(&format!("raw append+sync {} B", t.workload.payload));
                    runs.push(persist::raw_append(
                        &p.dir,
                        *record,
                        p.raw_batch,
                        t.workload.messages,
                    )?);
                    let topics = t.workload.topic_names();
                    for ((work, name), runs) in BUFFERED.iter().zip(&mut t.buffered) {
                        progress(&format!("{name} {} B", t.workload.payload));
                        runs.push(persist::raw_buffered_append(
                            &p.dir,
                            &topics,
                            t.workload.payload,
                            p.raw_batch,
                            t.workload.messages,
                            *work,
                        )?);
                    }
                }
            }
        }
        Ok(())
    }

    /// The text tables, headed by `command`, and the JSON reports of the measured session.
    pub fn report(&self, command: &str, machine: &Machine) -> SessionReport {
        let c = &self.config;
        let mut out = String::new();
        let mut tables = Vec::new();
        let _ = writeln!(out, "{command}");
        for t in &self.tables {
            let w = &t.workload;
            let _ = writeln!(
                out,
                "{} | {} cores | {} | fences {} | {} producer(s) -> {} shard(s), {} topics, {} B, {}, wait {}{}{}{}{}, {} msgs x {} runs",
                machine.date,
                machine.cores,
                machine.cpu,
                machine.fences,
                w.producers,
                c.opts.shards,
                w.topics,
                w.payload,
                WorkloadDesc::of(w).distribution,
                wait_name(c.opts.wait),
                if c.opts.batch > 0 { format!(", batch {}", c.opts.batch) } else { String::new() },
                if c.opts.by_name { ", by name" } else { "" },
                if c.opts.consume == Consume::Checksum { ", checksum-only consumers" } else { "" },
                if c.opts.capacity == RunOpts::default().capacity {
                    String::new()
                } else {
                    format!(", rings of {} slots", c.opts.capacity.next_power_of_two())
                },
                w.messages,
                c.reps,
            );
            if let Some(p) = &c.persist {
                if self.fsyncs.contains(&Fsync::Always) {
                    let _ = writeln!(out, "(fsync always: {} msgs per run)", p.always_messages);
                }
            }
            out.push_str(&series_table(&t.series));
            let ratios = if c.persist.is_some() {
                Vec::new()
            } else {
                ratios(&t.series)
            };
            for (peer, ratio) in &ratios {
                let _ = writeln!(out, "shardbus / {peer}: {ratio:.2}x");
            }
            let persist = match (&t.raw, &c.persist) {
                (Some((record, runs)), Some(p)) => {
                    Some(self.persist_rows(&mut out, t, *record, runs, p))
                }
                _ => None,
            };
            tables.push(TableReport {
                command: command.to_owned(),
                machine: machine.clone(),
                workload: WorkloadDesc::of(w),
                shards: c.opts.shards,
                wait: wait_name(c.opts.wait).to_lowercase(),
                batch: c.opts.batch,
                reps: c.reps,
                by_name: c.opts.by_name,
                consume: c.opts.consume,
                series: t.series.clone(),
                ratios,
                all_exact: t.series.iter().all(|s| s.error.is_none() && s.all_exact()),
                persist,
            });
        }
        SessionReport { text: out, tables }
    }

    /// Recovery speed (see [`persist::recovery`]): about `gib` GiB of log under the persistence
    /// directory, with the session's shards and topics. Returns the line `shardbus bench`
    /// prints and the report; `None` without persistence.
    pub fn recovery(&self, gib: f64) -> Option<Result<(String, RecoveryReport), Error>> {
        let p = self.config.persist.as_ref()?;
        let (shards, topics) = (self.config.opts.shards, self.config.workload.topics);
        let bytes = (gib * (1u64 << 30) as f64) as u64;
        Some(persist::recovery(&p.dir, bytes, shards, topics).map(|r| {
            let line = format!(
                "recovery: {} shard(s), {} topics, 256 B payloads: {:.1} MB of log, {} records written in {:.2} s (fsync never); build() replayed {} in {:.2} s: {:.3} M records/s, {:.0} MB/s",
                shards,
                topics,
                r.log_bytes as f64 / 1e6,
                r.records,
                r.write.as_secs_f64(),
                r.replayed,
                r.build.as_secs_f64(),
                r.records_per_sec() / 1e6,
                r.mb_per_sec(),
            );
            let report = RecoveryReport {
                shards,
                topics,
                log_bytes: r.log_bytes,
                records: r.records,
                replayed: r.replayed,
                write_s: r.write.as_secs_f64(),
                build_s: r.build.as_secs_f64(),
                records_per_sec: r.records_per_sec(),
                mb_per_sec: r.mb_per_sec(),
            };
            (line, report)
        }))
    }
}
