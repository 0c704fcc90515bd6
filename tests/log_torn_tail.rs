//! A torn tail in the last segment is cut at every possible byte offset: recovery keeps exactly
//! the records before the torn one and reports the bytes it dropped.

mod common;

use std::fs;
use std::sync::Arc;

use common::{config, expected, read_all, refs, Msg, TestDir};
use shardbus::log::LogError;
use shardbus::log::{
    recover, FsStorage, FsyncPolicy, RecoveryOptions, Seq, ShardLog, SimStorage, Storage,
};

fn msgs() -> Vec<Msg> {
    (0..12).map(|i| Msg::new(i, 20 + i as usize)).collect()
}

/// Runs the cut at every offset of the last record, restoring the original bytes each time via
/// `put`.
fn cut_everywhere(
    storage: Arc<dyn Storage>,
    dir: &std::path::Path,
    last_seg: &std::path::Path,
    put: &dyn Fn(&[u8]),
) {
    let msgs = msgs();
    let original = storage.read(last_seg).unwrap();
    let last_len = msgs.last().unwrap().encoded_len() as usize;
    let start = original.len() - last_len;
    for cut in start..original.len() {
        put(&original[..cut]);
        let r = recover(Arc::clone(&storage), dir, RecoveryOptions::default()).unwrap();
        assert_eq!(r.next_seq(), Seq(11), "cut at {cut}");
        assert_eq!(r.report().torn_bytes, (cut - start) as u64, "cut at {cut}");
        assert_eq!(
            r.report().torn_records,
            u64::from(cut > start),
            "cut at {cut}"
        );
        assert_eq!(r.report().records, 11);
        assert_eq!(
            storage.file_len(last_seg).unwrap(),
            start as u64,
            "file cut back"
        );
        assert_eq!(
            read_all(Arc::clone(&storage), dir),
            expected(&msgs[..11], 0)
        );
    }
    // Appending after the cut continues with the right sequence number.
    put(&original[..start + 3]);
    let (mut log, r) =
        ShardLog::open(Arc::clone(&storage), dir, config(400, FsyncPolicy::Batch)).unwrap();
    assert_eq!(r.report().torn_bytes, 3);
    assert_eq!(log.append(&refs(&msgs[11..])).unwrap(), Seq(11)..Seq(12));
    log.close().unwrap();
    assert_eq!(read_all(storage, dir), expected(&msgs, 0));
}

#[test]
fn torn_tail_at_every_offset_sim() {
    let sim = SimStorage::new();
    let dir = std::path::Path::new("/shard-000");
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let (mut log, _) =
        ShardLog::open(Arc::clone(&storage), dir, config(400, FsyncPolicy::Batch)).unwrap();
    log.append(&refs(&msgs())).unwrap();
    log.close().unwrap();
    let (log, _) =
        ShardLog::open(Arc::clone(&storage), dir, config(400, FsyncPolicy::Batch)).unwrap();
    let paths = log.segment_paths();
    assert!(paths.len() >= 2, "the last segment is not the only one");
    let last = paths.last().unwrap().clone();
    drop(log);
    let put = |bytes: &[u8]| assert!(sim.modify(&last, |d| *d = bytes.to_vec()));
    cut_everywhere(storage, dir, &last, &put);
}

#[test]
fn torn_tail_at_every_offset_fs() {
    let tmp = TestDir::new("torn");
    let dir = tmp.path();
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let (mut log, _) =
        ShardLog::open(Arc::clone(&storage), dir, config(400, FsyncPolicy::Batch)).unwrap();
    log.append(&refs(&msgs())).unwrap();
    let paths = log.segment_paths();
    log.close().unwrap();
    assert!(paths.len() >= 2);
    let last = paths.last().unwrap().clone();
    let put = |bytes: &[u8]| fs::write(&last, bytes).unwrap();
    cut_everywhere(storage, dir, &last, &put);
}

#[test]
fn a_bad_crc_in_the_final_record_is_a_torn_tail() {
    let sim = SimStorage::new();
    let dir = std::path::Path::new("/shard-000");
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let msgs = msgs();
    let (mut log, _) =
        ShardLog::open(Arc::clone(&storage), dir, config(400, FsyncPolicy::Batch)).unwrap();
    log.append(&refs(&msgs)).unwrap();
    let last = log.segment_paths().last().unwrap().clone();
    log.close().unwrap();
    let original = sim.contents(&last).unwrap();
    let rec_len = msgs.last().unwrap().encoded_len() as usize;
    let start = original.len() - rec_len;
    for at in start..original.len() {
        let mut damaged = original.clone();
        damaged[at] ^= 0x5a;
        sim.modify(&last, |d| *d = damaged);
        match recover(Arc::clone(&storage), dir, RecoveryOptions::default()) {
            Ok(r) => {
                assert_eq!(r.next_seq(), Seq(11), "flip at {at}");
                assert_eq!(r.report().torn_bytes, rec_len as u64, "flip at {at}");
            }
            // Only the unprotected `len` field can make the final record look like one
            // followed by more data (a shorter length).
            Err(LogError::Corrupt { offset, path, .. }) => {
                assert!(at < start + 4, "flip at {at}");
                assert_eq!((offset, path), (start as u64, last.clone()));
            }
            Err(e) => panic!("flip at {at}: {e}"),
        }
        sim.modify(&last, |d| *d = original.clone());
    }
}
