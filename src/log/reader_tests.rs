//! Unit tests of `reader.rs`.

use super::*;
use crate::log::{FsyncPolicy, LogConfig, RecordRef, ShardLog, SimStorage};

const DIR: &str = "/shard-001";

fn log(sim: &SimStorage, n: u64) -> ShardLog {
    let config = LogConfig {
        segment_size: 200,
        fsync: FsyncPolicy::Batch,
        ..LogConfig::default()
    };
    let (mut log, _) = ShardLog::open(Arc::new(sim.clone()), DIR, config).unwrap();
    append(&mut log, 0..n);
    log
}

/// Appends and commits the records `seqs`, each carrying its sequence number.
fn append(log: &mut ShardLog, seqs: std::ops::Range<u64>) {
    for i in seqs {
        let payload = i.to_le_bytes();
        log.append(&[RecordRef {
            timestamp_nanos: i,
            topic: "topic",
            payload: &payload,
        }])
        .unwrap();
    }
    log.commit().unwrap();
}

fn seqs(r: Reader) -> Vec<Result<u64, LogError>> {
    r.map(|rec| rec.map(|r| r.seq.get())).collect()
}

#[test]
fn reads_from_any_seq_across_segments() {
    let sim = SimStorage::new();
    let log = log(&sim, 20);
    let segments = sim.list_dir(Path::new(DIR)).unwrap().len();
    assert!(segments > 3, "{segments}");
    for from in 0..=21 {
        let got: Vec<u64> = log
            .reader(Seq(from))
            .unwrap()
            .map(|r| r.unwrap().seq.get())
            .collect();
        assert_eq!(got, (from..20).collect::<Vec<_>>());
    }
    let r = Reader::open(Arc::new(sim.clone()), DIR, Seq(5))
        .unwrap()
        .until(Seq(8));
    assert_eq!(
        r.map(|r| r.unwrap().seq.get()).collect::<Vec<_>>(),
        [5, 6, 7]
    );
}

#[test]
fn stops_quietly_at_a_torn_tail_and_loudly_at_corruption() {
    let sim = SimStorage::new();
    let log = log(&sim, 6);
    let last = log.segment_paths().last().unwrap().clone();
    sim.modify(&last, |d| d.truncate(d.len() - 3));
    let got: Vec<u64> = log
        .reader(Seq(0))
        .unwrap()
        .map(|r| r.unwrap().seq.get())
        .collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);

    let first = log.segment_paths()[0].clone();
    sim.modify(&first, |d| d[30] ^= 1);
    let got = seqs(log.reader(Seq(0)).unwrap());
    assert_eq!(got.len(), 1);
    assert!(matches!(&got[0], Err(LogError::Corrupt { path, offset: 16, .. }) if *path == first));
}

#[test]
fn seq_before_the_log_start_is_unavailable() {
    let sim = SimStorage::new();
    let log = log(&sim, 20);
    let first = log.segment_paths()[0].clone();
    sim.remove_file(&first).unwrap();
    let start = log.segment_paths()[1].clone();
    let start = segment::parse_segment_name(start.file_name().unwrap()).unwrap();
    assert!(matches!(
        Reader::open(Arc::new(sim.clone()), DIR, Seq(0)),
        Err(LogError::SeqUnavailable { requested: Seq(0), first_seq, .. }) if first_seq == start
    ));
}

#[test]
fn inspect_reports_instead_of_failing() {
    let sim = SimStorage::new();
    let mut log = log(&sim, 20);
    log.checkpoint(Seq(3)).unwrap();
    let report = inspect(&sim, Path::new(DIR)).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.checkpoint, Some(Seq(3)));
    assert_eq!(report.segments.iter().map(|s| s.records).sum::<u64>(), 20);
    assert_eq!(report.segments.last().unwrap().last_seq, Some(Seq(19)));

    let paths = log.segment_paths();
    // A CRC failure in the first segment (skipped), a torn tail in the last, a bad header in
    // the second.
    sim.modify(&paths[0], |d| d[40] ^= 1);
    sim.modify(&paths[1], |d| d[8] = 7);
    let last = paths.last().unwrap();
    sim.modify(last, |d| d.truncate(d.len() - 1));
    let report = inspect(&sim, Path::new(DIR)).unwrap();
    assert!(!report.is_clean());
    let s0 = &report.segments[0];
    assert_eq!((s0.crc_failures, s0.problems.len()), (1, 1));
    assert!(s0.records >= 1);
    assert!(matches!(
        report.segments[1].problems[..],
        [LogError::UnsupportedVersion { version: 7, .. }]
    ));
    let s_last = report.segments.last().unwrap();
    assert!(s_last.torn_tail_bytes > 0 && s_last.problems.is_empty());
    // Gap after the unreadable segment is reported at shard level.
    assert!(report
        .problems
        .iter()
        .all(|p| matches!(p, LogError::Corrupt { offset: 0, .. })));
}

