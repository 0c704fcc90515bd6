//! A persistent shard's write-ahead state: the batch it drained, its encoding, the log,
//! and the checkpoint bookkeeping.
//!
//! The shard loop (`shard.rs`) drains its inputs into [`Wal::batch`], calls
//! [`Wal::write`] (encode every message into one reused buffer, append the whole batch to
//! the log in one write, commit per the fsync policy: one `sync_data` per batch under
//! `Batch`, group commit), and only then hands the messages to the handlers, so a handler
//! never sees a message that is not in the log. Nothing here allocates in steady state:
//! the batch, the payload buffer and the span list keep their capacity.
//!
//! Each log has a background sync thread (`log/syncer.rs`) that writes checkpoints (after
//! syncing the log when needed), so a checkpoint never stalls the shard. Under
//! `FsyncPolicy::Batch` it also syncs the batches: the **pipelined commit**
//! ([`Wal::pipeline`]). The shard appends batch k, asks the thread for a sync, and goes on
//! draining, encoding and appending batch k+1 while batch k is being synced; batch k's
//! handlers run (and its durable publishers are confirmed) only once its sync has returned,
//! so the write-ahead rule holds as before. At most [`MAX_PENDING`] batches wait for their
//! sync; a sync covers every batch appended before it started (group commit across passes).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::codec::CodecFns;
use crate::inbox::{Envelope, LogStatus};
use crate::log::{FsyncPolicy, LogError, RecordRef, RetentionLimit, Seq, ShardLog};
use crate::route::TopicKey;

/// Bytes of a record besides its topic and payload (frame header and fixed fields).
const RECORD_OVERHEAD: usize = crate::log::MIN_RECORD_LEN;
/// A span marking a message whose record would exceed the maximum record size.
const TOO_LARGE: (usize, usize) = (usize::MAX, usize::MAX);
/// Pipelined commit: batches appended and waiting for their sync at most; the shard waits
/// for the oldest before it drains more (so the inbox, not this queue, holds the backlog).
pub(crate) const MAX_PENDING: usize = 4;

/// A batch's messages and their payload spans.
type Buffers<T> = (Vec<Envelope<T>>, Vec<(usize, usize)>);

/// A batch appended to the log whose sync has not been seen finished yet.
struct Pending<T> {
    /// The batch's ticket (see [`Wal::next_ticket`]).
    ticket: u64,
    /// The log's sync ticket to wait for; `None` if the batch appended no record.
    sync: Option<u64>,
    batch: Vec<Envelope<T>>,
    spans: Vec<(usize, usize)>,
    /// The batch's last record.
    last: Option<Seq>,
    /// The shared ring's consumer position right after the batch was drained.
    ring_head: u64,
    /// Local messages (the shard's own publishes) in the batch.
    local: u64,
}

/// How a drained message fared in [`Wal::write`].
pub(crate) enum Fate<'a> {
    /// In the log: hand it to the handlers.
    Logged,
    /// Not in the log, and never will be: dead-letter it with this reason.
    NotLogged(&'a str),
}

pub(crate) struct Wal<T> {
    log: ShardLog,
    codec: CodecFns<T>,
    /// Messages drained and not yet written ([`Wal::stage`]).
    batch: Vec<Envelope<T>>,
    /// The encoded payloads of `batch`, back to back.
    payloads: Vec<u8>,
    /// `payloads[a..b]` of each message of `batch`, or [`TOO_LARGE`].
    spans: Vec<(usize, usize)>,
    /// Why the log failed, once it has.
    poisoned: Option<String>,
    /// Set when the log fails; [`Wal::take_poisoned`] clears it (the shard then closes
    /// its intake).
    just_poisoned: bool,
    /// Every record up to and including this one has been handled.
    handled: Option<Seq>,
    /// Every record up to and including this one has been handled, and everything its
    /// handlers published to other shards is durable there: what a checkpoint may cover.
    /// (A message published onward lives only in memory until its shard logs it.)
    safe: Option<Seq>,
    /// Candidate safe points, oldest first: a handled sequence number and, in
    /// `point_tails`, the position of every outgoing lane just after it (`lanes` values
    /// per point; a shard's own slot holds 0).
    /// Each candidate also needs the shard's own local messages queued before it (its
    /// `local_mark`, counted by `Outbox::local_pushed`) to be logged: `local_logged`.
    points: VecDeque<(Seq, u64)>,
    point_tails: VecDeque<u64>,
    /// Local messages (a shard's publishes to its own topics) logged so far.
    local_logged: u64,
    /// Whether `batch` has been appended and committed but not yet delivered.
    committed: bool,
    /// The last checkpoint written.
    checkpointed: Option<Seq>,
    last_checkpoint: Instant,
    checkpoint_records: u64,
    checkpoint_interval: Duration,
    retention: RetentionLimit,
    /// The checkpoint retention last ran for.
    retained_at: Option<Seq>,
    /// Pipelined commit (`Batch` with a sync thread): batches waiting for their sync.
    pipelined: bool,
    pending: VecDeque<Pending<T>>,
    /// Emptied batch and span vectors, kept for their capacity.
    spare: Vec<Buffers<T>>,
    /// The last batch ticket handed out, and the last whose batch is synced and delivered.
    tickets: u64,
    done: u64,
    /// Pipelined: local messages in `batch`, counted as logged once it is synced.
    batch_local: u64,
    /// Pipelined: the ring position of the last delivered batch, for the shard to confirm.
    ring_synced: Option<u64>,
}

