//! Checkpoint bookkeeping: which handled records are safe to checkpoint (everything their
//! handlers published onward is durable where it went), when to write a checkpoint, and
//! retention after it.

use super::*;

impl<T> Wal<T> {
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
    pub(super) fn checkpoint(&mut self, status: &LogStatus, now: bool) {
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
    pub(super) fn retain(&mut self, status: &LogStatus) {
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
}