/// Found by the `recover` fuzz target: a checkpoint but no segment (the only one renamed
/// away). Recovery refuses it (`CheckpointOutOfRange`), so `inspect` must not call it clean.
#[test]
fn inspect_checks_the_checkpoint_of_a_log_without_segments() {
    let sim = SimStorage::new();
    let dir = Path::new(DIR);
    sim.create_dir_all(dir).unwrap();
    crate::log::checkpoint::store_checkpoint(&sim, dir, Seq(0)).unwrap();
    let report = inspect(&sim, dir).unwrap();
    assert!(!report.is_clean(), "{report:?}");
    assert!(matches!(
        report.problems[..],
        [LogError::CheckpointOutOfRange {
            checkpoint: Seq(0),
            first_seq: Seq(0),
            next_seq: Seq(0),
            ..
        }]
    ));
    let recovered = crate::log::recover(Arc::new(sim), dir, Default::default());
    assert!(matches!(
        recovered,
        Err(LogError::CheckpointOutOfRange { .. })
    ));
}

/// Twenty records over several segments, the last left under its temporary name as a crash
/// in the middle of a roll leaves it (the live log appends to it until the roll's syncs are
/// done, and recovery takes it in). Returns the finalized segments and the pending one.
fn log_in_the_middle_of_a_roll(sim: &SimStorage) -> (Vec<PathBuf>, PathBuf) {
    let mut paths = log(sim, 20).segment_paths();
    let last = paths.pop().unwrap();
    let tmp = segment::temp_path(&last);
    sim.rename(&last, &tmp).unwrap();
    (paths, tmp)
}

/// Every record's sequence number; any error fails the test.
fn read(r: Reader) -> Vec<u64> {
    r.map(|rec| rec.unwrap().seq.get()).collect()
}

fn records_in(sim: &SimStorage, paths: &[PathBuf]) -> u64 {
    let report = inspect(sim, Path::new(DIR)).unwrap();
    report
        .segments
        .iter()
        .filter(|s| paths.contains(&s.path))
        .map(|s| s.records)
        .sum()
}

/// Found by the `read` fuzz target: `inspect` counted the records of a segment a roll left
/// under its temporary name (recovery takes it in), a reader stopped before them.
#[test]
fn a_segment_a_roll_left_under_its_temporary_name_is_read_where_it_continues_the_log() {
    let sim = SimStorage::new();
    let (done, tmp) = log_in_the_middle_of_a_roll(&sim);
    let before = records_in(&sim, &done);
    assert!(before < 20, "the pending segment holds records");
    let report = inspect(&sim, Path::new(DIR)).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.segments.last().unwrap().path, tmp);
    assert_eq!(report.segments.iter().map(|s| s.records).sum::<u64>(), 20);
    for from in 0..=21 {
        let got = read(Reader::open(Arc::new(sim.clone()), DIR, Seq(from)).unwrap());
        assert_eq!(got, (from..20).collect::<Vec<_>>(), "from {from}");
    }
    // Recovery (of a copy) takes it in: the same records.
    let copy = SimStorage::new();
    copy.create_dir_all(Path::new(DIR)).unwrap();
    for path in done.iter().chain([&tmp]) {
        let mut file = copy.create(path).unwrap();
        file.append(&sim.contents(path).unwrap()).unwrap();
    }
    let recovered = crate::log::recover(Arc::new(copy), DIR, Default::default()).unwrap();
    assert_eq!(recovered.report().records, 20);
    assert_eq!(
        read(recovered.replay().unwrap()),
        (0..20).collect::<Vec<_>>()
    );

    // One that does not continue the log (a record short of it), recovery removes: the log
    // ends before it, for the reader as for inspect.
    let off = tmp.with_file_name(format!("{:020}.log.tmp", before - 1));
    sim.rename(&tmp, &off).unwrap();
    let got = read(Reader::open(Arc::new(sim.clone()), DIR, Seq(0)).unwrap());
    assert_eq!(got, (0..before).collect::<Vec<_>>());
    let report = inspect(&sim, Path::new(DIR)).unwrap();
    assert_eq!(
        report.segments.iter().map(|s| s.records).sum::<u64>(),
        before
    );

    // One whose header never became complete, the same.
    sim.rename(&off, &tmp).unwrap();
    sim.modify(&tmp, |d| d.truncate(10));
    let got = read(Reader::open(Arc::new(sim.clone()), DIR, Seq(0)).unwrap());
    assert_eq!(got, (0..before).collect::<Vec<_>>());
    let report = inspect(&sim, Path::new(DIR)).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        report.segments.iter().map(|s| s.records).sum::<u64>(),
        before
    );
}

