//! Unit tests of `scanner.rs`.

use super::*;
use crate::log::record::{encode, RecordRef};
use crate::log::segment::SegmentWriter;
use crate::log::storage::SimStorage;

fn rec(i: u64) -> RecordRef<'static> {
    RecordRef {
        timestamp_nanos: i,
        topic: "t",
        payload: b"payload",
    }
}

/// Writes a segment holding records `first..first + n` and returns (file, record offsets).
fn segment(sim: &SimStorage, first: u64, n: u64) -> (SegmentFile, Vec<u64>) {
    let dir = Path::new("/s");
    let mut w = SegmentWriter::create(sim, dir, Seq(first)).unwrap();
    let mut buf = Vec::new();
    let mut offsets = Vec::new();
    for i in first..first + n {
        offsets.push(HEADER_LEN + buf.len() as u64);
        encode(&mut buf, Seq(i), &rec(i));
    }
    w.append(&buf).unwrap();
    w.sync().unwrap();
    (
        SegmentFile {
            path: w.meta.path.clone(),
            first_seq: Seq(first),
        },
        offsets,
    )
}

fn scan(sim: &SimStorage, seg: &SegmentFile, last: bool) -> (Vec<u64>, Step) {
    let mut s = Scanner::open(sim, seg, last, 1 << 20).unwrap();
    let mut seqs = Vec::new();
    loop {
        match s.next().unwrap() {
            Step::Record(r) => seqs.push(r.seq.get()),
            other => return (seqs, other),
        }
    }
}

fn sim() -> SimStorage {
    let sim = SimStorage::new();
    sim.create_dir_all(Path::new("/s")).unwrap();
    sim
}

#[test]
fn scans_records_in_order() {
    let sim = sim();
    let (seg, _) = segment(&sim, 10, 5);
    let (seqs, end) = scan(&sim, &seg, true);
    assert_eq!(seqs, [10, 11, 12, 13, 14]);
    assert!(matches!(end, Step::End));
}

#[test]
fn header_errors_are_typed() {
    let sim = sim();
    let (seg, _) = segment(&sim, 0, 1);
    let open = |sim: &SimStorage| Scanner::open(sim, &seg, true, 1 << 20).map(|_| ());
    sim.modify(&seg.path, |d| d[8] = 2);
    assert!(matches!(
        open(&sim),
        Err(LogError::UnsupportedVersion { version: 2, .. })
    ));
    sim.modify(&seg.path, |d| {
        d[8] = 1;
        d[12] = 1;
    });
    assert!(matches!(
        open(&sim),
        Err(LogError::Corrupt {
            offset: 12,
            reason: CorruptReason::ReservedHeaderBytes,
            ..
        })
    ));
    sim.modify(&seg.path, |d| d[0] = b'X');
    assert!(matches!(open(&sim), Err(LogError::BadMagic { found, .. }) if &found == b"XHBUSLOG"));
    sim.modify(&seg.path, |d| d.truncate(15));
    assert!(matches!(
        open(&sim),
        Err(LogError::TruncatedHeader { len: 15, .. })
    ));
}

#[test]
fn torn_only_in_the_last_segment() {
    let sim = sim();
    let (seg, offsets) = segment(&sim, 0, 3);
    sim.modify(&seg.path, |d| d.truncate(d.len() - 1));
    let (seqs, step) = scan(&sim, &seg, true);
    assert_eq!(seqs, [0, 1]);
    let Step::Damage(d) = step else {
        panic!("{step:?}")
    };
    assert_eq!((d.offset, d.torn), (offsets[2], true));
    let (_, step) = scan(&sim, &seg, false);
    assert!(matches!(step, Step::Damage(Damage { torn: false, .. })));
}

#[test]
fn crc_damage_before_more_data_is_corrupt_and_resumable() {
    let sim = sim();
    let (seg, offsets) = segment(&sim, 0, 3);
    sim.modify(&seg.path, |d| d[offsets[1] as usize + 20] ^= 1);
    let mut s = Scanner::open(&sim, &seg, true, 1 << 20).unwrap();
    assert!(matches!(s.next().unwrap(), Step::Record(r) if r.seq == Seq(0)));
    let Step::Damage(d) = s.next().unwrap() else {
        panic!()
    };
    assert_eq!((d.offset, d.torn, d.resumable), (offsets[1], false, true));
    assert!(matches!(d.reason, CorruptReason::CrcMismatch { .. }));
    assert!(matches!(s.next().unwrap(), Step::Record(r) if r.seq == Seq(2)));
    assert!(matches!(s.next().unwrap(), Step::End));
}

