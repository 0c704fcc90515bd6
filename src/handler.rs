//! Handler actors and the context they run in.

use crate::error::{Error, PublishError, TryPublishError};
use crate::outbox::Outbox;
use crate::route::{ShardId, TopicKey};
use crate::supervise::Factory;
use crate::topic::ToTopic;

/// Identifies one subscription; returned by the `subscribe` methods and taken by
/// [`Bus::unsubscribe`](crate::Bus::unsubscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId {
    pub(crate) bus: u64,
    pub(crate) shard: u32,
    pub(crate) serial: u64,
}

impl SubscriptionId {
    /// The shard that runs this subscription's actor. A pattern subscription's id
    /// ([`Bus::subscribe_pattern`](crate::Bus::subscribe_pattern)) names no shard (its
    /// actors run on every matching topic's shard): its index is `u32::MAX`.
    pub fn shard(&self) -> ShardId {
        ShardId(self.shard as usize)
    }
}

/// A message handler that owns its state: an actor.
///
/// An actor lives on the shard thread of its topic and is called for every message of
/// that topic, one at a time, in order; so it needs no locks for its own state. It
/// receives the message by reference: the bus owns each message and drops it once,
/// after every subscriber of its topic has seen it. A lone subscriber and a fan-out to
/// many therefore both cost no copy and need no `T: Clone`; a handler that wants to
/// keep or forward a message clones it.
///
/// Closures `FnMut(&mut Context<'_, T>, &T)` are handlers too.
///
/// A panic in any of the methods, or in the actor's `Drop`, is caught on the shard thread
/// and counted ([`ShardStats::panic_sites`](crate::ShardStats::panic_sites)): one in
/// `handle` dead-letters its message and applies the subscription's [`Supervision`]
/// policy; one in `on_start` is supervised the same way (an actor kept by `Resume` then
/// handles messages); one in `on_stop` or `Drop` is counted and the subscription ends as
/// it would have.
pub trait Handler<T>: Send + 'static {
    /// Called on the shard thread before the first message (and after a restart).
    fn on_start(&mut self, ctx: &mut Context<'_, T>) {
        let _ = ctx;
    }

    /// Handles one message.
    fn handle(&mut self, ctx: &mut Context<'_, T>, msg: &T);

    /// Called on the shard thread when the subscription ends: at `unsubscribe`, when
    /// the supervision policy stops the actor, or at shutdown after the last message;
    /// and under [`Supervision::Restart`], on the actor being replaced, before the new
    /// one's `on_start`. Each actor gets it at most once.
    ///
    /// At a graceful shutdown every actor's `on_stop` runs once the drain is complete,
    /// and what it publishes through `ctx` is delivered (the drain runs on until the bus
    /// is quiet again): to every subscriber of the topic, on any shard, also to one whose
    /// own `on_stop` has already run, which may therefore see messages after it. After a
    /// deadline ([`Bus::shutdown_timeout`](crate::Bus::shutdown_timeout), or a drop past
    /// its timeout) nothing more is delivered, so a publish from `on_stop` then returns
    /// `Closed` with the message.
    fn on_stop(&mut self, ctx: &mut Context<'_, T>) {
        let _ = ctx;
    }
}

impl<T, F> Handler<T> for F
where
    F: FnMut(&mut Context<'_, T>, &T) + Send + 'static,
{
    fn handle(&mut self, ctx: &mut Context<'_, T>, msg: &T) {
        self(ctx, msg)
    }
}

/// What happens to an actor after its `handle` panics.
///
/// In every case the panic is caught and counted, and the message goes with the panic
/// text to the dead-letter handler; the shard and the topic's other actors go on.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Supervision {
    /// Keep the actor as it is and go on with the next message. The default of
    /// [`Bus::subscribe`](crate::Bus::subscribe), which has no factory.
    #[default]
    Resume,
    /// Stop the actor (its `on_stop` runs), drop it and make a fresh one from the
    /// subscription's factory (whose `on_start` runs). A panic in the old actor's
    /// `on_stop` is caught and counted; the restart goes on.
    Restart,
    /// End the subscription (`on_stop` runs).
    Stop,
}