/// A storage that renames `from` to `to` (removes it if `to` is `None`) the first time a
/// length of `from` is asked for: a live log's roll finishing, or a recovery removing a stale
/// segment, between a reader's listing and its opening of the segment.
#[derive(Debug)]
struct RenamedWhileOpening {
    sim: SimStorage,
    from: PathBuf,
    to: Option<PathBuf>,
    renamed: std::sync::atomic::AtomicBool,
}

impl RenamedWhileOpening {
    fn storage(sim: &SimStorage, from: &Path, to: Option<PathBuf>) -> Arc<dyn Storage> {
        Arc::new(RenamedWhileOpening {
            sim: sim.clone(),
            from: from.to_path_buf(),
            to,
            renamed: false.into(),
        })
    }
}

impl Storage for RenamedWhileOpening {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.sim.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        self.sim.list_dir(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn crate::log::StorageFile>> {
        self.sim.create(path)
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn crate::log::StorageFile>> {
        self.sim.open_append(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.sim.read(path)
    }
    fn open_read(&self, path: &Path, offset: u64) -> io::Result<Box<dyn io::Read + Send>> {
        self.sim.open_read(path, offset)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        if path == self.from && !self.renamed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            match &self.to {
                Some(to) => self.sim.rename(&self.from, to)?,
                None => self.sim.remove_file(&self.from)?,
            }
        }
        self.sim.file_len(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.sim.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.sim.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.sim.sync_dir(dir)
    }
    fn list_subdirs(&self, dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        self.sim.list_subdirs(dir)
    }
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.sim.remove_dir_all(dir)
    }
}

#[test]
fn a_reader_follows_a_roll_that_renames_its_segment_into_place() {
    let sim = SimStorage::new();
    let (done, tmp) = log_in_the_middle_of_a_roll(&sim);
    let before = records_in(&sim, &done);
    // Between the listing that found it and the opening, the roll renames it.
    let storage = RenamedWhileOpening::storage(&sim, &tmp, Some(tmp.with_extension("")));
    let mut reader = Reader::open(storage, DIR, Seq(0)).unwrap();
    let head: Vec<u64> = (&mut reader)
        .take(before as usize)
        .map(|r| r.unwrap().seq.get())
        .collect();
    assert_eq!(head, (0..before).collect::<Vec<_>>());
    assert_eq!(read(reader), (before..20).collect::<Vec<_>>());
    assert!(sim.contents(&tmp).is_none(), "the roll renamed it");
}

#[test]
fn a_reader_goes_on_into_segments_the_log_rolled_into_after_it_opened() {
    let sim = SimStorage::new();
    let mut log = log(&sim, 20);
    let mut reader = log.reader(Seq(0)).unwrap();
    assert_eq!(reader.next().unwrap().unwrap().seq, Seq(0));
    let segments = log.segment_paths().len();
    append(&mut log, 20..50);
    assert!(log.segment_paths().len() > segments + 1);
    assert_eq!(read(reader), (1..50).collect::<Vec<_>>());
}

/// Every record's sequence number, read on another thread: a reader that never ends fails
/// the test instead of hanging it.
fn read_or_hang(r: Reader) -> Vec<u64> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(read(r)));
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the reader ends")
}

