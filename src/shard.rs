//! The shard thread: drains its inbox, runs its topics' actors, supervises them.

use std::collections::HashMap;

use crate::handler::{Context, DeadLetter, DeadLetterReason, SubscriptionId};
use crate::inbox::{Control, Envelope, Item, Shared, ACK_NOT_FOUND, ACK_OK, CLOSE, STOP};
use crate::outbox::Outbox;
use crate::ring::{mpsc, spsc};
use crate::route::{ShardId, TopicKey, TopicMap};
use crate::stats::{LocalCounters, SAMPLE_EVERY};
use crate::supervise::{panic_text, Subscriber, Verdict};
use crate::sync::{fence, thread, Arc, Backoff, Ordering, Parker};
use crate::wait::WaitStrategy;

/// Values popped from one input per pass, so that no input starves the others.
const BATCH: usize = 256;

struct TopicEntry<T> {
    subs: Vec<Subscriber<T>>,
}

/// Where the shard is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// External intake closed; serving until the coordinator says stop.
    Closing,
}

/// The shard's inputs, in the order a pass drains them.
struct Inputs<T> {
    ring: mpsc::Consumer,
    /// Publishers' private lanes into this shard.
    lanes: Vec<spsc::Consumer<Envelope<T>>>,
    /// Other shards' lanes into this shard.
    peers: Vec<spsc::Consumer<Envelope<T>>>,
}

/// The shard's actors and everything a dispatch touches.
struct Actors<T> {
    id: ShardId,
    shared: Arc<Shared<T>>,
    topics: TopicMap<TopicEntry<T>>,
    where_is: HashMap<SubscriptionId, TopicKey>,
    out: Outbox<T>,
    counters: LocalCounters,
}

pub(crate) struct Shard<T> {
    id: ShardId,
    shared: Arc<Shared<T>>,
    parker: Parker,
    inputs: Inputs<T>,
    actors: Actors<T>,
    phase: Phase,
    /// While closing: whether `flags.idle` is currently `true`.
    idle_published: bool,
    external_drained: bool,
    core: Option<core_affinity::CoreId>,
}

