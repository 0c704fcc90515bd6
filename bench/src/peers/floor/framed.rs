//! The floor of a persistent bus's `fsync never` pipeline: [`ring_framed_append`].

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::{ring, spsc};
use crate::harness::{by_payload, Error, RunOpts, RunResult};
use crate::persist::{self, frame_record};
use crate::verify::Checker;
use crate::workload::{BenchMsg, Workload};

/// The floor of a persistent bus's `fsync never` pipeline: the workload's producer hands each
/// message through our SPSC ring (as the [`ring`](super::ring()) floor does) to a consumer
/// thread that runs the checker, then frames the message as a log record (as
/// [`persist::raw_buffered_append`] does) and writes [`persist::SHARD_BATCH`] records per
/// `write_all` to one file in a fresh directory under `dir`. Two threads and a hand-off, like
/// the bus; no routing, segments, checkpoints or sync thread.
pub fn ring_framed_append(w: &Workload, opts: &RunOpts, dir: &Path) -> Result<RunResult, Error> {
    by_payload!(w.payload, ring_framed_append_n(w, opts, dir)).map(|(result, _bytes)| result)
}

/// [`ring_framed_append`], and the bytes it wrote.
fn ring_framed_append_n<const N: usize>(
    w: &Workload,
    opts: &RunOpts,
    dir: &Path,
) -> Result<(RunResult, u64), Error> {
    opts.validate()?;
    let scratch = persist::ScratchDir::new(dir)?;
    let mut file = File::create(scratch.path().join("raw.log"))?;
    let topics = w.topic_names();
    let (mut tx, mut rx) = ring::channel(opts.capacity);
    // The first write error and the bytes written, read after the consumer is joined.
    let written: Arc<std::sync::Mutex<(Option<std::io::Error>, u64)>> = Arc::default();
    let writes = Arc::clone(&written);
    let (mut buf, mut in_buf, mut seq, mut nanos) = (Vec::new(), 0, 0u64, persist::wall_nanos());
    let mut write = move |buf: &mut Vec<u8>| {
        let result = file.write_all(buf);
        let mut w = writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(()) => w.1 += buf.len() as u64,
            Err(e) => {
                w.0.get_or_insert(e);
            }
        }
        buf.clear();
    };
    let drain = move |c: &mut Checker| {
        let more = rx.drain(|msg: BenchMsg<N>| {
            c.record(&msg);
            // The workload's topics are its names, by index.
            frame_record(&mut buf, seq, nanos, &topics[msg.topic as usize], &msg);
            seq += 1;
            in_buf += 1;
            if in_buf == persist::SHARD_BATCH {
                write(&mut buf);
                in_buf = 0;
                // One clock read per batch, as the raw buffered append.
                nanos = persist::wall_nanos();
            }
        });
        if !more && in_buf > 0 {
            write(&mut buf);
            in_buf = 0;
        }
        more
    };
    let result = spsc::<N>(w, opts, true, move |msg| tx.push(msg), drain)?;
    let (failed, bytes) = std::mem::take(
        &mut *written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    match failed {
        Some(e) => Err(e.into()),
        None => Ok((result, bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{
        assert_exact, one_spinner_at_a_time, opts, small, DISTRIBUTIONS,
    };

    /// Catches a hand-off floor that loses a message, or writes fewer (or other) records
    /// than one log record per message.
    #[test]
    fn ring_framed_append_delivers_exactly_once_and_writes_every_record() {
        let _spinning = one_spinner_at_a_time();
        let parent = std::env::temp_dir().join("shardbus-bench-test-ring-framed");
        let w = small(1, DISTRIBUTIONS[0], 16);
        let (result, bytes) = ring_framed_append_n::<16>(&w, &opts(), &parent).unwrap();
        // One record per planned message, of its topic's length.
        let plan = w.plan().unwrap();
        let expected: u64 = w
            .topic_names()
            .iter()
            .enumerate()
            .map(|(t, name)| {
                crate::persist::record_len(name, 16) as u64 * plan.expected.count(0, t)
            })
            .sum();
        assert_eq!(bytes, expected);
        assert_exact(&w, Ok(result));
        assert_eq!(
            std::fs::read_dir(&parent).unwrap().count(),
            0,
            "scratch removed"
        );
        let two = small(2, DISTRIBUTIONS[0], 16);
        assert!(matches!(
            ring_framed_append(&two, &opts(), &parent),
            Err(Error::Unsupported(_))
        ));
    }
}
