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

pub(crate) mod flags;

pub(crate) use flags::{Command, ShutdownFlags};

use crate::shared::Shared;
use crate::sync::{fence, Backoff, Ordering};
use crate::wait::publisher_pause;

/// Signals phase 1 to every shard.
pub(crate) fn begin<T>(shared: &Shared<T>) {
    shared.begin_closing();
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
    let before: Vec<u64> = flags().map(|f| f.activity()).collect();
    fence(Ordering::SeqCst);
    if !flags().all(|f| f.is_external_drained()) {
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
    if !flags().all(|f| f.is_idle()) {
        return false;
    }
    flags().map(|f| f.activity()).eq(before)
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
