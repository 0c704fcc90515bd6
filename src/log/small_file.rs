//! The small framed files of a log directory (`checkpoint`, `meta`): one layout, one
//! reader and one durable writer for both.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic (per file kind) |
//! | 8 | 1 | version |
//! | 9 | 3 | reserved, zero |
//! | 12 | N | body (per file kind) |
//! | 12 + N | 4 | CRC32C of bytes `0..12 + N`, little endian |

use std::io;
use std::path::Path;

use super::error::{CorruptReason, IoOp, LogError};
use super::storage::Storage;

const HEADER: usize = 12;

/// The file kind: its magic, version and body length.
pub(super) struct Kind {
    pub(super) magic: [u8; 8],
    pub(super) version: u8,
    pub(super) body_len: usize,
    /// The `Corrupt` reason for a file of the wrong length.
    pub(super) wrong_length: fn(u64) -> CorruptReason,
}

impl Kind {
    fn crc_at(&self) -> usize {
        HEADER + self.body_len
    }

    /// The whole file for `body` (which must be `body_len` bytes).
    pub(super) fn seal(&self, body: &[u8]) -> Vec<u8> {
        debug_assert_eq!(body.len(), self.body_len);
        let mut b = Vec::with_capacity(self.crc_at() + 4);
        b.extend_from_slice(&self.magic);
        b.extend_from_slice(&[self.version, 0, 0, 0]);
        b.extend_from_slice(body);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Validates a file's bytes (magic, version, length, CRC, reserved bytes) and
    /// returns its body. Every defect is a typed error naming `path`.
    pub(super) fn open<'a>(&self, path: &Path, bytes: &'a [u8]) -> Result<&'a [u8], LogError> {
        let corrupt = |offset, reason| LogError::Corrupt {
            path: path.into(),
            offset,
            reason,
        };
        if let Some(magic) = bytes.get(..8).filter(|m| *m != self.magic) {
            let mut found = [0; 8];
            found.copy_from_slice(magic);
            return Err(LogError::BadMagic {
                path: path.into(),
                found,
            });
        }
        if let Some(&version) = bytes.get(8).filter(|v| **v != self.version) {
            return Err(LogError::UnsupportedVersion {
                path: path.into(),
                version,
            });
        }
        let crc_at = self.crc_at();
        if bytes.len() != crc_at + 4 {
            return Err(corrupt(0, (self.wrong_length)(bytes.len() as u64)));
        }
        let mut stored = [0; 4];
        stored.copy_from_slice(&bytes[crc_at..]);
        let stored = u32::from_le_bytes(stored);
        let computed = crc32c::crc32c(&bytes[..crc_at]);
        if stored != computed {
            return Err(corrupt(
                crc_at as u64,
                CorruptReason::CrcMismatch { stored, computed },
            ));
        }
        if let Some(i) = bytes[9..HEADER].iter().position(|&x| x != 0) {
            return Err(corrupt(9 + i as u64, CorruptReason::ReservedHeaderBytes));
        }
        Ok(&bytes[HEADER..crc_at])
    }
}

/// Reads and decodes `path`: `None` if it does not exist; a damaged file is an error.
pub(super) fn read<R>(
    storage: &dyn Storage,
    path: &Path,
    decode: impl FnOnce(&[u8]) -> Result<R, LogError>,
) -> Result<Option<R>, LogError> {
    match storage.read(path) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(IoOp::Read, path, e)),
    }
}

/// Durably replaces `dir/name` with `bytes`: write `dir/temp`, `sync_data`, rename, then
/// sync the directory.
pub(super) fn replace_durably(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    temp: &str,
    bytes: &[u8],
) -> Result<(), LogError> {
    let tmp = dir.join(temp);
    let path = dir.join(name);
    let mut file = storage
        .create(&tmp)
        .map_err(|e| LogError::io(IoOp::Create, &tmp, e))?;
    file.append(bytes)
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
