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
//! - **roll**: when the full segment ends, the shard starts the next one under its temporary
//!   name, header written, keeps appending to it, and hands it over with
//!   [`Syncer::request_roll`], which takes the next ticket. The thread, before any later
//!   ticket: syncs the full segment, syncs the new one, renames it into place, syncs the
//!   directory, and from then on syncs the new one; the roll's ticket then counts as synced.
//!   So no later ticket is ever reported synced while the segment it lands in could be lost,
//!   and a crash before the rename leaves the new segment a temporary file, which recovery
//!   takes into the log only if the full segment ends exactly where it starts. At most one
//!   roll is in flight: the shard waits for the last ([`Syncer::wait_rolled`]) before the next.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::checkpoint::store_checkpoint;
use super::error::{IoOp, LogError};
use super::record::Seq;
use super::segment;
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

/// A segment started under its temporary name, to be made part of the log.
#[derive(Debug)]
struct Roll {
    file: Box<dyn StorageFile>,
    tmp: PathBuf,
    path: PathBuf,
    /// Synced once the roll is done.
    ticket: u64,
}

/// Written by the shard: `requested`, `roll`, `rolling` (set), `checkpoint`, `stop`.
/// Written by the thread: `file` and `file_path` (on a roll), `synced`, `checkpoint_done`,
/// `busy`, `rolling` (cleared), `error`; it takes `file` out while it syncs and puts it
/// back, and takes `roll` out while it rolls.
#[derive(Debug)]
struct State {
    file: Option<Box<dyn StorageFile>>,
    file_path: PathBuf,
    requested: u64,
    synced: u64,
    /// A roll asked for and not yet started.
    roll: Option<Roll>,
    /// From a roll's request until it is done (or failed).
    rolling: bool,
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
        !self.busy && !self.rolling && !self.sync_due() && self.checkpoint.is_none()
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
                roll: None,
                rolling: false,
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

    /// Hands over the segment the shard now appends to, started under the temporary name
    /// `tmp` and to be renamed to `path` once everything before it is durable (see the
    /// module's **roll**); returns the roll's ticket. The last roll must be done
    /// ([`Syncer::wait_rolled`]).
    pub(crate) fn request_roll(
        &mut self,
        file: Box<dyn StorageFile>,
        tmp: PathBuf,
        path: PathBuf,
    ) -> u64 {
        self.requested += 1;
        let mut s = self.shared.lock();
        debug_assert!(!s.rolling, "a roll is still in flight");
        s.requested = self.requested;
        s.roll = Some(Roll {
            file,
            tmp,
            path,
            ticket: self.requested,
        });
        s.rolling = true;
        drop(s);
        self.shared.changed.notify_all();
        self.requested
    }

    /// Whether a roll is in flight: the segment the shard appends to is still under its
    /// temporary name.
    pub(crate) fn rolling(&self) -> bool {
        self.shared.lock().rolling
    }

    /// Waits until the last roll is done (or the thread failed).
    pub(crate) fn wait_rolled(&mut self) -> Result<Progress, LogError> {
        let mut s = self.shared.lock();
        while s.rolling && s.error.is_none() {
            s = self.shared.wait(s);
        }
        Self::progress(&mut s)
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

/// The thread's body: a roll first (every later ticket lands in its segment), then a sync
/// (handlers wait on it), then a due checkpoint.
fn run(shared: &Shared, storage: &dyn Storage, dir: &std::path::Path) {
    let mut s = shared.lock();
    loop {
        if s.stop {
            return;
        }
        let work = s.error.is_none() && (s.roll.is_some() || s.sync_due() || s.checkpoint_due());
        if !work {
            s = shared.wait(s);
            continue;
        }
        s.busy = true;
        if let Some(mut roll) = s.roll.take() {
            let (mut full, full_path, observer) = take_file(&mut s);
            drop(s);
            let result =
                sync_file(full.as_deref_mut(), &full_path, observer.as_ref()).and_then(|()| {
                    segment::finish_pending(storage, dir, &mut *roll.file, &roll.tmp, &roll.path)
                });
            s = shared.lock();
            match result {
                Ok(()) => {
                    s.synced = s.synced.max(roll.ticket);
                    s.file = Some(roll.file);
                    s.file_path = roll.path;
                }
                Err(e) => {
                    s.file = full;
                    s.error = Some(e);
                }
            }
            s.rolling = false;
        } else if s.sync_due() {
            let target = s.requested;
            let (mut file, path, observer) = take_file(&mut s);
            drop(s);
            let result = sync_file(file.as_deref_mut(), &path, observer.as_ref());
            s = shared.lock();
            s.file = file;
            match result {
                Ok(()) => s.synced = s.synced.max(target),
                Err(e) => s.error = Some(e),
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

/// Takes the active segment's handle out of the state for a sync, with its path and the
/// observer; the thread puts it back (or a new one, after a roll) when done.
fn take_file(s: &mut State) -> (Option<Box<dyn StorageFile>>, PathBuf, Option<SyncObserver>) {
    (s.file.take(), s.file_path.clone(), s.observer.clone())
}

/// `sync_data` of the active segment (nothing without a handle), timed for the observer.
fn sync_file(
    file: Option<&mut (dyn StorageFile + 'static)>,
    path: &std::path::Path,
    observer: Option<&SyncObserver>,
) -> Result<(), LogError> {
    file.map_or(Ok(()), |f| timed(observer, || f.sync_data()))
        .map_err(|e| LogError::io(IoOp::SyncData, path, e))
}
