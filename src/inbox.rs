//! One shard's intake as publishers and the shard thread share it: the envelope and
//! the items of the intake ring, the control messages and their acknowledgement, the
//! ring with its wake-up handshake ([`Inbox`]), and the shard's log status.

use crossbeam_utils::CachePadded;

use crate::handler::SubscriptionId;
use crate::ring::{mpsc, spsc};
use crate::shutdown::flags::ShutdownFlags;
use crate::supervise::Subscriber;
use crate::sync::{
    asym, dekker_after_rmw, thread, Arc, AtomicBool, AtomicU64, AtomicUsize, Ordering, Unparker,
    WaitList,
};

/// A message on its way to a shard, with its topic's index in that shard's topic table
/// (see `intern`): 8 bytes of routing beside the message.
pub(crate) struct Envelope<T> {
    pub(crate) topic: u32,
    pub(crate) msg: T,
}

/// An item of a shard's shared intake ring.
pub(crate) enum Item<T> {
    Msg(Envelope<T>),
    Control(Control<T>),
}

/// A change to a shard's state, applied by the shard thread itself: the subscription
/// table and the lane list have one owner and no lock.
pub(crate) enum Control<T> {
    Subscribe {
        /// The topic's index in the shard's table.
        topic: u32,
        sub: Subscriber<T>,
        ack: AckSender,
    },
    Unsubscribe {
        id: SubscriptionId,
        ack: AckSender,
    },
    /// A pattern subscription: every shard gets one (`shard/patterns.rs`).
    SubscribePattern {
        sub: crate::pattern::PatternSub<T>,
        ack: AckSender,
    },
    /// Ends a pattern subscription on this shard (`NotFound` if the shard holds none).
    UnsubscribePattern {
        id: SubscriptionId,
        ack: AckSender,
    },
    AddLane(spsc::Consumer<Envelope<T>>),
    /// `Bus::flush`: answered once every message published before it is handled.
    Flush {
        ack: AckSender,
    },
}

impl<T> Control<T> {
    /// Whether the shard first handles every message already in its publishers' lanes
    /// (up to each lane's tail as the shard reads it on popping this control). A
    /// message a `Publisher` pushed before the caller pushed this control is then
    /// handled before it takes effect, as a `Bus::publish` message ahead of it in the
    /// shared ring is: (un)subscribe and flush order the two publish paths alike.
    #[inline]
    pub(crate) fn is_lane_barrier(&self) -> bool {
        !matches!(self, Control::AddLane(_))
    }
}

/// The outcome a shard reports back to the thread waiting for a control operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ack {
    /// Done.
    Ok,
    /// The subscription to remove is not on this shard.
    NotFound,
    /// The shard stopped (or its replay failed) before doing it.
    Closed,
    /// Subscribe: the actor's `on_start` panicked and its supervision policy ended the
    /// subscription at once.
    NotStarted,
}

/// Why a control operation did not happen: [`Ack`] without its `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckError {
    /// See [`Ack::NotFound`].
    NotFound,
    /// See [`Ack::Closed`].
    Closed,
    /// See [`Ack::NotStarted`].
    NotStarted,
}

/// The acknowledgement's word: `PENDING`, then one [`Ack`] encoded. Only this file
/// encodes and decodes it.
const PENDING: usize = 0;

impl Ack {
    fn word(self) -> usize {
        match self {
            Ack::Ok => 1,
            Ack::NotFound => 2,
            Ack::Closed => 3,
            Ack::NotStarted => 4,
        }
    }

    fn from_word(word: usize) -> Result<(), AckError> {
        match word {
            1 => Ok(()),
            2 => Err(AckError::NotFound),
            4 => Err(AckError::NotStarted),
            _ => Err(AckError::Closed),
        }
    }
}

struct AckInner {
    state: AtomicUsize,
    waiter: thread::Thread,
}

/// The shard's side of a control operation's reply. Dropping it unanswered (a shard
/// that stops with the request still queued) answers [`Ack::Closed`], so no caller waits
/// forever.
pub(crate) struct AckSender(Option<Arc<AckInner>>);

