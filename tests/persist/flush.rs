//! `Bus::flush` on a persistent bus: the shard drains its publishers' lanes into the
//! write-ahead batch before it answers, so every message published before the call has
//! been logged and handled when `flush` returns, under every fsync policy (`Batch` is
//! the pipelined commit); and on a shard whose log has failed it reports `Closed`.

use std::collections::HashSet;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::common::persist::{builder, persistence, seen, topic};
use crate::common::PATIENCE;
use shardbus::log::{FsyncPolicy, SimStorage};
use shardbus::{Bus, DurableError, Error};

/// `bus.flush()` on a thread of its own: a flush that hangs fails the test.
fn flush_within_patience(bus: &Arc<Bus<String>>) {
    let (tx, rx) = mpsc::channel();
    let bus = bus.clone();
    std::thread::spawn(move || {
        let flushed = bus.flush();
        drop(bus); // before answering: the test unwraps its `Arc` next
        let _ = tx.send(flushed);
    });
    rx.recv_timeout(PATIENCE)
        .expect("flush finishes")
        .expect("flush succeeds");
}

#[test]
fn flush_returns_once_everything_published_before_it_is_logged_and_handled() {
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::Batch,
        FsyncPolicy::Interval(Duration::from_millis(5)),
        FsyncPolicy::Always,
    ] {
        let sim = SimStorage::new();
        let s = seen();
        let bus = Arc::new(
            builder(2, persistence(&sim).fsync(policy), &s)
                .build()
                .unwrap(),
        );
        let mut publisher = bus.publisher();
        let mut published = HashSet::new();
        for round in 0..5 {
            for i in round * 200..(round + 1) * 200 {
                // Half through a Publisher's lanes, half through the shared rings.
                if i % 2 == 0 {
                    publisher.publish(topic(i), i.to_string()).unwrap();
                } else {
                    bus.publish(topic(i), i.to_string()).unwrap();
                }
                published.insert(i.to_string());
            }
            flush_within_patience(&bus);
            let handled: HashSet<String> = s
                .lock()
                .unwrap()
                .iter()
                .map(|(_, m, _)| m.clone())
                .collect();
            let mut missing: Vec<&String> = published.difference(&handled).collect();
            missing.sort_unstable();
            missing.truncate(10);
            assert_eq!(
                missing,
                [] as [&String; 0],
                "{policy:?} round {round}: not handled"
            );
            assert_eq!(handled.len(), published.len(), "{policy:?}: nothing else");
            assert_eq!(
                s.lock().unwrap().len(),
                published.len(),
                "{policy:?}: each once"
            );
        }
        drop(publisher);
        let bus = Arc::try_unwrap(bus).expect("the flush threads are gone");
        let stats = bus.shutdown();
        assert_eq!(stats.handled(), 1000, "{policy:?}");
    }
}

/// A shard whose log has failed has closed its intake: `flush` says so with
/// `Error::Closed` (it neither hangs nor claims a flush it cannot make).
#[test]
fn flush_on_a_poisoned_shard_is_closed() {
    let sim = SimStorage::new();
    let s = seen();
    let bus = Arc::new(builder(1, persistence(&sim), &s).build().unwrap());
    bus.publish_durable(topic(0), "a".to_owned()).unwrap();
    sim.fail_next_sync(std::io::Error::from_raw_os_error(5)); // EIO
    assert!(matches!(
        bus.publish_durable(topic(0), "b".to_owned()),
        Err(DurableError::Unconfirmed)
    ));
    let (tx, rx) = mpsc::channel();
    let b = bus.clone();
    std::thread::spawn(move || {
        let flushed = b.flush();
        drop(b);
        let _ = tx.send(flushed);
    });
    let flushed = rx.recv_timeout(PATIENCE).expect("flush finishes");
    assert!(matches!(flushed, Err(Error::Closed)), "{flushed:?}");
    let bus = Arc::try_unwrap(bus).expect("the flush thread is gone");
    bus.shutdown();
}
