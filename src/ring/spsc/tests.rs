//! Unit tests of the SPSC ring.

use super::*;
use std::collections::VecDeque;

#[test]
fn fifo_and_full() {
    let (mut p, mut c) = channel::<u32>(4, 0);
    for i in 0..4 {
        p.push(i).unwrap();
    }
    assert_eq!(p.push(9), Err(PushError::Full(9)));
    let mut got = vec![];
    assert_eq!(c.pop_batch(3, |v| got.push(v)), 3);
    p.push(4).unwrap();
    c.pop_batch(10, |v| got.push(v));
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

#[test]
fn close_gives_values_back_and_drains_the_rest() {
    let (mut p, mut c) = channel::<String>(4, u64::MAX - 3);
    p.push("a".into()).unwrap();
    p.push("b".into()).unwrap();
    c.close();
    assert_eq!(p.push("c".into()), Err(PushError::Closed("c".into())));
    assert_eq!(p.free_slots(), Err(()));
    let (mut p2, mut c2) = channel::<String>(4, 0);
    c2.close();
    assert_eq!(
        p2.push_n(1, ["d".to_string()].into_iter()),
        Err(vec!["d".to_string()])
    );
    let mut got = vec![];
    c.pop_batch(10, |v| got.push(v));
    assert_eq!(got, vec!["a", "b"]);
    assert!(c.is_closed_and_drained());
}

#[test]
fn batch_push_wraps() {
    let (mut p, mut c) = channel::<u64>(8, u64::MAX - 5);
    let mut next = 0;
    let mut model = VecDeque::new();
    for round in 0..50u64 {
        let batch: Vec<u64> = (0..(round % 7 + 1))
            .map(|_| {
                next += 1;
                next
            })
            .collect();
        let n = p.free_slots().unwrap().min(batch.len());
        p.push_n(n, batch.iter().copied()).unwrap();
        model.extend(batch[..n].iter().copied());
        let mut got = vec![];
        c.pop_batch((round % 3 + 1) as usize, |v| got.push(v));
        for v in got {
            assert_eq!(Some(v), model.pop_front());
        }
    }
}

#[test]
fn drops_each_value_once() {
    let counter = std::sync::Arc::new(());
    {
        let (mut p, mut c) = channel(4, u64::MAX - 1);
        for _ in 0..3 {
            p.push(counter.clone()).unwrap();
        }
        c.pop_batch(1, drop);
        assert_eq!(std::sync::Arc::strong_count(&counter), 3);
        drop(p);
        assert_eq!(c.ready(), 2);
        assert!(!c.is_finished());
    }
    assert_eq!(std::sync::Arc::strong_count(&counter), 1);
}

/// A close racing a producer thread, with real threads, in both fence modes (the
/// membarrier one where the kernel offers it): every push that returned `Ok` is
/// drained exactly once and in order, the push that returned `Closed` gave back
/// exactly the value it was given, and nothing after it was accepted. (The
/// interleavings are explored exhaustively by the loom model
/// `spsc_close_races_push`; this runs the real fences.)
#[test]
fn close_races_a_pushing_thread() {
    let membarrier = crate::sync::asym::decide(crate::Fences::Auto)
        .is_ok_and(|m| m == crate::FenceMode::Membarrier);
    for asym in [false, membarrier] {
        close_race_rounds(asym, 300);
    }
}

/// [`close_races_a_pushing_thread`] in one fence mode (also run with failing heavy fences
/// by `sync::asym`'s tests).
pub(crate) fn close_race_rounds(asym: bool, rounds: u64) {
    for round in 0..rounds {
        let (mut p, mut c) = channel_in_mode::<u64>(8, u64::MAX - 7, asym);
        let producer = std::thread::spawn(move || {
            let mut accepted = 0u64;
            loop {
                match p.push(accepted) {
                    Ok(()) => accepted += 1,
                    Err(PushError::Full(v)) => {
                        assert_eq!(v, accepted);
                        std::hint::spin_loop();
                    }
                    Err(PushError::Closed(v)) => {
                        assert_eq!(v, accepted);
                        assert_eq!(p.push(u64::MAX), Err(PushError::Closed(u64::MAX)));
                        return accepted;
                    }
                }
            }
        });
        let mut got = Vec::new();
        // Pop a varying amount before closing, so the close lands anywhere.
        while (got.len() as u64) < round % 40 {
            c.pop_batch(3, |v| got.push(v));
        }
        c.close();
        while c.pop_batch(8, |v| got.push(v)) > 0 {}
        assert!(c.is_closed_and_drained());
        let accepted = producer.join().unwrap();
        let want: Vec<u64> = (0..accepted).collect();
        assert_eq!(got, want, "asym {asym}, round {round}");
    }
}

#[test]
fn unwinding_consumer_keeps_accounting() {
    let (mut p, mut c) = channel::<Box<u32>>(4, 0);
    for i in 0..4 {
        p.push(Box::new(i)).unwrap();
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.pop_batch(4, |v| assert_ne!(*v, 1));
    }));
    assert!(r.is_err());
    let mut got = vec![];
    c.pop_batch(4, |v| got.push(*v));
    assert_eq!(got, vec![2, 3]);
}

