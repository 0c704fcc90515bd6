//! A batch's records built in place: each record's header and topic, then its payload as
//! the codec appends it right behind them, back to back in one buffer that the log
//! writes as it stands (the payload's one copy on its way to the file is the codec's).
//!
//! The codec is user code. A refusal or a panic costs that message its record (it is
//! dead-lettered). A codec that breaks its contract (`Codec::encode` must only append) by
//! removing or changing bytes before its own would damage other records, so the batch is
//! checked after it is framed: if a codec removed bytes, or any record's header is not
//! what was written, the batch is framed again with each payload encoded into a buffer of
//! its own first and copied behind its header, where no codec can reach another record.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::codec::CodecFns;
use crate::inbox::Envelope;
use crate::log::{begin_frame, finish_frame, frame_is, Seq};
use crate::route::TopicKey;
use crate::supervise::panic_text;

use super::{is_logged, too_large, Unencoded, NOT_ENCODED};

/// Where a batch's records go: `frames` (the records), `starts` (where each logged one
/// begins), `spans` (one per message: its record's bytes, or a marker), `errors` (one
/// per [`NOT_ENCODED`] span, in order) and `scratch` (a payload's own buffer, used only
/// when a codec broke its contract).
pub(super) struct Framed<'a> {
    pub(super) frames: &'a mut Vec<u8>,
    pub(super) starts: &'a mut Vec<usize>,
    pub(super) spans: &'a mut Vec<(usize, usize)>,
    pub(super) errors: &'a mut Vec<Unencoded>,
    pub(super) scratch: &'a mut Vec<u8>,
}

/// What every record of a batch shares.
pub(super) struct BatchInfo {
    /// The sequence number of the batch's first record.
    pub(super) first: Seq,
    pub(super) timestamp_nanos: u64,
    /// The maximum record size.
    pub(super) max: usize,
}

/// Where the codec writes a payload.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Right behind its record's header.
    InPlace,
    /// Into a buffer of its own, then copied behind the header.
    Apart,
}

/// Builds the records of `batch` in `out` (cleared first). `names` holds the name of every
/// topic index in the batch.
pub(super) fn frame_batch<T>(
    codec: CodecFns<T>,
    batch: &[Envelope<T>],
    names: &[TopicKey],
    info: &BatchInfo,
    out: &mut Framed<'_>,
) {
    if frame_all(codec, batch, names, info, out, Mode::InPlace)
        && out.headers_intact(batch, names, info)
    {
        return;
    }
    frame_all(codec, batch, names, info, out, Mode::Apart);
}

/// [`frame_batch`] in one mode. `false` if, in place, a codec removed bytes before its
/// own (the frames are then not to be used).
fn frame_all<T>(
    codec: CodecFns<T>,
    batch: &[Envelope<T>],
    names: &[TopicKey],
    info: &BatchInfo,
    out: &mut Framed<'_>,
    mode: Mode,
) -> bool {
    out.frames.clear();
    out.starts.clear();
    out.spans.clear();
    out.errors.clear();
    // One `catch_unwind` per batch, not per message. A panic marks its message (the one
    // whose span is missing) and the loop resumes after it.
    let mut next = 0;
    while next < batch.len() {
        let mut intact = true;
        let encoded = catch_unwind(AssertUnwindSafe(|| {
            for env in &batch[next..] {
                if !frame_one(codec, env, names, info, out, mode) {
                    intact = false;
                    return;
                }
            }
        }));
        if !intact {
            return false;
        }
        next = out.spans.len();
        if let Err(payload) = encoded {
            // `batch[next]` panicked: whatever it appended goes.
            let end = out.logged_end();
            if out.frames.len() < end {
                return false;
            }
            out.frames.truncate(end);
            out.spans.push(NOT_ENCODED);
            out.errors
                .push(Unencoded::Panicked(panic_text(&*payload).to_owned()));
            next += 1;
        }
    }
    true
}

/// Builds one message's record at the end of `out.frames`, or marks it. `false` if, in
/// place, the codec removed bytes before its own.
#[inline]
fn frame_one<T>(
    codec: CodecFns<T>,
    env: &Envelope<T>,
    names: &[TopicKey],
    info: &BatchInfo,
    out: &mut Framed<'_>,
    mode: Mode,
) -> bool {
    let topic = names[env.topic as usize].record_name();
    let seq = Seq(info.first.get() + out.starts.len() as u64);
    let (start, result) = match mode {
        Mode::InPlace => {
            let start = begin_frame(out.frames, seq, info.timestamp_nanos, topic);
            let payload = out.frames.len();
            let result = (codec.encode)(&env.msg, out.frames);
            if out.frames.len() < payload {
                return false;
            }
            (start, result)
        }
        Mode::Apart => {
            out.scratch.clear();
            let result = (codec.encode)(&env.msg, out.scratch);
            let start = begin_frame(out.frames, seq, info.timestamp_nanos, topic);
            out.frames.extend_from_slice(out.scratch);
            (start, result)
        }
    };
    if let Err(e) = result {
        // It encoded on the publishing thread (a codec that can fail is checked there),
        // or this codec said it cannot fail: not deterministic. Never logged;
        // dead-lettered with the error.
        out.frames.truncate(start);
        out.spans.push(NOT_ENCODED);
        out.errors.push(Unencoded::Refused(e));
        return true;
    }
    let size = out.frames.len() - start;
    if size > info.max {
        out.frames.truncate(start);
        out.spans.push(too_large(size));
    } else {
        finish_frame(out.frames, start);
        out.starts.push(start);
        out.spans.push((start, out.frames.len()));
    }
    true
}

impl Framed<'_> {
    /// Where the last logged record ends (0 if none is).
    fn logged_end(&self) -> usize {
        self.spans
            .iter()
            .rev()
            .find(|span| is_logged(**span))
            .map_or(0, |span| span.1)
    }

    /// Whether every logged record's header still says what was written: its length,
    /// sequence number, timestamp and topic (a codec may have changed bytes before its
    /// own without removing any).
    fn headers_intact<T>(
        &self,
        batch: &[Envelope<T>],
        names: &[TopicKey],
        info: &BatchInfo,
    ) -> bool {
        let mut seq = info.first.get();
        for (env, &span) in batch.iter().zip(self.spans.iter()) {
            if !is_logged(span) {
                continue;
            }
            let topic = names[env.topic as usize].record_name();
            let record = &self.frames[span.0..span.1];
            if !frame_is(record, Seq(seq), info.timestamp_nanos, topic) {
                return false;
            }
            seq += 1;
        }
        true
    }
}
