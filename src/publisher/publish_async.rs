//! The async publishes: `publish_async` and `publish_durable_async` of [`Publisher`] and
//! of `Bus`. Each tries the push first, exactly as the blocking form does; only a full
//! lane or ring (or a durable wait) goes to the waiting path, which registers a waker and
//! re-checks instead of pausing the thread:
//! - a publisher's lane: its waker slot and flag (`ring::spsc`, `RoomWaiter`), woken by
//!   the shard once a pop batch has drained the lane to half its capacity;
//! - a shard's shared ring: its waiter list (`ring::mpsc::Room`), woken after a pop batch;
//! - a durable watermark: the shard's waiter list (`inbox::DurableWait`), woken after the
//!   watermark stores of a commit, and when the log stops confirming.
//!
//! Every message is pushed inside one `poll`: a future holds its message until the push
//! succeeds and returns on that same poll, so a future dropped before completing drops
//! its message (never pushed), and one that completed had pushed it.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use super::*;
use crate::sync::wait_list_listen;

/// Pushes `item` into `inbox`'s shared ring, waiting (without blocking the thread) while
/// it is full (`mpsc::Ring::push_at_async`), then wakes the shard; returns the position
/// it took. `Full` instead of waiting on a shard thread
/// of bus `bus`; `Closed` gives the item back.
pub(crate) async fn push_ring_async<T>(
    inbox: &Inbox<T>,
    item: Item<T>,
    bus: u64,
) -> Result<u64, PushError<Item<T>>> {
    // Asked once, before the first wait: the answer does not change on this thread (an
    // executor may move the task, but not onto a shard thread: shards run no tasks).
    let pos = inbox
        .ring
        .push_at_async(item, || !current::is_shard_of(bus))
        .await?;
    inbox.wake();
    Ok(pos)
}

/// Registers a new lane of this publisher's with shard `shard` (the first publish to it):
/// sends the consumer's end through the shard's shared ring, waiting without blocking the
/// thread while that is full; returns the producer's end. `Full` on one of the bus's own
/// shard threads (which must not wait for itself), `Closed` after shutdown has begun.
async fn register_lane_async<T>(
    shared: Arc<Shared<T>>,
    shard: usize,
) -> Result<spsc::Producer<Envelope<T>>, PushError<()>> {
    let (producer, consumer) = spsc::channel_in_mode(shared.lane_capacity, 0, shared.asym());
    let inbox = &shared.inboxes[shard];
    match push_ring_async(
        inbox,
        Item::Control(Control::AddLane(consumer)),
        shared.topics.bus,
    )
    .await
    {
        Ok(_) => Ok(producer),
        Err(PushError::Full(_)) => Err(PushError::Full(())),
        Err(PushError::Closed(_)) => Err(PushError::Closed(())),
    }
}

/// Waits (without blocking the thread) until `is_durable` says so, or the shard's log
/// can confirm nothing more (`Err`).
pub(crate) async fn wait_durable_async(
    status: &LogStatus,
    is_durable: impl Fn() -> bool,
) -> Result<(), ()> {
    loop {
        if is_durable() {
            return Ok(());
        }
        if status.state() != LogState::Ok {
            // As in the blocking wait: the shard stored its last watermark before this
            // state (Release/Acquire), so one more look decides.
            return if is_durable() { Ok(()) } else { Err(()) };
        }
        // Register, count in, fence, re-check: see `inbox::DurableWait`.
        wait_list_listen!(status.wait.list() => listener);
        let (_waiting, fenced) = status.wait.enter();
        if is_durable() {
            return Ok(());
        }
        if status.state() != LogState::Ok {
            return if is_durable() { Ok(()) } else { Err(()) };
        }
        if fenced {
            (&mut listener).await;
        } else {
            crate::sync::YieldNow::new().await;
        }
    }
}

/// `Bus::publish_async`.
pub(crate) async fn publish_shared_async<T>(
    shared: &Shared<T>,
    topic: impl ToTopic,
    msg: T,
) -> Result<(), PublishError<T>> {
    let Some(topic) = resolve(shared, topic) else {
        return Err(PublishError::InvalidTopic(msg));
    };
    let msg = shared.admit(msg)?;
    let inbox = &shared.inboxes[topic.shard.0];
    let item = Item::Msg(Envelope {
        topic: topic.index,
        msg,
    });
    push_ring_async(inbox, item, shared.topics.bus)
        .await
        .map(|_| ())
        .map_err(|e| blocking_error(map_push(e, into_msg)))
}

