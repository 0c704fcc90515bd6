//! Retention deletes exactly the oldest full segments that are wholly at or below the durable
//! checkpoint, while the log is over its size limit or they are older than the age limit.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{config, expected, refs, sim_open, Msg};
use shardbus::log::LogError;
use shardbus::log::{FsyncPolicy, Reader, RetentionLimit, Seq, ShardLog, SimStorage};

const DIR: &str = "/ret/shard-000";

/// 43-byte records, 4 per 200-byte segment (16 + 4 * 43 = 188 bytes): 40 records make 10
/// segments starting at 0, 4, 8, ..., 36.
fn setup(msgs: &[Msg]) -> (SimStorage, ShardLog) {
    assert!(msgs.iter().all(|m| m.encoded_len() == 43));
    let sim = SimStorage::new();
    let mut log = sim_open(&sim, DIR, config(200, FsyncPolicy::Batch));
    log.append(&refs(msgs)).unwrap();
    log.commit().unwrap();
    assert_eq!(log.segment_paths().len(), 10);
    assert_eq!(log.size_bytes(), 1880);
    (sim, log)
}

fn seg(first: u64) -> PathBuf {
    Path::new(DIR).join(format!("{first:020}.log"))
}

fn msgs() -> Vec<Msg> {
    (0..40).map(|i| Msg::new(i, 10)).collect()
}

#[test]
fn size_limit_deletes_exactly_the_oldest_handled_segments() {
    let msgs = msgs();
    let (sim, mut log) = setup(&msgs);
    let limit = |max| RetentionLimit {
        max_bytes: Some(max),
        max_age: None,
    };

    // No durable checkpoint yet: nothing may go.
    assert_eq!(
        log.retain(Seq(39), limit(0)).unwrap(),
        Vec::<PathBuf>::new()
    );

    log.checkpoint(Seq(21)).unwrap();
    // 1880 > 1500: drop 0 (1692), 4 (1504), 8 (1316 <= 1500, stop).
    assert_eq!(
        log.retain(Seq(21), limit(1500)).unwrap(),
        [seg(0), seg(4), seg(8)]
    );
    assert_eq!((log.first_seq(), log.size_bytes()), (Seq(12), 1316));
    // Limit 0: everything wholly at or below checkpoint 21 goes (segments 12 and 16, ending at
    // 19), not segment 20 (records 20..24, not all handled), and never the active one. Passing
    // a later seq than the durable checkpoint does not widen that.
    assert_eq!(log.retain(Seq(35), limit(0)).unwrap(), [seg(12), seg(16)]);
    assert_eq!(log.first_seq(), Seq(20));
    assert_eq!(
        log.retain(Seq(21), limit(0)).unwrap(),
        Vec::<PathBuf>::new()
    );

    // Durable across power loss, and recovery starts at the new first segment.
    sim.crash(None);
    let (log, r) =
        ShardLog::open(Arc::new(sim.clone()), DIR, config(200, FsyncPolicy::Batch)).unwrap();
    assert_eq!(
        (r.first_seq(), r.next_seq(), r.checkpoint()),
        (Seq(20), Seq(40), Some(Seq(21)))
    );
    assert_eq!(
        log.segment_paths(),
        (20..40).step_by(4).map(seg).collect::<Vec<_>>()
    );
    let kept: Vec<_> = log
        .reader(Seq(20))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept, expected(&msgs[20..], 20));
    assert!(matches!(
        Reader::open(Arc::new(sim), DIR, Seq(19)),
        Err(LogError::SeqUnavailable {
            requested: Seq(19),
            first_seq: Seq(20),
            ..
        })
    ));
}

#[test]
fn age_limit_deletes_exactly_the_segments_whose_newest_record_is_too_old() {
    let mut msgs = msgs();
    // Records 0..20 are from 1970 (timestamps near 0); records 20..40 are from now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for m in &mut msgs[20..] {
        m.timestamp_nanos = now;
    }
    let (_sim, mut log) = setup(&msgs);
    log.checkpoint(Seq(39)).unwrap();
    let limit = RetentionLimit {
        max_bytes: None,
        max_age: Some(Duration::from_secs(3600)),
    };
    assert_eq!(
        log.retain(Seq(39), limit).unwrap(),
        [seg(0), seg(4), seg(8), seg(12), seg(16)]
    );
    assert_eq!(log.retain(Seq(39), limit).unwrap(), Vec::<PathBuf>::new());
    // No limit at all: nothing goes, even though everything is handled.
    assert_eq!(
        log.retain(Seq(39), RetentionLimit::default()).unwrap(),
        Vec::<PathBuf>::new()
    );
    // A size limit on top removes the handled full segments (never the active one).
    let limit = RetentionLimit {
        max_bytes: Some(0),
        ..limit
    };
    assert_eq!(
        log.retain(Seq(39), limit).unwrap(),
        [seg(20), seg(24), seg(28), seg(32)]
    );
    assert_eq!(log.segment_paths(), [seg(36)]);
}
