//! Back-pressure: `try_publish` on a full lane or a full inbox answers `Full` with the
//! very message, and the blocking publishes of the refused messages go through once the
//! shard drains.
//!
//! Every check is exact (counts, contents, order). Nothing waits on a timer for
//! correctness: tests wait on channels or condition variables; timeouts only bound a
//! test that would otherwise hang on a bug.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::common::{Log, PATIENCE};
use shardbus::{Bus, Context, TryPublishError};

/// A handler that blocks on the first message until released; logs every message.
fn blocking_subscriber(
    bus: &Bus<u32>,
    topic: &str,
) -> (mpsc::Receiver<()>, mpsc::Sender<()>, Arc<Log<u32>>) {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let log = Log::new();
    let sink = log.clone();
    let mut first = true;
    bus.subscribe(topic, move |_: &mut Context<'_, u32>, m: &u32| {
        sink.push(*m);
        if std::mem::take(&mut first) {
            entered_tx.send(()).unwrap();
            // Bounded so that a failing test does not leave the shard stuck.
            let _ = release_rx.recv_timeout(PATIENCE);
        }
    })
    .unwrap();
    (entered, release, log)
}

#[test]
fn try_publish_on_a_full_inbox_gives_the_very_message_back() {
    let bus = Bus::<u32>::builder()
        .shards(1)
        .pin_threads(false)
        .capacity(2)
        .lane_capacity(2)
        .drop_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let (entered, release, log) = blocking_subscriber(&bus, "t");
    let mut publisher = bus.publisher();
    publisher.publish("t", 0).unwrap();
    entered.recv_timeout(PATIENCE).unwrap();
    // The shard is stuck in the handler: nothing drains from here on.

    // The publisher's lane (2 slots) fills up.
    let mut lane_accepted = Vec::new();
    let lane_full = (1..10)
        .find(|&m| match publisher.try_publish("t", m) {
            Ok(()) => {
                lane_accepted.push(m);
                false
            }
            Err(TryPublishError::Full(back)) => {
                assert_eq!(back, m, "Publisher::try_publish gives the message back");
                true
            }
            Err(e) => panic!("{e:?}"),
        })
        .expect("the lane never became full");
    assert!(
        !lane_accepted.is_empty() && lane_accepted.len() <= 2,
        "a lane of 2 took {lane_accepted:?}"
    );

    // The shared inbox (2 slots) is empty: it takes exactly two.
    assert_eq!(bus.try_publish("t", 100), Ok(()));
    assert_eq!(bus.try_publish("t", 101), Ok(()));
    match bus.try_publish("t", 102) {
        Err(e @ TryPublishError::Full(_)) => {
            assert!(e.is_full() && !e.is_closed());
            assert_eq!(e.into_inner(), 102);
        }
        other => panic!("Bus::try_publish on a full inbox: {other:?}"),
    }
    // A new `Publisher` must register its lane through the full inbox: `Full` too.
    let mut fresh = publisher.clone();
    assert!(matches!(
        fresh.try_publish("t", 200),
        Err(TryPublishError::Full(200))
    ));

    release.send(()).unwrap();
    // Blocking publishes of the refused messages go through once the shard drains.
    publisher.publish("t", lane_full).unwrap();
    bus.publish("t", 102).unwrap();
    fresh.publish("t", 200).unwrap();
    let stats = bus.shutdown();

    let seen = log.snapshot();
    let lane: Vec<u32> = seen.iter().copied().filter(|&m| m < 100).collect();
    let mut expected_lane = vec![0];
    expected_lane.extend(&lane_accepted);
    expected_lane.push(lane_full);
    assert_eq!(lane, expected_lane, "the publisher's messages, in order");
    let shared: Vec<u32> = seen
        .iter()
        .copied()
        .filter(|&m| (100..200).contains(&m))
        .collect();
    assert_eq!(shared, [100, 101, 102]);
    assert_eq!(seen.iter().filter(|&&m| m == 200).count(), 1);
    assert_eq!(seen.len(), expected_lane.len() + 4);
    assert_eq!(stats.received(), seen.len() as u64);
}
