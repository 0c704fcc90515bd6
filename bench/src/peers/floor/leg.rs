//! One leg of a bare ping-pong, timed directly: the floors of the bus's one-leg latency.
//!
//! The pinger (last core) reads the clock, stores the time and the round number into one
//! cache-padded pair of atomics and spins for the reply; the ponger (core 0) waits for the round
//! number, reads the clock, records the difference (publish → entry, one leg) and answers through
//! a second cache-padded atomic. That is the bus ping-pong of
//! [`runner::ping_pong`](crate::runner::ping_pong) with the bus replaced by one store: the same
//! cores, the same clock (`Instant`, one read on each side of the leg), the same reply, the same
//! warm-up and histograms, so the legs differ only by what carries the message.
//!
//! [`atomic_leg`]'s ponger spins on the load, back to back: the busy-spinning bus's floor. A
//! parking consumer's floor at light load (a ponger that parks, unparked after the store) is
//! the bare side of [`runner::light_turns`](crate::runner::light_turns).

use std::hint;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

use crate::harness::{join, spawn, Cores, Error, Gate, RunOpts};

/// What [`atomic_leg`] measured.
#[derive(Clone, Debug)]
pub struct Leg {
    /// Store → the other core's load, per recorded round, in ns (both sides read one clock).
    pub one_way: Histogram<u64>,
    /// Round trip / 2 per recorded round, in ns.
    pub rtt_half: Histogram<u64>,
    /// Recorded rounds.
    pub rounds: u64,
}

/// The ping: written by the pinger only, read by the ponger.
struct Ping {
    /// Round number + 1 of the last ping (0: none yet).
    seq: AtomicU64,
    /// Nanoseconds since the run's base at which that ping was sent.
    sent_at: AtomicU64,
}

/// A histogram from 1 ns to 100 s that never resizes (as the bus ping-pong's).
fn fixed_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3)
        .expect("1 ns ..= 100 s at 3 significant figures is a valid histogram")
}

/// `rounds` recorded rounds (after `rounds / 10` of warm-up) of the one-leg atomic ping-pong.
pub fn atomic_leg(rounds: u64, opts: &RunOpts) -> Result<Leg, Error> {
    let cores = Cores::detect(opts.pin);
    cores.require(2)?;
    let ping = CachePadded::new(Ping {
        seq: AtomicU64::new(0),
        sent_at: AtomicU64::new(0),
    });
    let reply = CachePadded::new(AtomicU64::new(0));
    let warmup = rounds / 10;
    let total = warmup + rounds;
    let base = Instant::now();
    let last_core = cores.available() - 1;
    let gate = Gate::new();
    let (cores, gate, ping, reply) = (&cores, &gate, &ping, &reply);
    let (one_way, rtt_half) = thread::scope(|s| {
        let ponger = spawn(s, "floor-leg-pong".into(), None, move || {
            cores.pin(0);
            let mut one_way = fixed_histogram();
            if !gate.wait() {
                return one_way;
            }
            for seq in 0..total {
                // Acquire: pairs with the pinger's Release store of `seq`, so its `sent_at`
                // store (made before) is visible to the load below.
                while ping.seq.load(Ordering::Acquire) != seq + 1 {
                    hint::spin_loop();
                }
                let now = base.elapsed().as_nanos() as u64;
                // Relaxed: ordered by the Acquire load of `seq` above.
                let sent_at = ping.sent_at.load(Ordering::Relaxed);
                if seq >= warmup {
                    one_way.saturating_record(now.saturating_sub(sent_at));
                }
                // Release: pairs with the pinger's Acquire load of the reply (as the bus
                // ping-pong's actor answers).
                reply.store(seq + 1, Ordering::Release);
            }
            one_way
        })?;
        let pinger = spawn(s, "floor-leg-ping".into(), None, move || {
            cores.pin(last_core);
            let mut rtt_half = fixed_histogram();
            if !gate.wait() {
                return rtt_half;
            }
            for seq in 0..total {
                let t0 = Instant::now();
                // Relaxed: published by the Release store of `seq` below.
                ping.sent_at
                    .store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
                // Release: publishes `sent_at`; pairs with the ponger's Acquire load of `seq`.
                ping.seq.store(seq + 1, Ordering::Release);
                // Acquire: pairs with the ponger's Release store of the reply.
                while reply.load(Ordering::Acquire) != seq + 1 {
                    hint::spin_loop();
                }
                if seq >= warmup {
                    rtt_half.saturating_record(t0.elapsed().as_nanos() as u64 / 2);
                }
            }
            rtt_half
        });
        let pinger = match pinger {
            Ok(p) => p,
            Err(e) => {
                gate.cancel();
                return Err(e);
            }
        };
        gate.open(2);
        let rtt_half = join(pinger);
        Ok((join(ponger), rtt_half))
    })?;
    cores.check()?;
    Ok(Leg {
        one_way,
        rtt_half,
        rounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{one_spinner_at_a_time, opts};

    #[test]
    fn atomic_leg_records_every_round_on_both_sides() {
        let _spinning = one_spinner_at_a_time();
        let leg = atomic_leg(2_000, &opts()).unwrap();
        assert_eq!(leg.one_way.len(), 2_000);
        assert_eq!(leg.rtt_half.len(), 2_000);
        assert_eq!(leg.rounds, 2_000);
    }
}
