//! Subscriber streams: a subscription whose messages go to a consumer outside the bus
//! ([`Bus::subscribe_stream`](crate::Bus::subscribe_stream)).
//!
//! The shard side is an actor ([`StreamActor`], a [`Handler`] installed like any other,
//! so per-topic order and supervision hold) that clones each message into a [`Sender`].
//! The consumer holds the [`Receiver`] inside a [`MessageStream`].
//!
//! # The two rings
//!
//! A sender owns the producing ends of two SPSC rings of the crate (`ring::spsc`), each of
//! the stream's capacity: the *channel* and the *overflow*. The shard never waits on a
//! slow consumer:
//!
//! 1. While not overflowing, the actor pushes into the channel; when the channel is full
//!    it starts overflowing and pushes into the overflow.
//! 2. While overflowing, every message goes into the overflow (so none overtakes one
//!    waiting there), until the actor sees the overflow drained (a fresh Acquire load of
//!    its `head`): then it goes back to the channel.
//! 3. When the overflow is full too, the message goes to the dead-letter handler
//!    ([`DeadLetterReason::StreamFull`]).
//!
//! So every message in the channel is older than every message in the overflow. The
//! consumer pops the channel first; when it finds it empty but the overflow not, it looks
//! at the channel once more before it pops the overflow: having seen (Acquire) the
//! overflow's `tail`, it sees every channel push made before the overflow's front was
//! pushed. Because the consumer takes from the overflow itself, nothing waits there for
//! the shard to move it: a topic that goes quiet strands nothing.
//!
//! # Wake-ups
//!
//! The actor wakes the consumer's waker (a `WakerSlot`, `crate::sync`: the `atomic-waker` crate's) after each push
//! and when the sender is dropped. The consumer that finds nothing registers its waker,
//! then checks both rings again before it pends or parks: the register (an acquire
//! read-modify-write of the waker slot's state) and the wake (the same kind, after the
//! push's Release store of `tail`) are ordered in the slot's state, so either the wake
//! sees the registered waker or the re-check sees the push. The loom model
//! `loom-tests/tests/stream.rs` checks this handshake.
//!
//! # The end
//!
//! The sender is dropped when the actor stops: at the bus's shutdown (after the last
//! message), at an unsubscribe, or when the actor sees that the consumer is gone (a push
//! refused with `Closed`: the consumer's drop closed the rings); it then dead-letters
//! the message ([`DeadLetterReason::StreamClosed`]) and unsubscribes itself. A consumer
//! whose rings are both empty and whose producers are both gone has seen everything:
//! `None`.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use futures_core::Stream;

use crate::handler::{Context, DeadLetter, DeadLetterReason, Handler, SubscriptionId};
use crate::inbox::{AckSender, Control, Item};
use crate::ring::{spsc, PushError};
use crate::shared::Shared;
use crate::sync::{thread, Arc, WakerSlot};
#[cfg(doc)]
use crate::Bus;

/// What the two ends share besides the rings: the consumer's waker.
pub struct Signal {
    /// Registered by the consumer (its task's waker, or one that unparks its thread);
    /// woken by the producer after each push and at its drop.
    waker: WakerSlot,
}

/// Makes a stream's two ends: a channel and an overflow of `capacity` slots each (a
/// power of two, at least 2), with SeqCst fences on both sides of the rings' close (as
/// [`spsc::channel`] makes them; the stream's rings are closed once, by a dropped end).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (main_tx, main_rx) = spsc::channel_in_mode(capacity, 0, false);
    let (over_tx, over_rx) = spsc::channel_in_mode(capacity, 0, false);
    let signal = Arc::new(Signal {
        waker: WakerSlot::new(),
    });
    let sender = Sender {
        rings: Some((main_tx, over_tx)),
        overflowing: false,
        signal: signal.clone(),
    };
    let receiver = Receiver {
        main: main_rx,
        overflow: over_rx,
        signal,
    };
    (sender, receiver)
}

/// Where [`Sender::send`] put a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Into the channel.
    Channel,
    /// Into the overflow.
    Overflow,
}

/// Why [`Sender::send`] did not take a message; the message is given back.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError<T> {
    /// The channel and the overflow are full.
    Full(T),
    /// The consumer is gone (or the sender was closed).
    Closed(T),
}

