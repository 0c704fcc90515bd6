//! The logged pass of a persistent shard: drain into the write-ahead batch, write and
//! commit it (group commit, or pipelined on the log's sync thread), run the handlers,
//! confirm durable publishes, checkpoint; and the replay before the first pass.

use super::inputs::confirm_durable;
use super::*;
use crate::persist::wal::WalShard;
use crate::stats::PanicSite;

impl<T: Send + 'static> Shard<T> {
    /// Hands every record after the checkpoint to the handlers with `replay == true`.
    pub(super) fn replay(&mut self, recovered: &Recovered) -> Result<(), Error> {
        let Self {
            shared,
            actors,
            names,
            wal,
            ..
        } = self;
        let Some(wal) = wal.as_mut() else {
            return Ok(());
        };
        let _span =
            tracing::info_span!("shardbus_replay", from = recovered.replay_from().get()).entered();
        let codec = wal.codec();
        let mut replayed = 0u64;
        for rec in recovered.replay()? {
            let rec = rec?;
            let decode_error = |source| Error::Decode {
                path: wal.dir().to_path_buf(),
                seq: rec.seq,
                source,
            };
            let Some(key) = shared.topics.router.record_key(&rec.topic) else {
                return Err(decode_error(crate::DecodeError::new(format!(
                    "invalid topic name of {} bytes",
                    rec.topic.len()
                ))));
            };
            let topic = shared.topics.intern(&key);
            if topic.shard != actors.id {
                // Recovery re-routes every record before replay (`persist::open`).
                return Err(decode_error(crate::DecodeError::new(format!(
                    "topic {:?} belongs to shard {}",
                    rec.topic, topic.shard.0
                ))));
            }
            // The codec is user code: a panic in `decode` is caught, counted and fails
            // the replay (and `build()`) like a decode error, instead of the shard.
            let decoded = std::panic::catch_unwind(|| (codec.decode)(&rec.payload));
            let msg = match decoded {
                Ok(result) => result.map_err(decode_error)?,
                Err(payload) => {
                    actors.counters.panicked(PanicSite::Decode);
                    return Err(decode_error(crate::DecodeError::new(format_args!(
                        "Codec::decode panicked: {}",
                        panic_text(&*payload)
                    ))));
                }
            };
            actors.learn_and_dispatch(
                names,
                Envelope {
                    topic: topic.index,
                    msg,
                },
                true,
            );
            wal.replayed(rec.seq);
            replayed += 1;
        }
        if replayed > 0 {
            tracing::info!(shard = actors.id.0, records = replayed, "replayed the log");
            note_onward(wal, &actors.out);
            wal.checkpoint_now(shared.log_status(actors.id.0));
        }
        Ok(())
    }

    /// [`pass`](Self::pass) for a persistent bus: [`Wal::pass`] owns the write-ahead order
    /// (drain, write, confirm, handle, checkpoint); the shard lends it its side ([`Side`]).
    pub(super) fn pass_logged(&mut self) -> usize {
        let Self {
            shared,
            inputs,
            names,
            actors,
            phase,
            wal,
            ..
        } = self;
        let Some(wal) = wal.as_mut() else {
            return 0;
        };
        let status = shared.log_status(actors.id.0);
        let mut side = Side {
            shared,
            inputs,
            names,
            actors,
            closing: *phase == Phase::Closing,
        };
        let did = wal.pass(status, &mut side);
        // What the handlers asked for on this shard's topics: before the next drain stages
        // what they published after asking.
        actors.apply_controls(names);
        let (sent, dropped) = actors.out.flush_overflow();
        actors.counters.dropped += dropped as u64;
        did + sent
    }
}

/// The shard's side of a logged pass, borrowed for one [`Wal::pass`].
struct Side<'a, T> {
    shared: &'a Shared<T>,
    inputs: &'a mut Inputs<T>,
    names: &'a mut Names,
    actors: &'a mut Actors<T>,
    closing: bool,
}

