//! The one-leg probe: the suite's "one leg" rows on their own. A busy-spinning shard's leg
//! (publish → handler entry on the other core, both ends reading one clock) beside one leg
//! of the bare atomic ping-pong (store → load on the other core), repetitions interleaved;
//! prints the median repetition (by p50) of each and the p50 ratio.
//!
//! `cargo run --release -p shardbus-bench --example one_leg -- [--rounds 200000] [--reps 5]
//! [--fences seqcst|membarrier|auto]`
//!
//! It measures time: run it on a quiet machine.

use shardbus::{Fences, WaitStrategy};
use shardbus_bench::report::Percentiles;
use shardbus_bench::{floor, runner, RunOpts};

fn usage(why: &str) -> ! {
    eprintln!("one_leg: {why}");
    eprintln!("usage: one_leg [--rounds N] [--reps N] [--fences seqcst|membarrier|auto]");
    std::process::exit(2)
}

fn main() {
    let (mut rounds, mut reps, mut fences) = (200_000u64, 5usize, Fences::SeqCst);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| usage(&format!("{flag} takes a positive number")))
        };
        match flag.as_str() {
            "--rounds" => rounds = number(),
            "--reps" => reps = number() as usize,
            "--fences" => {
                fences = match value.as_str() {
                    "seqcst" => Fences::SeqCst,
                    "membarrier" => Fences::Membarrier,
                    "auto" => Fences::Auto,
                    _ => usage(&format!("bad fences {value:?}")),
                }
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    let spin = RunOpts {
        wait: WaitStrategy::BusySpin,
        shards: 1,
        fences,
        ..RunOpts::default()
    };
    let (mut bus, mut atomic) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        match runner::ping_pong(rounds, None, &spin) {
            Ok(p) => bus.push(Percentiles::of(&p.one_way)),
            Err(e) => usage(&format!("the bus leg failed: {e}")),
        }
        match floor::atomic_leg(rounds, &spin) {
            Ok(l) => atomic.push(Percentiles::of(&l.one_way)),
            Err(e) => usage(&format!("the atomic leg failed: {e}")),
        }
    }
    let median = |runs: &mut Vec<Percentiles>| {
        runs.sort_by_key(|p| p.p50);
        runs[runs.len() / 2].clone()
    };
    let (b, a) = (median(&mut bus), median(&mut atomic));
    println!("{rounds} rounds x {reps} reps, fences {fences:?}, ns: p50 / p99 / p99.9");
    println!("bus leg:    {} / {} / {}", b.p50, b.p99, b.p999);
    println!("atomic leg: {} / {} / {}", a.p50, a.p99, a.p999);
    println!("p50 ratio:  {:.2}x", b.p50 as f64 / a.p50 as f64);
}
