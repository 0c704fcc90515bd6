//! `floor`: bare hand-offs, the floors every peer is measured against.
//!
//! Latency, one-way = round trip / 2: (a) [`atomic_ping_pong`], one cache-padded `AtomicU64`
//! bounced between two threads; (c) [`array_queue_ping_pong`], two crossbeam `ArrayQueue`s;
//! and one leg timed directly, [`atomic_leg`].
//! Throughput, one producer and one consumer moving the workload's messages: (b) [`ring`] and
//! [`ring_batch`], our own SPSC ring (the ceiling: cached indices, batched index publication,
//! a batch consumer; single and batch publish); [`array_queue`]; (d) [`std_sync_channel`] and
//! [`crossbeam_bounded`]; and the `fsync never` pipeline's, [`ring_framed_append`] (the ring
//! into a framed append) and its other splits of the same work, [`ring_framed_append_writer`]
//! and [`ring_preframed_append`]. The throughput floors take one-producer workloads only
//! ([`Error::Unsupported`] otherwise); the topics are just data to them. Their consumers run
//! the checker of [`RunOpts::consume`] like every runner's.
//!
//! The spinning floors (all but the two channels) wait with `hint::spin_loop()` and never back
//! off: a floor measures the hand-off itself, and `Backoff`'s growing spins would add their own
//! delay. They need 2 cores and refuse to run on fewer. Pinning: producer or pinger on core 0,
//! consumer or ponger on core 1, except [`atomic_leg`], placed as the bus ping-pong it is
//! compared with (ponger on core 0, pinger on the last core).

mod framed;
mod leg;
mod ring;

pub use framed::{
    ring_framed_append, ring_framed_append_synced, ring_framed_append_writer,
    ring_preframed_append, ring_preframed_append_synced,
};
pub use leg::{atomic_leg, Leg};

use std::hint;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

use crate::harness::{by_payload, finish, join, spawn, Cores, Error, Gate, RunOpts, RunResult};
use crate::verify::{latency_histogram, record_latency, Checker};
use crate::workload::{BenchMsg, Plan, Workload};

/// Outcome of a ping-pong floor.
#[derive(Clone, Debug)]
pub struct PingPong {
    /// Round trip / 2 per round, in ns. Each round is timed on its own, so every value includes
    /// one `Instant::now()`; the first `rounds / 10` rounds warm up unrecorded.
    pub one_way: Histogram<u64>,
    /// Recorded rounds.
    pub rounds: u64,
    /// Wall time of the recorded rounds.
    pub elapsed: Duration,
}

/// (a) One `CachePadded<AtomicU64>` bounced between two pinned threads.
pub fn atomic_ping_pong(rounds: u64, opts: &RunOpts) -> Result<PingPong, Error> {
    let cell = CachePadded::new(AtomicU64::new(0));
    // Release/Acquire throughout, what a hand-off that publishes data needs: each store pairs
    // with the other thread's load of the same value. On x86 they compile like Relaxed.
    ping_pong(
        rounds,
        opts,
        |i| {
            cell.store(2 * i + 1, Ordering::Release);
            while cell.load(Ordering::Acquire) != 2 * i + 2 {
                hint::spin_loop();
            }
        },
        |i| {
            while cell.load(Ordering::Acquire) != 2 * i + 1 {
                hint::spin_loop();
            }
            cell.store(2 * i + 2, Ordering::Release);
        },
    )
}

/// (c) A capacity-1 crossbeam `ArrayQueue` each way, as the latency reference for queues.
pub fn array_queue_ping_pong(rounds: u64, opts: &RunOpts) -> Result<PingPong, Error> {
    let (there, back) = (ArrayQueue::new(1), ArrayQueue::new(1));
    ping_pong(
        rounds,
        opts,
        |i| {
            push_spin(&there, i);
            pop_spin(&back);
        },
        |_| push_spin(&back, pop_spin(&there)),
    )
}

/// (b) Our SPSC ring, one `push` per message, drained by a batch consumer: the throughput
/// ceiling of a single-message hand-off.
pub fn ring(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    by_payload!(w.payload, ring_n(w, opts))
}

