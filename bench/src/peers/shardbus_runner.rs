//! `shardbus_runner`: the same workloads through a shardbus [`Bus`], plus the two workloads only
//! an actor runtime has: the closed-loop core-scaling run and the publisher ↔ actor ping-pong.
//!
//! Throughput ([`run`]): one [`Publisher`](shardbus::Publisher) per producer thread, publishing
//! through pre-resolved [`Topic`] handles (no hashing, no `String` per message); one actor per
//! topic owns the [`Checker`] for its topic and hands it back from `on_stop` through a channel, so
//! verification takes no lock on the hot path. [`RunOpts::batch`] switches to
//! `Publisher::publish_batch`. Shards are pinned by shardbus (shard `i` on core `i`); producers are
//! pinned to the cores after the shards when the threads fit the cores, and left to the kernel
//! otherwise (oversubscribed runs). With [`RunOpts::persist`] the bus is persistent (a fresh log
//! directory per run, removed afterwards; messages encoded by the [`Codec`](shardbus::Codec) in
//! [`persist`](crate::persist)); timing and verification are the same.
//!
//! Closed loop ([`closed_loop`]): tokens circulate between actors; each handled token is published
//! by its actor to a random actor (so to a random shard), a fixed number in flight, no producer
//! thread at all: the workload that lives inside the shards and measures how they scale.
//!
//! Latency ([`ping_pong`]): a publisher thread publishes one message, the actor (on another core)
//! records publish → handler entry and answers through one cache-padded atomic; the publisher times
//! the round trip. Optionally paced (one message every `interval`: light load).

use std::hint;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use shardbus::{Bus, Context, Handler, Persistence, Stats, Topic};

use super::{by_payload, finish, join, spawn, Cores, Error, Gate, RunOpts, RunResult};
use crate::persist::ScratchDir;
use crate::verify::Checker;
use crate::workload::{BenchMsg, Plan, Sampling, Workload};

impl From<shardbus::Error> for Error {
    fn from(e: shardbus::Error) -> Self {
        Self::Bus(e.to_string())
    }
}

/// Runs the workload through a shardbus bus of `opts.shards` shards.
pub fn run(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    run_with_stats(w, opts).map(|(r, _)| r)
}

/// [`run`], also returning the bus's final statistics (per-shard handled counts and more).
/// `RunResult::per_thread_handled` holds the per-shard handled counts.
pub fn run_with_stats(w: &Workload, opts: &RunOpts) -> Result<(RunResult, Stats), Error> {
    by_payload!(w.payload, run_n(w, opts))
}

/// One topic's actor: checks every message of its topic, hands the checker back when it stops.
struct Sink {
    checker: Option<Checker>,
    back: mpsc::Sender<Checker>,
}

impl<const N: usize> Handler<BenchMsg<N>> for Sink {
    #[inline]
    fn handle(&mut self, _ctx: &mut Context<'_, BenchMsg<N>>, msg: &BenchMsg<N>) {
        if let Some(checker) = &mut self.checker {
            checker.record(msg);
        }
    }

    fn on_stop(&mut self, _ctx: &mut Context<'_, BenchMsg<N>>) {
        if let Some(checker) = self.checker.take() {
            // Fails only if the runner is gone, and then nobody wants the checker.
            let _ = self.back.send(checker);
        }
    }
}

fn build<T: Send + 'static>(opts: &RunOpts, shards: usize) -> Result<Bus<T>, Error> {
    Ok(Bus::builder()
        .shards(shards)
        .capacity(opts.capacity.next_power_of_two().max(2))
        .pin_threads(opts.pin)
        .wait_strategy(opts.wait)
        .build()?)
}

