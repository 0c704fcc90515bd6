//! Request-reply: the one-shot [`Reply`] handle a message carries, and the requester's
//! wait for its answer (blocking, or as a future with a deadline).
//!
//! The handle is the sending half of a one-shot channel (the `oneshot` crate: one heap
//! allocation per channel, a lock-free send, a receiver that parks a thread or registers a
//! task's waker, with no executor of its own). Dropping the sending half unanswered wakes
//! the receiver at once, which is how a requester learns of a handler that panicked, a
//! dead-lettered message or one dropped at shutdown without waiting for its timeout.
//!
//! An async wait needs something to wake it at its deadline, and the library runs on no
//! executor, so it has a timer of its own: one thread per process (`sb-timer`), started by
//! the first async request that has to wait, that sleeps on a condition variable until the
//! earliest pending deadline and wakes the futures whose deadlines have passed.
//!
//! The primitives here are std's (`crate::sync::plain`) also under loom: the channel
//! itself is a third-party one that loom cannot see, and the timer thread only ever takes
//! its own lock and calls wakers; neither takes part in the shards' protocols that the
//! models check.

use std::collections::BTreeMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::codec::EncodeError;
use crate::error::{debug_encode, PublishError};
use crate::sync::plain::{spawn_named, Condvar, Mutex, MutexGuard, PoisonError};

/// The handle a request's message carries, to send its one answer back.
///
/// [`Bus::request`](crate::Bus::request) and [`Bus::request_async`](crate::Bus::request_async)
/// make one and pass it to the closure that builds the message; the message type holds it
/// (typically in a variant of the application's message enum). A handler answers with
/// [`send`](Self::send). Handlers see messages by reference, so `send` takes `&self`; the
/// first `send` (or [`take`](Self::take)) wins and later ones get their value back.
///
/// A `Reply` dropped unanswered (with its message: the handler panicked, the message was
/// dead-lettered or dropped at shutdown, or no handler answered) wakes the requester at
/// once with [`RequestError::NoReply`](crate::RequestError::NoReply).
///
/// ```
/// use shardbus::{Bus, Context, Reply};
/// use std::time::Duration;
///
/// enum Msg {
///     Double(u64, Reply<u64>),
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::<Msg>::builder().shards(1).build()?;
/// bus.subscribe("math", |_: &mut Context<'_, Msg>, msg: &Msg| match msg {
///     Msg::Double(n, reply) => {
///         let _ = reply.send(n * 2); // Err(value) if the requester is gone
///     }
/// })?;
/// let answer = bus.request("math", |reply| Msg::Double(21, reply), Duration::from_secs(5))?;
/// assert_eq!(answer, 42);
/// # Ok(()) }
/// ```
///
/// `Reply<R>` is `Send` and `Sync` when `R: Send`. It is not `Clone`: a message type that
/// carries one is not `Clone` either.
pub struct Reply<R> {
    /// The channel's sending half until the answer is sent or the handle taken. Written
    /// by whichever thread calls `send`/`take` (a handler, or the thread it was moved to);
    /// the lock is uncontended but for handles shared between threads.
    sender: Mutex<Option<oneshot::Sender<R>>>,
}

impl<R> Reply<R> {
    /// A handle and the receiving half of its channel: one heap allocation.
    pub(crate) fn pair() -> (Self, oneshot::Receiver<R>) {
        let (sender, receiver) = oneshot::channel();
        let reply = Self {
            sender: Mutex::new(Some(sender)),
        };
        (reply, receiver)
    }

    fn slot(&self) -> MutexGuard<'_, Option<oneshot::Sender<R>>> {
        // Poisoning is impossible in practice (nothing here panics while holding the lock),
        // and the slot is valid either way.
        self.sender.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the answer to the requester. Never blocks.
    ///
    /// `Err(value)` gives the value back if it cannot be delivered: the requester has
    /// stopped waiting (its timeout passed, or its future was dropped), or this handle
    /// was already answered or taken.
    pub fn send(&self, value: R) -> Result<(), R> {
        let sender = self.slot().take();
        match sender {
            Some(sender) => sender.send(value).map_err(|e| e.into_inner()),
            None => Err(value),
        }
    }

    /// Moves the handle out, to answer later or elsewhere (another thread, an async task):
    /// a handler sees its message by reference, so it cannot move the `Reply` itself.
    /// `None` if it was already answered or taken. The requester still waits, up to its
    /// timeout, until the returned handle is answered or dropped.
    pub fn take(&self) -> Option<Reply<R>> {
        let sender = self.slot().take()?;
        Some(Reply {
            sender: Mutex::new(Some(sender)),
        })
    }