impl<T: Send + 'static> Shard<T> {
    pub(crate) fn new(
        id: ShardId,
        shared: Arc<Shared<T>>,
        parker: Parker,
        peers: Vec<spsc::Consumer<Envelope<T>>>,
        out_lanes: Vec<Option<spsc::Producer<Envelope<T>>>>,
        core: Option<core_affinity::CoreId>,
    ) -> Self {
        let ring = mpsc::Consumer::new(&shared.inboxes[id.0].ring);
        let actors = Actors {
            id,
            shared: shared.clone(),
            topics: TopicMap::default(),
            where_is: HashMap::new(),
            out: Outbox::new(id, shared.clone(), out_lanes),
            counters: LocalCounters::default(),
        };
        Self {
            id,
            shared,
            parker,
            inputs: Inputs {
                ring,
                lanes: Vec::new(),
                peers,
            },
            actors,
            phase: Phase::Running,
            idle_published: false,
            external_drained: false,
            core,
        }
    }

    /// The thread's body.
    pub(crate) fn run(mut self) {
        self.pin();
        let backoff = Backoff::new();
        loop {
            // Acquire: pairs with the coordinator's SeqCst store; what the shard then
            // does is re-checked by the protocol itself (see `shutdown`).
            let command = self.flags().command.load(Ordering::Acquire);
            if self.phase == Phase::Running && command >= CLOSE {
                self.begin_closing();
            }
            if command == STOP {
                self.finish();
                return;
            }
            if self.phase == Phase::Closing && self.idle_published {
                if !self.has_ready_seqcst() {
                    self.wait_idle(&backoff);
                    continue;
                }
                // SeqCst store + fence: published before we take any work (see
                // `shutdown`).
                self.flags().idle.store(false, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                self.idle_published = false;
            }
            let did = self.pass();
            if did > 0 {
                self.publish_counters();
            }
            if self.phase == Phase::Closing {
                self.closing_bookkeeping(did);
            }
            if did > 0 {
                backoff.reset();
            } else {
                self.wait_idle(&backoff);
            }
        }
    }

    fn flags(&self) -> &crate::inbox::ShutdownFlags {
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
            actors,
            phase,
            ..
        } = self;
        let closing = *phase == Phase::Closing;
        let ring = &shared.inboxes[actors.id.0].ring;
        let mut did = inputs.ring.pop_batch(ring, BATCH, |item| match item {
            Item::Msg(env) => actors.dispatch(env, false),
            Item::Control(c) => {
                if let Some(mut lane) = actors.control(c) {
                    if closing {
                        lane.close();
                    }
                    inputs.lanes.push(lane);
                }
            }
        });
        let mut i = 0;
        while i < inputs.lanes.len() {
            let n = inputs.lanes[i].pop_batch(BATCH, |env| actors.dispatch(env, false));
            did += n;
            if n == 0 && inputs.lanes[i].is_finished() {
                inputs.lanes.swap_remove(i);
            } else {
                i += 1;
            }
        }
        for peer in &mut inputs.peers {
            did += peer.pop_batch(BATCH, |env| actors.dispatch(env, false));
        }
        // Only what is queued now: handlers may queue more for the next pass.
        let local = actors.out.local.len().min(BATCH);
        for _ in 0..local {
            if let Some(env) = actors.out.local.pop_front() {
                actors.dispatch(env, false);
            }
        }
        let (sent, dropped) = actors.out.flush_overflow();
        actors.counters.dropped += dropped as u64;
        did + local + sent
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
        let c = &mut self.actors.counters;
        c.depth = depth;
        c.high_water = c.high_water.max(depth);
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
            WaitStrategy::BusySpin => backoff.spin(),
            WaitStrategy::Yield => {
                if backoff.is_completed() {
                    thread::yield_now();
                } else {
                    backoff.snooze();
                }
            }
            WaitStrategy::Park => {
                if !backoff.is_completed() || self.actors.out.has_overflow() {
                    // With overflow pending, no one will unpark us when lanes free up.
                    backoff.snooze();
                    return;
                }
                let inbox = &self.shared.inboxes[self.id.0];
                inbox.set_sleeping();
                // The re-check after announcing sleep: see `Inbox::wake`. The control
                // flags need no re-check: the coordinator unparks unconditionally after
                // setting them, and an unpark before the park leaves a token.
                if !self.has_ready_seqcst() {
                    self.parker.park();
                }
                inbox.clear_sleeping();
                backoff.reset();
            }
        }
    }

    fn begin_closing(&mut self) {
        self.phase = Phase::Closing;
        let ring = &self.shared.inboxes[self.id.0].ring;
        self.inputs.ring.close(ring);
        for lane in &mut self.inputs.lanes {
            lane.close();
        }
    }

    fn closing_bookkeeping(&mut self, did: usize) {
        let flags = &self.shared.inboxes[self.id.0].flags;
        if did > 0 {
            // SeqCst: bumped after the work (and any publishes it made), so the
            // coordinator's second read of `activity` sees a change. Single writer:
            // the Relaxed load reads our own last store.
            fence(Ordering::SeqCst);
            let a = flags.activity.load(Ordering::Relaxed);
            flags.activity.store(a + 1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            return;
        }
        if !self.external_drained {
            let ring = &self.shared.inboxes[self.id.0].ring;
            let ring_done =
                self.inputs.ring.is_closed() && !self.inputs.ring.has_ready_seqcst(ring);
            if ring_done
                && self
                    .inputs
                    .lanes
                    .iter_mut()
                    .all(spsc::Consumer::is_closed_and_drained)
            {
                self.external_drained = true;
                // SeqCst: read by the coordinator in its total order of checks.
                flags.external_drained.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
            }
        }
        if self.external_drained
            && !self.actors.out.has_overflow()
            && self.actors.out.local.is_empty()
        {
            // SeqCst store + fence: see `shutdown`.
            fence(Ordering::SeqCst);
            flags.idle.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            self.idle_published = true;
        }
    }

    /// Stops: drops and counts what is left (nothing, after a clean drain), runs every
    /// actor's `on_stop`, publishes the final counters.
    fn finish(&mut self) {
        let Self {
            shared,
            inputs,
            actors,
            ..
        } = self;
        let ring = &shared.inboxes[actors.id.0].ring;
        inputs.ring.close(ring);
        let mut left = 0u64;
        inputs.ring.drain_closed(ring, |item| match item {
            Item::Msg(_) => left += 1,
            // A lane registered too late to be served: its messages were accepted.
            Item::Control(Control::AddLane(mut lane)) => {
                lane.close();
                while lane.pop_batch(usize::MAX, |_| left += 1) > 0 {}
            }
            // (Un)subscribe requests: dropping the ack answers `Closed`.
            Item::Control(_) => {}
        });
        for lane in inputs.lanes.iter_mut().chain(inputs.peers.iter_mut()) {
            lane.close();
            while lane.pop_batch(usize::MAX, |_| left += 1) > 0 {}
        }
        left += actors.out.discard();
        actors.counters.dropped += left;
        actors.stop_all();
        actors.counters.depth = 0;
        shared.counters[actors.id.0].publish(&actors.counters);
        // Release: the final counters happen before a reader that sees `exited`.
        shared.inboxes[actors.id.0]
            .flags
            .exited
            .store(true, Ordering::Release);
    }
}