/// The shard's side of a logged pass ([`Wal::pass`]): its inputs, its handlers and its
/// outgoing lanes, which the log does not own. Implemented by the shard loop.
pub(crate) trait WalShard<T> {
    /// Drains every input into the batch ([`Wal::stage`]). Returns the items taken.
    fn drain(&mut self, wal: &mut Wal<T>) -> usize;
    /// The name of every topic index drained so far.
    fn names(&self) -> &[TopicKey];
    /// The shared ring's consumer position now.
    fn ring_head(&self) -> u64;
    /// Hands a drained message to the handlers if it is in the log, else to the
    /// dead-letter handler.
    fn deliver(&mut self, env: Envelope<T>, fate: Fate<'_>);
    /// Declares everything popped from the inputs so far durable, for durable publishers.
    fn confirm_all(&mut self);
    /// Pipelined commit: declares durable what the finished syncs cover
    /// ([`Wal::take_ring_synced`], [`Wal::done_ticket`]).
    fn confirm_synced(&mut self, wal: &mut Wal<T>);
    /// Checkpoint bookkeeping for what handlers published onward
    /// ([`Wal::note_safe_point`], [`Wal::advance_safe`]).
    fn note_onward(&self, wal: &mut Wal<T>);
    /// The log just failed: stop accepting (later publishes get `Closed`).
    fn close_intake(&mut self);
}

/// What the builder gives each persistent shard.
pub(crate) struct WalConfig {
    pub(crate) checkpoint_records: u64,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) retention: RetentionLimit,
}

impl<T> Wal<T> {
    pub(crate) fn new(mut log: ShardLog, codec: CodecFns<T>, config: WalConfig) -> Self {
        let checkpointed = log.last_checkpoint();
        let syncer = log.start_syncer();
        let pipelined = syncer && log.config().fsync == FsyncPolicy::Batch;
        Self {
            log,
            codec,
            batch: Vec::new(),
            payloads: Vec::new(),
            spans: Vec::new(),
            poisoned: None,
            just_poisoned: false,
            handled: checkpointed,
            safe: checkpointed,
            points: VecDeque::new(),
            point_tails: VecDeque::new(),
            local_logged: 0,
            committed: false,
            checkpointed,
            last_checkpoint: Instant::now(),
            checkpoint_records: config.checkpoint_records,
            checkpoint_interval: config.checkpoint_interval,
            retention: config.retention,
            retained_at: checkpointed,
            pipelined,
            pending: VecDeque::new(),
            spare: Vec::new(),
            tickets: 0,
            done: 0,
            batch_local: 0,
            ring_synced: None,
        }
    }

