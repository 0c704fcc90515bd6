//! The bus directory: its `meta` file and where each shard's log lives.
//!
//! ```text
//! DIR/meta                      the layout: shard count and generation
//! DIR/gen-G/shard-NNN/          shard NNN's log of generation G
//! ```
//!
//! The `meta` file (28 bytes, little-endian):
//!
//! ```text
//! offset  size  field
//! 0       8     magic       b"SHBUSMET"
//! 8       1     version     1
//! 9       3     reserved    zero
//! 12      4     shards      u32: how many shard logs generation G has
//! 16      8     generation  u64: G
//! 24      4     crc         u32: CRC32C of bytes 0 .. 24
//! ```
//!
//! Written like the checkpoint (temp file, `sync_data`, rename, directory fsync), so after
//! any crash it names either the old or the new generation. A generation is only ever
//! written whole before `meta` switches to it; see the runtime's resharding.

use std::path::{Path, PathBuf};

use super::error::{CorruptReason, LogError};
use super::small_file;
use super::storage::Storage;

/// Name of the layout file in a bus directory.
pub const META_FILE: &str = "meta";
const TEMP_FILE: &str = "meta.tmp";
const KIND: small_file::Kind = small_file::Kind {
    magic: *b"SHBUSMET",
    version: 1,
    body_len: 12,
    wrong_length: |len| CorruptReason::MetaLength { len },
};

/// The layout of a persistent bus directory, as its `meta` file records it.
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusMeta {
    /// The number of shard logs in the current generation.
    pub shards: u32,
    /// The current generation: its logs are in `DIR/gen-{generation}/`.
    pub generation: u64,
}

impl BusMeta {
    /// The directory of the current generation.
    pub fn generation_dir(&self, dir: &Path) -> PathBuf {
        generation_dir(dir, self.generation)
    }

    /// The log directory of `shard` in the current generation.
    pub fn shard_dir(&self, dir: &Path, shard: usize) -> PathBuf {
        shard_dir(dir, self.generation, shard)
    }

    /// Every shard log directory of the current generation, in shard order.
    pub fn shard_dirs(&self, dir: &Path) -> Vec<PathBuf> {
        (0..self.shards as usize)
            .map(|i| self.shard_dir(dir, i))
            .collect()
    }
}

/// `DIR/gen-{generation}`.
pub(crate) fn generation_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("gen-{generation}"))
}

/// `DIR/gen-{generation}/shard-{shard:03}`.
pub(crate) fn shard_dir(dir: &Path, generation: u64, shard: usize) -> PathBuf {
    generation_dir(dir, generation).join(format!("shard-{shard:03}"))
}

/// The generation a `gen-G` directory name stands for.
pub(crate) fn parse_generation_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("gen-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn encode(meta: BusMeta) -> Vec<u8> {
    let mut body = [0; 12];
    body[..4].copy_from_slice(&meta.shards.to_le_bytes());
    body[4..].copy_from_slice(&meta.generation.to_le_bytes());
    KIND.seal(&body)
}

fn decode(path: &Path, bytes: &[u8]) -> Result<BusMeta, LogError> {
    let body = KIND.open(path, bytes)?;
    let mut shards = [0; 4];
    shards.copy_from_slice(&body[..4]);
    let mut generation = [0; 8];
    generation.copy_from_slice(&body[4..]);
    Ok(BusMeta {
        shards: u32::from_le_bytes(shards),
        generation: u64::from_le_bytes(generation),
    })
}

/// Reads the `meta` file of the bus directory `dir`: `None` if there is none (a new bus).
/// A damaged file is an error, never `None`.
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
pub fn read_meta(storage: &dyn Storage, dir: &Path) -> Result<Option<BusMeta>, LogError> {
    let path = dir.join(META_FILE);
    small_file::read(storage, &path, |bytes| decode(&path, bytes))
}

/// Durably replaces the `meta` file of `dir` (temp file, sync, rename, dir sync).
pub(crate) fn write_meta(storage: &dyn Storage, dir: &Path, meta: BusMeta) -> Result<(), LogError> {
    small_file::replace_durably(storage, dir, META_FILE, TEMP_FILE, &encode(meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::SimStorage;

    #[test]
    fn round_trip_survives_a_crash_and_damage_is_typed() {
        let sim = SimStorage::new();
        let dir = Path::new("/bus");
        sim.create_dir_all(dir).unwrap();
        assert_eq!(read_meta(&sim, dir).unwrap(), None);
        let meta = BusMeta {
            shards: 4,
            generation: 7,
        };
        write_meta(&sim, dir, meta).unwrap();
        sim.crash(None);
        assert_eq!(read_meta(&sim, dir).unwrap(), Some(meta));
        assert_eq!(
            meta.shard_dir(dir, 3),
            Path::new("/bus/gen-7/shard-003").to_path_buf()
        );
        let path = dir.join(META_FILE);
        sim.modify(&path, |b| b[13] ^= 1);
        assert!(matches!(
            read_meta(&sim, dir),
            Err(LogError::Corrupt {
                offset: 24,
                reason: CorruptReason::CrcMismatch { .. },
                ..
            })
        ));
        sim.modify(&path, |b| b.truncate(10));
        assert!(matches!(
            read_meta(&sim, dir),
            Err(LogError::Corrupt {
                reason: CorruptReason::MetaLength { len: 10 },
                ..
            })
        ));
        sim.modify(&path, |b| b[8] = 3);
        assert!(matches!(
            read_meta(&sim, dir),
            Err(LogError::UnsupportedVersion { version: 3, .. })
        ));
        assert_eq!(parse_generation_name("gen-12"), Some(12));
        assert_eq!(parse_generation_name("gen-"), None);
        assert_eq!(parse_generation_name("shard-000"), None);
    }
}