    /// Whether an answer can no longer reach the requester: it stopped waiting, or this
    /// handle was already answered or taken. A handler may skip costly work then.
    pub fn is_closed(&self) -> bool {
        self.slot().as_ref().is_none_or(oneshot::Sender::is_closed)
    }
}

impl<R> fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Why a wait ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unanswered {
    /// The deadline passed first.
    TimedOut,
    /// The `Reply` was dropped unanswered.
    NoReply,
}

/// Blocks the calling thread until the answer comes, the `Reply` is dropped, or
/// `deadline` passes (`None`: no deadline).
pub(crate) fn wait<R>(
    receiver: oneshot::Receiver<R>,
    deadline: Option<Instant>,
) -> Result<R, Unanswered> {
    match deadline {
        Some(deadline) => receiver.recv_deadline(deadline).map_err(|e| match e {
            oneshot::RecvTimeoutError::Timeout => Unanswered::TimedOut,
            oneshot::RecvTimeoutError::Disconnected => Unanswered::NoReply,
        }),
        None => receiver.recv().map_err(|_| Unanswered::NoReply),
    }
}

/// The async form of [`wait`]: completes with the answer, with `NoReply` once the `Reply`
/// is dropped, or with `TimedOut` once `deadline` passes (the timer thread wakes it then).
///
/// Dropping it deregisters its deadline; the `Reply`'s `send` then gives the value back.
pub(crate) struct WaitReply<R> {
    receiver: oneshot::AsyncReceiver<R>,
    deadline: Option<Instant>,
    /// The timer entry for `deadline`, with the waker it holds, once registered.
    registered: Option<(TimerKey, Waker)>,
}

impl<R> WaitReply<R> {
    pub(crate) fn new(receiver: oneshot::Receiver<R>, deadline: Option<Instant>) -> Self {
        Self {
            receiver: receiver.into_future(),
            deadline,
            registered: None,
        }
    }
}

impl<R> Future for WaitReply<R> {
    type Output = Result<R, Unanswered>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the receiver holds a pointer to its heap channel).
        let this = self.get_mut();
        match Pin::new(&mut this.receiver).poll(cx) {
            Poll::Ready(Ok(answer)) => return Poll::Ready(Ok(answer)),
            Poll::Ready(Err(_)) => return Poll::Ready(Err(Unanswered::NoReply)),
            // The channel holds this task's waker now: a send or a drop wakes it.
            Poll::Pending => {}
        }
        let Some(deadline) = this.deadline else {
            return Poll::Pending;
        };
        if Instant::now() >= deadline {
            return Poll::Ready(Err(Unanswered::TimedOut));
        }
        // Register (or re-register, if the task's waker changed) the deadline. The timer
        // wakes the waker it holds at or after `deadline`; the poll then sees it passed.
        let current = matches!(&this.registered, Some((_, w)) if w.will_wake(cx.waker()));
        if !current {
            if let Some((key, _)) = this.registered.take() {
                TIMER.cancel(key);
            }
            match TIMER.register(deadline, cx.waker().clone()) {
                Some(key) => this.registered = Some((key, cx.waker().clone())),
                // No timer thread (the system refused one): be polled again, and check
                // the deadline then, rather than miss it.
                None => cx.waker().wake_by_ref(),
            }
        }
        Poll::Pending
    }
}

impl<R> Drop for WaitReply<R> {
    fn drop(&mut self) {
        if let Some((key, _)) = self.registered.take() {
            TIMER.cancel(key);
        }
    }
}

/// A pending deadline: the instant, and a number that makes the key unique.
type TimerKey = (Instant, u64);

/// The process's timer for async requests: pending deadlines and the wakers to wake at
/// each, served by one thread started on first use.
struct Timer {
    state: Mutex<TimerState>,
    /// Signalled when a registration becomes the earliest deadline.
    earlier: Condvar,
}

struct TimerState {
    /// Written by registering futures (insert, remove on drop) and the timer thread
    /// (remove when due), under the lock.
    pending: BTreeMap<TimerKey, Waker>,
    next_id: u64,
    /// Whether the timer thread runs (it never exits).
    started: bool,
}

static TIMER: Timer = Timer {
    state: Mutex::new(TimerState {
        pending: BTreeMap::new(),
        next_id: 0,
        started: false,
    }),
    earlier: Condvar::new(),
};

impl Timer {
    fn lock(&self) -> MutexGuard<'_, TimerState> {
        // The thread wakes wakers outside the lock and catches their panics: nothing
        // panics while it is held, and the map is valid either way.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes `waker` at or after `deadline`. `None` if there is no timer thread and none
    /// could be started.
    fn register(&'static self, deadline: Instant, waker: Waker) -> Option<TimerKey> {
        let mut state = self.lock();
        if !state.started {
            match spawn_named("sb-timer".to_string(), move || self.run()) {
                Ok(_) => state.started = true,
                Err(error) => {
                    tracing::warn!(%error, "no timer thread for async request deadlines");
                    return None;
                }
            }
        }
        let key = (deadline, state.next_id);
        state.next_id += 1;
        let earliest = state
            .pending
            .first_key_value()
            .is_none_or(|(first, _)| key < *first);
        state.pending.insert(key, waker);
        drop(state);
        if earliest {
            self.earlier.notify_one();
        }
        Some(key)
    }

