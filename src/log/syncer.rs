//! The log's background I/O thread: appends, `fdatasync` of the active segment and checkpoint
//! writes, off the shard's thread.
//!
//! One thread per shard log, started by [`super::ShardLog::start_syncer`]. The shard thread is
//! the only requester; the two meet in one mutex-protected [`State`] and one condvar. Every
//! request gets the next number from one counter (a *ticket*), and the thread handles them in
//! that order:
//!
//! - **write** ([`Syncer::post_write`], only with `async_writes`): a buffer of encoded records
//!   to append to the active segment. Once `written >= t`, its bytes are in the operating
//!   system (they survive a crash of the process).
//! - **sync** ([`Syncer::request_sync`]): once `synced >= t`, everything appended before the
//!   request (by either thread) is durable. The thread first appends every write queued so
//!   far, then calls `sync_data` once for all of them: group commit across batches.
//! - **checkpoint** ([`Syncer::request_checkpoint`]): writes the checkpoint file once a given
//!   ticket is synced (0: at once, the records it covers are already durable). A newer request
//!   replaces one not yet started.
//! - **errors**: the first failed append, sync or checkpoint write is kept and stops all further
//!   work (an fsync error is never retried); the shard sees it at its next poll and poisons the
//!   log.
//!
//! When the shard rolls to a new segment it waits for the queued writes, syncs the full segment
//! itself, and hands the thread a handle of the new one ([`Syncer::set_file`]).

use std::collections::VecDeque;
use std::path::PathBuf;

use super::checkpoint::store_checkpoint;
use super::record::Seq;
use super::storage::{Storage, StorageFile};
use crate::error::{IoOp, LogError};
use crate::sync::plain::{spawn_named, Arc, Condvar, JoinHandle, Mutex, MutexGuard, PoisonError};

/// What the thread has finished, as seen by a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Every request up to this ticket is handled (its writes are in the OS).
    pub(crate) written: u64,
    /// Everything appended before the request with this ticket is durable.
    pub(crate) synced: u64,
    /// A checkpoint the thread wrote since the last poll.
    pub(crate) checkpoint: Option<Seq>,
}

/// The shard's side of the I/O thread. Dropping it lets the thread append what is queued,
/// then stops and joins it.
#[derive(Debug)]
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The last ticket handed out (only the shard thread writes it).
    ticket: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled on every change: a request (wakes the thread) and every finished piece of
    /// work (wakes a shard waiting for it). Both sides re-check their condition in a loop.
    changed: Condvar,
}

/// Written by the shard: `file` (on a roll), `file_path`, `queue` (push), `sync_requested`,
/// `checkpoint`, `stop`, `free` (pop). Written by the thread: `queue` (pop), `free` (push),
/// `written`, `synced`, `checkpoint_done`, `busy`, `error`; it also takes `file` out while it
/// uses it and puts it back unless the shard replaced it meanwhile.
#[derive(Debug)]
struct State {
    file: Option<Box<dyn StorageFile>>,
    file_path: PathBuf,
    /// Requests not yet handled, in ticket order: a buffer to append (or none: a sync).
    queue: VecDeque<(u64, Vec<u8>)>,
    /// Appended buffers, emptied, for the shard to reuse.
    free: Vec<Vec<u8>>,
    written: u64,
    sync_requested: u64,
    synced: u64,
    /// A checkpoint to write and the ticket that must be synced first.
    checkpoint: Option<(Seq, u64)>,
    checkpoint_done: Option<Seq>,
    busy: bool,
    error: Option<LogError>,
    stop: bool,
}

impl State {
    fn sync_due(&self) -> bool {
        self.queue.is_empty() && self.sync_requested > self.synced
    }

    fn checkpoint_due(&self) -> bool {
        self.queue.is_empty()
            && self
                .checkpoint
                .is_some_and(|(_, after)| after <= self.synced)
    }

