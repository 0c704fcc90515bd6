//! The log on the real filesystem (`FsStorage`): round trips, rolls, reopen, and the errors a
//! bad directory or a foreign file produce.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::{config, expected, read_all, refs, Msg, TestDir};
use shardbus::log::{
    inspect, recover, FsStorage, FsyncPolicy, LogConfig, RecoveryOptions, Seq, ShardLog, Storage,
};
use shardbus::log::{CorruptReason, IoOp, LogError};

fn fs() -> Arc<dyn Storage> {
    Arc::new(FsStorage)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_roll_reopen_and_continue() {
    let tmp = TestDir::new("roundtrip");
    let dir = tmp.path().join("shard-000");
    let msgs: Vec<Msg> = (0..50)
        .map(|i| Msg::new(i, (i as usize * 7) % 90))
        .collect();
    let cfg = config(1024, FsyncPolicy::Batch);

    let (mut log, recovered) = ShardLog::open(fs(), &dir, cfg.clone()).unwrap();
    assert_eq!(
        (recovered.next_seq(), recovered.checkpoint()),
        (Seq(0), None)
    );
    assert_eq!(log.append(&refs(&msgs[..20])).unwrap(), Seq(0)..Seq(20));
    log.commit().unwrap();
    assert_eq!(log.append(&refs(&msgs[20..30])).unwrap(), Seq(20)..Seq(30));
    log.commit().unwrap();
    let segments = log.segment_paths();
    assert!(segments.len() >= 2, "expected a roll, got {segments:?}");
    for path in &segments {
        assert!(fs::metadata(path).unwrap().len() <= 1024);
    }
    // Segment names are the first seq of each, and nothing else is in the directory.
    let listed = names(&dir);
    let from_log: Vec<String> = segments
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, from_log);
    assert_eq!(listed[0], "00000000000000000000.log");
    drop(log);

    let (mut log, recovered) = ShardLog::open(fs(), &dir, cfg.clone()).unwrap();
    assert_eq!(recovered.next_seq(), Seq(30));
    assert_eq!(recovered.report().records, 30);
    assert_eq!(recovered.report().segments, segments.len());
    assert_eq!(recovered.report().torn_bytes, 0);
    let replayed: Vec<_> = recovered
        .replay()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(replayed, expected(&msgs[..30], 0));

    assert_eq!(log.append(&refs(&msgs[30..])).unwrap(), Seq(30)..Seq(50));
    log.checkpoint(Seq(41)).unwrap();
    log.close().unwrap();

    let (log, recovered) = ShardLog::open(fs(), &dir, cfg).unwrap();
    assert_eq!(
        (recovered.next_seq(), recovered.checkpoint()),
        (Seq(50), Some(Seq(41)))
    );
    let replayed: Vec<_> = recovered
        .replay()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(replayed, expected(&msgs[42..], 42));
    assert_eq!(read_all(fs(), &dir), expected(&msgs, 0));
    assert_eq!(log.next_seq(), Seq(50));

    let report = inspect(&FsStorage, &dir).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.checkpoint, Some(Seq(41)));
    assert_eq!(report.segments.iter().map(|s| s.records).sum::<u64>(), 50);
    assert_eq!(
        report.segments.iter().map(|s| s.bytes).sum::<u64>(),
        log.size_bytes()
    );
}