/// The producing end (the shard's).
pub struct Sender<T> {
    /// The channel's and the overflow's producers; `None` once closed.
    rings: Option<(spsc::Producer<T>, spsc::Producer<T>)>,
    /// Whether messages go to the overflow (see the module docs). The producer's own.
    overflowing: bool,
    signal: Arc<Signal>,
}

impl<T> Sender<T> {
    /// Sends one message; never blocks. `before_overflow` runs just before a push into
    /// the overflow (for the statistics: the push may then fail and say so).
    pub fn send(&mut self, msg: T, before_overflow: impl FnOnce()) -> Result<Sent, SendError<T>> {
        let Some((main, over)) = &mut self.rings else {
            return Err(SendError::Closed(msg));
        };
        if self.overflowing && over.is_drained() {
            self.overflowing = false;
        }
        let msg = if self.overflowing {
            msg
        } else {
            match main.push(msg) {
                Ok(()) => {
                    self.signal.waker.wake();
                    return Ok(Sent::Channel);
                }
                Err(PushError::Closed(msg)) => return Err(SendError::Closed(msg)),
                Err(PushError::Full(msg)) => {
                    self.overflowing = true;
                    msg
                }
            }
        };
        before_overflow();
        match over.push(msg) {
            Ok(()) => {
                self.signal.waker.wake();
                Ok(Sent::Overflow)
            }
            Err(PushError::Full(msg)) => Err(SendError::Full(msg)),
            Err(PushError::Closed(msg)) => Err(SendError::Closed(msg)),
        }
    }

    /// Drops the producers (the consumer then sees the end after what is queued) and
    /// wakes the consumer. Idempotent.
    pub fn close(&mut self) {
        if let Some(rings) = self.rings.take() {
            // The producers' drops store `producer_gone` (Release) before the wake.
            drop(rings);
            self.signal.waker.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.close();
    }
}

/// What [`Receiver::try_pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped<T> {
    /// A message, and whether it came from the overflow.
    Value(T, bool),
    /// Nothing now; more may come.
    Empty,
    /// Nothing, ever again: the sender is gone and both rings are drained.
    Finished,
}

/// The consuming end.
pub struct Receiver<T> {
    main: spsc::Consumer<T>,
    overflow: spsc::Consumer<T>,
    signal: Arc<Signal>,
}

impl<T> Receiver<T> {
    /// Takes the next message, in order; never blocks.
    pub fn try_pop(&mut self) -> Popped<T> {
        if let Some(v) = pop_one(&mut self.main) {
            return Popped::Value(v, false);
        }
        // Acquire (in `ready`): every channel push made before the overflow's front was
        // pushed is visible to the channel's re-check below (see the module docs).
        if self.overflow.ready() > 0 {
            if let Some(v) = pop_one(&mut self.main) {
                return Popped::Value(v, false);
            }
            if let Some(v) = pop_one(&mut self.overflow) {
                return Popped::Value(v, true);
            }
        }
        // Acquire (in `is_finished`): a producer gone after its last push; each check
        // re-reads `tail` after that, so a `true` is final.
        if self.main.is_finished() && self.overflow.is_finished() {
            return Popped::Finished;
        }
        Popped::Empty
    }

    /// Takes the next message, or registers `waker` and checks once more: the consumer's
    /// side of the wake-up handshake (module docs). `Ready(None)` at the end.
    pub fn poll_pop(&mut self, waker: &Waker) -> Poll<Option<(T, bool)>> {
        match self.try_pop() {
            Popped::Value(v, from_overflow) => return Poll::Ready(Some((v, from_overflow))),
            Popped::Finished => return Poll::Ready(None),
            Popped::Empty => {}
        }
        self.signal.waker.register(waker);
        // The re-check: a push that came before the register has its wake go to an older
        // waker (or none), so look again now that this one is in the slot.
        match self.try_pop() {
            Popped::Value(v, from_overflow) => Poll::Ready(Some((v, from_overflow))),
            Popped::Finished => Poll::Ready(None),
            Popped::Empty => Poll::Pending,
        }
    }

    /// Closes both rings (later pushes fail with `Closed`) and returns how many messages
    /// were left in the overflow (they are dropped with the rings).
    pub fn close(&mut self) -> u64 {
        self.main.close();
        self.overflow.close();
        self.overflow.ready()
    }
}

fn pop_one<T>(ring: &mut spsc::Consumer<T>) -> Option<T> {
    let mut out = None;
    ring.pop_batch(1, |v| out = Some(v));
    out
}

