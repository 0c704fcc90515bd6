//! The shard thread: drains its inbox, runs its topics' actors, supervises them.

use std::collections::HashMap;

use crate::error::Error;
use crate::handler::{Context, DeadLetter, DeadLetterReason, SubscriptionId};
use crate::inbox::{AckSender, Control, Envelope, Item, ACK_CLOSED, ACK_NOT_FOUND, ACK_OK};
use crate::intern::Topics;
use crate::log::Recovered;
use crate::outbox::Outbox;
use crate::ring::{mpsc, spsc};
use crate::route::{ShardId, TopicKey};
use crate::shared::Shared;
use crate::shutdown::{CLOSE, STOP};
use crate::stats::{LocalCounters, SAMPLE_EVERY};
use crate::supervise::{panic_text, Subscriber, Verdict};
use crate::sync::{fence, thread, Arc, Backoff, Ordering, Parker};
use crate::wait::WaitStrategy;
use crate::wal::{Fate, Wal};

/// Values popped from one input per pass, so that no input starves the others.
const BATCH: usize = 256;

/// [`BATCH`] for a persistent shard. Each of its passes writes what it drained to the log in
/// one `write`, and the kernel's cost per record falls as that write grows (312-byte records
/// into a fresh file on the ext4 of docs/benchmarks.md, `cli/examples/append_cost.rs`: ~98 ns
/// at 256 per write, ~71 ns at 1,024), so it takes more per input and pass. Still bounded,
/// so no input waits long behind another. The bench's raw baseline (`SHARD_BATCH` in the CLI)
/// uses the same number.
const LOG_BATCH: usize = 1024;

/// [`Shard::slip`]: a pass that moved fewer items than this, with more already waiting...
#[cfg(not(shardbus_loom))]
const SLIP_BELOW: usize = 32;
/// ...waits this many spin-loop hints (a few hundred ns) before the next pass.
#[cfg(not(shardbus_loom))]
const SLIP_SPINS: u32 = 128;

/// The names of the shard's topics, by index (see `intern`): learned from the bus's
/// registry the first time an index beyond the table reaches the shard.
pub(crate) struct Names {
    shard: ShardId,
    keys: Vec<TopicKey>,
}

impl Names {
    /// Makes sure `index` has its name. One compare when it has.
    #[inline]
    fn learn(&mut self, index: u32, topics: &Topics) {
        if index as usize >= self.keys.len() {
            self.learn_from(topics);
        }
    }

    #[cold]
    fn learn_from(&mut self, topics: &Topics) {
        let keys = &mut self.keys;
        topics.names_since(self.shard, keys.len(), |key| keys.push(key));
    }

    /// The name of topic `index`, which [`learn`](Self::learn) has seen.
    pub(crate) fn key(&self, index: u32) -> &TopicKey {
        &self.keys[index as usize]
    }
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
    /// Persistent buses: the last position stored into the inbox's `durable` mark.
    ring_durable: u64,
    /// Pipelined commit: per lane (and per peer), the last batch ticket it was popped
    /// into; its popped values are durable once that ticket is done.
    lane_tickets: Vec<u64>,
    peer_tickets: Vec<u64>,
}

/// What a shard does on its own thread before its first pass.
pub(crate) struct Startup<T> {
    /// Persistent buses: the shard's log (moved into the shard).
    pub(crate) wal: Option<Wal<T>>,
    /// The builder's subscriptions for this shard's topics (by topic index), installed
    /// first.
    pub(crate) subs: Vec<(u32, Subscriber<T>)>,
    /// Persistent buses: the records to replay, then where to report the outcome (the
    /// builder waits for it).
    pub(crate) replay: Option<(Recovered, AckSender, ReplayError)>,
}

/// Where a shard leaves the error that stopped its replay, for `build()` to return.
pub(crate) type ReplayError = crate::sync::plain::Arc<crate::sync::plain::Mutex<Option<Error>>>;