/// What a handler sees besides its message: the topic, the shard, and a way to publish.
pub struct Context<'a, T> {
    /// The key, not a `&str`: the name is read (and checked as UTF-8) only if asked for.
    pub(crate) topic: &'a TopicKey,
    pub(crate) subscription: &'a SubscriptionId,
    pub(crate) out: &'a mut Outbox<T>,
    pub(crate) replay: bool,
}

impl<T> std::fmt::Debug for Context<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("topic", &self.topic.as_str())
            .field("shard", &self.out.shard())
            .field("subscription", &self.subscription)
            .field("replay", &self.replay)
            .finish()
    }
}

impl<T> Context<'_, T> {
    /// The topic of the message being handled.
    pub fn topic(&self) -> &str {
        self.topic.as_str()
    }

    /// The shard this actor runs on.
    pub fn shard(&self) -> ShardId {
        self.out.shard()
    }

    /// This actor's subscription.
    pub fn subscription(&self) -> SubscriptionId {
        *self.subscription
    }

    /// Whether the message is a replay from the persistent log after a restart.
    /// Always `false` for a memory-only bus.
    pub fn is_replay(&self) -> bool {
        self.replay
    }

    /// Publishes to another topic (on any shard, this one included). Never blocks:
    /// a shard must not wait on another shard, or two shards publishing to each other
    /// could deadlock. If the target's lane is full the message waits in this shard's
    /// overflow queue (in order) and is forwarded as space frees up.
    ///
    /// The overflow queue is bounded ([`Builder::overflow_limit`](crate::Builder::overflow_limit)):
    /// when it is full too, the message is not accepted and comes back in
    /// [`PublishError::Full`] (counted in
    /// [`ShardStats::overflow_refused`](crate::ShardStats::overflow_refused)); the handler
    /// decides whether to drop it, keep it for later, or publish less. Nothing is lost
    /// silently and the shard never waits.
    ///
    /// Returns `Closed` with the message once the target shard has stopped, `Encode`
    /// with it on a persistent bus whose codec cannot encode it.
    pub fn publish(&mut self, topic: impl ToTopic, msg: T) -> Result<(), PublishError<T>> {
        self.out.publish(topic, msg)
    }

    /// Publishes to another topic only if the target lane has room now (and nothing of
    /// this shard waits for that lane in the overflow queue); never queues in the
    /// overflow. Otherwise returns [`TryPublishError::Full`] with the message.
    pub fn try_publish(&mut self, topic: impl ToTopic, msg: T) -> Result<(), TryPublishError<T>> {
        self.out.try_publish(topic, msg)
    }
}

