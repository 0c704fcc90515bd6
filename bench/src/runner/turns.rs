//! Light load in turns ([`light_turns`]): a parking shard, a crossbeam-channel consumer and a
//! bare park/unpark ponger all wait on core 0 for the whole run, and one pinger on the last
//! core feeds them in turn: a block of messages one `interval` apart to one side, a pause, a
//! block to the next side, round and round. Each side's blocks are spread over the same
//! seconds, so a drift of the machine falls on the three alike. Run one after the other, each
//! side's run could land in a different state of the host: on a virtual machine whose host
//! takes longer or shorter to wake a halted vCPU from one second to the next, the bare
//! wake-up's p50 at one message a millisecond read from 23 to 48 µs across two-second runs.
//!
//! The bus's actor and the channel's consumer do what they do in
//! [`ping_pong`](super::ping_pong) and [`crossbeam_ping_pong`](super::crossbeam_ping_pong),
//! and the bare ponger the same: read the clock, record publish → entry, answer through one
//! cache-padded atomic; the pinger spins for the answer.

use std::hint;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use shardbus::WaitStrategy;

use super::ping_pong::{channel_consumer, fixed_histogram, threads_cpu_ns, LatencyBus, Ping};
use crate::harness::{join, spawn, Cores, Error, RunOpts};

/// The sides, in the order of [`LightTurns::sides`].
pub const SIDES: [&str; 3] = [
    "shardbus park",
    "crossbeam-channel consumer",
    "bare park/unpark",
];

/// Thread names: the bus's shards are `sbtn-0`, `sbtn-1`, ….
const BUS_THREADS: &str = "sbtn";
const CHANNEL_THREAD: &str = "sbtn-ch";
const WAKE_THREAD: &str = "sbtn-wake";

/// About how long one block lasts: short beside the seconds a host's state holds, long beside
/// the adaptive spin budget's few messages of learning.
const BLOCK: Duration = Duration::from_millis(50);

/// The fewest messages in a block.
const BLOCK_MIN: u64 = 10;

/// The pause before each block: the side before it has long parked (its spin after the last
/// message is a few microseconds) before the next side's first message.
const PAUSE_MIN: Duration = Duration::from_micros(200);

/// One side of a run in turns.
#[derive(Clone, Debug)]
pub struct TurnSide {
    /// Publish → handler entry (send → `recv` returned; store → awake) per recorded message, ns.
    pub one_way: Histogram<u64>,
    /// Round trip / 2 per recorded message, ns.
    pub rtt_half: Histogram<u64>,
    /// The serving thread's CPU time over its recorded blocks' wall time (Linux only).
    pub cpu: Option<f64>,
    /// Each recorded block's round trip / 2, p50, ns, in the order they ran.
    pub block_p50s: Vec<u64>,
}

/// What [`light_turns`] measured.
#[derive(Clone, Debug)]
pub struct LightTurns {
    /// In the order of [`SIDES`]: the bus (its shard 0 serves), the channel, the bare wake-up.
    pub sides: [TurnSide; 3],
    /// The bus's other shard, idle all along: its CPU over the recorded wall time.
    pub idle_cpu: Option<f64>,
    /// Messages per block.
    pub block: u64,
}

