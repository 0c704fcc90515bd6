//! The floors of a persistent bus's `fsync never` pipeline: [`ring_framed_append`] (the
//! bus's split of the work: the consumer frames and writes), and two other splits of the same
//! work over the same ring, [`ring_framed_append_writer`] (the write on a third thread) and
//! [`ring_preframed_append`] (the producer frames, the consumer writes).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;

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
    by_payload!(w.payload, ring_framed_append_n(w, opts, dir, None)).map(|(result, _bytes)| result)
}

/// [`ring_framed_append`] with a third thread that syncs the file behind the consumer every
/// [`persist::CHECKPOINT_RECORDS`] records, as a persistent bus's sync thread syncs its log
/// before each checkpoint under `fsync never` (see
/// [`persist::raw_buffered_append_synced`]). The consumer never waits for it.
pub fn ring_framed_append_synced(
    w: &Workload,
    opts: &RunOpts,
    dir: &Path,
) -> Result<RunResult, Error> {
    let every = Some(persist::CHECKPOINT_RECORDS);
    by_payload!(w.payload, ring_framed_append_n(w, opts, dir, every)).map(|(result, _)| result)
}

/// [`ring_framed_append`], and the bytes it wrote; with `sync_every`, synced behind.
fn ring_framed_append_n<const N: usize>(
    w: &Workload,
    opts: &RunOpts,
    dir: &Path,
    sync_every: Option<u64>,
) -> Result<(RunResult, u64), Error> {
    let (_scratch, mut file) = floor_log(opts, dir)?;
    let (syncer, mut asker) = sync_behind(&file, sync_every)?;
    let topics = w.topic_names();
    let (mut tx, mut rx) = ring::channel(opts.capacity);
    let written = Written::default();
    let writes = Arc::clone(&written);
    let (mut buf, mut in_buf, mut seq, mut nanos) = (Vec::new(), 0, 0u64, persist::wall_nanos());
    let mut write = move |buf: &mut Vec<u8>, records: u64| {
        write_noting(&mut file, buf, &writes);
        buf.clear();
        if let Some(asker) = asker.as_mut() {
            asker.wrote(records);
        }
    };
    let drain = move |c: &mut Checker| {
        let more = rx.drain(|msg: BenchMsg<N>| {
            c.record(&msg);
            // The workload's topics are its names, by index.
            frame_record(&mut buf, seq, nanos, &topics[msg.topic as usize], &msg);
            seq += 1;
            in_buf += 1;
            if in_buf == persist::SHARD_BATCH {
                write(&mut buf, seq);
                in_buf = 0;
                // One clock read per batch, as the raw buffered append.
                nanos = persist::wall_nanos();
            }
        });
        if !more && in_buf > 0 {
            write(&mut buf, seq);
            in_buf = 0;
        }
        more
    };
    let result = spsc::<N>(w, opts, true, move |msg| tx.push(msg), drain);
    finish(syncer, result, &written)
}

/// With `sync_every`: a thread that syncs `file` behind its writer, and the writer's side.
fn sync_behind(
    file: &File,
    sync_every: Option<u64>,
) -> Result<(Option<persist::SyncBehind>, Option<persist::SyncAsker>), Error> {
    let syncer = sync_every
        .map(|every| persist::SyncBehind::start(file, every))
        .transpose()?;
    let asker = syncer.as_ref().map(persist::SyncBehind::asker);
    Ok((syncer, asker))
}

/// Stops the sync thread, then [`with_written`]; the first error of the run, the syncs or
/// the writes.
fn finish<R>(
    syncer: Option<persist::SyncBehind>,
    result: Result<R, Error>,
    written: &Written,
) -> Result<(R, u64), Error> {
    let synced = syncer.map_or(Ok(0), persist::SyncBehind::finish);
    let result = with_written(result, written)?;
    synced.map(|_| result)
}

/// Checks `opts`, then makes a fresh directory under `dir` (removed when the returned
/// guard drops) and the file a floor writes its records to.
fn floor_log(opts: &RunOpts, dir: &Path) -> Result<(persist::ScratchDir, File), Error> {
    opts.validate()?;
    let scratch = persist::ScratchDir::new(dir)?;
    let file = File::create(scratch.path().join("raw.log"))?;
    Ok((scratch, file))
}

/// The first write error and the bytes written, shared with the thread that writes.
type Written = Arc<Mutex<(Option<std::io::Error>, u64)>>;

