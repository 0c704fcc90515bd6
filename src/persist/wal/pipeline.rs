//! The pipelined commit (`FsyncPolicy::Batch` with the log's sync thread): batch k is
//! synced while batch k + 1 is drained and appended; a batch's handlers run only once its
//! sync has returned. Tickets number the batches, so the shard can confirm an input's
//! durable publishers once every batch it was popped into is synced.

use super::*;

/// Pipelined commit: batches appended and waiting for their sync at most; the shard waits
/// for the oldest before it drains more (so the inbox, not this queue, holds the backlog).
pub(crate) const MAX_PENDING: usize = 4;

/// A batch's messages and their payload spans.
pub(super) type Buffers<T> = (Vec<Envelope<T>>, Vec<(usize, usize)>);

/// A batch appended to the log whose sync has not been seen finished yet.
pub(super) struct Pending<T> {
    /// The batch's ticket (see [`Wal::next_ticket`]).
    pub(super) ticket: u64,
    /// The log's sync ticket to wait for; `None` if the batch appended no record.
    pub(super) sync: Option<u64>,
    pub(super) batch: Vec<Envelope<T>>,
    pub(super) spans: Vec<(usize, usize)>,
    /// The encode errors of the batch's `NOT_ENCODED` spans, in order (usually empty).
    pub(super) encode_errors: Vec<super::Unencoded>,
    /// The batch's last record.
    pub(super) last: Option<Seq>,
    /// The shared ring's consumer position right after the batch was drained.
    pub(super) ring_head: u64,
    /// Local messages (the shard's own publishes) in the batch.
    pub(super) local: u64,
}

impl<T> Wal<T> {
    /// The ticket the next batch appended by the pipelined commit gets. The shard notes it for
    /// each input it pops from, and confirms an input's durable publishers once
    /// [`Wal::done_ticket`] reaches the last ticket it popped into.
    pub(crate) fn next_ticket(&self) -> u64 {
        self.tickets + 1
    }

    /// Every batch up to this ticket is synced and delivered.
    pub(crate) fn done_ticket(&self) -> u64 {
        self.done
    }

    /// The shared ring's position up to which everything popped is synced, once, if it
    /// moved since the last call.
    pub(crate) fn take_ring_synced(&mut self) -> Option<u64> {
        self.ring_synced.take()
    }

    /// Pipelined: no batch is waiting for its sync, and the log is not poisoned.
    pub(crate) fn all_synced(&self) -> bool {
        self.pending.is_empty() && self.batch.is_empty() && self.poisoned.is_none()
    }

    /// Counts `n` local messages just drained into `batch` (logged once `batch` is).
    pub(crate) fn add_local(&mut self, n: u64) {
        if self.pipelined {
            self.batch_local += n;
        } else {
            // Logged by the commit that follows (or the log is poisoned and nothing is safe).
            self.local_logged += n;
        }
    }

    /// The pipelined commit: appends `batch` (if any) and asks for its sync, then delivers,
    /// in order, every waiting batch whose sync has finished, calling `f` as [`Wal::write`]
    /// does. Waits for the oldest batch when [`MAX_PENDING`] are waiting, or when nothing
    /// new was drained (so the shard never idles with undelivered batches). `ring_head` is
    /// the shared ring's consumer position after draining `batch`; `names` holds the name
    /// of every topic index in it. Returns the number of messages delivered.
    pub(crate) fn pipeline(
        &mut self,
        status: &LogStatus,
        ring_head: u64,
        names: &[TopicKey],
        f: impl FnMut(Staged<'_, T>, Fate<'_>),
    ) -> usize {
        let drained = self.pipeline_append(status, ring_head, names);
        self.pipeline_deliver(status, drained, f)
    }