    /// Forgets a deadline (its future completed or was dropped).
    fn cancel(&self, key: TimerKey) {
        let waker = self.lock().pending.remove(&key);
        // Dropped outside the lock: a waker's drop is user code.
        drop(waker);
    }

    /// The timer thread: wakes what is due, then sleeps until the next deadline or a new
    /// earlier one.
    fn run(&self) {
        let mut due: Vec<Waker> = Vec::new();
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            while let Some(entry) = state.pending.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            if !due.is_empty() {
                drop(state);
                for waker in due.drain(..) {
                    // A waker is user code: its panic must not end the timer.
                    let _ = catch_unwind(AssertUnwindSafe(|| waker.wake()));
                }
                state = self.lock();
                continue;
            }
            let next = state.pending.first_key_value().map(|(key, _)| key.0);
            state = match next {
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    self.earlier
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .earlier
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

/// The error of a request ([`Bus::request`](crate::Bus::request),
/// [`Bus::request_async`](crate::Bus::request_async)): no answer came, and why. The
/// variants that say the message was not accepted give it back (its [`Reply`](crate::Reply)
/// inside can no longer be answered).
#[derive(PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum RequestError<T> {
    /// The message was accepted, but no answer came before the timeout. Its handler may
    /// still run; its [`Reply::send`](crate::Reply::send) then gives the value back.
    TimedOut,
    /// The message was accepted, but its [`Reply`](crate::Reply) was dropped unanswered:
    /// the handler panicked or returned without answering, the message was dead-lettered
    /// (no subscriber), or it was dropped at a deadline shutdown. Reported as soon as the
    /// `Reply` is dropped, not at the timeout.
    NoReply,
    /// The bus is shutting down or has shut down; the message was not accepted.
    Closed(T),
    /// The target's inbox stayed full until the timeout; the message was not accepted.
    Full(T),
    /// The topic name is empty or longer than [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN).
    /// Also a name that is not a plain subject (see [`Pattern`](crate::Pattern)): a `*`
    /// or `>` token, an empty token, whitespace ([`Bus::topic`](crate::Bus::topic) says
    /// which, with [`Error::InvalidSubject`](crate::Error::InvalidSubject)).
    InvalidTopic(T),
    /// Persistent bus: the message's [`Codec`](crate::Codec) cannot encode it; it was not
    /// accepted. See [`PublishError::Encode`].
    Encode {
        /// The message.
        msg: T,
        /// What the codec said.
        error: EncodeError,
    },
    /// The request was made (or its future polled) on a shard thread of the same bus, from
    /// a handler: the wait for the answer would hold up that shard, which the answer may
    /// need. The message was not published. A handler sends a message that carries a
    /// [`Reply`](crate::Reply) with [`Context::publish`](crate::Context::publish) and
    /// moves the receiving side elsewhere, or answers through another channel.
    WouldDeadlock(T),
}

impl<T> RequestError<T> {
    /// Takes the message back, if it was not accepted.
    pub fn into_inner(self) -> Option<T> {
        match self {
            Self::Closed(t) | Self::Full(t) | Self::InvalidTopic(t) | Self::WouldDeadlock(t) => {
                Some(t)
            }
            Self::Encode { msg, .. } => Some(msg),
            Self::TimedOut | Self::NoReply => None,
        }
    }

    /// Whether the timeout passed without an answer.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Self::TimedOut)
    }

    /// Whether the reply handle was dropped unanswered.
    pub fn is_no_reply(&self) -> bool {
        matches!(self, Self::NoReply)
    }

    /// Whether the bus was closed and the message was not accepted.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed(_))
    }

    /// Whether the target's inbox stayed full until the timeout.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }

    /// Whether the request was refused because it was made from a handler on one of the
    /// bus's own shard threads.
    pub fn is_would_deadlock(&self) -> bool {
        matches!(self, Self::WouldDeadlock(_))
    }
}

impl<T> From<PublishError<T>> for RequestError<T> {
    fn from(e: PublishError<T>) -> Self {
        match e {
            PublishError::Closed(t) => Self::Closed(t),
            PublishError::InvalidTopic(t) => Self::InvalidTopic(t),
            PublishError::Encode { msg, error } => Self::Encode { msg, error },
            PublishError::WouldDeadlock(t) => Self::WouldDeadlock(t),
            PublishError::Full(t) => Self::Full(t),
        }
    }
}