#[test]
fn pop_each_publishes_its_position_before_each_value_across_the_wrap() {
    let (mut p, mut c) = channel::<u32>(4, u64::MAX - 3);
    for i in 0..4 {
        p.push(i).unwrap();
    }
    let ring = c.ring().clone();
    let mut seen = vec![];
    // While `f` holds value `v`, an observer counts only the values after it.
    assert_eq!(c.pop_each(3, |v| seen.push((v, ring.depth_seen()))), 3);
    assert_eq!(seen, vec![(0, 3), (1, 2), (2, 1)]);
    // The freed slots are reusable at once; order is kept.
    for i in 4..7 {
        p.push(i).unwrap();
    }
    let mut rest = vec![];
    assert_eq!(c.pop_each(10, |v| rest.push(v)), 4);
    assert_eq!(rest, vec![3, 4, 5, 6]);
    assert_eq!(ring.depth_seen(), 0);
}

/// Pops in place: hands each value of the batch to `g` in order and counts it in `taken`
/// once `g` returns (`g` takes it: reads it out or drops it).
///
/// # Safety
///
/// `g` takes the value it is handed exactly once before it returns; if it unwinds, it has
/// not taken it.
unsafe fn pop_each_in_place<T>(
    c: &mut Consumer<T>,
    max: usize,
    taken: &std::cell::Cell<usize>,
    mut g: impl FnMut(*mut T),
) -> usize {
    // `g`'s contract is `f`'s, one value at a time, and each is counted once taken.
    // SAFETY: as just said; `first.add(i)` stays within the stretch of `len` values.
    unsafe {
        c.pop_batch_in_place(max, taken, |first, len| {
            for i in 0..len {
                g(first.add(i));
                taken.set(taken.get() + 1);
            }
        })
    }
}

/// `pop_batch_in_place` across the wrap: values handed in place in order, a panic leaves
/// the first value not taken at the front (given back by `front_after_unwind`; nothing
/// given back when `f` had taken it), and the slots are reused after.
#[test]
fn pop_in_place_hands_values_in_order_and_keeps_the_failed_one_at_the_front() {
    let (mut p, mut c) = channel::<Box<u32>>(4, u64::MAX - 3);
    for i in 0..4 {
        p.push(Box::new(i)).unwrap();
    }
    let taken = std::cell::Cell::new(0);
    let mut got = vec![];
    // Takes 0 and 1, then panics on 2 without taking it.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // `g` reads each value out exactly once before it returns; on the unwind,
        // `front_after_unwind` is called below (2 was not taken).
        // SAFETY: the contract of `pop_batch_in_place`, as just said.
        unsafe {
            pop_each_in_place(&mut c, 4, &taken, |v| {
                if **v == 2 {
                    panic!("handler");
                }
                got.push(*v.read());
            })
        }
    }));
    assert!(r.is_err());
    assert_eq!(got, vec![0, 1]);
    assert_eq!(taken.get(), 2);
    // The failed value's slot is still the consumer's: the producer sees two free slots.
    assert_eq!(p.free_slots(), Ok(2));
    // SAFETY: right after the unwind; 2 is still whole in its slot.
    let failed = unsafe { c.front_after_unwind(true) };
    assert_eq!(failed.as_deref(), Some(&2));
    // Three slots free now: the failed value's too.
    for i in 4..7 {
        p.push(Box::new(i)).unwrap();
    }
    // Drops 3 in place, then panics before counting it (as a message's `Drop` would):
    // nothing to give back, and 4 is not moved past.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // `f` drops 3 before it unwinds; `front_after_unwind` gets `live` false.
        // SAFETY: the contract of `pop_batch_in_place`, as just said.
        unsafe {
            c.pop_batch_in_place(4, &taken, |first, _| {
                let n = **first;
                first.drop_in_place();
                assert_ne!(n, 3, "drop");
            })
        }
    }));
    assert!(r.is_err());
    assert_eq!(taken.get(), 0);
    // SAFETY: right after the unwind; 3 was dropped by `f`.
    assert_eq!(unsafe { c.front_after_unwind(false) }, None);
    let mut rest = vec![];
    // SAFETY: `g` reads each value out exactly once and does not unwind.
    let n = unsafe { pop_each_in_place(&mut c, 10, &taken, |v| rest.push(*v.read())) };
    assert_eq!((n, rest), (3, vec![4, 5, 6]));
    assert!(p.is_drained());
}

