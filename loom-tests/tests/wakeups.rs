//! Models of the async publishes' wake-up handshakes: a waiter registers, announces
//! itself, fences and re-checks; the shard frees room (or commits), fences and looks
//! for a waiter. A lost wake-up leaves the waiting future pending forever: loom's
//! `block_on` then parks a thread no one wakes, and loom reports the deadlock.
#![cfg(shardbus_loom)]

use std::future::poll_fn;

use loom::future::block_on;
use loom::sync::Arc;
use loom::thread;
use shardbus::__loom::{mpsc, spsc, DurableMark, PushError};

/// Pushes `values` in order into the lane, waiting for room (`poll_room`) whenever it is
/// full, as `publish_async` does.
async fn push_all(p: &mut spsc::Producer<u32>, values: std::ops::Range<u32>) {
    for mut v in values {
        loop {
            match p.push(v) {
                Ok(()) => break,
                Err(PushError::Full(back)) => {
                    v = back;
                    poll_fn(|cx| p.poll_room(cx)).await;
                }
                Err(PushError::Closed(_)) => unreachable!(),
            }
        }
    }
}

/// Catches a lost wake-up of a publisher waiting for room in its lane (`poll_room` and
/// the consumer's check after a pop batch): the producer meets a full lane and registers
/// while the consumer pops. Without the flag, the re-check after it, or the fence pair
/// (the producer's heavy fence before the re-check, the consumer's light fence between
/// its `head` store and the flag load), the consumer can pop, miss the flag, and exit
/// while the producer pends forever.
#[test]
fn lane_room_wait_no_lost_wakeup() {
    loom::model(|| {
        let (mut p, mut c) = spsc::channel::<u32>(1, 0);
        let producer = thread::spawn(move || {
            block_on(async move {
                push_all(&mut p, 0..2).await;
                p
            })
        });
        // The consumer pops the first value (pushed without a wait) and leaves: that
        // pop is the only wake-up the waiting producer gets.
        let mut got = Vec::new();
        while got.is_empty() {
            if c.pop_batch(1, |v| got.push(v)) == 0 {
                thread::yield_now();
            }
        }
        let _p = producer.join().unwrap();
        c.pop_batch(1, |v| got.push(v));
        assert_eq!(got, vec![0, 1]);
    });
}

/// Catches a lost wake-up at the lane's low-water mark: the consumer wakes a waiting
/// producer only once the lane has drained to half its capacity, so the pop batches before
/// that see the flag set and must leave it set. Here the producer fills a lane of 4 and
/// waits to push a fifth value; the consumer takes two values (the second brings the lane
/// to the mark) and then waits for the producer. A consumer that cleared the flag on a pop
/// above the mark without waking, or that checked the mark against a stale position, would
/// leave the producer pending forever.
#[test]
fn lane_room_wait_at_low_water_no_lost_wakeup() {
    loom::model(|| {
        let (mut p, mut c) = spsc::channel::<u32>(4, 0);
        let producer = thread::spawn(move || {
            block_on(async move {
                push_all(&mut p, 0..5).await;
                p
            })
        });
        let mut got = Vec::new();
        while got.len() < 2 {
            if c.pop_batch(1, |v| got.push(v)) == 0 {
                thread::yield_now();
            }
        }
        let _p = producer.join().unwrap();
        while c.pop_batch(4, |v| got.push(v)) > 0 {}
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    });
}

/// Catches a lost wake-up of a publisher waiting for room in a lane that the shard
/// closes instead of draining (shutdown): the close must wake it, and its re-check must
/// see `closing`, so the push gives the value back as `Closed`.
#[test]
fn lane_room_wait_sees_the_close() {
    loom::model(|| {
        let (mut p, mut c) = spsc::channel::<u32>(1, 0);
        p.push(0).unwrap();
        let producer = thread::spawn(move || {
            block_on(async move {
                let mut v = 1;
                loop {
                    match p.push(v) {
                        Ok(()) => return None,
                        Err(PushError::Full(back)) => {
                            v = back;
                            poll_fn(|cx| p.poll_room(cx)).await;
                        }
                        Err(PushError::Closed(back)) => return Some(back),
                    }
                }
            })
        });
        c.close();
        assert_eq!(producer.join().unwrap(), Some(1));
        let mut got = Vec::new();
        c.pop_batch(2, |v| got.push(v));
        assert_eq!(got, vec![0]);
    });
}

/// Catches a lost wake-up of a `Bus::publish_async` waiting for room in the shared ring
/// (`push_at_async`: listener, waiter count, fence, retry; the consumer's count check
/// after a pop batch): the producer finds the ring full and registers while the
/// consumer pops the only value and leaves.
#[test]
fn ring_room_wait_no_lost_wakeup() {
    loom::model(|| {
        let ring = Arc::new(mpsc::Ring::new(1, 0));
        let mut consumer = mpsc::Consumer::new(&*ring);
        ring.push(0u32).unwrap();
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || block_on(ring.push_at_async(1, || true)).is_ok())
        };
        let mut got = Vec::new();
        while got.is_empty() {
            if consumer.pop_batch(&*ring, 1, |v| got.push(v)) == 0 {
                thread::yield_now();
            }
        }
        assert!(producer.join().unwrap());
        consumer.pop_batch(&*ring, 1, |v| got.push(v));
        assert_eq!(got, vec![0, 1]);
    });
}

/// Catches a lost wake-up of a durable publish waiting for the commit
/// (`wait_durable_async`: listener, waiter count, fence, re-check of the watermark; the
/// shard's count check after its watermark store): the shard commits once, while the
/// waiter registers, and the waiter must resolve `Ok`.
#[test]
fn durable_wait_no_lost_wakeup() {
    loom::model(|| {
        let mark = Arc::new(DurableMark::default());
        let waiter = {
            let mark = mark.clone();
            thread::spawn(move || block_on(mark.wait(2)))
        };
        mark.commit(2);
        assert_eq!(waiter.join().unwrap(), Ok(()));
    });
}

/// Catches a durable waiter left pending when the shard stops without confirming it:
/// the final state must wake it, and it must resolve `Err` (unconfirmed).
#[test]
fn durable_wait_sees_the_stop() {
    loom::model(|| {
        let mark = Arc::new(DurableMark::default());
        let waiter = {
            let mark = mark.clone();
            thread::spawn(move || block_on(mark.wait(2)))
        };
        mark.close();
        assert_eq!(waiter.join().unwrap(), Err(()));
    });
}