    /// The first half of [`Wal::pipeline`]: appends `batch`, if any, and asks for its sync.
    /// Returns whether there was a batch.
    pub(super) fn pipeline_append(
        &mut self,
        status: &LogStatus,
        ring_head: u64,
        names: &[TopicKey],
    ) -> bool {
        let drained = !self.batch.is_empty();
        if drained && self.poisoned.is_none() {
            let appended = self
                .append_batch(names)
                .and_then(|last| Ok((last, self.log.request_sync()?)));
            match appended {
                Ok((last, sync)) => {
                    self.tickets += 1;
                    let (batch, spans) = self.spare.pop().unwrap_or_default();
                    self.pending.push_back(Pending {
                        ticket: self.tickets,
                        sync,
                        batch: std::mem::replace(&mut self.batch, batch),
                        spans: std::mem::replace(&mut self.spans, spans),
                        encode_errors: std::mem::take(&mut self.encode_errors),
                        last,
                        ring_head,
                        local: std::mem::take(&mut self.batch_local),
                    });
                }
                Err(e) => self.poison(status, &e),
            }
        }
        drained
    }

    /// The second half of [`Wal::pipeline`]: delivers every waiting batch whose sync has
    /// finished (waiting for the oldest when too many wait, or when nothing new was
    /// `drained`); after a failure, dead-letters everything waiting.
    pub(super) fn pipeline_deliver(
        &mut self,
        status: &LogStatus,
        drained: bool,
        mut f: impl FnMut(Staged<'_, T>, Fate<'_>),
    ) -> usize {
        let mut delivered = 0;
        while let Some(front) = self.pending.front() {
            if self.poisoned.is_some() {
                break;
            }
            let block = self.pending.len() > MAX_PENDING || (!drained && delivered == 0);
            let wait = if block { front.sync } else { None };
            let synced = match self.log.poll_synced(wait) {
                Ok(synced) => synced,
                Err(e) => {
                    self.poison(status, &e);
                    break;
                }
            };
            if front.sync.is_some_and(|t| t > synced) {
                break;
            }
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            delivered += self.deliver(p, &mut f);
        }
        if let Some(error) = &self.poisoned {
            // Nothing waiting will be confirmed: dead-letter it, oldest first.
            for mut p in self.pending.drain(..) {
                delivered += p.batch.len();
                hand_over(&mut p.batch, |_, env| f(env, Fate::NotLogged(error)));
            }
            delivered += self.batch.len();
            hand_over(&mut self.batch, |_, env| f(env, Fate::NotLogged(error)));
        }
        delivered
    }

    /// Waits for every batch of the pipelined commit and delivers it (before a control
    /// message that must see them handled, and when the shard stops).
    pub(crate) fn flush_pipeline(
        &mut self,
        status: &LogStatus,
        mut f: impl FnMut(Staged<'_, T>, Fate<'_>),
    ) -> usize {
        let mut delivered = 0;
        while !self.pending.is_empty() {
            // Nothing new is drained (so no names are needed): `pipeline` waits for the
            // oldest each round.
            let batch = std::mem::take(&mut self.batch);
            delivered += self.pipeline(status, 0, &[], &mut f);
            self.batch = batch;
        }
        delivered
    }

    /// Hands a synced batch to `f` and takes note of what it makes handled and durable.
    pub(super) fn deliver(
        &mut self,
        mut p: Pending<T>,
        f: &mut impl FnMut(Staged<'_, T>, Fate<'_>),
    ) -> usize {
        let n = p.batch.len();
        let mut errors = p.encode_errors.iter();
        let max = self.log.config().max_record_size;
        // One span per message (`append_batch`).
        hand_over(&mut p.batch, |i, env| {
            f(env, fate(p.spans[i], &mut errors, max))
        });
        if p.last.is_some() {
            // Handled: `f` has returned for the whole batch.
            self.handled = p.last;
        }
        self.local_logged += p.local;
        self.done = p.ticket;
        self.ring_synced = Some(p.ring_head);
        p.spans.clear();
        self.spare.push((p.batch, p.spans));
        n
    }
}