/// A batch that wraps is handed on as two stretches, each of contiguous values.
#[test]
fn pop_in_place_hands_a_wrapped_batch_as_two_stretches() {
    let (mut p, mut c) = channel::<u32>(4, 0);
    for i in 0..3 {
        p.push(i).unwrap();
    }
    assert_eq!(c.pop_batch(2, drop), 2);
    for i in 3..6 {
        p.push(i).unwrap();
    }
    let taken = std::cell::Cell::new(0);
    let mut stretches = vec![];
    // `f` reads each value of its stretch out and counts them.
    // SAFETY: the contract of `pop_batch_in_place`, as just said.
    let n = unsafe {
        c.pop_batch_in_place(8, &taken, |first, len| {
            let values: Vec<u32> = (0..len).map(|i| first.add(i).read()).collect();
            stretches.push(values);
            taken.set(taken.get() + len);
        })
    };
    assert_eq!(n, 4);
    assert_eq!(stretches, vec![vec![2, 3], vec![4, 5]]);
    assert!(p.is_drained());
}

/// A panic after the batch (the async producer's waker, woken at low water) is not a panic
/// of `f`: every value was handed on and `head` is past them all, so `front_after_unwind`
/// must not move past or read another slot, whatever `live` says.
#[test]
fn a_panic_in_the_wake_after_an_in_place_batch_leaves_nothing_at_the_front() {
    struct PanicOnWake;
    impl std::task::Wake for PanicOnWake {
        fn wake(self: std::sync::Arc<Self>) {
            panic!("waker");
        }
    }
    let (mut p, mut c) = channel::<u32>(4, 0);
    for i in 0..4 {
        p.push(i).unwrap();
    }
    // The ring is full: an async producer registers its waker.
    let waker = std::task::Waker::from(std::sync::Arc::new(PanicOnWake));
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(p.poll_room(&mut cx).is_pending());
    let taken = std::cell::Cell::new(0);
    let mut got = vec![];
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // `g` reads each value out exactly once and does not unwind.
        // SAFETY: the contract of `pop_batch_in_place`, as just said.
        unsafe { pop_each_in_place(&mut c, 4, &taken, |v| got.push(v.read())) }
    }));
    assert!(r.is_err(), "the waker panicked");
    assert_eq!(got, vec![0, 1, 2, 3]);
    // Not `f`'s unwind: nothing at the front, even asked as if a value were live.
    // SAFETY: right after the unwind; every value was moved out by `g`.
    assert_eq!(unsafe { c.front_after_unwind(true) }, None);
    assert!(p.is_drained());
    p.push(4).unwrap();
    let mut rest = vec![];
    // SAFETY: `g` reads each value out exactly once and does not unwind.
    unsafe { pop_each_in_place(&mut c, 4, &taken, |v| rest.push(v.read())) };
    assert_eq!(rest, vec![4]);
}

