//! Opening a bus directory at `build()`: its layout file, recovery of every shard's log,
//! resharding.
//!
//! A persistent bus keeps `DIR/meta` (shard count and generation, see `log::meta`) and
//! one log per shard in `DIR/gen-G/shard-NNN/`. At `build()`:
//!
//! 0. The directory is locked (`Storage::lock_dir`; `flock` of `DIR/lock` on the real
//!    filesystem), or `build()` fails with [`Error::DirectoryLocked`] before reading
//!    anything. Each shard's `Wal` holds the lock (shared) and drops it when the shard
//!    thread ends, after its log is closed; so the lock lives exactly as long as some
//!    shard of the bus can still write.
//! 1. `meta` is read (or written, for a new directory); generations other than the
//!    current one are leftovers of an interrupted reshard and are removed.
//! 2. If the recorded shard count differs from the bus's, or a record after a shard's
//!    checkpoint has a topic that the current mapping routes elsewhere (the hash
//!    changed), the unfinished records are resharded (below), or, with
//!    [`OnShardCountChange::Error`], `build()` fails with
//!    [`Error::ShardCountMismatch`].
//! 3. Every shard's log is opened and recovered; the shard thread replays the records
//!    after its checkpoint to the builder's subscriptions before taking any new message.
//!
//! Resharding is crash-safe: the unfinished records of every old shard (those after its
//! checkpoint) are appended, in old-shard and then sequence order, to the log of the
//! shard the current mapping gives their topic, in a new generation directory; every new
//! log is synced; `meta` is switched to the new generation atomically (temp file, sync,
//! rename, directory sync); only then is the old generation removed. A crash before the
//! switch leaves the old generation current (the half-written new one is removed at the
//! next start, which reshards again); a crash after it leaves the new one current (the
//! old one is removed at the next start). A topic's records all come from one old shard
//! (the one the old mapping gave it), so per-topic order is kept. The handled history
//! before each checkpoint is not carried over: a [`Reader`](crate::log::Reader) of the new
//! generation starts at its first unfinished record.

use std::io;
use std::path::{Path, PathBuf};

use super::{OnShardCountChange, Persistence};
use crate::error::Error;
use crate::log::{
    self, parse_generation_name, read_meta, recover, write_meta, BusMeta, CorruptReason, DirLock,
    FsyncPolicy, IoOp, LogConfig, LogError, Recovered, ShardLog, Storage,
};
use crate::route::Router;

/// Opens the bus directory for `shards` shards: its lock, then each shard's log and what
/// recovery found. The lock is taken before anything in the directory is read, and is
/// released when the returned [`DirLock`] is dropped (on any error here, at once).
pub(crate) fn open(
    p: &Persistence,
    shards: usize,
    router: &Router,
) -> Result<(DirLock, Vec<(ShardLog, Recovered)>), Error> {
    let _span = tracing::info_span!("shardbus_recover", dir = %p.dir.display(), shards).entered();
    p.log.validate()?;
    let storage = &*p.storage;
    let dir = &p.dir;
    storage
        .create_dir_all(dir)
        .map_err(|e| LogError::io(IoOp::CreateDir, dir, e))?;
    let lock = storage.lock_dir(dir).map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock {
            Error::DirectoryLocked { path: dir.clone() }
        } else {
            LogError::io(IoOp::Lock, dir.join(log::LOCK_FILE), e).into()
        }
    })?;
    Ok((lock, open_locked(p, shards, router)?))
}

