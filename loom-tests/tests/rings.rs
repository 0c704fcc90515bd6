//! Models of the rings' real code: hand-off, wrap-around, full, close.
#![cfg(shardbus_loom)]

use loom::sync::Arc;
use loom::thread;
use shardbus::__loom::{mpsc, spsc, PushError};

/// Catches: a lost or duplicated value, or reordering, in the SPSC hand-off across
/// the wrap of a capacity-2 ring (e.g. `head` published before the value is moved out,
/// or a Relaxed `tail` that lets the consumer read an unwritten slot).
#[test]
fn spsc_handoff_wraps_in_order() {
    loom::model(|| {
        let (mut p, mut c) = spsc::channel::<u32>(2, u64::MAX - 1);
        let producer = thread::spawn(move || {
            for i in 0..3 {
                let mut v = i;
                loop {
                    match p.push(v) {
                        Ok(()) => break,
                        Err(PushError::Full(back)) => {
                            v = back;
                            thread::yield_now();
                        }
                        Err(PushError::Closed(_)) => unreachable!(),
                    }
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            if c.pop_batch(2, |v| got.push(v)) == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(got, vec![0, 1, 2]);
    });
}

/// Catches: two producers claiming the same slot, a consumer reading a claimed but
/// unwritten slot, a stamp error at the wrap of a capacity-2 ring, or a `Full` that
/// loses its value.
///
/// Producers push without retrying (a value that meets `Full` is given back and
/// counted): with three threads, spin-retries let loom explore unfair schedules
/// without end. The consumer pops while they push, so slots are reused across laps.
#[test]
fn mpsc_two_producers_exactly_once_in_order() {
    loom::model(|| {
        let ring = Arc::new(mpsc::Ring::new(2, u64::MAX - 1));
        let mut consumer = mpsc::Consumer::new(&*ring);
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let mut returned = Vec::new();
                    for i in 0..2u32 {
                        match ring.push(p * 10 + i) {
                            Ok(()) => {}
                            Err(PushError::Full(v)) => returned.push(v),
                            Err(PushError::Closed(_)) => unreachable!(),
                        }
                    }
                    returned
                })
            })
            .collect();
        let mut got = Vec::new();
        consumer.pop_batch(&*ring, 1, |v| got.push(v));
        consumer.pop_batch(&*ring, 1, |v| got.push(v));
        let mut returned: Vec<u32> = producers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        while consumer.pop_batch(&*ring, 4, |v| got.push(v)) > 0 {}
        // Exactly once: every value was either handed over or given back.
        let mut all = got.clone();
        all.append(&mut returned);
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 10, 11]);
        // In order per producer among the values handed over.
        for p in 0..2 {
            let seq: Vec<u32> = got.iter().copied().filter(|v| v / 10 == p).collect();
            assert!(seq.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        }
    });
}

/// Catches: a batch push whose values land in the wrong slots or out of order when the
/// batch crosses the ring's end (the stage is copied one slot at a time under loom, so
/// each copy must take the next staged value), or a batch published before its slots are
/// written (loom's cell tracking sees the consumer read a slot still being written).
#[test]
fn spsc_batch_push_wraps_in_order() {
    loom::model(|| {
        // From slot 2 of 4: the first batch of three crosses the ring's end (slots 2
        // and 3, then 0), the second fills slots 1 to 3 in one stretch.
        let (mut p, mut c) = spsc::channel::<u32>(4, 4);
        let producer = thread::spawn(move || {
            for batch in [[0, 1, 2], [3, 4, 5]] {
                // The ring empty again (a fresh load of `head`), so three slots are free.
                while !p.is_drained() {
                    thread::yield_now();
                }
                p.push_n(3, batch.into_iter()).unwrap();
            }
        });
        let mut got = Vec::new();
        while got.len() < 6 {
            if c.pop_batch(4, |v| got.push(v)) == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
    });
}

/// Catches: a `Full` that loses or duplicates the value, or a retry that never
/// succeeds after the consumer frees a slot.
#[test]
fn spsc_full_then_retry() {
    loom::model(|| {
        let (mut p, mut c) = spsc::channel::<u32>(2, 0);
        p.push(1).unwrap();
        p.push(2).unwrap();
        assert_eq!(p.push(3), Err(PushError::Full(3)));
        let consumer = thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 3 {
                if c.pop_batch(1, |v| got.push(v)) == 0 {
                    thread::yield_now();
                }
            }
            got
        });
        let mut v = 3;
        loop {
            match p.push(v) {
                Ok(()) => break,
                Err(PushError::Full(back)) => {
                    v = back;
                    thread::yield_now();
                }
                Err(PushError::Closed(_)) => unreachable!(),
            }
        }
        assert_eq!(consumer.join().unwrap(), vec![1, 2, 3]);
    });
}

/// Catches: a push that races the close and is both given back and drained (or
/// neither) — e.g. a missing fence on either side of the store-buffering pair (push:
/// store `tail`, fence, load `closing`; close: store `closing`, fence, load `tail`), or
/// a limit agreed without the compare-and-swap, or a producer that takes back a value
/// the consumer popped just before it closed.
#[test]
fn spsc_close_races_push() {
    loom::model(|| {
        let (mut p, mut c) = spsc::channel::<u32>(2, 0);
        let producer = thread::spawn(move || {
            let mut returned = Vec::new();
            for i in 0..2 {
                if let Err(PushError::Closed(v)) = p.push(i) {
                    returned.push(v);
                }
            }
            returned
        });
        // Pop the first push before closing (waiting for it keeps the preemptions for
        // the race itself: the second push against the close).
        let mut drained = Vec::new();
        while c.pop_batch(1, |v| drained.push(v)) == 0 {
            thread::yield_now();
        }
        c.close();
        while c.pop_batch(2, |v| drained.push(v)) > 0 {}
        let returned = producer.join().unwrap();
        // Every value exactly once: drained or returned, in order.
        let mut all = drained.clone();
        all.extend(returned);
        assert_eq!(all, vec![0, 1]);
        assert!(c.is_closed_and_drained());
    });
}

/// Catches: the MPSC close letting a producer that won its slot before the close go
/// undrained, or one that lost the race keep its value in the ring.
#[test]
fn mpsc_close_races_push() {
    loom::model(|| {
        let ring = Arc::new(mpsc::Ring::new(2, 0));
        let mut consumer = mpsc::Consumer::new(&*ring);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || match ring.push(7u32) {
                Ok(()) => None,
                Err(PushError::Closed(v)) => Some(v),
                Err(PushError::Full(_)) => unreachable!(),
            })
        };
        consumer.close(&*ring);
        let mut drained = Vec::new();
        consumer.drain_closed(&*ring, |v| drained.push(v));
        let returned = producer.join().unwrap();
        assert_eq!(drained.len() + usize::from(returned.is_some()), 1);
    });
}