    fn idle(&self) -> bool {
        !self.busy
            && self.queue.is_empty()
            && self.sync_requested <= self.synced
            && self.checkpoint.is_none()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere leaves it consistent enough to report errors.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a waiting shard waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The request's writes are in the OS.
    Written,
    /// Everything before the request is durable.
    Synced,
}

impl Syncer {
    /// Starts the thread with a handle of the active segment `path`.
    pub(crate) fn start(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        file: Box<dyn StorageFile>,
        path: PathBuf,
    ) -> Result<Self, LogError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                file: Some(file),
                file_path: path,
                queue: VecDeque::new(),
                free: Vec::new(),
                written: 0,
                sync_requested: 0,
                synced: 0,
                checkpoint: None,
                checkpoint_done: None,
                busy: false,
                error: None,
                stop: false,
            }),
            changed: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread_dir = dir.clone();
        let thread = spawn_named("shardbus-io".to_owned(), move || {
            run(&thread_shared, &*storage, &thread_dir);
        })
        .map_err(|e| LogError::io(IoOp::Open, &dir, e))?;
        Ok(Self {
            shared,
            thread: Some(thread),
            ticket: 0,
        })
    }

    /// The active segment changed. The caller has waited for every queued write
    /// ([`Syncer::wait`]) and synced the previous segment itself.
    pub(crate) fn set_file(&mut self, file: Box<dyn StorageFile>, path: PathBuf) {
        let mut s = self.shared.lock();
        s.file = Some(file);
        s.file_path = path;
    }

    /// Queues `buf`'s bytes for appending to the active segment; `buf` comes back empty (a
    /// buffer the thread has finished with, when there is one). Returns the ticket.
    pub(crate) fn post_write(&mut self, buf: &mut Vec<u8>) -> u64 {
        self.ticket += 1;
        let mut s = self.shared.lock();
        let spare = s.free.pop().unwrap_or_default();
        s.queue
            .push_back((self.ticket, std::mem::replace(buf, spare)));
        drop(s);
        self.shared.changed.notify_all();
        self.ticket
    }

    /// Asks for everything appended so far (queued writes included) to be synced; returns
    /// the ticket to wait for.
    pub(crate) fn request_sync(&mut self) -> u64 {
        self.ticket += 1;
        let mut s = self.shared.lock();
        s.queue.push_back((self.ticket, Vec::new()));
        s.sync_requested = self.ticket;
        drop(s);
        self.shared.changed.notify_all();
        self.ticket
    }

    /// Asks for the checkpoint `seq` to be written once ticket `after` is synced.
    pub(crate) fn request_checkpoint(&mut self, seq: Seq, after: u64) {
        self.shared.lock().checkpoint = Some((seq, after));
        self.shared.changed.notify_all();
    }

    /// What is finished, without waiting; the first error the thread met, once.
    pub(crate) fn poll(&mut self) -> Result<Progress, LogError> {
        let mut s = self.shared.lock();
        Self::progress(&mut s)
    }

    /// Waits until ticket `ticket` reached `stage` (or the thread failed).
    pub(crate) fn wait(&mut self, stage: Stage, ticket: u64) -> Result<Progress, LogError> {
        let mut s = self.shared.lock();
        loop {
            let reached = match stage {
                Stage::Written => s.written,
                Stage::Synced => s.synced,
            };
            if reached >= ticket || s.error.is_some() {
                break;
            }
            s = self.shared.wait(s);
        }
        Self::progress(&mut s)
    }

    /// Waits until every request is finished (or the thread failed).
    pub(crate) fn wait_idle(&mut self) -> Result<Progress, LogError> {
        let mut s = self.shared.lock();
        while !s.idle() && s.error.is_none() {
            s = self.shared.wait(s);
        }
        Self::progress(&mut s)
    }

    fn progress(s: &mut State) -> Result<Progress, LogError> {
        if let Some(e) = s.error.take() {
            // Keep the thread stopped: a later poll must not see a clean state.
            s.stop = true;
            s.queue.clear();
            return Err(e);
        }
        Ok(Progress {
            written: s.written,
            synced: s.synced,
            checkpoint: s.checkpoint_done.take(),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            // A panic in a storage call is a bug worth seeing, but not a reason to panic
            // again in a destructor.
            let _ = thread.join();
        }
    }
}

/// The thread's body: queued requests in order (appends first, so one sync covers them
/// all), then a due sync, then a due checkpoint. Stops once asked to and nothing is queued.
fn run(shared: &Shared, storage: &dyn Storage, dir: &std::path::Path) {
    let mut s = shared.lock();
    loop {
        if s.error.is_some() || (s.stop && s.queue.is_empty()) {
            if s.stop {
                return;
            }
            s = shared.wait(s);
            continue;
        }
        if let Some((ticket, buf)) = s.queue.pop_front() {
            s.busy = true;
            let result = if buf.is_empty() {
                Ok(())
            } else {
                let mut file = s.file.take();
                let path = s.file_path.clone();
                drop(s);
                let result = file.as_mut().map_or(Ok(()), |f| f.append(&buf));
                s = shared.lock();
                if s.file.is_none() {
                    s.file = file;
                }
                result.map_err(|e| LogError::io(IoOp::Append, &path, e))
            };
            if buf.capacity() > 0 {
                let mut buf = buf;
                buf.clear();
                s.free.push(buf);
            }
            match result {
                Ok(()) => s.written = ticket,
                Err(e) => s.error = Some(e),
            }
        } else if s.sync_due() {
            s.busy = true;
            let target = s.sync_requested;
            let mut file = s.file.take();
            let path = s.file_path.clone();
            drop(s);
            let result = file.as_mut().map_or(Ok(()), |f| f.sync_data());
            s = shared.lock();
            if s.file.is_none() {
                s.file = file;
            }
            match result {
                Ok(()) => s.synced = s.synced.max(target),
                Err(e) => s.error = Some(LogError::io(IoOp::SyncData, &path, e)),
            }
        } else if s.checkpoint_due() {
            s.busy = true;
            let Some((seq, _)) = s.checkpoint.take() else {
                continue;
            };
            drop(s);
            let result = store_checkpoint(storage, dir, seq);
            s = shared.lock();
            match result {
                Ok(()) => s.checkpoint_done = Some(seq),
                Err(e) => s.error = Some(e),
            }
        } else {
            if s.stop {
                return;
            }
            s = shared.wait(s);
            continue;
        }
        s.busy = false;
        shared.changed.notify_all();
    }
}