/// Subscribing and unsubscribing from a handler: the forms of
/// [`Bus::subscribe`](crate::Bus::subscribe) and its kin that do not wait (the bus's
/// return [`Error::WouldDeadlock`] on a shard thread). Each sends its request and returns
/// at once; when the request takes effect:
///
/// - **A topic of this shard** (see [`Bus::shard_of`](crate::Bus::shard_of)): the shard
///   applies the request after the calling handler has returned, at the end of its current
///   round over its inputs and before the next round, or earlier, before it answers a
///   [`Bus::flush`](crate::Bus::flush) or a subscription change from outside the shard (a
///   `flush` that returns finds it in effect). A round takes at most 256 messages
///   from each input (the shared intake ring, each publisher's lane, each other shard's
///   lane; 1,024 on a persistent bus), so up to that many more messages of the round may
///   still go to the subscriptions as they were (an actor that unsubscribes itself may see
///   a few more). A message this handler publishes after the call with
///   [`Context::publish`] to a topic of this shard is handled after the change.
/// - **A topic of another shard**: the request goes into that shard's intake ring, as
///   a [`Bus::subscribe`](crate::Bus::subscribe)'s does (or waits, in order, in this
///   shard while that ring is full), and the other shard applies it when it takes it from
///   there. It is not ordered with what this handler publishes through its `Context`.
///
/// A new actor's `on_start` runs when its subscription is installed: from then on every
/// message of its topic that its shard takes reaches it. An actor's `on_stop` runs when its
/// subscription ends: no message after that reaches it.
///
/// They return `InvalidTopic` for a bad topic name, `Closed` once shutdown has begun
/// (nothing is sent), and [`Context::unsubscribe`] returns `UnknownSubscription` for an
/// id of another bus. Unsubscribing an id that has already ended does nothing.
impl<T: Send + 'static> Context<'_, T> {
    /// Subscribes an actor (a [`Handler`] or a closure, as
    /// [`Bus::subscribe`](crate::Bus::subscribe) takes) to a topic, with supervision
    /// [`Supervision::Resume`], without waiting: returns the new subscription's id at once
    /// (see above for when it takes effect).
    ///
    /// ```
    /// use shardbus::{Bus, Context, Handler};
    /// use std::sync::mpsc;
    ///
    /// /// Counts its messages; says when it is live and, at the end, how many it saw.
    /// struct Worker {
    ///     seen: u32,
    ///     report: mpsc::Sender<&'static str>,
    /// }
    ///
    /// impl Handler<u32> for Worker {
    ///     fn on_start(&mut self, _: &mut Context<'_, u32>) {
    ///         self.report.send("live").unwrap();
    ///     }
    ///     fn handle(&mut self, _: &mut Context<'_, u32>, _: &u32) {
    ///         self.seen += 1;
    ///     }
    ///     fn on_stop(&mut self, _: &mut Context<'_, u32>) {
    ///         assert_eq!(self.seen, 3);
    ///         self.report.send("stopped").unwrap();
    ///     }
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::<u32>::builder().shards(2).build()?;
    /// let (report, reports) = mpsc::channel();
    /// bus.subscribe("spawn", move |ctx: &mut Context<'_, u32>, _: &u32| {
    ///     let worker = Worker { seen: 0, report: report.clone() };
    ///     ctx.subscribe("work", worker).unwrap(); // returns at once
    /// })?;
    /// bus.publish("spawn", 0)?;
    /// assert_eq!(reports.recv()?, "live"); // its `on_start` ran: it is installed
    /// for n in 0..3 {
    ///     bus.publish("work", n)?;
    /// }
    /// bus.shutdown();
    /// assert_eq!(reports.recv()?, "stopped");
    /// # Ok(()) }
    /// ```
    pub fn subscribe<H: Handler<T>>(
        &mut self,
        topic: impl ToTopic,
        handler: H,
    ) -> Result<SubscriptionId, Error> {
        self.out
            .subscribe(topic, Box::new(handler), None, Supervision::Resume)
    }

    /// Subscribes an actor made by `factory`, supervised by `policy` (as
    /// [`Bus::subscribe_supervised`](crate::Bus::subscribe_supervised)), without waiting;
    /// like [`subscribe`](Self::subscribe). The first actor is made here, on this thread.
    pub fn subscribe_supervised<H, F>(
        &mut self,
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
        self.out.subscribe(topic, actor, Some(factory), policy)
    }

    /// Subscribes a pattern (as [`Bus::subscribe_pattern`](crate::Bus::subscribe_pattern))
    /// without waiting: every shard installs it when it reaches the request, in the order
    /// of this handler's other requests to that shard. `InvalidSubject` for a bad
    /// pattern, `Closed` once shutdown has begun.
    pub fn subscribe_pattern<H, F>(
        &mut self,
        pattern: &str,
        policy: Supervision,
        factory: F,
    ) -> Result<SubscriptionId, Error>
    where
        H: Handler<T>,
        F: FnMut() -> H + Send + 'static,
    {
        let parsed = crate::Pattern::parse(pattern).map_err(|reason| Error::InvalidSubject {
            name: pattern.to_owned(),
            reason,
        })?;
        let factory = crate::pattern::shared_factory(factory);
        self.out.subscribe_pattern(parsed, policy, factory)
    }

