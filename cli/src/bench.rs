//! `shardbus bench`: publish → handle throughput and latency of shardbus, optionally beside the
//! seed baseline and the crossbeam router on the same workload in the same run; every message is
//! verified (exactly once, per-(producer, topic) order) and the exit status says whether all were.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use shardbus::WaitStrategy;
use shardbus_bench::report::{self, suite_text, write_json, Machine};
use shardbus_bench::session::{self, PersistConfig, Session, SessionConfig};
use shardbus_bench::{suite, Consume, Distribution, RunOpts, Workload};

use crate::{check, command, fail};

mod nats;

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

/// How a shardbus bus orders a publisher's push with a shard's park and a lane's close
/// (`shardbus::Fences`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FencesArg {
    /// `membarrier` where the kernel offers it, SeqCst fences where not.
    Auto,
    /// A compiler fence per push, `membarrier(2)` on the rare side.
    Membarrier,
    /// A SeqCst fence on both sides (shardbus's default).
    Seqcst,
}

/// What every runner's consumer does with each message.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ConsumeMode {
    /// The exactly-once checker: every message once, in per-(producer, topic) order, with
    /// sampled latency.
    Verify,
    /// Only a count and a checksum, compared with the plan's at the end (a wrong count or sum
    /// fails the run): what each runtime costs by itself.
    Checksum,
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

/// The persistence options: with `--persist`, the table has the memory-only bus, one
/// persistent bus per `--fsync` policy, and the raw append+sync baseline (the physical limit),
/// all interleaved; `--recovery-gib` adds the recovery-speed run.
#[derive(clap::Args, Debug)]
pub struct PersistArgs {
    /// Also run persistent buses, each in a fresh directory under DIR (removed after each run);
    /// DIR defaults to target/bench-data, relative to the working directory. Use a directory on
    /// the disk you mean to measure (not a tmpfs).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "target/bench-data")]
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
    /// The shardbus bus's fences (the machine line prints what the bus gets).
    #[arg(long, value_enum, default_value = "seqcst")]
    pub fences: FencesArg,
    /// Publish in batches of up to N per topic (`Publisher::publish_batch`); 0 = one by one.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// Slots of every ring: each shard's intake ring and each publisher's lane
    /// (`Builder::capacity`; rounded up to a power of two), and the peers' and floors' rings.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=(1 << 24)))]
    pub capacity: u32,
    /// Publish by topic name (`publish("topic-3", msg)`) instead of through `Topic` handles.
    #[arg(long)]
    pub by_name: bool,
    /// What every runner's consumer does with each message: the exactly-once checker, or only a
    /// count and a checksum (no latency columns).
    #[arg(long, value_enum, default_value = "verify")]
    pub consume: ConsumeMode,
    /// Also run the disruptor on the same workload and, with one producer, the raw hand-off
    /// floors: the SPSC ring (single and batch publish), std `sync_channel`, crossbeam
    /// `bounded` and `ArrayQueue`.
    #[arg(long)]
    pub floors: bool,
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
    /// Run the reference suite of docs/benchmarks.md instead (every performance target's
    /// configuration beside the peers; several minutes); use with --json.
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
    #[command(flatten)]
    pub nats: nats::NatsArgs,
    /// Install a Prometheus recorder (no HTTP listener) before the runs, so that every bus's
    /// shards export to it, and print its text format to stderr at the end.
    #[cfg(feature = "metrics")]
    #[arg(long)]
    pub prometheus: bool,
}

/// Runs `shardbus bench`.
pub fn run(args: Args) -> ExitCode {
    #[cfg(feature = "metrics")]
    let prometheus = match args.prometheus {
        true => match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => return fail(format_args!("shardbus bench --prometheus: {e}"), 1),
        },
        false => None,
    };
    let code = match try_run(&args) {
        Ok(code) | Err(code) => code,
    };
    #[cfg(feature = "metrics")]
    if let Some(handle) = prometheus {
        eprintln!("{}", handle.render());
    }
    code
}

