//! Publishers: `Bus::publish` through the shared ring, and `Publisher` handles with
//! private lanes.

use std::cell::Cell;
use std::marker::PhantomData;

use crate::error::{DurableError, PublishError, TryPublishError};
use crate::inbox::{Control, Envelope, Inbox, Item, LogState, LogStatus};
use crate::intern::{TopicCache, TopicId};
use crate::ring::{reached, spsc, PushError, STEP};
use crate::shard::current;
use crate::shared::{Shared, Unloggable};
use crate::sync::{Arc, Backoff, Ordering};
use crate::topic::ToTopic;
use crate::wait::publisher_pause;

mod keyed;
mod publish_async;
#[cfg(shardbus_loom)]
pub(crate) use publish_async::wait_durable_async;
pub(crate) use publish_async::{publish_shared_async, publish_shared_durable_async};

/// `Bus::publish*`: resolves through the calling thread's topic cache.
#[inline]
fn resolve<T>(shared: &Shared<T>, topic: impl ToTopic) -> Option<TopicId> {
    topic.id_in(&shared.topics, None)
}

fn into_msg<T>(item: Item<T>) -> T {
    match item {
        Item::Msg(env) => env.msg,
        Item::Control(_) => unreachable!("only messages are pushed on the publish path"),
    }
}