/// An empty segment starts where it ends: a reader at its end must not take it for its own
/// continuation (it did, and read it again forever).
#[test]
fn an_empty_segment_ends_the_log_unless_a_roll_continues_it() {
    let sim = SimStorage::new();
    let open = || Reader::open(Arc::new(sim.clone()), DIR, Seq(0)).unwrap();
    let empty = log(&sim, 0).segment_paths();
    assert_eq!(read_or_hang(open()), Vec::<u64>::new());

    // Records under the temporary name of that segment: recovery takes them in, over it.
    let tmp = segment::temp_path(&empty[0]);
    let mut file = sim.create(&tmp).unwrap();
    file.append(&sim.contents(&empty[0]).unwrap()).unwrap();
    let report = inspect(&sim, Path::new(DIR)).unwrap();
    assert_eq!(report.segments.len(), 2, "{report:?}");
    assert_eq!(read_or_hang(open()), Vec::<u64>::new(), "an empty one");
    let other = SimStorage::new();
    let full = log(&other, 3).segment_paths();
    file.append(&other.contents(&full[0]).unwrap()[16..])
        .unwrap();
    let report = inspect(&sim, Path::new(DIR)).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.segments.iter().map(|s| s.records).sum::<u64>(), 3);
    assert_eq!(read_or_hang(open()), [0, 1, 2]);
}

#[test]
fn a_reader_ends_where_a_recovery_removed_the_segment_it_was_about_to_open() {
    let sim = SimStorage::new();
    let (done, tmp) = log_in_the_middle_of_a_roll(&sim);
    let before = records_in(&sim, &done);
    let storage = RenamedWhileOpening::storage(&sim, &tmp, None);
    let reader = Reader::open(storage, DIR, Seq(0)).unwrap();
    assert_eq!(read(reader), (0..before).collect::<Vec<_>>());
    assert!(sim.contents(&tmp).is_none(), "removed");
}

/// A reader that reached `until` at a segment's end looks no further: a damaged segment
/// after it is not its business.
#[test]
fn a_bounded_reader_stops_at_its_end_before_the_next_segment() {
    let sim = SimStorage::new();
    let (done, tmp) = log_in_the_middle_of_a_roll(&sim);
    let before = records_in(&sim, &done);
    sim.modify(&tmp, |d| d[30] ^= 1);
    let open = || Reader::open(Arc::new(sim.clone()), DIR, Seq(0)).unwrap();
    assert_eq!(
        read(open().until(Seq(before))),
        (0..before).collect::<Vec<_>>()
    );
    let unbounded: Vec<_> = open().map(|r| r.map(|r| r.seq.get())).collect();
    assert_eq!(unbounded.len() as u64, before + 1);
    assert!(matches!(unbounded.last(), Some(Err(LogError::Corrupt { path, .. })) if *path == tmp));
}

/// A live log can roll twice behind a reader: the segment it read under its temporary name
/// is renamed into place and the next one started under its own.
#[test]
fn a_reader_follows_a_second_roll_once_the_first_is_renamed_into_place() {
    let sim = SimStorage::new();
    let paths = log(&sim, 20).segment_paths();
    assert!(paths.len() > 3, "{paths:?}");
    let counts: Vec<u64> = inspect(&sim, Path::new(DIR))
        .unwrap()
        .segments
        .iter()
        .map(|s| s.records)
        .collect();
    let (first_two, three) = (counts[0] + counts[1], counts[0] + counts[1] + counts[2]);
    for later in &paths[3..] {
        sim.remove_file(later).unwrap();
    }
    let third = sim.contents(&paths[2]).unwrap();
    sim.remove_file(&paths[2]).unwrap();
    let second_tmp = segment::temp_path(&paths[1]);
    sim.rename(&paths[1], &second_tmp).unwrap();

    let mut reader = Reader::open(Arc::new(sim.clone()), DIR, Seq(0)).unwrap();
    let head: Vec<u64> = (&mut reader)
        .take(first_two as usize)
        .map(|r| r.unwrap().seq.get())
        .collect();
    assert_eq!(head, (0..first_two).collect::<Vec<_>>());
    // The log renames the second into place and starts the third under its temporary name.
    sim.rename(&second_tmp, &paths[1]).unwrap();
    let mut file = sim.create(&segment::temp_path(&paths[2])).unwrap();
    file.append(&third).unwrap();
    assert_eq!(read(reader), (first_two..three).collect::<Vec<_>>());
}
