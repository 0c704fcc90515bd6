//! Bad input through the public API: damaged segments, headers, checkpoints, meta files
//! and bus directories are typed errors at `build()` (or cut there with
//! `truncate_on_corruption`), a payload that does not decode stops the build, and an
//! oversized record is dead-lettered, not written.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::common::persist::{
    builder, crash, expected_per_topic, first_shard, meta, per_topic, persistence, publish, seen,
    topic, wait_seen, DIR, TOPICS,
};
use shardbus::log::{CorruptReason, LogError, Seq, SimStorage, Storage};
use shardbus::{Bus, DeadLetterReason, Error, Persistence};

/// A plain publish is not encoded on the publishing thread (the `String` codec cannot
/// fail): an oversized record is accepted, then dead-lettered by its shard, never written.
/// (A durable publish refuses it instead: `durable::an_oversized_durable_publish_...`.)
#[test]
fn an_oversized_record_is_dead_lettered_not_written() {
    let sim = SimStorage::new();
    let letters = Arc::new(Mutex::new(Vec::new()));
    let l = letters.clone();
    let s = seen();
    let bus = builder(1, persistence(&sim).max_record_size(100), &s)
        .dead_letter(move |d| {
            if let DeadLetterReason::NotLogged { error } = d.reason {
                let LogError::RecordTooLarge { size, max } = error else {
                    panic!("{error:?}");
                };
                l.lock().unwrap().push((d.message.clone(), *size, *max));
            }
        })
        .build()
        .unwrap();
    bus.publish(topic(0), "x".repeat(200)).unwrap();
    bus.publisher().publish(topic(1), "z".repeat(200)).unwrap();
    bus.publish_durable(topic(0), "small".to_owned()).unwrap();
    wait_seen(&s, 1);
    // A record is its topic and payload and `MIN_RECORD_LEN` bytes of frame.
    let size = |payload: usize| (shardbus::log::MIN_RECORD_LEN + topic(0).len() + payload) as u64;
    assert_eq!(topic(0).len(), topic(1).len());
    let mut letters = std::mem::take(&mut *letters.lock().unwrap());
    letters.sort();
    assert_eq!(
        letters,
        [
            ("x".repeat(200), size(200), 100),
            ("z".repeat(200), size(200), 100)
        ]
    );
    assert!(bus.log_error(first_shard()).is_none());
    crash(bus, &sim, None);
    // Only the small record was written.
    let again = seen();
    let bus = builder(1, persistence(&sim), &again).build().unwrap();
    assert_eq!(
        *again.lock().unwrap(),
        [(topic(0), "small".to_owned(), true)]
    );
    bus.shutdown();
}

/// Writes 30 messages to a one-shard bus with 300-byte segments; returns the segments.
fn small_segments(sim: &SimStorage) -> Vec<PathBuf> {
    let s = seen();
    let bus = builder(1, persistence(sim).segment_size(300), &s)
        .build()
        .unwrap();
    publish(&bus, 0, 30);
    wait_seen(&s, 30);
    crash(bus, sim, None);
    let dir = meta(sim).shard_dir(Path::new(DIR), 0);
    let mut names = sim.list_dir(&dir).unwrap();
    names.sort();
    let segs: Vec<PathBuf> = names
        .iter()
        .filter(|n| n.to_str().unwrap().ends_with(".log"))
        .map(|n| dir.join(n))
        .collect();
    assert!(segs.len() >= 3, "{segs:?}");
    segs
}

fn build_err(p: Persistence) -> LogError {
    match builder(1, p, &seen()).build() {
        Err(Error::Log(e)) => e,
        Err(e) => panic!("not a log error: {e}"),
        Ok(_) => panic!("built on a damaged log"),
    }
}

#[test]
fn a_corrupt_middle_segment_is_an_error_unless_truncation_is_asked_for() {
    let sim = SimStorage::new();
    let segs = small_segments(&sim);
    sim.modify(&segs[1], |d| d[30] ^= 0x40);
    match build_err(persistence(&sim)) {
        LogError::Corrupt {
            path,
            offset: 16,
            reason: CorruptReason::CrcMismatch { .. },
        } => assert_eq!(path, segs[1]),
        e => panic!("{e}"),
    }
    // The explicit option cuts the log there; the records before the damage replay.
    let s = seen();
    let bus = builder(1, persistence(&sim).truncate_on_corruption(true), &s)
        .build()
        .unwrap();
    let n = s.lock().unwrap().len();
    assert!(n > 0 && n < 30, "{n}");
    let (by, _) = per_topic(&s);
    let all = expected_per_topic(0..30);
    for t in 0..TOPICS {
        assert!(all[t].starts_with(&by[t]));
    }
    bus.shutdown();
}

