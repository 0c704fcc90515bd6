//! The checkpoint: the sequence number up to which (inclusive) every handler has finished.
//!
//! ```text
//! offset  size  field
//! 0       8     magic     b"SHBUSCKP"
//! 8       1     version   1
//! 9       3     reserved  zero
//! 12      8     seq       u64 LE
//! 20      4     crc       u32 LE, CRC32C over bytes 0 .. 20
//! ```
//!
//! Written as `checkpoint.tmp`, `sync_data`, renamed over `checkpoint`, directory synced: after
//! power loss the file holds either the old or the new checkpoint, never a mix.

use std::io;
use std::path::Path;

use super::record::Seq;
use super::storage::Storage;
use crate::error::{CorruptReason, IoOp, LogError};

/// Name of the checkpoint file in a shard directory.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
const TEMP_FILE: &str = "checkpoint.tmp";
const MAGIC: [u8; 8] = *b"SHBUSCKP";
const VERSION: u8 = 1;
const LEN: usize = 24;
const CRC_AT: usize = 20;

fn encode(seq: Seq) -> [u8; LEN] {
    let mut b = [0; LEN];
    b[..8].copy_from_slice(&MAGIC);
    b[8] = VERSION;
    b[12..CRC_AT].copy_from_slice(&seq.get().to_le_bytes());
    let crc = crc32c::crc32c(&b[..CRC_AT]);
    b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Seq, LogError> {
    let corrupt = |offset, reason| LogError::Corrupt {
        path: path.into(),
        offset,
        reason,
    };
    if let Some(magic) = bytes.get(..8).filter(|m| *m != MAGIC) {
        let mut found = [0; 8];
        found.copy_from_slice(magic);
        return Err(LogError::BadMagic {
            path: path.into(),
            found,
        });
    }
    if let Some(&version) = bytes.get(8).filter(|v| **v != VERSION) {
        return Err(LogError::UnsupportedVersion {
            path: path.into(),
            version,
        });
    }
    let Ok(b) = <[u8; LEN]>::try_from(bytes) else {
        let len = bytes.len() as u64;
        return Err(corrupt(0, CorruptReason::CheckpointLength { len }));
    };
    let [.., c0, c1, c2, c3] = b;
    let stored = u32::from_le_bytes([c0, c1, c2, c3]);
    let computed = crc32c::crc32c(&b[..CRC_AT]);
    if stored != computed {
        return Err(corrupt(
            CRC_AT as u64,
            CorruptReason::CrcMismatch { stored, computed },
        ));
    }
    if let Some(i) = b[9..12].iter().position(|&x| x != 0) {
        return Err(corrupt(9 + i as u64, CorruptReason::ReservedHeaderBytes));
    }
    let mut seq = [0; 8];
    seq.copy_from_slice(&b[12..CRC_AT]);
    Ok(Seq(u64::from_le_bytes(seq)))
}

/// Loads the checkpoint of the shard directory `dir`: `None` if none was ever written.
///
/// A damaged file is an error ([`LogError::Corrupt`], [`LogError::BadMagic`],
/// [`LogError::UnsupportedVersion`]), never silently `None`: replaying from the start instead
/// would run every handler twice.
pub fn load_checkpoint(storage: &dyn Storage, dir: &Path) -> Result<Option<Seq>, LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    match storage.read(&path) {
        Ok(bytes) => decode(&path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(IoOp::Read, path, e)),
    }
}

