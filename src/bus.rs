//! The bus: the application's handle on a running set of shards.

use std::time::{Duration, Instant};

use crate::error::RequestError;
use crate::error::{DurableError, Error, PublishError, TryPublishError};
use crate::handler::{Handler, SubscriptionId, Supervision};
use crate::inbox::{ack_pair, AckError, Control};
use crate::intern::TopicId;
use crate::publisher::{push_control, push_shared, push_shared_durable, Publisher};
use crate::request::{self, Reply};
use crate::ring::PushError;
use crate::route::ShardId;
use crate::shard::current;
use crate::shared::Shared;
use crate::shutdown;
use crate::stats::Stats;
use crate::supervise::{Factory, Subscriber};
use crate::sync::Backoff;
use crate::sync::{fence, thread, thread::JoinHandle, Arc, AtomicBool, Ordering};
use crate::topic::{ToTopic, Topic};
use crate::wait::publisher_pause;
#[cfg(doc)]
use crate::{Builder, Context};

/// A running set of shards: route, publish, subscribe, shut down.
///
/// `Bus<T>` is `Send + Sync`: share it by reference or `Arc` and publish from any
/// thread. For the fastest path give each producer thread its own [`Publisher`]. A bus
/// is built for `T: Send + 'static` ([`Bus::builder`]); the struct itself carries no
/// bounds, so types that hold a `Bus<T>` need not repeat them.
///
/// # Ending a bus
///
/// - [`shutdown`](Self::shutdown) (or [`shutdown_timeout`](Self::shutdown_timeout))
///   takes the bus by value: it closes intake, drains, runs every `on_stop`, joins the
///   shard threads and returns the final statistics.
/// - [`close`](Self::close) does the same through `&self`, for a bus shared in an
///   `Arc`: it returns once every accepted message is handled and the shard threads have
///   exited; the last handle's drop joins them (at once).
/// - [`shutdown_background`](Self::shutdown_background) closes intake and returns at
///   once; a background thread drains, stops and joins.
/// - [`flush`](Self::flush) shuts nothing down: it waits until every message published
///   before the call has been handled.
///
/// # Drop
///
/// Dropping a bus that was not ended by `shutdown`, `close` or `shutdown_background`
/// shuts it down on the dropping thread as
/// [`shutdown_timeout`](Self::shutdown_timeout)`(drop_timeout)` does: intake closes,
/// the shards drain for up to [`Builder::drop_timeout`] (default 5 s), what is left
/// then is dropped and counted, and the shard threads get up to `drop_timeout` more to
/// run `on_stop` and exit (threads still running after that are detached, not joined).
/// So a drop blocks for at most twice `drop_timeout` (10 s by default); it returns as
/// soon as the shard threads have exited, which after a drain that finishes is as long
/// as the drain and the `on_stop` calls take. After `close` or
/// `shutdown_background` a drop does not wait for the drain: it only joins threads that
/// have exited (`close`), or nothing (`shutdown_background`).
///
/// A drop blocks, rather than returning at once, so that a bus that simply goes out of
/// scope at the end of `main` still handles what it accepted and runs every `on_stop`
/// before the process exits; the bound keeps a handler that never returns from hanging
/// the dropping thread. Where a thread must not block (an async runtime's worker, where
/// the last `Arc<Bus>` may die), call [`shutdown_background`](Self::shutdown_background)
/// instead, or set a short `drop_timeout`.
pub struct Bus<T> {
    shared: Arc<Shared<T>>,
    threads: Vec<JoinHandle<()>>,
    /// Process-unique, so that ids from another bus never match this one's.
    id: u64,
    drop_timeout: Duration,
    shut_down: bool,
    /// Set by the first [`Bus::close`]: the shards have been (or are being) drained and
    /// stopped by that call, and a later stop only joins them.
    closed: AtomicBool,
    initial: Vec<SubscriptionId>,
    /// Finishes a stop begun on one of this bus's own shard threads (see
    /// [`stop`](Self::stop)) on a thread of its own. Made by `from_parts`, where `T: Send`
    /// is known, so that `Drop` (which carries no bounds) can hand the bus's state over.
    finish_elsewhere: FinishElsewhere,
}

/// See `Bus::finish_elsewhere`: takes the deadline and the shard threads' handles.
type FinishElsewhere =
    Box<dyn Fn(Option<Duration>, Vec<JoinHandle<()>>) -> std::io::Result<()> + Send + Sync>;

/// The least time [`Bus::shutdown_timeout`] gives the shards, after its deadline, to
/// finish the call in progress and exit (it gives the timeout again if that is longer).
/// A shard that has seen the deadline starts no handler, so it needs only this long
/// unless a call does not return.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// What [`Bus::shutdown_timeout`] reports.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The final statistics.
    pub stats: Stats,
    /// Accepted messages the deadline left unhandled: dropped (each exactly once) by the
    /// shards that stopped, plus, for each shard in [`in_call`](Self::in_call), the
    /// messages waiting in its shared inbox ring and in the lanes from the other shards
    /// (see [`Bus::shutdown_timeout`]).
    pub undrained: u64,
    /// Shard threads that had not exited by the end of the grace period (a handler
    /// that does not return); they were detached. The length of `in_call`.
    pub unjoined: usize,
    /// The shards whose thread was still inside a call (a handler, `on_stop`, the
    /// dead-letter handler) when the grace period ended, in shard order. That one call
    /// is the only user code that may still run there, besides `on_stop` (see
    /// [`Bus::shutdown_timeout`]).
    pub in_call: Vec<ShardId>,
}

