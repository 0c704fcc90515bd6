//! The async publishes: `publish_async` and `publish_durable_async` of [`Publisher`] and
//! of `Bus`. Each tries the push first, exactly as the blocking form does; only a full
//! lane or ring (or a durable wait) goes to the waiting path, which registers a waker and
//! re-checks instead of pausing the thread:
//! - a publisher's lane: its waker slot and flag (`ring::spsc`, `RoomWaiter`), woken by
//!   the shard after its next pop batch from the lane;
//! - a shard's shared ring: its waiter list (`ring::mpsc::Room`), woken after a pop batch;
//! - a durable watermark: the shard's waiter list (`inbox::DurableWait`), woken after the
//!   watermark stores of a commit, and when the log stops confirming.
//!
//! Every message is pushed inside one `poll`: a future holds its message until the push
//! succeeds and returns on that same poll, so a future dropped before completing drops
//! its message (never pushed), and one that completed had pushed it.

use std::future::poll_fn;

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
    /// When the lane has room it costs what `publish` costs: the push happens on the
    /// first poll. When the lane is full, the future registers its waker with the lane
    /// and returns `Pending`; the shard wakes it once it has drained from the lane.
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
    pub async fn publish_async(
        &mut self,
        topic: impl ToTopic,
        msg: T,
    ) -> Result<(), PublishError<T>> {
        let Some(topic) = topic.id_in(&self.shared.topics, Some(&mut self.cache)) else {
            return Err(PublishError::InvalidTopic(msg));
        };
        self.push_async(topic, msg).await
    }

    /// [`publish_async`](Self::publish_async) with the topic resolved: the gate's check,
    /// then the push.
    async fn push_async(&mut self, topic: TopicId, msg: T) -> Result<(), PublishError<T>> {
        let msg = if self.shared.gate_is_clear() {
            msg
        } else {
            self.shared.admit_slow(msg)?
        };
        self.push_lane_async(topic, msg).await
    }

    /// Pushes into this publisher's lane to `topic`'s shard, waiting for room.
    async fn push_lane_async(&mut self, topic: TopicId, msg: T) -> Result<(), PublishError<T>> {
        let shard = topic.shard.0;
        let env = Envelope {
            topic: topic.index,
            msg,
        };
        // The common case, as in `push_waiting`: the lane exists and has room.
        if let Some(lane) = self.lanes[shard].as_mut() {
            match lane.push(env) {
                Ok(()) => {
                    self.shared.inboxes[shard].wake();
                    return Ok(());
                }
                Err(PushError::Full(back)) => return self.push_async_slow(shard, back).await,
                Err(PushError::Closed(back)) => return Err(PublishError::Closed(back.msg)),
            }
        }
        self.push_async_slow(shard, env).await
    }

    /// The lane is not registered yet, or is full: registers it (waiting for room in the
    /// shard's shared ring for the registration), then pushes, waiting for room.
    async fn push_async_slow(
        &mut self,
        shard: usize,
        mut env: Envelope<T>,
    ) -> Result<(), PublishError<T>> {
        let bus = self.shared.topics.bus;
        if self.lanes[shard].is_none() {
            let (producer, consumer) =
                spsc::channel_in_mode(self.shared.lane_capacity, 0, self.shared.asym());
            let inbox = &self.shared.inboxes[shard];
            match push_ring_async(inbox, Item::Control(Control::AddLane(consumer)), bus).await {
                Ok(_) => self.lanes[shard] = Some(producer),
                Err(PushError::Full(_)) => return Err(PublishError::WouldDeadlock(env.msg)),
                Err(PushError::Closed(_)) => return Err(PublishError::Closed(env.msg)),
            }
        }
        let inbox = &self.shared.inboxes[shard];
        let Some(lane) = self.lanes[shard].as_mut() else {
            return Err(PublishError::Closed(env.msg));
        };
        let mut checked = false;
        loop {
            match lane.push(env) {
                Ok(()) => {
                    inbox.wake();
                    return Ok(());
                }
                Err(PushError::Full(back)) => env = back,
                Err(PushError::Closed(back)) => return Err(PublishError::Closed(back.msg)),
            }
            if !checked {
                if current::is_shard_of(bus) {
                    return Err(PublishError::WouldDeadlock(env.msg));
                }
                checked = true;
            }
            // Registers the waker and re-checks (`ring::spsc`, `RoomWaiter`).
            poll_fn(|cx| lane.poll_room(cx)).await;
        }
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
        self.push_lane_async(topic, msg)
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