/// Durably replaces the checkpoint of `dir` with `seq` (temp file, sync, rename, dir sync).
///
/// Only [`super::ShardLog::checkpoint`] calls this, after syncing the log, so a durable
/// checkpoint never points past the durable end of the log.
pub(crate) fn store_checkpoint(
    storage: &dyn Storage,
    dir: &Path,
    seq: Seq,
) -> Result<(), LogError> {
    let tmp = dir.join(TEMP_FILE);
    let path = dir.join(CHECKPOINT_FILE);
    let mut file = storage
        .create(&tmp)
        .map_err(|e| LogError::io(IoOp::Create, &tmp, e))?;
    file.append(&encode(seq))
        .map_err(|e| LogError::io(IoOp::Append, &tmp, e))?;
    file.sync_data()
        .map_err(|e| LogError::io(IoOp::SyncData, &tmp, e))?;
    storage
        .rename(&tmp, &path)
        .map_err(|e| LogError::io(IoOp::Rename, &tmp, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io(IoOp::SyncDir, dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::storage::SimStorage;

    const DIR: &str = "/shard-000";

    fn setup() -> (SimStorage, &'static Path, std::path::PathBuf) {
        let sim = SimStorage::new();
        let dir = Path::new(DIR);
        sim.create_dir_all(dir).unwrap();
        (sim, dir, dir.join(CHECKPOINT_FILE))
    }

    #[test]
    fn missing_is_none_and_store_round_trips_across_a_crash() {
        let (sim, dir, _) = setup();
        assert_eq!(load_checkpoint(&sim, dir).unwrap(), None);
        store_checkpoint(&sim, dir, Seq(41)).unwrap();
        store_checkpoint(&sim, dir, Seq(42)).unwrap();
        sim.crash(None);
        assert_eq!(load_checkpoint(&sim, dir).unwrap(), Some(Seq(42)));
        let mut names = sim.list_dir(dir).unwrap();
        names.sort();
        assert_eq!(names, ["checkpoint"]);
    }

    #[test]
    fn an_interrupted_store_leaves_the_old_checkpoint() {
        let (sim, dir, path) = setup();
        store_checkpoint(&sim, dir, Seq(7)).unwrap();
        // Renamed into place, but the directory was never synced: power loss undoes the rename.
        let tmp = dir.join(TEMP_FILE);
        let mut file = sim.create(&tmp).unwrap();
        file.append(&encode(Seq(8))).unwrap();
        file.sync_data().unwrap();
        sim.rename(&tmp, &path).unwrap();
        assert_eq!(load_checkpoint(&sim, dir).unwrap(), Some(Seq(8)));
        sim.crash(Some(usize::MAX));
        assert_eq!(load_checkpoint(&sim, dir).unwrap(), Some(Seq(7)));

        sim.fail_next_sync(io::Error::from_raw_os_error(28));
        let err = store_checkpoint(&sim, dir, Seq(9)).unwrap_err();
        assert!(matches!(
            err,
            LogError::Io {
                op: IoOp::SyncData,
                ..
            }
        ));
        sim.crash(Some(usize::MAX));
        assert_eq!(load_checkpoint(&sim, dir).unwrap(), Some(Seq(7)));
    }

    #[test]
    fn damage_is_typed() {
        let (sim, dir, path) = setup();
        store_checkpoint(&sim, dir, Seq(3)).unwrap();
        sim.modify(&path, |b| b[14] ^= 0x10);
        assert!(matches!(
            load_checkpoint(&sim, dir),
            Err(LogError::Corrupt {
                offset: 20,
                reason: CorruptReason::CrcMismatch { .. },
                ..
            })
        ));
        sim.modify(&path, |b| *b = encode(Seq(3)).to_vec());
        sim.modify(&path, |b| b[8] = 9);
        assert!(matches!(
            load_checkpoint(&sim, dir),
            Err(LogError::UnsupportedVersion { version: 9, .. })
        ));
        sim.modify(&path, |b| b[0] = 0);
        assert!(matches!(
            load_checkpoint(&sim, dir),
            Err(LogError::BadMagic { .. })
        ));
        sim.modify(&path, |b| *b = encode(Seq(3))[..23].to_vec());
        assert!(matches!(
            load_checkpoint(&sim, dir),
            Err(LogError::Corrupt {
                reason: CorruptReason::CheckpointLength { len: 23 },
                ..
            })
        ));
        sim.modify(&path, |b| b.clear());
        assert!(matches!(
            load_checkpoint(&sim, dir),
            Err(LogError::Corrupt {
                reason: CorruptReason::CheckpointLength { len: 0 },
                ..
            })
        ));
    }
}