/// Writes `buf` to `file`, noting the bytes or the first error in `written`.
fn write_noting(file: &mut File, buf: &[u8], written: &Written) {
    let result = file.write_all(buf);
    let mut w = written.lock().unwrap_or_else(PoisonError::into_inner);
    match result {
        Ok(()) => w.1 += buf.len() as u64,
        Err(e) => {
            w.0.get_or_insert(e);
        }
    }
}

/// `result`, unless a write failed.
fn with_written<R>(result: Result<R, Error>, written: &Written) -> Result<(R, u64), Error> {
    let result = result?;
    let (failed, bytes) =
        std::mem::take(&mut *written.lock().unwrap_or_else(PoisonError::into_inner));
    match failed {
        Some(e) => Err(e.into()),
        None => Ok((result, bytes)),
    }
}

/// [`ring_framed_append`] with the `write` moved to a third thread, in the write-ahead order
/// a bus keeps: the consumer frames a batch of [`persist::SHARD_BATCH`] records while the
/// writer thread writes the previous one, and runs the checker on a batch's messages only
/// after its write returned (two buffers, handed over through two `sync_channel`s). The
/// writer thread is not pinned: with the producer and the consumer pinned, it shares their
/// cores.
pub fn ring_framed_append_writer(
    w: &Workload,
    opts: &RunOpts,
    dir: &Path,
) -> Result<RunResult, Error> {
    by_payload!(w.payload, writer_n(w, opts, dir)).map(|(result, _bytes)| result)
}

/// [`ring_framed_append_writer`], and the bytes it wrote.
fn writer_n<const N: usize>(
    w: &Workload,
    opts: &RunOpts,
    dir: &Path,
) -> Result<(RunResult, u64), Error> {
    let (_scratch, mut file) = floor_log(opts, dir)?;
    let topics = w.topic_names();
    let (mut tx, mut rx) = ring::channel(opts.capacity);
    let written = Written::default();
    let (to_writer, writer_gets) = mpsc::sync_channel::<Vec<u8>>(1);
    let (writer_returns, from_writer) = mpsc::sync_channel::<Vec<u8>>(1);
    let writes = Arc::clone(&written);
    let writer = thread::Builder::new()
        .name("floor-writer".into())
        .spawn(move || {
            // Ends when the consumer drops its sender (its closure is dropped with the run).
            while let Ok(mut buf) = writer_gets.recv() {
                write_noting(&mut file, &buf, &writes);
                buf.clear();
                if writer_returns.send(buf).is_err() {
                    break;
                }
            }
        })
        .map_err(|source| Error::Spawn {
            name: "floor-writer".into(),
            source,
        })?;
    // `framing` fills while the writer holds the other buffer; `staged` holds the messages
    // framed into `framing`, `at_writer` those of the buffer at the writer.
    let (mut framing, mut spare) = (Vec::new(), Some(Vec::new()));
    let (mut staged, mut at_writer) = (Vec::<BenchMsg<N>>::new(), Vec::<BenchMsg<N>>::new());
    let (mut seq, mut nanos) = (0u64, persist::wall_nanos());
    // Waits for the writer's buffer back (its batch is in the file), checks that batch, and
    // hands the writer `framing`. Once the writer is gone (it panicked), batches are dropped
    // unchecked: the run fails verification, then the panic is passed on below.
    let mut writer_gone = false;
    let mut hand_over = move |framing: &mut Vec<u8>,
                              staged: &mut Vec<BenchMsg<N>>,
                              at_writer: &mut Vec<BenchMsg<N>>,
                              c: &mut Checker| {
        let empty = match spare.take().map(Ok).unwrap_or_else(|| from_writer.recv()) {
            Ok(buf) if !writer_gone => buf,
            _ => {
                writer_gone = true;
                framing.clear();
                staged.clear();
                return;
            }
        };
        at_writer.drain(..).for_each(|msg| c.record(&msg));
        std::mem::swap(at_writer, staged);
        writer_gone = to_writer.send(std::mem::replace(framing, empty)).is_err();
    };
    let drain = move |c: &mut Checker| {
        let more = rx.drain(|msg: BenchMsg<N>| {
            frame_record(&mut framing, seq, nanos, &topics[msg.topic as usize], &msg);
            staged.push(msg);
            seq += 1;
            if staged.len() == persist::SHARD_BATCH {
                hand_over(&mut framing, &mut staged, &mut at_writer, c);
                nanos = persist::wall_nanos();
            }
        });
        if !more {
            // The last, short batch; then an empty one, which waits for it and checks it.
            hand_over(&mut framing, &mut staged, &mut at_writer, c);
            hand_over(&mut framing, &mut staged, &mut at_writer, c);
        }
        more
    };
    let result = spsc::<N>(w, opts, true, move |msg| tx.push(msg), drain);
    // A panic on the writer thread is a bug of this floor: passed on, as `harness::join` does.
    if let Err(panic) = writer.join() {
        std::panic::resume_unwind(panic);
    }
    with_written(result, &written)
}

