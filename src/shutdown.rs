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

/// [`ShutdownFlags::command`] values.
pub(crate) const RUN: usize = 0;
pub(crate) const CLOSE: usize = 1;
pub(crate) const STOP: usize = 2;
/// [`STOP`] after a deadline: the drain did not finish.
pub(crate) const STOP_FORCED: usize = 3;

/// Shutdown progress of one shard, between the coordinator (`Bus::shutdown`) and the
/// shard thread. See `shutdown` for the protocol.
pub(crate) struct ShutdownFlags {
    /// Set by the coordinator: [`RUN`], then [`CLOSE`] (close external intake, keep
    /// serving shard-to-shard), then [`STOP`] (stop now, drop and count what is left).
    /// One word, so the shard reads one atomic per pass.
    pub(crate) command: AtomicUsize,
    /// Written by the shard while closing: the shared ring and every publisher lane are
    /// closed and drained, and what was drained has been handled.
    pub(crate) external_drained: AtomicBool,
    /// Written by the shard while closing: it found nothing to do. Cleared before it
    /// takes any work.
    pub(crate) idle: AtomicBool,
    /// Written by the shard while closing: bumped after every pass that did work.
    pub(crate) activity: AtomicU64,
    /// Written by the shard as its thread ends.
    pub(crate) exited: AtomicBool,
}

/// Signals phase 1 to every shard.
pub(crate) fn begin<T>(shared: &Shared<T>) {
    // SeqCst: ordered before every shard's close (which it happens-before through the
    // `closing` flags below anyway).
    shared.closing.store(true, Ordering::SeqCst);
    for inbox in shared.inboxes.iter() {
        // SeqCst: ordered before the quiescence reads (and the kick's unpark).
        inbox.flags.command.store(CLOSE, Ordering::SeqCst);
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
    let command = if drained { STOP } else { STOP_FORCED };
    for inbox in shared.inboxes.iter() {
        // SeqCst: see `begin`.
        inbox.flags.command.store(command, Ordering::SeqCst);
        inbox.kick();
    }
}

/// Waits until every shard has exited or the deadline passes; returns how many had
/// not exited.
pub(crate) fn wait_exited<T>(shared: &Shared<T>, deadline: Option<Instant>) -> usize {
    let backoff = Backoff::new();
    loop {
        // Acquire: pairs with the shard's Release store; its final counters are then
        // visible.
        let running = shared
            .inboxes
            .iter()
            .filter(|i| !i.flags.exited.load(Ordering::Acquire))
            .count();
        // Under loom a stuck shard cannot exist; wait for every one (see `expired`).
        if running == 0 || (!cfg!(shardbus_loom) && expired(deadline)) {
            return running;
        }
        publisher_pause(&backoff);
    }
}