/// `Bus::publish_durable_async`.
pub(crate) async fn publish_shared_durable_async<T>(
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
    // Not on a shard thread (`check_durable`), so this waits for room.
    let pos = push_ring_async(inbox, item, shared.topics.bus)
        .await
        .map_err(|e| DurableError::Closed(into_msg(e.into_inner())))?;
    let target = pos.wrapping_add(STEP);
    // Acquire: pairs with the shard's Release store after the commit (`confirm_durable`).
    wait_durable_async(&inbox.log, || {
        reached(inbox.durable.load(Ordering::Acquire), target)
    })
    .await
    .map_err(|()| DurableError::Unconfirmed)
}

fn map_push<A, B>(e: PushError<A>, f: impl FnOnce(A) -> B) -> PushError<B> {
    match e {
        PushError::Full(a) => PushError::Full(f(a)),
        PushError::Closed(a) => PushError::Closed(f(a)),
    }
}

impl<T> Publisher<T> {
    /// Publishes, waiting without blocking the thread while the target lane is full: the
    /// async form of [`publish`](Self::publish), with the same errors. Runs on any
    /// executor (a std [`Waker`](std::task::Waker)); the returned future is `Send` when
    /// `T` is.
    ///
    /// When the lane has room the push happens on the first poll: `publish`'s push plus
    /// the future's own bookkeeping (a future of 64 bytes, moved by its caller). When the
    /// lane is full, the future registers its waker with the lane
    /// and returns `Pending`; the shard wakes it once it has drained the lane to half its
    /// capacity.
    ///
    /// Awaited on one of the bus's own shard threads (a handler driving a future), it
    /// publishes while the lane has room but does not wait for room (the shard would
    /// wait for itself): `WouldDeadlock` with the message instead. After shutdown has
    /// begun: `Closed` with the message.
    ///
    /// # Cancel safety
    ///
    /// The message is pushed within a single poll, and the future completes on that
    /// poll. Dropped before it completes, the future drops its message, which was never
    /// published, and nothing else changes. Once it has completed with `Ok` the message
    /// is delivered as any published message is.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = shardbus::Bus::<u64>::builder().shards(2).build()?;
    /// let mut publisher = bus.publisher();
    /// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// runtime.block_on(async {
    ///     for i in 0..1000 {
    ///         publisher.publish_async("ticks", i).await.unwrap();
    ///     }
    /// });
    /// assert_eq!(bus.shutdown().received(), 1000);
    /// # Ok(()) }
    /// ```
    pub fn publish_async(
        &mut self,
        topic: impl ToTopic,
        msg: T,
    ) -> impl Future<Output = Result<(), PublishError<T>>> + '_ {
        // Resolved now, so that the future holds a `TopicId` rather than the topic argument
        // (a `Topic` handle is 88 bytes): the future is moved on every publish, and a
        // small one is a cheap move. Resolving only interns the name; nothing is published
        // before the first poll.
        let topic = topic.id_in(&self.shared.topics, Some(&mut self.cache));
        LanePush::new(self, topic, msg, register_lane_async::<T>)
    }

    /// Persistent buses: publishes like [`publish_async`](Self::publish_async), then
    /// waits, without blocking the thread, until the message's record is in the log as
    /// durably as the bus's [`FsyncPolicy`](crate::log::FsyncPolicy) makes it: the async
    /// form of [`publish_durable`](Self::publish_durable), with the same errors
    /// (`WouldDeadlock` on one of the bus's own shard threads, before anything is
    /// pushed).
    ///
    /// # Cancel safety
    ///
    /// Dropped before its push (while it waits for room), the future drops its message,
    /// which was never published. Dropped after the push (while it waits for the
    /// commit), the message stays published: it is logged and delivered as if the future
    /// had completed, only the confirmation is lost. Use
    /// [`wait_durable`](Self::wait_durable) to wait for it again.
    pub async fn publish_durable_async(
        &mut self,
        topic: impl ToTopic,
        msg: T,
    ) -> Result<(), DurableError<T>> {
        let topic_len = topic.name_len();
        let topic = topic.id_in(&self.shared.topics, Some(&mut self.cache));
        let (topic, msg) = check_durable(&self.shared, topic, topic_len, msg)?;
        let shard = topic.shard.0;
        // Checked and encoded by `check_durable` already (as `publish_durable` does).
        LanePush::new(self, Some(topic), msg, register_lane_async::<T>)
            .await
            .map_err(|e| match e {
                PublishError::Encode { msg, error } => DurableError::Encode { msg, error },
                PublishError::InvalidTopic(msg) => DurableError::InvalidTopic(msg),
                PublishError::WouldDeadlock(msg) => DurableError::WouldDeadlock(msg),
                PublishError::Closed(msg) => DurableError::Closed(msg),
                // Only `Context::publish` refuses with `Full` (its overflow limit); a
                // lane push waits for room instead. Were it ever returned here, the
                // message was not accepted: `Closed` gives it back as such.
                PublishError::Full(msg) => DurableError::Closed(msg),
            })?;
        let Some(lane) = self.lanes[shard].as_ref() else {
            return Err(DurableError::Unconfirmed);
        };
        let target = lane.position();
        wait_durable_async(self.shared.log_status(shard), || lane.is_durable(target))
            .await
            .map_err(|()| DurableError::Unconfirmed)
    }
}

