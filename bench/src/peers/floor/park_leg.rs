//! One leg of a bare park/unpark ping-pong, timed directly: the floor of a parked consumer's
//! leg at light load.
//!
//! The ponger (core 0) parks (`std::thread::park`, a futex on Linux) until the round number it
//! waits for is there, reads the clock, records the difference (publish → wake-up, one leg)
//! and answers through a cache-padded atomic; it never spins, so every leg is a wake-up. The
//! pinger (last core) sends one ping every `interval`: it stores the time and the round
//! number, unparks the ponger and spins for the reply. The light-load rows' shape with the
//! bus (or the channel) replaced by a store and an unpark: what waking a parked thread costs
//! on this machine.

use std::hint;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

use crate::harness::{join, spawn, Cores, Error, Gate, RunOpts};

/// The ping: written by the pinger only, read by the ponger.
struct Ping {
    /// Round number + 1 of the last ping (0: none yet).
    seq: AtomicU64,
    /// Nanoseconds since the run's base at which that ping was sent.
    sent_at: AtomicU64,
}

/// `rounds` recorded rounds (after `rounds / 10` of warm-up), one every `interval`: the
/// histogram of ping → the parked ponger awake and reading the clock, in ns.
pub fn park_leg(rounds: u64, interval: Duration, opts: &RunOpts) -> Result<Histogram<u64>, Error> {
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
    let one_way = thread::scope(|s| {
        let ponger = spawn(s, "floor-park-pong".into(), None, move || {
            cores.pin(0);
            let mut one_way = Histogram::new_with_bounds(1, 100_000_000_000, 3)
                .expect("1 ns ..= 100 s at 3 significant figures is a valid histogram");
            if !gate.wait() {
                return one_way;
            }
            for seq in 0..total {
                // Acquire: pairs with the pinger's Release store of `seq`, so its `sent_at`
                // store (made before) is visible to the load below. `park` may return
                // without an unpark: the loop parks again.
                while ping.seq.load(Ordering::Acquire) != seq + 1 {
                    thread::park();
                }
                let now = base.elapsed().as_nanos() as u64;
                // Relaxed: ordered by the Acquire load of `seq` above.
                let sent_at = ping.sent_at.load(Ordering::Relaxed);
                if seq >= warmup {
                    one_way.saturating_record(now.saturating_sub(sent_at));
                }
                // Release: pairs with the pinger's Acquire load of the reply.
                reply.store(seq + 1, Ordering::Release);
            }
            one_way
        })?;
        let wake = ponger.thread().clone();
        let waker = wake.clone();
        let pinger = spawn(s, "floor-park-ping".into(), None, move || {
            cores.pin(last_core);
            if !gate.wait() {
                return;
            }
            let mut next = Instant::now();
            for seq in 0..total {
                while Instant::now() < next {
                    hint::spin_loop();
                }
                next += interval;
                // Relaxed: published by the Release store of `seq` below.
                ping.sent_at
                    .store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
                // Release: publishes `sent_at`; pairs with the ponger's Acquire load.
                ping.seq.store(seq + 1, Ordering::Release);
                // An unpark before the ponger parks leaves it a token: none is lost.
                waker.unpark();
                // Acquire: pairs with the ponger's Release store of the reply.
                while reply.load(Ordering::Acquire) != seq + 1 {
                    hint::spin_loop();
                }
            }
        });
        let pinger = match pinger {
            Ok(p) => p,
            Err(e) => {
                gate.cancel();
                wake.unpark();
                return Err(e);
            }
        };
        gate.open(2);
        join(pinger);
        Ok(join(ponger))
    })?;
    cores.check()?;
    Ok(one_way)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{one_spinner_at_a_time, opts};

    #[test]
    fn park_leg_records_every_round() {
        let _spinning = one_spinner_at_a_time();
        let leg = park_leg(1_000, Duration::from_micros(20), &opts()).unwrap();
        assert_eq!(leg.len(), 1_000);
    }
}