/// Messages per `push_slice` of [`ring_batch`] (as `publish_batch` of 64 in the suite).
pub const RING_BATCH: usize = 64;

/// (b) Our SPSC ring, [`RING_BATCH`] messages per `push_slice` (one tail publication each),
/// drained by a batch consumer: the throughput ceiling of a batched hand-off.
pub fn ring_batch(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    by_payload!(w.payload, ring_batch_n(w, opts))
}

/// Plain SPSC over a crossbeam `ArrayQueue`, spinning when full or empty.
pub fn array_queue(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    by_payload!(w.payload, array_queue_n(w, opts))
}

/// (d) Plain SPSC over `std::sync::mpsc::sync_channel` (blocking).
pub fn std_sync_channel(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    by_payload!(w.payload, std_sync_channel_n(w, opts))
}

/// (d) Plain SPSC over `crossbeam_channel::bounded` (blocking).
pub fn crossbeam_bounded(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    by_payload!(w.payload, crossbeam_bounded_n(w, opts))
}

fn ring_n<const N: usize>(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    opts.validate()?;
    let (mut tx, mut rx) = ring::channel(opts.capacity);
    let drain = move |c: &mut Checker| rx.drain(|msg: BenchMsg<N>| c.record(&msg));
    spsc::<N>(w, opts, true, move |msg| tx.push(msg), drain)
}

fn ring_batch_n<const N: usize>(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    opts.validate()?;
    let (tx, mut rx) = ring::channel(opts.capacity);
    let mut batcher = Batcher {
        tx,
        buf: Vec::with_capacity(RING_BATCH),
    };
    let send = move |msg| {
        batcher.buf.push(msg);
        if batcher.buf.len() == RING_BATCH {
            batcher.flush();
        }
    };
    let drain = move |c: &mut Checker| rx.drain(|msg: BenchMsg<N>| c.record(&msg));
    spsc::<N>(w, opts, true, send, drain)
}

/// Gathers messages and hands them to the ring a slice at a time; flushes the rest when dropped
/// (before the ring's producer end closes it).
struct Batcher<T: Copy> {
    tx: ring::Producer<T>,
    buf: Vec<T>,
}

impl<T: Copy> Batcher<T> {
    fn flush(&mut self) {
        self.tx.push_slice(&self.buf);
        self.buf.clear();
    }
}

impl<T: Copy> Drop for Batcher<T> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A consumer that takes one message per call, for [`spsc`].
fn one_at_a_time<const N: usize>(
    mut recv: impl FnMut() -> Option<BenchMsg<N>> + Send,
) -> impl FnMut(&mut Checker) -> bool + Send {
    move |c| match recv() {
        Some(msg) => {
            c.record(&msg);
            true
        }
        None => false,
    }
}

fn array_queue_n<const N: usize>(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    opts.validate()?;
    let lane = Arc::new(Lane {
        queue: ArrayQueue::new(opts.capacity),
        closed: AtomicBool::new(false),
    });
    let tx = LaneSender(Arc::clone(&lane));
    spsc::<N>(
        w,
        opts,
        true,
        move |msg| tx.push(msg),
        one_at_a_time(move || lane.pop()),
    )
}

fn std_sync_channel_n<const N: usize>(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    opts.validate()?;
    let (tx, rx) = mpsc::sync_channel(opts.capacity);
    // A send fails only if the consumer is gone; the verdict then shows the message missing.
    spsc::<N>(
        w,
        opts,
        false,
        move |msg| {
            let _ = tx.send(msg);
        },
        one_at_a_time(move || rx.recv().ok()),
    )
}

fn crossbeam_bounded_n<const N: usize>(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    opts.validate()?;
    let (tx, rx) = crossbeam_channel::bounded(opts.capacity);
    // A send fails only if the consumer is gone; the verdict then shows the message missing.
    spsc::<N>(
        w,
        opts,
        false,
        move |msg| {
            let _ = tx.send(msg);
        },
        one_at_a_time(move || rx.recv().ok()),
    )
}