/// The shard's actors and everything a dispatch touches.
struct Actors<T> {
    id: ShardId,
    shared: Arc<Shared<T>>,
    /// `subs[index]`: the subscribers of topic `index`, in subscription order (the table
    /// ends at the highest index ever subscribed to).
    subs: Vec<Vec<Subscriber<T>>>,
    where_is: HashMap<SubscriptionId, u32>,
    out: Outbox<T>,
    counters: LocalCounters,
}

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
    external_drained: bool,
    core: Option<core_affinity::CoreId>,
    /// Persistent buses: the write-ahead log state.
    wal: Option<Wal<T>>,
    startup: Option<Startup<T>>,
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
        let wal = startup.wal.take();
        let ring = mpsc::Consumer::new(&shared.inboxes[id.0].ring);
        let actors = Actors {
            id,
            shared: shared.clone(),
            subs: Vec::new(),
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
            external_drained: false,
            core,
            wal,
            startup: Some(startup),
        }
    }

    /// The thread's body.
    pub(crate) fn run(mut self) {
        self.pin();
        self.start();
        let backoff = Backoff::new();
        loop {
            // Acquire: pairs with the coordinator's SeqCst store; what the shard then
            // does is re-checked by the protocol itself (see `shutdown`).
            let command = self.flags().command.load(Ordering::Acquire);
            if self.phase == Phase::Running && command >= CLOSE {
                self.begin_closing();
            }
            if command >= STOP {
                self.finish(command == STOP);
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
            // One branch per pass: the memory-only pass is untouched by persistence.
            let did = if self.wal.is_some() {
                self.pass_logged()
            } else {
                self.pass()
            };
            if did > 0 {
                self.publish_counters();
            }
            if self.phase == Phase::Closing {
                self.closing_bookkeeping(did);
            }
            if did > 0 {
                backoff.reset();
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
        if let Some((recovered, ack, slot)) = startup.replay {
            match self.replay(&recovered) {
                Ok(()) => ack.send(ACK_OK),
                Err(e) => {
                    *slot
                        .lock()
                        .unwrap_or_else(crate::sync::plain::PoisonError::into_inner) = Some(e);
                    ack.send(ACK_CLOSED);
                }
            }
        }
    }

    /// Hands every record after the checkpoint to the handlers with `replay == true`.
    fn replay(&mut self, recovered: &Recovered) -> Result<(), Error> {
        let Self {
            shared,
            actors,
            names,
            wal,
            ..
        } = self;
        let Some(wal) = wal.as_mut() else {
            return Ok(());
        };
        let codec = wal.codec();
        let mut replayed = 0u64;
        for rec in recovered.replay()? {
            let rec = rec?;
            let decode_error = |source| Error::Decode {
                path: wal.dir().to_path_buf(),
                seq: rec.seq,
                source,
            };
            let Some(key) = shared.topics.router.key(&rec.topic) else {
                return Err(decode_error(crate::DecodeError::new(format!(
                    "invalid topic name of {} bytes",
                    rec.topic.len()
                ))));
            };
            let topic = shared.topics.intern(&key);
            if topic.shard != actors.id {
                // Recovery re-routes every record before replay (`persist::open`).
                return Err(decode_error(crate::DecodeError::new(format!(
                    "topic {:?} belongs to shard {}",
                    rec.topic, topic.shard.0
                ))));
            }
            let msg = (codec.decode)(&rec.payload).map_err(decode_error)?;
            actors.learn_and_dispatch(
                names,
                Envelope {
                    topic: topic.index,
                    msg,
                },
                true,
            );
            wal.replayed(rec.seq);
            replayed += 1;
        }
        if replayed > 0 {
            tracing::info!(shard = actors.id.0, records = replayed, "replayed the log");
            note_onward(wal, &actors.out);
            wal.checkpoint_now(shared.log_status(actors.id.0));
        }
        Ok(())
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
        let ring = &shared.inboxes[actors.id.0].ring;
        let mut did = inputs.ring.pop_batch(ring, BATCH, |item| match item {
            Item::Msg(env) => actors.learn_and_dispatch(names, env, false),
            Item::Control(c) => {
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
            let n = inputs.lanes[i]
                .pop_batch(BATCH, |env| actors.learn_and_dispatch(names, env, false));
            did += n;
            if n == 0 && inputs.lanes[i].is_finished() {
                inputs.lanes.swap_remove(i);
            } else {
                i += 1;
            }
        }
        for peer in &mut inputs.peers {
            did += peer.pop_batch(BATCH, |env| actors.learn_and_dispatch(names, env, false));
        }
        // Only what is queued now: handlers may queue more for the next pass.
        let local = actors.out.local.len().min(BATCH);
        for _ in 0..local {
            if let Some(env) = actors.out.local.pop_front() {
                actors.learn_and_dispatch(names, env, false);
            }
        }
        let (sent, dropped) = actors.out.flush_overflow();
        actors.counters.dropped += dropped as u64;
        did + local + sent
    }

    /// [`pass`](Self::pass) for a persistent bus: drains every input into the
    /// write-ahead batch, writes it to the log (one append, one commit: group commit),
    /// then runs the handlers; confirms durable publishes; checkpoints when due.
    fn pass_logged(&mut self) -> usize {
        let Self {
            shared,
            inputs,
            names,
            actors,
            phase,
            wal,
            ..
        } = self;
        let Some(wal) = wal.as_mut() else {
            return 0;
        };
        if wal.pipelined() {
            return pass_pipelined(shared, inputs, names, actors, *phase, wal);
        }
        let closing = *phase == Phase::Closing;
        let id = actors.id.0;
        let inbox = &shared.inboxes[id];
        let status = shared.log_status(id);
        let (did, local) = drain_logged(shared, inputs, names, actors, closing, wal);
        // Confirm durable publishers as soon as the batch is committed, before the
        // handlers run: a slow handler must not hold back acknowledgements.
        wal.commit_batch(status, &names.keys);
        if wal.confirmable() {
            confirm_durable(inputs, inbox);
        }
        wal.write(status, &names.keys, |env, fate| {
            actors.deliver(names, env, fate)
        });
        note_onward(wal, &actors.out);
        wal.tick(status);
        if wal.confirmable() {
            confirm_durable(inputs, inbox);
        }
        close_if_poisoned(wal, inputs, inbox);
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
                    // A persistent shard also wakes for an `Interval` sync or a timed
                    // checkpoint.
                    match self.wal.as_ref().and_then(Wal::deadline) {
                        Some(at) => self
                            .parker
                            .park_timeout(at.saturating_duration_since(std::time::Instant::now())),
                        None => self.parker.park(),
                    }
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
    fn finish(&mut self, drained: bool) {
        let Self {
            shared,
            inputs,
            names,
            actors,
            wal,
            ..
        } = self;
        let inbox = &shared.inboxes[actors.id.0];
        if let Some(wal) = wal.as_mut() {
            // Sync and checkpoint, and confirm what is logged, before the leftovers
            // below are popped (and dropped). Batches still waiting for their sync
            // (pipelined commit) are logged: they are handled first.
            let status = shared.log_status(actors.id.0);
            wal.flush_pipeline(status, |env, fate| actors.deliver(names, env, fate));
            wal.close(status, drained);
            if wal.confirmable() {
                confirm_durable(inputs, inbox);
            }
            wal.mark_closed(status);
        }
        let ring = &inbox.ring;
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
        actors.stop_all(names);
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
    /// Learns the message's topic name if new, then dispatches it.
    #[inline(always)]
    fn learn_and_dispatch(&mut self, names: &mut Names, env: Envelope<T>, replay: bool) {
        names.learn(env.topic, &self.shared.topics);
        self.dispatch(names, env, replay);
    }

    /// Delivers one message to every subscriber of its topic, in subscription order.
    /// The topic's name must have been learned.
    #[inline(always)]
    fn dispatch(&mut self, names: &Names, env: Envelope<T>, replay: bool) {
        let c = &mut self.counters;
        c.received += 1;
        let start = (c.received % SAMPLE_EVERY == 1).then(std::time::Instant::now);
        let topic = names.key(env.topic);
        match self.subs.get_mut(env.topic as usize) {
            // The lone subscriber, the common case: no loop, nothing to retain.
            Some(subs) if subs.len() == 1 => {
                c.handled += 1;
                let sub = &mut subs[0];
                let mut ctx = Context {
                    topic,
                    subscription: sub.id,
                    out: &mut self.out,
                    replay,
                };
                if let Err(payload) = sub.call(&mut ctx, |a, ctx| a.handle(ctx, &env.msg)) {
                    let (shared, id, where_is) = (&self.shared, self.id, &mut self.where_is);
                    if supervise_panic(shared, id, where_is, c, sub, &mut ctx, &env, &*payload)
                        == Verdict::Remove
                    {
                        subs.clear();
                    }
                }
            }
            Some(subs) if !subs.is_empty() => {
                c.handled += 1;
                let (out, shared, where_is, id) =
                    (&mut self.out, &self.shared, &mut self.where_is, self.id);
                subs.retain_mut(|sub| {
                    let mut ctx = Context {
                        topic,
                        subscription: sub.id,
                        out: &mut *out,
                        replay,
                    };
                    let Err(payload) = sub.call(&mut ctx, |a, ctx| a.handle(ctx, &env.msg)) else {
                        return true;
                    };
                    supervise_panic(shared, id, where_is, c, sub, &mut ctx, &env, &*payload)
                        != Verdict::Remove
                });
            }
            _ => {
                c.unrouted += 1;
                c.dead_letters += 1;
                let reason = DeadLetterReason::NoSubscriber;
                dead_letter(&self.shared, self.id, topic, &env, reason, replay);
                return;
            }
        }
        if let Some(start) = start {
            let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.shared.counters[self.id.0].record_handler_ns(ns);
        }
    }

    /// Hands a drained message to the handlers if it is in the log, else to the
    /// dead-letter handler.
    /// The topic's name must have been learned.
    fn deliver(&mut self, names: &Names, env: Envelope<T>, fate: Fate<'_>) {
        match fate {
            Fate::Logged => self.dispatch(names, env, false),
            Fate::NotLogged(error) => {
                self.counters.received += 1;
                self.counters.dead_letters += 1;
                let reason = DeadLetterReason::NotLogged { error };
                let topic = names.key(env.topic);
                dead_letter(&self.shared, self.id, topic, &env, reason, false);
            }
        }
    }

    /// Installs a subscription: runs the actor's `on_start` (supervised like a panic in
    /// `handle`). Returns whether it was kept.
    fn install(&mut self, names: &mut Names, topic: u32, mut sub: Subscriber<T>) -> bool {
        names.learn(topic, &self.shared.topics);
        let mut ctx = Context {
            topic: names.key(topic),
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
                    return false;
                }
                Verdict::Restarted => self.counters.restarts += 1,
                Verdict::Keep => {}
            }
        }
        self.where_is.insert(sub.id, topic);
        let index = topic as usize;
        if self.subs.len() <= index {
            self.subs.resize_with(index + 1, Vec::new);
        }
        self.subs[index].push(sub);
        true
    }

    /// Applies a control message. Returns a lane to add to the inputs.
    fn control(
        &mut self,
        names: &mut Names,
        control: Control<T>,
    ) -> Option<spsc::Consumer<Envelope<T>>> {
        match control {
            Control::Subscribe { topic, sub, ack } => {
                self.install(names, topic, sub);
                ack.send(ACK_OK);
                None
            }
            Control::Unsubscribe { id, ack } => {
                let Some(topic) = self.where_is.remove(&id) else {
                    ack.send(ACK_NOT_FOUND);
                    return None;
                };
                let subs = &mut self.subs[topic as usize];
                if let Some(pos) = subs.iter().position(|s| s.id == id) {
                    let mut sub = subs.remove(pos);
                    let mut ctx = Context {
                        topic: names.key(topic),
                        subscription: id,
                        out: &mut self.out,
                        replay: false,
                    };
                    if sub.call(&mut ctx, |a, ctx| a.on_stop(ctx)).is_err() {
                        self.counters.panics += 1;
                    }
                }
                ack.send(ACK_OK);
                None
            }
            Control::AddLane(lane) => Some(lane),
        }
    }

    /// Runs every actor's `on_stop`.
    fn stop_all(&mut self, names: &Names) {
        for (index, subs) in self.subs.iter_mut().enumerate() {
            for sub in subs.iter_mut() {
                let mut ctx = Context {
                    topic: names.key(index as u32),
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

/// After a handler panicked on `env`: counts it, sends the message to the dead-letter
/// handler and applies the subscriber's supervision policy.
#[cold]
#[allow(clippy::too_many_arguments)]
fn supervise_panic<T: 'static>(
    shared: &Shared<T>,
    shard: ShardId,
    where_is: &mut HashMap<SubscriptionId, u32>,
    c: &mut LocalCounters,
    sub: &mut Subscriber<T>,
    ctx: &mut Context<'_, T>,
    env: &Envelope<T>,
    payload: &(dyn std::any::Any + Send),
) -> Verdict {
    c.panics += 1;
    c.dead_letters += 1;
    let reason = DeadLetterReason::Panicked {
        subscription: sub.id,
        panic: panic_text(payload),
    };
    dead_letter(shared, shard, ctx.topic, env, reason, ctx.replay);
    let verdict = sub.after_panic(ctx, &mut c.panics);
    match verdict {
        Verdict::Keep => {}
        Verdict::Restarted => c.restarts += 1,
        Verdict::Remove => {
            c.stopped += 1;
            where_is.remove(&sub.id);
        }
    }
    verdict
}

/// Persistent buses: declares everything popped from the external inputs so far
/// durable, for `publish_durable` waiters. Called after the commit that made it so.
fn confirm_durable<T>(inputs: &mut Inputs<T>, inbox: &crate::inbox::Inbox<T>) {
    let head = inputs.ring.head();
    if head != inputs.ring_durable {
        inputs.ring_durable = head;
        // Release: the commit happens before a waiter's Acquire load that sees it.
        inbox.durable.store(head, Ordering::Release);
    }
    for lane in inputs.lanes.iter_mut().chain(inputs.peers.iter_mut()) {
        lane.publish_durable();
    }
}

/// [`Shard::pass_logged`] under the pipelined commit (`FsyncPolicy::Batch` with the log's
/// sync thread): drains every input into the write-ahead batch, appends it and asks for
/// its sync, then runs the handlers of every earlier batch whose sync has finished and
/// confirms the durable publishers of the inputs whose popped values are all synced. The
/// handlers of a batch therefore still run only after its sync (write-ahead), while the
/// next batch is drained and written during it.
fn pass_pipelined<T: Send + 'static>(
    shared: &Arc<Shared<T>>,
    inputs: &mut Inputs<T>,
    names: &mut Names,
    actors: &mut Actors<T>,
    phase: Phase,
    wal: &mut Wal<T>,
) -> usize {
    let closing = phase == Phase::Closing;
    let id = actors.id.0;
    let inbox = &shared.inboxes[id];
    let status = shared.log_status(id);
    let (did, local) = drain_logged(shared, inputs, names, actors, closing, wal);
    let ring_head = inputs.ring.head();
    let delivered = wal.pipeline(status, ring_head, &names.keys, |env, fate| {
        actors.deliver(names, env, fate)
    });
    confirm_pipelined(inputs, inbox, wal);
    note_onward(wal, &actors.out);
    wal.tick(status);
    close_if_poisoned(wal, inputs, inbox);
    let (sent, dropped) = actors.out.flush_overflow();
    actors.counters.dropped += dropped as u64;
    // Delivered messages count as work: the shard never idles (or reports itself idle
    // while closing) with batches waiting for their sync; `pipeline` waits for them when
    // nothing new was drained.
    did + local + sent + delivered
}

/// After a pass of a persistent shard whose log just failed: stops accepting (later
/// publishes get `Closed` with their message back).
fn close_if_poisoned<T>(wal: &mut Wal<T>, inputs: &mut Inputs<T>, inbox: &crate::inbox::Inbox<T>) {
    if std::mem::take(&mut wal.just_poisoned) {
        inputs.ring.close(&inbox.ring);
        for lane in &mut inputs.lanes {
            lane.close();
        }
    }
}

/// A persistent shard's drain: every input, in pass order, into the write-ahead batch
/// (learning the names of new topics). A control message in the shared ring first writes
/// and delivers what came before it. Notes in `lane_tickets`/`peer_tickets` the
/// pipelined-commit ticket of the batch each input was last popped into (used by
/// `confirm_pipelined`; harmless otherwise). Returns the items moved from the inputs and
/// the local messages taken.
fn drain_logged<T: Send + 'static>(
    shared: &Shared<T>,
    inputs: &mut Inputs<T>,
    names: &mut Names,
    actors: &mut Actors<T>,
    closing: bool,
    wal: &mut Wal<T>,
) -> (usize, usize) {
    let inbox = &shared.inboxes[actors.id.0];
    let status = shared.log_status(actors.id.0);
    let topics = &shared.topics;
    let mut did = inputs
        .ring
        .pop_batch(&inbox.ring, LOG_BATCH, |item| match item {
            Item::Msg(env) => {
                names.learn(env.topic, topics);
                wal.batch.push(env);
            }
            Item::Control(c) => {
                // Keep the ring's order: what came before the control is handled first
                // (`write` waits for the pipeline and syncs the batch here).
                wal.write(status, &names.keys, |env, fate| {
                    actors.deliver(names, env, fate);
                });
                if let Some(mut lane) = actors.control(names, c) {
                    if closing {
                        lane.close();
                    }
                    inputs.lanes.push(lane);
                }
            }
        });
    // Read after the ring: a control above may have synced and delivered everything.
    let ticket = wal.next_ticket();
    inputs.lane_tickets.resize(inputs.lanes.len(), 0);
    let mut i = 0;
    while i < inputs.lanes.len() {
        let n = inputs.lanes[i].pop_batch(LOG_BATCH, |env| {
            names.learn(env.topic, topics);
            wal.batch.push(env);
        });
        did += n;
        if n > 0 {
            inputs.lane_tickets[i] = ticket;
        }
        if n == 0 && inputs.lanes[i].is_finished() {
            inputs.lanes.swap_remove(i);
            inputs.lane_tickets.swap_remove(i);
        } else {
            i += 1;
        }
    }
    inputs.peer_tickets.resize(inputs.peers.len(), 0);
    for (peer, t) in inputs.peers.iter_mut().zip(inputs.peer_tickets.iter_mut()) {
        let n = peer.pop_batch(LOG_BATCH, |env| {
            names.learn(env.topic, topics);
            wal.batch.push(env);
        });
        did += n;
        if n > 0 {
            *t = ticket;
        }
    }
    // Only what is queued now: handlers may queue more for the next pass.
    let local = actors.out.local.len().min(LOG_BATCH);
    for env in actors.out.local.drain(..local) {
        names.learn(env.topic, topics);
        wal.batch.push(env);
    }
    wal.add_local(local as u64);
    (did, local)
}

/// Pipelined commit: declares durable, for `publish_durable` waiters, the shared ring up
/// to the last synced batch and every lane whose popped values are all in synced batches.
fn confirm_pipelined<T>(inputs: &mut Inputs<T>, inbox: &crate::inbox::Inbox<T>, wal: &mut Wal<T>) {
    // Nothing waiting for a sync: everything popped so far is synced (or dead-lettered
    // by a poisoned log, which confirms nothing: `wal.done_ticket` stopped).
    let synced = wal.take_ring_synced();
    let head = if wal.all_synced() {
        Some(inputs.ring.head())
    } else {
        synced
    };
    if let Some(head) = head {
        if head != inputs.ring_durable {
            inputs.ring_durable = head;
            // Release: the sync (seen finished by this thread under the sync thread's
            // mutex) happens before a waiter's Acquire load that sees it.
            inbox.durable.store(head, Ordering::Release);
        }
    }
    let done = wal.done_ticket();
    let lanes = inputs.lanes.iter_mut().zip(inputs.lane_tickets.iter());
    let peers = inputs.peers.iter_mut().zip(inputs.peer_tickets.iter());
    for (lane, &t) in lanes.chain(peers) {
        if t <= done {
            lane.publish_durable();
        }
    }
}

/// Checkpoint bookkeeping for messages handlers published onward: a safe point once
/// none waits in an overflow queue, and `safe` advanced past every point whose lanes
/// the receiving shards have made durable and whose local messages are logged.
fn note_onward<T>(wal: &mut Wal<T>, out: &Outbox<T>) {
    if !out.has_overflow() {
        wal.note_safe_point(out.lane_positions(), out.local_pushed);
    }
    wal.advance_safe(out.lane_count(), |to, position| {
        out.lane_durable(to, position)
    });
}

fn dead_letter<T>(
    shared: &Shared<T>,
    shard: ShardId,
    topic: &TopicKey,
    env: &Envelope<T>,
    reason: DeadLetterReason<'_>,
    replay: bool,
) {
    if let Some(f) = &shared.dead_letter {
        let letter = DeadLetter {
            topic: topic.as_str(),
            shard,
            message: &env.msg,
            reason,
            replay,
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
