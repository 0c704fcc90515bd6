//! `Reader` and `inspect` over a damaged shard log, without recovery (read-only, as the
//! `shardbus inspect` tool and a reader beside a live log use them).
//!
//! Checks, beyond "never panics" and the allocation limit:
//! - the iterator contract: valid records with contiguous sequence numbers, starting at
//!   `from` exactly and stopping before `until`; then at most one error; then nothing;
//! - a reader started at `from` (and stopped at `until`) agrees with one that read the whole
//!   log from the first record: if that one found no error, they yield the same records in
//!   `from..until`;
//! - `inspect` agrees with the reader: when it calls the log clean, a reader from the first
//!   record reads every record it counted, without error; when the reader fails, inspect does
//!   not call the log clean.

#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use shardbus::log::{inspect, LogError, Reader, Seq, Storage};
use shardbus_fuzz::check::{assert_contiguous, read_all};
use shardbus_fuzz::{MaxRecord, Scenario, SeqPick, DIR};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    scenario: Scenario,
    from: SeqPick,
    until: Option<SeqPick>,
    max_record: MaxRecord,
}

fuzz_target!(|input: Input| {
    let built = input.scenario.build();
    let storage: Arc<dyn Storage> = Arc::new(built.sim.clone());
    let max = input.max_record.get();
    let until = input.until.map(SeqPick::get);
    let open =
        |from: Seq| Reader::open(Arc::clone(&storage), DIR, from).map(|r| r.max_record_size(max));
    let report = inspect(&built.sim, Path::new(DIR)).expect("the shard directory exists");
    let first = report.segments.first().map_or(Seq::ZERO, |s| s.first_seq);

    // The whole log, without `until`, so that it reads every segment.
    let (all, all_error) = read_all(open(first).expect("a reader opens at the first segment"));
    check_run(&all, first, None);

    let from = input.from.get();
    let part = open(from).map(|r| match until {
        Some(end) => r.until(end),
        None => r,
    });
    match part {
        Ok(reader) => {
            let (part, part_error) = read_all(reader);
            check_run(&part, from, until);
            if all_error.is_none() {
                let tail: Vec<_> = all
                    .iter()
                    .filter(|r| r.seq >= from && until.is_none_or(|end| r.seq < end))
                    .cloned()
                    .collect();
                assert_eq!(
                    part, tail,
                    "a reader from {from} agrees with one from {first}"
                );
                assert!(part_error.is_none(), "{part_error:?}");
            }
        }
        Err(LogError::SeqUnavailable { requested, .. }) => {
            assert!(requested == from && from < first);
        }
        Err(e) => panic!("Reader::open({from}): {e}"),
    }

    if matches!(input.max_record, MaxRecord::Default) {
        if report.is_clean() {
            assert!(all_error.is_none(), "inspect: clean; reader: {all_error:?}");
            let counted: u64 = report.segments.iter().map(|s| s.records).sum();
            assert_eq!(all.len() as u64, counted, "records inspect counted");
            assert_eq!(
                all.last().map(|r| r.seq),
                report.segments.iter().rev().find_map(|s| s.last_seq),
            );
        }
        if let Some(e) = &all_error {
            assert!(!report.is_clean(), "reader failed ({e}); inspect: clean");
        }
    }
});

/// A reader's records: contiguous from `from` exactly (it starts in the last segment that
/// begins at or before `from`, and sequence numbers run on from a segment's name), and before
/// `until`.
fn check_run(records: &[shardbus::log::Record], from: Seq, until: Option<Seq>) {
    assert_contiguous(records, from);
    if let (Some(last), Some(end)) = (records.last(), until) {
        assert!(last.seq < end, "record {} at or past until {end}", last.seq);
    }
}
