//! Configuring and starting a bus.

use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::bus::Bus;
use crate::codec::{Codec, CodecFns};
use crate::cores;
use crate::error::Error;
use crate::fences::{FenceMode, Fences};
use crate::handler::{DeadLetter, DeadLetterFn, Handler, SubscriptionId, Supervision};
use crate::inbox::{ack_pair, Inbox};
use crate::intern::Topics;
use crate::persist::wal::{Wal, WalConfig};
use crate::persist::{self, Persistence};
use crate::ring::spsc;
use crate::route::ShardId;
use crate::shard::{ReplayError, Shard, Startup};
use crate::shared::{Shared, CHECK_ENCODE};
use crate::stats::ShardCounters;
use crate::supervise::{Factory, Subscriber};
use crate::sync::{plain, thread, Arc, AtomicU64, AtomicUsize, Parker};
use crate::topic::ToTopic;
use crate::wait::WaitStrategy;
mod checks;
mod partitioned;

use checks::{check_capacity, check_memory, check_thread_name, default_shards, ring_bytes};

/// The largest shard count a bus accepts.
pub const MAX_SHARDS: usize = 1024;

/// The default prefix of shard thread names: shard 3 is `sb-shard-3`.
const DEFAULT_THREAD_NAME: &str = "sb-shard";

/// The longest thread name Linux keeps (16 bytes with the terminating NUL); a longer one
/// is cut, so shards would no longer tell apart in `top -H` or a debugger.
const MAX_THREAD_NAME: usize = 15;

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
    pub(crate) pattern_subs: Vec<crate::pattern::PrePattern<T>>,
    persist: Option<(Persistence, CodecFns<T>)>,
    /// Placement and fences (`cores`, `fences`).
    host: HostOptions,
    metrics_label: String,
    parted: partitioned::PreParted<T>,
    pub(crate) spin_before_park: u32,
}

/// The builder's options about the host process: where shard threads run and how the bus
/// fences (`Builder::cores`, `Builder::fences`).
#[derive(Debug, Default)]
struct HostOptions {
    cores: Option<Vec<usize>>,
    fences: Fences,
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
            .field("spin_before_park", &self.spin_before_park)
            .field("thread_name", &self.thread_name)
            .field("dead_letter", &self.dead_letter.is_some())
            .field("drop_timeout", &self.drop_timeout)
            .field("subscriptions", &self.subs.len())
            .field("persist", &self.persist.as_ref().map(|(p, _)| p))
            .field("cores", &self.host.cores)
            .field("fences", &self.host.fences)
            .field("metrics_label", &self.metrics_label)
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
            thread_name: DEFAULT_THREAD_NAME.to_owned(),
            dead_letter: None,
            drop_timeout: Duration::from_secs(5),
            subs: Vec::new(),
            pattern_subs: Vec::new(),
            persist: None,
            host: HostOptions::default(),
            metrics_label: "default".to_owned(),
            parted: partitioned::PreParted::default(),
            spin_before_park: crate::wait::DEFAULT_SPIN_BEFORE_PARK,
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
    ///
    /// # Memory
    ///
    /// The rings are allocated at [`build()`](Self::build), whole. Each shard's inbox has
    /// `capacity` slots; a slot holds a message with its topic index, or a control
    /// message, plus an 8-byte stamp: 88 bytes on 64-bit targets for a message of up to
    /// 64 bytes, about the message's size plus 16 above that. Each ordered pair of shards
    /// has a lane of [`lane_capacity`](Self::lane_capacity) slots of the message's size
    /// plus its topic index (8 bytes for a `u32`, 32 for a `String`). In all,
    /// `shards × (capacity × inbox slot + (shards − 1) × lane_capacity × lane slot)`
    /// (the default 1024 slots: 88 KiB per shard for small messages), and every
    /// [`Publisher`](crate::Publisher) adds a lane per shard it publishes to.
    /// The largest accepted value, 2^30, is an upper bound of the ring's arithmetic, not a
    /// promise of memory: `build()` refuses rings that need more than the machine has
    /// (RAM plus swap, read on Linux) and reports a failed allocation the same way, with
    /// [`Error::OutOfMemory`], instead of aborting the process.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Slots of each private lane (one per [`Publisher`](crate::Publisher) per shard,
    /// and one per pair of shards). A power of two; default: the inbox capacity. What
    /// that costs in memory, and what `build()` refuses: see [`capacity`](Self::capacity).
    pub fn lane_capacity(mut self, capacity: usize) -> Self {
        self.lane_capacity = Some(capacity);
        self
    }

    /// The most messages that may wait in one shard's overflow queue: what its handlers
    /// published with [`Context::publish`](crate::Context::publish) to other shards whose lanes were full. Past it,
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