/// [`open`] once the directory is locked.
fn open_locked(
    p: &Persistence,
    shards: usize,
    router: &Router,
) -> Result<Vec<(ShardLog, Recovered)>, Error> {
    let storage = &*p.storage;
    let dir = &p.dir;
    let generations = list_generations(storage, dir)?;
    let meta = match read_meta(storage, dir)? {
        Some(meta) => meta,
        None if generations.is_empty() => {
            let meta = BusMeta {
                shards: shards as u32,
                generation: 0,
            };
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                storage
                    .sync_dir(parent)
                    .map_err(|e| LogError::io(IoOp::SyncDir, parent, e))?;
            }
            write_meta(storage, dir, meta)?;
            meta
        }
        None => {
            return Err(LogError::Corrupt {
                path: dir.join(log::META_FILE),
                offset: 0,
                reason: CorruptReason::MissingMeta,
            }
            .into())
        }
    };
    // Leftovers of an interrupted reshard: a new generation never switched to, or an
    // old one not yet removed.
    let mut removed = false;
    for g in generations.iter().filter(|g| **g != meta.generation) {
        let path = log::BusMeta {
            generation: *g,
            ..meta
        }
        .generation_dir(dir);
        storage
            .remove_dir_all(&path)
            .map_err(|e| LogError::io(IoOp::Remove, &path, e))?;
        removed = true;
    }
    if removed {
        storage
            .sync_dir(dir)
            .map_err(|e| LogError::io(IoOp::SyncDir, dir, e))?;
    }
    let meta = if meta.shards as usize != shards {
        if p.on_shard_count_change == OnShardCountChange::Error {
            return Err(Error::ShardCountMismatch {
                found: meta.shards as usize,
                expected: shards,
            });
        }
        reshard(p, meta, shards, router)?
    } else {
        meta
    };
    let logs = open_logs(p, meta, shards)?;
    if !misrouted(&logs, router)? {
        return Ok(logs);
    }
    // Same count, but the topic → shard function changed (another build of the hasher):
    // re-route too, never replay one topic on two shards.
    drop(logs);
    let meta = reshard(p, meta, shards, router)?;
    open_logs(p, meta, shards)
}

fn open_logs(
    p: &Persistence,
    meta: BusMeta,
    shards: usize,
) -> Result<Vec<(ShardLog, Recovered)>, Error> {
    let mut logs = Vec::with_capacity(shards);
    for i in 0..shards {
        let (log, recovered) =
            ShardLog::open(p.storage.clone(), meta.shard_dir(&p.dir, i), p.log.clone())?;
        report_recovery(&recovered, i);
        logs.push((log, recovered));
    }
    Ok(logs)
}

