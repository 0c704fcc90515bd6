//! The logged pass of a persistent shard: drain into the write-ahead batch, write and
//! commit it (group commit, or pipelined on the log's sync thread), run the handlers,
//! confirm durable publishes, checkpoint; and the replay before the first pass.

use super::inputs::confirm_durable;
use super::*;

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
        let codec = wal.codec();
        let mut replayed = 0u64;
        for rec in recovered.replay()? {
            let rec = rec?;
            let decode_error = |source| Error::Decode {
                path: wal.dir().to_path_buf(),
                seq: rec.seq,
                source,
            };
            let Some(key) = shared.topics.router.key(&rec.topic) else {
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
            let msg = (codec.decode)(&rec.payload).map_err(decode_error)?;
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

    /// [`pass`](Self::pass) for a persistent bus: drains every input into the
    /// write-ahead batch, writes it to the log (one append, one commit: group commit),
    /// then runs the handlers; confirms durable publishes; checkpoints when due.
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
        if wal.pipelined() {
            return pass_pipelined(shared, inputs, names, actors, *phase, wal);
        }
        let closing = *phase == Phase::Closing;
        let id = actors.id.0;
        let inbox = &shared.inboxes[id];
        let status = shared.log_status(id);
        let (did, local) = drain_logged(shared, inputs, names, actors, closing, wal);
        // Confirm durable publishers as soon as the batch is committed, before the
        // handlers run: a slow handler must not hold back acknowledgements.
        wal.commit_batch(status, &names.keys);
        if wal.confirmable() {
            confirm_durable(inputs, inbox);
        }
        wal.write(status, &names.keys, |env, fate| {
            actors.deliver(names, env, fate)
        });
        note_onward(wal, &actors.out);
        wal.tick(status);
        if wal.confirmable() {
            confirm_durable(inputs, inbox);
        }
        close_if_poisoned(wal, inputs, inbox);
        let (sent, dropped) = actors.out.flush_overflow();
        actors.counters.dropped += dropped as u64;
        did + local + sent
    }
}

/// [`Shard::pass_logged`] under the pipelined commit (`FsyncPolicy::Batch` with the log's
/// sync thread): drains every input into the write-ahead batch, appends it and asks for
/// its sync, then runs the handlers of every earlier batch whose sync has finished and
/// confirms the durable publishers of the inputs whose popped values are all synced. The
/// handlers of a batch therefore still run only after its sync (write-ahead), while the
/// next batch is drained and written during it.
pub(super) fn pass_pipelined<T: Send + 'static>(
    shared: &Arc<Shared<T>>,
    inputs: &mut Inputs<T>,
    names: &mut Names,
    actors: &mut Actors<T>,
    phase: Phase,
    wal: &mut Wal<T>,
) -> usize {
    let closing = phase == Phase::Closing;
    let id = actors.id.0;
    let inbox = &shared.inboxes[id];
    let status = shared.log_status(id);
    let (did, local) = drain_logged(shared, inputs, names, actors, closing, wal);
    let ring_head = inputs.ring.head();
    let delivered = wal.pipeline(status, ring_head, &names.keys, |env, fate| {
        actors.deliver(names, env, fate)
    });
    confirm_pipelined(inputs, inbox, wal);
    note_onward(wal, &actors.out);
    wal.tick(status);
    close_if_poisoned(wal, inputs, inbox);
    let (sent, dropped) = actors.out.flush_overflow();
    actors.counters.dropped += dropped as u64;
    // Delivered messages count as work: the shard never idles (or reports itself idle
    // while closing) with batches waiting for their sync; `pipeline` waits for them when
    // nothing new was drained.
    did + local + sent + delivered
}

/// After a pass of a persistent shard whose log just failed: stops accepting (later
/// publishes get `Closed` with their message back).
pub(super) fn close_if_poisoned<T>(
    wal: &mut Wal<T>,
    inputs: &mut Inputs<T>,
    inbox: &crate::inbox::Inbox<T>,
) {
    if std::mem::take(&mut wal.just_poisoned) {
        inputs.ring.close(&inbox.ring);
        for lane in &mut inputs.lanes {
            lane.close();
        }
    }
}

/// A persistent shard's drain: every input, in pass order, into the write-ahead batch
/// (learning the names of new topics). A control message in the shared ring first writes
/// and delivers what came before it. Notes in `lane_tickets`/`peer_tickets` the
/// pipelined-commit ticket of the batch each input was last popped into (used by
/// `confirm_pipelined`; harmless otherwise). Returns the items moved from the inputs and
/// the local messages taken.
pub(super) fn drain_logged<T: Send + 'static>(
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
                wal.batch.push(env);
            }
            Item::Control(c) => {
                // Keep the ring's order: what came before the control is handled first
                // (`write` waits for the pipeline and syncs the batch here).
                wal.write(status, &names.keys, |env, fate| {
                    actors.deliver(names, env, fate);
                });
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
        let n = inputs.lanes[i].pop_batch(LOG_BATCH, |env| {
            names.learn(env.topic, topics);
            wal.batch.push(env);
        });
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
        let n = peer.pop_batch(LOG_BATCH, |env| {
            names.learn(env.topic, topics);
            wal.batch.push(env);
        });
        did += n;
        if n > 0 {
            *t = ticket;
        }
    }
    // Only what is queued now: handlers may queue more for the next pass.
    let local = actors.out.local.len().min(LOG_BATCH);
    for env in actors.out.local.drain(..local) {
        names.learn(env.topic, topics);
        wal.batch.push(env);
    }
    wal.add_local(local as u64);
    (did, local)
}

/// Pipelined commit: declares durable, for `publish_durable` waiters, the shared ring up
/// to the last synced batch and every lane whose popped values are all in synced batches.
pub(super) fn confirm_pipelined<T>(
    inputs: &mut Inputs<T>,
    inbox: &crate::inbox::Inbox<T>,
    wal: &mut Wal<T>,
) {
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
