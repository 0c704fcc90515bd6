//! Graceful shutdown: stop intake, drain to global quiescence, stop.
//!
//! Phase 1 (`closing`): every shard closes its shared ring and every publisher lane
//! (later publishes get `Closed` with their message) and keeps draining. Handlers may
//! still publish to other shards through the shard-to-shard lanes, so an accepted
//! message that fans out onward is followed through.
//!
//! Quiescence: the coordinator reads, in this order, every shard's `activity`, every
//! shard's `external_drained`, every shard-to-shard ring's emptiness, every shard's
//! `idle`, and `activity` again, all `SeqCst`. A shard clears `idle` before it takes
//! work and bumps `activity` after the work (and whatever it published) is done. If a
//! message were still in flight, either its ring is seen non-empty, or the shard that
//! took it is seen busy, or that shard finished it between the two `activity` reads
//! and the second read differs. Only all-idle, all-empty, unchanged counts as done.
//!
//! Phase 2 (`stop`): each shard closes its remaining inputs, drops and counts what is
//! left (nothing after quiescence; the rest after a deadline), runs `on_stop` and exits.

use std::time::Instant;

use crate::shared::Shared;
use crate::sync::{fence, AtomicBool, AtomicU64, AtomicUsize, Backoff, Ordering};
use crate::wait::publisher_pause;

/// What the coordinator tells a shard, in the order it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Command {
    /// Serve everything.
    Run = 0,
    /// Close the external intake, keep serving shard-to-shard.
    Close = 1,
    /// Stop now, drop and count what is left (nothing: the drain finished).
    Stop = 2,
    /// [`Command::Stop`] after a deadline: the drain did not finish.
    StopForced = 3,
}

impl Command {
    fn from_word(word: usize) -> Self {
        match word {
            0 => Command::Run,
            1 => Command::Close,
            2 => Command::Stop,
            _ => Command::StopForced,
        }
    }
}

/// Shutdown progress of one shard, between the coordinator (`Bus::shutdown`) and the
/// shard thread. See the module docs for the protocol. Each state change is a method
/// named for it, holding its store and its fences; nothing outside this file touches the
/// words.
pub(crate) struct ShutdownFlags {
    /// Written by the coordinator: a [`Command`], only ever raised. One word, so the
    /// shard reads one atomic per pass.
    command: AtomicUsize,
    /// Written by the shard while closing: the shared ring and every publisher lane are
    /// closed and drained, and what was drained has been handled.
    external_drained: AtomicBool,
    /// Written by the shard while closing: it found nothing to do. Cleared before it
    /// takes any work.
    idle: AtomicBool,
    /// Written by the shard while closing: bumped after every pass that did work.
    activity: AtomicU64,
    /// Written by the shard as its thread ends.
    exited: AtomicBool,
}

impl ShutdownFlags {
    pub(crate) fn new() -> Self {
        Self {
            command: AtomicUsize::new(Command::Run as usize),
            external_drained: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            activity: AtomicU64::new(0),
            exited: AtomicBool::new(false),
        }
    }

    // The coordinator's side.

    /// Raises the command. SeqCst: ordered before the quiescence reads (and the unpark
    /// that follows).
    fn command(&self, command: Command) {
        self.command.store(command as usize, Ordering::SeqCst);
    }

    // The shard's side.

    /// The coordinator's command. Acquire: pairs with the coordinator's SeqCst store;
    /// what the shard then does is re-checked by the protocol itself.
    pub(crate) fn shard_reads_command(&self) -> Command {
        Command::from_word(self.command.load(Ordering::Acquire))
    }