/// The caller's side: waits for the shard's reply.
pub(crate) struct AckReceiver(Arc<AckInner>);

pub(crate) fn ack_pair() -> (AckSender, AckReceiver) {
    let inner = Arc::new(AckInner {
        state: AtomicUsize::new(PENDING),
        waiter: thread::current(),
    });
    (AckSender(Some(inner.clone())), AckReceiver(inner))
}

impl AckSender {
    /// No one waits for the answer: a control sent by a handler
    /// (`Context::subscribe`, `Context::unsubscribe`), which must not wait.
    pub(crate) fn none() -> Self {
        AckSender(None)
    }

    /// Answers the waiting caller.
    pub(crate) fn send(mut self, outcome: Ack) {
        if let Some(inner) = self.0.take() {
            // Release: the shard's state change (e.g. the installed subscriber) happens
            // before the caller's Acquire load returns.
            inner.state.store(outcome.word(), Ordering::Release);
            inner.waiter.unpark();
        }
    }
}

impl Drop for AckSender {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            // Release: as in `send`.
            inner.state.store(Ack::Closed.word(), Ordering::Release);
            inner.waiter.unpark();
        }
    }
}

impl AckReceiver {
    /// Blocks until the shard answers (or drops the request: [`AckError::Closed`]).
    pub(crate) fn wait(self) -> Result<(), AckError> {
        loop {
            // Acquire: pairs with the Release store in `send`/`drop`.
            let state = self.0.state.load(Ordering::Acquire);
            if state != PENDING {
                return Ack::from_word(state);
            }
            // `park` may return spuriously; the loop re-checks. An `unpark` that came
            // before this `park` leaves a token, so it is not lost.
            thread::park();
        }
    }
}

/// One shard's intake, shared by every publisher and the shard thread.
pub(crate) struct Inbox<T> {
    /// The shared intake: `Bus::publish`, control messages, lane registrations.
    pub(crate) ring: mpsc::Ring<Item<T>>,
    /// Written `true` by the shard before it parks, `false` by whoever wakes it.
    sleeping: CachePadded<AtomicBool>,
    /// Whether the shard's heavy fence before parking is the membarrier one (fixed at
    /// creation, see `sync::asym`).
    asym: bool,
    unparker: Unparker,
    /// The shard's shutdown progress, between the coordinator and the shard thread.
    pub(crate) flags: CachePadded<ShutdownFlags>,
    /// Persistent buses only: the ring position up to which popped messages are in the
    /// shard's log as durably as its fsync policy makes them. Written by the shard
    /// (Release, after the commit), read by `Bus::publish_durable` (Acquire). Untouched on
    /// a memory-only bus.
    pub(crate) durable: CachePadded<AtomicU64>,
    /// Persistent buses: the state of the shard's log.
    pub(crate) log: LogStatus,
}

impl<T> Inbox<T> {
    /// An inbox whose ring has `capacity` slots; `Err` if they cannot be allocated.
    /// `asym`: the bus's fences are the membarrier pair (`sync::asym`).
    pub(crate) fn try_new(
        capacity: usize,
        unparker: Unparker,
        asym: bool,
    ) -> Result<Self, crate::ring::AllocError> {
        Ok(Self {
            ring: mpsc::Ring::try_new(capacity, 0)?.with_asym(asym),
            sleeping: CachePadded::new(AtomicBool::new(false)),
            asym,
            unparker,
            flags: CachePadded::new(ShutdownFlags::new()),
            durable: CachePadded::new(AtomicU64::new(0)),
            log: LogStatus::new().with_asym(asym),
        })
    }