impl<T> Bus<T> {
    pub(crate) fn from_parts(
        shared: Arc<Shared<T>>,
        threads: Vec<JoinHandle<()>>,
        drop_timeout: Duration,
        id: u64,
        initial: Vec<SubscriptionId>,
    ) -> Self
    where
        T: Send + 'static,
    {
        let finish_elsewhere: FinishElsewhere = {
            let shared = Arc::clone(&shared);
            Box::new(move |timeout, threads| {
                let shared = Arc::clone(&shared);
                thread::spawn_named("sb-shutdown".to_string(), move || {
                    let deadline = timeout.map(|t| Instant::now() + t);
                    shutdown::drain_and_stop(&shared, deadline);
                    let exit_by = deadline.map(|d| d + timeout.unwrap_or_default());
                    if shutdown::wait_exited(&shared, exit_by).is_empty() {
                        for t in threads {
                            // As in `stop`: fails only on a bug in shardbus itself.
                            let _ = t.join();
                        }
                    }
                })
                .map(drop)
            })
        };
        Self {
            finish_elsewhere,
            shared,
            threads,
            id,
            drop_timeout,
            shut_down: false,
            closed: AtomicBool::new(false),
            initial,
        }
    }

    /// The ids of the subscriptions made on the [`Builder`], in the order they were made.
    pub fn initial_subscriptions(&self) -> &[SubscriptionId] {
        &self.initial
    }

    /// Whether the bus was built with [`Builder::persist`].
    pub fn is_persistent(&self) -> bool {
        self.shared.persistent
    }

    /// Persistent buses: why `shard`'s log failed, if it has. A failed log (an I/O error,
    /// an fsync error) poisons the shard: it closes its intake (publishes get `Closed`
    /// with their message back), dead-letters what it had drained
    /// ([`DeadLetterReason::NotLogged`](crate::DeadLetterReason::NotLogged)), confirms no
    /// more durable publishes, and never retries the fsync. Rebuild the bus to recover.
    ///
    /// The error is the one that poisoned the log, shared with the dead letters'
    /// reasons; for an I/O failure its [`source`](std::error::Error::source) is the
    /// `io::Error` the operating system (or the [`Storage`](crate::log::Storage)) returned.
    /// `None` for a shard out of range or a log that works.
    pub fn log_error(&self, shard: ShardId) -> Option<std::sync::Arc<crate::LogError>> {
        self.shared.inboxes.get(shard.0).and_then(|i| i.log.error())
    }

    /// The fences this bus was built with: what [`Builder::fences`](crate::Builder::fences)
    /// asked for, after the fallback of [`Fences::Auto`](crate::Fences::Auto) and the
    /// `SHARDBUS_NO_MEMBARRIER` override.
    pub fn fence_mode(&self) -> crate::FenceMode {
        self.shared.fences
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shared.inboxes.len()
    }

    /// The shard a topic is routed to (see the `route` docs: fixed-key ahash, then
    /// multiply-shift onto `0..shards`).
    pub fn shard_of(&self, topic: &str) -> Result<ShardId, Error> {
        let router = &self.shared.topics.router;
        Ok(router.shard_of_key(&router.key_or_error(topic)?))
    }

    /// Resolves a topic once (its shard and its index in the shard's topic table) for
    /// publishing with no hashing and no lookup. The first resolution of a name on a bus
    /// takes the bus's topic-registry lock; keep the handle.
    pub fn topic(&self, name: &str) -> Result<Topic, Error> {
        let topics = &self.shared.topics;
        let key = topics.router.key_or_error(name)?;
        Ok(Topic {
            id: topics.intern(&key),
            bus: topics.bus,
            key,
        })
    }

    /// Subscribes an actor to a topic, with supervision [`Supervision::Resume`]. Returns
    /// once the subscription is installed on its shard: every message published after
    /// that reaches it.
    ///
    /// The actor is any [`Handler`]: a type of yours that owns its state, or a closure
    /// `FnMut(&mut Context<'_, T>, &T)`. A closure passed here needs its parameter types
    /// written out (`|ctx: &mut Context<'_, T>, msg: &T| ...`), as with any method generic
    /// over a trait that closures implement.
    ///
    /// A message whose publish returned before this call (on this thread, or on one this
    /// thread has synchronized with) does not reach it, whichever way it was published:
    /// through [`publish`](Self::publish), which queues it ahead of the request in the
    /// shard's shared ring, or through a [`Publisher`], whose lane the shard drains up to
    /// the request before installing the subscriber. Such a message goes to the topic's
    /// existing subscribers, or to the dead-letter handler if there are none. A message
    /// published concurrently with the call may or may not reach it.
    ///
    /// From a handler on one of this bus's shard threads it would wait for shards that
    /// cannot go on while it waits: it returns [`Error::WouldDeadlock`] and does nothing;
    /// a handler uses [`Context::subscribe`] (which does not wait) instead. Handlers of
    /// another bus may call it.
    pub fn subscribe<H: Handler<T>>(
        &self,
        topic: impl ToTopic,
        handler: H,
    ) -> Result<SubscriptionId, Error> {
        self.install(topic, Box::new(handler), None, Supervision::Resume)
    }