fn run_n<const N: usize>(w: &Workload, opts: &RunOpts) -> Result<(RunResult, Stats), Error> {
    opts.validate()?;
    let Plan {
        publishers,
        expected,
    } = w.plan()?;
    let sampling = Sampling::new(opts.sample_every);
    // A persistent run writes into a fresh directory, removed when the run ends (after the bus).
    let scratch = match &opts.persist {
        Some(p) => Some(ScratchDir::new(&p.dir)?),
        None => None,
    };
    let builder = Bus::<BenchMsg<N>>::builder()
        .shards(opts.shards)
        .capacity(opts.capacity.next_power_of_two().max(2))
        .pin_threads(opts.pin)
        .wait_strategy(opts.wait);
    let bus = match (&opts.persist, &scratch) {
        (Some(p), Some(dir)) => builder
            .persist(Persistence::new(dir.path()).fsync(p.fsync))
            .build()?,
        _ => builder.build()?,
    };
    let names = w.topic_names();
    let topics: Vec<Topic> = names
        .iter()
        .map(|n| bus.topic(n))
        .collect::<Result<_, _>>()?;
    let (back, checkers_rx) = mpsc::channel();
    for (t, topic) in topics.iter().enumerate() {
        // Cannot truncate: validate() bounds topics by u32::MAX.
        let checker = Checker::new(&expected, [t as u32], sampling);
        bus.subscribe_actor(
            topic,
            Sink {
                checker: Some(checker),
                back: back.clone(),
            },
        )?;
    }
    drop(back);
    let cores = Cores::detect(opts.pin);
    // Producers get their own cores only when every thread has one.
    let pin_producers = opts.shards + w.producers <= cores.available();
    let gate = Gate::new();
    let (topics, gate, cores, bus_ref) = (&topics[..], &gate, &cores, &bus);
    let batch = opts.batch;
    let start = thread::scope(|s| {
        let mut producers = Vec::with_capacity(w.producers);
        for publisher in publishers {
            let p = usize::from(publisher.producer());
            let mut handle = bus_ref.publisher();
            let spawned = spawn(s, format!("shardbus-producer-{p}"), None, move || {
                if pin_producers {
                    cores.pin(opts.shards + p);
                }
                if !gate.wait() {
                    return;
                }
                if batch == 0 {
                    publisher.publish_all(sampling, |msg: BenchMsg<N>| {
                        // Fails only once the bus is closed; the verdict then shows it missing.
                        let _ = handle.publish(topics[msg.topic as usize], msg);
                    });
                } else {
                    // Per-topic buffers keep per-(producer, topic) order; allocated before the run.
                    let mut buffers: Vec<Vec<BenchMsg<N>>> = (0..topics.len())
                        .map(|_| Vec::with_capacity(batch))
                        .collect();
                    publisher.publish_all(sampling, |msg: BenchMsg<N>| {
                        let t = msg.topic as usize;
                        buffers[t].push(msg);
                        if buffers[t].len() == batch {
                            let _ = handle.publish_batch(topics[t], &mut buffers[t]);
                        }
                    });
                    for (t, buffer) in buffers.iter_mut().enumerate() {
                        if !buffer.is_empty() {
                            let _ = handle.publish_batch(topics[t], buffer);
                        }
                    }
                }
            });
            match spawned {
                Ok(h) => producers.push(h),
                Err(e) => {
                    gate.cancel();
                    return Err(e);
                }
            }
        }
        let start = gate.open(producers.len());
        producers.into_iter().for_each(join);
        Ok(start)
    })?;
    let stats = bus.shutdown();
    let checkers: Vec<Checker> = checkers_rx.into_iter().collect();
    if pin_producers {
        cores.check()?;
    }
    drop(scratch);
    let mut result = finish(start, checkers);
    result.per_thread_handled = stats.shards.iter().map(|s| s.handled).collect();
    Ok((result, stats))
}

/// The closed-loop core-scaling workload.
#[derive(Clone, Debug)]
pub struct ClosedLoop {
    /// Shards of the bus.
    pub shards: usize,
    /// Actors (topics `actor-{i}`), spread over the shards by shardbus's routing.
    pub actors: usize,
    /// Tokens in flight, all the time.
    pub tokens: usize,
    /// Hops each token makes before it retires; every token is handled `hops + 1` times.
    pub hops: u64,
    /// Simulated work per handled message: rounds of a 64-bit mix (about 1 ns each here).
    pub work: u32,
    /// Seed of the tokens' random walks.
    pub seed: u64,
}

/// What [`closed_loop`] measured.
#[derive(Clone, Debug)]
pub struct ClosedLoopResult {
    /// From injecting the first token to the last token retiring.
    pub elapsed: Duration,
    /// Messages handled (every hop of every token).
    pub handled: u64,
    /// Messages handled per shard.
    pub per_shard_handled: Vec<u64>,
    /// Every token retired exactly once and the handled count is `tokens × (hops + 1)`.
    pub exact: bool,
}

impl ClosedLoopResult {
    /// Handled messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.handled as f64 / self.elapsed.as_secs_f64()
    }
}

