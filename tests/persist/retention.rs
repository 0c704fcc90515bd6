//! Retention and the log reader: handled segments beyond the size limit are deleted,
//! and the `Reader` reads the rest back in order from any sequence number still there.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::persist::{builder, meta, persistence, seen, topic, DIR};
use shardbus::log::{LogError, Reader, RetentionLimit, Seq, SimStorage, Storage};

#[test]
fn retention_deletes_handled_segments_and_the_reader_reads_from_a_seq() {
    let sim = SimStorage::new();
    let s = seen();
    let p = persistence(&sim)
        .segment_size(300)
        .checkpoint_every(10, Duration::from_millis(1))
        .retention(RetentionLimit {
            max_bytes: Some(600),
            max_age: None,
        });
    let bus = builder(1, p, &s).build().unwrap();
    for i in 0..100 {
        bus.publish_durable(topic(i), i.to_string()).unwrap();
    }
    bus.shutdown();
    let dir = meta(&sim).shard_dir(Path::new(DIR), 0);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    // The oldest segments are gone...
    assert!(matches!(
        Reader::open(storage.clone(), &dir, Seq(0)),
        Err(LogError::SeqUnavailable {
            requested: Seq(0),
            ..
        })
    ));
    let size: u64 = sim
        .list_dir(&dir)
        .unwrap()
        .iter()
        .filter(|n| n.to_str().unwrap().ends_with(".log"))
        .map(|n| sim.file_len(&dir.join(n)).unwrap())
        .sum();
    assert!(size <= 600 + 300, "{size}");
    // ... and the rest reads back in order from any seq still there.
    let got: Vec<(u64, String)> = Reader::open(storage, &dir, Seq(95))
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.seq.get(), String::from_utf8(r.payload).unwrap())
        })
        .collect();
    let want: Vec<(u64, String)> = (95..100).map(|i| (i, i.to_string())).collect();
    assert_eq!(got, want);
}
