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

mod ending;
mod patterns;
pub(crate) use patterns::pre_patterns;
mod keyed;
mod request_reply;
mod streams;

use ending::FinishElsewhere;
pub use ending::{ShutdownReport, STOP_GRACE};

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
        // A wildcard token, an empty token or whitespace: `Error::InvalidSubject`.
        let id = topics
            .resolve(&key)
            .ok_or_else(|| crate::subject::name_error(name))?;
        Ok(Topic {
            id,
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
            .ok_or_else(|| crate::subject::name_error(topic.name()))
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
        if crate::pattern::is_pattern(id) {
            return self.unsubscribe_pattern(id);
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
    /// when `T` is. When the inbox has room it pushes on the first poll, as `publish`
    /// does; when it is full the future waits in the shard's list of waiters and is woken once the shard
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
    /// message to the shards. A shard publishes its counters after each pass over its
    /// inputs that did work, and before it answers a [`flush`](Self::flush): read after
    /// `flush` returns, they count every message the flush waited for.
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