/// At least `rounds` recorded messages to each side (whole blocks), one every `interval`, in
/// blocks of about 50 ms taken in turn (after one unrecorded turn of warm-up). The bus has
/// `opts.shards` shards that park ([`WaitStrategy::Park`]), `opts.fences`; its actor is on
/// shard 0 (core 0), as the other two sides are.
pub fn light_turns(rounds: u64, interval: Duration, opts: &RunOpts) -> Result<LightTurns, Error> {
    opts.validate()?;
    if interval.is_zero() || rounds == 0 {
        return Err(Error::Opts(
            "light load in turns needs an interval and rounds",
        ));
    }
    let cores = Cores::detect(opts.pin);
    cores.require(2)?;
    let block = ((BLOCK.as_nanos() / interval.as_nanos()) as u64).max(BLOCK_MIN);
    let turns = rounds.div_ceil(block);
    // Messages of the warm-up turn: a side records from this sequence number on.
    let warmup = block * SIDES.len() as u64;
    let pause = interval.max(PAUSE_MIN);

    let reply = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let base = Instant::now();
    let latency = LatencyBus::build(opts, WaitStrategy::Park, BUS_THREADS, base, warmup, &reply)?;
    let (bus, topic, back_rx) = (latency.bus, latency.topic, latency.back);
    let mut publisher = bus.publisher();
    let (tx, rx) = crossbeam_channel::bounded::<Ping>(opts.capacity.max(1));
    let wake = CachePadded::new(WakeSlot {
        seq: AtomicU64::new(0),
        sent_at: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let last_core = cores.available() - 1;
    let (cores, wake, reply) = (&cores, &wake, &*reply);
    let mut names = (0..opts.shards.max(1))
        .map(|i| format!("{BUS_THREADS}-{i}"))
        .collect::<Vec<_>>();
    names.extend([CHANNEL_THREAD.to_owned(), WAKE_THREAD.to_owned()]);
    let names = &names;

    let measured = thread::scope(|s| {
        let channel = spawn(s, CHANNEL_THREAD.into(), None, move || {
            cores.pin(0);
            channel_consumer(&rx, base, warmup, reply)
        })?;
        let bare = spawn(s, WAKE_THREAD.into(), None, move || {
            cores.pin(0);
            wake_side(wake, base, warmup, reply)
        });
        let bare = match bare {
            Ok(b) => b,
            Err(e) => {
                drop(tx);
                return Err(e);
            }
        };
        let wake_thread = bare.thread().clone();
        let pinger = spawn(s, "sbtn-pinger".into(), None, move || {
            // Whatever way the pinger ends, the bare side stops and the channel closes.
            let _stop = StopBare(wake, wake_thread.clone());
            cores.pin(last_core);
            let mut rtt = [fixed_histogram(), fixed_histogram(), fixed_histogram()];
            let mut block_hist = fixed_histogram();
            let mut block_p50s: [Vec<u64>; 3] = Default::default();
            let mut wall = [Duration::ZERO; 3];
            let mut cpu_start = None;
            let mut recorded_from = Instant::now();
            let mut seq = 0u64;
            for turn in 0..=turns {
                if turn == 1 {
                    cpu_start = threads_cpu_ns(names);
                    recorded_from = Instant::now();
                }
                // The order rotates with the turn: no side always follows the same one.
                for k in 0..SIDES.len() {
                    let side = (k + turn as usize) % SIDES.len();
                    let mut next = Instant::now() + pause;
                    let start = next;
                    block_hist.reset();
                    for _ in 0..block {
                        while Instant::now() < next {
                            hint::spin_loop();
                        }
                        next += interval;
                        let t0 = Instant::now();
                        let ping = Ping {
                            seq,
                            sent_at: base.elapsed().as_nanos() as u64,
                        };
                        let sent = match side {
                            0 => publisher.publish(topic, ping).is_ok(),
                            1 => tx.send(ping).is_ok(),
                            _ => {
                                wake.ping(ping, &wake_thread);
                                true
                            }
                        };
                        if !sent {
                            return Err(Error::Opts("a light-load side stopped taking messages"));
                        }
                        // Acquire: pairs with each side's Release store of the reply.
                        while reply.load(Ordering::Acquire) != seq + 1 {
                            hint::spin_loop();
                        }
                        if seq >= warmup {
                            let half = t0.elapsed().as_nanos() as u64 / 2;
                            rtt[side].saturating_record(half);
                            block_hist.saturating_record(half);
                        }
                        seq += 1;
                    }
                    if turn > 0 {
                        // The block's span: as scheduled, or longer if its answers fell behind.
                        wall[side] += Instant::now().max(next) - start;
                        block_p50s[side].push(block_hist.value_at_quantile(0.5));
                    }
                }
            }
            let total = recorded_from.elapsed();
            let cpu_end = threads_cpu_ns(names);
            drop(tx);
            Ok((rtt, block_p50s, wall, total, cpu_start.zip(cpu_end)))
        });
        let pinger = match pinger {
            Ok(p) => p,
            Err(e) => {
                wake.stop(bare.thread());
                return Err(e);
            }
        };
        let pinged = join(pinger);
        let channel = join(channel);
        let bare = join(bare);
        Ok::<_, Error>((pinged?, channel, bare))
    });
    bus.shutdown();
    let ((rtt, block_p50s, wall, total, cpu), channel_one_way, wake_one_way) = measured?;
    let bus_one_way = back_rx
        .recv()
        .map_err(|_| Error::Opts("the latency actor did not report"))?;
    cores.check()?;

    // CPU per side: the serving thread's on-CPU time over the run's recorded part (it sleeps
    // through the other sides' blocks) over the wall time of its own blocks.
    let shards = opts.shards.max(1);
    let delta = |i: usize| cpu.as_ref().map(|(a, b)| b[i].saturating_sub(a[i]) as f64);
    let serving = [0, shards, shards + 1];
    let [rtt_bus, rtt_channel, rtt_wake] = rtt;
    let [p_bus, p_channel, p_wake] = block_p50s;
    let side = |one_way, rtt_half, i: usize, block_p50s| TurnSide {
        one_way,
        rtt_half,
        cpu: delta(serving[i]).map(|ns| ns / wall[i].as_nanos().max(1) as f64),
        block_p50s,
    };
    Ok(LightTurns {
        sides: [
            side(bus_one_way, rtt_bus, 0, p_bus),
            side(channel_one_way, rtt_channel, 1, p_channel),
            side(wake_one_way, rtt_wake, 2, p_wake),
        ],
        idle_cpu: (shards > 1)
            .then(|| delta(1).map(|ns| ns / total.as_nanos().max(1) as f64))
            .flatten(),
        block,
    })
}

/// The bare side's ping: the pinger stores the time, then the sequence number + 1, then
/// unparks the ponger.
struct WakeSlot {
    seq: AtomicU64,
    sent_at: AtomicU64,
    stop: AtomicBool,
}

impl WakeSlot {
    fn ping(&self, ping: Ping, ponger: &Thread) {
        // Relaxed: published by the Release store of `seq` below.
        self.sent_at.store(ping.sent_at, Ordering::Relaxed);
        // Release: publishes `sent_at`; pairs with the ponger's Acquire load of `seq`.
        self.seq.store(ping.seq + 1, Ordering::Release);
        // An unpark before the ponger parks leaves it a token: none is lost.
        ponger.unpark();
    }

    fn stop(&self, ponger: &Thread) {
        // Release: pairs with the ponger's Acquire load; nothing else to publish.
        self.stop.store(true, Ordering::Release);
        ponger.unpark();
    }
}

/// Stops the bare side when the pinger ends, however it ends.
struct StopBare<'a>(&'a WakeSlot, Thread);

impl Drop for StopBare<'_> {
    fn drop(&mut self) {
        self.0.stop(&self.1);
    }
}

