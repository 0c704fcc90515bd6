//! `disruptor`: the `disruptor` crate (v4), the LMAX ring in Rust.
//!
//! One pre-allocated ring and one consumer thread managed by the crate, waiting with `BusySpin`.
//! A disruptor has no routing, so the consumer handles every topic: this is the single-shard case.
//! One producer uses `build_single_producer`; several use `build_multi_producer` with one cloned
//! handle per producer thread. Each message is published on its own with `Producer::publish`
//! (no batch publication), which copies the `BenchMsg` into the claimed slot. The consumer's
//! [`Checker`] lives in the processor's state and is handed back when the crate drops that state
//! at shutdown (when the last producer handle is dropped).
//!
//! [`run_fenced`] adds one `SeqCst` fence after each publish: the fence a consumer that parks
//! needs on the publishing side (the Dekker pair of the publisher's push and its load of the
//! sleep flag, which shardbus's default wait pays on every push), so that row measures this
//! ring with the cost of parking safely and nothing else of a runtime.
//!
//! [`run_enveloped`] gives each slot a `u32` topic index beside the message, which the consumer
//! reads, laid out as a shardbus lane's slot (its `Envelope`): a ring that must tell topics apart
//! carries those bytes too, so that row measures this ring moving what a lane moves (48 bytes per
//! slot for 16 B of payload against 40, 3 cache lines per 4 messages against 5 per 8).
//!
//! Needs 2 cores: the consumer spins on one. Pinning: the consumer on the last core (through the
//! crate's `pin_at_core`, given only ids the OS reported because it panics on others); producers
//! round-robin over the remaining cores.

use std::sync::atomic::{fence, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use ::disruptor::{
    build_multi_producer, build_single_producer, BusySpin, ProcessorSettings, Producer, Sequence,
};

use crate::harness::{by_payload, finish, join, spawn, Cores, Error, Gate, RunOpts, RunResult};
use crate::verify::Checker;
use crate::workload::{BenchMsg, Plan, Publisher, Sampling, Workload};

/// Runs the workload through one disruptor ring.
pub fn run(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    by_payload!(w.payload, run_n(w, opts, false))
}

/// [`run`] with each slot holding a topic index beside the message, as a shardbus lane's
/// slot does (48 bytes for 16 B of payload, against the message's 40; see the module docs).
pub fn run_enveloped(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    by_payload!(w.payload, run_wide(w, opts))
}

fn run_wide<const N: usize>(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    run_e::<N, Enveloped<N>>(w, opts, false)
}

fn run_n<const N: usize>(w: &Workload, opts: &RunOpts, fenced: bool) -> Result<RunResult, Error> {
    run_e::<N, BenchMsg<N>>(w, opts, fenced)
}

/// What a slot holds: the message alone, or the message beside a topic index.
trait Event<const N: usize>: Send + Sync + 'static {
    const ZERO: Self;
    fn wrap(msg: BenchMsg<N>) -> Self;
    fn msg(&self) -> &BenchMsg<N>;
    /// The topic index the consumer reads (a shard reads it to dispatch).
    fn topic(&self) -> u32;
}

impl<const N: usize> Event<N> for BenchMsg<N> {
    const ZERO: Self = BenchMsg::<N>::ZERO;
    #[inline(always)]
    fn wrap(msg: BenchMsg<N>) -> Self {
        msg
    }
    #[inline(always)]
    fn msg(&self) -> &BenchMsg<N> {
        self
    }
    #[inline(always)]
    fn topic(&self) -> u32 {
        self.topic
    }
}

/// A message and the index of its topic, laid out as a shardbus lane's slot.
struct Enveloped<const N: usize> {
    topic: u32,
    msg: BenchMsg<N>,
}

impl<const N: usize> Event<N> for Enveloped<N> {
    const ZERO: Self = Self {
        topic: 0,
        msg: BenchMsg::<N>::ZERO,
    };
    #[inline(always)]
    fn wrap(msg: BenchMsg<N>) -> Self {
        Self {
            topic: msg.topic,
            msg,
        }
    }
    #[inline(always)]
    fn msg(&self) -> &BenchMsg<N> {
        &self.msg
    }
    #[inline(always)]
    fn topic(&self) -> u32 {
        self.topic
    }
}

/// [`run`] with a `SeqCst` fence after each publish (see the module docs).
pub fn run_fenced(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    by_payload!(w.payload, run_n(w, opts, true))
}