/// The actor a stream subscription installs on its topic's shard.
pub(crate) struct StreamActor<T> {
    sender: Sender<T>,
    shared: Arc<Shared<T>>,
}

impl<T> StreamActor<T> {
    fn dead_letter(&self, ctx: &Context<'_, T>, msg: &T, reason: DeadLetterReason<'_>) {
        let counters = &self.shared.counters[ctx.shard().0];
        // Relaxed: a statistic (see `stats`); the shard thread is its only writer.
        let dead = &counters.stream_dead_letters;
        dead.store(dead.load(STAT) + 1, STAT);
        if let Some(f) = &self.shared.dead_letter {
            let letter = DeadLetter {
                topic: ctx.topic(),
                shard: ctx.shard(),
                message: msg,
                reason,
                replay: ctx.is_replay(),
            };
            // As the shard's own dead letters: a panicking dead-letter handler must not
            // take the actor down; the panic hook has reported it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(letter)));
        }
    }
}

/// Statistics are `Relaxed` (see `stats`).
const STAT: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

impl<T: Clone + Send + 'static> Handler<T> for StreamActor<T> {
    fn handle(&mut self, ctx: &mut Context<'_, T>, msg: &T) {
        let counters = &self.shared.counters[ctx.shard().0];
        // The shard's overflow depth with this message counted in, if it was (it must be
        // taken out again if its push fails). Counted before the push, so that a
        // consumer's subtraction never comes first.
        let counted = std::cell::Cell::new(None);
        let before_overflow = || {
            counted.set(Some(counters.stream_overflow.fetch_add(1, STAT) + 1));
        };
        let subscription = ctx.subscription();
        match self.sender.send(msg.clone(), before_overflow) {
            Ok(Sent::Channel) => {}
            Ok(Sent::Overflow) => {
                if let Some(depth) = counted.get() {
                    counters.stream_overflow_peak.fetch_max(depth, STAT);
                }
            }
            Err(SendError::Full(msg)) => {
                if counted.get().is_some() {
                    counters.stream_overflow.fetch_sub(1, STAT);
                }
                self.dead_letter(ctx, &msg, DeadLetterReason::StreamFull { subscription });
            }
            Err(SendError::Closed(msg)) => {
                if counted.get().is_some() {
                    counters.stream_overflow.fetch_sub(1, STAT);
                }
                let first = self.sender.rings.is_some();
                self.sender.close();
                self.dead_letter(ctx, &msg, DeadLetterReason::StreamClosed { subscription });
                if first {
                    // Ends at once only on a closing bus, which stops the actor anyway.
                    let _ = ctx.unsubscribe(subscription);
                }
            }
        }
    }

    fn on_stop(&mut self, _ctx: &mut Context<'_, T>) {
        self.sender.close();
    }
}

/// A subscription's messages, for a consumer outside the bus: made by
/// [`Bus::subscribe_stream`].
///
/// Take messages in order with [`recv_async`](Self::recv_async) or as a
/// [`Stream`](futures_core::Stream) in async code, with [`recv`](Self::recv) (blocking) on
/// a thread, or with [`try_recv`](Self::try_recv) (never waits) anywhere. Each ends with
/// `None` once the bus has shut down (or the subscription ended) and every message that
/// reached the stream has been taken.
///
/// Dropping it ends the subscription, without waiting: the unsubscription goes into the
/// shard's intake behind the messages already published, as
/// [`Bus::unsubscribe`]'s does, so a message published after the drop goes to the topic's
/// other subscribers (or to the dead-letter handler as
/// [`NoSubscriber`](DeadLetterReason::NoSubscriber)). A message that reaches the stream's
/// actor after the drop (published before it) goes to the dead-letter handler as
/// [`StreamClosed`](DeadLetterReason::StreamClosed). Messages already in the stream when
/// it is dropped are dropped with it. (Should the shard's intake be full at the drop, the
/// actor unsubscribes itself at the first message it finds the consumer gone.)
pub struct MessageStream<T> {
    receiver: Receiver<T>,
    shared: Arc<Shared<T>>,
    shard: usize,
    id: SubscriptionId,
    /// The waker that unparks the thread in [`recv`](Self::recv), made at its first wait.
    thread_waker: Option<(std::thread::ThreadId, Waker)>,
}

impl<T> MessageStream<T> {
    pub(crate) fn new(
        receiver: Receiver<T>,
        shared: Arc<Shared<T>>,
        shard: usize,
        id: SubscriptionId,
    ) -> Self {
        Self {
            receiver,
            shared,
            shard,
            id,
            thread_waker: None,
        }
    }

