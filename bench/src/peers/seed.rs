//! `seed`: the original Go design ported literally.
//!
//! A `Mutex<HashMap<String, SyncSender<Msg>>>` router maps each topic name to the bounded channel
//! of that topic's handler thread; a publisher locks the map on every publish, copies the sender
//! out, unlocks, then sends (blocking while the channel is full). The sender clone stands in for
//! Go's copy of a channel value: in Rust it is one atomic increment and, when dropped, one
//! decrement on the channel's sender count. The map uses std's default (SipHash) hasher, as a
//! literal port would. Shutdown clears the map, which drops the last senders: Go's `close(ch)`.
//!
//! One thread per topic (plus one per producer): 10,000 topics spawn 10,000 threads. That is
//! allowed up to [`RunOpts::max_threads`]; above it [`run`] returns [`Error::TooManyThreads`].
//! Handler threads get a 128 KiB stack (Go starts goroutines far smaller) and cost, besides it,
//! `capacity × (message + 8 B)` of channel buffer each.
//!
//! Pinning: none. Thousands of threads block in the channels; the kernel places them.

use std::collections::HashMap;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::thread;

use crate::harness::{by_payload, finish, join, spawn, Error, Gate, RunOpts, RunResult};
use crate::verify::Checker;
use crate::workload::{BenchMsg, Plan, Workload};

/// Stack of a topic handler thread.
const HANDLER_STACK: usize = 128 * 1024;

type Router<const N: usize> = Mutex<HashMap<String, SyncSender<BenchMsg<N>>>>;

/// Runs the workload through the seed design.
pub fn run(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    by_payload!(w.payload, run_n(w, opts))
}

fn run_n<const N: usize>(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    opts.validate()?;
    w.validate()?;
    let needed = w.topics + w.producers;
    if needed > opts.max_threads {
        return Err(Error::TooManyThreads {
            needed,
            max: opts.max_threads,
        });
    }
    let Plan {
        publishers,
        expected,
    } = w.plan()?;
    let (sampling, consume) = (opts.sampling(), opts.consume);
    let names = w.topic_names();
    let router: Router<N> = Mutex::new(HashMap::with_capacity(w.topics));
    let gate = Gate::new();
    let (names, router, gate, expected) = (&names, &router, &gate, &expected);

    thread::scope(|s| {
        let mut handlers = Vec::with_capacity(w.topics);
        let mut producers = Vec::with_capacity(w.producers);
        let spawned: Result<(), Error> = (|| {
            for (t, name) in names.iter().enumerate() {
                let (tx, rx) = mpsc::sync_channel::<BenchMsg<N>>(opts.capacity);
                lock(router).insert(name.clone(), tx);
                // Cannot truncate: validate() bounds topics by u32::MAX.
                let mut checker = Checker::new(expected, [t as u32], sampling).consuming(consume);
                handlers.push(spawn(
                    s,
                    format!("seed-{name}"),
                    Some(HANDLER_STACK),
                    move || {
                        for msg in rx {
                            checker.record(&msg);
                        }
                        checker
                    },
                )?);
            }
            for publisher in publishers {
                let name = format!("seed-producer-{}", publisher.producer());
                producers.push(spawn(s, name, None, move || {
                    if gate.wait() {
                        publisher.publish_all(sampling, |msg: BenchMsg<N>| {
                            let tx = lock(router).get(&names[msg.topic as usize]).cloned();
                            // Fails only if the handler is gone; the verdict then shows it missing.
                            if let Some(tx) = tx {
                                let _ = tx.send(msg);
                            }
                        });
                    }
                })?);
            }
            Ok(())
        })();
        if let Err(e) = spawned {
            gate.cancel();
            lock(router).clear();
            return Err(e);
        }
        let start = gate.open(producers.len());
        producers.into_iter().for_each(join);
        lock(router).clear();
        let checkers = handlers.into_iter().map(join).collect();
        Ok(finish(start, checkers))
    })
}

fn lock<const N: usize>(
    router: &Router<N>,
) -> std::sync::MutexGuard<'_, HashMap<String, SyncSender<BenchMsg<N>>>> {
    router.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{assert_exact, opts, small, DISTRIBUTIONS};

    #[test]
    fn delivers_exactly_once_in_order() {
        for dist in DISTRIBUTIONS {
            for payload in [16, 256] {
                let w = small(2, dist, payload);
                assert_exact(&w, run(&w, &opts()));
            }
        }
    }

    #[test]
    fn refuses_more_threads_than_allowed() {
        let w = small(2, DISTRIBUTIONS[0], 16);
        let o = RunOpts {
            max_threads: 65,
            ..opts()
        };
        assert!(matches!(
            run(&w, &o),
            Err(Error::TooManyThreads {
                needed: 66,
                max: 65
            })
        ));
    }
}
