//! The log's background sync thread: `fdatasync` of the active segment and checkpoint writes,
//! off the shard's thread.
//!
//! One thread per shard log, started by [`super::ShardLog::start_syncer`]. The shard thread is
//! the only requester; the two meet in one mutex-protected [`State`] and one condvar:
//!
//! - **sync**: after appending a batch the shard calls [`Syncer::request_sync`] and gets a
//!   ticket `t`. The thread takes the newest ticket, calls `sync_data` on its handle of the
//!   active segment, then publishes `synced = t`. Every byte appended (through any handle)
//!   before the request is then durable, because the request was made after the `write`
//!   returned and the sync started after the request. Several requests made during one sync
//!   are covered by the next one: group commit across batches.
//! - **checkpoint**: [`Syncer::request_checkpoint`] asks for the checkpoint file to be written
//!   once `synced` reaches a given ticket (0: at once, the records it covers are already
//!   durable). A newer request replaces one not yet started.
//! - **errors**: the first failed sync or checkpoint write is kept and stops all further work
//!   (an fsync error is never retried); the shard sees it at its next poll and poisons the log.
//!
//! When the shard rolls to a new segment it has synced the full one itself, and hands the
//! thread a handle of the new one ([`Syncer::set_file`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::checkpoint::store_checkpoint;
use super::error::{IoOp, LogError};
use super::record::Seq;
use super::storage::{Storage, StorageFile};
use crate::sync::plain::{spawn_named, Arc, Condvar, JoinHandle, Mutex, MutexGuard, PoisonError};

/// Told the time of each `sync_data` of the active segment (see
/// [`ShardLog::observe_fsync`](super::ShardLog)); called on the thread that synced.
#[derive(Clone)]
pub(crate) struct SyncObserver(pub(crate) Arc<dyn Fn(Duration) + Send + Sync>);

impl std::fmt::Debug for SyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncObserver")
    }
}

/// Runs `sync`, timing it for `observer` if there is one.
pub(crate) fn timed<R>(observer: Option<&SyncObserver>, sync: impl FnOnce() -> R) -> R {
    let Some(observer) = observer else {
        return sync();
    };
    let start = Instant::now();
    let result = sync();
    (observer.0)(start.elapsed());
    result
}

/// What the thread has finished, as seen by a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Every ticket up to this one is synced.
    pub(crate) synced: u64,
    /// A checkpoint the thread wrote since the last poll.
    pub(crate) checkpoint: Option<Seq>,
}

/// The shard's side of the sync thread. Dropping it stops and joins the thread.
#[derive(Debug)]
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The last ticket handed out (only the shard thread writes it).
    requested: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled on every change: a request (wakes the thread) and every finished piece of
    /// work (wakes a shard waiting for it). Both sides re-check their condition in a loop.
    changed: Condvar,
}

/// Written by the shard: `file` (on a roll), `file_path`, `requested`, `checkpoint`, `stop`.
/// Written by the thread: `synced`, `checkpoint_done`, `busy`, `error`; it also takes `file`
/// out while it syncs and puts it back unless the shard replaced it meanwhile.
#[derive(Debug)]
struct State {
    file: Option<Box<dyn StorageFile>>,
    file_path: PathBuf,
    requested: u64,
    synced: u64,
    /// A checkpoint to write and the ticket that must be synced first.
    checkpoint: Option<(Seq, u64)>,
    checkpoint_done: Option<Seq>,
    busy: bool,
    error: Option<LogError>,
    stop: bool,
    /// Told the time of each sync (written by the shard, read by the thread).
    observer: Option<SyncObserver>,
}

impl State {
    fn sync_due(&self) -> bool {
        self.requested > self.synced
    }

    fn checkpoint_due(&self) -> bool {
        self.checkpoint
            .is_some_and(|(_, after)| after <= self.synced)
    }

    fn idle(&self) -> bool {
        !self.busy && !self.sync_due() && self.checkpoint.is_none()
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

impl Syncer {
    /// Starts the thread with a handle of the active segment `path`.
    pub(crate) fn start(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        file: Box<dyn StorageFile>,
        path: PathBuf,
        thread_name: String,
        observer: Option<SyncObserver>,
    ) -> Result<Self, LogError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                file: Some(file),
                file_path: path,
                requested: 0,
                synced: 0,
                checkpoint: None,
                checkpoint_done: None,
                busy: false,
                error: None,
                stop: false,
                observer,
            }),
            changed: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread_dir = dir.clone();
        let thread = spawn_named(thread_name, move || {
            run(&thread_shared, &*storage, &thread_dir);
        })
        .map_err(|e| LogError::io(IoOp::Open, &dir, e))?;
        Ok(Self {
            shared,
            thread: Some(thread),
            requested: 0,
        })
    }

    /// The active segment changed (the shard synced the previous one itself).
    pub(crate) fn set_file(&mut self, file: Box<dyn StorageFile>, path: PathBuf) {
        let mut s = self.shared.lock();
        s.file = Some(file);
        s.file_path = path;
    }

    /// From now on `observer` is told the time of each sync.
    pub(crate) fn set_observer(&mut self, observer: SyncObserver) {
        self.shared.lock().observer = Some(observer);
    }

    /// Asks for everything appended so far to be synced; returns its ticket.
    pub(crate) fn request_sync(&mut self) -> u64 {
        self.requested += 1;
        self.shared.lock().requested = self.requested;
        self.shared.changed.notify_all();
        self.requested
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

    /// Waits until ticket `ticket` is synced (or the thread failed).
    pub(crate) fn wait_synced(&mut self, ticket: u64) -> Result<Progress, LogError> {
        let mut s = self.shared.lock();
        while s.synced < ticket && s.error.is_none() {
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
            return Err(e);
        }
        Ok(Progress {
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
            // The thread catches nothing: a panic in a storage call is a bug worth seeing,
            // but not a reason to panic again in a destructor.
            let _ = thread.join();
        }
    }
}

/// The thread's body: sync first (handlers wait on it), then a due checkpoint.
fn run(shared: &Shared, storage: &dyn Storage, dir: &std::path::Path) {
    let mut s = shared.lock();
    loop {
        if s.stop {
            return;
        }
        let work = s.error.is_none() && (s.sync_due() || s.checkpoint_due());
        if !work {
            s = shared.wait(s);
            continue;
        }
        s.busy = true;
        if s.sync_due() {
            let target = s.requested;
            let mut file = s.file.take();
            let path = s.file_path.clone();
            let observer = s.observer.clone();
            drop(s);
            let result = file
                .as_mut()
                .map_or(Ok(()), |f| timed(observer.as_ref(), || f.sync_data()));
            s = shared.lock();
            if s.file.is_none() {
                s.file = file;
            }
            match result {
                Ok(()) => s.synced = s.synced.max(target),
                Err(e) => s.error = Some(LogError::io(IoOp::SyncData, &path, e)),
            }
        } else if let Some((seq, _)) = s.checkpoint.take() {
            drop(s);
            let result = store_checkpoint(storage, dir, seq);
            s = shared.lock();
            match result {
                Ok(()) => s.checkpoint_done = Some(seq),
                Err(e) => s.error = Some(e),
            }
        }
        s.busy = false;
        shared.changed.notify_all();
    }
}
