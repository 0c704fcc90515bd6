//! Configuring and starting a bus.

use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::bus::Bus;
use crate::codec::{Codec, CodecFns};
use crate::error::Error;
use crate::handler::{Context, DeadLetter, DeadLetterFn, Handler, SubscriptionId, Supervision};
use crate::inbox::{ack_pair, Inbox};
use crate::intern::Topics;
use crate::persist::wal::{Wal, WalConfig};
use crate::persist::{self, Persistence};
use crate::ring::{spsc, MAX_CAPACITY};
use crate::route::{Router, ShardId};
use crate::shard::{ReplayError, Shard, Startup};
use crate::shared::{Shared, CHECK_ENCODE};
use crate::stats::ShardCounters;
use crate::supervise::{Factory, Subscriber};
use crate::sync::{plain, thread, Arc, AtomicUsize, Parker};
use crate::wait::WaitStrategy;

/// The largest shard count a bus accepts.
pub const MAX_SHARDS: usize = 1024;

/// The default [`Builder::overflow_limit`]: this many lane capacities...
const DEFAULT_OVERFLOW_LANES: usize = 4;
/// ...and at least this many messages.
const DEFAULT_OVERFLOW_MIN: usize = 4096;

/// Configures a [`Bus`]; made by [`Bus::builder`].
pub struct Builder<T> {
    shards: Option<usize>,
    capacity: usize,
    lane_capacity: Option<usize>,
    overflow_limit: Option<usize>,
    pin: bool,
    wait: WaitStrategy,
    thread_name: String,
    dead_letter: Option<DeadLetterFn<T>>,
    drop_timeout: Duration,
    subs: Vec<PreSub<T>>,
    persist: Option<(Persistence, CodecFns<T>)>,
}

/// A subscription made on the builder, installed on its shard before the thread starts.
struct PreSub<T> {
    topic: String,
    actor: Box<dyn Handler<T>>,
    factory: Option<Factory<T>>,
    policy: Supervision,
}

impl<T> std::fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("shards", &self.shards)
            .field("capacity", &self.capacity)
            .field("lane_capacity", &self.lane_capacity)
            .field("overflow_limit", &self.overflow_limit)
            .field("pin", &self.pin)
            .field("wait", &self.wait)
            .field("thread_name", &self.thread_name)
            .field("dead_letter", &self.dead_letter.is_some())
            .field("drop_timeout", &self.drop_timeout)
            .field("subscriptions", &self.subs.len())
            .field("persist", &self.persist.as_ref().map(|(p, _)| p))
            .finish()
    }
}

impl<T: Send + 'static> Bus<T> {
    /// A builder with the defaults (see [`Builder`]).
    pub fn builder() -> Builder<T> {
        Builder::default()
    }
}

impl<T: Send + 'static> Default for Builder<T> {
    fn default() -> Self {
        Self {
            shards: None,
            capacity: 1024,
            lane_capacity: None,
            overflow_limit: None,
            pin: true,
            wait: WaitStrategy::default(),
            thread_name: "shardbus-shard".to_owned(),
            dead_letter: None,
            drop_timeout: Duration::from_secs(5),
            subs: Vec::new(),
            persist: None,
        }
    }
}