/// A token of the closed loop.
#[derive(Clone, Copy, Debug)]
struct Token {
    id: u32,
    hops_left: u64,
    rng: u64,
}

/// A closed-loop actor: forwards each token to a random actor until its hops run out.
struct Hopper {
    topics: Arc<[Topic]>,
    work: u32,
    handled: u64,
    retired: Vec<u32>,
    done: Arc<CachePadded<AtomicU64>>,
    back: mpsc::Sender<(u64, Vec<u32>)>,
}

impl Handler<Token> for Hopper {
    fn handle(&mut self, ctx: &mut Context<'_, Token>, token: &Token) {
        self.handled += 1;
        let mut x = token.rng;
        for _ in 0..self.work {
            x = mix(x);
        }
        let x = hint::black_box(x);
        if token.hops_left == 0 {
            self.retired.push(token.id);
            // Relaxed: a completion count the driver polls; no memory is read on its strength.
            self.done.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let rng = mix(x ^ token.rng.wrapping_add(0x9E37_79B9_7F4A_7C15));
        let next = ((u128::from(rng) * self.topics.len() as u128) >> 64) as usize;
        let next_token = Token {
            id: token.id,
            hops_left: token.hops_left - 1,
            rng,
        };
        // Fails only once the target shard stopped; the verdict then shows the token missing.
        let _ = ctx.publish(self.topics[next], next_token);
    }

    fn on_stop(&mut self, _ctx: &mut Context<'_, Token>) {
        let _ = self
            .back
            .send((self.handled, std::mem::take(&mut self.retired)));
    }
}

/// The SplitMix64 finalizer, as the per-message work and the tokens' random walk.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs the closed-loop workload (see the module docs). `opts.wait`, `opts.capacity` and
/// `opts.pin` apply; `opts.shards` does not (the workload names its own).
pub fn closed_loop(cfg: &ClosedLoop, opts: &RunOpts) -> Result<ClosedLoopResult, Error> {
    opts.validate()?;
    if cfg.actors == 0 || cfg.tokens == 0 || u32::try_from(cfg.tokens).is_err() {
        return Err(Error::Opts(
            "closed loop needs actors > 0 and 0 < tokens < 2^32",
        ));
    }
    let bus = build::<Token>(opts, cfg.shards)?;
    let topics: Arc<[Topic]> = (0..cfg.actors)
        .map(|i| bus.topic(&format!("actor-{i}")))
        .collect::<Result<Vec<_>, _>>()?
        .into();
    let done = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let (back, back_rx) = mpsc::channel();
    for topic in topics.iter() {
        bus.subscribe_actor(
            topic,
            Hopper {
                topics: topics.clone(),
                work: cfg.work,
                handled: 0,
                retired: Vec::with_capacity(cfg.tokens),
                done: done.clone(),
                back: back.clone(),
            },
        )?;
    }
    drop(back);
    let mut publisher = bus.publisher();
    let start = Instant::now();
    for id in 0..cfg.tokens {
        let rng = mix(cfg.seed ^ mix(id as u64 + 1));
        let first = ((u128::from(rng) * topics.len() as u128) >> 64) as usize;
        let token = Token {
            // Cannot truncate: checked above.
            id: id as u32,
            hops_left: cfg.hops,
            rng,
        };
        publisher
            .publish(topics[first], token)
            .map_err(|_| Error::Opts("bus closed while injecting tokens"))?;
    }
    // Relaxed: see `Hopper::handle`.
    while done.load(Ordering::Relaxed) < cfg.tokens as u64 {
        thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed();
    drop(publisher);
    let stats = bus.shutdown();
    let mut seen = vec![0u32; cfg.tokens];
    let mut handled = 0;
    for (n, retired) in back_rx {
        handled += n;
        for id in retired {
            seen[id as usize] += 1;
        }
    }
    let exact = seen.iter().all(|&n| n == 1) && handled == cfg.tokens as u64 * (cfg.hops + 1);
    Ok(ClosedLoopResult {
        elapsed,
        handled,
        per_shard_handled: stats.shards.iter().map(|s| s.handled).collect(),
        exact,
    })
}

/// What [`ping_pong`] measured.
#[derive(Clone, Debug)]
pub struct BusPingPong {
    /// Publish → handler entry per recorded round, in ns (publisher and actor read one clock).
    pub one_way: Histogram<u64>,
    /// Round trip / 2 per recorded round, in ns; the return leg is one atomic store.
    pub rtt_half: Histogram<u64>,
    /// Recorded rounds.
    pub rounds: u64,
    /// Wall time of the recorded rounds.
    pub elapsed: Duration,
    /// CPU time / wall time of each shard thread over the recorded rounds (Linux only; empty
    /// elsewhere). Shard 0 runs the actor; the others are idle.
    pub shard_cpu: Vec<f64>,
}

/// A ping of the latency run.
#[derive(Clone, Copy, Debug)]
struct Ping {
    seq: u64,
    sent_at: u64,
}

/// The replying actor: records publish → entry, then answers with the sequence number.
struct Ponger {
    base: Instant,
    warmup: u64,
    one_way: Option<Histogram<u64>>,
    reply: Arc<CachePadded<AtomicU64>>,
    back: mpsc::Sender<Histogram<u64>>,
}

impl Handler<Ping> for Ponger {
    fn handle(&mut self, _ctx: &mut Context<'_, Ping>, ping: &Ping) {
        let now = self.base.elapsed().as_nanos() as u64;
        if ping.seq >= self.warmup {
            if let Some(h) = &mut self.one_way {
                h.saturating_record(now.saturating_sub(ping.sent_at));
            }
        }
        // Release: the publisher's Acquire load of the reply pairs with it (nothing else is
        // published, but it is the honest ordering of a reply).
        self.reply.store(ping.seq + 1, Ordering::Release);
    }

    fn on_stop(&mut self, _ctx: &mut Context<'_, Ping>) {
        if let Some(h) = self.one_way.take() {
            let _ = self.back.send(h);
        }
    }
}

/// A histogram from 1 ns to 100 s that never resizes (recording in a handler allocates nothing).
fn fixed_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3)
        .expect("1 ns ..= 100 s at 3 significant figures is a valid histogram")
}

