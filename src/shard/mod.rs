//! The shard thread: drains its inbox, runs its topics' actors, supervises them.

use std::collections::HashMap;

use crate::error::Error;
use crate::handler::{Context, DeadLetter, DeadLetterReason, SubscriptionId};
use crate::inbox::{Ack, AckSender, Control, Envelope, Item};
use crate::intern::Topics;
use crate::log::Recovered;
use crate::metrics::ShardMetrics;
use crate::outbox::Outbox;
use crate::persist::wal::{Fate, Staged, Wal};
use crate::ring::{mpsc, spsc};
use crate::route::{ShardId, TopicKey};
use crate::shared::Shared;
use crate::shutdown::Command;
use crate::stats::{LocalCounters, SAMPLE_EVERY};
use crate::supervise::{panic_text, Subscriber, Verdict};
use crate::sync::{thread, Arc, Backoff, Ordering, Parker};
use crate::wait::{SpinBudget, WaitStrategy};

mod closing;
pub(crate) mod current;
mod dispatch;
mod inputs;
mod logged;
mod patterns;
mod run;

use dispatch::{Actors, Names};
use inputs::Inputs;

/// Values popped from one input per pass, so that no input starves the others.
const BATCH: usize = 256;

/// [`BATCH`] for a persistent shard. Each of its passes writes what it drained to the log in
/// one `write`, and the kernel's cost per record falls as that write grows (measured in
/// docs/benchmarks.md, "The append floor"), so it takes more per input and pass. Still
/// bounded, so no input waits long behind another. The bench's raw baseline
/// (`SHARD_BATCH` in the bench crate) uses the same number.
const LOG_BATCH: usize = 1024;

/// [`Shard::slip`]: a pass that moved fewer items than this, with more already waiting...
#[cfg(not(shardbus_loom))]
const SLIP_BELOW: usize = 32;
/// ...waits this many spin-loop hints (a few hundred ns) before the next pass.
#[cfg(not(shardbus_loom))]
const SLIP_SPINS: u32 = 128;

/// The longest a shard parks when its heavy fence could not be made (`sync::asym`, "When
/// the heavy fence fails"): the most a missed wake-up can delay a message.
const DEGRADED_PARK: std::time::Duration = std::time::Duration::from_millis(1);

/// Where the shard is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// External intake closed; serving until the coordinator says stop.
    Closing,
}

/// What a shard does on its own thread before its first pass.
pub(crate) struct Startup<T> {
    /// Persistent buses: the shard's log (moved into the shard).
    pub(crate) wal: Option<Wal<T>>,
    /// The builder's subscriptions for this shard's topics (by topic index), installed
    /// first.
    pub(crate) subs: Vec<(u32, Subscriber<T>)>,
    /// The builder's pattern subscriptions, installed after `subs`, before the replay.
    pub(crate) patterns: Vec<crate::pattern::PatternSub<T>>,
    /// Persistent buses: the records to replay, then where to report the outcome (the
    /// builder waits for it).
    pub(crate) replay: Option<(Recovered, AckSender, ReplayError)>,
}

/// Where a shard leaves the error that stopped its replay, for `build()` to return.
pub(crate) type ReplayError = crate::sync::plain::Arc<crate::sync::plain::Mutex<Option<Error>>>;

pub(crate) struct Shard<T> {
    id: ShardId,
    shared: Arc<Shared<T>>,
    parker: Parker,
    inputs: Inputs<T>,
    names: Names,
    actors: Actors<T>,
    phase: Phase,
    /// While closing: whether `flags.idle` is currently `true`.
    idle_published: bool,
    /// Whether every actor's `on_stop` has run ([`Command::StopActors`]).
    actors_stopped: bool,
    external_drained: bool,
    core: Option<core_affinity::CoreId>,
    /// Persistent buses: the write-ahead log state.
    wal: Option<Wal<T>>,
    startup: Option<Startup<T>>,
    /// The `metrics` feature's handles (nothing without it).
    metrics: ShardMetrics,
    /// [`WaitStrategy::Park`]: how many empty polls before the next park (adaptive).
    spin: SpinBudget,
}