    /// Whether to pin shard threads to cores. Default on: each shard gets a core of its
    /// own that no other live bus of the process holds, chosen as
    /// [`cores`](Self::cores) describes; `false` pins none (and ignores `cores`). Where
    /// pinning is unavailable or fails, the shard runs unpinned and a `tracing` warning
    /// says so; [`ShardStats::core`](crate::ShardStats::core) shows the outcome.
    pub fn pin_threads(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// How an idle shard waits. Default [`WaitStrategy::Park`]. With
    /// [`BusySpin`](WaitStrategy::BusySpin) or [`Yield`](WaitStrategy::Yield) an idle
    /// shard keeps its CPU busy: use no more shards than the cores you can give the bus
    /// (the default placement pins at most one shard per core and leaves the rest
    /// unpinned, but unpinned spinning shards still share the cores with everything
    /// else).
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// The prefix of shard thread names; shard `i` is `"{prefix}-{i}"`. Default
    /// `"sb-shard"` (`sb-shard-0`, `sb-shard-1`, ...). A persistent shard's I/O thread is
    /// `sb-io-{i}` whatever the prefix.
    ///
    /// Linux keeps at most 15 bytes of a thread's name, so `build()` checks that the last
    /// shard's name, `"{prefix}-{shards - 1}"`, fits in 15 bytes and that the prefix has
    /// no NUL byte; otherwise it fails with [`Error::InvalidThreadName`].
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
    /// drops what is left (counted); the shard threads then get as long again to run
    /// `on_stop` and exit (any still running are detached). A drop therefore blocks for
    /// at most twice this. Default 5 s. A bus ended by [`Bus::close`] or
    /// [`Bus::shutdown_background`] does not wait on drop; see [`Bus`], "Drop".
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    /// The value of the `bus` label on every series this bus exports with the `metrics`
    /// feature (the `shard` label is the shard's index), so that several buses in one
    /// process can be told apart. Default `"default"`. Without the feature it is kept and
    /// unused.
    ///
    /// With the feature, each shard registers its series with the recorder installed
    /// when `build()` runs: install the recorder (exporter) first. See the crate docs,
    /// "Metrics and traces".
    pub fn metrics_label(mut self, label: impl Into<String>) -> Self {
        self.metrics_label = label.into();
        self
    }

    /// Subscribes an actor (a [`Handler`] or a closure) to a topic before the bus
    /// starts, with supervision [`Supervision::Resume`]; takes what [`Bus::subscribe`]
    /// takes. A [`Topic`](crate::Topic) handle of another bus is taken by its name.
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
    pub fn subscribe<H: Handler<T>>(self, topic: impl ToTopic, handler: H) -> Self {
        let topic = topic.name().to_owned();
        self.pre_subscribe(topic, Box::new(handler), None, Supervision::Resume)
    }

    /// [`subscribe`](Self::subscribe) for an actor made by `factory` and supervised by
    /// `policy`; mirrors [`Bus::subscribe_supervised`].
    pub fn subscribe_supervised<H, F>(
        self,
        topic: impl ToTopic,
        policy: Supervision,
        mut factory: F,
    ) -> Self
    where
        H: Handler<T>,
        F: FnMut() -> H + Send + 'static,
    {
        let actor = Box::new(factory());
        let factory: Factory<T> = Box::new(move || Box::new(factory()));
        self.pre_subscribe(topic.name().to_owned(), actor, Some(factory), policy)
    }

    /// The cores to pin shard threads to: shard `i` to the `i`-th core given, shards
    /// beyond the set unpinned (they run where the building thread may run). Every core
    /// must be in the process's CPU affinity mask (on Linux that of its main thread, as
    /// `taskset -p` shows it) and listed once, or `build()` fails with
    /// [`Error::CoreNotAllowed`] or [`Error::DuplicateCore`]. An empty set pins nothing.
    /// Where the mask cannot be read, the set is taken as given, and a shard whose
    /// pinning fails runs unpinned with a `tracing` warning.
    ///
    /// Default: chosen per bus, in ascending CPU order from the affinity mask, skipping
    /// the cores that the live buses of this process hold (so two buses do not share
    /// cores; a core is released when the shard thread on it ends) and, while whole
    /// physical cores are left, the SMT siblings of held cores (Linux: sysfs
    /// `thread_siblings_list`; without it every CPU counts as a core). Each shard gets a
    /// core of its own; when none is left, the remaining shards run unpinned rather than
    /// two on one core. Where the mask cannot be read, nothing is pinned. Ignored when
    /// [`pin_threads(false)`](Self::pin_threads).
    pub fn cores(mut self, cores: impl IntoIterator<Item = usize>) -> Self {
        self.host.cores = Some(cores.into_iter().collect());
        self
    }

    /// How this bus orders a publisher's push with a shard going to sleep and with a
    /// lane being closed. Default [`Fences::SeqCst`]: a `fence(SeqCst)` per publish, and
    /// nothing that reaches other threads. [`Fences::Membarrier`] (or [`Fences::Auto`]:
    /// membarrier where the kernel offers it) makes a publish cheaper at the price of
    /// registering the process and interrupting every CPU running a thread of it at each
    /// of the bus's rare heavy fences. See [`Fences`] for the costs and the measurements;
    /// [`Bus::fence_mode`] says what the bus got.
    pub fn fences(mut self, fences: Fences) -> Self {
        self.host.fences = fences;
        self
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
        check_thread_name(&self.thread_name, shards)?;
        check_capacity("inbox", self.capacity)?;
        let lane_capacity = self.lane_capacity.unwrap_or(self.capacity);
        check_capacity("lane", lane_capacity)?;
        // What the rings below allocate, checked before any of it is: refused if it is
        // more than the machine has; a failed allocation is the same error.
        let ring_bytes = ring_bytes::<T>(shards, self.capacity, lane_capacity);
        check_memory(ring_bytes)?;
        let out_of_memory = |_| Error::OutOfMemory { bytes: ring_bytes };

        // Where the shards run, and the fences, before anything is made: a refused core
        // set or fence mode costs nothing. The leases hold the cores until each shard
        // thread ends (or until `build()` returns an error).
        let leases = match (self.pin, &self.host.cores) {
            (false, _) => (0..shards).map(|_| cores::Lease::none()).collect(),
            (true, user) => cores::place(shards, user.as_deref()).map_err(|e| match e {
                cores::CoreError::NotAllowed { core, allowed } => {
                    Error::CoreNotAllowed { core, allowed }
                }
                cores::CoreError::Duplicate { core } => Error::DuplicateCore { core },
            })?,
        };
        // Fix the fence mode before any ring or inbox of this bus exists.
        let fences = crate::sync::asym::decide(self.host.fences)
            .map_err(|source| Error::MembarrierUnavailable { source })?;
        let asym = fences == FenceMode::Membarrier;

        let overflow_limit = self
            .overflow_limit
            .unwrap_or((DEFAULT_OVERFLOW_LANES * lane_capacity).max(DEFAULT_OVERFLOW_MIN));

        let parkers: Vec<Parker> = (0..shards).map(|_| Parker::new()).collect();
        let inboxes = parkers
            .iter()
            .map(|p| Inbox::try_new(self.capacity, p.unparker().clone(), asym))
            .collect::<Result<_, _>>()
            .map_err(out_of_memory)?;
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
                let (p, c) =
                    spsc::try_channel_in_mode(lane_capacity, 0, asym).map_err(out_of_memory)?;
                peer_rings.push(Some(c.ring().clone()));
                *out = Some(p);
                in_lanes[to].push(c);
            }
        }