#[test]
fn damaged_headers_are_typed_errors() {
    let sim = SimStorage::new();
    let segs = small_segments(&sim);
    let original = sim.contents(&segs[1]).unwrap();
    sim.modify(&segs[1], |d| d.truncate(10));
    assert!(matches!(
        build_err(persistence(&sim)),
        LogError::TruncatedHeader { len: 10, ref path } if *path == segs[1]
    ));
    sim.modify(&segs[1], |d| {
        *d = original.clone();
        d[0] = b'X';
    });
    assert!(matches!(
        build_err(persistence(&sim)),
        LogError::BadMagic { ref path, .. } if *path == segs[1]
    ));
    sim.modify(&segs[1], |d| {
        *d = original.clone();
        d[8] = 9;
    });
    assert!(matches!(
        build_err(persistence(&sim).truncate_on_corruption(true)),
        LogError::UnsupportedVersion { version: 9, .. }
    ));
}

#[test]
fn a_checkpoint_beyond_the_end_of_the_log_is_an_error() {
    let sim = SimStorage::new();
    let s = seen();
    let bus = builder(1, persistence(&sim), &s).build().unwrap();
    publish(&bus, 0, 10);
    bus.shutdown(); // checkpoint 9
    let dir = meta(&sim).shard_dir(Path::new(DIR), 0);
    let seg = dir.join("00000000000000000000.log");
    sim.modify(&seg, |d| d.truncate(16)); // the records are gone, the checkpoint stays
    assert!(matches!(
        build_err(persistence(&sim)),
        LogError::CheckpointOutOfRange {
            checkpoint: Seq(9),
            next_seq: Seq(0),
            ..
        }
    ));
}

#[test]
fn bad_bus_directories_are_typed_errors() {
    // The meta file damaged.
    let sim = SimStorage::new();
    builder(1, persistence(&sim), &seen())
        .build()
        .unwrap()
        .shutdown();
    sim.modify(&Path::new(DIR).join("meta"), |d| d[14] ^= 1);
    assert!(matches!(
        build_err(persistence(&sim)),
        LogError::Corrupt {
            reason: CorruptReason::CrcMismatch { .. },
            ..
        }
    ));
    // Shard logs without a meta file.
    sim.remove_file(&Path::new(DIR).join("meta")).unwrap();
    assert!(matches!(
        build_err(persistence(&sim)),
        LogError::Corrupt {
            reason: CorruptReason::MissingMeta,
            ..
        }
    ));
    // A directory that cannot be created (a file is in the way), on the real filesystem.
    let tmp = crate::common::TestDir::new("baddir");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let p = Persistence::new(file.join("bus"));
    match Bus::<String>::builder().shards(1).persist(p).build() {
        Err(Error::Log(LogError::Io { path, .. })) => assert_eq!(path, file.join("bus")),
        other => panic!("{other:?}"),
    }
    // A missing directory is created.
    let missing = tmp.path().join("a/b/bus");
    let bus = Bus::<String>::builder()
        .shards(1)
        .persist(Persistence::new(&missing))
        .build()
        .unwrap();
    bus.publish_durable("t", "m".to_owned()).unwrap();
    bus.shutdown();
    assert!(missing.join("meta").exists());
}

#[test]
fn a_payload_that_does_not_decode_stops_the_build() {
    let sim = SimStorage::new();
    let bus = Bus::<Vec<u8>>::builder()
        .shards(1)
        .persist(persistence(&sim))
        .build()
        .unwrap();
    bus.publish_durable("t", vec![0xff, 0xfe]).unwrap();
    crash_bytes(bus, &sim);
    match builder(1, persistence(&sim), &seen()).build() {
        Err(e @ Error::Decode { seq: Seq(0), .. }) => {
            // The chain keeps the codec's error: the `String` codec's UTF-8 error.
            let decode = std::error::Error::source(&e).expect("the DecodeError");
            assert!(decode.is::<shardbus::DecodeError>(), "{decode:?}");
            let utf8 = decode
                .source()
                .and_then(|s| s.downcast_ref::<std::str::Utf8Error>())
                .expect("the Utf8Error");
            assert_eq!(utf8.valid_up_to(), 0);
        }
        other => panic!("{other:?}"),
    }
}

fn crash_bytes(bus: Bus<Vec<u8>>, sim: &SimStorage) {
    std::mem::forget(bus);
    sim.crash(None);
}
