//! The subject-pattern probe: what pattern subscriptions cost.
//!
//! 1. **Throughput**, publish → handle: `--topics` topics `t.{g}.{i}` (`g` = `i % 100`),
//!    one `Publisher` publishing `--messages` messages through pre-resolved handles to
//!    uniformly drawn topics, each message handled by one actor that counts it, in three
//!    set-ups: every topic's actor a plain subscription (`plain`); every topic's actor made
//!    by one of `--patterns` pattern subscriptions `t.{g}.*` (`patterns`); the plain set-up
//!    plus `--patterns` patterns that match no topic (`plain + idle patterns`). Target: the
//!    pattern rows at ≥ 0.9× the plain row.
//! 2. **First sight**: publishing one message by name to each of `--fresh` topics the bus
//!    has never seen, then a flush; the time per topic, which holds the name's interning,
//!    the caches' misses, the shard learning the name and, with patterns, matching it
//!    against every pattern and making the matching pattern's actor (factory, `on_start`).
//!    With no pattern, with `--patterns` patterns that match nothing, and with
//!    `--patterns` patterns of which one matches.
//!
//! `cargo run --release -p shardbus-bench --example pattern_cost -- [--shards 2] [--topics 10000]
//! [--patterns 100] [--messages 4000000] [--fresh 10000] [--reps 5]`
//!
//! Each figure is the median of `--reps` runs; the set-ups interleave within a repetition.
//! Every run checks that each message was handled exactly once (the per-shard counts add
//! up to what was published). Run it on a quiet machine: it measures time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_utils::CachePadded;
use shardbus::{Bus, Context, Supervision, Topic};

struct Args {
    shards: usize,
    topics: usize,
    patterns: usize,
    messages: usize,
    fresh: usize,
    reps: usize,
}