/// The future of [`Publisher::publish_async`] (and the push of `publish_durable_async`):
/// the gate's check on the first poll, then the push into this publisher's lane to the
/// topic's shard, waiting for room.
///
/// Written by hand rather than as an `async fn` so that it stays small (the publisher, the
/// topic's id, the message, a flag and the rarely used registration): the caller moves it
/// on every publish. A wait for room keeps nothing in it (the waker goes to the lane's
/// slot, `Producer::poll_room`); the first publish to a shard registers the lane through
/// the shard's shared ring, a wait with a listener of some hundred bytes, boxed (`make`):
/// an allocation made only where the lane itself is allocated.
struct LanePush<'a, T, R> {
    publisher: &'a mut Publisher<T>,
    /// The topic's id, field by field (`TopicId`'s shard and index; meaningless with
    /// [`INVALID_TOPIC`] set). Not an `Option<TopicId>`: the resolution writes that
    /// one's tag and fields with separate stores, and moving it into the future read
    /// the tag and the shard with one 16-byte load. Such a load cannot take its data
    /// from the store buffer: it waits until every older store has reached the cache,
    /// the previous publish's slot and `tail` stores included, and those miss while
    /// the shard reads the same lines (measured in docs/benchmarks.md, "Async API").
    /// Plain fields are read back at the width they were written.
    shard: usize,
    index: u32,
    /// Taken when the future completes.
    msg: Option<T>,
    /// The gate was checked (the first poll) and `current::is_shard_of` asked (the first
    /// full lane): bit 0 and bit 1; bit 2: the topic is invalid.
    asked: u8,
    /// The lane's registration, while it waits for room in the shared ring.
    register: Option<Pin<Box<R>>>,
    make: fn(Arc<Shared<T>>, usize) -> R,
}

/// Back-off steps a publish spins on a full lane before it pends: 1 + 2 + … + 64 spin
/// hints, the blocking publish's spin phase (crossbeam `Backoff`), a few microseconds.
const SPINS_BEFORE_PEND: u32 = 7;

const GATE_CHECKED: u8 = 1;
const SHARD_ASKED: u8 = 2;
const INVALID_TOPIC: u8 = 4;

// The message is never pinned: `poll` moves it in and out of `msg`, and the registration
// future is pinned in its own box.
impl<T, R> Unpin for LanePush<'_, T, R> {}

impl<'a, T, R> LanePush<'a, T, R>
where
    R: Future<Output = Result<spsc::Producer<Envelope<T>>, PushError<()>>>,
{
    fn new(
        publisher: &'a mut Publisher<T>,
        topic: Option<TopicId>,
        msg: T,
        make: fn(Arc<Shared<T>>, usize) -> R,
    ) -> Self {
        let (shard, index, asked) = match topic {
            Some(id) => (id.shard.0, id.index, 0),
            None => (0, 0, INVALID_TOPIC),
        };
        Self {
            publisher,
            shard,
            index,
            msg: Some(msg),
            asked,
            register: None,
            make,
        }
    }

    #[inline]
    /// The first poll's part: the topic's validity and the gate. Gives the message back
    /// to push, or the error to complete with.
    fn admit(&mut self, msg: T) -> Result<(TopicId, T), PublishError<T>> {
        if self.asked & INVALID_TOPIC != 0 {
            return Err(PublishError::InvalidTopic(msg));
        }
        let topic = TopicId {
            shard: crate::ShardId(self.shard),
            index: self.index,
        };
        if self.asked & GATE_CHECKED != 0 {
            return Ok((topic, msg));
        }
        self.asked |= GATE_CHECKED;
        let shared = &self.publisher.shared;
        let msg = if shared.gate_is_clear() {
            msg
        } else {
            shared.admit_slow(msg)?
        };
        Ok((topic, msg))
    }
}

