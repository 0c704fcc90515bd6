//! `shardbus bench`: publish → handle throughput and latency of shardbus, optionally beside the
//! seed baseline and the crossbeam router on the same workload in the same run; every message is
//! verified (exactly once, per-(producer, topic) order) and the exit status says whether all were.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use shardbus::log::FsyncPolicy;
use shardbus::WaitStrategy;
use shardbus_bench::persist::{self, PersistOpts, RawResult};
use shardbus_bench::report::{self, median, Machine, RunSummary, Series};
use shardbus_bench::suite::{self, WorkloadDesc};
use shardbus_bench::{
    crossbeam_router, runner, seed, Distribution, Error, RunOpts, RunResult, Workload,
};

/// Topic popularity.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Dist {
    /// Every topic equally likely.
    Uniform,
    /// Zipf with exponent `--zipf-exponent` (default 1.0): topic 0 hottest.
    Zipf,
}

/// How idle shards wait.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Wait {
    /// Busy-spin.
    Spin,
    /// Spin, then yield.
    Yield,
    /// Spin, yield, then park (shardbus's default).
    Park,
}

/// When the persistent log syncs to disk (for `--persist`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    /// Never: the OS flushes when it likes.
    Never,
    /// After each batch a shard writes (group commit; the library's default).
    Batch,
    /// On a timer: every --fsync-interval-ms.
    Interval,
    /// After every record.
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

/// The persistence options: with `--persist`, the table has the memory-only bus, one
/// persistent bus per `--fsync` policy, and the raw append+sync baseline (the physical limit),
/// all interleaved; `--recovery-gib` adds the recovery-speed run.
#[derive(clap::Args, Debug)]
pub struct PersistArgs {
    /// Also run persistent buses, each in a fresh directory under DIR (removed after each run).
    /// Use a directory on the disk you mean to measure (not a tmpfs).
    #[arg(long, value_name = "DIR")]
    pub persist: Option<PathBuf>,
    /// Fsync policies to run with --persist, comma-separated (default: batch).
    #[arg(long, value_enum, value_delimiter = ',', requires = "persist")]
    pub fsync: Vec<Fsync>,
    /// The period of `--fsync interval`, in milliseconds.
    #[arg(long, default_value_t = 10, requires = "persist")]
    pub fsync_interval_ms: u64,
    /// Messages per run of `--fsync always` (one fsync per message: far slower than the rest).
    #[arg(long, default_value_t = 20_000, requires = "persist")]
    pub always_messages: u64,
    /// Records per `sync_data` of the raw append+sync baseline: the most a shard writes per
    /// group commit.
    #[arg(long, default_value_t = shardbus_bench::persist::SHARD_BATCH, requires = "persist")]
    pub raw_batch: usize,
    /// After the table, write a log of this many GiB (256 B payloads, fsync never) and time
    /// the `build()` that replays it (records replayed per second); 0 = skip.
    #[arg(long, default_value_t = 0.0, requires = "persist")]
    pub recovery_gib: f64,
}

/// Arguments of `shardbus bench`. The defaults run about 10 s on a 2-core machine.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shards of the bus (and shard threads of the crossbeam router with --compare).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Producer threads, each with its own `Publisher`.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Topics (`topic-0` …), one subscribed actor each.
    #[arg(long, default_value_t = 64)]
    pub topics: usize,
    /// Messages per run, over all producers.
    #[arg(long, default_value_t = 20_000_000)]
    pub messages: u64,
    /// Payload bytes per message: 16 or 256; several (comma-separated) give one table each,
    /// their repetitions interleaved.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub payload: Vec<usize>,
    /// Topic popularity.
    #[arg(long, value_enum, default_value = "uniform")]
    pub distribution: Dist,
    /// Exponent of --distribution zipf.
    #[arg(long, default_value_t = 1.0)]
    pub zipf_exponent: f64,
    /// How idle shards wait.
    #[arg(long, value_enum, default_value = "park")]
    pub wait: Wait,
    /// Publish in batches of up to N per topic (`Publisher::publish_batch`); 0 = one by one.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// Repetitions per runner (interleaved); the table shows the median and the range.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Seed of the topic streams.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also run the seed baseline and the crossbeam router on the same workload and print the
    /// ratios.
    #[arg(long)]
    pub compare: bool,
    /// Write everything measured as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Run the reference suite of docs/benchmarks.md instead (every issue-4 target beside the
    /// peers; several minutes); use with --json.
    #[arg(long, conflicts_with = "charts")]
    pub suite: bool,
    /// Scale the suite's message and round counts (1.0 = the documented run).
    #[arg(long, default_value_t = 1.0, requires = "suite")]
    pub suite_scale: f64,
    /// Draw the two SVG charts of docs/benchmarks.md from a suite JSON file, into --out.
    #[arg(long, value_name = "SUITE_JSON")]
    pub charts: Option<PathBuf>,
    /// Directory for --charts.
    #[arg(long, value_name = "DIR", default_value = "docs")]
    pub out: PathBuf,
    #[command(flatten)]
    pub persist: PersistArgs,
}

