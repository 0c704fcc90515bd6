//! Keyed partitions: the two rows of `docs/benchmarks.md` "Partitions", in one run.
//!
//! `cargo run --release -p shardbus-bench --example partition_cost -- [reps] [scale]`
//! (defaults 3 and 1.0; `scale` multiplies every message count, `0.01` is a quick check).
//!
//! (a) **One hot topic, Zipf keys, closed loop.** `TOKENS` tokens circulate on one topic;
//! each handled token costs `WORK` rounds of a 64-bit mix, draws a fresh key from a Zipf
//! distribution (s = 1.0 over `KEYS` keys) and is published again with that key, until its
//! hops run out. Partitioned topic on 1 shard and on 2 shards (the ratio is the row's
//! figure, target ≥ 1.6×), and the same load on a plain (unpartitioned) topic on 2 shards:
//! one actor on one shard, the ceiling partitions remove. The host's compute scaling
//! (2 pinned threads over 1) is measured in the same run, the ceiling of any scaling figure
//! on this host. The partitioned 2-shard run also prints each shard's share of the
//! handled messages: with Zipf keys the hottest keys' partitions decide it, and
//! `1 / max(share)` bounds its scaling whatever the host.
//!
//! (b) **Keyed publish against plain publish, one shard.** One `Publisher` publishes
//! `N` messages through a pre-resolved handle: plain `publish` by a `Topic` to a plain
//! topic, then `publish_keyed` (1,024 keys) by a `PartitionedTopic` to a partitioned topic;
//! an actor (instance) that does nothing takes them. Target ≥ 0.9×.
//!
//! Every run checks its counts (each token retired once, handled = tokens × (hops + 1);
//! every published message handled once) and prints `exact`.
//!
//! **Instruction counts** of (b): `partitions cost plain|keyed [messages]` runs one form
//! once, with lanes at least as large as the message count (no publish waits for room, so
//! the counts do not depend on when the OS runs the shard), the publish loop in a function
//! of its own (`plain_loop`, `keyed_loop`). Under callgrind its inclusive Ir divided by the
//! messages is the publish path, and `Shard::run`'s is the shard's side (see
//! `docs/benchmarks.md`, "Partitions").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardbus::{Bus, Context, Handler, PartitionedTopic, Publisher, Supervision, Topic};
use shardbus_bench::{floor, RunOpts};

const KEYS: usize = 4096;
const TOKENS: u64 = 256;
const WORK: u32 = 200;

/// A token of the closed loop: which one, hops left, its random state.
#[derive(Clone, Copy)]
struct Token {
    id: u32,
    hops_left: u32,
    rng: u64,
}

/// The SplitMix64 finalizer: the per-message work and the tokens' random walk.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Zipf (s = 1) over `0..KEYS` by inverse CDF: a binary search of the table.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new() -> Self {
        let mut cdf: Vec<f64> = (1..=KEYS).map(|k| 1.0 / k as f64).collect();
        let mut sum = 0.0;
        for x in &mut cdf {
            sum += *x;
            *x = sum;
        }
        cdf.iter_mut().for_each(|x| *x /= sum);
        Zipf(cdf)
    }

    fn key(&self, rng: u64) -> u64 {
        let u = (rng >> 11) as f64 / (1u64 << 53) as f64;
        self.0.partition_point(|&c| c < u).min(KEYS - 1) as u64
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Partitioned,
    Plain,
}

struct LoopResult {
    elapsed: Duration,
    handled: u64,
    exact: bool,
    /// Messages each shard handled (the bus's own counts).
    per_shard: Vec<u64>,
}

/// Where a hop goes: the partitioned topic's handle, or the plain topic's.
#[derive(Clone)]
enum Target {
    Partitioned(PartitionedTopic),
    Plain(Topic),
}

/// A closed-loop actor (instance): works, draws the next key, publishes the token again.
struct Hopper {
    target: Target,
    zipf: Arc<Zipf>,
    handled: u64,
    totals: Arc<Totals>,
}

/// What the actors counted, read after the bus has shut down (its threads joined).
struct Totals {
    handled: AtomicU64,
    retired: Vec<AtomicU64>,
    done: AtomicU64,
}

