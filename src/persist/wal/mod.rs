//! A persistent shard's write-ahead state: the batch it drained, its encoding, the log and
//! the checkpoint bookkeeping. [`Wal::pass`] owns the order of a logged pass: drain, write
//! (one append and one commit per batch: group commit), confirm durable publishers, run
//! the handlers, checkpoint. A handler never sees a message that is not in the log, and
//! nothing here allocates in steady state (the batch, payload and span buffers keep their
//! capacity).
//!
//! - `pipeline.rs`: the pipelined commit under `FsyncPolicy::Batch`, where the log's sync
//!   thread syncs one batch while the shard drains and appends the next.
//! - `checkpoint.rs`: safe points, checkpoints (written on the sync thread) and retention.

use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

use crate::codec::{CodecFns, EncodeError};
use crate::inbox::{Envelope, LogStatus};
use crate::log::{DirLock, FsyncPolicy, LogError, RetentionLimit, Seq, ShardLog};
use crate::route::TopicKey;
use crate::supervise::Guarded;
use crate::sync::plain::Arc;

mod checkpoint;
mod encode;
mod pipeline;

use pipeline::{Buffers, Pending};

/// A span marking a message whose record of `size` bytes would exceed the maximum record
/// size (`size` is never 0).
const fn too_large(size: usize) -> (usize, usize) {
    (usize::MAX, size)
}
/// A span marking a message that its codec refused on the shard thread (its error is the
/// batch's next in `encode_errors`). The publishing thread checks a codec that can fail
/// first, so only a codec that is not deterministic gets here.
const NOT_ENCODED: (usize, usize) = (usize::MAX, 0);

/// How a drained message fared in [`Wal::write`].
pub(crate) enum Fate<'a> {
    /// In the log: hand it to the handlers.
    Logged,
    /// Not in the log, and never will be: dead-letter it with this reason.
    NotLogged(&'a LogError),
    /// Not in the log: its record of `size` bytes would exceed the maximum record size
    /// `max`. Dead-letter it (with a [`LogError::RecordTooLarge`]).
    TooLarge {
        /// The record's size.
        size: u64,
        /// The maximum record size.
        max: u32,
    },
    /// Not in the log: its codec refused it on the shard thread. Dead-letter it.
    NotEncoded(&'a EncodeError),
    /// Not in the log: its codec's `encode` panicked on the shard thread (caught; the
    /// panic's text). Count the panic and dead-letter the message.
    EncodePanicked(&'a str),
}

/// Why a message of a batch was not encoded on the shard thread.
pub(crate) enum Unencoded {
    /// The codec returned this error.
    Refused(EncodeError),
    /// The codec panicked with this text.
    Panicked(String),
}

/// What became of the message whose payload is `span` in a written batch; `errors` yields
/// the batch's encode errors in order.
fn fate<'a>(
    span: (usize, usize),
    errors: &mut std::slice::Iter<'a, Unencoded>,
    max: u32,
) -> Fate<'a> {
    /// Only if `append_batch` broke its rule of one error per `NOT_ENCODED` span.
    static MISSING: EncodeError = EncodeError::fixed("the message did not encode");
    match span {
        (usize::MAX, size) if size != 0 => Fate::TooLarge {
            size: size as u64,
            max,
        },
        // One error per `NOT_ENCODED` span, pushed together by `append_batch`.
        NOT_ENCODED => match errors.next() {
            Some(Unencoded::Refused(e)) => Fate::NotEncoded(e),
            Some(Unencoded::Panicked(text)) => Fate::EncodePanicked(text),
            None => Fate::NotEncoded(&MISSING),
        },
        _ => Fate::Logged,
    }
}

/// A drained message handed over where it lies in the write-ahead batch's buffer, with the
/// duty to end it: [`take`](Self::take) moves it out, [`guard`](Self::guard) hands it to a
/// [`Guarded`] (the handlers then read it in place: no copy per message). Dropped unused,
/// it leaks the message rather than risk a double drop.
pub(crate) struct Staged<'a, T>(&'a mut ManuallyDrop<Envelope<T>>);

impl<'a, T> Staged<'a, T> {
    /// # Safety
    ///
    /// The message in `slot` is alive, and nothing but this `Staged` (and what it is
    /// turned into) reads, moves or drops it, then or later.
    #[inline(always)]
    unsafe fn new(slot: &'a mut ManuallyDrop<Envelope<T>>) -> Self {
        Self(slot)
    }

    /// Moves the message out.
    #[inline(always)]
    pub(crate) fn take(self) -> Envelope<T> {
        // The `Staged` alone owns the live message (`new`'s contract) and is consumed here:
        // its one move out.
        // SAFETY: by that ownership, as just said.
        unsafe { ManuallyDrop::take(self.0) }
    }

