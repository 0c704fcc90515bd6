//! Checks shared by the targets.

use shardbus::log::{LogError, Reader, Record, Seq};

/// Drains `reader`: its records, and the error it stopped at, if any. Checks the iterator
/// contract on the way: `Ok` items, then at most one `Err`, then `None` for good.
pub fn read_all(mut reader: Reader) -> (Vec<Record>, Option<LogError>) {
    let mut records = Vec::new();
    let error = loop {
        match reader.next() {
            Some(Ok(rec)) => records.push(rec),
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    assert!(
        reader.next().is_none(),
        "a reader yields nothing after it ended"
    );
    (records, error)
}

/// Asserts that `records` have the sequence numbers `from, from + 1, ...`.
pub fn assert_contiguous(records: &[Record], from: Seq) {
    for (i, rec) in (0u64..).zip(records) {
        assert_eq!(
            Some(rec.seq.get()),
            from.get().checked_add(i),
            "record {i} of a run starting at {from}"
        );
    }
}
