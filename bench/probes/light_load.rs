//! The light-load probe: publisher → actor ping-pong, one message every interval, parking
//! shards (two; the actor's is shard 0, the other idles), in each fence mode side by side.
//! Prints one table: per fence mode and interval, the median over the repetitions of the
//! round trip / 2 (p50, p99, p99.9) and of the serving shard's CPU (CPU time / wall time),
//! with the idle shard's CPU, and the p50 of one leg (publish → handler entry); then the
//! same for a crossbeam-channel consumer (a thread blocked in `recv` on a `bounded` channel,
//! making the actor's clock read and record, answering through the same atomic), run
//! interleaved with the bus, and the ratios of the bus's serving-shard CPU and p50s to it.
//! Each run's leg deciles go to stderr with its progress line.
//!
//! `cargo run --release -p shardbus-bench --example light_load -- [--fences auto,membarrier,seqcst]
//! [--intervals 10us,100us,1ms] [--seconds 2] [--reps 3]`
//!
//! Each run lasts about `--seconds` (after a tenth more of warm-up); the repetitions
//! interleave the modes and intervals, so that a drift of the machine spreads over all of
//! them. Run it on a quiet machine: it measures time.

use std::time::Duration;

use shardbus::{Fences, WaitStrategy};
use shardbus_bench::runner::{crossbeam_ping_pong, ping_pong};
use shardbus_bench::RunOpts;

struct Args {
    fences: Vec<Fences>,
    intervals: Vec<Duration>,
    seconds: f64,
    reps: usize,
}

fn usage(why: &str) -> ! {
    eprintln!(
        "light_load: {why}\nusage: light_load [--fences auto,membarrier,seqcst] \
         [--intervals 10us,100us,1ms] [--seconds 2] [--reps 3]"
    );
    std::process::exit(2)
}

fn parse_fences(list: &str) -> Vec<Fences> {
    list.split(',')
        .map(|f| match f.trim() {
            "auto" => Fences::Auto,
            "membarrier" => Fences::Membarrier,
            "seqcst" => Fences::SeqCst,
            other => usage(&format!("unknown fence mode {other:?}")),
        })
        .collect()
}

fn parse_interval(text: &str) -> Duration {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .unwrap_or_else(|_| usage(&format!("bad interval {text:?}")));
    match unit {
        "ns" => Duration::from_nanos(n),
        "us" | "µs" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        _ => usage(&format!("bad interval unit in {text:?} (ns, us, ms)")),
    }
}

fn args() -> Args {
    let mut args = Args {
        fences: vec![Fences::Auto, Fences::Membarrier, Fences::SeqCst],
        intervals: vec![
            Duration::from_micros(10),
            Duration::from_micros(100),
            Duration::from_millis(1),
        ],
        seconds: 2.0,
        reps: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--fences" => args.fences = parse_fences(&value),
            "--intervals" => args.intervals = value.split(',').map(parse_interval).collect(),
            "--seconds" => {
                args.seconds = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0)
                    .unwrap_or_else(|| usage("--seconds takes a positive number"))
            }
            "--reps" => {
                args.reps = value
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .unwrap_or_else(|| usage("--reps takes a positive integer"))
            }
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if args.intervals.iter().any(Duration::is_zero) {
        usage("intervals must be positive");
    }
    args
}

/// One cell's repetitions.
#[derive(Default)]
struct Cell {
    got: Option<&'static str>,
    p50: Vec<u64>,
    p99: Vec<u64>,
    p999: Vec<u64>,
    /// Publish (send) → handler entry (`recv` returned), p50.
    leg50: Vec<u64>,
    serving_cpu: Vec<f64>,
    idle_cpu: Vec<f64>,
    error: Option<String>,
}

fn median<T: Copy + PartialOrd>(values: &[T]) -> Option<T> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied()
}

/// The 10th to 90th percentiles of a run's legs: at light load they are two populations
/// (the consumer still polling when the message lands, or parked), and the p50 falls where
/// the two meet.
fn deciles(h: &hdrhistogram::Histogram<u64>) -> [u64; 9] {
    std::array::from_fn(|i| h.value_at_quantile((i + 1) as f64 / 10.0))
}

fn name(f: Fences) -> &'static str {
    match f {
        Fences::Auto => "auto",
        Fences::Membarrier => "membarrier",
        Fences::SeqCst => "seqcst",
        _ => "?",
    }
}