/// The largest record [`ring_preframed_append`] carries: a 256 B payload's record with a
/// topic name of up to 16 bytes (the workload's are `topic-{i}`) is 322 bytes.
const MAX_PREFRAMED: usize = 384;

/// A message and its log record, framed by the producer.
struct Preframed<const N: usize> {
    msg: BenchMsg<N>,
    len: u16,
    record: [u8; MAX_PREFRAMED],
}

/// [`ring_framed_append`] with the framing moved to the producer: it frames each message
/// (the codec's bytes, the framing, CRC32C, as [`persist::raw_buffered_append`] does) and
/// pushes the message with its record through the ring; the consumer runs the checker, copies
/// the record into its buffer and writes [`persist::SHARD_BATCH`] records per `write_all`.
/// The ceiling of a bus whose publishing threads encode and frame, leaving the shard the
/// copy, the `write` and the handler.
pub fn ring_preframed_append(w: &Workload, opts: &RunOpts, dir: &Path) -> Result<RunResult, Error> {
    by_payload!(w.payload, preframed_n(w, opts, dir, None)).map(|(result, _bytes)| result)
}

/// [`ring_preframed_append`] with a third thread that syncs the file behind the consumer
/// every [`persist::CHECKPOINT_RECORDS`] records, as [`ring_framed_append_synced`] does.
pub fn ring_preframed_append_synced(
    w: &Workload,
    opts: &RunOpts,
    dir: &Path,
) -> Result<RunResult, Error> {
    let every = Some(persist::CHECKPOINT_RECORDS);
    by_payload!(w.payload, preframed_n(w, opts, dir, every)).map(|(result, _)| result)
}

