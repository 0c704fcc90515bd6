//! The write path of [`ShardLog`]: records encoded here or framed by the caller, sealed,
//! written to the active segment, and the segment rolled when the next would overflow it.

use std::time::Instant;

use super::{record, FsyncPolicy, LogError, RecordRef, ShardLog};

impl ShardLog {
    /// Encodes `records` into the log's buffer and writes them, rolling the segment when
    /// the next record would overflow it.
    pub(super) fn write_batch<'a>(
        &mut self,
        records: impl Iterator<Item = RecordRef<'a>>,
    ) -> Result<(), LogError> {
        self.buf.clear();
        self.unsealed.clear();
        for rec in records {
            let rec = &rec;
            let meta = &self.active.meta;
            let pending = meta.bytes + self.buf.len() as u64;
            if meta.records() > 0 && pending + rec.encoded_len() > self.config.segment_size {
                self.flush()?;
                self.roll()?;
            }
            let start = record::encode_unsealed(&mut self.buf, self.next_seq, rec);
            self.unsealed.push(start);
            self.active.meta.add(self.next_seq, rec.timestamp_nanos);
            self.next_seq = self.next_seq.next();
            if self.config.fsync == FsyncPolicy::Always {
                self.flush()?;
                self.sync_active()?;
            }
        }
        self.flush()
    }

    /// [`append_frames`](Self::append_frames) past its checks: `frames[..written]` is in
    /// the active segment (or an earlier one).
    pub(super) fn write_frames(
        &mut self,
        frames: &mut [u8],
        starts: &[usize],
        timestamp_nanos: u64,
    ) -> Result<(), LogError> {
        debug_assert!(starts.first().is_none_or(|&s| s == 0));
        record::seal(frames, starts);
        let mut written = 0;
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(frames.len());
            debug_assert_eq!(frames[start + 8..start + 16], self.next_seq.0.to_le_bytes());
            let meta = &self.active.meta;
            let pending = meta.bytes + (start - written) as u64;
            if meta.records() > 0 && pending + (end - start) as u64 > self.config.segment_size {
                self.write_out(&frames[written..start])?;
                written = start;
                self.roll()?;
            }
            self.active.meta.add(self.next_seq, timestamp_nanos);
            self.next_seq = self.next_seq.next();
            if self.config.fsync == FsyncPolicy::Always {
                self.write_out(&frames[written..end])?;
                written = end;
                self.sync_active()?;
            }
        }
        self.write_out(&frames[written..])
    }

    /// Writes the encoded records in `buf` to the active segment.
    pub(super) fn flush(&mut self) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        record::seal(&mut self.buf, &self.unsealed);
        self.unsealed.clear();
        let buf = std::mem::take(&mut self.buf);
        let result = self.write_out(&buf);
        self.buf = buf;
        self.buf.clear();
        result
    }

    /// Writes sealed records to the active segment.
    fn write_out(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.active.append(bytes)?;
        self.appended += bytes.len() as u64;
        self.dirty_since.get_or_insert_with(Instant::now);
        Ok(())
    }
}