/// Whether a record after some shard's checkpoint is routed elsewhere now.
fn misrouted(logs: &[(ShardLog, Recovered)], router: &Router) -> Result<bool, Error> {
    for (i, (_, r)) in logs.iter().enumerate() {
        for rec in r.replay()? {
            let rec = rec?;
            if router
                .record_key(&rec.topic)
                .map(|k| router.shard_of_key(&k).0)
                != Some(i)
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn report_recovery(r: &Recovered, shard: usize) {
    tracing::info!(
        shard,
        replay_from = r.replay_from().get(),
        next_seq = r.next_seq().get(),
        "recovered the shard's log"
    );
    let report = r.report();
    if report.torn_bytes > 0 {
        tracing::warn!(
            shard,
            torn_bytes = report.torn_bytes,
            torn_records = report.torn_records,
            "recovery cut a torn tail (an interrupted write)"
        );
    }
    if let Some(t) = &report.truncated {
        tracing::warn!(
            shard,
            path = %t.path.display(),
            offset = t.offset,
            reason = %t.reason,
            first_dropped_seq = t.first_dropped_seq.get(),
            dropped_bytes = t.dropped_bytes,
            "recovery truncated a corrupt log (truncate_on_corruption)"
        );
    }
}

fn list_generations(storage: &dyn Storage, dir: &Path) -> Result<Vec<u64>, Error> {
    let names = storage
        .list_subdirs(dir)
        .map_err(|e| LogError::io(IoOp::ListDir, dir, e))?;
    Ok(names
        .iter()
        .filter_map(|n| n.to_str().and_then(parse_generation_name))
        .collect())
}

/// Recovers old shard `i`'s log; a shard directory that was never created is empty.
fn recover_old(p: &Persistence, dir: PathBuf) -> Result<Option<Recovered>, Error> {
    match recover(p.storage.clone(), dir, p.log.recovery_options()) {
        Ok(r) => Ok(Some(r)),
        Err(LogError::DirNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Moves every unfinished record into a new generation with `shards` shards; returns the
/// new layout. See the module docs for the crash-safety argument.
fn reshard(
    p: &Persistence,
    old: BusMeta,
    shards: usize,
    router: &Router,
) -> Result<BusMeta, Error> {
    let _span = tracing::info_span!(
        "shardbus_reshard",
        from_shards = old.shards,
        to_shards = shards
    )
    .entered();
    let storage = &*p.storage;
    let dir = &p.dir;
    let new = BusMeta {
        shards: shards as u32,
        generation: old.generation + 1,
    };
    // Appending is only to logs nobody reads yet: no need to sync before the end.
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        ..p.log.clone()
    };
    let mut logs = Vec::with_capacity(shards);
    for j in 0..shards {
        logs.push(ShardLog::open(p.storage.clone(), new.shard_dir(dir, j), config.clone())?.0);
    }
    let mut moved = 0u64;
    for i in 0..old.shards as usize {
        let old_dir = old.shard_dir(dir, i);
        let Some(r) = recover_old(p, old_dir.clone())? else {
            continue;
        };
        for rec in r.replay()? {
            let rec = rec?;
            let Some(key) = router.record_key(&rec.topic) else {
                return Err(Error::Decode {
                    path: old_dir,
                    seq: rec.seq,
                    source: crate::DecodeError::new(format!(
                        "invalid topic name of {} bytes",
                        rec.topic.len()
                    )),
                });
            };
            logs[router.shard_of_key(&key).0].append(&[rec.as_record_ref()])?;
            moved += 1;
        }
    }
    for log in logs {
        log.close()?;
    }
    write_meta(storage, dir, new)?;
    let old_gen = old.generation_dir(dir);
    storage
        .remove_dir_all(&old_gen)
        .map_err(|e| LogError::io(IoOp::Remove, &old_gen, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io(IoOp::SyncDir, dir, e))?;
    tracing::warn!(
        from_shards = old.shards,
        to_shards = shards,
        generation = new.generation,
        records = moved,
        "resharded the persistent log"
    );
    Ok(new)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::log::{RecordRef, SimStorage};

    fn shard_of(router: &Router, topic: &str) -> usize {
        router.shard_of_key(&router.key(topic).unwrap()).0
    }

    /// A build whose routing differs (another ahash, other CPU features) reopening a
    /// directory at the same shard count: the unfinished records are re-routed by the
    /// current routing, each topic's in its original order, none lost or repeated.
    #[test]
    fn a_routing_change_at_the_same_shard_count_reroutes_in_per_topic_order() {
        const TOPICS: usize = 12;
        const RECORDS: usize = 120;
        let sim = SimStorage::new();
        let p = Persistence::new("/bus").storage(Arc::new(sim.clone()));
        let old = Router::with_seeds(3, [1, 2, 3, 4]);
        let new = Router::new(3);
        let topic = |n: usize| format!("t{}", n % TOPICS);
        assert!(
            (0..TOPICS).any(|t| shard_of(&old, &topic(t)) != shard_of(&new, &topic(t))),
            "the two routings must differ for the test to mean anything"
        );
        let (lock, logs) = open(&p, 3, &old).unwrap();
        let mut logs: Vec<ShardLog> = logs.into_iter().map(|(log, _)| log).collect();
        for n in 0..RECORDS {
            let t = topic(n);
            let payload = n.to_string();
            logs[shard_of(&old, &t)]
                .append(&[RecordRef::new(&t, payload.as_bytes())])
                .unwrap();
        }
        for log in logs {
            log.close().unwrap();
        }
        drop(lock);

        let (_lock, logs) = open(&p, 3, &new).unwrap();
        let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, (_, recovered)) in logs.iter().enumerate() {
            for rec in recovered.replay().unwrap() {
                let rec = rec.unwrap();
                assert_eq!(shard_of(&new, &rec.topic), i, "{} re-routed", rec.topic);
                let n = std::str::from_utf8(&rec.payload).unwrap().parse().unwrap();
                seen.entry(rec.topic).or_default().push(n);
            }
        }
        let mut expected: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for n in 0..RECORDS {
            expected.entry(topic(n)).or_default().push(n);
        }
        assert_eq!(seen, expected);
        let meta = read_meta(&sim, Path::new("/bus")).unwrap().unwrap();
        assert_eq!((meta.shards, meta.generation), (3, 1), "resharded once");
    }
}
