//! Handler actors and the context they run in.

use crate::error::{PublishError, TryPublishError};
use crate::outbox::Outbox;
use crate::route::{ShardId, TopicKey};
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
    /// The shard that runs this subscription's actor.
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
pub trait Handler<T>: Send + 'static {
    /// Called on the shard thread before the first message (and after a restart).
    fn on_start(&mut self, ctx: &mut Context<'_, T>) {
        let _ = ctx;
    }

    /// Handles one message.
    fn handle(&mut self, ctx: &mut Context<'_, T>, msg: &T);

    /// Called on the shard thread when the subscription ends: at `unsubscribe`, when
    /// the supervision policy stops the actor, or at shutdown after the last message.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Supervision {
    /// Keep the actor as it is and go on with the next message. The default of
    /// [`Bus::subscribe`](crate::Bus::subscribe) and
    /// [`Bus::subscribe_actor`](crate::Bus::subscribe_actor), which have no factory.
    #[default]
    Resume,
    /// Drop the actor and make a fresh one from the subscription's factory
    /// (`on_start` runs again).
    Restart,
    /// End the subscription (`on_stop` runs).
    Stop,
}

/// What a handler sees besides its message: the topic, the shard, and a way to publish.
pub struct Context<'a, T> {
    /// The key, not a `&str`: the name is read (and checked as UTF-8) only if asked for.
    pub(crate) topic: &'a TopicKey,
    pub(crate) subscription: SubscriptionId,
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
        self.subscription
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

/// Why a message went to the dead-letter handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        /// Why.
        error: &'a str,
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