impl<T: Send + 'static> Shard<T> {
    pub(crate) fn new(
        id: ShardId,
        shared: Arc<Shared<T>>,
        parker: Parker,
        peers: Vec<spsc::Consumer<Envelope<T>>>,
        out_lanes: Vec<Option<spsc::Producer<Envelope<T>>>>,
        core: Option<core_affinity::CoreId>,
        mut startup: Startup<T>,
    ) -> Self {
        let mut wal = startup.wal.take();
        let metrics = ShardMetrics::new(&shared.metrics, id.0, wal.as_mut().map(Wal::log_mut));
        let ring = mpsc::Consumer::new(&shared.inboxes[id.0].ring);
        let actors = Actors {
            id,
            shared: shared.clone(),
            subs: Vec::new(),
            where_is: HashMap::new(),
            out: Outbox::new(id, shared.clone(), out_lanes, shared.overflow_limit),
            counters: LocalCounters::default(),
            patterns: Default::default(),
        };
        let spin = SpinBudget::new(shared.spin_before_park);
        Self {
            id,
            shared,
            parker,
            inputs: Inputs {
                ring,
                lanes: Vec::new(),
                peers,
                ring_durable: 0,
                lane_tickets: Vec::new(),
                peer_tickets: Vec::new(),
            },
            names: Names {
                shard: id,
                keys: Vec::new(),
            },
            actors,
            phase: Phase::Running,
            idle_published: false,
            actors_stopped: false,
            external_drained: false,
            core,
            wal,
            startup: Some(startup),
            metrics,
            spin,
        }
    }

    /// The thread's body.
    pub(crate) fn run(self) {
        // Every event of this thread (replay, supervision, a failed log, the stop) carries
        // the shard's index.
        let _span = tracing::info_span!("shardbus_shard", shard = self.id.0).entered();
        self.serve();
    }

    /// The shard's life inside its span: start, the loop, the stop. Out of line, so that
    /// the span's code stays out of the loop's function.
    #[inline(never)]
    fn serve(mut self) {
        // Blocking bus calls from this thread's handlers see it and refuse to wait.
        let _marker = current::enter(self.shared.topics.bus, self.id.0);
        self.pin();
        self.start();
        let backoff = Backoff::new();
        loop {
            let command = self.flags().shard_reads_command();
            if self.phase == Phase::Running && command >= Command::Close {
                self.begin_closing();
            }
            if command >= Command::Stop {
                self.finish(command == Command::Stop);
                return;
            }
            if command == Command::StopActors && !self.actors_stopped {
                self.stop_actors();
            }
            if self.phase == Phase::Closing && self.idle_published {
                if !self.has_ready_seqcst() {
                    self.wait_idle(&backoff);
                    continue;
                }
                self.flags().shard_takes_work();
                self.idle_published = false;
            }
            // One branch per pass: the memory-only pass is untouched by persistence.
            let did = if self.wal.is_some() {
                self.pass_logged()
            } else {
                self.pass()
            };
            if did > 0 {
                self.publish_counters();
            }
            let log = self.wal.as_ref().map(Wal::log);
            self.metrics.after_pass(did, &self.actors.counters, log);
            if self.phase == Phase::Closing {
                self.closing_bookkeeping(did);
            }
            if did > 0 {
                backoff.reset();
                self.spin.found_work();
                self.slip(did);
            } else {
                self.wait_idle(&backoff);
            }
        }
    }

    /// Installs the builder's subscriptions, then (persistent buses) replays the log
    /// after its checkpoint to them, before any new message; reports the outcome.
    fn start(&mut self) {
        let Some(startup) = self.startup.take() else {
            return;
        };
        for (topic, sub) in startup.subs {
            self.actors.install(&mut self.names, topic, sub);
        }
        for sub in startup.patterns {
            self.actors.subscribe_pattern(&mut self.names, sub);
        }
        // Subscriptions the builder's actors asked for in `on_start`.
        self.actors.apply_controls(&mut self.names);
        if let Some((recovered, ack, slot)) = startup.replay {
            let replayed = self.replay(&recovered);
            self.actors.apply_controls(&mut self.names);
            match replayed {
                Ok(()) => ack.send(Ack::Ok),
                Err(e) => {
                    *slot
                        .lock()
                        .unwrap_or_else(crate::sync::plain::PoisonError::into_inner) = Some(e);
                    ack.send(Ack::Closed);
                }
            }
        }
    }

    fn flags(&self) -> &crate::shutdown::ShutdownFlags {
        &self.shared.inboxes[self.id.0].flags
    }

    fn pin(&mut self) {
        let mut pinned: Option<usize> = None;
        if let Some(core) = self.core {
            if set_affinity(core) {
                pinned = Some(core.id);
            } else {
                tracing::warn!(
                    shard = self.id.0,
                    core = core.id,
                    "pinning failed; shard runs unpinned"
                );
            }
        }
        let c = &self.shared.counters[self.id.0];
        // Relaxed: a statistic.
        c.core
            .store(pinned.map_or(0, |c| c as u64 + 1), Ordering::Relaxed);
    }

    /// One pass over every input. Returns how many items it moved.
    fn pass(&mut self) -> usize {
        let Self {
            shared,
            inputs,
            names,
            actors,
            phase,
            ..
        } = self;
        let closing = *phase == Phase::Closing;
        let inbox = &shared.inboxes[actors.id.0];
        let (ring, flags) = (&inbox.ring, &*inbox.flags);
        let mut did = inputs.ring.pop_batch(ring, BATCH, |item| match item {
            Item::Msg(env) => actors.take(names, env, flags),
            Item::Control(c) => {
                if c.is_lane_barrier() {
                    // Up to each lane's tail as read now (one Acquire load per lane, in
                    // `pop_batch`): bounded by the lane's capacity.
                    for lane in inputs.lanes.iter_mut() {
                        lane.pop_batch(usize::MAX, |env| {
                            actors.learn_and_dispatch(names, env, false)
                        });
                    }
                }
                // What the handlers run so far asked for on this shard's topics, before the
                // control is applied and answered: a `flush` that returns has them in
                // effect (as the persistent pass does). Otherwise they would wait for the
                // end of the round, after the rest of this batch and the lanes.
                actors.apply_controls(names);
                if let Some(mut lane) = actors.control(names, c) {
                    if closing {
                        lane.close();
                    }
                    inputs.lanes.push(lane);
                }
            }
        });
        let mut i = 0;
        while i < inputs.lanes.len() {
            let n = actors.drain_runs(names, flags, &mut inputs.lanes[i], BATCH);
            did += n;
            if n == 0 && inputs.lanes[i].is_finished() {
                inputs.lanes.swap_remove(i);
            } else {
                i += 1;
            }
        }
        // Shard-to-shard lanes publish their position per message (`pop_each`): what
        // the shutdown coordinator counts for a shard stuck in a handler is exact.
        for peer in &mut inputs.peers {
            did += actors.drain_runs(names, flags, &mut run::Each::new(peer), BATCH);
        }
        // What the handlers asked for on this shard's topics, before the local messages
        // (which they may have published after asking).
        actors.apply_controls(names);
        // Only what is queued now: handlers may queue more for the next pass.
        let local = actors.out.local.len().min(BATCH);
        for _ in 0..local {
            if let Some(env) = actors.out.local.pop_front() {
                actors.take(names, env, flags);
            }
        }
        actors.apply_controls(names);
        let (sent, dropped) = actors.out.flush_overflow();
        actors.counters.dropped += dropped as u64;
        did + local + sent
    }

    /// Temporal slipping (B-Queue, FastForward): under a steady stream from a producer on
    /// another core a pass finds one or two messages, and draining each the moment it lands
    /// moves the slot's and `tail`'s cache lines across once per message. When a pass moved
    /// few items and a lane already holds more (a stream, not a lone message), wait a
    /// moment so that the next pass drains a batch. A lone message (a ping-pong, light
    /// load) finds the lanes empty after its pass and is not delayed. Timing only: no
    /// protocol depends on it, so the loom models (which have no time) leave it out.
    #[inline]
    fn slip(&mut self, did: usize) {
        #[cfg(not(shardbus_loom))]
        if did < SLIP_BELOW
            && self
                .inputs
                .lanes
                .iter_mut()
                .chain(self.inputs.peers.iter_mut())
                .any(|lane| lane.ready() > 0)
        {
            for _ in 0..SLIP_SPINS {
                std::hint::spin_loop();
            }
        }
        #[cfg(shardbus_loom)]
        let _ = did;
    }

    fn publish_counters(&mut self) {
        let ring = &self.shared.inboxes[self.id.0].ring;
        let depth = self.inputs.ring.depth(ring)
            + self
                .inputs
                .lanes
                .iter()
                .map(spsc::Consumer::depth)
                .sum::<u64>()
            + self
                .inputs
                .peers
                .iter()
                .map(spsc::Consumer::depth)
                .sum::<u64>();
        let out = &self.actors.out;
        let c = &mut self.actors.counters;
        c.depth = depth;
        c.high_water = c.high_water.max(depth);
        c.overflow_depth = out.overflow_len() as u64;
        c.overflow_peak = out.overflow_peak as u64;
        c.overflow_refused = out.overflow_refused;
        self.shared.counters[self.id.0].publish(c);
    }

    fn has_ready_seqcst(&self) -> bool {
        self.inputs
            .ring
            .has_ready_seqcst(&self.shared.inboxes[self.id.0].ring)
            || self
                .inputs
                .lanes
                .iter()
                .any(spsc::Consumer::has_ready_seqcst)
            || self
                .inputs
                .peers
                .iter()
                .any(spsc::Consumer::has_ready_seqcst)
            || !self.actors.out.local.is_empty()
    }

    fn wait_idle(&mut self, backoff: &Backoff) {
        match self.shared.wait {
            // Back to back, one hint between passes: the next message is seen as soon as
            // it lands (an exponential back-off's longer spins add to every leg).
            WaitStrategy::BusySpin => crate::sync::spin_hint(),
            WaitStrategy::Yield => {
                if backoff.is_completed() {
                    thread::yield_now();
                } else {
                    backoff.snooze();
                }
            }
            WaitStrategy::Park => {
                if self.actors.out.has_pending() {
                    // With overflow (or controls for a full ring) pending, no one will
                    // unpark us when room frees up.
                    backoff.snooze();
                    return;
                }
                // Poll again within the adaptive budget (see `SpinBudget`).
                if !backoff.is_completed() && self.spin.poll_again() {
                    backoff.snooze();
                    return;
                }
                let inbox = &self.shared.inboxes[self.id.0];
                let fenced = inbox.set_sleeping();
                // The re-check after announcing sleep: see `Inbox::wake`. The control
                // flags need no re-check: the coordinator unparks unconditionally after
                // setting them, and an unpark before the park leaves a token.
                if !self.has_ready_seqcst() {
                    self.spin.parked();
                    // A persistent shard also wakes for an `Interval` sync or a timed
                    // checkpoint; any shard whose heavy fence failed (`sync::asym`) wakes
                    // to re-check, since a publisher's wake-up may have been missed.
                    let deadline = self.wal.as_ref().and_then(Wal::deadline);
                    let timeout = match (deadline, fenced) {
                        (Some(at), _) => {
                            let left = at.saturating_duration_since(std::time::Instant::now());
                            Some(if fenced {
                                left
                            } else {
                                left.min(DEGRADED_PARK)
                            })
                        }
                        (None, false) => Some(DEGRADED_PARK),
                        (None, true) => None,
                    };
                    match timeout {
                        Some(t) => self.parker.park_timeout(t),
                        None => self.parker.park(),
                    }
                }
                inbox.clear_sleeping();
                backoff.reset();
            }
        }
    }
}

#[cfg(not(shardbus_loom))]
fn set_affinity(core: core_affinity::CoreId) -> bool {
    core_affinity::set_for_current(core)
}

/// loom threads are not OS threads to pin.
#[cfg(shardbus_loom)]
fn set_affinity(_core: core_affinity::CoreId) -> bool {
    false
}
