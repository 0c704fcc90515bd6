//! The words one shard and the shutdown coordinator share ([`ShutdownFlags`]), each
//! change a method named for it (tokio's `idle.rs` style). The protocol they carry is in
//! the parent module's docs.

use crate::sync::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// What the coordinator tells a shard, in the order it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Command {
    /// Serve everything.
    Run = 0,
    /// Close the external intake, keep serving shard-to-shard.
    Close = 1,
    /// The drain finished: run every actor's `on_stop` once, and keep serving (what the
    /// `on_stop` calls publish is delivered before the shards stop).
    StopActors = 2,
    /// Stop now, drop and count what is left (nothing: the drain finished).
    Stop = 3,
    /// [`Command::Stop`] after a deadline: the drain did not finish. The shard starts no
    /// further handler (it checks between messages) and drops and counts what is left.
    StopForced = 4,
}

impl Command {
    #[inline]
    fn from_word(word: usize) -> Self {
        match word {
            0 => Command::Run,
            1 => Command::Close,
            2 => Command::StopActors,
            3 => Command::Stop,
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
    /// Written by the shard after it ran every actor's `on_stop` ([`Command::StopActors`])
    /// and bumped `activity` for it.
    actors_stopped: AtomicBool,
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
            actors_stopped: AtomicBool::new(false),
            exited: AtomicBool::new(false),
        }
    }

    // The coordinator's side: the command, and the quiescence reads (all SeqCst: the
    // argument in the module docs needs one total order of these reads and the shards'
    // writes).

    /// Raises the command. SeqCst: ordered before the quiescence reads (and the unpark
    /// that follows).
    pub(super) fn command(&self, command: Command) {
        self.command.store(command as usize, Ordering::SeqCst);
    }

    /// How many passes with work the shard has reported while closing.
    pub(super) fn activity(&self) -> u64 {
        self.activity.load(Ordering::SeqCst)
    }

    /// Whether the shard has drained its closed external intake.
    pub(super) fn is_external_drained(&self) -> bool {
        self.external_drained.load(Ordering::SeqCst)
    }

    /// Whether the shard has run its actors' `on_stop` (and published what they sent
    /// before it said so).
    pub(super) fn has_stopped_actors(&self) -> bool {
        self.actors_stopped.load(Ordering::SeqCst)
    }

    /// Whether the shard last reported itself idle.
    pub(super) fn is_idle(&self) -> bool {
        self.idle.load(Ordering::SeqCst)
    }

    // The shard's side.

    /// The coordinator's command. Acquire: pairs with the coordinator's SeqCst store;
    /// what the shard then does is re-checked by the protocol itself.
    #[inline]
    pub(crate) fn shard_reads_command(&self) -> Command {
        Command::from_word(self.command.load(Ordering::Acquire))
    }

    /// Whether the coordinator has given up the drain ([`Command::StopForced`]): checked
    /// before each message of a memory-only pass, so that no handler starts once the
    /// shard sees it. Relaxed: the shard reads nothing on the strength of it (it only
    /// stops calling handlers, and its own messages are its own); the Acquire load of
    /// [`shard_reads_command`](Self::shard_reads_command) at the top of its loop orders
    /// the rest of the stop.
    #[inline(always)]
    pub(crate) fn shard_is_abandoned(&self) -> bool {
        self.command.load(Ordering::Relaxed) == Command::StopForced as usize
    }

    /// The shard ran every actor's `on_stop`, after the pushes those made and after
    /// [`shard_did_work`](Self::shard_did_work) for them. SeqCst store and fence: the
    /// coordinator reads it before its quiescence check, whose reads then see those
    /// messages in a ring, or the shard busy with them.
    pub(crate) fn shard_stopped_actors(&self) {
        self.actors_stopped.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
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
    pub(super) fn has_exited(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }
}