    /// Subscribes an actor made by `factory`, supervised by `policy`: after a panic the
    /// actor is kept ([`Resume`](Supervision::Resume)), replaced by a fresh one from
    /// the factory ([`Restart`](Supervision::Restart)) or removed
    /// ([`Stop`](Supervision::Stop)). Returns once installed. A panic in the actor's
    /// `on_start` is supervised the same way; if the policy ends the subscription there
    /// (`Stop`, or `Restart` whose fresh actor does not start either), this returns
    /// [`Error::NotStarted`].
    /// From a handler of this bus, [`Error::WouldDeadlock`] (see
    /// [`Context::subscribe_supervised`]).
    pub fn subscribe_supervised<H, F>(
        &self,
        topic: impl ToTopic,
        policy: Supervision,
        mut factory: F,
    ) -> Result<SubscriptionId, Error>
    where
        H: Handler<T>,
        F: FnMut() -> H + Send + 'static,
    {
        let actor = Box::new(factory());
        let factory: Factory<T> = Box::new(move || Box::new(factory()));
        self.install(topic, actor, Some(factory), policy)
    }

    fn install(
        &self,
        topic: impl ToTopic,
        actor: Box<dyn Handler<T>>,
        factory: Option<Factory<T>>,
        policy: Supervision,
    ) -> Result<SubscriptionId, Error> {
        let topic = self.resolve_for_control(topic)?;
        if current::is_shard_of(self.id) {
            return Err(Error::WouldDeadlock);
        }
        let serial = self.shared.next_serial();
        let id = SubscriptionId {
            bus: self.id,
            shard: topic.shard.0 as u32,
            serial,
        };
        let sub = Subscriber {
            id,
            actor,
            factory,
            policy,
        };
        let (ack, done) = ack_pair();
        let inbox = &self.shared.inboxes[topic.shard.0];
        push_control(
            self.id,
            inbox,
            Control::Subscribe {
                topic: topic.index,
                sub,
                ack,
            },
        )
        .map_err(control_error)?;
        done.wait().map(|()| id).map_err(|e| match e {
            AckError::NotStarted => Error::NotStarted(id),
            _ => Error::Closed,
        })
    }

    fn resolve_for_control(&self, topic: impl ToTopic) -> Result<TopicId, Error> {
        topic
            .id_in(&self.shared.topics, None)
            .ok_or(Error::InvalidTopic {
                len: topic.name_len(),
                max: crate::MAX_TOPIC_LEN,
            })
    }

    /// Ends a subscription; its actor's `on_stop` runs on its shard. Returns once
    /// done: no message published after that reaches it. Every message whose publish
    /// returned before the call reaches it first, through the bus or a [`Publisher`]
    /// alike (see [`subscribe`](Self::subscribe)).
    ///
    /// From a handler on one of this bus's shard threads it returns
    /// [`Error::WouldDeadlock`] and does nothing (it would wait for the shards); a handler
    /// uses [`Context::unsubscribe`] instead.
    pub fn unsubscribe(&self, id: SubscriptionId) -> Result<(), Error> {
        if id.bus != self.id {
            return Err(Error::UnknownSubscription(id));
        }
        let inbox = self
            .shared
            .inboxes
            .get(id.shard as usize)
            .ok_or(Error::UnknownSubscription(id))?;
        if current::is_shard_of(self.id) {
            return Err(Error::WouldDeadlock);
        }
        let (ack, done) = ack_pair();
        push_control(self.id, inbox, Control::Unsubscribe { id, ack }).map_err(control_error)?;
        done.wait().map_err(|e| match e {
            AckError::NotFound => Error::UnknownSubscription(id),
            // Only a subscribe is answered `NotStarted`.
            AckError::Closed | AckError::NotStarted => Error::Closed,
        })
    }

    /// Publishes a message, waiting while the target shard's inbox is full. Returns
    /// `Closed` with the message once the bus is shutting down, `InvalidTopic` for a
    /// name that is empty or longer than [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN),
    /// `Encode` on a persistent bus whose codec cannot encode the message (checked on
    /// this thread when the codec can fail: [`Codec::CAN_FAIL`](crate::Codec::CAN_FAIL)).
    ///
    /// On a persistent bus, a message whose record would exceed the maximum record size
    /// is accepted and then dead-lettered by its shard
    /// ([`DeadLetterReason::NotLogged`](crate::DeadLetterReason::NotLogged)): only
    /// [`publish_durable`](Self::publish_durable) encodes every message on the publishing
    /// thread and refuses it instead.
    ///
    /// Messages one thread publishes through the bus to one topic are handled in
    /// order. This path is shared by all threads (a CAS per message); a
    /// [`Publisher`] is faster.
    ///
    /// From a handler on one of this bus's shard threads it publishes while there is
    /// room, but does not wait for room: waiting there could deadlock (two shards
    /// publishing into each other's full inboxes), so a full inbox gives
    /// [`PublishError::WouldDeadlock`] with the message back. A handler publishes with
    /// [`Context::publish`], which never waits and queues what does not fit.
    pub fn publish(&self, topic: impl ToTopic, msg: T) -> Result<(), PublishError<T>> {
        push_shared(&self.shared, topic, msg, true).map_err(|e| match e {
            TryPublishError::Closed(m) => PublishError::Closed(m),
            // A blocking push comes back full only instead of waiting on a shard thread.
            TryPublishError::Full(m) => PublishError::WouldDeadlock(m),
            TryPublishError::InvalidTopic(m) => PublishError::InvalidTopic(m),
            TryPublishError::Encode { msg, error } => PublishError::Encode { msg, error },
        })
    }

