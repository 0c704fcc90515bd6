//! The bus: the application's handle on a running set of shards.

use std::time::{Duration, Instant};

use crate::error::{DurableError, Error, PublishError, TryPublishError};
use crate::handler::{Context, Handler, SubscriptionId, Supervision};
use crate::inbox::{ack_pair, AckError, Control};
use crate::intern::TopicId;
use crate::publisher::{push_control, push_shared, push_shared_durable, Publisher};
use crate::route::ShardId;
use crate::shared::Shared;
use crate::shutdown;
use crate::stats::Stats;
use crate::supervise::{Factory, Subscriber};
use crate::sync::{thread::JoinHandle, Arc, AtomicU64, Ordering};
use crate::topic::{ToTopic, Topic};
#[cfg(doc)]
use crate::Builder;

/// A running set of shards: route, publish, subscribe, shut down.
///
/// `Bus<T>` is `Send + Sync`: share it by reference or `Arc` and publish from any
/// thread. For the fastest path give each producer thread its own [`Publisher`].
pub struct Bus<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    threads: Vec<JoinHandle<()>>,
    /// Process-unique, so that ids from another bus never match this one's.
    id: u64,
    next_serial: AtomicU64,
    drop_timeout: Duration,
    shut_down: bool,
    initial: Vec<SubscriptionId>,
}

/// The least time [`Bus::shutdown_timeout`] gives the shards, after its deadline, to
/// finish the call in progress and exit (it gives the timeout again if that is longer).
/// A shard that has seen the deadline starts no handler, so it needs only this long
/// unless a call does not return.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// What [`Bus::shutdown_timeout`] reports.
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

impl<T: Send + 'static> Bus<T> {
    pub(crate) fn from_parts(
        shared: Arc<Shared<T>>,
        threads: Vec<JoinHandle<()>>,
        drop_timeout: Duration,
        id: u64,
        initial: Vec<SubscriptionId>,
    ) -> Self {
        Self {
            shared,
            threads,
            id,
            // Serials of the builder's subscriptions come first.
            next_serial: AtomicU64::new(initial.len() as u64),
            drop_timeout,
            shut_down: false,
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
    pub fn log_error(&self, shard: ShardId) -> Option<String> {
        self.shared.inboxes.get(shard.0).and_then(|i| i.log.error())
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

    /// Subscribes a closure to a topic. The closure is an actor with supervision
    /// [`Supervision::Resume`]. Returns once the subscription is installed on its
    /// shard: every message published after that reaches it.
    ///
    /// Must not be called from a handler running on the topic's own shard (it would
    /// wait for itself).
    pub fn subscribe<F>(&self, topic: impl ToTopic, handler: F) -> Result<SubscriptionId, Error>
    where
        F: FnMut(&mut Context<'_, T>, &T) + Send + 'static,
    {
        self.install(topic, Box::new(handler), None, Supervision::Resume)
    }

    /// Subscribes a [`Handler`] implementation, with supervision
    /// [`Supervision::Resume`]. Returns once installed, like [`subscribe`](Self::subscribe).
    pub fn subscribe_actor<H: Handler<T>>(
        &self,
        topic: impl ToTopic,
        actor: H,
    ) -> Result<SubscriptionId, Error> {
        self.install(topic, Box::new(actor), None, Supervision::Resume)
    }

    /// Subscribes an actor made by `factory`, supervised by `policy`: after a panic the
    /// actor is kept ([`Resume`](Supervision::Resume)), replaced by a fresh one from
    /// the factory ([`Restart`](Supervision::Restart)) or removed
    /// ([`Stop`](Supervision::Stop)). Returns once installed.
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
        // Relaxed: only uniqueness matters, which the RMW gives.
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
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
            inbox,
            Control::Subscribe {
                topic: topic.index,
                sub,
                ack,
            },
        )
        .map_err(|()| Error::Closed)?;
        done.wait().map(|()| id).map_err(|_| Error::Closed)
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
    /// done: no message published after that reaches it.
    pub fn unsubscribe(&self, id: SubscriptionId) -> Result<(), Error> {
        if id.bus != self.id {
            return Err(Error::UnknownSubscription(id));
        }
        let inbox = self
            .shared
            .inboxes
            .get(id.shard as usize)
            .ok_or(Error::UnknownSubscription(id))?;
        let (ack, done) = ack_pair();
        push_control(inbox, Control::Unsubscribe { id, ack }).map_err(|()| Error::Closed)?;
        done.wait().map_err(|e| match e {
            AckError::NotFound => Error::UnknownSubscription(id),
            AckError::Closed => Error::Closed,
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
    pub fn publish(&self, topic: impl ToTopic, msg: T) -> Result<(), PublishError<T>> {
        push_shared(&self.shared, topic, msg, true).map_err(|e| match e {
            TryPublishError::Closed(m) | TryPublishError::Full(m) => PublishError::Closed(m),
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
    /// Never call it from a handler: the shard would wait for itself.
    pub fn publish_durable(&self, topic: impl ToTopic, msg: T) -> Result<(), DurableError<T>> {
        push_shared_durable(&self.shared, topic, msg)
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

    fn stop(&mut self, timeout: Option<Duration>) -> ShutdownReport {
        self.shut_down = true;
        let start = Instant::now();
        let dropped_before = self.stats().dropped();
        shutdown::begin(&self.shared);
        let deadline = timeout.map(|t| start + t);
        // Whether or not the drain finished, phase 3 counts what is left as undrained.
        let mut drained = shutdown::wait_quiescent(&self.shared, deadline);
        if drained {
            // Every actor's `on_stop`, then what they published, to quiescence again.
            drained = shutdown::stop_actors(&self.shared, deadline)
                && shutdown::wait_quiescent(&self.shared, deadline);
        }
        shutdown::stop(&self.shared, drained);
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
        ShutdownReport {
            undrained: stats.dropped() - dropped_before + queued,
            stats,
            unjoined: running.len(),
            in_call: running.into_iter().map(ShardId).collect(),
        }
    }
}

impl<T: Send + 'static> Drop for Bus<T> {
    /// Shuts down with the builder's `drop_timeout` if `shutdown` was not called.
    fn drop(&mut self) {
        if !self.shut_down {
            self.stop(Some(self.drop_timeout));
        }
    }
}

impl<T: Send + 'static> std::fmt::Debug for Bus<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("shards", &self.shards())
            .finish()
    }
}