fn run_e<const N: usize, E: Event<N>>(
    w: &Workload,
    opts: &RunOpts,
    fenced: bool,
) -> Result<RunResult, Error> {
    opts.validate()?;
    let Plan {
        publishers,
        expected,
    } = w.plan()?;
    let cores = Cores::detect(opts.pin);
    cores.require(2)?;
    let consumer_core = cores.id(cores.available() - 1);
    let sampling = opts.sampling();
    let (to_runner, from_consumer) = mpsc::channel();
    let report = Report {
        checker: Some(Checker::for_all(&expected, sampling).consuming(opts.consume)),
        to_runner,
    };
    let size = opts.capacity.next_power_of_two();
    let factory = || E::ZERO;
    let handler = |r: &mut Report, ev: &E, _: Sequence, _: bool| {
        std::hint::black_box(ev.topic());
        r.record(ev.msg())
    };

    let start = if publishers.len() == 1 {
        let mut builder = build_single_producer(size, factory, BusySpin);
        if let Some(core) = consumer_core {
            builder = builder.pin_at_core(core);
        }
        let producer = builder
            .handle_events_and_state_with(handler, move || report)
            .build();
        drive(vec![producer], publishers, sampling, &cores, fenced)?
    } else {
        let mut builder = build_multi_producer(size, factory, BusySpin);
        if let Some(core) = consumer_core {
            builder = builder.pin_at_core(core);
        }
        let producer = builder
            .handle_events_and_state_with(handler, move || report)
            .build();
        let mut handles: Vec<_> = (1..publishers.len()).map(|_| producer.clone()).collect();
        handles.push(producer);
        drive(handles, publishers, sampling, &cores, fenced)?
    };
    let checker = from_consumer
        .recv()
        .expect("the consumer state hands its checker back when the crate drops it");
    cores.check()?;
    Ok(finish(start, vec![checker]))
}

/// Runs one producer thread per handle; returns the start time. The consumer has shut down when
/// this returns: each thread drops its handle, and dropping the last one joins the consumer.
fn drive<const N: usize, E: Event<N>, P>(
    handles: Vec<P>,
    publishers: Vec<Publisher>,
    sampling: Sampling,
    cores: &Cores,
    fenced: bool,
) -> Result<Instant, Error>
where
    P: Producer<E> + Send,
{
    let gate = Gate::new();
    let producer_cores = cores.available() - 1;
    thread::scope(|s| {
        let mut threads = Vec::with_capacity(handles.len());
        for (i, (mut handle, publisher)) in handles.into_iter().zip(publishers).enumerate() {
            let gate = &gate;
            let name = format!("disruptor-producer-{i}");
            let spawned = spawn(s, name, None, move || {
                cores.pin(i % producer_cores);
                if !gate.wait() {
                    return;
                }
                if fenced {
                    publisher.publish_all(sampling, |msg| {
                        handle.publish(|slot| *slot = E::wrap(msg));
                        fence(Ordering::SeqCst);
                    });
                } else {
                    publisher
                        .publish_all(sampling, |msg| handle.publish(|slot| *slot = E::wrap(msg)));
                }
            });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    gate.cancel();
                    return Err(e);
                }
            }
        }
        let start = gate.open(threads.len());
        threads.into_iter().for_each(join);
        Ok(start)
    })
}

/// The consumer's state: its checker, sent to the runner when the crate drops the state.
struct Report {
    checker: Option<Checker>,
    to_runner: mpsc::Sender<Checker>,
}

impl Report {
    fn record<const N: usize>(&mut self, msg: &BenchMsg<N>) {
        if let Some(checker) = &mut self.checker {
            checker.record(msg);
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(checker) = self.checker.take() {
            // Fails only if the runner is gone, and then nobody wants the checker.
            let _ = self.to_runner.send(checker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{
        assert_exact, one_spinner_at_a_time, opts, small, DISTRIBUTIONS,
    };

    /// The slot sizes the module docs state.
    #[test]
    fn an_enveloped_slot_carries_the_topic_index_beside_the_message() {
        assert_eq!(std::mem::size_of::<BenchMsg<16>>(), 40);
        assert_eq!(std::mem::size_of::<Enveloped<16>>(), 48);
        let msg = BenchMsg::<16> {
            topic: 7,
            ..BenchMsg::ZERO
        };
        let ev = Enveloped::wrap(msg);
        assert_eq!((ev.topic(), ev.msg()), (7, &msg));
    }

    #[test]
    fn delivers_exactly_once_in_order() {
        let _spinning = one_spinner_at_a_time();
        for dist in DISTRIBUTIONS {
            for (producers, payload) in [(1, 16), (2, 16), (2, 256)] {
                let w = small(producers, dist, payload);
                assert_exact(&w, run(&w, &opts()));
                assert_exact(&w, run_fenced(&w, &opts()));
                assert_exact(&w, run_enveloped(&w, &opts()));
            }
        }
    }
}