fn main() {
    let args = args();
    let mut cells: Vec<Vec<Cell>> = args
        .fences
        .iter()
        .map(|_| args.intervals.iter().map(|_| Cell::default()).collect())
        .collect();
    // The reference: a crossbeam-channel consumer in the same ping-pong, per interval.
    let mut channel: Vec<Cell> = args.intervals.iter().map(|_| Cell::default()).collect();
    for rep in 0..args.reps {
        for (j, interval) in args.intervals.iter().enumerate() {
            let rounds = ((args.seconds / interval.as_secs_f64()) as u64).max(1_000);
            eprintln!(
                "rep {}/{}: crossbeam-channel consumer every {interval:?}, {rounds} rounds",
                rep + 1,
                args.reps
            );
            let opts = RunOpts::default();
            let cell = &mut channel[j];
            match crossbeam_ping_pong(rounds, Some(*interval), &opts) {
                Ok(p) => {
                    eprintln!("  leg deciles (ns): {:?}", deciles(&p.one_way));
                    cell.leg50.push(p.one_way.value_at_quantile(0.5));
                    cell.p50.push(p.rtt_half.value_at_quantile(0.5));
                    cell.p99.push(p.rtt_half.value_at_quantile(0.99));
                    cell.p999.push(p.rtt_half.value_at_quantile(0.999));
                    if let Some(cpu) = p.consumer_cpu {
                        cell.serving_cpu.push(cpu * 100.0);
                    }
                }
                Err(e) => cell.error = Some(e.to_string()),
            }
            for (i, &fences) in args.fences.iter().enumerate() {
                let rounds = ((args.seconds / interval.as_secs_f64()) as u64).max(1_000);
                let opts = RunOpts {
                    wait: WaitStrategy::Park,
                    shards: 2,
                    fences,
                    ..RunOpts::default()
                };
                eprintln!(
                    "rep {}/{}: {} every {interval:?}, {rounds} rounds",
                    rep + 1,
                    args.reps,
                    name(fences)
                );
                let cell = &mut cells[i][j];
                match ping_pong(rounds, Some(*interval), &opts) {
                    Ok(p) => {
                        cell.got = Some(p.fence_mode.as_str());
                        eprintln!("  leg deciles (ns): {:?}", deciles(&p.one_way));
                        cell.leg50.push(p.one_way.value_at_quantile(0.5));
                        cell.p50.push(p.rtt_half.value_at_quantile(0.5));
                        cell.p99.push(p.rtt_half.value_at_quantile(0.99));
                        cell.p999.push(p.rtt_half.value_at_quantile(0.999));
                        if let [serving, idle, ..] = p.shard_cpu[..] {
                            cell.serving_cpu.push(serving * 100.0);
                            cell.idle_cpu.push(idle * 100.0);
                        }
                    }
                    Err(e) => cell.error = Some(e.to_string()),
                }
            }
        }
    }
    println!(
        "light load: ping-pong, 2 parking shards, median of {} runs of ~{} s; RTT/2 in ns, CPU = CPU time / wall time",
        args.reps, args.seconds
    );
    println!(
        "| fences asked | got | interval | RTT/2 p50 | p99 | p99.9 | leg p50 | serving shard CPU (min–max) | idle shard CPU |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    for (i, &fences) in args.fences.iter().enumerate() {
        for (j, interval) in args.intervals.iter().enumerate() {
            let c = &cells[i][j];
            if let Some(e) = &c.error {
                println!(
                    "| {} | error | {interval:?} | {e} | | | | | |",
                    name(fences)
                );
                continue;
            }
            let ns = |v: &[u64]| median(v).map_or("-".into(), |x| x.to_string());
            let pct = |v: &[f64]| median(v).map_or("-".into(), |x| format!("{x:.1} %"));
            let range = |v: &[f64]| {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if v.is_empty() {
                    String::new()
                } else {
                    format!(" ({lo:.1}–{hi:.1})")
                }
            };
            println!(
                "| {} | {} | {interval:?} | {} | {} | {} | {} | {}{} | {} |",
                name(fences),
                c.got.unwrap_or("-"),
                ns(&c.p50),
                ns(&c.p99),
                ns(&c.p999),
                ns(&c.leg50),
                pct(&c.serving_cpu),
                range(&c.serving_cpu),
                pct(&c.idle_cpu),
            );
        }
    }

    println!();
    println!(
        "reference: a crossbeam-channel consumer (`bounded`, blocking `recv`) in the same ping-pong, \
         interleaved with the rows above"
    );
    println!("| interval | RTT/2 p50 | p99 | p99.9 | leg p50 | consumer CPU (min–max) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (j, interval) in args.intervals.iter().enumerate() {
        let c = &channel[j];
        if let Some(e) = &c.error {
            println!("| {interval:?} | error: {e} | | | | |");
            continue;
        }
        let ns = |v: &[u64]| median(v).map_or("-".into(), |x| x.to_string());
        let (lo, hi) = (
            c.serving_cpu.iter().copied().fold(f64::INFINITY, f64::min),
            c.serving_cpu
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max),
        );
        println!(
            "| {interval:?} | {} | {} | {} | {} | {} ({lo:.1}–{hi:.1}) |",
            ns(&c.p50),
            ns(&c.p99),
            ns(&c.p999),
            ns(&c.leg50),
            median(&c.serving_cpu).map_or("-".into(), |x| format!("{x:.1} %")),
        );
    }
    println!();
    println!(
        "| fences | interval | serving shard CPU / channel consumer CPU | RTT/2 p50 / channel's | leg p50 / channel's |"
    );
    println!("|---|---|---:|---:|---:|");
    for (i, &fences) in args.fences.iter().enumerate() {
        for (j, interval) in args.intervals.iter().enumerate() {
            let (bus, ch) = (&cells[i][j], &channel[j]);
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                _ => "-".into(),
            };
            let p50 = |v: &[u64]| median(v).map(|x| x as f64);
            println!(
                "| {} | {interval:?} | {} | {} | {} |",
                name(fences),
                ratio(median(&bus.serving_cpu), median(&ch.serving_cpu)),
                ratio(p50(&bus.p50), p50(&ch.p50)),
                ratio(p50(&bus.leg50), p50(&ch.leg50)),
            );
        }
    }
}