    /// Persistent buses: publishes like [`publish`](Self::publish), then waits until the
    /// message's record is in its shard's log as durably as the bus's
    /// [`FsyncPolicy`](crate::log::FsyncPolicy) makes it: synced (`Batch`, `Interval`,
    /// `Always`: survives power loss) or handed to the OS (`Never`: survives a process
    /// crash only). After `Ok`, the message is handled in this process, or replayed
    /// after a crash at the next `build()` (at least once). See `docs/persistence.md`.
    ///
    /// Errors give the message back if it was not accepted (`Closed` also when the
    /// shard's log has failed, `NotPersistent` on a memory-only bus, `Encode` if its
    /// codec cannot encode it, `TooLarge` if its record would exceed
    /// [`max_record_size`](crate::Persistence::max_record_size): the message is encoded
    /// once on this thread to know, into a reused buffer); `Unconfirmed` means it was
    /// accepted but the log failed (or a deadline shutdown dropped it) first.
    ///
    /// From a handler on one of this bus's shard threads it returns
    /// [`DurableError::WouldDeadlock`] with the message (the shards confirm records
    /// between handlers, so it would wait for itself); a handler publishes with
    /// [`Context::publish`]: on a persistent bus the record is written before any handler
    /// sees the message.
    pub fn publish_durable(&self, topic: impl ToTopic, msg: T) -> Result<(), DurableError<T>> {
        push_shared_durable(&self.shared, topic, msg)
    }

    /// Publishes, waiting without blocking the thread while the target shard's inbox is
    /// full: the async form of [`publish`](Self::publish), with the same errors. Runs on
    /// any executor (a std [`Waker`](std::task::Waker)); the returned future is `Send`
    /// when `T` is. When the inbox has room it costs what `publish` costs; when it is
    /// full the future waits in the shard's list of waiters and is woken once the shard
    /// has drained from its inbox. Awaited on one of the bus's own shard threads it does
    /// not wait: `WouldDeadlock` with the message.
    ///
    /// # Cancel safety
    ///
    /// The message is pushed within a single poll, and the future completes on that
    /// poll. Dropped before it completes, the future drops its message, which was never
    /// published, and nothing else changes.
    pub async fn publish_async(&self, topic: impl ToTopic, msg: T) -> Result<(), PublishError<T>> {
        crate::publisher::publish_shared_async(&self.shared, topic, msg).await
    }

    /// Persistent buses: the async form of [`publish_durable`](Self::publish_durable),
    /// with the same errors: publishes like [`publish_async`](Self::publish_async), then
    /// waits, without blocking the thread, until the message's record is in its shard's
    /// log as durably as the bus's [`FsyncPolicy`](crate::log::FsyncPolicy) makes it.
    ///
    /// # Cancel safety
    ///
    /// Dropped before its push (while it waits for room), the future drops its message,
    /// which was never published. Dropped after the push (while it waits for the
    /// commit), the message stays published: it is logged and delivered as if the future
    /// had completed; only the confirmation is lost.
    pub async fn publish_durable_async(
        &self,
        topic: impl ToTopic,
        msg: T,
    ) -> Result<(), DurableError<T>> {
        crate::publisher::publish_shared_durable_async(&self.shared, topic, msg).await
    }

    /// Publishes only if the target inbox has room now; never blocks.
    pub fn try_publish(&self, topic: impl ToTopic, msg: T) -> Result<(), TryPublishError<T>> {
        push_shared(&self.shared, topic, msg, false)
    }

    /// A publishing handle with private lanes, for one producer thread.
    pub fn publisher(&self) -> Publisher<T> {
        Publisher::new(self.shared.clone())
    }

    /// A snapshot of every shard's counters. Cheap: one relaxed load per counter, no
    /// message to the shards.
    pub fn stats(&self) -> Stats {
        Stats {
            shards: self
                .shared
                .counters
                .iter()
                .enumerate()
                .map(|(i, c)| c.snapshot(i))
                .collect(),
        }
    }

    /// Shuts down gracefully: stops intake (later publishes get `Closed` with their
    /// message), handles every message already accepted, including what handlers
    /// publish onward while draining, runs every actor's `on_stop`, handles what those
    /// publish (see [`Handler::on_stop`]), joins the shard threads and returns the final
    /// statistics.
    ///
    /// Waits as long as the drain takes; a workload that never quiesces (actors that
    /// publish to each other forever) needs [`shutdown_timeout`](Self::shutdown_timeout).
    ///
    /// Called (or the last handle dropped) in a handler on one of this bus's own shard
    /// threads, it cannot wait for the drain, which needs that very thread: it closes
    /// intake and leaves the drain, the `on_stop` calls and the joins to a thread of its
    /// own, as [`shutdown_background`](Self::shutdown_background) does, and returns the
    /// statistics as of the call (`shutdown_timeout`'s report counts every shard
    /// unjoined).
    pub fn shutdown(mut self) -> Stats {
        self.stop(None).stats
    }

