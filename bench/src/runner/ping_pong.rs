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
use shardbus::{Bus, Context, Handler, Topic, WaitStrategy};

use crate::harness::{join, spawn, Cores, Error, RunOpts};

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
    /// The fences the bus got (`RunOpts::fences` after shardbus's fallback).
    pub fence_mode: shardbus::FenceMode,
}

/// A ping of the latency run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ping {
    pub(super) seq: u64,
    pub(super) sent_at: u64,
}

/// The replying actor: records publish → entry, then answers with the sequence number.
struct Ponger {
    base: Instant,
    /// Pings numbered below this are warm-up, not recorded.
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

/// A latency bus: `opts.shards` shards (at least one) waiting by `wait`, threads named
/// `threads-0`, `threads-1`, …, and a [`Ponger`] subscribed to a topic of shard 0 (core 0),
/// answering through `reply`, recording from ping `warmup` on, its histogram sent to `back`
/// when the bus stops.
pub(super) struct LatencyBus {
    pub(super) bus: Bus<Ping>,
    pub(super) topic: Topic,
    pub(super) back: mpsc::Receiver<Histogram<u64>>,
}

impl LatencyBus {
    pub(super) fn build(
        opts: &RunOpts,
        wait: WaitStrategy,
        threads: &str,
        base: Instant,
        warmup: u64,
        reply: &Arc<CachePadded<AtomicU64>>,
    ) -> Result<Self, Error> {
        let bus = Bus::<Ping>::builder()
            .shards(opts.shards.max(1))
            .capacity(opts.capacity.next_power_of_two().max(2))
            .pin_threads(opts.pin)
            .wait_strategy(wait)
            .thread_name(threads)
            .fences(opts.fences)
            .build()?;
        let topic = (0..)
            .map(|i| bus.topic(&format!("ping-{i}")))
            .find(|t| t.as_ref().map_or(true, |t| t.shard().index() == 0))
            .unwrap_or_else(|| unreachable!("the range is endless"))?;
        let (back, back_rx) = mpsc::channel();
        bus.subscribe(
            topic,
            Ponger {
                base,
                warmup,
                one_way: Some(fixed_histogram()),
                reply: reply.clone(),
                back,
            },
        )?;
        Ok(Self {
            bus,
            topic,
            back: back_rx,
        })
    }
}

/// A histogram from 1 ns to 100 s that never resizes (recording in a handler allocates nothing).
pub(super) fn fixed_histogram() -> Histogram<u64> {
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
    let reply = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let base = Instant::now();
    let warmup = rounds / 10;
    let latency = LatencyBus::build(opts, opts.wait, PING_THREADS, base, warmup, &reply)?;
    let (bus, topic, back_rx) = (latency.bus, latency.topic, latency.back);
    let fence_mode = bus.fence_mode();
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
        fence_mode,
    })
}

/// What [`crossbeam_ping_pong`] measured.
#[derive(Clone, Debug)]
pub struct ChannelPingPong {
    /// Send → `recv` returned per recorded round, in ns (the same clock reads and record
    /// as the bus's actor makes at handler entry).
    pub one_way: Histogram<u64>,
    /// Round trip / 2 per recorded round, in ns; the return leg is one atomic store.
    pub rtt_half: Histogram<u64>,
    /// CPU time / wall time of the consumer thread over the recorded rounds (Linux only;
    /// `None` elsewhere).
    pub consumer_cpu: Option<f64>,
}

