//! Recovery of a damaged shard log.
//!
//! Checks, beyond "never panics" and the allocation limit:
//! - an undamaged log recovers exactly what was written (a prefix of it after a power loss
//!   under `FsyncPolicy::Never`), with its checkpoint;
//! - `inspect`, run first, agrees with recovery: clean (but for a torn tail of the same
//!   length) when recovery succeeds, not clean when it fails;
//! - what recovery returns reads back identically through replay, a `Reader` and a second
//!   recovery (which finds nothing to cut); the log then takes an append at `next_seq`.

#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use shardbus::log::{
    inspect, recover, FsyncPolicy, LogConfig, Reader, Record, RecordRef, Recovered,
    RecoveryOptions, Seq, ShardLog, Storage,
};
use shardbus_fuzz::check::{assert_contiguous, read_all};
use shardbus_fuzz::{MaxRecord, Scenario, DIR};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    scenario: Scenario,
    truncate_on_corruption: bool,
    max_record: MaxRecord,
}

fuzz_target!(|input: Input| {
    let built = input.scenario.build();
    let storage: Arc<dyn Storage> = Arc::new(built.sim.clone());
    let options = RecoveryOptions {
        truncate_on_corruption: input.truncate_on_corruption,
        max_record_size: input.max_record.get(),
    };
    // Read-only, so it sees the directory recovery is about to judge.
    let before = inspect(&built.sim, Path::new(DIR)).expect("the shard directory exists");
    let result = recover(Arc::clone(&storage), DIR, options);

    if !built.damaged && !matches!(input.max_record, MaxRecord::Small(_)) {
        let r = result.as_ref().expect("an undamaged log recovers");
        let got = records(r);
        let first = r.first_seq().get() as usize;
        let written = &built.written[first.min(built.written.len())..];
        if built.all_durable {
            assert_eq!(got, written, "an undamaged log recovers what was written");
        } else {
            assert!(written.starts_with(&got), "a power loss keeps a prefix");
        }
        assert_eq!(r.checkpoint(), built.checkpoint);
    }

    if options == RecoveryOptions::default() {
        match &result {
            Ok(r) => {
                let problems = before.problems.len()
                    + before
                        .segments
                        .iter()
                        .map(|s| s.problems.len())
                        .sum::<usize>();
                let torn: u64 = before.segments.iter().map(|s| s.torn_tail_bytes).sum();
                assert_eq!(
                    (problems, torn),
                    (0, r.report().torn_bytes),
                    "recovery succeeded ({:?}); inspect disagrees: {before:#?}",
                    r.report()
                );
            }
            Err(e) => assert!(
                !before.is_clean(),
                "recovery failed ({e}) but inspect calls the log clean: {before:#?}"
            ),
        }
    }

    let Ok(recovered) = result else { return };
    let (first, next) = (recovered.first_seq(), recovered.next_seq());
    let got = records(&recovered);
    assert_contiguous(&got, first);
    assert_eq!(got.len() as u64, next.get() - first.get(), "first/next seq");
    assert_eq!(
        recovered.report().records,
        got.len() as u64,
        "report.records"
    );
    if let Some(c) = recovered.checkpoint() {
        assert!(
            first <= c.next() && c < next,
            "checkpoint {c} in {first}..{next}"
        );
    }

    // Replay is the records after the checkpoint.
    let skip = (recovered.replay_from().get() - first.get()) as usize;
    let (replayed, error) = read_all(recovered.replay().expect("replay opens"));
    assert!(error.is_none(), "replay of a recovered log: {error:?}");
    assert_eq!(replayed, got[skip.min(got.len())..], "replay");

    // A reader from the first record sees the same.
    let reader = Reader::open(Arc::clone(&storage), DIR, first)
        .expect("a reader opens at the first seq")
        .max_record_size(options.max_record_size);
    let (read, error) = read_all(reader);
    assert!(error.is_none(), "reading a recovered log: {error:?}");
    assert_eq!(read, got, "a reader reads what recovery recovered");

    // A second recovery finds nothing to do, and inspect finds the log clean.
    let checkpoint = recovered.checkpoint();
    drop(recovered);
    let strict = RecoveryOptions {
        truncate_on_corruption: false,
        ..options
    };
    let again = recover(Arc::clone(&storage), DIR, strict).expect("a recovered log recovers");
    assert_eq!(
        (again.first_seq(), again.next_seq(), again.checkpoint()),
        (first, next, checkpoint)
    );
    let report = again.report();
    assert_eq!((report.torn_bytes, report.truncated.as_ref()), (0, None));
    assert!(report.removed_temp_files.is_empty());
    assert_eq!(records(&again), got, "a second recovery");
    drop(again);
    let after = inspect(&built.sim, Path::new(DIR)).expect("the shard directory exists");
    assert!(after.is_clean(), "inspect after recovery: {after:#?}");

    // The recovered log takes an append at `next_seq`.
    let config = LogConfig {
        segment_size: 64,
        max_record_size: options.max_record_size,
        fsync: FsyncPolicy::Batch,
        truncate_on_corruption: false,
    };
    let (mut log, _) =
        ShardLog::open(Arc::clone(&storage), DIR, config).expect("a recovered log opens");
    let empty = RecordRef {
        timestamp_nanos: 7,
        topic: "",
        payload: b"",
    };
    let seqs = log.append(&[empty]).expect("append after recovery");
    assert_eq!(seqs, next..next.next(), "the appended record's seq");
    log.close().expect("close");
    let last = recover(storage, DIR, strict).expect("recovery after an append");
    let mut expected = got;
    expected.push(Record {
        seq: next,
        timestamp_nanos: 7,
        topic: String::new(),
        payload: Vec::new(),
    });
    assert_eq!(records(&last), expected, "recovery after an append");
    assert_eq!(last.next_seq(), Seq(next.get() + 1));
});

/// Every record `recovered` holds, through `for_each_after`.
fn records(recovered: &Recovered) -> Vec<Record> {
    let mut all = Vec::new();
    let n = recovered
        .for_each_after(None, |rec| all.push(rec))
        .expect("recovered records read back");
    assert_eq!(n, all.len() as u64);
    all
}