    /// Like [`shutdown`](Self::shutdown), but drains only until `timeout`. Then each
    /// shard stops: it starts no further handler (a memory-only shard checks between
    /// messages, so one in the middle of a batch stops after the call in progress),
    /// drops what is left (each message exactly once, without handling it), runs
    /// `on_stop` (whose publishes are then refused with `Closed`) and exits. What was
    /// dropped is counted in `undrained`, and `undrained + handled + dead letters`
    /// accounts for every accepted message.
    ///
    /// Shard threads get the same time again, but at least [`STOP_GRACE`], to finish the
    /// call in progress and exit. No handler runs after this returns, except on a shard
    /// still inside a call then (a handler that does not return), listed in
    /// [`ShutdownReport::in_call`] and detached: there the call in progress finishes,
    /// then the shard starts no other handler, runs `on_stop`, drops what it holds and
    /// exits. For such a shard `undrained` counts the messages waiting in its shared
    /// inbox ring (a queued subscription or `Publisher` registration counts as one too)
    /// and in the lanes from the other shards, never the one in the call nor one before
    /// it; what waits in `Publisher` lanes into it, and what its own actors queued for
    /// later (to its own topics, or in its overflow queue), is not in the report: it is
    /// dropped when the call returns and counted in its
    /// [`ShardStats::dropped`](crate::ShardStats::dropped) then.
    ///
    /// On a persistent bus the check is per pass rather than per message: a shard
    /// finishes the logged batch it is handling (its records are in the log), and the
    /// batches whose sync is still in flight, before it stops; what it has not logged is
    /// dropped as above.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> ShutdownReport {
        self.stop(Some(timeout))
    }

    /// Closes intake and waits until every accepted message is handled, including what
    /// handlers publish onward while draining; then every actor's `on_stop` runs and the
    /// shard threads exit. Returns the final statistics, as
    /// [`shutdown`](Self::shutdown) does, but through `&self`: for a bus shared in an
    /// `Arc`, which `shutdown` would need to unwrap.
    ///
    /// Later publishes (through the bus or any [`Publisher`]) get `Closed` with their
    /// message back, and subscribes get [`Error::Closed`]. The shard threads are joined
    /// by whichever comes last of the bus's drop or `shutdown` (they have exited by then,
    /// so neither waits). A second `close`, also on another thread at the same time,
    /// waits for the same end and returns the same statistics.
    ///
    /// Waits as long as the drain takes, as `shutdown` does. From a handler on one of
    /// this bus's shard threads it would wait for its own shard: it returns
    /// [`Error::WouldDeadlock`] and does nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// let bus = Arc::new(shardbus::Bus::<u64>::builder().shards(2).build()?);
    /// bus.subscribe("ticks", |_: &mut shardbus::Context<'_, u64>, _: &u64| {})?;
    /// let producer = {
    ///     let bus = bus.clone();
    ///     std::thread::spawn(move || bus.publish("ticks", 1).unwrap())
    /// };
    /// producer.join().unwrap();
    /// let stats = bus.close()?;
    /// assert_eq!(stats.handled(), 1);
    /// assert!(bus.publish("ticks", 2).is_err()); // Closed(2)
    /// # Ok(()) }
    /// ```
    pub fn close(&self) -> Result<Stats, Error> {
        if current::is_shard_of(self.id) {
            return Err(Error::WouldDeadlock);
        }
        // AcqRel: one caller wins and runs the protocol; the others wait for its end
        // below (the shards' exit flags carry the happens-before from there).
        if !self.closed.swap(true, Ordering::AcqRel) {
            shutdown::begin(&self.shared);
            shutdown::drain_and_stop(&self.shared, None);
        }
        // `has_exited` is an Acquire load: the final counters are visible after it.
        shutdown::wait_exited(&self.shared, None);
        Ok(self.stats())
    }

    /// Waits until every message published before this call has been handled: passed
    /// to every subscriber of its topic (or to the dead-letter handler), on every shard.
    /// Shuts nothing down; publishing goes on meanwhile on other threads.
    ///
    /// "Published before" means: published through [`publish`](Self::publish),
    /// [`try_publish`](Self::try_publish), [`publish_durable`](Self::publish_durable) or
    /// any [`Publisher`], by a publish call that returned `Ok` before `flush` was called
    /// (on this thread, or on another thread that this one has synchronized with, as a
    /// joined thread or a received channel message gives). Messages published later,
    /// even while `flush` waits, may or may not be handled when it returns. Messages
    /// that handlers publish onward ([`Context::publish`]) are not waited for, nor
    /// those handlers publish in reply to flushed messages.
    ///
    /// How: a marker goes through each shard's shared ring (behind every message pushed
    /// there before it); on taking it, the shard first handles everything in its
    /// publishers' lanes up to their current ends, which includes every message pushed
    /// before the marker, then answers. `flush` returns when every shard has answered.
    ///
    /// On a bus that is closing (see [`close`](Self::close)), waits for the drain
    /// instead, which handles everything accepted. [`Error::Closed`] if a shard's log
    /// has failed (see [`log_error`](Self::log_error)): its intake is closed. From a
    /// handler on one of this bus's shard threads, [`Error::WouldDeadlock`] (it would wait
    /// for its own shard).
    pub fn flush(&self) -> Result<(), Error> {
        if current::is_shard_of(self.id) {
            return Err(Error::WouldDeadlock);
        }
        let mut answers = Vec::with_capacity(self.shared.inboxes.len());
        let mut refused = false;
        for inbox in self.shared.inboxes.iter() {
            let (ack, done) = ack_pair();
            match push_control(self.id, inbox, Control::Flush { ack }) {
                Ok(()) => answers.push(done),
                Err(_) => refused = true,
            }
        }
        // Each answer is a Release store that the Acquire load in `wait` reads: what the
        // handlers did before the shard answered is visible to the caller.
        for done in answers {
            refused |= done.wait().is_err();
        }
        if !refused {
            return Ok(());
        }
        if self.shared.is_closing() {
            // The drain handles everything accepted; quiescence says it has.
            shutdown::wait_quiescent(&self.shared, None);
            // Acquire: pairs with the SeqCst fences the shards make before reporting
            // idle, so their handlers' effects are visible here.
            fence(Ordering::Acquire);
            return Ok(());
        }
        Err(Error::Closed)
    }

    /// Closes intake and returns at once, without waiting for the drain: a background
    /// thread (named `sb-shutdown`) drains every accepted message as
    /// [`shutdown`](Self::shutdown) does, runs every `on_stop`, joins the shard threads
    /// and ends. The calling thread waits for none of it: for use where blocking is not
    /// allowed (an async runtime's worker), after tokio's `Runtime::shutdown_background`.
    ///
    /// When it returns, later publishes (through [`Publisher`]s made before) get
    /// `Closed` with their message back. Nothing here waits for the drain: if the process
    /// exits first, what was not yet handled is lost, and a workload that never quiesces
    /// keeps the background thread and the shards running. If the system refuses a new
    /// thread, the drain runs on the calling thread as a drop does (see the type's docs:
    /// bounded by twice `drop_timeout`) and a warning is logged.
    pub fn shutdown_background(self)
    where
        T: Send + 'static,
    {
        shutdown::begin(&self.shared);
        let spawned = thread::spawn_named("sb-shutdown".to_string(), move || {
            let bus = self;
            let _ = bus.shutdown();
        });
        if let Err(error) = spawned {
            // The closure, with the bus, was dropped inside the failed spawn: `Drop` has
            // already shut it down on this thread.
            tracing::warn!(%error, "no thread for the background shutdown; drained on drop");
        }
    }

    fn stop(&mut self, timeout: Option<Duration>) -> ShutdownReport {
        self.shut_down = true;
        let _span = tracing::info_span!(
            "shardbus_shutdown",
            shards = self.shared.inboxes.len(),
            timeout = ?timeout
        )
        .entered();
        // Relaxed: `&mut self`, so any `close` has returned, and its effects happened
        // before this borrow began.
        if self.closed.load(Ordering::Relaxed) {
            return self.join_closed();
        }
        if current::is_shard_of(self.id) {
            return self.stop_elsewhere(timeout);
        }
        let start = Instant::now();
        let dropped_before = self.stats().dropped();
        shutdown::begin(&self.shared);
        let deadline = timeout.map(|t| start + t);
        // Whether or not the drain finished, phase 3 counts what is left as undrained.
        let drained = shutdown::drain_and_stop(&self.shared, deadline);
        let grace = deadline.map(|d| d + timeout.unwrap_or_default().max(STOP_GRACE));
        let running = shutdown::wait_exited(&self.shared, grace);
        let threads = std::mem::take(&mut self.threads);
        if running.is_empty() {
            for t in threads {
                // A shard thread catches every handler panic, so `join` fails only on
                // a bug in shardbus itself; the statistics still stand.
                let _ = t.join();
            }
        }
        let stats = self.stats();
        let queued: u64 = running
            .iter()
            .map(|&i| shutdown::queued_on(&self.shared, i))
            .sum();
        if !running.is_empty() {
            tracing::warn!(
                unjoined = running.len(),
                "shard threads still running at the deadline were detached"
            );
        }
        tracing::info!(
            drained,
            handled = stats.handled(),
            undrained = stats.dropped() - dropped_before + queued,
            "bus shut down"
        );
        ShutdownReport {
            undrained: stats.dropped() - dropped_before + queued,
            stats,
            unjoined: running.len(),
            in_call: running.into_iter().map(ShardId).collect(),
        }
    }
}