impl<T: Send + 'static> Actors<T> {
    /// Delivers one message to every subscriber of its topic, in subscription order.
    fn dispatch(&mut self, env: Envelope<T>, replay: bool) {
        let c = &mut self.counters;
        c.received += 1;
        let start = (c.received % SAMPLE_EVERY == 0).then(std::time::Instant::now);
        let Some(entry) = self.topics.get_mut(&env.topic) else {
            c.unrouted += 1;
            c.dead_letters += 1;
            dead_letter(&self.shared, self.id, &env, DeadLetterReason::NoSubscriber);
            return;
        };
        c.handled += 1;
        let (out, shared, where_is, id) =
            (&mut self.out, &self.shared, &mut self.where_is, self.id);
        entry.subs.retain_mut(|sub| {
            let mut ctx = Context {
                topic: &env.topic,
                subscription: sub.id,
                out: &mut *out,
                replay,
            };
            let Err(payload) = sub.call(&mut ctx, |a, ctx| a.handle(ctx, &env.msg)) else {
                return true;
            };
            c.panics += 1;
            c.dead_letters += 1;
            let reason = DeadLetterReason::Panicked {
                subscription: sub.id,
                panic: panic_text(&*payload),
            };
            dead_letter(shared, id, &env, reason);
            match sub.after_panic(&mut ctx, &mut c.panics) {
                Verdict::Keep => true,
                Verdict::Restarted => {
                    c.restarts += 1;
                    true
                }
                Verdict::Remove => {
                    c.stopped += 1;
                    where_is.remove(&sub.id);
                    false
                }
            }
        });
        if entry.subs.is_empty() {
            self.topics.remove(&env.topic);
        }
        if let Some(start) = start {
            let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.shared.counters[self.id.0].record_handler_ns(ns);
        }
    }

    /// Applies a control message. Returns a lane to add to the inputs.
    fn control(&mut self, control: Control<T>) -> Option<spsc::Consumer<Envelope<T>>> {
        match control {
            Control::Subscribe {
                topic,
                mut sub,
                ack,
            } => {
                let mut ctx = Context {
                    topic: &topic,
                    subscription: sub.id,
                    out: &mut self.out,
                    replay: false,
                };
                if sub.call(&mut ctx, |a, ctx| a.on_start(ctx)).is_err() {
                    // An actor that cannot start is supervised like a panic in `handle`.
                    self.counters.panics += 1;
                    match sub.after_panic(&mut ctx, &mut self.counters.panics) {
                        Verdict::Remove => {
                            self.counters.stopped += 1;
                            ack.send(ACK_OK);
                            return None;
                        }
                        Verdict::Restarted => self.counters.restarts += 1,
                        Verdict::Keep => {}
                    }
                }
                self.where_is.insert(sub.id, topic);
                self.topics
                    .entry(topic)
                    .or_insert_with(|| TopicEntry { subs: Vec::new() })
                    .subs
                    .push(sub);
                ack.send(ACK_OK);
                None
            }
            Control::Unsubscribe { id, ack } => {
                let Some(topic) = self.where_is.remove(&id) else {
                    ack.send(ACK_NOT_FOUND);
                    return None;
                };
                if let Some(entry) = self.topics.get_mut(&topic) {
                    if let Some(pos) = entry.subs.iter().position(|s| s.id == id) {
                        let mut sub = entry.subs.remove(pos);
                        let mut ctx = Context {
                            topic: &topic,
                            subscription: id,
                            out: &mut self.out,
                            replay: false,
                        };
                        if sub.call(&mut ctx, |a, ctx| a.on_stop(ctx)).is_err() {
                            self.counters.panics += 1;
                        }
                    }
                    if entry.subs.is_empty() {
                        self.topics.remove(&topic);
                    }
                }
                ack.send(ACK_OK);
                None
            }
            Control::AddLane(lane) => Some(lane),
        }
    }

    /// Runs every actor's `on_stop`.
    fn stop_all(&mut self) {
        for (topic, entry) in self.topics.iter_mut() {
            for sub in entry.subs.iter_mut() {
                let mut ctx = Context {
                    topic,
                    subscription: sub.id,
                    out: &mut self.out,
                    replay: false,
                };
                if sub.call(&mut ctx, |a, ctx| a.on_stop(ctx)).is_err() {
                    self.counters.panics += 1;
                }
            }
        }
    }
}

fn dead_letter<T>(
    shared: &Shared<T>,
    shard: ShardId,
    env: &Envelope<T>,
    reason: DeadLetterReason<'_>,
) {
    if let Some(f) = &shared.dead_letter {
        let letter = DeadLetter {
            topic: env.topic.as_str(),
            shard,
            message: &env.msg,
            reason,
        };
        // A panicking dead-letter handler must not take the shard down; the panic hook
        // has already reported it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(letter)));
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
