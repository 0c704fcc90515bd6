//! The framed append with syncs behind it: what `fsync never` costs a log that keeps its
//! checkpoints true.
//!
//! A persistent bus under [`FsyncPolicy::Never`](shardbus::log::FsyncPolicy::Never) still
//! syncs its log before each checkpoint (by default every 10,000 records) and at each
//! segment roll, on the log's sync thread, while the shard keeps writing. So within a run
//! every byte it appends goes to the device, not only to the page cache, and the device's
//! write bandwidth bounds it. [`raw_buffered_append`](super::raw_buffered_append) never
//! syncs: its bytes stay dirty in the page cache and are written back after the run.
//! [`raw_buffered_append_synced`] is that same loop with a second thread that syncs the file
//! every `sync_every` records, the writer never waiting for it.

use std::cell::RefCell;
use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use super::{raw_buffered_append_n, RawResult, RawWork, ScratchDir};
use crate::harness::Error;

#[derive(Default)]
struct State {
    /// Records written when the last sync was asked for.
    requested: u64,
    synced: u64,
    syncs: u64,
    done: bool,
    error: Option<std::io::Error>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// The sync thread: syncs everything written whenever a sync was asked for, until done.
    fn run(&self, file: &File) {
        let mut s = self.lock();
        loop {
            if s.requested > s.synced && s.error.is_none() {
                let target = s.requested;
                drop(s);
                let result = file.sync_data();
                s = self.lock();
                match result {
                    Ok(()) => {
                        s.synced = target;
                        s.syncs += 1;
                    }
                    Err(e) => s.error = Some(e),
                }
            } else if s.done {
                return;
            } else {
                s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// A thread that `sync_data`s a file behind its writer: every `every` records the writer
/// asks (through a [`SyncAsker`]) and goes on; a sync asked for while one runs is taken by
/// the next, as the log's sync thread does.
pub(crate) struct SyncBehind {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    every: u64,
}

/// The writer's side of a [`SyncBehind`].
pub(crate) struct SyncAsker {
    shared: Arc<Shared>,
    every: u64,
    asked: u64,
}

impl SyncAsker {
    /// The writer has written `records` records so far.
    pub(crate) fn wrote(&mut self, records: u64) {
        if records - self.asked >= self.every {
            self.asked = records;
            self.shared.update(|s| s.requested = records);
        }
    }
}

impl SyncBehind {
    /// Starts the thread (named `floor-syncer`, not pinned) on a handle of `file`.
    pub(crate) fn start(file: &File, every: u64) -> Result<Self, Error> {
        if every == 0 {
            return Err(Error::Opts("a sync behind the writer needs every > 0"));
        }
        let syncing = file.try_clone()?;
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("floor-syncer".into())
            .spawn(move || thread_shared.run(&syncing))?;
        Ok(Self {
            shared,
            thread: Some(thread),
            every,
        })
    }

    /// The writer's side.
    pub(crate) fn asker(&self) -> SyncAsker {
        SyncAsker {
            shared: Arc::clone(&self.shared),
            every: self.every,
            asked: 0,
        }
    }

    /// Lets the thread finish what it was asked and stops it; the syncs it made, or its
    /// first error.
    pub(crate) fn finish(mut self) -> Result<u64, Error> {
        self.stop();
        let mut s = self.shared.lock();
        match s.error.take() {
            Some(e) => Err(e.into()),
            None => Ok(s.syncs),
        }
    }

    fn stop(&mut self) {
        self.shared.update(|s| s.done = true);
        if let Some(thread) = self.thread.take() {
            // The thread only syncs; a panic there is a bug the result would not show.
            let _ = thread.join();
        }
    }
}

impl Drop for SyncBehind {
    fn drop(&mut self) {
        self.stop();
    }
}

/// [`raw_buffered_append`](super::raw_buffered_append) with [`RawWork::Frame`], and a
/// `SyncBehind` thread that `sync_data`s the file each time `sync_every` more records were
/// written. The time ends when the last `write_all` returns, as the bus's ends when its
/// last message is handled; [`RawResult::syncs`] counts the syncs made.
pub fn raw_buffered_append_synced(
    dir: &std::path::Path,
    topics: &[String],
    payload: usize,
    batch: usize,
    records: u64,
    sync_every: u64,
) -> Result<RawResult, Error> {
    // Started by `open` once the file exists, asked by `wrote` after each write.
    let behind: RefCell<Option<(SyncBehind, SyncAsker)>> = RefCell::new(None);
    let open = |scratch: &ScratchDir| -> Result<File, Error> {
        let file = File::create(scratch.path().join("raw.log"))?;
        let syncer = SyncBehind::start(&file, sync_every)?;
        let asker = syncer.asker();
        *behind.borrow_mut() = Some((syncer, asker));
        Ok(file)
    };
    let wrote = |_: &File, written: u64| {
        if let Some((_, asker)) = behind.borrow_mut().as_mut() {
            asker.wrote(written);
        }
        Ok(())
    };
    let work = RawWork::Frame;
    let result = match payload {
        16 => raw_buffered_append_n::<16>(dir, topics, batch, records, work, open, wrote),
        256 => raw_buffered_append_n::<256>(dir, topics, batch, records, work, open, wrote),
        n => Err(crate::WorkloadError::Payload(n).into()),
    };
    let syncs = behind
        .into_inner()
        .map_or(Ok(0), |(syncer, _)| syncer.finish());
    let result = result?;
    Ok(RawResult {
        syncs: syncs?,
        ..result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_is_written_and_the_syncs_are_asked_for_behind_the_writer() {
        let dir = std::env::temp_dir().join("shardbus-bench-synced-test");
        let topics: Vec<String> = (0..3).map(crate::workload::topic_name).collect();
        // 10 batches of 100 records; a sync asked for every 300: after 300, 600 and 900.
        let r = raw_buffered_append_synced(&dir, &topics, 16, 100, 1000, 300).unwrap();
        let record = |t: &String| super::super::record_len(t, 16) as u64;
        let bytes: u64 = (0..1000).map(|i| record(&topics[i % 3])).sum();
        assert_eq!((r.records, r.bytes), (1000, bytes));
        // Each sync covers every request made before it started: 1 to 3 of them.
        assert!((1..=3).contains(&r.syncs), "{} syncs", r.syncs);
        assert!(matches!(
            raw_buffered_append_synced(&dir, &topics, 16, 100, 1000, 0),
            Err(Error::Opts(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