fn try_run(args: &Args) -> Result<ExitCode, ExitCode> {
    if let Some(path) = &args.charts {
        let files = check(
            report::write_from_suite(path, &args.out),
            "bench --charts",
            1,
        )?;
        files.iter().for_each(|f| println!("wrote {}", f.display()));
        return Ok(ExitCode::SUCCESS);
    }
    if args.reps == 0 {
        return Err(fail("shardbus bench: --reps must be at least 1", 2));
    }
    if let Some(url) = &args.nats.nats {
        let exact = check(
            nats::run(&args.nats, url, &args.payload, args.reps),
            "bench --nats",
            1,
        )?;
        return Ok(verdict(exact));
    }
    if args.suite {
        let dir = args
            .persist
            .persist
            .clone()
            .unwrap_or_else(|| PathBuf::from("target/bench-data"));
        let report = with_progress(suite::steps(args.reps, true), |progress| {
            suite::run(args.reps, args.suite_scale, Some(&dir), progress)
        });
        print!("{}", suite_text(&report, &command()));
        if let Some(path) = &args.json {
            check(write_json(path, &report), &cannot_write(path), 1)?;
        }
        return Ok(verdict(report.all_exact()));
    }
    let mut session = check(Session::new(session_config(args)), "bench", 2)?;
    let measured = with_progress(session.steps(), |progress| session.run(progress));
    check(measured, "bench: raw append+sync", 1)?;
    let mut machine = Machine::detect();
    machine.fences = shardbus::__fence_mode_for(fences(args.fences)).to_owned();
    let report = session.report(&command(), &machine);
    print!("{}", report.text);
    let (gib, mut recovery) = (args.persist.recovery_gib, None);
    if gib > 0.0 {
        eprintln!("recovery: writing {gib:.2} GiB of log ...");
        if let Some(measured) = session.recovery(gib) {
            let (line, r) = check(measured, "bench: recovery", 1)?;
            println!("{line}");
            recovery = Some(r);
        }
    }
    if let Some(path) = &args.json {
        check(
            report.write_json(path, recovery.as_ref()),
            &cannot_write(path),
            1,
        )?;
    }
    Ok(verdict(report.all_exact(recovery.as_ref())))
}

fn fences(f: FencesArg) -> shardbus::Fences {
    match f {
        FencesArg::Auto => shardbus::Fences::Auto,
        FencesArg::Membarrier => shardbus::Fences::Membarrier,
        FencesArg::Seqcst => shardbus::Fences::SeqCst,
    }
}

fn session_config(args: &Args) -> SessionConfig {
    let p = &args.persist;
    let wait = match args.wait {
        Wait::Spin => WaitStrategy::BusySpin,
        Wait::Yield => WaitStrategy::Yield,
        Wait::Park => WaitStrategy::Park,
    };
    let distribution = match args.distribution {
        Dist::Uniform => Distribution::Uniform,
        Dist::Zipf => Distribution::Zipf(args.zipf_exponent),
    };
    let fsync = |f: &Fsync| match f {
        Fsync::Never => session::Fsync::Never,
        Fsync::Batch => session::Fsync::Batch,
        Fsync::Interval => session::Fsync::Interval,
        Fsync::Always => session::Fsync::Always,
    };
    SessionConfig {
        workload: Workload {
            producers: args.producers,
            topics: args.topics,
            messages: args.messages,
            payload: 0,
            distribution,
            seed: args.seed,
        },
        payloads: args.payload.clone(),
        opts: RunOpts {
            shards: args.shards,
            wait,
            batch: args.batch,
            capacity: args.capacity as usize,
            by_name: args.by_name,
            fences: fences(args.fences),
            consume: match args.consume {
                ConsumeMode::Verify => Consume::Verify,
                ConsumeMode::Checksum => Consume::Checksum,
            },
            ..RunOpts::default()
        },
        reps: args.reps,
        compare: args.compare,
        floors: args.floors,
        persist: p.persist.as_ref().map(|dir| PersistConfig {
            dir: dir.clone(),
            fsyncs: p.fsync.iter().map(fsync).collect(),
            fsync_interval: Duration::from_millis(p.fsync_interval_ms),
            always_messages: p.always_messages,
            raw_batch: p.raw_batch,
        }),
    }
}

/// Runs `f` under a progress bar of `steps` steps on stderr, cleared when `f` returns.
fn with_progress<T>(steps: u64, f: impl FnOnce(&mut dyn FnMut(&str)) -> T) -> T {
    let bar = ProgressBar::new(steps);
    let template = "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}";
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let out = f(&mut |step| {
        bar.set_message(step.to_owned());
        bar.inc(1);
    });
    bar.finish_and_clear();
    out
}

fn cannot_write(path: &Path) -> String {
    format!("bench: cannot write {}", path.display())
}

fn verdict(all_exact: bool) -> ExitCode {
    if all_exact {
        println!(
            "verified: every message exactly once, in per-topic order (checksum rows: every count and sum)"
        );
        ExitCode::SUCCESS
    } else {
        fail(
            "VERIFICATION FAILED: see the table (dup/miss/order/unexp columns; SUM for a checksum)",
            1,
        )
    }
}