/// [`ping_pong`]'s shape with a crossbeam-channel consumer in place of the bus: a thread
/// pinned to core 0 blocks in `recv` on a `bounded(capacity)` channel (crossbeam's
/// `Backoff`, then a park) and answers each ping through the same cache-padded atomic; the
/// pinger on the last core sends one ping every `interval` (or back to back). The light-load
/// probe's reference for a parking shard's CPU.
pub fn crossbeam_ping_pong(
    rounds: u64,
    interval: Option<Duration>,
    opts: &RunOpts,
) -> Result<ChannelPingPong, Error> {
    opts.validate()?;
    let cores = Cores::detect(opts.pin);
    cores.require(2)?;
    let (tx, rx) = crossbeam_channel::bounded::<Ping>(opts.capacity.max(1));
    let reply = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let warmup = rounds / 10;
    let last_core = cores.available() - 1;
    let cores = &cores;
    let base = Instant::now();
    let (rtt_half, consumer_cpu, one_way) = thread::scope(|s| {
        let answer = reply.clone();
        // Named as the bus's shard 0, so that `shard_cpu_ns` reads its CPU time.
        let consumer = spawn(s, format!("{PING_THREADS}-0"), None, move || {
            cores.pin(0);
            channel_consumer(&rx, base, warmup, &answer)
        })?;
        let pinger = spawn(s, "crossbeam-pinger".into(), None, move || {
            cores.pin(last_core);
            let mut rtt_half = fixed_histogram();
            let mut cpu_start = Vec::new();
            let mut start = Instant::now();
            let mut next = Instant::now();
            for seq in 0..warmup + rounds {
                if seq == warmup {
                    cpu_start = shard_cpu_ns(1);
                    start = Instant::now();
                }
                if let Some(every) = interval {
                    while Instant::now() < next {
                        hint::spin_loop();
                    }
                    next += every;
                }
                let t0 = Instant::now();
                // Built as the bus's pinger builds it: the clock read is in the round trip.
                let ping = Ping {
                    seq,
                    sent_at: base.elapsed().as_nanos() as u64,
                };
                if tx.send(ping).is_err() {
                    break;
                }
                // Acquire: pairs with the consumer's Release store.
                while reply.load(Ordering::Acquire) != seq + 1 {
                    hint::spin_loop();
                }
                if seq >= warmup {
                    rtt_half.saturating_record(t0.elapsed().as_nanos() as u64 / 2);
                }
            }
            let elapsed = start.elapsed();
            let cpu_end = shard_cpu_ns(1);
            let cpu = match (cpu_start.first(), cpu_end.first()) {
                (Some(a), Some(b)) => Some(b.saturating_sub(*a) as f64 / elapsed.as_nanos() as f64),
                _ => None,
            };
            // Dropping the sender ends the consumer's `recv` loop.
            drop(tx);
            (rtt_half, cpu)
        })?;
        let (rtt_half, cpu) = join(pinger);
        let one_way = join(consumer);
        Ok::<_, Error>((rtt_half, cpu, one_way))
    })?;
    cores.check()?;
    Ok(ChannelPingPong {
        one_way,
        rtt_half,
        consumer_cpu,
    })
}

/// The channel's consumer: blocks in `recv` until the channel closes; per ping it does what
/// the bus's actor does before it answers (a clock read and a record, from ping `warmup` on),
/// then answers through `reply`. Returns the send → `recv` returned histogram.
pub(super) fn channel_consumer(
    rx: &crossbeam_channel::Receiver<Ping>,
    base: Instant,
    warmup: u64,
    reply: &AtomicU64,
) -> Histogram<u64> {
    let mut one_way = fixed_histogram();
    while let Ok(ping) = rx.recv() {
        let now = base.elapsed().as_nanos() as u64;
        if ping.seq >= warmup {
            one_way.saturating_record(now.saturating_sub(ping.sent_at));
        }
        // Release: pairs with the pinger's Acquire load, as the actor's reply does.
        reply.store(ping.seq + 1, Ordering::Release);
    }
    one_way
}

/// CPU time (ns) of the latency bus's shard threads `sbpp-0..shards` ([`threads_cpu_ns`]);
/// empty where it cannot be read.
fn shard_cpu_ns(shards: usize) -> Vec<u64> {
    let names = (0..shards)
        .map(|i| format!("{PING_THREADS}-{i}"))
        .collect::<Vec<_>>();
    threads_cpu_ns(&names).unwrap_or_default()
}

/// CPU time (ns) of this process's threads named `names`, in that order: the scheduler's
/// on-CPU time from `/proc/self/task/*/schedstat` (nanoseconds), or where that is missing
/// user + system time from `stat` (clock ticks of 10 ms: at 1 % of a core a 2 s run is two
/// ticks); `None` unless every one was found (Linux only).
pub(super) fn threads_cpu_ns<S: AsRef<str>>(names: &[S]) -> Option<Vec<u64>> {
    let mut cpu: Vec<Option<u64>> = vec![None; names.len()];
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if let Some(i) = names.iter().position(|n| n.as_ref() == comm.trim()) {
            cpu[i] = thread_cpu_ns(&path);
        }
    }
    cpu.into_iter().collect()
}

/// One thread's CPU time in ns, from its `/proc/self/task/<tid>` directory.
fn thread_cpu_ns(task: &std::path::Path) -> Option<u64> {
    // `schedstat`: time on a CPU (ns), time waiting for one, timeslices.
    if let Ok(sched) = std::fs::read_to_string(task.join("schedstat")) {
        if let Some(ns) = sched.split_whitespace().next().and_then(|f| f.parse().ok()) {
            return Some(ns);
        }
    }
    // Clock ticks are 100 Hz on every Linux configuration that matters here (USER_HZ).
    const NS_PER_TICK: u64 = 10_000_000;
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some((ticks(11)? + ticks(12)?) * NS_PER_TICK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{one_spinner_at_a_time, opts};

    #[test]
    fn crossbeam_ping_pong_records_every_round() {
        let _spinning = one_spinner_at_a_time();
        let r = crossbeam_ping_pong(1_000, None, &opts()).unwrap();
        assert_eq!(r.rtt_half.len(), 1_000);
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
