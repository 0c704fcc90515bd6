//! Models of a subscriber stream's real code (`src/stream.rs`): the consumer's wake-up
//! handshake and the order across its channel and overflow.
#![cfg(shardbus_loom)]

use std::future::poll_fn;

use loom::thread;
use shardbus::__loom::stream::{channel, Popped, SendError, Sent};

/// Catches: a lost wake-up. The consumer finds nothing, registers its waker and pends;
/// the producer pushes, then wakes. Without the re-check after the register (or with a
/// register and a wake that are not ordered against the push and the re-check), a push
/// that lands between the consumer's first look and its register wakes nobody and the
/// consumer sleeps forever: loom reports the blocked `block_on` as a deadlock. Also the
/// end: the sender's drop wakes a consumer waiting on an empty stream, which then gets
/// `None`.
#[test]
fn stream_wakeup_is_never_lost() {
    loom::model(|| {
        let (mut tx, mut rx) = channel::<u32>(2);
        let producer = thread::spawn(move || {
            assert_eq!(tx.send(1, || {}), Ok(Sent::Channel));
            drop(tx);
        });
        let got = loom::future::block_on(async move {
            let mut got = Vec::new();
            while let Some((v, _)) = poll_fn(|cx| rx.poll_pop(cx.waker())).await {
                got.push(v);
            }
            got
        });
        producer.join().unwrap();
        assert_eq!(got, vec![1]);
    });
}

/// Catches: a message taken from the overflow ahead of an older one in the channel. With
/// a channel of 2, the producer's third message goes to the overflow; a consumer that
/// saw the channel empty, then pops the overflow without looking at the channel again,
/// can return 3 before 1 and 2. Also a producer that leaves overflow mode before the
/// overflow is drained (its fourth message would overtake the third).
#[test]
fn stream_keeps_order_across_channel_and_overflow() {
    loom::model(|| {
        let (mut tx, mut rx) = channel::<u32>(2);
        let producer = thread::spawn(move || {
            let mut dead = 0;
            for i in 1..=4 {
                match tx.send(i, || {}) {
                    Ok(_) => {}
                    Err(SendError::Full(_)) => dead += 1,
                    Err(SendError::Closed(_)) => unreachable!(),
                }
            }
            dead
        });
        let mut got = Vec::new();
        loop {
            match rx.try_pop() {
                Popped::Value(v, _) => got.push(v),
                Popped::Empty => thread::yield_now(),
                Popped::Finished => break,
            }
        }
        let dead = producer.join().unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        assert_eq!(got.len() + dead, 4, "{got:?}");
    });
}