impl<T: Send + 'static> Builder<T> {
    /// The number of shard threads. Default: the number of cores this process may run
    /// on (its CPU affinity mask), or 1 if that cannot be read.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Slots of each shard's shared inbox ring (used by [`Bus::publish`] and control
    /// messages). A power of two; default 1024.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Slots of each private lane (one per [`Publisher`](crate::Publisher) per shard,
    /// and one per pair of shards). A power of two; default: the inbox capacity.
    pub fn lane_capacity(mut self, capacity: usize) -> Self {
        self.lane_capacity = Some(capacity);
        self
    }

    /// The most messages that may wait in one shard's overflow queue: what its handlers
    /// published with [`Context::publish`] to other shards whose lanes were full. Past it,
    /// `Context::publish` returns [`PublishError::Full`](crate::PublishError::Full) with
    /// the message (counted in [`ShardStats::overflow_refused`](crate::ShardStats)), so a
    /// shard never blocks and its memory stays bounded. With 0 there is no overflow
    /// queue: `Context::publish` refuses as soon as the target lane is full.
    ///
    /// Default: 4 times the lane capacity, and at least 4,096 messages (4,096 with the
    /// default capacities). A burst of a few lanes' worth (or, with small lanes, a few
    /// thousand messages) waits while the target catches up; beyond it the target is
    /// persistently slower than its publishers (or actors amplify in a cycle), and
    /// queuing more would only grow memory and latency without end. The memory it bounds
    /// is the limit times the size of a message plus 8 bytes, per shard.
    pub fn overflow_limit(mut self, limit: usize) -> Self {
        self.overflow_limit = Some(limit);
        self
    }

    /// Whether to pin shard `i` to the `i`-th core of the process's affinity mask
    /// (wrapping when there are more shards than cores). Default on. Where pinning is
    /// unavailable or fails, the shard runs unpinned and a `tracing` warning says so;
    /// [`ShardStats::core`](crate::ShardStats::core) shows the outcome.
    pub fn pin_threads(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// How an idle shard waits. Default [`WaitStrategy::Park`].
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// The prefix of shard thread names; shard `i` is `"{prefix}-{i}"`. Default
    /// `"shardbus-shard"`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// The dead-letter handler: called on the shard thread with every message whose
    /// topic has no subscriber and every message a handler panicked on. Default: none
    /// (such messages are counted in [`Stats`](crate::Stats) and dropped).
    pub fn dead_letter(mut self, f: impl Fn(DeadLetter<'_, T>) + Send + Sync + 'static) -> Self {
        self.dead_letter = Some(Box::new(f));
        self
    }

    /// How long dropping a bus that was not shut down may wait for the drain before it
    /// drops what is left (counted) and returns. Default 5 s.
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    /// Subscribes a closure to a topic before the bus starts, with supervision
    /// [`Supervision::Resume`]; mirrors [`Bus::subscribe`].
    ///
    /// Builder subscriptions are installed on each shard before its thread takes any
    /// message. On a persistent bus they are the handlers that the log's replay meets:
    /// `build()` replays every record after the checkpoint to them and returns when the
    /// replay is done. A replayed record whose topic has no builder subscription goes to
    /// the [dead-letter handler](Self::dead_letter) with
    /// [`DeadLetter::replay`](crate::DeadLetter::replay) set: it is never dropped
    /// silently. An invalid topic name makes `build()` fail with
    /// [`Error::InvalidTopic`]. Their ids, in the order made, are
    /// [`Bus::initial_subscriptions`].
    pub fn subscribe<F>(self, topic: impl Into<String>, handler: F) -> Self
    where
        F: FnMut(&mut Context<'_, T>, &T) + Send + 'static,
    {
        self.pre_subscribe(topic.into(), Box::new(handler), None, Supervision::Resume)
    }

    /// [`subscribe`](Self::subscribe) for a [`Handler`] implementation; mirrors
    /// [`Bus::subscribe_actor`].
    pub fn subscribe_actor<H: Handler<T>>(self, topic: impl Into<String>, actor: H) -> Self {
        self.pre_subscribe(topic.into(), Box::new(actor), None, Supervision::Resume)
    }

    /// [`subscribe`](Self::subscribe) for an actor made by `factory` and supervised by
    /// `policy`; mirrors [`Bus::subscribe_supervised`].
    pub fn subscribe_supervised<H, F>(
        self,
        topic: impl Into<String>,
        policy: Supervision,
        mut factory: F,
    ) -> Self
    where
        H: Handler<T>,
        F: FnMut() -> H + Send + 'static,
    {
        let actor = Box::new(factory());
        let factory: Factory<T> = Box::new(move || Box::new(factory()));
        self.pre_subscribe(topic.into(), actor, Some(factory), policy)
    }

    fn pre_subscribe(
        mut self,
        topic: String,
        actor: Box<dyn Handler<T>>,
        factory: Option<Factory<T>>,
        policy: Supervision,
    ) -> Self {
        self.subs.push(PreSub {
            topic,
            actor,
            factory,
            policy,
        });
        self
    }

    /// Validates the configuration and starts the shard threads. On a persistent bus,
    /// first opens and recovers every shard's log (reshards if the shard count changed)
    /// and waits until each shard has replayed what its handlers had not finished.
    pub fn build(self) -> Result<Bus<T>, Error> {
        let shards = match self.shards {
            Some(n) => n,
            None => default_shards(),
        };
        if shards == 0 {
            return Err(Error::ZeroShards);
        }
        if shards > MAX_SHARDS {
            return Err(Error::TooManyShards {
                requested: shards,
                max: MAX_SHARDS,
            });
        }
        check_capacity("inbox", self.capacity)?;
        let lane_capacity = self.lane_capacity.unwrap_or(self.capacity);
        check_capacity("lane", lane_capacity)?;
        let overflow_limit = self
            .overflow_limit
            .unwrap_or((DEFAULT_OVERFLOW_LANES * lane_capacity).max(DEFAULT_OVERFLOW_MIN));

        let parkers: Vec<Parker> = (0..shards).map(|_| Parker::new()).collect();
        // Fix the fence mode before any ring or inbox of this bus exists.
        crate::sync::asym::enable();
        let inboxes = parkers
            .iter()
            .map(|p| Inbox::new(self.capacity, p.unparker().clone()))
            .collect();
        let counters = (0..shards)
            .map(|_| CachePadded::new(ShardCounters::new()))
            .collect();

        // One lane per ordered pair of distinct shards.
        let mut out_lanes: Vec<Vec<Option<spsc::Producer<_>>>> = (0..shards)
            .map(|_| (0..shards).map(|_| None).collect())
            .collect();
        let mut in_lanes: Vec<Vec<spsc::Consumer<_>>> = (0..shards).map(|_| Vec::new()).collect();
        let mut peer_rings = Vec::with_capacity(shards * shards);
        for (from, outs) in out_lanes.iter_mut().enumerate() {
            for (to, out) in outs.iter_mut().enumerate() {
                if from == to {
                    peer_rings.push(None);
                    continue;
                }
                let (p, c) = spsc::channel(lane_capacity, 0);
                peer_rings.push(Some(c.ring().clone()));
                *out = Some(p);
                in_lanes[to].push(c);
            }
        }

        let bus_id = crate::sync::next_bus_id();
        let topics = Topics::new(Router::new(shards), bus_id);
        let mut initial = Vec::with_capacity(self.subs.len());
        let mut startups: Vec<Startup<T>> = (0..shards)
            .map(|_| Startup {
                wal: None,
                subs: Vec::new(),
                replay: None,
            })
            .collect();
        for (serial, pre) in self.subs.into_iter().enumerate() {
            let topic = topics.intern(&topics.router.key_or_error(&pre.topic)?);
            let id = SubscriptionId {
                bus: bus_id,
                shard: topic.shard.0 as u32,
                serial: serial as u64,
            };
            initial.push(id);
            let sub = Subscriber {
                id,
                actor: pre.actor,
                factory: pre.factory,
                policy: pre.policy,
            };
            startups[topic.shard.0].subs.push((topic.index, sub));
        }
        let persistent = self.persist.is_some();
        let mut replies = Vec::new();
        if let Some((p, codec)) = &self.persist {
            // The directory's lock goes to the shards (each `Wal` holds it): released when
            // the last of them is done with its log, or here, if `build()` fails first.
            let (lock, logs) = persist::open(p, shards, &topics.router)?;
            let lock = plain::Arc::new(lock);
            for (i, (log, recovered)) in logs.into_iter().enumerate() {
                let config = WalConfig {
                    checkpoint_records: p.checkpoint_records,
                    checkpoint_interval: p.checkpoint_interval,
                    retention: p.retention,
                };
                startups[i].wal = Some(Wal::new(log, *codec, config, lock.clone()));
                let (ack, done) = ack_pair();
                let slot: ReplayError = plain::Arc::new(plain::Mutex::new(None));
                startups[i].replay = Some((recovered, ack, slot.clone()));
                replies.push((done, slot));
            }
        }

        let shared = Arc::new(Shared {
            topics,
            gate: AtomicUsize::new(match &self.persist {
                Some((_, codec)) if codec.can_fail => CHECK_ENCODE,
                _ => 0,
            }),
            inboxes,
            counters,
            peer_rings: peer_rings.into_boxed_slice(),
            lane_capacity,
            overflow_limit,
            dead_letter: self.dead_letter,
            wait: self.wait,
            persistent,
            codec: self.persist.as_ref().map(|(_, codec)| *codec),
            max_record_size: self
                .persist
                .as_ref()
                .map_or(0, |(p, _)| p.log.max_record_size),
        });
        let parts = |shared, threads, timeout| {
            Bus::from_parts(shared, threads, timeout, bus_id, initial.clone())
        };

        let cores = if self.pin { core_ids() } else { Vec::new() };
        let mut threads = Vec::with_capacity(shards);
        let each = parkers
            .into_iter()
            .zip(in_lanes)
            .zip(out_lanes)
            .zip(startups)
            .enumerate();
        for (i, (((parker, peers), outs), startup)) in each {
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let shard = Shard::new(
                ShardId(i),
                shared.clone(),
                parker,
                peers,
                outs,
                core,
                startup,
            );
            match thread::spawn_named(format!("{}-{i}", self.thread_name), move || shard.run()) {
                Ok(handle) => threads.push(handle),
                Err(source) => {
                    // Stop the shards already running before reporting.
                    drop(parts(shared, threads, Duration::ZERO));
                    return Err(Error::Spawn { shard: i, source });
                }
            }
        }
        let bus = parts(shared, threads, self.drop_timeout);
        // Persistent buses: `build()` returns once every shard has replayed its log.
        for (done, slot) in replies {
            if done.wait().is_err() {
                let error = slot
                    .lock()
                    .unwrap_or_else(plain::PoisonError::into_inner)
                    .take();
                drop(bus);
                return Err(error.unwrap_or(Error::Closed));
            }
        }
        Ok(bus)
    }
}

impl<T: Codec + Send + 'static> Builder<T> {
    /// Makes the bus persistent: every message is written to its shard's log before any
    /// handler sees it, and what the handlers had not finished when the process stopped
    /// is replayed at the next `build()` (see [`Persistence`], [`Builder::subscribe`] and
    /// `docs/persistence.md`). Needs `T:` [`Codec`]; a memory-only bus needs none.
    pub fn persist(mut self, persistence: Persistence) -> Self {
        self.persist = Some((persistence, CodecFns::of()));
        self
    }
}

fn check_capacity(what: &'static str, capacity: usize) -> Result<(), Error> {
    if capacity < 2 || !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
        return Err(Error::InvalidCapacity {
            what,
            capacity,
            max: MAX_CAPACITY,
        });
    }
    Ok(())
}

#[cfg(not(shardbus_loom))]
fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_SHARDS)
}

#[cfg(shardbus_loom)]
fn default_shards() -> usize {
    1
}

#[cfg(not(shardbus_loom))]
fn core_ids() -> Vec<core_affinity::CoreId> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids,
        _ => {
            tracing::warn!("cannot read the CPU affinity mask; shard threads run unpinned");
            Vec::new()
        }
    }
}

#[cfg(shardbus_loom)]
fn core_ids() -> Vec<core_affinity::CoreId> {
    Vec::new()
}