impl<T> fmt::Debug for RequestError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut => f.write_str("TimedOut"),
            Self::NoReply => f.write_str("NoReply"),
            Self::Closed(_) => f.write_str("Closed(..)"),
            Self::Full(_) => f.write_str("Full(..)"),
            Self::InvalidTopic(_) => f.write_str("InvalidTopic(..)"),
            Self::Encode { error, .. } => debug_encode(f, error),
            Self::WouldDeadlock(_) => f.write_str("WouldDeadlock(..)"),
        }
    }
}

impl<T> fmt::Display for RequestError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut => f.write_str("no reply before the request's timeout"),
            Self::NoReply => f.write_str("the reply handle was dropped without a reply"),
            Self::Closed(_) => f.write_str("requesting on a closed bus"),
            Self::Full(_) => f.write_str("the target's inbox stayed full until the timeout"),
            Self::InvalidTopic(_) => f.write_str("invalid topic name"),
            Self::Encode { error, .. } => write!(f, "the message does not encode: {error}"),
            Self::WouldDeadlock(_) => f.write_str(
                "a request from a handler on one of the bus's own shards would deadlock",
            ),
        }
    }
}

impl<T> std::error::Error for RequestError<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    /// Counts wakes and unparks the polling thread.
    struct Unpark(std::thread::Thread, AtomicUsize);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.unpark();
        }
    }

    /// Polls `fut` on this thread until it completes or `limit` passes.
    fn block_on<F: Future + Unpin>(mut fut: F, limit: Duration) -> Option<F::Output> {
        let waker = Waker::from(Arc::new(Unpark(
            std::thread::current(),
            AtomicUsize::new(0),
        )));
        let mut cx = Context::from_waker(&waker);
        let end = Instant::now() + limit;
        loop {
            if let Poll::Ready(out) = Pin::new(&mut fut).poll(&mut cx) {
                return Some(out);
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            std::thread::park_timeout(end - now);
        }
    }

    #[test]
    fn send_delivers_once_and_gives_later_values_back() {
        let (reply, rx) = Reply::<u32>::pair();
        assert!(!reply.is_closed());
        assert_eq!(reply.send(7), Ok(()));
        assert_eq!(reply.send(8), Err(8));
        assert!(reply.is_closed());
        assert_eq!(wait(rx, None), Ok(7));
    }

    #[test]
    fn a_dropped_reply_is_no_reply_and_a_dropped_requester_refuses_the_send() {
        let (reply, rx) = Reply::<u32>::pair();
        drop(reply);
        assert_eq!(wait(rx, None), Err(Unanswered::NoReply));

        let (reply, rx) = Reply::<u32>::pair();
        drop(rx);
        assert!(reply.is_closed());
        assert_eq!(reply.send(3), Err(3));
    }

    #[test]
    fn take_moves_the_handle_out() {
        let (reply, rx) = Reply::<u32>::pair();
        let taken = reply.take().expect("not taken yet");
        assert!(reply.take().is_none());
        assert_eq!(reply.send(1), Err(1));
        drop(reply);
        assert_eq!(taken.send(2), Ok(()));
        assert_eq!(wait(rx, None), Ok(2));
    }

    #[test]
    fn async_wait_times_out_through_the_timer_thread() {
        let (reply, rx) = Reply::<u32>::pair();
        let deadline = Instant::now() + Duration::from_millis(20);
        let out = block_on(WaitReply::new(rx, Some(deadline)), Duration::from_secs(30));
        assert_eq!(out, Some(Err(Unanswered::TimedOut)));
        assert!(Instant::now() >= deadline);
        assert_eq!(reply.send(1), Err(1), "the requester is gone");
    }

    #[test]
    fn async_wait_gets_the_answer_and_forgets_its_deadline() {
        let (reply, rx) = Reply::<u32>::pair();
        let fut = WaitReply::new(rx, Some(Instant::now() + Duration::from_secs(600)));
        let answer = std::thread::spawn(move || reply.send(5));
        assert_eq!(block_on(fut, Duration::from_secs(30)), Some(Ok(5)));
        assert_eq!(answer.join().unwrap(), Ok(()));
        // The future's drop removed its entry (other tests' entries are their own keys).
        let (_reply, rx) = Reply::<u32>::pair();
        let mut fut = WaitReply::new(rx, Some(Instant::now() + Duration::from_secs(600)));
        let waker = Waker::noop();
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(waker))
            .is_pending());
        let key = fut
            .registered
            .as_ref()
            .map(|(k, _)| *k)
            .expect("registered");
        assert!(TIMER.lock().pending.contains_key(&key));
        drop(fut);
        assert!(!TIMER.lock().pending.contains_key(&key));
    }
}