/// The push-and-wait loop of every publish: tries `push` until the ring or lane has room
/// (pausing between tries, see `publisher_pause`), then wakes the shard. With
/// `wait == None` a full ring or lane comes back as `Full` at once. With `Some(bus)` it
/// waits, unless the calling thread is a shard thread of `bus` (a handler): waiting there
/// could deadlock, so `Full` comes back, which a blocking caller reports as
/// `WouldDeadlock`. `Closed` gives the value back.
#[inline]
fn push_and_wake<T, V, R>(
    inbox: &Inbox<T>,
    mut value: V,
    wait: Option<u64>,
    mut push: impl FnMut(V) -> Result<R, PushError<V>>,
) -> Result<R, PushError<V>> {
    let mut waiting = Waiting::new();
    loop {
        match push(value) {
            Ok(r) => {
                inbox.wake();
                return Ok(r);
            }
            Err(PushError::Full(back)) => {
                if !wait.is_some_and(|bus| waiting.pause(bus)) {
                    return Err(PushError::Full(back));
                }
                value = back;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A blocking push's wait for room (in a lane or a shard's ring), across its retries.
struct Waiting {
    backoff: Backoff,
    /// Whether the calling thread is known not to be one of the bus's shard threads.
    checked: bool,
}

impl Waiting {
    #[inline(always)]
    fn new() -> Self {
        Self {
            backoff: Backoff::new(),
            checked: false,
        }
    }

    /// Pauses before the next try: `true`. `false`, without pausing, on one of `bus`'s
    /// own shard threads, which must not wait for room (that could deadlock).
    fn pause(&mut self, bus: u64) -> bool {
        // Asked once, on the first wait: the answer does not change on this thread.
        if !self.checked {
            if current::is_shard_of(bus) {
                return false;
            }
            self.checked = true;
        }
        publisher_pause(&self.backoff);
        true
    }

    /// After a try that made progress: the next wait starts short again.
    fn progressed(&mut self) {
        self.backoff.reset();
    }
}

/// Pushes into a shard's shared ring (`Bus::publish`/`try_publish`).
pub(crate) fn push_shared<T>(
    shared: &Shared<T>,
    topic: impl ToTopic,
    msg: T,
    block: bool,
) -> Result<(), TryPublishError<T>> {
    let Some(topic) = resolve(shared, topic) else {
        return Err(TryPublishError::InvalidTopic(msg));
    };
    let msg = shared.admit(msg)?;
    let inbox = &shared.inboxes[topic.shard.0];
    let item = Item::Msg(Envelope {
        topic: topic.index,
        msg,
    });
    let wait = block.then_some(shared.topics.bus);
    push_and_wake(inbox, item, wait, |item| inbox.ring.push(item)).map_err(|e| match e {
        PushError::Full(back) => TryPublishError::Full(into_msg(back)),
        PushError::Closed(back) => TryPublishError::Closed(into_msg(back)),
    })
}

/// Checks before a durable publish to a topic of `topic_len` bytes; the message comes
/// back if it cannot be accepted. Last, the message is encoded on this thread
/// ([`Shared::check_record`]): one the log could never take is refused here, since it
/// could never be confirmed.
fn check_durable<T>(
    shared: &Shared<T>,
    topic: Option<TopicId>,
    topic_len: usize,
    msg: T,
) -> Result<(TopicId, T), DurableError<T>> {
    let Some(topic) = topic else {
        return Err(DurableError::InvalidTopic(msg));
    };
    if !shared.persistent {
        return Err(DurableError::NotPersistent(msg));
    }
    if current::is_shard_of(shared.topics.bus) {
        return Err(DurableError::WouldDeadlock(msg));
    }
    if shared.is_closing() || shared.log_status(topic.shard.0).state() != LogState::Ok {
        return Err(DurableError::Closed(msg));
    }
    match shared.check_record(topic_len, &msg) {
        Ok(()) => Ok((topic, msg)),
        Err(Unloggable::Encode(error)) => Err(DurableError::Encode { msg, error }),
        Err(Unloggable::TooLarge(size)) => Err(DurableError::TooLarge {
            msg,
            size,
            max: shared.max_record_size,
        }),
    }
}

/// Waits until `is_durable` says so, or the shard's log can confirm nothing more.
fn wait_durable(status: &LogStatus, is_durable: impl Fn() -> bool) -> Result<(), ()> {
    let backoff = Backoff::new();
    loop {
        if is_durable() {
            return Ok(());
        }
        if status.state() != LogState::Ok {
            // The shard stored its last watermark before this state (Release/Acquire):
            // one more look decides.
            return if is_durable() { Ok(()) } else { Err(()) };
        }
        publisher_pause(&backoff);
    }
}

/// `Bus::publish_durable`: pushes into the shard's shared ring and waits until the shard
/// has committed past the message's position.
pub(crate) fn push_shared_durable<T>(
    shared: &Shared<T>,
    topic: impl ToTopic,
    msg: T,
) -> Result<(), DurableError<T>> {
    let topic_len = topic.name_len();
    let (topic, msg) = check_durable(shared, resolve(shared, topic), topic_len, msg)?;
    let inbox = &shared.inboxes[topic.shard.0];
    let item = Item::Msg(Envelope {
        topic: topic.index,
        msg,
    });
    let wait = Some(shared.topics.bus);
    let pos = push_and_wake(inbox, item, wait, |item| inbox.ring.push_at(item))
        .map_err(|e| DurableError::Closed(into_msg(e.into_inner())))?;
    let target = pos.wrapping_add(STEP);
    // Acquire: pairs with the shard's Release store after the commit (`confirm_durable`).
    wait_durable(&inbox.log, || {
        reached(inbox.durable.load(Ordering::Acquire), target)
    })
    .map_err(|()| DurableError::Unconfirmed)
}

/// Pushes a control message into a shard of bus `bus`, waiting while the ring is full.
/// `Closed` if closed; `Full` if it would have to wait on a shard thread of `bus`.
pub(crate) fn push_control<T>(
    bus: u64,
    inbox: &Inbox<T>,
    control: Control<T>,
) -> Result<(), PushError<()>> {
    let item = Item::Control(control);
    push_and_wake(inbox, item, Some(bus), |item| inbox.ring.push(item)).map_err(|e| match e {
        PushError::Full(_) => PushError::Full(()),
        PushError::Closed(_) => PushError::Closed(()),
    })
}

/// A blocking publish's error from its push's: `Full` means it would have waited on one
/// of the bus's own shard threads (see `push_and_wake`).
fn blocking_error<T>(e: PushError<T>) -> PublishError<T> {
    match e {
        PushError::Full(msg) => PublishError::WouldDeadlock(msg),
        PushError::Closed(msg) => PublishError::Closed(msg),
    }
}

/// A publishing handle with its own lane into each shard.
///
/// Each `Publisher` owns a single-producer lane into every shard it publishes to
/// (created on first use), so publishers never contend with each other: a publish is
/// a slot write and one plain store (no read-modify-write). Messages from one `Publisher` to one
/// topic are handled in publish order. `Clone` gives a new handle with new lanes (for
/// another thread); a `Publisher` is `Send` but not `Sync`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = shardbus::Bus::<u64>::builder().shards(2).build()?;
/// let mut publisher = bus.publisher();
/// let producer = std::thread::spawn(move || {
///     for i in 0..1000 {
///         publisher.publish("ticks", i).unwrap();
///     }
/// });
/// producer.join().unwrap();
/// let stats = bus.shutdown();
/// assert_eq!(stats.received(), 1000);
/// # Ok(()) }
/// ```
pub struct Publisher<T> {
    shared: Arc<Shared<T>>,
    /// Topics this publisher has published to by name.
    cache: TopicCache,
    lanes: Box<[Option<spsc::Producer<Envelope<T>>>]>,
    _not_sync: PhantomData<Cell<()>>,
}

enum LaneError {
    Full,
    Closed,
}

impl<T> Publisher<T> {
    pub(crate) fn new(shared: Arc<Shared<T>>) -> Self {
        let lanes = (0..shared.inboxes.len()).map(|_| None).collect();
        Self {
            shared,
            cache: TopicCache::default(),
            lanes,
            _not_sync: PhantomData,
        }
    }

    /// Publishes, waiting while the target lane is full. Returns `Closed` with the
    /// message once the bus is shutting down, `Encode` with it on a persistent bus whose
    /// codec cannot encode it (see [`Codec::CAN_FAIL`](crate::Codec::CAN_FAIL)).
    ///
    /// Used from a handler on one of the bus's own shard threads, it publishes while the
    /// lane has room but does not wait for room (that could deadlock): `WouldDeadlock`
    /// with the message instead. The same holds for
    /// [`publish_batch`](Self::publish_batch) (`WouldDeadlock(())`, the rest left in the
    /// batch).
    #[inline]
    pub fn publish(&mut self, topic: impl ToTopic, msg: T) -> Result<(), PublishError<T>> {
        let Some(topic) = topic.id_in(&self.shared.topics, Some(&mut self.cache)) else {
            return Err(PublishError::InvalidTopic(msg));
        };
        if !self.shared.gate_is_clear() {
            return self.publish_gated(topic, msg);
        }
        // The common case: the message goes straight to the lane, never through a
        // `Result` of the checks (moving it there and back costs on every publish).
        self.push_waiting(topic, msg).map_err(blocking_error)
    }

    /// [`publish`](Self::publish) when the gate is not clear: shutdown has begun, or the
    /// message must be encoded first.
    ///
    /// The out-of-line part gets a copy of the message, never its own place:
    /// `black_box` keeps the compiler from passing the caller's. A message whose address
    /// reaches a call out of line lives on the stack on every path, the common one
    /// included, and its copy into the slot then loads whole words that narrower stores
    /// have just written, a load that waits until every older store has left the store
    /// buffer (the previous push's among them). Kept off the stack, its fields go from
    /// registers into the slot.
    #[inline(always)]
    fn publish_gated(&mut self, topic: TopicId, msg: T) -> Result<(), PublishError<T>> {
        self.publish_gated_slow(topic, std::hint::black_box(msg))
    }

    /// See [`Self::publish_gated`].
    #[cold]
    #[inline(never)]
    fn publish_gated_slow(&mut self, topic: TopicId, msg: T) -> Result<(), PublishError<T>> {
        let msg = self.shared.admit_slow(msg)?;
        self.push_waiting(topic, msg).map_err(blocking_error)
    }

    /// Pushes into this publisher's lane to `topic`'s shard, waiting while it is full;
    /// gives the message back once the bus is closed (`Closed`), or if it would have to
    /// wait on one of the bus's own shard threads (`Full`). The common case (the lane
    /// exists and has room) is one push and a wake check; registering the lane and
    /// waiting for room are in [`Self::make_room`], which never holds the message.
    /// Always inlined, and the message never passes to a call out of line, so that it
    /// goes from the caller's registers into the slot (see `spsc::Producer::push`).
    #[inline(always)]
    fn push_waiting(&mut self, topic: TopicId, msg: T) -> Result<(), PushError<T>> {
        let shard = topic.shard.0;
        let mut env = Envelope {
            topic: topic.index,
            msg,
        };
        let mut waiting = Waiting::new();
        loop {
            if let Some(lane) = self.lanes[shard].as_mut() {
                match lane.push(env) {
                    Ok(()) => {
                        // `Shared` owns the inboxes (alive while `self.shared` is), and
                        // `shard` is in bounds: `self.lanes[shard]` above checked it
                        // against the lanes, which `new` made one per inbox (both fixed
                        // for the bus's life).
                        // SAFETY: by the ownership and the bound stated in the lines just above.
                        unsafe { self.shared.inboxes.get_unchecked(shard) }.wake();
                        return Ok(());
                    }
                    Err(PushError::Full(back)) => env = back,
                    Err(PushError::Closed(back)) => return Err(PushError::Closed(back.msg)),
                }
            }
            match self.make_room(shard, &mut waiting) {
                Ok(()) => {}
                Err(LaneError::Full) => return Err(PushError::Full(env.msg)),
                Err(LaneError::Closed) => return Err(PushError::Closed(env.msg)),
            }
        }
    }

    /// [`Self::push_waiting`] when the lane is not registered yet (registers it) or is
    /// full (pauses, unless this is one of the bus's own shard threads: `Full`). `Ok`:
    /// push again.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, shard: usize, waiting: &mut Waiting) -> Result<(), LaneError> {
        if self.lanes[shard].is_none() {
            return self.register(shard, true);
        }
        if waiting.pause(self.shared.topics.bus) {
            Ok(())
        } else {
            Err(LaneError::Full)
        }
    }

    /// Persistent buses: publishes like [`publish`](Self::publish), then waits until the
    /// message's record is in the log as durably as the bus's
    /// [`FsyncPolicy`](crate::log::FsyncPolicy) makes it: synced (`Batch`, `Interval`,
    /// `Always`: survives power loss), or handed to the OS (`Never`: survives a process
    /// crash only). See `docs/persistence.md`.
    ///
    /// Errors give the message back if it was not accepted (`Encode` if its codec cannot
    /// encode it, `TooLarge` if its record would exceed the maximum record size: the
    /// message is encoded once on this thread to know); `Unconfirmed` means it was
    /// accepted but the shard's log failed (or a deadline shutdown dropped it) first.
    /// From a handler on one of the bus's own shard threads it returns `WouldDeadlock`
    /// with the message (the shard would wait for itself), as does
    /// [`wait_durable`](Self::wait_durable) there.
    pub fn publish_durable(&mut self, topic: impl ToTopic, msg: T) -> Result<(), DurableError<T>> {
        let topic_len = topic.name_len();
        let topic = topic.id_in(&self.shared.topics, Some(&mut self.cache));
        let (topic, msg) = check_durable(&self.shared, topic, topic_len, msg)?;
        let shard = topic.shard.0;
        // Not on a shard thread (`check_durable`), so `push_waiting` waits for room.
        self.push_waiting(topic, msg)
            .map_err(|e| DurableError::Closed(e.into_inner()))?;
        self.wait_lane_durable(shard)
            .map_err(|()| DurableError::Unconfirmed)
    }

    /// Persistent buses: waits until every message this publisher has published so far
    /// (with [`publish`](Self::publish), [`publish_batch`](Self::publish_batch) or
    /// [`try_publish`](Self::try_publish)) is durable, as for
    /// [`publish_durable`](Self::publish_durable). Publishing many and waiting once costs
    /// one wait for the whole lot. `Unconfirmed` if a shard's log failed (or the bus
    /// stopped) first; `NotPersistent` on a memory-only bus.
    pub fn wait_durable(&mut self) -> Result<(), DurableError<()>> {
        if !self.shared.persistent {
            return Err(DurableError::NotPersistent(()));
        }
        if current::is_shard_of(self.shared.topics.bus) {
            return Err(DurableError::WouldDeadlock(()));
        }
        for shard in 0..self.lanes.len() {
            if self.lanes[shard].is_some() {
                self.wait_lane_durable(shard)
                    .map_err(|()| DurableError::Unconfirmed)?;
            }
        }
        Ok(())
    }

    fn wait_lane_durable(&self, shard: usize) -> Result<(), ()> {
        let Some(lane) = self.lanes[shard].as_ref() else {
            return Ok(());
        };
        let target = lane.position();
        wait_durable(self.shared.log_status(shard), || lane.is_durable(target))
    }

    /// Publishes only if the target lane has room now; never blocks.
    pub fn try_publish(&mut self, topic: impl ToTopic, msg: T) -> Result<(), TryPublishError<T>> {
        let Some(topic) = topic.id_in(&self.shared.topics, Some(&mut self.cache)) else {
            return Err(TryPublishError::InvalidTopic(msg));
        };
        let msg = self.shared.admit(msg)?;
        let shard = topic.shard.0;
        match self.lane(shard, false) {
            Ok(_) => {}
            Err(LaneError::Full) => return Err(TryPublishError::Full(msg)),
            Err(LaneError::Closed) => return Err(TryPublishError::Closed(msg)),
        }
        let Some(lane) = self.lanes[shard].as_mut() else {
            return Err(TryPublishError::Closed(msg));
        };
        let env = Envelope {
            topic: topic.index,
            msg,
        };
        let inbox = &self.shared.inboxes[shard];
        push_and_wake(inbox, env, None, |env| lane.push(env)).map_err(|e| match e {
            PushError::Full(back) => TryPublishError::Full(back.msg),
            PushError::Closed(back) => TryPublishError::Closed(back.msg),
        })
    }

    /// Publishes every message of `batch` to one topic, in order, moving them out of
    /// the vector; one atomic add per run of messages that fits the lane. Waits while
    /// the lane is full. On `Closed`, the messages not accepted are left in `batch`
    /// (in order) and every message removed from it was accepted.
    ///
    /// On a persistent bus whose codec can fail, every message is encoded on this thread
    /// first: if one does not encode, the messages before it are published, and `Encode`
    /// leaves that message first in `batch`, followed by the rest (none of them accepted).
    pub fn publish_batch(
        &mut self,
        topic: impl ToTopic,
        batch: &mut Vec<T>,
    ) -> Result<(), PublishError<()>> {
        let Some(topic) = topic.id_in(&self.shared.topics, Some(&mut self.cache)) else {
            return Err(PublishError::InvalidTopic(()));
        };
        if self.shared.is_closing() {
            return Err(PublishError::Closed(()));
        }
        // The first message that does not encode, if the codec can fail.
        let mut refused = None;
        if let Some(codec) = self.shared.codec.as_ref().filter(|c| c.can_fail) {
            refused = batch
                .iter()
                .enumerate()
                .find_map(|(i, msg)| codec.encoded_len(msg).err().map(|e| (i, e)));
        }
        let mut accept = refused.as_ref().map_or(batch.len(), |(i, _)| *i);
        let shard = topic.shard.0;
        let mut waiting = Waiting::new();
        let bus = self.shared.topics.bus;
        while accept > 0 {
            let lane = self.lane(shard, true).map_err(|e| match e {
                LaneError::Full => PublishError::WouldDeadlock(()),
                LaneError::Closed => PublishError::Closed(()),
            })?;
            let free = lane.free_slots().map_err(|()| PublishError::Closed(()))?;
            if free == 0 {
                if !waiting.pause(bus) {
                    return Err(PublishError::WouldDeadlock(()));
                }
                continue;
            }
            waiting.progressed();
            let n = free.min(accept);
            let index = topic.index;
            if let Err(back) = lane.push_n(
                n,
                batch.drain(..n).map(|msg| Envelope { topic: index, msg }),
            ) {
                batch.splice(0..0, back.into_iter().map(|env| env.msg));
                return Err(PublishError::Closed(()));
            }
            accept -= n;
            self.shared.inboxes[shard].wake();
        }
        match refused {
            Some((_, error)) => Err(PublishError::Encode { msg: (), error }),
            None => Ok(()),
        }
    }

    /// This publisher's lane into `shard`, registering it with the shard on first use.
    #[inline]
    fn lane(
        &mut self,
        shard: usize,
        block: bool,
    ) -> Result<&mut spsc::Producer<Envelope<T>>, LaneError> {
        if self.lanes[shard].is_none() {
            self.register(shard, block)?;
        }
        self.lanes[shard].as_mut().ok_or(LaneError::Closed)
    }

    /// Creates the lane into `shard` and hands its consumer to the shard.
    #[cold]
    fn register(&mut self, shard: usize, block: bool) -> Result<(), LaneError> {
        let (producer, consumer) =
            spsc::channel_in_mode(self.shared.lane_capacity, 0, self.shared.asym());
        let inbox = &self.shared.inboxes[shard];
        if block {
            let bus = self.shared.topics.bus;
            push_control(bus, inbox, Control::AddLane(consumer)).map_err(|e| match e {
                PushError::Full(()) => LaneError::Full,
                PushError::Closed(()) => LaneError::Closed,
            })?;
        } else {
            match inbox.ring.push(Item::Control(Control::AddLane(consumer))) {
                Ok(()) => inbox.wake(),
                Err(PushError::Full(_)) => return Err(LaneError::Full),
                Err(PushError::Closed(_)) => return Err(LaneError::Closed),
            }
        }
        self.lanes[shard] = Some(producer);
        Ok(())
    }
}

impl<T> Clone for Publisher<T> {
    /// A new handle with new lanes: its messages are ordered among themselves, not
    /// with the original's.
    fn clone(&self) -> Self {
        Self::new(self.shared.clone())
    }
}

impl<T> std::fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lanes = self.lanes.iter().filter(|l| l.is_some()).count();
        f.debug_struct("Publisher").field("lanes", &lanes).finish()
    }
}
