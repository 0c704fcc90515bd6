//! `crossbeam_router`: the obvious sharded design built from off-the-shelf parts.
//!
//! One thread per shard, each with a `crossbeam_channel::bounded` inbox. A publisher hashes the
//! topic *name* with ahash under fixed keys (`RandomState::with_seeds(1, 2, 3, 4)`) and sends to
//! inbox `hash % shards`. The message carries its topic as the small id `BenchMsg::topic`; the
//! shard thread turns it back into the name through the shared name table and looks the handler
//! up by `&str` in a `HashMap<String, Box<dyn FnMut(&Msg)>>`, so each message pays a string hash
//! and compare on both sides, like a router keyed by topic name. The handler map hashes with
//! different fixed keys: under the routing keys every name in a shard shares `hash % shards`, which
//! would leave the low bits hashbrown indexes buckets with constant for power-of-two shard counts.
//!
//! Pinning: shard `i` on core `i % cores`; producers are not pinned (they block in full inboxes,
//! and there are usually more threads than cores).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::thread;

use ahash::RandomState;
use crossbeam_channel::Receiver;

use crate::harness::{by_payload, finish, join, spawn, Cores, Error, Gate, RunOpts, RunResult};
use crate::verify::Checker;
use crate::workload::{BenchMsg, Plan, Workload};

/// Routing hash keys, fixed so that topic placement is the same in every run.
const ROUTE_KEYS: (u64, u64, u64, u64) = (1, 2, 3, 4);
/// Handler-map hash keys; see the module docs for why they differ from [`ROUTE_KEYS`].
const MAP_KEYS: (u64, u64, u64, u64) = (5, 6, 7, 8);

type Handler<const N: usize> = Box<dyn FnMut(&BenchMsg<N>)>;

/// Runs the workload through `opts.shards` crossbeam-channel shards.
pub fn run(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    by_payload!(w.payload, run_n(w, opts))
}

fn run_n<const N: usize>(w: &Workload, opts: &RunOpts) -> Result<RunResult, Error> {
    opts.validate()?;
    let Plan {
        publishers,
        expected,
    } = w.plan()?;
    let shards = opts.shards;
    let (k0, k1, k2, k3) = ROUTE_KEYS;
    let route = RandomState::with_seeds(k0, k1, k2, k3);
    let shard_of = move |name: &str| (route.hash_one(name) % shards as u64) as usize;
    let names = w.topic_names();
    let mut owned = vec![Vec::new(); shards];
    for (t, name) in names.iter().enumerate() {
        // Cannot truncate: validate() bounds topics by u32::MAX.
        owned[shard_of(name)].push(t as u32);
    }
    let sampling = opts.sampling();
    let cores = Cores::detect(opts.pin);
    let gate = Gate::new();
    let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| crossbeam_channel::bounded::<BenchMsg<N>>(opts.capacity))
        .unzip();
    let (names, cores, gate, shard_of) = (&names, &cores, &gate, &shard_of);

    thread::scope(|s| {
        let mut shard_threads = Vec::with_capacity(shards);
        let mut producers = Vec::with_capacity(w.producers);
        let spawned: Result<(), Error> = (|| {
            for (i, (rx, topics)) in receivers.into_iter().zip(owned).enumerate() {
                let checker = Checker::new(&expected, topics.iter().copied(), sampling)
                    .consuming(opts.consume);
                shard_threads.push(spawn(s, format!("router-shard-{i}"), None, move || {
                    cores.pin(i);
                    shard(rx, names, &topics, checker, gate)
                })?);
            }
            for publisher in publishers {
                let inboxes = inboxes.clone();
                let name = format!("router-producer-{}", publisher.producer());
                producers.push(spawn(s, name, None, move || {
                    if gate.wait() {
                        publisher.publish_all(sampling, |msg: BenchMsg<N>| {
                            let inbox = &inboxes[shard_of(&names[msg.topic as usize])];
                            // Fails only if the shard is gone; the verdict then shows it missing.
                            let _ = inbox.send(msg);
                        });
                    }
                })?);
            }
            Ok(())
        })();
        // Producers hold their own clones: the inboxes close when the last producer ends.
        drop(inboxes);
        if let Err(e) = spawned {
            gate.cancel();
            return Err(e);
        }
        let start = gate.open(shards + producers.len());
        producers.into_iter().for_each(join);
        let checkers = shard_threads.into_iter().map(join).collect();
        cores.check()?;
        Ok(finish(start, checkers))
    })
}

/// A shard thread: builds its handler map, waits at the gate, then dispatches until the inbox
/// closes.
fn shard<const N: usize>(
    inbox: Receiver<BenchMsg<N>>,
    names: &[String],
    topics: &[u32],
    checker: Checker,
    gate: &Gate,
) -> Checker {
    let checker = Rc::new(RefCell::new(checker));
    let (k0, k1, k2, k3) = MAP_KEYS;
    let mut handlers: HashMap<String, Handler<N>, RandomState> =
        HashMap::with_capacity_and_hasher(topics.len(), RandomState::with_seeds(k0, k1, k2, k3));
    for &t in topics {
        let checker = Rc::clone(&checker);
        let handler: Handler<N> = Box::new(move |msg| checker.borrow_mut().record(msg));
        handlers.insert(names[t as usize].clone(), handler);
    }
    if gate.wait() {
        for msg in inbox.iter() {
            let handler = names
                .get(msg.topic as usize)
                .and_then(|n| handlers.get_mut(n.as_str()));
            match handler {
                Some(handle) => handle(&msg),
                // Not this shard's topic: the checker counts it as unexpected.
                None => checker.borrow_mut().record(&msg),
            }
        }
    }
    drop(handlers);
    match Rc::try_unwrap(checker) {
        Ok(checker) => checker.into_inner(),
        Err(_) => unreachable!("the handlers holding the other references were dropped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{assert_exact, opts, small, DISTRIBUTIONS};

    #[test]
    fn delivers_exactly_once_in_order() {
        for dist in DISTRIBUTIONS {
            for (payload, shards) in [(16, 2), (256, 3)] {
                let w = small(2, dist, payload);
                assert_exact(&w, run(&w, &RunOpts { shards, ..opts() }));
            }
        }
    }
}