    /// After a pass that did work while closing. SeqCst: bumped after the work (and any
    /// publishes it made), so the coordinator's second read of `activity` sees a change.
    /// Single writer: the Relaxed load reads our own last store.
    pub(crate) fn shard_did_work(&self) {
        fence(Ordering::SeqCst);
        let a = self.activity.load(Ordering::Relaxed);
        self.activity.store(a + 1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The shared ring and every publisher lane are closed and drained. SeqCst: read by
    /// the coordinator in its total order of checks.
    pub(crate) fn shard_external_drained(&self) {
        self.external_drained.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The shard found nothing to do. SeqCst store between fences: see the module docs.
    pub(crate) fn shard_went_idle(&self) {
        fence(Ordering::SeqCst);
        self.idle.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The shard is about to take work after reporting itself idle. SeqCst store and
    /// fence: published before it takes any work.
    pub(crate) fn shard_takes_work(&self) {
        self.idle.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The thread ends. Release: the final counters happen before a reader that sees
    /// it (the Acquire load in [`has_exited`](Self::has_exited)).
    pub(crate) fn shard_exited(&self) {
        self.exited.store(true, Ordering::Release);
    }

    /// Whether the shard's thread has ended; Acquire: pairs with `shard_exited`.
    fn has_exited(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }
}

/// Signals phase 1 to every shard.
pub(crate) fn begin<T>(shared: &Shared<T>) {
    // SeqCst: ordered before every shard's close (which it happens-before through the
    // `closing` flags below anyway).
    shared.closing.store(true, Ordering::SeqCst);
    for inbox in shared.inboxes.iter() {
        inbox.flags.command(Command::Close);
        inbox.kick();
    }
}

/// Waits for quiescence or the deadline. Returns whether quiescence was reached.
pub(crate) fn wait_quiescent<T>(shared: &Shared<T>, deadline: Option<Instant>) -> bool {
    let backoff = Backoff::new();
    loop {
        if is_quiescent(shared) {
            return true;
        }
        if expired(deadline) {
            return false;
        }
        publisher_pause(&backoff);
    }
}

/// Whether a deadline has passed. Under loom, time must not steer the model: a
/// deadline counts as passed at once (which exercises the forced path).
fn expired(deadline: Option<Instant>) -> bool {
    #[cfg(not(shardbus_loom))]
    return deadline.is_some_and(|d| Instant::now() >= d);
    #[cfg(shardbus_loom)]
    return deadline.is_some();
}

fn is_quiescent<T>(shared: &Shared<T>) -> bool {
    let flags = || shared.inboxes.iter().map(|i| &i.flags);
    // SeqCst fences between the groups of reads (here and after every write of the
    // shards' side): the argument needs one total order of these reads and the shards'
    // writes, and fences are how both the memory model and loom give it.
    fence(Ordering::SeqCst);
    let before: Vec<u64> = flags().map(|f| f.activity.load(Ordering::SeqCst)).collect();
    fence(Ordering::SeqCst);
    if !flags().all(|f| f.external_drained.load(Ordering::SeqCst)) {
        return false;
    }
    if !shared
        .peer_rings
        .iter()
        .flatten()
        .all(|r| r.is_empty_seqcst())
    {
        return false;
    }
    if !flags().all(|f| f.idle.load(Ordering::SeqCst)) {
        return false;
    }
    flags()
        .map(|f| f.activity.load(Ordering::SeqCst))
        .eq(before)
}

/// Signals phase 2 to every shard; `drained` says whether quiescence was reached.
pub(crate) fn stop<T>(shared: &Shared<T>, drained: bool) {
    let command = if drained {
        Command::Stop
    } else {
        Command::StopForced
    };
    for inbox in shared.inboxes.iter() {
        inbox.flags.command(command);
        inbox.kick();
    }
}

/// Waits until every shard has exited or the deadline passes; returns how many had
/// not exited.
pub(crate) fn wait_exited<T>(shared: &Shared<T>, deadline: Option<Instant>) -> usize {
    let backoff = Backoff::new();
    loop {
        // `has_exited` is an Acquire load: the shard's final counters are then visible.
        let running = shared
            .inboxes
            .iter()
            .filter(|i| !i.flags.has_exited())
            .count();
        // Under loom a stuck shard cannot exist; wait for every one (see `expired`).
        if running == 0 || (!cfg!(shardbus_loom) && expired(deadline)) {
            return running;
        }
        publisher_pause(&backoff);
    }
}