/// A push prefetches a slot half a kilobyte on, never more than a quarter of the ring
/// ahead, never less than the next slot; and that slot is always one of the ring's (the
/// mask wraps it), whatever the capacity.
#[test]
fn the_prefetch_distance_stays_within_a_quarter_of_the_ring() {
    assert_eq!(prefetch_distance::<[u8; 24]>(4096), 512 / 24);
    assert_eq!(prefetch_distance::<[u8; 24]>(32), 8);
    assert_eq!(prefetch_distance::<u64>(2), 1);
    assert_eq!(prefetch_distance::<[u8; 4096]>(4096), 1);
    assert_eq!(prefetch_distance::<()>(1 << 20), 512);
    // Pushes that wrap many times on the smallest rings: every value arrives, in order.
    for capacity in [1, 2, 4] {
        let (mut p, mut c) = channel::<u64>(capacity, u64::MAX - 7);
        let mut got = Vec::new();
        for i in 0..40 {
            p.push(i).unwrap();
            if p.free_slots() == Ok(0) {
                c.pop_batch(usize::MAX, |v| got.push(v));
            }
        }
        c.pop_batch(usize::MAX, |v| got.push(v));
        assert_eq!(got, (0..40).collect::<Vec<_>>(), "capacity {capacity}");
    }
}

/// A value of which only eight fit in a batch push's stage: value `k` holds `k * 64 + i`
/// in its word `i`, so a word copied to the wrong slot shows.
#[derive(Clone, Debug, PartialEq)]
struct Wide([u64; 64]);

impl Wide {
    fn new(k: u64) -> Self {
        Self(std::array::from_fn(|i| k * 64 + i as u64))
    }
}

/// Which types a batch push stages, and how many a stage holds.
#[test]
fn the_stage_takes_what_fits_at_least_eight_times() {
    #[repr(align(128))]
    struct Aligned(#[allow(dead_code)] u8);
    assert_eq!(stage_len::<u64>(), 512);
    assert_eq!(stage_len::<Wide>(), 8);
    assert_eq!(stage_len::<[u8; 4096 / 8]>(), 8);
    assert_eq!(stage_len::<[u8; 4096 / 8 + 1]>(), 0);
    assert_eq!(stage_len::<()>(), 0);
    assert_eq!(stage_len::<Aligned>(), 0);
}

/// Batches of 13 to 21 values of which eight fill the stage (from 16 on a batch goes
/// through it in two or three fills, the smaller ones are written slot by slot, and each
/// crosses the ring's end at a different place each round): every value arrives whole,
/// once and in order.
#[test]
fn a_batch_larger_than_the_stage_arrives_whole_and_in_order() {
    let (mut p, mut c) = channel::<Wide>(32, u64::MAX - 9);
    let (mut next, mut want) = (0, 0);
    for round in 0..12 {
        assert!(p.is_drained()); // and the cached `head` is fresh: all 32 slots are free
        let n = p.free_slots().unwrap().min(13 + round % 9);
        assert_eq!(n, 13 + round % 9);
        let batch: Vec<Wide> = (next..next + n as u64).map(Wide::new).collect();
        next += n as u64;
        p.push_n(n, batch.into_iter()).unwrap();
        c.pop_batch(usize::MAX, |v| {
            assert_eq!(v, Wide::new(want), "round {round}");
            want += 1;
        });
    }
    assert_eq!(want, next);
    assert_eq!(next, (0..12).map(|round| 13 + round % 9).sum::<u64>());
}

/// Values with a destructor through the stage: each is dropped exactly once, whether
/// popped (in order), left in the ring when it is dropped, or given back by a closed ring
/// (in order, the batch crossing the ring's end).
#[test]
fn a_staged_batch_drops_each_value_once() {
    #[derive(Debug)]
    struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>, [u64; 56]);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    assert_eq!(stage_len::<Counted>(), 8);
    let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let make = |n: u64| {
        (0..n)
            .map(|i| Counted(drops.clone(), [i; 56]))
            .collect::<Vec<_>>()
    };
    let (mut p, mut c) = channel::<Counted>(32, u64::MAX - 5);
    p.push_n(20, make(20).into_iter()).unwrap();
    p.push_n(3, make(3).into_iter()).unwrap(); // too few to stage
    let mut popped = Vec::new();
    assert_eq!(c.pop_batch(12, |v| popped.push(v.1[55])), 12);
    assert_eq!(popped, (0..12).collect::<Vec<_>>());
    assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 12);
    drop((p, c));
    assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 23);
    // From slot 24 of 32: the batch crosses the ring's end.
    let (mut p, mut c) = channel::<Counted>(32, 24 * STEP);
    c.close();
    let back = p.push_n(17, make(17).into_iter()).unwrap_err();
    let order: Vec<u64> = back.iter().map(|v| v.1[0]).collect();
    assert_eq!(order, (0..17).collect::<Vec<_>>());
    assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 23);
    drop(back);
    assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 40);
}