impl Handler<Token> for Hopper {
    fn handle(&mut self, ctx: &mut Context<'_, Token>, t: &Token) {
        self.handled += 1;
        let mut x = t.rng;
        for _ in 0..WORK {
            x = mix(x);
        }
        let x = std::hint::black_box(x);
        if t.hops_left == 0 {
            // Relaxed: counts read after shutdown (the join orders them); `done` is polled.
            self.totals.retired[t.id as usize].fetch_add(1, Ordering::Relaxed);
            self.totals.done.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let rng = mix(x ^ t.rng);
        let next = Token {
            id: t.id,
            hops_left: t.hops_left - 1,
            rng,
        };
        // Fails only once the bus stops; the verdict then shows the token missing.
        let _ = match &self.target {
            Target::Partitioned(topic) => ctx.publish_keyed(topic, self.zipf.key(rng), next),
            Target::Plain(topic) => ctx.publish(*topic, next),
        };
    }

    fn on_stop(&mut self, _: &mut Context<'_, Token>) {
        // Relaxed: read after shutdown.
        self.totals
            .handled
            .fetch_add(self.handled, Ordering::Relaxed);
    }
}

/// The closed loop on the hot topic "hot" (see the module docs).
fn closed_loop(shards: usize, mode: Mode, hops: u32) -> LoopResult {
    let bus = Bus::<Token>::builder().shards(shards).build().expect("bus");
    let zipf = Arc::new(Zipf::new());
    let totals = Arc::new(Totals {
        handled: AtomicU64::new(0),
        retired: (0..TOKENS).map(|_| AtomicU64::new(0)).collect(),
        done: AtomicU64::new(0),
    });
    let target = match mode {
        Mode::Partitioned => Target::Partitioned(bus.partitioned_topic("hot").expect("topic")),
        Mode::Plain => Target::Plain(bus.topic("hot").expect("topic")),
    };
    let actor = {
        let (target, zipf, totals) = (target.clone(), zipf.clone(), totals.clone());
        move || Hopper {
            target: target.clone(),
            zipf: zipf.clone(),
            handled: 0,
            totals: totals.clone(),
        }
    };
    match mode {
        Mode::Partitioned => {
            bus.subscribe_partitioned("hot", Supervision::Resume, move |_| actor())
                .expect("subscribe");
        }
        Mode::Plain => {
            bus.subscribe("hot", actor()).expect("subscribe");
        }
    }
    let start = Instant::now();
    for id in 0..TOKENS {
        let rng = mix(id + 1);
        let token = Token {
            id: id as u32,
            hops_left: hops,
            rng,
        };
        let sent = match &target {
            Target::Partitioned(topic) => bus.publish_keyed(topic, zipf.key(rng), token),
            Target::Plain(topic) => bus.publish(*topic, token),
        };
        sent.expect("inject a token");
    }
    // Relaxed: a completion count; the shutdown's join orders everything else.
    while totals.done.load(Ordering::Relaxed) < TOKENS {
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed();
    let stats = bus.shutdown();
    let per_shard = stats.shards.iter().map(|s| s.handled).collect();
    let handled = totals.handled.load(Ordering::Relaxed);
    let exact = handled == TOKENS * (u64::from(hops) + 1)
        && totals
            .retired
            .iter()
            .all(|r| r.load(Ordering::Relaxed) == 1);
    LoopResult {
        elapsed,
        handled,
        exact,
        per_shard,
    }
}

/// (b): one publisher, `n` messages, plain or keyed, one shard; returns (msgs/s, exact).
fn publish_rate(keyed: bool, n: u64) -> (f64, bool) {
    let bus = Bus::<u64>::builder().shards(1).build().expect("bus");
    // The handled count is the bus's own (`Stats::handled`): the actor does nothing.
    let sum = || {
        |_: &mut Context<'_, u64>, m: &u64| {
            std::hint::black_box(m);
        }
    };
    if keyed {
        bus.subscribe_partitioned("t", Supervision::Resume, move |_| sum())
            .expect("subscribe");
    } else {
        bus.subscribe("t", sum()).expect("subscribe");
    }
    let (plain, parted) = (
        bus.topic("t").expect("topic"),
        bus.partitioned_topic("t").expect("topic"),
    );
    let mut p = bus.publisher();
    // Warm the lanes and caches (every partition seen once).
    for i in 0..4096u64 {
        if keyed {
            p.publish_keyed(&parted, i % 1024, i).expect("publish");
        } else {
            p.publish(plain, i).expect("publish");
        }
    }
    bus.flush().expect("flush");
    let start = Instant::now();
    for i in 0..n {
        if keyed {
            p.publish_keyed(&parted, i % 1024, i).expect("publish");
        } else {
            p.publish(plain, i).expect("publish");
        }
    }
    bus.flush().expect("flush");
    let elapsed = start.elapsed();
    let stats = bus.shutdown();
    let exact = stats.handled() == n + 4096 && stats.unrouted() == 0;
    (n as f64 / elapsed.as_secs_f64(), exact)
}

#[inline(never)]
fn plain_loop(p: &mut Publisher<u64>, topic: Topic, n: u64) {
    for i in 0..n {
        p.publish(topic, i).expect("publish");
    }
}

#[inline(never)]
fn keyed_loop(p: &mut Publisher<u64>, topic: &PartitionedTopic, n: u64) {
    for i in 0..n {
        p.publish_keyed(topic, i % 1024, i).expect("publish");
    }
}

/// `cost plain|keyed [messages]`: one form of (b), once, for an instruction count (see the
/// module docs). Returns whether every message was handled once.
fn cost(keyed: bool, n: u64) -> bool {
    let lane = (n + 1).next_power_of_two() as usize;
    let bus = Bus::<u64>::builder()
        .shards(1)
        .lane_capacity(lane)
        .build()
        .expect("bus");
    let sum = || {
        |_: &mut Context<'_, u64>, m: &u64| {
            std::hint::black_box(m);
        }
    };
    let mut p = bus.publisher();
    if keyed {
        bus.subscribe_partitioned("t", Supervision::Resume, move |_| sum())
            .expect("subscribe");
        keyed_loop(&mut p, &bus.partitioned_topic("t").expect("topic"), n);
    } else {
        bus.subscribe("t", sum()).expect("subscribe");
        plain_loop(&mut p, bus.topic("t").expect("topic"), n);
    }
    // Let the shard take every message from its lane by runs before the flush: a flush
    // finding messages still queued hands them over one by one (the barrier's drain), and
    // how many depends on when the OS ran the shard.
    while bus.stats().handled() < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    bus.flush().expect("flush");
    let stats = bus.shutdown();
    stats.handled() == n && stats.unrouted() == 0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("cost") {
        let form = args.nth(1).unwrap_or_default();
        let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
        let keyed = match form.as_str() {
            "plain" => false,
            "keyed" => true,
            _ => {
                eprintln!("usage: partition_cost cost plain|keyed [messages]");
                std::process::exit(2);
            }
        };
        let exact = cost(keyed, n);
        println!("cost {form}, {n} messages, exact: {exact}");
        return;
    }
    let reps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    let scale: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let hops = ((4_000.0 * scale) as u32).max(1);
    let n = ((2e7 * scale) as u64).max(10_000);
    let opts = RunOpts::default();

    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("partitioned, 1 shard", Vec::new()),
        ("partitioned, 2 shards", Vec::new()),
        ("plain topic, 2 shards", Vec::new()),
    ];
    let (mut keyed, mut plain, mut host) = (Vec::new(), Vec::new(), Vec::new());
    // The partitioned 2-shard run's share of shard 0, per repetition.
    let mut share0 = Vec::new();
    let mut exact = true;
    for _ in 0..reps {
        for (i, (shards, mode)) in [
            (1, Mode::Partitioned),
            (2, Mode::Partitioned),
            (2, Mode::Plain),
        ]
        .into_iter()
        .enumerate()
        {
            let r = closed_loop(shards, mode, hops);
            exact &= r.exact;
            if (shards, mode) == (2, Mode::Partitioned) {
                share0.push(r.per_shard[0] as f64 / r.per_shard.iter().sum::<u64>() as f64);
            }
            rows[i].1.push(r.handled as f64 / r.elapsed.as_secs_f64());
        }
        if let Ok(x) = floor::cpu_scaling(2, (4e8 * scale) as u64, &opts) {
            host.push(x);
        }
        let (rate, ok) = publish_rate(false, n);
        plain.push(rate);
        exact &= ok;
        let (rate, ok) = publish_rate(true, n);
        keyed.push(rate);
        exact &= ok;
    }
    println!("## Partitions ({reps} reps, scale {scale}, medians)\n");
    println!("(a) one hot topic, Zipf keys (s = 1, {KEYS} keys), closed loop, {TOKENS} tokens, {hops} hops, work {WORK}\n");
    println!("| run | M msgs/s |");
    println!("|---|---|");
    let med: Vec<f64> = rows.iter().map(|(_, v)| median(v.clone())).collect();
    for ((name, _), m) in rows.iter().zip(&med) {
        println!("| {name} | {:.3} |", m / 1e6);
    }
    let host = if host.is_empty() {
        f64::NAN
    } else {
        median(host)
    };
    println!(
        "\n2 shards / 1 shard: {:.2}× (target ≥ 1.6×); host compute scaling, 2 threads / 1: {host:.2}×; \
         partitioned / plain topic at 2 shards: {:.2}×\n",
        med[1] / med[0],
        med[1] / med[2]
    );
    let share0 = median(share0);
    println!(
        "partitioned, 2 shards: shard 0 handled {:.1} % of the messages, shard 1 {:.1} % \
         (the scaling's bound from the split alone: {:.2}×)\n",
        share0 * 100.0,
        (1.0 - share0) * 100.0,
        1.0 / share0.max(1.0 - share0)
    );
    let (p, k) = (median(plain), median(keyed));
    println!("(b) one shard, one Publisher, {n} messages by a pre-resolved handle (`Topic`, `PartitionedTopic`)\n");
    println!("| publish | M msgs/s |");
    println!("|---|---|");
    println!("| plain `publish` | {:.3} |", p / 1e6);
    println!("| `publish_keyed` (1,024 keys) | {:.3} |", k / 1e6);
    println!(
        "\nkeyed / plain: {:.2}× (target ≥ 0.9×)\nexact: {exact}",
        k / p
    );
}