    /// One pass of a persistent shard, in the write-ahead order:
    ///
    /// 1. Drain every input into the batch.
    /// 2. Write the batch to the log: append and commit it (one write and, under
    ///    `Batch`, one sync: group commit); or, pipelined, append it and ask the sync
    ///    thread for its sync, then take every earlier batch whose sync has finished.
    /// 3. Confirm durable publishers as soon as their messages are committed, before the
    ///    handlers run: a slow handler must not hold back acknowledgements.
    /// 4. Run the handlers of what is in the log (dead-letter what never will be).
    /// 5. Note safe points for what the handlers published onward.
    /// 6. Sync under `Interval` when due, checkpoint and apply retention when due, and
    ///    confirm what that sync made durable.
    /// 7. If the log failed in this pass, close the shard's intake.
    ///
    /// Returns the items moved: drained, plus delivered under the pipelined commit (the
    /// shard never idles with batches waiting for their sync).
    pub(crate) fn pass(&mut self, status: &LogStatus, shard: &mut impl WalShard<T>) -> usize {
        let drained = shard.drain(self);
        let mut did = drained;
        if self.pipelined {
            let appended = self.pipeline_append(status, shard.ring_head(), shard.names());
            did += self.pipeline_deliver(status, appended, |env, fate| shard.deliver(env, fate));
            shard.confirm_synced(self);
        } else {
            self.commit_batch(status, shard.names());
            if self.confirmable() {
                shard.confirm_all();
            }
            self.deliver_batch(|env, fate| shard.deliver(env, fate));
        }
        shard.note_onward(self);
        self.tick(status);
        if !self.pipelined && self.confirmable() {
            shard.confirm_all();
        }
        if self.take_poisoned() {
            shard.close_intake();
        }
        did
    }

    /// Adds a drained message to the batch.
    #[inline]
    pub(crate) fn stage(&mut self, env: Envelope<T>) {
        self.batch.push(env);
    }

    /// Whether the log failed since the last call (the shard then closes its intake).
    pub(crate) fn take_poisoned(&mut self) -> bool {
        std::mem::take(&mut self.just_poisoned)
    }

    /// The ticket the next batch handed to [`Wal::pipeline`] gets. The shard notes it for
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
        f: impl FnMut(Envelope<T>, Fate<'_>),
    ) -> usize {
        let drained = self.pipeline_append(status, ring_head, names);
        self.pipeline_deliver(status, drained, f)
    }

    /// The first half of [`Wal::pipeline`]: appends `batch`, if any, and asks for its sync.
    /// Returns whether there was a batch.
    fn pipeline_append(&mut self, status: &LogStatus, ring_head: u64, names: &[TopicKey]) -> bool {
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
    fn pipeline_deliver(
        &mut self,
        status: &LogStatus,
        drained: bool,
        mut f: impl FnMut(Envelope<T>, Fate<'_>),
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
                p.batch
                    .drain(..)
                    .for_each(|env| f(env, Fate::NotLogged(error)));
            }
            delivered += self.batch.len();
            self.batch
                .drain(..)
                .for_each(|env| f(env, Fate::NotLogged(error)));
        }
        delivered
    }