impl<T: Send + 'static> WalShard<T> for Side<'_, T> {
    fn drain(&mut self, wal: &mut Wal<T>) -> usize {
        let (did, local) = drain_logged(
            self.shared,
            self.inputs,
            self.names,
            self.actors,
            self.closing,
            wal,
        );
        // Topics first seen in this drain meet the patterns before the batch is
        // delivered: once per pass, not per message.
        self.actors.catch_up_patterns(self.names);
        did + local
    }

    fn names(&self) -> &[TopicKey] {
        &self.names.keys
    }

    fn ring_head(&self) -> u64 {
        self.inputs.ring.head()
    }

    fn deliver(&mut self, env: Staged<'_, T>, fate: Fate<'_>) {
        self.actors.deliver(self.names, env, fate);
    }

    fn confirm_all(&mut self) {
        confirm_durable(self.inputs, &self.shared.inboxes[self.actors.id.0]);
    }

    fn confirm_synced(&mut self, wal: &mut Wal<T>) {
        confirm_pipelined(self.inputs, &self.shared.inboxes[self.actors.id.0], wal);
    }

    fn note_onward(&self, wal: &mut Wal<T>) {
        note_onward(wal, &self.actors.out);
    }

    fn close_intake(&mut self) {
        let ring = &self.shared.inboxes[self.actors.id.0].ring;
        self.inputs.close_external(ring);
    }
}

/// A persistent shard's drain: every input, in pass order, into the write-ahead batch
/// (learning the names of new topics). A control message in the shared ring first writes
/// and delivers what came before it. Notes in `lane_tickets`/`peer_tickets` the
/// pipelined-commit ticket of the batch each input was last popped into (used by
/// `confirm_pipelined`; harmless otherwise). Returns the items moved from the inputs and
/// the local messages taken.
fn drain_logged<T: Send + 'static>(
    shared: &Shared<T>,
    inputs: &mut Inputs<T>,
    names: &mut Names,
    actors: &mut Actors<T>,
    closing: bool,
    wal: &mut Wal<T>,
) -> (usize, usize) {
    let inbox = &shared.inboxes[actors.id.0];
    let status = shared.log_status(actors.id.0);
    let topics = &shared.topics;
    let mut did = inputs
        .ring
        .pop_batch(&inbox.ring, LOG_BATCH, |item| match item {
            Item::Msg(env) => {
                names.learn(env.topic, topics);
                wal.stage(env);
            }
            Item::Control(c) => {
                if c.is_lane_barrier() {
                    // The lanes up to their tails as read now, into the same batch (see
                    // `Control::is_lane_barrier`); `write` below handles them first.
                    for lane in inputs.lanes.iter_mut() {
                        lane.pop_batch(usize::MAX, |env| {
                            names.learn(env.topic, topics);
                            wal.stage(env);
                        });
                    }
                }
                // Keep the ring's order: what came before the control is handled first
                // (`write` waits for the pipeline and syncs the batch here).
                // Names staged since the last match meet the patterns before delivery.
                actors.catch_up_patterns(names);
                wal.write(status, &names.keys, |env, fate| {
                    actors.deliver(names, env, fate);
                });
                // The handlers just run may have asked for changes (and published after
                // asking: the local drain below stages that in this pass).
                actors.apply_controls(names);
                if let Some(mut lane) = actors.control(names, c) {
                    if closing {
                        lane.close();
                    }
                    inputs.lanes.push(lane);
                }
            }
        });
    // Read after the ring: a control above may have synced and delivered everything.
    let ticket = wal.next_ticket();
    inputs.lane_tickets.resize(inputs.lanes.len(), 0);
    let mut i = 0;
    while i < inputs.lanes.len() {
        let n = stage_lane(&mut inputs.lanes[i], names, topics, wal);
        did += n;
        if n > 0 {
            inputs.lane_tickets[i] = ticket;
        }
        if n == 0 && inputs.lanes[i].is_finished() {
            inputs.lanes.swap_remove(i);
            inputs.lane_tickets.swap_remove(i);
        } else {
            i += 1;
        }
    }
    inputs.peer_tickets.resize(inputs.peers.len(), 0);
    for (peer, t) in inputs.peers.iter_mut().zip(inputs.peer_tickets.iter_mut()) {
        let n = stage_lane(peer, names, topics, wal);
        did += n;
        if n > 0 {
            *t = ticket;
        }
    }
    // Only what is queued now: handlers may queue more for the next pass.
    let local = actors.out.local.len().min(LOG_BATCH);
    for env in actors.out.local.drain(..local) {
        names.learn(env.topic, topics);
        wal.stage(env);
    }
    wal.add_local(local as u64);
    (did, local)
}