impl<T> Bus<T> {
    /// [`stop`](Self::stop) on one of this bus's own shard threads (the last handle
    /// dropped, or `shutdown` called, in a handler): waiting here for the drain would wait
    /// for this very thread. So intake closes here and a thread of its own (`sb-shutdown`)
    /// drains, stops and joins, as [`shutdown_background`](Self::shutdown_background)
    /// does; the report holds the statistics as of now, with every shard unjoined.
    fn stop_elsewhere(&mut self, timeout: Option<Duration>) -> ShutdownReport {
        shutdown::begin(&self.shared);
        let threads = std::mem::take(&mut self.threads);
        let unjoined = threads.len();
        if let Err(error) = (self.finish_elsewhere)(timeout, threads) {
            // No thread to wait on: stop the shards now (what is left is dropped and
            // counted); they exit on their own once this handler returns.
            tracing::warn!(%error, "no thread for a shutdown begun on a shard thread");
            shutdown::stop(&self.shared, false);
        }
        ShutdownReport {
            stats: self.stats(),
            undrained: 0,
            unjoined,
            in_call: Vec::new(),
        }
    }

    /// [`stop`](Self::stop) after [`close`](Self::close): the drain and the stop are
    /// done and every shard thread has exited; only the joins are left.
    fn join_closed(&mut self) -> ShutdownReport {
        let unjoined = shutdown::wait_exited(&self.shared, None).len();
        for t in std::mem::take(&mut self.threads) {
            // As in `stop`: `join` fails only on a bug in shardbus itself.
            let _ = t.join();
        }
        ShutdownReport {
            stats: self.stats(),
            undrained: 0,
            unjoined,
            in_call: Vec::new(),
        }
    }
}

