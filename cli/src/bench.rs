//! `shardbus bench`: publish → handle throughput and latency of shardbus, optionally beside the
//! seed baseline and the crossbeam router on the same workload in the same run; every message is
//! verified (exactly once, per-(producer, topic) order) and the exit status says whether all were.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use shardbus::WaitStrategy;
use shardbus_cli::suite::{self, WorkloadDesc};
use shardbus_cli::summary::{Machine, RunSummary, Series};
use shardbus_cli::{
    chart, crossbeam_router, seed, shardbus_runner, Distribution, Error, RunOpts, RunResult,
    Workload,
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

/// When the persistent log syncs to disk (for `--persist`; not available yet).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Fsync {
    /// Never: the OS flushes when it likes.
    Never,
    /// After each batch a shard writes.
    Batch,
    /// On a timer.
    Interval,
    /// After every record.
    Always,
}

/// The persistence options. Reserved for the persistence issue: the flags parse, and asking
/// for them reports that this build has no persistent log yet.
#[derive(clap::Args, Debug)]
pub struct PersistArgs {
    /// Persist every message to a log in DIR (not available yet).
    #[arg(long, value_name = "DIR")]
    pub persist: Option<PathBuf>,
    /// When the log syncs to disk (with --persist; not available yet).
    #[arg(long, value_enum, requires = "persist")]
    pub fsync: Option<Fsync>,
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
    /// Payload bytes per message: 16 or 256.
    #[arg(long, default_value_t = 16)]
    pub payload: usize,
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
}

type Runner = fn(&Workload, &RunOpts) -> Result<RunResult, Error>;

fn shardbus_run(w: &Workload, o: &RunOpts) -> Result<RunResult, Error> {
    shardbus_runner::run(w, o)
}

/// Runs `shardbus bench`.
pub fn run(args: Args) -> ExitCode {
    if args.persist.persist.is_some() {
        eprintln!(
            "shardbus bench: --persist/--fsync are reserved for the persistent log, which this \
             build does not have yet"
        );
        return ExitCode::from(2);
    }
    if let Some(path) = &args.charts {
        return match chart::write_from_suite(path, &args.out) {
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
    let w = Workload {
        producers: args.producers,
        topics: args.topics,
        messages: args.messages,
        payload: args.payload,
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
    let mut runners: Vec<(&str, Runner)> = vec![("shardbus", shardbus_run)];
    if args.compare {
        runners.push(("seed", seed::run));
        runners.push(("crossbeam_router", crossbeam_router::run));
    }
    let bar = progress_bar((args.reps * runners.len()) as u64);
    let mut series: Vec<Series> = runners.iter().map(|(n, _)| Series::new(*n)).collect();
    for _ in 0..args.reps {
        for ((name, run), s) in runners.iter().zip(&mut series) {
            bar.set_message(*name);
            if s.error.is_none() {
                match run(&w, &opts) {
                    Ok(r) => s.runs.push(RunSummary::of(&w, &r)),
                    Err(e) => s.error = Some(e.to_string()),
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let machine = Machine::detect();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    println!("{command}");
    println!(
        "{} | {} cores | {} | {} producer(s) -> {} shard(s), {} topics, {} B, {}, wait {:?}{}, {} msgs x {} runs",
        machine.date,
        machine.cores,
        machine.cpu,
        w.producers,
        opts.shards,
        w.topics,
        w.payload,
        WorkloadDesc::of(&w).distribution,
        args.wait,
        if args.batch > 0 { format!(", batch {}", args.batch) } else { String::new() },
        w.messages,
        args.reps,
    );
    print_table(&series);
    let ratios = ratios(&series);
    for (peer, ratio) in &ratios {
        println!("shardbus / {peer}: {ratio:.2}x");
    }
    let all_exact = series.iter().all(|s| s.error.is_none() && s.all_exact());
    if let Some(path) = &args.json {
        let report = Report {
            command,
            machine,
            workload: WorkloadDesc::of(&w),
            shards: opts.shards,
            wait: format!("{:?}", args.wait).to_lowercase(),
            batch: args.batch,
            reps: args.reps,
            series: &series,
            ratios,
            all_exact,
        };
        if let Err(e) = write_json(path, &report) {
            eprintln!("shardbus bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    verdict(all_exact)
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
        "{:<26} {:>10} {:>21} {:>8} {:>8} {:>8} {:>9} {:>10}  {:<13} per-thread handled",
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
                "{:<26} n/a: {}",
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
            "{:<26} {:>10.3} {:>21} {:>8.1} {:>8} {:>8} {:>9} {:>10}  {:<18} {:?}",
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
        "{} | {} cores | {} | {} runs each, interleaved",
        report.machine.date, report.machine.cores, report.machine.cpu, report.reps
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