    /// Ends a subscription (this actor's own, [`subscription`](Self::subscription), or
    /// another; a pattern's, on every shard) without waiting; see above for when it takes effect. Its actor's `on_stop`
    /// runs on its shard then.
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> Result<(), Error> {
        self.out.unsubscribe(id)
    }
}

/// Why a message went to the dead-letter handler.
///
/// Not `PartialEq`: [`NotLogged`](Self::NotLogged) carries a [`LogError`](crate::LogError),
/// which keeps an `io::Error`; test a reason with `matches!`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum DeadLetterReason<'a> {
    /// The topic had no subscriber.
    NoSubscriber,
    /// A subscriber's handler panicked on the message.
    Panicked {
        /// The subscription whose handler panicked.
        subscription: SubscriptionId,
        /// The panic's message (`"<non-string panic payload>"` if it was not a string).
        panic: &'a str,
    },
    /// Persistent bus: the message could not be written to the shard's log, so no handler
    /// saw it (write-ahead). Either the log has failed (an I/O or fsync error poisoned it;
    /// see [`Bus::log_error`](crate::Bus::log_error)) or the encoded record exceeds the
    /// maximum record size (a plain publish; a durable one is refused with
    /// [`DurableError::TooLarge`](crate::DurableError::TooLarge) instead).
    NotLogged {
        /// Why: the error that poisoned the log (the same value
        /// [`Bus::log_error`](crate::Bus::log_error) returns, its
        /// [`source`](std::error::Error::source) chain ending in the I/O error), or
        /// [`LogError::RecordTooLarge`](crate::LogError::RecordTooLarge).
        error: &'a crate::LogError,
    },
    /// Persistent bus: the message's [`Codec`](crate::Codec) refused it on the shard
    /// thread, so it is not in the log and no handler saw it. A publish whose codec can
    /// fail is checked on the publishing thread first and refused there with the message;
    /// this happens only if `encode` is not deterministic (it encoded there and fails
    /// here), or a codec with `CAN_FAIL = false` fails.
    EncodeFailed {
        /// What the codec said.
        error: &'a crate::EncodeError,
    },
    /// Persistent bus: the message's [`Codec::encode`](crate::Codec::encode) panicked on
    /// the shard thread, writing the log. The panic was caught and counted
    /// ([`PanicSites::encode`](crate::PanicSites::encode)); the message is not in the
    /// log and no handler saw it. The shard and its other messages go on.
    EncodePanicked {
        /// The panic's message (`"<non-string panic payload>"` if it was not a string).
        panic: &'a str,
    },
    /// A subscriber stream ([`Bus::subscribe_stream`](crate::Bus::subscribe_stream)) was
    /// full: its channel to the consumer and its overflow on the shard both held as many
    /// messages as its capacity. That stream did not get this message (the topic's other
    /// subscribers did).
    StreamFull {
        /// The stream's subscription.
        subscription: SubscriptionId,
    },
    /// A subscriber stream's consumer was gone (its `MessageStream` dropped): the
    /// stream's actor dead-letters what reaches it until its unsubscription takes effect.
    StreamClosed {
        /// The stream's subscription.
        subscription: SubscriptionId,
    },
}

/// A message that could not be handled, given to the dead-letter handler.
#[derive(Debug)]
#[non_exhaustive]
pub struct DeadLetter<'a, T> {
    /// The message's topic.
    pub topic: &'a str,
    /// The shard it was routed to.
    pub shard: ShardId,
    /// The message.
    pub message: &'a T,
    /// Why it is here.
    pub reason: DeadLetterReason<'a>,
    /// Whether the message is a replay from the persistent log (see
    /// [`Context::is_replay`]). A replayed record whose topic has no subscriber among the
    /// builder's subscriptions arrives here with `replay == true` and reason
    /// [`NoSubscriber`](DeadLetterReason::NoSubscriber).
    pub replay: bool,
}

pub(crate) type DeadLetterFn<T> = Box<dyn Fn(DeadLetter<'_, T>) + Send + Sync>;