/// Thread name prefix of the latency bus, short enough for Linux's 15-byte `comm`.
const PING_THREADS: &str = "sbpp";

/// Publisher ↔ replying actor: `rounds` recorded rounds after `rounds / 10` of warm-up, one
/// message in flight; with `interval`, one message every `interval` (light load). A bus of
/// `opts.shards` shards with `opts.wait`; the actor's topic is on shard 0 (core 0), the publisher
/// is pinned to the last core.
pub fn ping_pong(
    rounds: u64,
    interval: Option<Duration>,
    opts: &RunOpts,
) -> Result<BusPingPong, Error> {
    opts.validate()?;
    let cores = Cores::detect(opts.pin);
    cores.require(2)?;
    let bus = Bus::<Ping>::builder()
        .shards(opts.shards)
        .capacity(opts.capacity.next_power_of_two().max(2))
        .pin_threads(opts.pin)
        .wait_strategy(opts.wait)
        .thread_name(PING_THREADS)
        .build()?;
    let topic = (0..)
        .map(|i| bus.topic(&format!("ping-{i}")))
        .find(|t| t.as_ref().map_or(true, |t| t.shard().index() == 0))
        .unwrap_or_else(|| unreachable!("the range is endless"))?;
    let reply = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let (back, back_rx) = mpsc::channel();
    let base = Instant::now();
    let warmup = rounds / 10;
    bus.subscribe_actor(
        topic,
        Ponger {
            base,
            warmup,
            one_way: Some(fixed_histogram()),
            reply: reply.clone(),
            back,
        },
    )?;
    let mut publisher = bus.publisher();
    let last_core = cores.available() - 1;
    let cores = &cores;
    let (rtt_half, elapsed, shard_cpu) = thread::scope(|s| {
        let pinger = spawn(s, "shardbus-pinger".into(), None, move || {
            cores.pin(last_core);
            let mut rtt_half = fixed_histogram();
            let mut cpu_start = Vec::new();
            let mut start = Instant::now();
            let mut next = Instant::now();
            for seq in 0..warmup + rounds {
                if seq == warmup {
                    cpu_start = shard_cpu_ns(opts.shards);
                    start = Instant::now();
                }
                if let Some(every) = interval {
                    while Instant::now() < next {
                        hint::spin_loop();
                    }
                    next += every;
                }
                let t0 = Instant::now();
                let ping = Ping {
                    seq,
                    sent_at: base.elapsed().as_nanos() as u64,
                };
                if publisher.publish(topic, ping).is_err() {
                    break;
                }
                // Acquire: pairs with the actor's Release store.
                while reply.load(Ordering::Acquire) != seq + 1 {
                    hint::spin_loop();
                }
                if seq >= warmup {
                    rtt_half.saturating_record(t0.elapsed().as_nanos() as u64 / 2);
                }
            }
            let elapsed = start.elapsed();
            let cpu_end = shard_cpu_ns(opts.shards);
            let cpu = cpu_start
                .iter()
                .zip(&cpu_end)
                .map(|(a, b)| b.saturating_sub(*a) as f64 / elapsed.as_nanos() as f64)
                .collect::<Vec<_>>();
            (rtt_half, elapsed, cpu)
        })?;
        Ok::<_, Error>(join(pinger))
    })?;
    bus.shutdown();
    let one_way = back_rx
        .recv()
        .map_err(|_| Error::Opts("the latency actor did not report"))?;
    cores.check()?;
    Ok(BusPingPong {
        one_way,
        rtt_half,
        rounds,
        elapsed,
        shard_cpu,
    })
}

