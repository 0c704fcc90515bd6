//! Throughput ([`run`]): one [`Publisher`](shardbus::Publisher) per producer thread, publishing
//! through pre-resolved [`Topic`] handles (no hashing, no `String` per message); one actor per
//! topic owns the [`Checker`] for its topic and hands it back from `on_stop` through a channel, so
//! verification takes no lock on the hot path. [`RunOpts::batch`] switches to
//! `Publisher::publish_batch`; [`RunOpts::by_name`] publishes by topic name (`&str`) instead.
//! Shards are pinned by shardbus (shard `i` on core `i`); producers are
//! pinned to the cores after the shards when the threads fit the cores, and left to the kernel
//! otherwise (oversubscribed runs). With [`RunOpts::persist`] the bus is persistent (a fresh log
//! directory per run, removed afterwards; messages encoded by the [`Codec`](shardbus::Codec) in
//! [`persist`](crate::persist)); timing and verification are the same.

use std::sync::mpsc;
use std::thread;

use shardbus::{Bus, Context, Handler, Persistence, Stats, ToTopic, Topic};

use crate::harness::{by_payload, finish, join, spawn, Cores, Error, Gate, RunOpts, RunResult};
use crate::persist::ScratchDir;
use crate::verify::Checker;
use crate::workload::{BenchMsg, Plan, Sampling, Workload};

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

/// Publishes `publisher`'s plan through `handle`, naming topic `t` by `keys[t]` (its [`Topic`]
/// handle or its name): one by one, or with `batch > 0` in per-topic batches of up to `batch`.
fn produce<const N: usize, K: ToTopic + Copy>(
    publisher: crate::workload::Publisher,
    handle: &mut shardbus::Publisher<BenchMsg<N>>,
    keys: &[K],
    batch: usize,
    sampling: Sampling,
) {
    if batch == 0 {
        publisher.publish_all(sampling, |msg: BenchMsg<N>| {
            // Fails only once the bus is closed; the verdict then shows it missing.
            let _ = handle.publish(keys[msg.topic as usize], msg);
        });
        return;
    }
    // Per-topic buffers keep per-(producer, topic) order; allocated before the run.
    let mut buffers: Vec<Vec<BenchMsg<N>>> =
        (0..keys.len()).map(|_| Vec::with_capacity(batch)).collect();
    publisher.publish_all(sampling, |msg: BenchMsg<N>| {
        let t = msg.topic as usize;
        buffers[t].push(msg);
        if buffers[t].len() == batch {
            let _ = handle.publish_batch(keys[t], &mut buffers[t]);
        }
    });
    for (t, buffer) in buffers.iter_mut().enumerate() {
        if !buffer.is_empty() {
            let _ = handle.publish_batch(keys[t], buffer);
        }
    }
}

fn run_n<const N: usize>(w: &Workload, opts: &RunOpts) -> Result<(RunResult, Stats), Error> {
    opts.validate()?;
    let Plan {
        publishers,
        expected,
    } = w.plan()?;
    let sampling = opts.sampling();
    // A persistent run writes into a fresh directory, removed when the run ends (after the bus).
    let scratch = match &opts.persist {
        Some(p) => Some(ScratchDir::new(&p.dir)?),
        None => None,
    };
    let builder = Bus::<BenchMsg<N>>::builder()
        .shards(opts.shards)
        .capacity(opts.capacity.next_power_of_two().max(2))
        .pin_threads(opts.pin)
        .wait_strategy(opts.wait)
        .fences(opts.fences);
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
        let checker = Checker::new(&expected, [t as u32], sampling).consuming(opts.consume);
        bus.subscribe(
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
    let name_keys: Vec<&str> = names.iter().map(String::as_str).collect();
    let (topics, name_keys, gate, cores, bus_ref) =
        (&topics[..], &name_keys[..], &gate, &cores, &bus);
    let (batch, by_name) = (opts.batch, opts.by_name);
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
                if by_name {
                    produce(publisher, &mut handle, name_keys, batch, sampling);
                } else {
                    produce(publisher, &mut handle, topics, batch, sampling);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{assert_exact, opts, small, DISTRIBUTIONS};
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
    fn publishing_by_name_delivers_exactly_once_in_order() {
        for (shards, batch) in [(1, 0), (2, 0), (2, 8)] {
            let w = small(2, Distribution::Zipf(1.0), 16);
            let o = RunOpts {
                shards,
                batch,
                by_name: true,
                ..opts()
            };
            assert_exact(&w, run(&w, &o));
        }
    }

    #[test]
    fn persistent_bus_delivers_exactly_once_in_order() {
        use crate::persist::PersistOpts;
        use shardbus::log::FsyncPolicy;
        let dir = std::env::temp_dir().join("shardbus-bench-test-persist-runner");
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
}
