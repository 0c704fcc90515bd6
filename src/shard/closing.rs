//! The shard's half of shutdown (see `shutdown`): close the external intake, publish
//! drain progress to the coordinator, and stop.

use super::dispatch::drop_counted;
use super::inputs::confirm_durable;
use super::*;
use crate::stats::PanicSite;

impl<T: Send + 'static> Shard<T> {
    pub(super) fn begin_closing(&mut self) {
        self.phase = Phase::Closing;
        let ring = &self.shared.inboxes[self.id.0].ring;
        self.inputs.close_external(ring);
    }

    pub(super) fn closing_bookkeeping(&mut self, did: usize) {
        let flags = &self.shared.inboxes[self.id.0].flags;
        if did > 0 {
            flags.shard_did_work();
            return;
        }
        if !self.external_drained {
            let ring = &self.shared.inboxes[self.id.0].ring;
            let ring_done =
                self.inputs.ring.is_closed() && !self.inputs.ring.has_ready_seqcst(ring);
            if ring_done
                && self
                    .inputs
                    .lanes
                    .iter_mut()
                    .all(spsc::Consumer::is_closed_and_drained)
            {
                self.external_drained = true;
                flags.shard_external_drained();
            }
        }
        if self.external_drained
            && !self.actors.out.has_pending()
            && self.actors.out.local.is_empty()
        {
            flags.shard_went_idle();
            self.idle_published = true;
        }
    }

    /// [`Command::StopActors`]: runs every actor's `on_stop` once. What they publish is
    /// delivered by the passes that follow (the coordinator waits for quiescence again),
    /// to every subscriber of its topic, also one whose own `on_stop` has run: such a
    /// message was accepted, and which `on_stop` runs first is not for it to decide.
    pub(super) fn stop_actors(&mut self) {
        if self.idle_published {
            // The `on_stop` calls are work: not idle while they run and publish.
            self.flags().shard_takes_work();
            self.idle_published = false;
        }
        self.actors.stop_all(&self.names);
        self.actors_stopped = true;
        self.publish_counters();
        self.flags().shard_did_work();
        self.flags().shard_stopped_actors();
    }

    /// Stops: drops and counts what is left (nothing, after a clean drain), runs every
    /// actor's `on_stop` unless [`stop_actors`](Self::stop_actors) did, publishes the final
    /// counters. From here on a handler's publish is refused (`Closed`, with the message):
    /// nothing would deliver it.
    pub(super) fn finish(&mut self, drained: bool) {
        let actors_stopped = self.actors_stopped;
        let Self {
            shared,
            inputs,
            names,
            actors,
            wal,
            ..
        } = self;
        let inbox = &shared.inboxes[actors.id.0];
        if let Some(wal) = wal.as_mut() {
            // Sync and checkpoint, and confirm what is logged, before the leftovers
            // below are popped (and dropped). Batches still waiting for their sync
            // (pipelined commit) are logged: they are handled first.
            let status = shared.log_status(actors.id.0);
            wal.flush_pipeline(status, |env, fate| actors.deliver(names, env, fate));
            wal.close(status, drained);
            if wal.confirmable() {
                confirm_durable(inputs, inbox);
            }
            wal.mark_closed(status);
        }
        let ring = &inbox.ring;
        inputs.ring.close(ring);
        let mut left = 0u64;
        // Each message left is dropped here, its `Drop` guarded (user code must not stop
        // the shard before it has said it exited).
        let c = &mut actors.counters;
        inputs.ring.drain_closed(ring, |item| match item {
            Item::Msg(env) => {
                left += 1;
                drop_counted(c, env);
            }
            // A lane registered too late to be served: its messages were accepted.
            Item::Control(Control::AddLane(mut lane)) => {
                lane.close();
                while lane.pop_batch(usize::MAX, |env| {
                    left += 1;
                    drop_counted(c, env);
                }) > 0
                {}
            }
            // (Un)subscribe and flush requests: dropping the ack answers `Closed`. A subscriber
            // that was never installed is dropped with it: its actor's `Drop` guarded.
            Item::Control(Control::Subscribe { mut sub, .. }) => sub.retire(c),
            // A pattern never installed: its factory's `Drop` (if this was the last
            // share) guarded too.
            Item::Control(Control::SubscribePattern { sub, .. }) => drop_counted(c, sub),
            Item::Control(_) => {}
        });
        for lane in inputs.lanes.iter_mut().chain(inputs.peers.iter_mut()) {
            lane.close();
            while lane.pop_batch(usize::MAX, |env| {
                left += 1;
                drop_counted(c, env);
            }) > 0
            {}
        }
        for env in actors.out.local.drain(..) {
            left += 1;
            drop_counted(c, env);
        }
        // What waits in the overflow queues, dropped together: a panic there is counted
        // once and the rest of those queues is still dropped by the unwinding.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| actors.out.discard())) {
            Ok(n) => left += n,
            Err(_) => actors.counters.panicked(PanicSite::Drop),
        }
        actors.out.close();
        actors.counters.dropped += left;
        if left > 0 {
            report_dropped(left);
        }
        if !actors_stopped {
            actors.stop_all(names);
        }
        actors.retire_all();
        let c = &mut actors.counters;
        c.depth = 0;
        c.overflow_depth = 0;
        c.overflow_peak = actors.out.overflow_peak as u64;
        c.overflow_refused = actors.out.overflow_refused;
        shared.counters[actors.id.0].publish(&actors.counters);
        self.metrics
            .flush(&actors.counters, wal.as_ref().map(Wal::log));
        shared.inboxes[actors.id.0].flags.shard_exited();
    }
}

/// The `tracing` event of a stop that dropped accepted messages; out of line, off the
/// shard loop's code.
#[cold]
#[inline(never)]
fn report_dropped(left: u64) {
    tracing::warn!(
        dropped = left,
        "shard stopped before its drain finished; undelivered messages dropped and counted"
    );
}
