//! A persistent shard's write-ahead state: the batch it drained, its encoding, the log,
//! and the checkpoint bookkeeping.
//!
//! The shard loop (`shard.rs`) drains its inputs into [`Wal::batch`], calls
//! [`Wal::write`] (encode every message into one reused buffer, append the whole batch to
//! the log in one write, commit per the fsync policy: one `sync_data` per batch under
//! `Batch`, group commit), and only then hands the messages to the handlers, so a handler
//! never sees a message that is not in the log. Nothing here allocates in steady state:
//! the batch, the payload buffer and the span list keep their capacity.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::codec::CodecFns;
use crate::inbox::{Envelope, LogStatus, LOG_CLOSED, LOG_POISONED};
use crate::log::{FsyncPolicy, LogError, RecordRef, RetentionLimit, Seq, ShardLog};
use crate::route::TopicKey;
use crate::sync::Ordering;

/// Bytes of a record besides its topic and payload (frame header and fixed fields).
const RECORD_OVERHEAD: usize = 26;
/// A span marking a message whose record would exceed the maximum record size.
const TOO_LARGE: (usize, usize) = (usize::MAX, usize::MAX);

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
    /// Messages drained and not yet written.
    pub(crate) batch: Vec<Envelope<T>>,
    /// The encoded payloads of `batch`, back to back.
    payloads: Vec<u8>,
    /// `payloads[a..b]` of each message of `batch`, or [`TOO_LARGE`].
    spans: Vec<(usize, usize)>,
    /// Why the log failed, once it has.
    poisoned: Option<String>,
    /// Set when the log fails; the shard closes its intake and clears it.
    pub(crate) just_poisoned: bool,
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
    pub(crate) local_logged: u64,
    /// Whether `batch` has been appended and committed but not yet delivered.
    committed: bool,
    /// The last checkpoint written.
    checkpointed: Option<Seq>,
    last_checkpoint: Instant,
    checkpoint_records: u64,
    checkpoint_interval: Duration,
    retention: RetentionLimit,
}

/// What the builder gives each persistent shard.
pub(crate) struct WalConfig {
    pub(crate) checkpoint_records: u64,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) retention: RetentionLimit,
}

impl<T> Wal<T> {
    pub(crate) fn new(log: ShardLog, codec: CodecFns<T>, config: WalConfig) -> Self {
        let checkpointed = log.last_checkpoint();
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
        }
    }

    pub(crate) fn codec(&self) -> CodecFns<T> {
        self.codec
    }

    pub(crate) fn dir(&self) -> &std::path::Path {
        self.log.dir()
    }

    /// Encodes, appends and commits `batch`, then calls `f` with every message, in order,
    /// and what became of it. Leaves `batch` empty.
    /// `names` holds the name of every topic index in the batch.
    pub(crate) fn write(
        &mut self,
        status: &LogStatus,
        names: &[TopicKey],
        mut f: impl FnMut(Envelope<T>, Fate<'_>),
    ) {
        self.commit_batch(status, names);
        self.committed = false;
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
        log.commit()?;
        if range.end > range.start {
            // Handled as soon as `f` returns for the whole batch: the shard dispatches
            // right after this call, before anything else.
            self.handled = Some(Seq(range.end.get() - 1));
        }
        Ok(())
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
        if let Err(e) = self.log.commit() {
            self.poison(status, &e);
            return;
        }
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
            self.checkpoint(status);
        }
    }

    fn checkpoint(&mut self, status: &LogStatus) {
        let Some(safe) = self.safe else {
            return;
        };
        if self.checkpointed.is_some_and(|c| c >= safe) {
            return;
        }
        let result = self
            .log
            .checkpoint(safe)
            .and_then(|()| self.log.retain(safe, self.retention));
        match result {
            Ok(_) => {
                self.checkpointed = Some(safe);
                self.last_checkpoint = Instant::now();
            }
            Err(e) => self.poison(status, &e),
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
            self.checkpoint(status);
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
                self.checkpoint(status);
            }
        }
    }

    /// The shard stops: durable waiters still waiting get `Unconfirmed`.
    pub(crate) fn mark_closed(&self, status: &LogStatus) {
        if self.poisoned.is_none() {
            // Release: after the last watermark store, so a waiter that sees
            // `LOG_CLOSED` sees them.
            status.state.store(LOG_CLOSED, Ordering::Release);
        }
    }

    fn poison(&mut self, status: &LogStatus, error: &LogError) {
        let text = error.to_string();
        tracing::error!(dir = %self.log.dir().display(), error = %text, "shard log failed; the shard stops accepting messages");
        *status
            .error
            .lock()
            .unwrap_or_else(crate::sync::plain::PoisonError::into_inner) = Some(text.clone());
        // Release: a waiter that sees it also sees the last watermark (stored before).
        status.state.store(LOG_POISONED, Ordering::Release);
        self.poisoned = Some(text);
        self.just_poisoned = true;
    }
}