/// Subscriber streams.
impl<T: Clone + Send + 'static> Bus<T> {
    /// Subscribes a stream to a topic: its messages (clones, one per message) go to the
    /// returned [`MessageStream`](crate::MessageStream), for a consumer outside the bus:
    /// async ([`recv_async`](crate::MessageStream::recv_async), or as a
    /// [`futures_core::Stream`]) or on a thread ([`recv`](crate::MessageStream::recv),
    /// [`try_recv`](crate::MessageStream::try_recv)). Returns once the subscription is
    /// installed, as [`subscribe`](Self::subscribe) does, with the same ordering
    /// promises: the stream gets the topic's messages in order.
    ///
    /// The stream's actor runs on the topic's shard like any subscriber, and never makes
    /// the shard wait: it puts each message into a channel of `capacity` messages to the
    /// consumer; while that is full, into an overflow of `capacity` more on the shard side
    /// (counted in [`ShardStats::stream_overflow`](crate::ShardStats::stream_overflow) and
    /// its peak), which the consumer takes from, in order, once it has emptied the
    /// channel. A message that finds both full goes to the dead-letter handler
    /// ([`DeadLetterReason::StreamFull`](crate::DeadLetterReason::StreamFull)); the
    /// topic's other subscribers get it as usual.
    ///
    /// At shutdown the stream yields what it holds, then `None`. Dropping the stream
    /// ends the subscription (see [`MessageStream`](crate::MessageStream)).
    ///
    /// `capacity` is a power of two from 2 to 2^30 ([`Error::InvalidCapacity`]
    /// otherwise). From a handler on one of this bus's shard threads,
    /// [`Error::WouldDeadlock`], as [`subscribe`](Self::subscribe).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = shardbus::Bus::<u64>::builder().shards(2).build()?;
    /// let mut ticks = bus.subscribe_stream("ticks", 64)?;
    /// for i in 0..3 {
    ///     bus.publish("ticks", i)?;
    /// }
    /// bus.shutdown();
    /// let got: Vec<u64> = std::iter::from_fn(|| ticks.recv()).collect();
    /// assert_eq!(got, [0, 1, 2]);
    /// # Ok(()) }
    /// ```
    pub fn subscribe_stream(
        &self,
        topic: impl ToTopic,
        capacity: usize,
    ) -> Result<crate::MessageStream<T>, Error> {
        if capacity < 2 || !capacity.is_power_of_two() || capacity > crate::ring::MAX_CAPACITY {
            return Err(Error::InvalidCapacity {
                what: "stream",
                capacity,
                max: crate::ring::MAX_CAPACITY,
            });
        }
        let (actor, receiver) = crate::stream::actor(Arc::clone(&self.shared), capacity);
        let id = self.install(topic, Box::new(actor), None, Supervision::Resume)?;
        Ok(crate::MessageStream::new(
            receiver,
            Arc::clone(&self.shared),
            id.shard as usize,
            id,
        ))
    }
}

/// Request-reply: publish a message that carries a [`Reply`], wait for its answer.
impl<T> Bus<T> {
    /// Publishes the message `make` builds around a fresh [`Reply`] and blocks until a
    /// handler answers through it ([`Reply::send`]), returning the answer.
    ///
    /// Errors say what happened: [`RequestError::TimedOut`] if no answer came within
    /// `timeout`; [`RequestError::NoReply`] as soon as the `Reply` is dropped unanswered
    /// (the handler panicked or returned without answering, the message was
    /// dead-lettered, or it was dropped at a deadline shutdown), without waiting for the
    /// timeout; [`RequestError::Closed`] with the message back if the bus is closed.
    /// From a handler on one of this bus's shard threads it would hold up that shard
    /// while it waits: [`RequestError::WouldDeadlock`] with the message, nothing
    /// published.
    ///
    /// `timeout` bounds the whole request: the publish waits for room as
    /// [`publish`](Self::publish) does, but a target inbox still full at the timeout gives
    /// the message back in [`RequestError::Full`]. A request costs one heap allocation beyond its
    /// message: the one-shot channel (its state byte, room for `R` and for the waiting
    /// thread's or task's handle: 32 bytes for a `u64` answer on a 64-bit target).
    ///
    /// ```
    /// use shardbus::{Bus, Context, Reply, RequestError};
    /// use std::time::Duration;
    ///
    /// enum Pricing {
    ///     Quote { item: &'static str, reply: Reply<u64> },
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::<Pricing>::builder().shards(2).build()?;
    /// bus.subscribe("pricing", |_: &mut Context<'_, Pricing>, msg: &Pricing| match msg {
    ///     Pricing::Quote { item: "apple", reply } => drop(reply.send(3)),
    ///     Pricing::Quote { .. } => {} // unknown item: no answer; the requester gets NoReply
    /// })?;
    /// let ask = |item| bus.request("pricing", |reply| Pricing::Quote { item, reply }, Duration::from_secs(5));
    /// assert_eq!(ask("apple")?, 3);
    /// assert!(matches!(ask("pear"), Err(RequestError::NoReply)));
    /// # Ok(()) }
    /// ```
    pub fn request<R>(
        &self,
        topic: impl ToTopic,
        make: impl FnOnce(Reply<R>) -> T,
        timeout: Duration,
    ) -> Result<R, RequestError<T>> {
        let deadline = Instant::now().checked_add(timeout);
        let (reply, receiver) = Reply::pair();
        let msg = make(reply);
        if current::is_shard_of(self.id) {
            return Err(RequestError::WouldDeadlock(msg));
        }
        self.publish_until(topic, msg, deadline)?;
        request::wait(receiver, deadline).map_err(unanswered)
    }