/// The bare side: park until a new sequence number is there, read the clock, record, answer.
fn wake_side(slot: &WakeSlot, base: Instant, warmup: u64, reply: &AtomicU64) -> Histogram<u64> {
    let mut one_way = fixed_histogram();
    let mut seen = 0;
    loop {
        // Acquire: pairs with the pinger's Release store of `seq` (so `sent_at` is visible).
        let seq = slot.seq.load(Ordering::Acquire);
        if seq == seen {
            // Acquire: pairs with `WakeSlot::stop`'s Release store.
            if slot.stop.load(Ordering::Acquire) {
                return one_way;
            }
            // `park` may return without an unpark: the loop parks again.
            thread::park();
            continue;
        }
        seen = seq;
        let now = base.elapsed().as_nanos() as u64;
        // Relaxed: ordered by the Acquire load of `seq` above.
        let sent_at = slot.sent_at.load(Ordering::Relaxed);
        // The slot holds the ping's number + 1: recorded from number `warmup` on.
        if seq > warmup {
            one_way.saturating_record(now.saturating_sub(sent_at));
        }
        // Release: pairs with the pinger's Acquire load of the reply.
        reply.store(seq, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{one_spinner_at_a_time, opts};

    #[test]
    fn every_side_records_its_rounds_in_whole_blocks() {
        let _spinning = one_spinner_at_a_time();
        let t = light_turns(
            60,
            Duration::from_micros(50),
            &RunOpts {
                shards: 2,
                ..opts()
            },
        )
        .unwrap();
        // 50 ms / 50 µs = 1,000 a block: one block per side.
        assert_eq!(t.block, 1_000);
        for side in &t.sides {
            assert_eq!(side.one_way.len(), 1_000);
            assert_eq!(side.rtt_half.len(), 1_000);
            assert_eq!(side.block_p50s.len(), 1);
            // Every serving thread's CPU was found by its name.
            assert_eq!(side.cpu.is_some(), cfg!(target_os = "linux"));
        }
        assert_eq!(t.idle_cpu.is_some(), cfg!(target_os = "linux"));
        if let Some(idle) = t.idle_cpu {
            // Each side's CPU is its own serving thread's: every one of them worked, the
            // bus's other shard did not.
            for side in &t.sides {
                assert!(
                    side.cpu.is_some_and(|cpu| cpu > idle),
                    "{:?} vs {idle}",
                    side.cpu
                );
            }
        }
    }
}