    /// The stream's subscription (its actor's; [`Bus::unsubscribe`] takes it, and ends
    /// the stream: it yields what it holds, then `None`).
    pub fn subscription(&self) -> SubscriptionId {
        self.id
    }

    fn took(&self, from_overflow: bool) {
        if from_overflow {
            self.shared.counters[self.shard]
                .stream_overflow
                .fetch_sub(1, STAT);
        }
    }

    /// The next message if one is there now; never waits. `None` when there is none yet
    /// and when the stream has ended; [`recv`](Self::recv) tells the two apart.
    pub fn try_recv(&mut self) -> Option<T> {
        match self.receiver.try_pop() {
            Popped::Value(v, from_overflow) => {
                self.took(from_overflow);
                Some(v)
            }
            Popped::Empty | Popped::Finished => None,
        }
    }

    /// The next message, waiting on this thread (parked) until one comes. `None` once the
    /// stream has ended (the bus shut down, or the subscription ended) and is empty.
    ///
    /// Do not call it from a handler of the same bus: the shard thread would wait for
    /// messages that only it can deliver. Use [`try_recv`](Self::try_recv) there.
    pub fn recv(&mut self) -> Option<T> {
        let waker = match &self.thread_waker {
            Some((id, waker)) if *id == std::thread::current().id() => waker.clone(),
            _ => {
                let waker = Waker::from(std::sync::Arc::new(Unpark(thread::current())));
                self.thread_waker = Some((std::thread::current().id(), waker.clone()));
                waker
            }
        };
        loop {
            match self.receiver.poll_pop(&waker) {
                Poll::Ready(Some((v, from_overflow))) => {
                    self.took(from_overflow);
                    return Some(v);
                }
                Poll::Ready(None) => return None,
                // Woken by the actor's push or its end; a spurious return re-checks.
                Poll::Pending => thread::park(),
            }
        }
    }

    /// The next message, awaited: `None` once the stream has ended and is empty. The
    /// async form of [`recv`](Self::recv), with no `StreamExt` needed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is taken from the stream only in the poll that returns it,
    /// so dropping the future before it completes loses nothing.
    pub fn recv_async(&mut self) -> RecvFuture<'_, T> {
        RecvFuture { stream: self }
    }

    fn poll_recv(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        match self.receiver.poll_pop(cx.waker()) {
            Poll::Ready(Some((v, from_overflow))) => {
                self.took(from_overflow);
                Poll::Ready(Some(v))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for MessageStream<T> {
    fn drop(&mut self) {
        let left = self.receiver.close();
        self.shared.counters[self.shard]
            .stream_overflow
            .fetch_sub(left, STAT);
        // Unsubscribe, without waiting for it (a drop must not block, nor wait on a shard
        // from one of its own threads): the request goes into the shard's intake ring
        // behind every message already there. If the ring is full or closed, the actor
        // still ends itself at the next message it finds the rings closed.
        let inbox = &self.shared.inboxes[self.shard];
        let unsubscribe = Control::Unsubscribe {
            id: self.id,
            ack: AckSender::none(),
        };
        if inbox.ring.push(Item::Control(unsubscribe)).is_ok() {
            inbox.wake();
        }
    }
}

impl<T> std::fmt::Debug for MessageStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream")
            .field("subscription", &self.id)
            .finish_non_exhaustive()
    }
}

impl<T> Stream for MessageStream<T> {
    type Item = T;

    /// Cancel safe, as [`MessageStream::recv_async`].
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        self.get_mut().poll_recv(cx)
    }
}

/// The future of [`MessageStream::recv_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct RecvFuture<'a, T> {
    stream: &'a mut MessageStream<T>,
}

impl<T> std::future::Future for RecvFuture<'_, T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        self.get_mut().stream.poll_recv(cx)
    }
}

/// Wakes a thread parked in [`MessageStream::recv`].
struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Makes a stream subscription's two halves: the actor for the shard and the consumer's
/// end (to wrap in a [`MessageStream`] once the subscription id is known).
pub(crate) fn actor<T>(shared: Arc<Shared<T>>, capacity: usize) -> (StreamActor<T>, Receiver<T>) {
    let (sender, receiver) = channel(capacity);
    (StreamActor { sender, shared }, receiver)
}