/// CPU time (user + system, ns) of the latency bus's shard threads `sbpp-0..shards`, read from
/// `/proc/self/task/*/stat`; empty where that is unavailable.
fn shard_cpu_ns(shards: usize) -> Vec<u64> {
    let mut cpu = vec![0u64; shards];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    // Clock ticks are 100 Hz on every Linux configuration that matters here (USER_HZ).
    const NS_PER_TICK: u64 = 10_000_000;
    let mut found = 0;
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let Some(index) = comm
            .trim()
            .strip_prefix(PING_THREADS)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if let (Some(u), Some(s), Some(slot)) = (ticks(11), ticks(12), cpu.get_mut(index)) {
            *slot = (u + s) * NS_PER_TICK;
            found += 1;
        }
    }
    if found == shards {
        cpu
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::testing::{assert_exact, one_spinner_at_a_time, opts, small, DISTRIBUTIONS};
    use crate::Distribution;

    #[test]
    fn delivers_exactly_once_in_order() {
        for dist in DISTRIBUTIONS {
            for (producers, payload, shards, batch) in
                [(1, 16, 1, 0), (2, 16, 2, 0), (2, 256, 3, 0), (1, 16, 2, 8)]
            {
                let w = small(producers, dist, payload);
                let o = RunOpts {
                    shards,
                    batch,
                    ..opts()
                };
                assert_exact(&w, run(&w, &o));
            }
        }
    }

    #[test]
    fn persistent_bus_delivers_exactly_once_in_order() {
        use crate::persist::PersistOpts;
        use shardbus::log::FsyncPolicy;
        let dir = std::env::temp_dir().join("shardbus-cli-test-persist-runner");
        for fsync in [FsyncPolicy::Never, FsyncPolicy::Batch] {
            let w = small(2, Distribution::Uniform, 256);
            let o = RunOpts {
                shards: 2,
                persist: Some(PersistOpts {
                    dir: dir.clone(),
                    fsync,
                }),
                ..opts()
            };
            assert_exact(&w, run(&w, &o));
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "scratch removed"
        );
    }

    #[test]
    fn per_shard_counts_add_up() {
        let w = Workload {
            topics: 1000,
            ..small(2, Distribution::Uniform, 16)
        };
        let (r, stats) = run_with_stats(
            &w,
            &RunOpts {
                shards: 2,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(r.per_thread_handled.len(), 2);
        assert_eq!(stats.handled(), w.messages);
        assert!(r.verdict.is_exact(w.messages));
    }

    #[test]
    fn closed_loop_retires_every_token_once() {
        for shards in [1, 2] {
            let cfg = ClosedLoop {
                shards,
                actors: 16,
                tokens: 32,
                hops: 500,
                work: 4,
                seed: 3,
            };
            let r = closed_loop(&cfg, &opts()).unwrap();
            assert!(r.exact, "{r:?}");
            assert_eq!(r.handled, 32 * 501);
            assert_eq!(r.per_shard_handled.iter().sum::<u64>(), 32 * 501);
        }
    }

    #[test]
    fn ping_pong_records_every_round() {
        let _spinning = one_spinner_at_a_time();
        let r = ping_pong(
            2_000,
            None,
            &RunOpts {
                shards: 1,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(r.one_way.len(), 2_000);
        assert_eq!(r.rtt_half.len(), 2_000);
    }
}
