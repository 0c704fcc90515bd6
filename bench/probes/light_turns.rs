//! Light load in turns: the bus's parking shard, a crossbeam-channel consumer and a bare
//! park/unpark ponger fed in turn by one pinger, blocks of about 50 ms
//! ([`light_turns`](shardbus_bench::runner::light_turns)). Prints per repetition and pace each
//! side's leg p50, RTT/2 p50 and CPU, and the bus's ratios to the channel; with `--blocks`, each
//! turn's three block p50s (RTT/2, ns) to stderr, to see how the machine drifts.
//!
//! `cargo run --release -p shardbus-bench --example light_turns -- [--intervals 10us,100us,1ms]
//! [--seconds 2] [--reps 3] [--blocks]`

use std::time::Duration;

use shardbus_bench::runner::{light_turns, SIDES};
use shardbus_bench::RunOpts;

fn usage(why: &str) -> ! {
    eprintln!(
        "light_turns: {why}\nusage: light_turns [--intervals 10us,100us,1ms] [--seconds 2] \
         [--reps 3] [--blocks]"
    );
    std::process::exit(2)
}

fn parse_interval(text: &str) -> Duration {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let n: u64 = number
        .parse()
        .unwrap_or_else(|_| usage(&format!("bad interval {text:?}")));
    match unit {
        "us" | "µs" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        _ => usage(&format!("bad interval unit in {text:?} (us, ms)")),
    }
}

fn main() {
    let mut intervals = vec![
        Duration::from_micros(10),
        Duration::from_micros(100),
        Duration::from_millis(1),
    ];
    let (mut seconds, mut reps, mut blocks) = (2.0f64, 3usize, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--blocks" {
            blocks = true;
            continue;
        }
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--intervals" => intervals = value.split(',').map(parse_interval).collect(),
            "--seconds" => {
                seconds = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0)
                    .unwrap_or_else(|| usage("--seconds takes a positive number"))
            }
            "--reps" => {
                reps = value
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .unwrap_or_else(|| usage("--reps takes a positive integer"))
            }
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if intervals.iter().any(Duration::is_zero) {
        usage("intervals must be positive");
    }
    let opts = RunOpts {
        shards: 2,
        ..RunOpts::default()
    };
    println!("| rep | interval | side | leg p50 (ns) | RTT/2 p50 (ns) | CPU | leg / channel | CPU / channel |");
    println!("|---:|---|---|---:|---:|---:|---:|---:|");
    for rep in 1..=reps {
        for &interval in &intervals {
            let rounds = ((seconds / interval.as_secs_f64()) as u64).max(1_000);
            eprintln!("rep {rep}/{reps}: every {interval:?}, {rounds} rounds a side");
            let t = match light_turns(rounds, interval, &opts) {
                Ok(t) => t,
                Err(e) => {
                    println!("| {rep} | {interval:?} | error: {e} | | | | | |");
                    continue;
                }
            };
            if blocks {
                for turn in 0..t.sides[0].block_p50s.len() {
                    let row: Vec<u64> = t.sides.iter().map(|s| s.block_p50s[turn]).collect();
                    eprintln!("  turn {turn}: {row:?}");
                }
            }
            let channel = &t.sides[1];
            let ch_leg = channel.one_way.value_at_quantile(0.5) as f64;
            for (name, side) in SIDES.iter().zip(&t.sides) {
                let leg = side.one_way.value_at_quantile(0.5);
                let cpu = side
                    .cpu
                    .map_or("-".into(), |c| format!("{:.2} %", c * 100.0));
                let cpu_ratio = match (side.cpu, channel.cpu) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                    _ => "-".into(),
                };
                println!(
                    "| {rep} | {interval:?} | {name} | {leg} | {} | {cpu} | {:.3}× | {cpu_ratio} |",
                    side.rtt_half.value_at_quantile(0.5),
                    leg as f64 / ch_leg,
                );
            }
            if let Some(idle) = t.idle_cpu {
                println!(
                    "| {rep} | {interval:?} | idle shard | | | {:.2} % | | |",
                    idle * 100.0
                );
            }
        }
    }
}