impl<T, R> Future for LanePush<'_, T, R>
where
    R: Future<Output = Result<spsc::Producer<Envelope<T>>, PushError<()>>>,
{
    type Output = Result<(), PublishError<T>>;

    /// The fast path, as `Publisher::publish`'s: the lane exists and has room. The rest is
    /// out of line (`wait`).
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let msg = this
            .msg
            .take()
            .expect("`publish_async` polled after it completed");
        let (topic, msg) = match this.admit(msg) {
            Ok(admitted) => admitted,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let shard = topic.shard.0;
        if let Some(lane) = this.publisher.lanes[shard].as_mut() {
            let env = Envelope {
                topic: topic.index,
                msg,
            };
            return match lane.push(env) {
                Ok(()) => {
                    this.publisher.shared.inboxes[shard].wake();
                    Poll::Ready(Ok(()))
                }
                Err(PushError::Full(back)) => this.wait(cx, topic, back.msg),
                Err(PushError::Closed(back)) => Poll::Ready(Err(PublishError::Closed(back.msg))),
            };
        }
        this.wait(cx, topic, msg)
    }
}

impl<T, R> LanePush<'_, T, R>
where
    R: Future<Output = Result<spsc::Producer<Envelope<T>>, PushError<()>>>,
{
    /// The lane is not registered yet, or is full: registers it (waiting for room in the
    /// shard's shared ring for the registration), then pushes, waiting for room.
    #[inline(never)]
    fn wait(
        &mut self,
        cx: &mut std::task::Context<'_>,
        topic: TopicId,
        mut msg: T,
    ) -> Poll<Result<(), PublishError<T>>> {
        let shard = topic.shard.0;
        if self.publisher.lanes[shard].is_none() {
            let shared = &self.publisher.shared;
            let make = self.make;
            let register = self
                .register
                .get_or_insert_with(|| Box::pin(make(Arc::clone(shared), shard)));
            match register.as_mut().poll(cx) {
                Poll::Pending => {
                    self.msg = Some(msg);
                    return Poll::Pending;
                }
                Poll::Ready(result) => {
                    self.register = None;
                    match result {
                        Ok(producer) => self.publisher.lanes[shard] = Some(producer),
                        Err(PushError::Full(())) => {
                            return Poll::Ready(Err(PublishError::WouldDeadlock(msg)))
                        }
                        Err(PushError::Closed(())) => {
                            return Poll::Ready(Err(PublishError::Closed(msg)))
                        }
                    }
                }
            }
        }
        let publisher = &mut *self.publisher;
        let inbox = &publisher.shared.inboxes[shard];
        let bus = publisher.shared.topics.bus;
        let Some(lane) = publisher.lanes[shard].as_mut() else {
            return Poll::Ready(Err(PublishError::Closed(msg)));
        };
        let backoff = Backoff::new();
        let mut spun = 0;
        loop {
            let env = Envelope {
                topic: topic.index,
                msg,
            };
            match lane.push(env) {
                Ok(()) => {
                    inbox.wake();
                    return Poll::Ready(Ok(()));
                }
                Err(PushError::Full(back)) => msg = back.msg,
                Err(PushError::Closed(back)) => {
                    return Poll::Ready(Err(PublishError::Closed(back.msg)))
                }
            }
            if self.asked & SHARD_ASKED == 0 {
                if current::is_shard_of(bus) {
                    return Poll::Ready(Err(PublishError::WouldDeadlock(msg)));
                }
                self.asked |= SHARD_ASKED;
            }
            // A full lane usually has room again within microseconds (the shard drains a
            // batch of it): spin first, as the blocking publish does, since a pend costs
            // a round trip through the executor on both sides (this thread parked, the
            // shard's wake through it), and meanwhile the shard runs dry and parks too.
            if spun < SPINS_BEFORE_PEND {
                spun += 1;
                backoff.spin();
                continue;
            }
            // Registers the waker and re-checks (`ring::spsc`, `RoomWaiter`).
            if lane.poll_room(cx).is_pending() {
                self.msg = Some(msg);
                return Poll::Pending;
            }
        }
    }
}