/// What `--json` writes for a workload run.
#[derive(Serialize)]
struct Report<'a> {
    command: String,
    machine: Machine,
    workload: WorkloadDesc,
    shards: usize,
    wait: String,
    batch: usize,
    reps: usize,
    series: &'a [Series],
    /// shardbus median rate / peer median rate.
    ratios: Vec<(String, f64)>,
    all_exact: bool,
    /// With `--persist`: the raw baseline and the target ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    persist: Option<PersistReport>,
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
}

/// What `--json` writes about the persistence rows of a table.
#[derive(Serialize)]
struct PersistReport {
    fsync_interval_ms: u64,
    raw_batch: usize,
    raw_record_bytes: usize,
    raw_records_per_sec: Vec<f64>,
    raw_mb_per_sec: Vec<f64>,
    /// (name, value): the issue-5 target ratios.
    targets: Vec<(String, f64)>,
}

/// What `--json` writes for a recovery run.
#[derive(Serialize)]
struct RecoveryReport {
    shards: usize,
    topics: usize,
    log_bytes: u64,
    records: u64,
    replayed: u64,
    write_s: f64,
    build_s: f64,
    records_per_sec: f64,
    mb_per_sec: f64,
}

/// Runs `shardbus bench`.
pub fn run(args: Args) -> ExitCode {
    if let Some(path) = &args.charts {
        return match report::write_from_suite(path, &args.out) {
            Ok(files) => {
                for f in files {
                    println!("wrote {}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shardbus bench --charts: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.reps == 0 {
        eprintln!("shardbus bench: --reps must be at least 1");
        return ExitCode::from(2);
    }
    if args.suite {
        return run_suite(&args);
    }
    let wait = match args.wait {
        Wait::Spin => WaitStrategy::BusySpin,
        Wait::Yield => WaitStrategy::Yield,
        Wait::Park => WaitStrategy::Park,
    };
    let opts = RunOpts {
        shards: args.shards,
        wait,
        batch: args.batch,
        ..RunOpts::default()
    };
    let p = &args.persist;
    let interval = Duration::from_millis(p.fsync_interval_ms);
    let fsyncs = if p.fsync.is_empty() {
        vec![Fsync::Batch]
    } else {
        p.fsync.clone()
    };
    let mut tables = Vec::new();
    for &payload in &args.payload {
        let w = Workload {
            producers: args.producers,
            topics: args.topics,
            messages: args.messages,
            payload,
            distribution: match args.distribution {
                Dist::Uniform => Distribution::Uniform,
                Dist::Zipf => Distribution::Zipf(args.zipf_exponent),
            },
            seed: args.seed,
        };
        if let Err(e) = w.validate() {
            eprintln!("shardbus bench: {e}");
            return ExitCode::from(2);
        }
        let entry = |name: &str, run, workload: &Workload, opts: &RunOpts| Entry {
            name: name.to_owned(),
            run,
            workload: workload.clone(),
            opts: opts.clone(),
        };
        let mut entries = vec![entry("shardbus", shardbus_run, &w, &opts)];
        if args.compare {
            entries.push(entry("seed", seed::run, &w, &opts));
            entries.push(entry("crossbeam_router", crossbeam_router::run, &w, &opts));
        }
        let mut raw = None;
        if let Some(dir) = &p.persist {
            entries[0].name = "shardbus (memory)".to_owned();
            for &f in &fsyncs {
                let o = RunOpts {
                    persist: Some(PersistOpts {
                        dir: dir.clone(),
                        fsync: f.policy(interval),
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
                    format!("shardbus fsync interval({}ms)", p.fsync_interval_ms)
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
        });
    }
    let steps: usize = tables
        .iter()
        .map(|t| t.entries.len() + usize::from(t.raw.is_some()))
        .sum();
    let bar = progress_bar((args.reps * steps) as u64);
    for _ in 0..args.reps {
        for t in &mut tables {
            for (e, s) in t.entries.iter().zip(&mut t.series) {
                bar.set_message(format!("{} {} B", e.name, e.workload.payload));
                if s.error.is_none() {
                    match (e.run)(&e.workload, &e.opts) {
                        Ok(r) => s.runs.push(RunSummary::of(&e.workload, &r)),
                        Err(err) => s.error = Some(err.to_string()),
                    }
                }
                bar.inc(1);
            }
            if let (Some((record, runs)), Some(dir)) = (&mut t.raw, &p.persist) {
                bar.set_message(format!("raw append+sync {} B", t.workload.payload));
                match persist::raw_append(dir, *record, p.raw_batch, t.workload.messages) {
                    Ok(r) => runs.push(r),
                    Err(e) => {
                        bar.finish_and_clear();
                        eprintln!("shardbus bench: raw append+sync: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();

    let machine = Machine::detect();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    println!("{command}");
    let mut reports = Vec::new();
    for t in &tables {
        let w = &t.workload;
        println!(
            "{} | {} cores | {} | fences {} | {} producer(s) -> {} shard(s), {} topics, {} B, {}, wait {:?}{}, {} msgs x {} runs",
            machine.date,
            machine.cores,
            machine.cpu,
            machine.fences,
            w.producers,
            opts.shards,
            w.topics,
            w.payload,
            WorkloadDesc::of(w).distribution,
            args.wait,
            if args.batch > 0 { format!(", batch {}", args.batch) } else { String::new() },
            w.messages,
            args.reps,
        );
        if p.persist.is_some() && fsyncs.contains(&Fsync::Always) {
            println!("(fsync always: {} msgs per run)", p.always_messages);
        }
        print_table(&t.series);
        let ratios = if p.persist.is_some() {
            Vec::new()
        } else {
            ratios(&t.series)
        };
        for (peer, ratio) in &ratios {
            println!("shardbus / {peer}: {ratio:.2}x");
        }
        let persist_report = t.raw.as_ref().map(|(record, runs)| {
            let rps: Vec<f64> = runs.iter().map(RawResult::records_per_sec).collect();
            let mbps: Vec<f64> = runs.iter().map(RawResult::mb_per_sec).collect();
            let us: Vec<f64> = runs.iter().map(RawResult::us_per_batch).collect();
            let (lo, hi) = min_max(&rps);
            let raw_rate = median(&rps).unwrap_or(f64::NAN);
            println!(
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
            let mut targets = Vec::new();
            if let Some(memory) = rate("shardbus (memory)") {
                for s in &t.series[1..] {
                    if let Some(m) = s.median() {
                        println!(
                            "{:<32} / memory {:>6.1}%   / raw append+sync {:>7.1}%",
                            s.name,
                            100.0 * m.msgs_per_sec / memory,
                            100.0 * m.msgs_per_sec / raw_rate
                        );
                    }
                }
                if let Some(batch) = rate("shardbus fsync batch") {
                    let r = batch / raw_rate;
                    println!(
                        "target: fsync batch >= 70% of raw append+sync: {:.1}% {}",
                        100.0 * r,
                        if r >= 0.7 { "MET" } else { "MISSED" }
                    );
                    targets.push(("batch / raw append+sync".to_owned(), r));
                }
                if let Some(never) = rate("shardbus fsync never") {
                    let r = never / memory;
                    println!(
                        "target ({} B; the issue sets it at 256 B): fsync never >= 50% of memory-only: {:.1}% {}",
                        w.payload,
                        100.0 * r,
                        if r >= 0.5 { "MET" } else { "MISSED" }
                    );
                    targets.push(("never / memory".to_owned(), r));
                }
            }
            PersistReport {
                fsync_interval_ms: p.fsync_interval_ms,
                raw_batch: p.raw_batch,
                raw_record_bytes: *record,
                raw_records_per_sec: rps,
                raw_mb_per_sec: mbps,
                targets,
            }
        });
        reports.push(Report {
            command: command.clone(),
            machine: machine.clone(),
            workload: WorkloadDesc::of(w),
            shards: opts.shards,
            wait: format!("{:?}", args.wait).to_lowercase(),
            batch: args.batch,
            reps: args.reps,
            series: &t.series,
            ratios,
            all_exact: t.series.iter().all(|s| s.error.is_none() && s.all_exact()),
            persist: persist_report,
        });
    }
    let mut recovery = None;
    if let (Some(dir), true) = (&p.persist, p.recovery_gib > 0.0) {
        let bytes = (p.recovery_gib * (1u64 << 30) as f64) as u64;
        eprintln!("recovery: writing {:.2} GiB of log ...", p.recovery_gib);
        match persist::recovery(dir, bytes, args.shards, args.topics) {
            Ok(r) => {
                println!(
                    "recovery: {} shard(s), {} topics, 256 B payloads: {:.1} MB of log, {} records written in {:.2} s (fsync never); build() replayed {} in {:.2} s: {:.3} M records/s, {:.0} MB/s",
                    args.shards,
                    args.topics,
                    r.log_bytes as f64 / 1e6,
                    r.records,
                    r.write.as_secs_f64(),
                    r.replayed,
                    r.build.as_secs_f64(),
                    r.records_per_sec() / 1e6,
                    r.mb_per_sec(),
                );
                recovery = Some(RecoveryReport {
                    shards: args.shards,
                    topics: args.topics,
                    log_bytes: r.log_bytes,
                    records: r.records,
                    replayed: r.replayed,
                    write_s: r.write.as_secs_f64(),
                    build_s: r.build.as_secs_f64(),
                    records_per_sec: r.records_per_sec(),
                    mb_per_sec: r.mb_per_sec(),
                });
            }
            Err(e) => {
                eprintln!("shardbus bench: recovery: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let all_exact = reports.iter().all(|r| r.all_exact)
        && recovery.as_ref().map_or(true, |r| r.replayed == r.records);
    if let Some(path) = &args.json {
        let written = match (&reports[..], &recovery) {
            ([one], None) => write_json(path, one),
            _ => write_json(
                path,
                &serde_json::json!({ "tables": reports, "recovery": recovery }),
            ),
        };
        if let Err(e) = written {
            eprintln!("shardbus bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    verdict(all_exact)
}

fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn shardbus_run(w: &Workload, o: &RunOpts) -> Result<RunResult, Error> {
    runner::run(w, o)
}

fn verdict(all_exact: bool) -> ExitCode {
    if all_exact {
        println!("verified: every message exactly once, in per-topic order");
        ExitCode::SUCCESS
    } else {
        eprintln!("VERIFICATION FAILED: see the table (dup/miss/order/unexp columns)");
        ExitCode::FAILURE
    }
}

fn write_json(path: &std::path::Path, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

fn print_table(series: &[Series]) {
    println!(
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
            println!(
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
        println!(
            "{:<30} {:>10.3} {:>21} {:>8.1} {:>8} {:>8} {:>9} {:>10}  {:<18} {:?}",
            s.name,
            m.msgs_per_sec / 1e6,
            format!("({:.3}–{:.3})", lo / 1e6, hi / 1e6),
            m.payload_mb_per_sec,
            m.latency.p50,
            m.latency.p99,
            m.latency.p999,
            m.latency.max,
            format!("{dup}/{miss}/{ord}/{unexp}"),
            m.per_thread_handled,
        );
    }
}

fn ratios(series: &[Series]) -> Vec<(String, f64)> {
    let Some(ours) = series.first().and_then(Series::median) else {
        return Vec::new();
    };
    series[1..]
        .iter()
        .filter_map(|s| Some((s.name.clone(), ours.msgs_per_sec / s.median()?.msgs_per_sec)))
        .collect()
}

fn run_suite(args: &Args) -> ExitCode {
    let bar = progress_bar(suite::steps(args.reps));
    let report = suite::run(args.reps, args.suite_scale, &mut |step| {
        bar.set_message(step.to_owned());
        bar.inc(1);
    });
    bar.finish_and_clear();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    println!("{command}");
    println!(
        "{} | {} cores | {} | fences {} | {} runs each, interleaved",
        report.machine.date,
        report.machine.cores,
        report.machine.cpu,
        report.machine.fences,
        report.reps
    );
    for g in &report.groups {
        println!("== {} ({} msgs)", g.title, g.workload.messages);
        print_table(&g.series);
        for (peer, ratio) in ratios(&g.series) {
            println!("{} / {peer}: {ratio:.2}x", g.series[0].name);
        }
    }
    println!("== closed loop (64 actors, 256 tokens in flight)");
    for p in &report.scaling {
        println!(
            "{} shard(s), work {:>3}: {:.3} M msgs/s (runs {:?}), per shard {:?}, exact {}",
            p.shards,
            p.work,
            suite::scaling_median(p) / 1e6,
            p.msgs_per_sec
                .iter()
                .map(|r| format!("{:.3}", r / 1e6))
                .collect::<Vec<_>>(),
            p.per_shard_handled,
            p.exact
        );
    }
    println!(
        "host compute scaling, 2 threads / 1: {:?}",
        report
            .cpu_scaling
            .iter()
            .map(|x| format!("{x:.2}x"))
            .collect::<Vec<_>>()
    );
    println!("== latency (ns; RTT/2 unless one-way)");
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
        println!(
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
    if let Some(path) = &args.json {
        if let Err(e) = write_json(path, &report) {
            eprintln!("shardbus bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    verdict(report.all_exact())
}
