//! The validating record scanner shared by recovery, the reader and `inspect`.
//!
//! The scanner trusts nothing: a `len` field is range-checked before any buffer is sized from
//! it, every read is bounded by the file length measured when the segment was opened, and a
//! short read is reported as damage, never an index panic.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::error::{CorruptReason, IoOp, LogError};
use super::record::{self, Record, Seq, FRAME_HEADER_LEN, MIN_RECORD_LEN};
use super::segment::{check_header, SegmentFile, HEADER_LEN, READ_BUFFER};
use super::storage::Storage;

/// One step of a [`Scanner`].
#[derive(Debug)]
pub(crate) enum Step {
    /// A valid record with the expected sequence number.
    Record(Record),
    /// The end of the segment, exactly at a record boundary.
    End,
    /// Bytes at `Damage::offset` failed validation.
    Damage(Damage),
}

/// Where and why a segment failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Offset of the first byte of the damaged record frame.
    pub(crate) offset: u64,
    pub(crate) reason: CorruptReason,
    /// A torn tail: the damage is in the final record region of the last segment and no intact
    /// record follows it (see [`Scanner::next`]).
    pub(crate) torn: bool,
    /// The damaged frame's extent was known and skipped, so scanning may continue (only
    /// `inspect` does). Otherwise the scanner is at its end.
    pub(crate) resumable: bool,
}

/// Reads and validates the records of one segment, one at a time, in bounded memory.
pub(crate) struct Scanner {
    path: PathBuf,
    input: BufReader<Box<dyn Read + Send>>,
    /// Offset of the next unread byte; never more than `file_len`.
    pos: u64,
    file_len: u64,
    /// The sequence number the next record must have.
    expected: Seq,
    /// After damage of unknown sequence: accept the next record's sequence number as is.
    resync: bool,
    last: bool,
    max_record_size: u32,
    body: Vec<u8>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("path", &self.path)
            .field("pos", &self.pos)
            .field("file_len", &self.file_len)
            .finish_non_exhaustive()
    }
}