        let bus_id = crate::sync::next_bus_id();
        let topics = Topics::new(self.parted.router(shards)?, bus_id);
        let mut initial = Vec::with_capacity(self.subs.len());
        let mut startups: Vec<Startup<T>> = (0..shards)
            .map(|_| Startup {
                wal: None,
                subs: Vec::new(),
                patterns: Vec::new(),
                replay: None,
            })
            .collect();
        for (serial, pre) in self.subs.into_iter().enumerate() {
            let topic = crate::subject::resolve(&topics, &pre.topic)?;
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
        crate::bus::pre_patterns(self.pattern_subs, bus_id, &mut initial, &mut startups)?;
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
                startups[i].wal = Some(Wal::new(log, *codec, config, lock.clone(), i));
                let (ack, done) = ack_pair();
                let slot: ReplayError = plain::Arc::new(plain::Mutex::new(None));
                startups[i].replay = Some((recovered, ack, slot.clone()));
                replies.push((done, slot));
            }
        }

        let shared = Arc::new(Shared {
            partitioned: partitioned::install(self.parted, &topics, &mut initial, &mut startups)?,
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
            spin_before_park: self.spin_before_park,
            persistent,
            codec: self.persist.as_ref().map(|(_, codec)| *codec),
            max_record_size: self
                .persist
                .as_ref()
                .map_or(0, |(p, _)| p.log.max_record_size),
            next_serial: AtomicU64::new(initial.len() as u64),
            fences,
            metrics: crate::metrics::BusMetrics::new(&self.metrics_label),
        });
        let parts = |shared, threads, timeout| {
            Bus::from_parts(shared, threads, timeout, bus_id, initial.clone())
        };

        let mut threads = Vec::with_capacity(shards);
        let each = parkers
            .into_iter()
            .zip(in_lanes)
            .zip(out_lanes)
            .zip(startups)
            .zip(leases)
            .enumerate();
        for (i, ((((parker, peers), outs), startup), lease)) in each {
            let core = lease.core().map(|id| core_affinity::CoreId { id });
            let shard = Shard::new(
                ShardId(i),
                shared.clone(),
                parker,
                peers,
                outs,
                core,
                startup,
            );
            // The thread holds its core's lease until it ends.
            let body = move || {
                let _lease = lease;
                shard.run();
            };
            match thread::spawn_named(format!("{}-{i}", self.thread_name), body) {
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
