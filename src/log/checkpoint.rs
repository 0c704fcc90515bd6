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

use std::path::Path;

use super::error::{CorruptReason, LogError};
use super::record::Seq;
use super::small_file;
use super::storage::Storage;

/// Name of the checkpoint file in a shard directory.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
const TEMP_FILE: &str = "checkpoint.tmp";
const KIND: small_file::Kind = small_file::Kind {
    magic: *b"SHBUSCKP",
    version: 1,
    body_len: 8,
    wrong_length: |len| CorruptReason::CheckpointLength { len },
};

fn encode(seq: Seq) -> Vec<u8> {
    KIND.seal(&seq.get().to_le_bytes())
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Seq, LogError> {
    let body = KIND.open(path, bytes)?;
    let mut seq = [0; 8];
    seq.copy_from_slice(body);
    Ok(Seq(u64::from_le_bytes(seq)))
}

/// Loads the checkpoint of the shard directory `dir`: `None` if none was ever written.
///
/// A damaged file is an error ([`LogError::Corrupt`], [`LogError::BadMagic`],
/// [`LogError::UnsupportedVersion`]), never silently `None`: replaying from the start instead
/// would run every handler twice.
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
pub fn load_checkpoint(storage: &dyn Storage, dir: &Path) -> Result<Option<Seq>, LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    small_file::read(storage, &path, |bytes| decode(&path, bytes))
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
    small_file::replace_durably(storage, dir, CHECKPOINT_FILE, TEMP_FILE, &encode(seq))
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::log::storage::SimStorage;
    use crate::log::IoOp;

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