    /// Called by a publisher after a successful push: wakes the shard if it is parked
    /// or about to park.
    ///
    /// The no-lost-wake-up argument (Dekker): the publisher does its push then this
    /// load; the shard stores `true`, a heavy fence, then loads every `tail`
    /// (`has_ready_seqcst`). A push into the shared ring is a SeqCst RMW; a push into an
    /// SPSC lane is a Release store followed by the light fence (`sync::asym`), which
    /// the shard's heavy fence pairs with. Either way one side comes first: the shard
    /// sees the message and does not park, or this load sees `true` and unparks it.
    #[inline]
    pub(crate) fn wake(&self) {
        dekker_after_rmw();
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            self.unparker.unpark();
        }
    }

    /// Wakes the shard unconditionally (control flags changed). Parking uses a token,
    /// so an unpark before the park is not lost.
    pub(crate) fn kick(&self) {
        self.unparker.unpark();
    }

    /// Shard side: announces it is about to park. Followed by the re-check. `false` if
    /// the heavy fence could not be made (`sync::asym`, "When the heavy fence fails"):
    /// then a publisher's wake-up may be missed, and the shard must park with a timeout.
    #[must_use]
    pub(crate) fn set_sleeping(&self) -> bool {
        // SeqCst store and the heavy fence: the shard's side of the Dekker pair in
        // `wake`, before the re-check's loads. Its cost (a `membarrier` syscall) is paid
        // only on the way to parking.
        self.sleeping.store(true, Ordering::SeqCst);
        crate::sync::asym::heavy(self.asym)
    }

    /// Shard side: no longer parking.
    pub(crate) fn clear_sleeping(&self) {
        // Relaxed: only a hint to publishers; a stale `true` costs one spare unpark.
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

/// The state of one shard's log, as publishers and the bus see it. Only raised:
/// `Ok`, then `Poisoned` or `Closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogState {
    /// Memory-only buses stay here; a persistent shard's log works.
    Ok,
    /// The log failed; the shard closed its intake and confirms nothing more.
    Poisoned,
    /// The shard stopped; it confirms nothing more.
    Closed,
}

impl LogState {
    fn from_word(word: usize) -> Self {
        match word {
            0 => LogState::Ok,
            1 => LogState::Poisoned,
            _ => LogState::Closed,
        }
    }
}

/// The error that poisoned a shard's log, shared (a std `Arc` also under loom: it is
/// handed to users).
type LogCause = crate::sync::plain::Arc<crate::log::LogError>;

/// One shard's log as publishers and the bus see it.
pub(crate) struct LogStatus {
    /// Written by the shard: a [`LogState`] (Release, after its last durable watermark
    /// store); read by durable publishers (Acquire) to stop waiting.
    state: AtomicUsize,
    /// Written once by the shard when the log is poisoned; read by `Bus::log_error`.
    error: crate::sync::plain::Mutex<Option<LogCause>>,
    /// Async durable publishes waiting for a durable watermark to pass their message (or
    /// for a final state), see [`DurableWait`].
    pub(crate) wait: DurableWait,
}

/// Async durable publishes (`publish_durable_async`) waiting on one shard's durable
/// watermarks (the shared ring's and its lanes'): their count and their list.
///
/// The wake-up handshake is a store-buffering pair, as the park's:
/// - a waiter ([`DurableWait::enter`], then a re-check): register a listener, increment
///   `waiters` (SeqCst RMW), the heavy fence, load the watermark (and the state); wait
///   only if its message is still not durable;
/// - the shard, after the watermark stores of a commit ([`DurableWait::wake`]): the light
///   fence, load `waiters`; if non-zero, notify every listener. A final state
///   ([`LogStatus::poisoned`], [`LogStatus::closed`]) notifies unconditionally.
pub(crate) struct DurableWait {
    /// Waiters between their registration and the end of their wait: incremented and
    /// decremented by them, read by the shard after its watermark stores.
    waiters: AtomicUsize,
    /// Waiters register listeners; the shard notifies.
    list: WaitList,
    /// Whether the bus's fences are the membarrier pair (fixed at creation).
    asym: bool,
}

/// A waiter counted in [`DurableWait`]; uncounted on drop (also when its future is
/// dropped mid-wait).
pub(crate) struct DurableWaiting<'a>(&'a DurableWait);

impl DurableWait {
    fn new(asym: bool) -> Self {
        Self {
            waiters: AtomicUsize::new(0),
            list: WaitList::new(),
            asym,
        }
    }

    /// The waiter list, to register a listener on before [`enter`](Self::enter).
    pub(crate) fn list(&self) -> &WaitList {
        &self.list
    }