    /// [`request`](Self::request) as a future: publishes the message `make` builds around
    /// a fresh [`Reply`] when first polled, then completes with the answer, or with the
    /// same errors as `request` (`TimedOut`, `NoReply` as soon as the `Reply` is dropped
    /// unanswered, `Closed` with the message, `WouldDeadlock` if polled on one of this
    /// bus's shard threads). The future is `Send` when `T`, `R`, the topic and `make` are.
    ///
    /// The timeout runs from the first poll. The future needs no particular runtime: the
    /// answer wakes it through the one-shot channel, and the deadline through a timer
    /// thread of the library's own (one per process, `sb-timer`, started by the first
    /// async request that waits; it sleeps until the earliest pending deadline). So a
    /// request times out the same way under tokio, async-std, smol or a plain `block_on`,
    /// as the blocking form does, and a tokio program can still wrap it in
    /// `tokio::time::timeout` for a deadline of its own. While the target's inbox is full
    /// the publish yields to the executor and tries again (it never blocks the polling
    /// thread), and never past the timeout: [`RequestError::Full`] gives the message back.
    /// Allocations: the one-shot channel, as for `request`; the
    /// timer's entry for the deadline goes into an ordered map that keeps its storage, so
    /// requests one after another allocate nothing more, and many pending at once add a
    /// node per eleven or so deadlines as the map grows.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before its first poll publishes nothing (and `make` is never
    /// called). Dropping it later leaves the message published: it is handled as usual,
    /// and its handler's [`Reply::send`] gives the answer back; the deadline is
    /// deregistered.
    ///
    /// ```
    /// use shardbus::{Bus, Context, Reply};
    /// use std::time::Duration;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::<(u32, Reply<u32>)>::builder().shards(1).build()?;
    /// bus.subscribe("inc", |_: &mut Context<'_, (u32, Reply<u32>)>, (n, reply): &(u32, Reply<u32>)| {
    ///     let _ = reply.send(n + 1);
    /// })?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// let answer = rt.block_on(bus.request_async("inc", |reply| (1, reply), Duration::from_secs(5)))?;
    /// assert_eq!(answer, 2);
    /// # Ok(()) }
    /// ```
    pub async fn request_async<R>(
        &self,
        topic: impl ToTopic,
        make: impl FnOnce(Reply<R>) -> T,
        timeout: Duration,
    ) -> Result<R, RequestError<T>> {
        let deadline = Instant::now().checked_add(timeout);
        let (reply, receiver) = Reply::pair();
        let msg = make(reply);
        if current::is_shard_of(self.id) {
            return Err(RequestError::WouldDeadlock(msg));
        }
        self.publish_until_async(topic, msg, deadline).await?;
        request::WaitReply::new(receiver, deadline)
            .await
            .map_err(unanswered)
    }

    /// [`publish_until`](Self::publish_until) for [`request_async`](Self::request_async):
    /// while the inbox is full it yields to the executor (the task is woken again at once)
    /// instead of pausing the thread, so no worker thread blocks; the deadline bounds it.
    async fn publish_until_async(
        &self,
        topic: impl ToTopic,
        mut msg: T,
        deadline: Option<Instant>,
    ) -> Result<(), RequestError<T>> {
        loop {
            match self.try_request_push(&topic, msg, deadline)? {
                None => return Ok(()),
                Some(back) => msg = back,
            }
            crate::sync::YieldNow::new().await;
        }
    }

    /// A request's publish: waits for room as [`publish`](Self::publish) does, but only
    /// until `deadline`; a target still full then gives the message back in
    /// [`RequestError::Full`]. Never called on one of this bus's shard threads (the
    /// requests refuse that first).
    fn publish_until(
        &self,
        topic: impl ToTopic,
        mut msg: T,
        deadline: Option<Instant>,
    ) -> Result<(), RequestError<T>> {
        let backoff = Backoff::new();
        loop {
            match self.try_request_push(&topic, msg, deadline)? {
                None => return Ok(()),
                Some(back) => msg = back,
            }
            publisher_pause(&backoff);
        }
    }

    /// One try of a request's publish: `None` once pushed, `Some(msg)` back to try again
    /// (the inbox was full and `deadline` has not passed), or the request's error.
    fn try_request_push(
        &self,
        topic: &impl ToTopic,
        msg: T,
        deadline: Option<Instant>,
    ) -> Result<Option<T>, RequestError<T>> {
        match push_shared(&self.shared, topic, msg, false) {
            Ok(()) => Ok(None),
            Err(TryPublishError::Full(back)) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    Err(RequestError::Full(back))
                } else {
                    Ok(Some(back))
                }
            }
            Err(TryPublishError::Closed(m)) => Err(RequestError::Closed(m)),
            Err(TryPublishError::InvalidTopic(m)) => Err(RequestError::InvalidTopic(m)),
            Err(TryPublishError::Encode { msg, error }) => Err(RequestError::Encode { msg, error }),
        }
    }
}

/// A request's error from why its wait ended unanswered.
fn unanswered<T>(why: request::Unanswered) -> RequestError<T> {
    match why {
        request::Unanswered::TimedOut => RequestError::TimedOut,
        request::Unanswered::NoReply => RequestError::NoReply,
    }
}

impl<T> Drop for Bus<T> {
    /// Shuts down with the builder's `drop_timeout` if `shutdown` was not called (see
    /// the type's docs, "Drop").
    fn drop(&mut self) {
        if !self.shut_down {
            self.stop(Some(self.drop_timeout));
        }
    }
}

impl<T> std::fmt::Debug for Bus<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("shards", &self.shards())
            .finish()
    }
}

/// A control push's error as a control call reports it.
fn control_error(e: PushError<()>) -> Error {
    match e {
        // Only instead of waiting on one of the bus's own shard threads.
        PushError::Full(()) => Error::WouldDeadlock,
        PushError::Closed(()) => Error::Closed,
    }
}