#[test]
fn a_length_pointing_past_the_end_before_an_intact_record_is_corrupt() {
    let sim = sim();
    let (seg, offsets) = segment(&sim, 0, 3);
    // Record 1's length now runs past the end of the file; record 2 is intact after it.
    let len = sim.file_len(&seg.path).unwrap() as u32;
    sim.modify(&seg.path, |d| {
        let at = offsets[1] as usize;
        d[at..at + 4].copy_from_slice(&len.to_le_bytes());
    });
    let (seqs, step) = scan(&sim, &seg, true);
    assert_eq!(seqs, [0]);
    let Step::Damage(d) = step else { panic!() };
    assert_eq!((d.offset, d.torn), (offsets[1], false));
    assert!(matches!(d.reason, CorruptReason::TruncatedRecord { .. }));
}

/// A tail crafted so that every 16th byte starts a plausible frame (valid length, a body
/// that fits, seq in range, wrong CRC) would cost a CRC over 30,000 bytes per candidate;
/// past the search budget the damage is reported as corruption, not cut as torn.
#[test]
fn a_tail_crafted_to_make_the_intact_record_search_quadratic_is_corrupt() {
    let sim = sim();
    let (seg, offsets) = segment(&sim, 0, 2);
    let tail_len = 200_000;
    let mut tail = Vec::with_capacity(tail_len);
    // The damaged frame: a length that runs past the end of the file.
    tail.extend_from_slice(&(tail_len as u32).to_le_bytes());
    tail.extend_from_slice(&[0; 4]);
    while tail.len() < tail_len {
        tail.extend_from_slice(&30_000u32.to_le_bytes());
        tail.extend_from_slice(&[0xAB; 4]);
        tail.extend_from_slice(&5u64.to_le_bytes());
    }
    tail.truncate(tail_len);
    sim.modify(&seg.path, |d| d.extend_from_slice(&tail));
    let (seqs, step) = scan(&sim, &seg, true);
    assert_eq!(seqs, [0, 1]);
    let Step::Damage(d) = step else { panic!() };
    assert_eq!((d.offset, d.torn), (offsets[1] + 34, false));
    assert!(matches!(d.reason, CorruptReason::TruncatedRecord { .. }));
    // A tail of the same size of plain garbage with no candidate is still torn.
    sim.modify(&seg.path, |d| {
        d.truncate(offsets[1] as usize + 34);
        d.extend_from_slice(&(tail_len as u32).to_le_bytes());
        d.resize(d.len() + tail_len - 4, 0xFF);
    });
    let (_, step) = scan(&sim, &seg, true);
    assert!(
        matches!(step, Step::Damage(Damage { torn: true, .. })),
        "{step:?}"
    );
}

#[test]
fn a_zero_filled_tail_is_torn_but_zeros_before_data_are_not() {
    let sim = sim();
    let (seg, offsets) = segment(&sim, 0, 2);
    sim.modify(&seg.path, |d| d.extend_from_slice(&[0; 100]));
    let (seqs, step) = scan(&sim, &seg, true);
    assert_eq!(seqs, [0, 1]);
    let Step::Damage(d) = step else { panic!() };
    assert_eq!((d.offset, d.torn), (offsets[1] + 34, true));
    assert_eq!(d.reason, CorruptReason::InvalidLength { len: 0 });

    sim.modify(&seg.path, |d| d.push(1));
    let (_, step) = scan(&sim, &seg, true);
    assert!(matches!(step, Step::Damage(Damage { torn: false, .. })));
}

#[test]
fn seq_gap_is_reported_with_both_numbers() {
    let sim = sim();
    let dir = Path::new("/s");
    let mut w = SegmentWriter::create(&sim, dir, Seq(0)).unwrap();
    let mut buf = Vec::new();
    encode(&mut buf, Seq(0), &rec(0));
    let second = HEADER_LEN + buf.len() as u64;
    encode(&mut buf, Seq(2), &rec(2));
    w.append(&buf).unwrap();
    let seg = SegmentFile {
        path: w.meta.path.clone(),
        first_seq: Seq(0),
    };
    let (seqs, step) = scan(&sim, &seg, true);
    assert_eq!(seqs, [0]);
    let Step::Damage(d) = step else { panic!() };
    assert_eq!(d.offset, second);
    assert_eq!(
        d.reason,
        CorruptReason::SeqMismatch {
            expected: Seq(1),
            found: Seq(2)
        }
    );
    assert!(!d.torn);
}