    /// Counts the caller as waiting and makes the heavy fence; the caller then re-checks
    /// its watermark. `false` if the heavy fence could not be made (`sync::asym`): the
    /// caller must then poll again rather than sleep on its listener.
    pub(crate) fn enter(&self) -> (DurableWaiting<'_>, bool) {
        // SeqCst RMW: the waiter's store of the Dekker pair (see the type's docs).
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let fenced = asym::heavy(self.asym);
        (DurableWaiting(self), fenced)
    }

    /// Shard side, after storing durable watermarks: wakes the waiters, if any. One
    /// load (and the light fence) when no one waits.
    #[inline]
    pub(crate) fn wake(&self) {
        asym::light(self.asym);
        // Acquire: pairs with the waiter's increment (SeqCst), after its registration.
        if self.waiters.load(Ordering::Acquire) != 0 {
            self.list.notify_all();
        }
    }
}

impl Drop for DurableWaiting<'_> {
    fn drop(&mut self) {
        // Relaxed: the count only decides whether the shard notifies; a stale non-zero
        // costs one spare notify.
        self.0.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LogStatus {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicUsize::new(LogState::Ok as usize),
            error: crate::sync::plain::Mutex::new(None),
            wait: DurableWait::new(false),
        }
    }

    /// The status with the bus's fence mode for its durable waiters (`true`: the
    /// membarrier pair, `sync::asym`).
    pub(crate) fn with_asym(mut self, asym: bool) -> Self {
        self.wait.asym = asym;
        self
    }

    /// The state; Acquire: pairs with the shard's Release store, so a waiter that sees a
    /// final state also sees the last watermark stored before it.
    pub(crate) fn state(&self) -> LogState {
        LogState::from_word(self.state.load(Ordering::Acquire))
    }

    /// Shard side: the log failed with `error`. Release: after the last watermark store,
    /// so a waiter that sees it also sees them.
    pub(crate) fn poisoned(&self, error: LogCause) {
        *self
            .error
            .lock()
            .unwrap_or_else(crate::sync::plain::PoisonError::into_inner) = Some(error);
        self.state
            .store(LogState::Poisoned as usize, Ordering::Release);
        self.wait.list.notify_all();
    }

    /// Shard side: the shard stopped. Release: as in [`poisoned`](Self::poisoned).
    pub(crate) fn closed(&self) {
        self.state
            .store(LogState::Closed as usize, Ordering::Release);
        self.wait.list.notify_all();
    }

    pub(crate) fn error(&self) -> Option<LogCause> {
        self.error
            .lock()
            .unwrap_or_else(crate::sync::plain::PoisonError::into_inner)
            .clone()
    }
}

/// One shard's durable watermark and its waiters, for the loom model of the durable wait
/// (persistence itself is not modelled): [`commit`](Self::commit) is the shard's side
/// (`confirm_durable`: store the watermark, then [`DurableWait::wake`]),
/// [`wait`](Self::wait) the async durable publish's (`wait_durable_async`), and
/// [`close`](Self::close) the shard stopping (`LogStatus::closed`).
#[cfg(shardbus_loom)]
pub struct DurableMark {
    status: LogStatus,
    mark: AtomicU64,
}

#[cfg(shardbus_loom)]
impl Default for DurableMark {
    fn default() -> Self {
        Self {
            status: LogStatus::new(),
            mark: AtomicU64::new(0),
        }
    }
}

#[cfg(shardbus_loom)]
impl DurableMark {
    /// The shard's side: everything before `pos` is durable.
    pub fn commit(&self, pos: u64) {
        // Release: as in `confirm_durable`.
        self.mark.store(pos, Ordering::Release);
        self.status.wait.wake();
    }

    /// The shard stops: it confirms nothing more.
    pub fn close(&self) {
        self.status.closed();
    }

    /// The waiter's side: `Ok` once the watermark reached `target`, `Err` if the shard
    /// stopped first.
    pub async fn wait(&self, target: u64) -> Result<(), ()> {
        crate::publisher::wait_durable_async(&self.status, || {
            // Acquire: as in `Bus::publish_durable_async`.
            crate::ring::reached(self.mark.load(Ordering::Acquire), target)
        })
        .await
    }
}