    /// Waits for every batch of the pipelined commit and delivers it (before a control
    /// message that must see them handled, and when the shard stops).
    pub(crate) fn flush_pipeline(
        &mut self,
        status: &LogStatus,
        mut f: impl FnMut(Envelope<T>, Fate<'_>),
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
    fn deliver(&mut self, mut p: Pending<T>, f: &mut impl FnMut(Envelope<T>, Fate<'_>)) -> usize {
        let n = p.batch.len();
        for (env, span) in p.batch.drain(..).zip(p.spans.iter()) {
            if *span == TOO_LARGE {
                f(
                    env,
                    Fate::NotLogged("record exceeds the maximum record size"),
                );
            } else {
                f(env, Fate::Logged);
            }
        }
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

    pub(crate) fn codec(&self) -> CodecFns<T> {
        self.codec
    }

    pub(crate) fn dir(&self) -> &std::path::Path {
        self.log.dir()
    }

    /// Encodes, appends and commits `batch`, then calls `f` with every message, in order,
    /// and what became of it. Leaves `batch` empty. `names` holds the name of every topic
    /// index in the batch.
    pub(crate) fn write(
        &mut self,
        status: &LogStatus,
        names: &[TopicKey],
        mut f: impl FnMut(Envelope<T>, Fate<'_>),
    ) {
        if self.pipelined {
            // Keep the order: what is waiting for its sync is delivered first.
            self.flush_pipeline(status, &mut f);
        }
        self.commit_batch(status, names);
        self.deliver_batch(f);
    }

    /// The second half of [`Wal::write`], after [`Wal::commit_batch`]: calls `f` with
    /// every message of the committed batch, in order, and what became of it.
    fn deliver_batch(&mut self, mut f: impl FnMut(Envelope<T>, Fate<'_>)) {
        self.committed = false;
        if self.pipelined && self.poisoned.is_none() {
            // Synced here, with everything before it: every ticket so far is done.
            self.local_logged += std::mem::take(&mut self.batch_local);
            self.done = self.tickets;
        }
        let Self {
            batch,
            spans,
            poisoned,
            ..
        } = self;
        match poisoned {
            Some(error) => batch
                .drain(..)
                .for_each(|env| f(env, Fate::NotLogged(error))),
            None => {
                for (env, span) in batch.drain(..).zip(spans.iter()) {
                    if *span == TOO_LARGE {
                        f(
                            env,
                            Fate::NotLogged("record exceeds the maximum record size"),
                        );
                    } else {
                        f(env, Fate::Logged);
                    }
                }
            }
        }
    }

    /// Appends and commits `batch` without delivering it yet, so that durable
    /// publishers can be confirmed before the handlers run (`write` then delivers).
    pub(crate) fn commit_batch(&mut self, status: &LogStatus, names: &[TopicKey]) {
        if self.committed || self.batch.is_empty() {
            return;
        }
        self.committed = true;
        if self.poisoned.is_none() {
            if let Err(e) = self.append_and_commit(names) {
                self.poison(status, &e);
            }
        }
    }

    /// Records a candidate safe point after a pass with no message waiting in an
    /// overflow queue: `tails` are the outgoing lanes' positions now, `local_mark` the
    /// count of local messages queued so far (they are logged by a later pass).
    pub(crate) fn note_safe_point(
        &mut self,
        tails: impl ExactSizeIterator<Item = u64>,
        local_mark: u64,
    ) {
        /// Candidates kept at most; beyond, newer ones wait for a later pass.
        const MAX_POINTS: usize = 1024;
        let Some(handled) = self.handled else { return };
        let newest = self.points.back().map(|p| p.0).or(self.safe);
        if newest.is_some_and(|s| s >= handled) || self.points.len() >= MAX_POINTS {
            return;
        }
        self.points.push_back((handled, local_mark));
        self.point_tails.extend(tails);
    }

    /// Moves `safe` past every candidate whose lanes are all durable up to its tails
    /// (`durable(lane, position)`).
    pub(crate) fn advance_safe(&mut self, lanes: usize, durable: impl Fn(usize, u64) -> bool) {
        while let Some(&(seq, local_mark)) = self.points.front() {
            let all = self.local_logged >= local_mark
                && (0..lanes).all(|lane| durable(lane, self.point_tails[lane]));
            if !all {
                break;
            }
            self.safe = Some(seq);
            self.points.pop_front();
            self.point_tails.drain(..lanes);
        }
    }

    fn append_and_commit(&mut self, names: &[TopicKey]) -> Result<(), LogError> {
        let last = self.append_batch(names)?;
        self.log.commit()?;
        if last.is_some() {
            // Handled as soon as `f` returns for the whole batch: the shard dispatches
            // right after this call, before anything else.
            self.handled = last;
        }
        Ok(())
    }

    /// Encodes `batch` and appends it to the log (no commit); returns its last record.
    fn append_batch(&mut self, names: &[TopicKey]) -> Result<Option<Seq>, LogError> {
        let Self {
            log,
            codec,
            batch,
            payloads,
            spans,
            ..
        } = self;
        payloads.clear();
        spans.clear();
        let max = log.config().max_record_size as usize;
        for env in batch.iter() {
            let start = payloads.len();
            (codec.encode)(&env.msg, payloads);
            let topic = names[env.topic as usize].as_str();
            let size = RECORD_OVERHEAD + topic.len() + (payloads.len() - start);
            if size > max {
                payloads.truncate(start);
                spans.push(TOO_LARGE);
            } else {
                spans.push((start, payloads.len()));
            }
        }
        // One clock read per batch, not per message.
        let timestamp_nanos = crate::log::now_nanos();
        let payloads = &payloads[..];
        let records = batch
            .iter()
            .zip(spans.iter())
            .filter(|(_, span)| **span != TOO_LARGE)
            .map(|(env, &(a, b))| RecordRef {
                timestamp_nanos,
                topic: names[env.topic as usize].as_str(),
                payload: &payloads[a..b],
            });
        let range = log.append_iter(records)?;
        Ok((range.end > range.start).then(|| Seq(range.end.get() - 1)))
    }

    /// Whether what was appended may be confirmed to durable publishers now: synced, or,
    /// under `Never`, handed to the OS.
    pub(crate) fn confirmable(&self) -> bool {
        self.poisoned.is_none()
            && (self.log.is_synced() || self.log.config().fsync == FsyncPolicy::Never)
    }

    /// Called on every pass: syncs under `Interval` when due, and writes the checkpoint
    /// (then applies retention) when due.
    pub(crate) fn tick(&mut self, status: &LogStatus) {
        if self.poisoned.is_some() {
            return;
        }
        // Pipelined, batches are synced by the sync thread, never here.
        let commit = if self.pipelined {
            Ok(())
        } else {
            self.log.commit()
        };
        // Takes note of a checkpoint the sync thread has written, then retention.
        if let Err(e) = commit.and_then(|()| self.log.poll_synced(None)) {
            self.poison(status, &e);
            return;
        }
        self.retain(status);
        let Some(safe) = self.safe else {
            return;
        };
        let since = match self.checkpointed {
            Some(c) if c >= safe => return,
            Some(c) => safe.get() - c.get(),
            None => safe.get() + 1,
        };
        if since >= self.checkpoint_records
            || self.last_checkpoint.elapsed() >= self.checkpoint_interval
        {
            self.checkpoint(status, false);
        }
    }

    /// Writes a checkpoint at `safe`: on the sync thread (`now == false`; it syncs the log
    /// first if needed, and retention follows once it is written), or here and now.
    fn checkpoint(&mut self, status: &LogStatus, now: bool) {
        let Some(safe) = self.safe else {
            return;
        };
        if self.checkpointed.is_some_and(|c| c >= safe) {
            return;
        }
        let result = if now {
            self.log.checkpoint(safe)
        } else {
            self.log.checkpoint_async(safe)
        };
        match result {
            Ok(()) => {
                self.checkpointed = Some(safe);
                self.last_checkpoint = Instant::now();
                self.retain(status);
            }
            Err(e) => self.poison(status, &e),
        }
    }

    /// Deletes old segments per the retention limit once a newer checkpoint is durable.
    fn retain(&mut self, status: &LogStatus) {
        let durable = self.log.last_checkpoint();
        if durable.is_none() || durable == self.retained_at {
            return;
        }
        self.retained_at = durable;
        if let Some(c) = durable {
            if let Err(e) = self.log.retain(c, self.retention) {
                self.poison(status, &e);
            }
        }
    }

    /// When the shard must wake up by itself: an `Interval` sync or a timed checkpoint.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.poisoned.is_some() {
            return None;
        }
        let sync = self.log.sync_due_at();
        let checkpoint = match (self.safe, self.checkpointed) {
            (Some(h), Some(c)) if h <= c => None,
            (None, _) => None,
            _ => Some(self.last_checkpoint + self.checkpoint_interval),
        };
        match (sync, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Replay bookkeeping: every handler has finished `seq`.
    pub(crate) fn replayed(&mut self, seq: Seq) {
        self.handled = Some(seq);
    }

    /// After replay: checkpoint at once, so a crash right after start does not replay
    /// the same records again.
    pub(crate) fn checkpoint_now(&mut self, status: &LogStatus) {
        if self.poisoned.is_none() {
            self.checkpoint(status, true);
        }
    }

    /// Clean shutdown: syncs and writes the final checkpoint.
    /// After a full drain (`drained`), every message published onward was handled by
    /// its shard, which logged it first, so the checkpoint may cover everything handled.
    /// After a deadline, only what is known safe.
    pub(crate) fn close(&mut self, status: &LogStatus, drained: bool) {
        if drained {
            self.safe = self.handled;
            self.points.clear();
            self.point_tails.clear();
        }
        if self.poisoned.is_none() {
            if let Err(e) = self.log.sync() {
                self.poison(status, &e);
            } else {
                self.checkpoint(status, true);
            }
        }
    }

    /// The shard stops: durable waiters still waiting get `Unconfirmed`.
    pub(crate) fn mark_closed(&self, status: &LogStatus) {
        if self.poisoned.is_none() {
            // After the last watermark store, so a waiter that sees it sees them.
            status.closed();
        }
    }

    fn poison(&mut self, status: &LogStatus, error: &LogError) {
        let text = error.to_string();
        tracing::error!(dir = %self.log.dir().display(), error = %text, "shard log failed; the shard stops accepting messages");
        // After the last watermark store, so a waiter that sees it sees them.
        status.poisoned(text.clone());
        self.poisoned = Some(text);
        self.just_poisoned = true;
    }
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