fn usage(why: &str) -> ! {
    eprintln!(
        "pattern_cost: {why}\nusage: pattern_cost [--shards 2] [--topics 10000] [--patterns 100] \
         [--messages 4000000] [--fresh 10000] [--reps 5]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut args = Args {
        shards: 2,
        topics: 10_000,
        patterns: 100,
        messages: 4_000_000,
        fresh: 10_000,
        reps: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: usize = it
            .next()
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or_else(|| usage(&format!("{flag} needs a number")));
        match flag.as_str() {
            "--shards" => args.shards = value,
            "--topics" => args.topics = value,
            "--patterns" => args.patterns = value,
            "--messages" => args.messages = value,
            "--fresh" => args.fresh = value,
            "--reps" => args.reps = value.max(1),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if args.patterns == 0 || args.topics == 0 || args.shards == 0 {
        usage("--shards, --topics and --patterns must be at least 1");
    }
    args
}

/// Messages handled, per shard (padded: each shard writes only its own).
type Counts = Arc<Vec<CachePadded<AtomicU64>>>;

fn counting(counts: &Counts) -> impl FnMut(&mut Context<'_, u64>, &u64) + Send + 'static {
    let counts = counts.clone();
    move |ctx, _| {
        // Relaxed: a count read after `flush`, which orders it.
        counts[ctx.shard().index()].fetch_add(1, Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Plain,
    Patterns,
    PlainIdlePatterns,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Plain => "plain",
            Setup::Patterns => "patterns",
            Setup::PlainIdlePatterns => "plain + idle patterns",
        }
    }
}

fn topic_name(i: usize, groups: usize) -> String {
    format!("t.{}.{i}", i % groups)
}

fn new_bus(args: &Args) -> Bus<u64> {
    Bus::<u64>::builder()
        .shards(args.shards)
        .build()
        .expect("build")
}

fn add_patterns(bus: &Bus<u64>, args: &Args, counts: &Counts, matching: bool) {
    for g in 0..args.patterns {
        let pattern = if matching {
            format!("t.{g}.*")
        } else {
            format!("none.{g}.*")
        };
        let counts = counts.clone();
        bus.subscribe_pattern(&pattern, Supervision::Resume, move || counting(&counts))
            .expect("subscribe_pattern");
    }
}

/// Messages per second, publish → handled.
fn throughput(args: &Args, setup: Setup, plan: &[u32]) -> f64 {
    let counts: Counts = Arc::new((0..args.shards).map(|_| Default::default()).collect());
    let bus = new_bus(args);
    let topics: Vec<Topic> = (0..args.topics)
        .map(|i| bus.topic(&topic_name(i, args.patterns)).expect("topic"))
        .collect();
    match setup {
        Setup::Patterns => add_patterns(&bus, args, &counts, true),
        Setup::Plain | Setup::PlainIdlePatterns => {
            for t in &topics {
                bus.subscribe(t, counting(&counts)).expect("subscribe");
            }
            if setup == Setup::PlainIdlePatterns {
                add_patterns(&bus, args, &counts, false);
            }
        }
    }
    // Every topic's actor exists before the clock starts (the first sight is part 2).
    for t in &topics {
        bus.publish(t, 0).expect("publish");
    }
    bus.flush().expect("flush");
    let warm = args.topics as u64;
    let mut publisher = bus.publisher();
    let start = Instant::now();
    for &t in plan {
        publisher.publish(topics[t as usize], 1).expect("publish");
    }
    drop(publisher);
    bus.flush().expect("flush");
    let elapsed = start.elapsed().as_secs_f64();
    let handled: u64 = counts.iter().map(|c| c.load(Relaxed)).sum();
    assert_eq!(
        handled,
        warm + plan.len() as u64,
        "{}: every message handled once",
        setup.label()
    );
    bus.shutdown();
    plan.len() as f64 / elapsed
}

/// Nanoseconds per topic for the first message to each of `fresh` new topics.
fn first_sight(args: &Args, patterns: Option<bool>) -> f64 {
    let counts: Counts = Arc::new((0..args.shards).map(|_| Default::default()).collect());
    let bus = new_bus(args);
    if let Some(matching) = patterns {
        add_patterns(&bus, args, &counts, matching);
    }
    let names: Vec<String> = (0..args.fresh)
        .map(|i| topic_name(i, args.patterns))
        .collect();
    let start = Instant::now();
    for name in &names {
        bus.publish(name.as_str(), 1).expect("publish");
    }
    bus.flush().expect("flush");
    let elapsed = start.elapsed().as_nanos() as f64;
    let handled: u64 = counts.iter().map(|c| c.load(Relaxed)).sum();
    let want = if patterns == Some(true) {
        args.fresh as u64
    } else {
        0
    };
    assert_eq!(handled, want, "first sight: handled");
    let stats = bus.shutdown();
    assert_eq!(stats.received(), args.fresh as u64);
    elapsed / args.fresh as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = args();
    // The topics drawn, the same for every set-up (xorshift64*, fixed seed).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let plan: Vec<u32> = (0..args.messages)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % args.topics as u64) as u32
        })
        .collect();
    let setups = [Setup::Plain, Setup::Patterns, Setup::PlainIdlePatterns];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut sights: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for _ in 0..args.reps {
        for (i, &setup) in setups.iter().enumerate() {
            rates[i].push(throughput(&args, setup, &plan));
        }
        for (i, patterns) in [None, Some(false), Some(true)].into_iter().enumerate() {
            sights[i].push(first_sight(&args, patterns));
        }
    }
    println!(
        "### Subject patterns: {} shards, {} topics, {} patterns, {} messages, median of {}",
        args.shards, args.topics, args.patterns, args.messages, args.reps
    );
    println!();
    println!("| publish → handle | Mmsg/s | vs plain |");
    println!("|---|---|---|");
    let plain = median(rates[0].clone());
    for (i, setup) in setups.iter().enumerate() {
        let m = median(rates[i].clone());
        println!("| {} | {:.2} | {:.2}× |", setup.label(), m / 1e6, m / plain);
    }
    println!();
    println!(
        "| first sight of {} new topics | ns per topic |",
        args.fresh
    );
    println!("|---|---|");
    let labels = [
        "no pattern".to_owned(),
        format!("{} patterns, none matches", args.patterns),
        format!(
            "{} patterns, one matches (its actor is made)",
            args.patterns
        ),
    ];
    for (i, label) in labels.iter().enumerate() {
        println!("| {label} | {:.0} |", median(sights[i].clone()));
    }
}