/// Moves a one-producer workload from `send` (dropped when the producer is done, which must close
/// the channel) to `consume` (records one or more messages into the checker; `false` once closed
/// and drained). `spins`: the ends busy-wait.
fn spsc<const N: usize>(
    w: &Workload,
    opts: &RunOpts,
    spins: bool,
    send: impl FnMut(BenchMsg<N>) + Send,
    mut consume: impl FnMut(&mut Checker) -> bool + Send,
) -> Result<RunResult, Error> {
    let Plan {
        mut publishers,
        expected,
    } = w.plan()?;
    let publisher = match (publishers.pop(), publishers.is_empty()) {
        (Some(p), true) => p,
        _ => {
            return Err(Error::Unsupported(
                "the SPSC floors take exactly one producer",
            ))
        }
    };
    let cores = Cores::detect(opts.pin);
    if spins {
        cores.require(2)?;
    }
    let sampling = opts.sampling();
    let mut checker = Checker::for_all(&expected, sampling).consuming(opts.consume);
    let gate = Gate::new();
    let (cores, gate) = (&cores, &gate);
    thread::scope(|s| {
        let consumer = spawn(s, "floor-consumer".into(), None, move || {
            cores.pin(1);
            if gate.wait() {
                while consume(&mut checker) {}
            }
            checker
        })?;
        let producer = spawn(s, "floor-producer".into(), None, move || {
            cores.pin(0);
            if gate.wait() {
                publisher.publish_all(sampling, send);
            }
        });
        let producer = match producer {
            Ok(p) => p,
            Err(e) => {
                gate.cancel();
                return Err(e);
            }
        };
        let start = gate.open(2);
        join(producer);
        let checker = join(consumer);
        cores.check()?;
        Ok(finish(start, vec![checker]))
    })
}

/// Runs `warmup + rounds` rounds of `ping(i)` against `pong(i)` on two pinned threads, timing each
/// recorded round on the pinging side.
fn ping_pong(
    rounds: u64,
    opts: &RunOpts,
    mut ping: impl FnMut(u64) + Send,
    mut pong: impl FnMut(u64) + Send,
) -> Result<PingPong, Error> {
    let cores = Cores::detect(opts.pin);
    cores.require(2)?;
    let warmup = rounds / 10;
    let total = warmup + rounds;
    let gate = Gate::new();
    let (cores, gate) = (&cores, &gate);
    thread::scope(|s| {
        let ponger = spawn(s, "floor-ponger".into(), None, move || {
            cores.pin(1);
            if gate.wait() {
                (0..total).for_each(&mut pong);
            }
        })?;
        let pinger = spawn(s, "floor-pinger".into(), None, move || {
            cores.pin(0);
            let mut one_way = latency_histogram();
            if !gate.wait() {
                return (one_way, Duration::ZERO);
            }
            (0..warmup).for_each(&mut ping);
            let start = Instant::now();
            let mut last = start;
            for i in warmup..total {
                ping(i);
                let now = Instant::now();
                // Truncation is harmless: a round trip does not take 584 years.
                record_latency(&mut one_way, (now - last).as_nanos() as u64 / 2);
                last = now;
            }
            (one_way, last - start)
        });
        let pinger = match pinger {
            Ok(p) => p,
            Err(e) => {
                gate.cancel();
                return Err(e);
            }
        };
        gate.open(2);
        join(ponger);
        let (one_way, elapsed) = join(pinger);
        cores.check()?;
        Ok(PingPong {
            one_way,
            rounds,
            elapsed,
        })
    })
}