impl Scanner {
    /// Opens `seg` and validates its header. `last` says whether it is the shard's last segment,
    /// the only one that may end in a torn tail.
    pub(crate) fn open(
        storage: &dyn Storage,
        seg: &SegmentFile,
        last: bool,
        max_record_size: u32,
    ) -> Result<Self, LogError> {
        let path = &seg.path;
        let file_len = storage
            .file_len(path)
            .map_err(|e| LogError::io(IoOp::Len, path, e))?;
        if file_len < HEADER_LEN {
            return Err(LogError::TruncatedHeader {
                path: path.clone(),
                len: file_len,
            });
        }
        let input = storage
            .open_read(path, 0)
            .map_err(|e| LogError::io(IoOp::Open, path, e))?;
        let mut scanner = Scanner {
            path: path.clone(),
            input: BufReader::with_capacity(READ_BUFFER, input),
            pos: 0,
            file_len,
            expected: seg.first_seq,
            resync: false,
            last,
            max_record_size,
            body: Vec::new(),
        };
        let mut h = [0; HEADER_LEN as usize];
        if !scanner.read_exact(&mut h)? {
            return Err(LogError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: CorruptReason::UnexpectedEof,
            });
        }
        check_header(path, &h)?;
        Ok(scanner)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The sequence number after the last record returned (the segment's first one before that).
    pub(crate) fn expected(&self) -> Seq {
        self.expected
    }

    /// Reads the next record. `Err` only for I/O errors; damage is a [`Step::Damage`].
    ///
    /// Classification of damage at offset `X`: it is a torn tail only in the last segment, and
    /// only if the damaged frame reaches the end of the file and no intact record (valid length
    /// and CRC, sequence number at least the expected one) starts after `X`:
    /// - fewer than 8 bytes left, or a `len` that runs past the end of the file;
    /// - a CRC mismatch in a frame that ends exactly at the end of the file;
    /// - an invalid `len` where every byte from `X` to the end is zero (a zero-filled tail, as
    ///   filesystems leave after extending a file whose data never reached the disk).
    ///
    /// Everything else is corruption: a CRC mismatch followed by more bytes, an invalid `len`
    /// followed by non-zero bytes, a CRC-valid record with a bad topic or sequence number.
    pub(crate) fn next(&mut self) -> Result<Step, LogError> {
        let start = self.pos;
        let available = self.file_len - start;
        if available == 0 {
            return Ok(Step::End);
        }
        if available < FRAME_HEADER_LEN as u64 {
            let mut rest = [0; FRAME_HEADER_LEN];
            let rest = &mut rest[..available as usize];
            if !self.read_exact(rest)? {
                return Ok(self.eof(start));
            }
            let rest = rest.to_vec();
            return Ok(self.tail_damage(start, &rest, CorruptReason::TruncatedFrame { available }));
        }
        let mut frame = [0; FRAME_HEADER_LEN];
        if !self.read_exact(&mut frame)? {
            return Ok(self.eof(start));
        }
        let (len, crc) = record::frame_header(&frame);
        if !record::valid_body_len(len, self.max_record_size) {
            let torn = self.last && frame == [0; FRAME_HEADER_LEN] && self.rest_is_zero()?;
            return Ok(self.stop(start, CorruptReason::InvalidLength { len }, torn));
        }
        let body_available = self.file_len - self.pos;
        if u64::from(len) > body_available {
            // `body_available < len <= max_record_size`: a bounded read.
            let mut rest = frame.to_vec();
            rest.resize(FRAME_HEADER_LEN + body_available as usize, 0);
            if !self.read_exact(&mut rest[FRAME_HEADER_LEN..])? {
                return Ok(self.eof(start));
            }
            let reason = CorruptReason::TruncatedRecord {
                len,
                available: body_available,
            };
            return Ok(self.tail_damage(start, &rest, reason));
        }
        let mut body = std::mem::take(&mut self.body);
        body.resize(len as usize, 0);
        let complete = self.read_exact(&mut body)?;
        let step = if complete {
            self.check(start, frame, crc, &body)
        } else {
            self.eof(start)
        };
        self.body = body;
        Ok(step)
    }

    /// Validates a complete frame whose body has been read.
    fn check(&mut self, start: u64, frame: [u8; FRAME_HEADER_LEN], crc: u32, body: &[u8]) -> Step {
        let computed = crc32c::crc32c(body);
        if computed != crc {
            let reason = CorruptReason::CrcMismatch {
                stored: crc,
                computed,
            };
            if self.pos == self.file_len {
                let mut rest = frame.to_vec();
                rest.extend_from_slice(body);
                return self.tail_damage(start, &rest, reason);
            }
            self.resync = true;
            return Step::Damage(Damage {
                offset: start,
                reason,
                torn: false,
                resumable: true,
            });
        }
        let rec = match record::decode_body(body) {
            Ok(rec) => rec,
            Err(reason) => {
                self.resync = true;
                return Step::Damage(Damage {
                    offset: start,
                    reason,
                    torn: false,
                    resumable: true,
                });
            }
        };
        let expected = if std::mem::take(&mut self.resync) {
            rec.seq
        } else {
            self.expected
        };
        self.expected = rec.seq.next();
        if rec.seq != expected {
            return Step::Damage(Damage {
                offset: start,
                reason: CorruptReason::SeqMismatch {
                    expected,
                    found: rec.seq,
                },
                torn: false,
                resumable: true,
            });
        }
        Step::Record(rec)
    }

    /// Damage whose frame reaches the end of the file; `rest` holds every byte from `start` to
    /// the end. Torn if this is the last segment and no intact record starts inside `rest`.
    fn tail_damage(&mut self, start: u64, rest: &[u8], reason: CorruptReason) -> Step {
        let min_seq = if self.resync {
            Seq::ZERO
        } else {
            self.expected
        };
        let torn = self.last
            && !contains_intact_record(rest.get(1..).unwrap_or(&[]), min_seq, self.max_record_size);
        self.stop(start, reason, torn)
    }

    /// Damage after which the frame extent is unknown: scanning ends here.
    fn stop(&mut self, start: u64, reason: CorruptReason, torn: bool) -> Step {
        self.pos = self.file_len;
        Step::Damage(Damage {
            offset: start,
            reason,
            torn,
            resumable: false,
        })
    }

    /// The file ended before the length measured at open: it shrank under us.
    fn eof(&mut self, start: u64) -> Step {
        self.stop(start, CorruptReason::UnexpectedEof, false)
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` if the file ended first.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<bool, LogError> {
        match self.input.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(LogError::io(IoOp::Read, &self.path, e)),
        }
    }

    /// Whether every byte from the current position to the end of the file is zero.
    fn rest_is_zero(&mut self) -> Result<bool, LogError> {
        let mut chunk = vec![0; READ_BUFFER];
        while self.pos < self.file_len {
            let n = chunk
                .len()
                .min(usize::try_from(self.file_len - self.pos).unwrap_or(usize::MAX));
            let chunk = &mut chunk[..n];
            if !self.read_exact(chunk)? {
                return Ok(false);
            }
            if chunk.iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// CRC work [`contains_intact_record`] may do beyond twice the bytes it searches.
const INTACT_SEARCH_SLACK: usize = 1 << 20;

/// Whether an intact record frame (valid length, matching CRC, sequence number `>= min_seq`)
/// starts at any offset of `bytes`.
///
/// Each candidate frame costs a CRC over its body. A real torn tail has few candidates (a
/// garbage length field is rarely valid and within the tail), but a crafted tail can make
/// every offset one, which would cost offsets × body length. Past a budget of twice the bytes
/// searched (plus [`INTACT_SEARCH_SLACK`]) the answer is "yes": the damage is then reported as
/// corruption rather than cut as a torn tail, the answer that drops nothing.
fn contains_intact_record(bytes: &[u8], min_seq: Seq, max_record_size: u32) -> bool {
    let mut budget = bytes
        .len()
        .saturating_mul(2)
        .saturating_add(INTACT_SEARCH_SLACK);
    (0..bytes.len().saturating_sub(MIN_RECORD_LEN - 1)).any(|i| {
        let Some(frame) = bytes
            .get(i..i + FRAME_HEADER_LEN)
            .and_then(|f| f.try_into().ok())
        else {
            return false;
        };
        let (len, crc) = record::frame_header(frame);
        if !record::valid_body_len(len, max_record_size) {
            return false;
        }
        let body_start = i + FRAME_HEADER_LEN;
        let Some(body) = bytes.get(body_start..body_start + len as usize) else {
            return false;
        };
        if record::body_seq(body).is_none_or(|s| s < min_seq) {
            return false;
        }
        let Some(left) = budget.checked_sub(body.len()) else {
            return true;
        };
        budget = left;
        crc32c::crc32c(body) == crc
    })
}

#[cfg(test)]
#[path = "scanner_tests.rs"]
mod tests;