/// Moves up to [`LOG_BATCH`] messages of a lane (or a peer shard's lane) into the
/// write-ahead batch, a stretch of slots at a time with one copy each (not each message
/// through the stack), and learns their topics' names. Returns how many.
#[inline]
fn stage_lane<T: Send + 'static>(
    lane: &mut crate::ring::spsc::Consumer<Envelope<T>>,
    names: &mut Names,
    topics: &crate::intern::Topics,
    wal: &mut Wal<T>,
) -> usize {
    wal.reserve_stage(LOG_BATCH);
    let taken = std::cell::Cell::new(0);
    let stage = |first: *mut Envelope<T>, len: usize| {
        // The stretch's values are the drain's to take (the ring's contract), and the
        // batch has room for them (at most `LOG_BATCH` in all, reserved above).
        // SAFETY: by that ownership and room, as just said.
        let staged = unsafe { wal.stage_stretch(first, len) };
        taken.set(taken.get() + len);
        for env in staged {
            names.learn(env.topic, topics);
        }
    };
    // `stage` takes every value of each stretch it is handed, all at once, and counts
    // them; it cannot unwind before it has (the batch has room, and the copy does not
    // panic), so no value is ever left handed on but not taken.
    // SAFETY: the ring's contract, kept as just said.
    unsafe { lane.pop_batch_in_place(LOG_BATCH, &taken, stage) }
}

/// Pipelined commit: declares durable, for `publish_durable` waiters, the shared ring up
/// to the last synced batch and every lane whose popped values are all in synced batches.
fn confirm_pipelined<T>(inputs: &mut Inputs<T>, inbox: &crate::inbox::Inbox<T>, wal: &mut Wal<T>) {
    // Nothing waiting for a sync: everything popped so far is synced (or dead-lettered
    // by a poisoned log, which confirms nothing: `wal.done_ticket` stopped).
    let synced = wal.take_ring_synced();
    let head = if wal.all_synced() {
        Some(inputs.ring.head())
    } else {
        synced
    };
    if let Some(head) = head {
        if head != inputs.ring_durable {
            inputs.ring_durable = head;
            // Release: the sync (seen finished by this thread under the sync thread's
            // mutex) happens before a waiter's Acquire load that sees it.
            inbox.durable.store(head, Ordering::Release);
        }
    }
    let done = wal.done_ticket();
    let lanes = inputs.lanes.iter_mut().zip(inputs.lane_tickets.iter());
    let peers = inputs.peers.iter_mut().zip(inputs.peer_tickets.iter());
    for (lane, &t) in lanes.chain(peers) {
        if t <= done {
            lane.publish_durable();
        }
    }
    inbox.log.wait.wake();
}

/// Checkpoint bookkeeping for messages handlers published onward: a safe point once
/// none waits in an overflow queue, and `safe` advanced past every point whose lanes
/// the receiving shards have made durable and whose local messages are logged.
pub(super) fn note_onward<T>(wal: &mut Wal<T>, out: &Outbox<T>) {
    if !out.has_overflow() {
        wal.note_safe_point(out.lane_positions(), out.local_pushed);
    }
    wal.advance_safe(out.lane_count(), |to, position| {
        out.lane_durable(to, position)
    });
}