/// [`ring_preframed_append`], and the bytes it wrote.
fn preframed_n<const N: usize>(
    w: &Workload,
    opts: &RunOpts,
    dir: &Path,
    sync_every: Option<u64>,
) -> Result<(RunResult, u64), Error> {
    let topics = w.topic_names();
    if topics
        .iter()
        .any(|t| persist::record_len(t, N) > MAX_PREFRAMED)
    {
        return Err(Error::Unsupported(
            "the pre-framed floor carries records of at most 384 bytes",
        ));
    }
    let (_scratch, mut file) = floor_log(opts, dir)?;
    let (syncer, mut asker) = sync_behind(&file, sync_every)?;
    let (mut tx, mut rx) = ring::channel::<Preframed<N>>(opts.capacity);
    let written = Written::default();
    let writes = Arc::clone(&written);
    let (mut buf, mut in_buf, mut records) = (Vec::new(), 0, 0u64);
    let mut write = move |buf: &mut Vec<u8>, records: u64| {
        write_noting(&mut file, buf, &writes);
        buf.clear();
        if let Some(asker) = asker.as_mut() {
            asker.wrote(records);
        }
    };
    let drain = move |c: &mut Checker| {
        let more = rx.drain(|p: Preframed<N>| {
            c.record(&p.msg);
            buf.extend_from_slice(&p.record[..usize::from(p.len)]);
            in_buf += 1;
            records += 1;
            if in_buf == persist::SHARD_BATCH {
                write(&mut buf, records);
                in_buf = 0;
            }
        });
        if !more && in_buf > 0 {
            write(&mut buf, records);
            in_buf = 0;
        }
        more
    };
    let (mut seq, mut framed, mut nanos) = (0u64, 0usize, persist::wall_nanos());
    let mut scratch_record = Vec::with_capacity(MAX_PREFRAMED);
    let send = move |msg: BenchMsg<N>| {
        scratch_record.clear();
        frame_record(
            &mut scratch_record,
            seq,
            nanos,
            &topics[msg.topic as usize],
            &msg,
        );
        seq += 1;
        framed += 1;
        if framed == persist::SHARD_BATCH {
            // One clock read per batch of records, as the consumer-side floors.
            framed = 0;
            nanos = persist::wall_nanos();
        }
        let mut p = Preframed {
            msg,
            // Cannot truncate: checked against `MAX_PREFRAMED` above.
            len: scratch_record.len() as u16,
            record: [0; MAX_PREFRAMED],
        };
        p.record[..scratch_record.len()].copy_from_slice(&scratch_record);
        tx.push(p);
    };
    finish(syncer, spsc::<N>(w, opts, true, send, drain), &written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{
        assert_exact, one_spinner_at_a_time, opts, small, DISTRIBUTIONS,
    };

    /// A floor that also returns the bytes it wrote.
    type Counted<'a> = &'a dyn Fn(&Workload, &RunOpts, &Path) -> Result<(RunResult, u64), Error>;

    /// [`Counted`] with its syncs behind the writer, if any.
    type CountedSynced =
        fn(&Workload, &RunOpts, &Path, Option<u64>) -> Result<(RunResult, u64), Error>;

    type Floor = fn(&Workload, &RunOpts, &Path) -> Result<RunResult, Error>;

    /// [`assert_floor`] for a floor and its form synced behind (`floors`), the counted
    /// runs without syncs, then syncing every 7 records (so that the small workloads sync
    /// many times): the syncs change nothing of what is written.
    fn assert_floor_synced(name: &str, floors: [Floor; 2], counted: [CountedSynced; 2]) {
        for (floor, sync_every) in floors.into_iter().zip([None, Some(7)]) {
            let runs =
                counted.map(|c| move |w: &Workload, o: &RunOpts, d: &Path| c(w, o, d, sync_every));
            let name = format!(
                "{name}-{}",
                if sync_every.is_some() {
                    "synced"
                } else {
                    "plain"
                }
            );
            assert_floor(&name, floor, [&runs[0], &runs[1]]);
        }
    }

    /// Every split of the pipeline delivers each message once, writes one record per
    /// message, of its topic's length, removes its scratch directory, and refuses a workload
    /// of two producers.
    fn assert_floor(name: &str, floor: Floor, counted: [Counted<'_>; 2]) {
        let _spinning = one_spinner_at_a_time();
        let parent = std::env::temp_dir().join(format!("shardbus-bench-test-{name}"));
        let sixteen = small(1, DISTRIBUTIONS[0], 16);
        let two_fifty_six = small(1, DISTRIBUTIONS[1], 256);
        for (w, run) in [(&sixteen, counted[0]), (&two_fifty_six, counted[1])] {
            let (result, bytes) = run(w, &opts(), &parent).unwrap();
            let plan = w.plan().unwrap();
            let expected: u64 = w
                .topic_names()
                .iter()
                .enumerate()
                .map(|(t, topic)| {
                    crate::persist::record_len(topic, w.payload) as u64 * plan.expected.count(0, t)
                })
                .sum();
            assert_eq!(bytes, expected, "{name}, {} B", w.payload);
            assert_exact(w, Ok(result));
            assert_eq!(
                std::fs::read_dir(&parent).unwrap().count(),
                0,
                "scratch removed"
            );
        }
        let two = small(2, DISTRIBUTIONS[0], 16);
        assert!(matches!(
            floor(&two, &opts(), &parent),
            Err(Error::Unsupported(_))
        ));
    }

    /// Catches a hand-off floor that loses a message, or writes fewer (or other) records
    /// than one log record per message; the same synced behind.
    #[test]
    fn ring_framed_append_delivers_exactly_once_and_writes_every_record() {
        assert_floor_synced(
            "ring-framed",
            [ring_framed_append, ring_framed_append_synced],
            [ring_framed_append_n::<16>, ring_framed_append_n::<256>],
        );
    }

    /// The same for the write on a third thread: also catches the last (short) batch never
    /// written or never checked.
    #[test]
    fn ring_framed_append_writer_delivers_exactly_once_and_writes_every_record() {
        assert_floor(
            "ring-framed-writer",
            ring_framed_append_writer,
            [&writer_n::<16>, &writer_n::<256>],
        );
    }

    /// The same for the records framed by the producer, and synced behind.
    #[test]
    fn ring_preframed_append_delivers_exactly_once_and_writes_every_record() {
        assert_floor_synced(
            "ring-preframed",
            [ring_preframed_append, ring_preframed_append_synced],
            [preframed_n::<16>, preframed_n::<256>],
        );
    }
}