/// The host's compute scaling: `rounds` of a dependent 64-bit mix on one pinned thread, then on
/// `threads` pinned threads at once (the same `rounds` each); returns their aggregate rate over
/// the single thread's. The ceiling of any core-scaling figure on this host: a guest whose vCPUs
/// share one physical core shows about 1.0 here, a machine with real cores about `threads`.
pub fn cpu_scaling(threads: usize, rounds: u64, opts: &RunOpts) -> Result<f64, Error> {
    let cores = Cores::detect(opts.pin);
    cores.require(threads)?;
    let work = |rounds: u64| {
        let mut x = 1u64;
        for _ in 0..rounds {
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
        }
        hint::black_box(x)
    };
    let timed = |n: usize| -> Result<Duration, Error> {
        let gate = Gate::new();
        let (cores, gate) = (&cores, &gate);
        thread::scope(|s| {
            let mut handles = Vec::with_capacity(n);
            for i in 0..n {
                let spawned = spawn(s, format!("floor-cpu-{i}"), None, move || {
                    cores.pin(i);
                    if gate.wait() {
                        work(rounds);
                    }
                    Instant::now()
                });
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        gate.cancel();
                        return Err(e);
                    }
                }
            }
            let start = gate.open(n);
            let end = handles.into_iter().map(join).max().unwrap_or(start);
            Ok(end - start)
        })
    };
    let one = timed(1)?;
    let many = timed(threads)?;
    cores.check()?;
    Ok(threads as f64 * one.as_secs_f64() / many.as_secs_f64())
}

fn push_spin<T>(queue: &ArrayQueue<T>, mut value: T) {
    while let Err(back) = queue.push(value) {
        value = back;
        hint::spin_loop();
    }
}

fn pop_spin<T>(queue: &ArrayQueue<T>) -> T {
    loop {
        if let Some(value) = queue.pop() {
            return value;
        }
        hint::spin_loop();
    }
}

/// An `ArrayQueue` used as a closable SPSC channel.
struct Lane<T> {
    queue: ArrayQueue<T>,
    /// Set by the producer's [`LaneSender`] drop, after its last push.
    closed: AtomicBool,
}

impl<T> Lane<T> {
    /// Spins until an item arrives; `None` once the sender is gone and the queue drained.
    fn pop(&self) -> Option<T> {
        loop {
            if let Some(value) = self.queue.pop() {
                return Some(value);
            }
            // Acquire: pairs with the Release store in `LaneSender::drop`, so every push made
            // before closing is visible to the pop below.
            if self.closed.load(Ordering::Acquire) {
                return self.queue.pop();
            }
            hint::spin_loop();
        }
    }
}

/// The producer's handle on a [`Lane`]; dropping it closes the lane.
struct LaneSender<T>(Arc<Lane<T>>);

impl<T> LaneSender<T> {
    fn push(&self, value: T) {
        push_spin(&self.0.queue, value);
    }
}

impl<T> Drop for LaneSender<T> {
    fn drop(&mut self) {
        // Release: orders every push before the close; pairs with the Acquire load in `Lane::pop`.
        self.0.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{
        assert_exact, one_spinner_at_a_time, opts, small, DISTRIBUTIONS,
    };

    type Floor = fn(&Workload, &RunOpts) -> Result<RunResult, Error>;
    const THROUGHPUT: [(&str, Floor); 5] = [
        ("ring", ring),
        ("ring_batch", ring_batch),
        ("array_queue", array_queue),
        ("std_sync_channel", std_sync_channel),
        ("crossbeam_bounded", crossbeam_bounded),
    ];

    #[test]
    fn throughput_floors_deliver_exactly_once_in_order() {
        let _spinning = one_spinner_at_a_time();
        for (name, floor) in THROUGHPUT {
            for dist in DISTRIBUTIONS {
                for payload in [16, 256] {
                    let w = small(1, dist, payload);
                    assert_exact(&w, floor(&w, &opts()));
                }
            }
            let w = small(2, DISTRIBUTIONS[0], 16);
            assert!(
                matches!(floor(&w, &opts()), Err(Error::Unsupported(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn cpu_scaling_is_a_finite_positive_ratio() {
        // Behaviour only: the ratio's value is a timing (a loaded machine can put it
        // anywhere), so the test asserts that both timed runs happened and divided.
        let _spinning = one_spinner_at_a_time();
        let s = cpu_scaling(2, 1_000_000, &opts()).unwrap();
        assert!(s.is_finite() && s > 0.0, "{s}");
    }

    #[test]
    fn ping_pongs_record_every_round() {
        let _spinning = one_spinner_at_a_time();
        for floor in [atomic_ping_pong, array_queue_ping_pong] {
            let r = floor(1_000, &opts()).unwrap();
            assert_eq!(r.one_way.len(), 1_000);
        }
    }
}