    /// Hands the message, in place, to a guard that owns its drop.
    #[inline(always)]
    pub(crate) fn guard(self) -> Guarded<'a, Envelope<T>> {
        // The `Staged` alone owns the live message (`new`'s contract) and passes that on.
        // SAFETY: by that ownership, as just said.
        unsafe { Guarded::new(self.0) }
    }
}

/// Hands every message of `batch` to `each` in order, in place, with its index; leaves
/// `batch` empty, with its capacity.
#[inline(always)]
fn hand_over<T>(batch: &mut Vec<Envelope<T>>, mut each: impl FnMut(usize, Staged<'_, T>)) {
    let len = batch.len();
    // The batch forgets its messages, which stay in its buffer and now belong to the loop
    // below (if it unwinds, a shard bug, the rest leak instead of being dropped twice).
    // SAFETY: 0 is within the capacity, and the batch owned `len` initialised messages.
    unsafe { batch.set_len(0) };
    // `ManuallyDrop` is `repr(transparent)`: the same layout.
    let base = batch.as_mut_ptr().cast::<ManuallyDrop<Envelope<T>>>();
    for i in 0..len {
        // `i < len`: an initialised message in the batch's buffer, which only this loop
        // owns (the batch forgot it above) and hands over once.
        // SAFETY: by that ownership, as just said.
        each(i, unsafe { Staged::new(&mut *base.add(i)) });
    }
}

/// Whether a span is a payload in the log (not a marker).
fn is_logged(span: (usize, usize)) -> bool {
    span.0 != usize::MAX
}

pub(crate) struct Wal<T> {
    log: ShardLog,
    codec: CodecFns<T>,
    /// Messages drained and not yet written ([`Wal::stage`]).
    batch: Vec<Envelope<T>>,
    /// The log records of `batch`, framed and back to back, as the log writes them.
    frames: Vec<u8>,
    /// Where each record of `frames` starts.
    starts: Vec<usize>,
    /// A payload's own buffer, for a codec that broke its contract (see `encode.rs`).
    scratch: Vec<u8>,
    /// `frames[a..b]` of each message of `batch`, or [`too_large`] or [`NOT_ENCODED`].
    spans: Vec<(usize, usize)>,
    /// Why each [`NOT_ENCODED`] span of `batch` was not encoded, in order (empty, with no
    /// capacity, unless a codec failed or panicked on the shard thread).
    encode_errors: Vec<Unencoded>,
    /// Why the log failed, once it has.
    poisoned: Option<Arc<LogError>>,
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
    /// The bus directory's lock, shared by every shard of the bus (`persist::open`). Last
    /// field, so dropped last: after `log`, whose drop joins the log's sync thread. The
    /// lock is released when the last shard's `Wal` goes, that is when no thread of the
    /// bus can write to its logs any more (a shard that outlived `shutdown_timeout`
    /// keeps it until it exits).
    _dir_lock: Arc<DirLock>,
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
    fn deliver(&mut self, env: Staged<'_, T>, fate: Fate<'_>);
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
    pub(crate) fn new(
        mut log: ShardLog,
        codec: CodecFns<T>,
        config: WalConfig,
        dir_lock: Arc<DirLock>,
        shard: usize,
    ) -> Self {
        let checkpointed = log.last_checkpoint();
        // `sb-io-{shard}`: beside its shard's `sb-shard-{shard}` (default prefix) in `top -H`.
        let syncer = log.start_syncer(format!("sb-io-{shard}"));
        let pipelined = syncer && log.config().fsync == FsyncPolicy::Batch;
        Self {
            log,
            codec,
            batch: Vec::new(),
            frames: Vec::new(),
            starts: Vec::new(),
            scratch: Vec::new(),
            spans: Vec::new(),
            encode_errors: Vec::new(),
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
            _dir_lock: dir_lock,
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
    ///    (without the pipelined commit) confirm what that sync made durable.
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

    /// Makes room in the batch for `n` more messages ([`stage_stretch`](Self::stage_stretch)
    /// needs it before it is called).
    #[inline]
    pub(crate) fn reserve_stage(&mut self, n: usize) {
        self.batch.reserve(n);
    }

    /// Moves the `len` messages at `first` to the end of the batch with one copy (a lane's
    /// stretch of slots, handed in place), and returns them.
    ///
    /// # Safety
    ///
    /// The `len` values at `first` are initialised messages the caller owns and gives up
    /// here (nothing reads, moves or drops them afterwards), and the batch has room for
    /// them: [`reserve_stage`](Self::reserve_stage) of at least `len` since the last
    /// staging.
    #[inline]
    pub(crate) unsafe fn stage_stretch(
        &mut self,
        first: *const Envelope<T>,
        len: usize,
    ) -> &[Envelope<T>] {
        let start = self.batch.len();
        debug_assert!(
            self.batch.capacity() - start >= len,
            "stage_stretch without room"
        );
        // The batch owns its spare capacity, which holds `len` more (the caller's
        // contract); the values at `first` are the caller's, given up here, and do not
        // overlap the batch's buffer.
        // SAFETY: by the ownership stated in the lines just above.
        unsafe {
            std::ptr::copy_nonoverlapping(first, self.batch.as_mut_ptr().add(start), len);
            self.batch.set_len(start + len);
        }
        &self.batch[start..]
    }

    /// Whether the log failed since the last call (the shard then closes its intake).
    pub(crate) fn take_poisoned(&mut self) -> bool {
        std::mem::take(&mut self.just_poisoned)
    }

    pub(crate) fn codec(&self) -> CodecFns<T> {
        self.codec
    }

    pub(crate) fn dir(&self) -> &std::path::Path {
        self.log.dir()
    }

    /// The shard's log, for its metrics (appended bytes, size).
    pub(crate) fn log(&self) -> &ShardLog {
        &self.log
    }

    /// The shard's log, to attach its metrics' fsync histogram.
    pub(crate) fn log_mut(&mut self) -> &mut ShardLog {
        &mut self.log
    }

    /// Encodes, appends and commits `batch`, then calls `f` with every message, in order,
    /// and what became of it. Leaves `batch` empty. `names` holds the name of every topic
    /// index in the batch.
    pub(crate) fn write(
        &mut self,
        status: &LogStatus,
        names: &[TopicKey],
        mut f: impl FnMut(Staged<'_, T>, Fate<'_>),
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
    fn deliver_batch(&mut self, mut f: impl FnMut(Staged<'_, T>, Fate<'_>)) {
        self.committed = false;
        if self.pipelined && self.poisoned.is_none() {
            // Synced here, with everything before it: every ticket so far is done.
            self.local_logged += std::mem::take(&mut self.batch_local);
            self.done = self.tickets;
        }
        let max = self.log.config().max_record_size;
        let Self {
            batch,
            spans,
            encode_errors,
            poisoned,
            ..
        } = self;
        match poisoned {
            Some(error) => hand_over(batch, |_, env| f(env, Fate::NotLogged(error))),
            None => {
                let mut errors = encode_errors.iter();
                // One span per message (`append_batch`).
                hand_over(batch, |i, env| f(env, fate(spans[i], &mut errors, max)));
            }
        }
        encode_errors.clear();
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
    /// The records are built in place (see [`encode::frame_batch`]) and the log writes
    /// them as they stand: one copy of each payload, the codec's, on its way to the file.
    fn append_batch(&mut self, names: &[TopicKey]) -> Result<Option<Seq>, LogError> {
        let Self {
            log,
            codec,
            batch,
            frames,
            starts,
            spans,
            encode_errors,
            scratch,
            ..
        } = self;
        // One clock read per batch, not per message.
        let timestamp_nanos = crate::log::now_nanos();
        let mut out = encode::Framed {
            frames: &mut *frames,
            starts: &mut *starts,
            spans,
            errors: encode_errors,
            scratch,
        };
        let batch_info = encode::BatchInfo {
            first: log.next_seq(),
            timestamp_nanos,
            max: log.config().max_record_size as usize,
        };
        encode::frame_batch(*codec, batch, names, &batch_info, &mut out);
        let range = log.append_frames(frames, starts, timestamp_nanos)?;
        Ok((range.end > range.start).then(|| Seq(range.end.get() - 1)))
    }

    /// Whether what was appended may be confirmed to durable publishers now: synced, or,
    /// under `Never`, handed to the OS.
    pub(crate) fn confirmable(&self) -> bool {
        self.poisoned.is_none()
            && (self.log.is_synced() || self.log.config().fsync == FsyncPolicy::Never)
    }

    /// The shard stops: durable waiters still waiting get `Unconfirmed`.
    pub(crate) fn mark_closed(&self, status: &LogStatus) {
        if self.poisoned.is_none() {
            // After the last watermark store, so a waiter that sees it sees them.
            status.closed();
        }
    }

    /// The log failed with `error`: keeps the error that poisoned it (the log's own copy
    /// when it has one, so that every report of the failure shares one value).
    fn poison(&mut self, status: &LogStatus, error: &LogError) {
        let cause = match (self.log.poison_cause(), error) {
            (Some(cause), _) => cause.clone(),
            (None, LogError::Poisoned { cause, .. }) => cause.clone(),
            (None, e) => Arc::new(e.duplicate()),
        };
        tracing::error!(dir = %self.log.dir().display(), error = %cause, "shard log failed; the shard stops accepting messages");
        // After the last watermark store, so a waiter that sees it sees them.
        status.poisoned(cause.clone());
        self.poisoned = Some(cause);
        self.just_poisoned = true;
    }
}

#[cfg(test)]
mod tests;