/// Each segment's disk space is reserved up to the segment size when it becomes the one
/// appended to (`fallocate` with `FALLOC_FL_KEEP_SIZE`): the blocks are there, but the
/// file's length, all that recovery and readers see, is only what was written.
#[cfg(target_os = "linux")]
#[test]
fn segments_are_preallocated_without_changing_their_length() {
    use std::os::unix::fs::MetadataExt;
    let tmp = TestDir::new("prealloc");
    let dir = tmp.path().join("shard-000");
    let seg: u64 = 1 << 20;
    let cfg = config(seg, FsyncPolicy::Never);
    // `st_blocks` counts 512-byte units whatever the filesystem's block size.
    let reserved = |path: &Path| fs::metadata(path).unwrap().blocks() * 512;

    let (mut log, _) = ShardLog::open(fs(), &dir, cfg.clone()).unwrap();
    let first = log.segment_paths()[0].clone();
    assert_eq!(fs::metadata(&first).unwrap().len(), 16, "header only");
    assert!(
        reserved(&first) >= seg,
        "{} bytes reserved",
        reserved(&first)
    );

    // 300 records of ~4 KiB: more than one segment.
    let msgs: Vec<Msg> = (0..300).map(|i| Msg::new(i, 4000)).collect();
    for chunk in msgs.chunks(50) {
        log.append(&refs(chunk)).unwrap();
    }
    let segments = log.segment_paths();
    assert_eq!(segments.len(), 2, "{segments:?}");
    let lengths: u64 = segments
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(lengths, log.size_bytes());
    assert!(reserved(&segments[1]) >= seg, "the rolled-to segment too");
    drop(log);

    // Reopened: the reserved space beyond the end is invisible to recovery.
    let (log, recovered) = ShardLog::open(fs(), &dir, cfg).unwrap();
    assert_eq!(recovered.next_seq(), Seq(300));
    assert_eq!(recovered.report().torn_bytes, 0);
    assert_eq!(read_all(fs(), &dir), expected(&msgs, 0));
    assert!(reserved(&segments[1]) >= seg);
    drop(log);
    let report = inspect(&FsStorage, &dir).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

/// `Storage::create` makes a new file, or empties an existing one (a leftover `.tmp` of an
/// interrupted segment creation) before the first append.
#[test]
fn create_truncates_an_existing_file_and_appends_from_its_start() {
    let tmp = TestDir::new("create");
    let path = tmp.path().join("x.log.tmp");
    fs::write(&path, b"stale bytes of an interrupted write").unwrap();
    let mut file = FsStorage.create(&path).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    file.append(b"new").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");

    let fresh = tmp.path().join("y.log.tmp");
    FsStorage.create(&fresh).unwrap().append(b"abc").unwrap();
    assert_eq!(fs::read(&fresh).unwrap(), b"abc");
}

#[test]
fn the_segment_header_is_the_documented_bytes() {
    let tmp = TestDir::new("header");
    let (log, _) = ShardLog::open(fs(), tmp.path(), LogConfig::default()).unwrap();
    let bytes = fs::read(&log.segment_paths()[0]).unwrap();
    assert_eq!(bytes, b"SHBUSLOG\x01\0\0\0\0\0\0\0");
}

#[test]
fn a_missing_directory_is_created_by_open_and_an_error_for_readers() {
    let tmp = TestDir::new("missing");
    let dir = tmp.path().join("a/b/shard-003");
    assert!(matches!(
        recover(fs(), &dir, RecoveryOptions::default()),
        Err(LogError::DirNotFound { path }) if path == dir
    ));
    assert!(matches!(
        inspect(&FsStorage, &dir),
        Err(LogError::DirNotFound { path }) if path == dir
    ));
    ShardLog::open(fs(), &dir, LogConfig::default()).unwrap();
    assert_eq!(names(&dir), ["00000000000000000000.log"]);
}

#[test]
fn a_directory_under_a_regular_file_is_an_io_error_with_its_path() {
    // Running as root, permissions do not stop us; a path through a regular file does.
    let tmp = TestDir::new("unwritable");
    let file = tmp.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let dir = file.join("shard-000");
    let err = ShardLog::open(fs(), &dir, LogConfig::default()).unwrap_err();
    match err {
        LogError::Io { op, path, source } => {
            assert_eq!(op, IoOp::CreateDir);
            assert_eq!(path, dir);
            assert_ne!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other}"),
    }
    let err = recover(fs(), &dir, RecoveryOptions::default()).unwrap_err();
    assert!(
        matches!(err, LogError::Io { op: IoOp::ListDir, ref path, .. } if *path == dir),
        "{err}"
    );
}

fn one_record_log(tmp: &TestDir) -> std::path::PathBuf {
    let (mut log, _) = ShardLog::open(fs(), tmp.path(), LogConfig::default()).unwrap();
    log.append(&refs(&[Msg::new(0, 10)])).unwrap();
    log.close().unwrap();
    tmp.path().join("00000000000000000000.log")
}

#[test]
fn wrong_magic_is_a_typed_error_with_the_path() {
    let tmp = TestDir::new("magic");
    let seg = one_record_log(&tmp);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[..8].copy_from_slice(b"NOTALOG!");
    fs::write(&seg, &bytes).unwrap();
    for truncate in [false, true] {
        let options = RecoveryOptions {
            truncate_on_corruption: truncate,
            ..RecoveryOptions::default()
        };
        let err = recover(fs(), tmp.path(), options).unwrap_err();
        assert!(
            matches!(err, LogError::BadMagic { ref path, found } if *path == seg && &found == b"NOTALOG!"),
            "{err}"
        );
    }
    assert_eq!(fs::read(&seg).unwrap(), bytes, "never truncated");
}

#[test]
fn wrong_version_is_a_typed_error_with_the_path() {
    let tmp = TestDir::new("version");
    let seg = one_record_log(&tmp);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[8] = 2;
    fs::write(&seg, &bytes).unwrap();
    let err = ShardLog::open(fs(), tmp.path(), LogConfig::default()).unwrap_err();
    assert!(
        matches!(err, LogError::UnsupportedVersion { ref path, version: 2 } if *path == seg),
        "{err}"
    );
}

#[test]
fn a_truncated_header_is_a_typed_error() {
    let tmp = TestDir::new("shortheader");
    let seg = one_record_log(&tmp);
    for len in [0, 1, 8, 15] {
        fs::write(&seg, &b"SHBUSLOG\x01\0\0\0\0\0\0\0"[..len]).unwrap();
        let err = recover(fs(), tmp.path(), RecoveryOptions::default()).unwrap_err();
        assert!(
            matches!(err, LogError::TruncatedHeader { ref path, len: l } if *path == seg && l == len as u64),
            "{err}"
        );
    }
}

#[test]
fn a_checkpoint_beyond_the_end_of_the_log_is_a_typed_error() {
    let tmp = TestDir::new("ckpt");
    let (mut log, _) = ShardLog::open(fs(), tmp.path(), LogConfig::default()).unwrap();
    log.append(&refs(&[Msg::new(0, 1), Msg::new(1, 1), Msg::new(2, 1)]))
        .unwrap();
    log.checkpoint(Seq(2)).unwrap();
    log.close().unwrap();
    // Lose the last record (as a crash under a careless writer could): the checkpoint now
    // points past the end.
    let seg = tmp.path().join("00000000000000000000.log");
    let len = fs::metadata(&seg).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - Msg::new(2, 1).encoded_len()).unwrap();
    drop(f);
    let err = ShardLog::open(fs(), tmp.path(), LogConfig::default()).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::CheckpointOutOfRange { ref path, checkpoint: Seq(2), first_seq: Seq(0), next_seq: Seq(2) }
                if *path == tmp.path().join("checkpoint")
        ),
        "{err}"
    );
    let report = inspect(&FsStorage, tmp.path()).unwrap();
    assert!(matches!(
        report.problems[..],
        [LogError::CheckpointOutOfRange { .. }]
    ));
}

#[test]
fn a_corrupt_checkpoint_file_is_an_error_not_a_fresh_start() {
    let tmp = TestDir::new("ckptcrc");
    let (mut log, _) = ShardLog::open(fs(), tmp.path(), LogConfig::default()).unwrap();
    log.append(&refs(&[Msg::new(0, 1), Msg::new(1, 1)]))
        .unwrap();
    log.checkpoint(Seq(1)).unwrap();
    drop(log);
    let path = tmp.path().join("checkpoint");
    let mut bytes = fs::read(&path).unwrap();
    bytes[12] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let err = ShardLog::open(fs(), tmp.path(), LogConfig::default()).unwrap_err();
    assert!(
        matches!(err, LogError::Corrupt { ref path, offset: 20, reason: CorruptReason::CrcMismatch { .. } } if *path == tmp.path().join("checkpoint")),
        "{err}"
    );
}
