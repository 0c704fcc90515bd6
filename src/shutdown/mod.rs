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
//! Phase 2 (`stop_actors`), after quiescence only: every shard runs each actor's
//! `on_stop` once, bumps `activity`, then says so (`actors_stopped`). The coordinator
//! waits for every shard to say so, then for quiescence again with the same reads, so
//! that what the `on_stop` calls published (to any shard, their own included) is
//! delivered like any other message. The cascade is finite unless handlers publish
//! forever, which only a deadline ends.
//!
//! Phase 3 (`stop`): each shard closes its remaining inputs, drops and counts what is
//! left (nothing after quiescence; the rest after a deadline), runs `on_stop` if phase 2
//! did not, and exits. After a deadline (`StopForced`) a memory-only shard also checks
//! the command between messages, so it starts no handler once it has seen it: a shard
//! still inside a handler call then stops when that call returns, without another.

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

/// Everything after [`begin`] up to the stop: the drain to quiescence, every actor's
/// `on_stop` and the drain of what those published, then [`stop`]. Returns whether it all
/// finished before `deadline` (if not, the stop drops what is left, counted).
pub(crate) fn drain_and_stop<T>(shared: &Shared<T>, deadline: Option<Instant>) -> bool {
    let mut drained = wait_quiescent(shared, deadline);
    if drained {
        // Every actor's `on_stop`, then what they published, to quiescence again.
        drained = stop_actors(shared, deadline) && wait_quiescent(shared, deadline);
    }
    stop(shared, drained);
    drained
}

/// Signals phase 2 to every shard (after quiescence) and waits until each has run its
/// actors' `on_stop`, or the deadline passes. Returns whether every shard did.
pub(crate) fn stop_actors<T>(shared: &Shared<T>, deadline: Option<Instant>) -> bool {
    for inbox in shared.inboxes.iter() {
        inbox.flags.command(Command::StopActors);
        inbox.kick();
    }
    let backoff = Backoff::new();
    loop {
        if shared.inboxes.iter().all(|i| i.flags.has_stopped_actors()) {
            return true;
        }
        if expired(deadline) {
            return false;
        }
        publisher_pause(&backoff);
    }
}

/// Signals phase 3 to every shard; `drained` says whether quiescence was reached.
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

/// Waits until every shard has exited or the deadline passes; returns the shards that
/// had not exited, in order.
pub(crate) fn wait_exited<T>(shared: &Shared<T>, deadline: Option<Instant>) -> Vec<usize> {
    let backoff = Backoff::new();
    loop {
        // `has_exited` is an Acquire load: the shard's final counters are then visible.
        let running: Vec<usize> = (0..shared.inboxes.len())
            .filter(|&i| !shared.inboxes[i].flags.has_exited())
            .collect();
        // Under loom a stuck shard cannot exist; wait for every one (see `expired`).
        if running.is_empty() || (!cfg!(shardbus_loom) && expired(deadline)) {
            return running;
        }
        publisher_pause(&backoff);
    }
}

/// For a shard that has not exited (it is inside a call that has not returned): the
/// entries waiting in its shared inbox ring and the messages waiting in the lanes from
/// the other shards, as the coordinator sees them now. Both consumers store their
/// position before they hand an entry to the shard (the ring's `pop_batch`, the lanes'
/// `pop_each`), so the message in the call, and those before it, are not counted.
pub(crate) fn queued_on<T>(shared: &Shared<T>, shard: usize) -> u64 {
    let n = shared.inboxes.len();
    let lanes: u64 = (0..n)
        .filter_map(|from| shared.peer_rings[from * n + shard].as_ref())
        .map(|ring| ring.depth_seen())
        .sum();
    shared.inboxes[shard].ring.depth_seen() + lanes
}
