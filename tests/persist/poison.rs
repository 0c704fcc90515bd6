//! A poisoned log: an fsync error or a full disk stops the shard's log; the message
//! that met the failure is dead-lettered (`NotLogged`), later publishes are refused with
//! their message back, and every handled message survives power loss.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::persist::{builder, first_shard, persistence, seen, topic};
use shardbus::log::{FsyncPolicy, IoOp, SimStorage};
use shardbus::{Bus, Context, DeadLetterReason, DurableError, LogError, PublishError};

/// A dead letter's message, and the address of its `NotLogged` error (to tell that it is
/// the very error `Bus::log_error` returns).
type Letters = Arc<Mutex<Vec<(String, usize)>>>;

/// One shard, so that the next sync is that shard's commit.
fn one_shard(sim: &SimStorage) -> (Bus<String>, Letters) {
    let letters = Letters::default();
    let l = letters.clone();
    let bus = builder(1, persistence(sim), &seen())
        .dead_letter(move |d| {
            if let DeadLetterReason::NotLogged { error } = d.reason {
                let addr = error as *const LogError as usize;
                l.lock().unwrap().push((d.message.clone(), addr));
            }
        })
        .build()
        .unwrap();
    (bus, letters)
}

/// The last error of `error`'s `source` chain.
fn root_cause<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut e = error;
    while let Some(next) = e.source() {
        e = next;
    }
    e
}

/// The log failed in `op` with the OS error `code`: `Bus::log_error` is that I/O error,
/// typed, with the `io::Error` at the end of its source chain, and the dead letter of
/// the message that met the failure carries the same error.
fn check_poisoned(bus: &Bus<String>, letters: &Mutex<Vec<(String, usize)>>, op: IoOp, code: i32) {
    let error = bus.log_error(first_shard()).unwrap();
    match &*error {
        LogError::Io { op: failed, .. } => assert_eq!(*failed, op, "{error}"),
        other => panic!("not an I/O error: {other:?}"),
    }
    let io = root_cause(&*error)
        .downcast_ref::<io::Error>()
        .expect("the chain ends in the io::Error");
    assert_eq!(io.raw_os_error(), Some(code));
    assert_eq!(io.kind(), io::Error::from_raw_os_error(code).kind());
    // The message that met the failure was not handled: it is dead-lettered, with the
    // error that poisoned the log.
    let letters = letters.lock().unwrap();
    let addr = Arc::as_ptr(&error) as usize;
    assert!(letters.contains(&("b".to_owned(), addr)), "{letters:?}");
    assert!(letters.iter().all(|(_, a)| *a == addr), "{letters:?}");
    drop(letters);
    // Later publishes are refused with their message back.
    match bus.publish_durable(topic(0), "c".to_owned()) {
        Err(DurableError::Closed(m)) => assert_eq!(m, "c"),
        other => panic!("{other:?}"),
    }
    match bus.publish(topic(0), "d".to_owned()) {
        Err(PublishError::Closed(m)) => assert_eq!(m, "d"),
        other => panic!("{other:?}"),
    }
    let mut p = bus.publisher();
    assert!(matches!(
        p.publish_durable(topic(0), "e".to_owned()),
        Err(DurableError::Closed(m)) if m == "e"
    ));
}

#[test]
fn an_fsync_error_poisons_the_shard_log() {
    let sim = SimStorage::new();
    let (bus, letters) = one_shard(&sim);
    bus.publish_durable(topic(0), "a".to_owned()).unwrap();
    sim.fail_next_sync(io::Error::from_raw_os_error(5)); // EIO
    assert!(matches!(
        bus.publish_durable(topic(0), "b".to_owned()),
        Err(DurableError::Unconfirmed)
    ));
    check_poisoned(&bus, &letters, IoOp::SyncData, 5);
    bus.shutdown();
}

#[test]
fn a_full_disk_poisons_the_shard_log() {
    let sim = SimStorage::new();
    let (bus, letters) = one_shard(&sim);
    bus.publish_durable(topic(0), "a".to_owned()).unwrap();
    sim.fail_next_append(io::Error::from_raw_os_error(28), 5); // ENOSPC, 5 bytes written
    assert!(matches!(
        bus.publish_durable(topic(0), "b".to_owned()),
        Err(DurableError::Unconfirmed)
    ));
    check_poisoned(&bus, &letters, IoOp::Append, 28);
    bus.shutdown();
    // The partial write is a torn tail at the next start; "a" is intact.
    let s = seen();
    let bus = builder(1, persistence(&sim), &s).build().unwrap();
    assert!(s.lock().unwrap().iter().all(|(_, m, _)| m != "b"));
    bus.shutdown();
}

/// A sync that fails while batches wait in the pipelined commit poisons the log: every
/// message is handled or dead-lettered (`NotLogged`) or refused at publish, exactly once;
/// the handled ones are a prefix of the published order and all survive power loss; the
/// publisher's wait reports them unconfirmed.
#[test]
fn a_sync_error_in_the_pipelined_commit_poisons_and_dead_letters() {
    const N: usize = 4000;
    let sim = SimStorage::new();
    sim.set_sync_delay(Duration::from_micros(300));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let letters = Arc::new(Mutex::new(Vec::new()));
    let (h2, l2) = (handled.clone(), letters.clone());
    let bus = Bus::<String>::builder()
        .pin_threads(false)
        .persist(persistence(&sim).fsync(FsyncPolicy::Batch))
        .subscribe("t", move |_: &mut Context<'_, String>, m: &String| {
            h2.lock().unwrap().push(m.clone());
        })
        .dead_letter(move |d| {
            assert!(matches!(d.reason, DeadLetterReason::NotLogged { .. }));
            l2.lock().unwrap().push(d.message.clone());
        })
        .build()
        .unwrap();
    let mut p = bus.publisher();
    let mut refused = Vec::new();
    for i in 0..N {
        if i == N / 4 {
            sim.fail_next_sync(io::Error::from_raw_os_error(5)); // EIO
        }
        if let Err(PublishError::Closed(m)) = p.publish("t", format!("m{i:06}")) {
            refused.push(m);
        }
    }
    assert!(
        p.wait_durable().is_err(),
        "the failed sync is not confirmed"
    );
    let error = bus.log_error(first_shard()).expect("the log is poisoned");
    assert!(
        matches!(&*error, LogError::Io { op: IoOp::SyncData, source, .. } if source.raw_os_error() == Some(5)),
        "{error:?}"
    );
    // Stop the shard (it has dead-lettered or handled everything it drained).
    bus.shutdown();
    let handled = handled.lock().unwrap().clone();
    let letters = letters.lock().unwrap().clone();
    assert!(!letters.is_empty());
    let mut all: Vec<String> = handled
        .iter()
        .chain(&letters)
        .chain(&refused)
        .cloned()
        .collect();
    all.sort();
    let expected: Vec<String> = (0..N).map(|i| format!("m{i:06}")).collect();
    assert_eq!(
        all, expected,
        "each message handled, dead-lettered or refused, once"
    );
    assert_eq!(
        handled,
        expected[..handled.len()],
        "handled: a prefix, in order"
    );

    // Power loss: every handled message was synced, so it is replayed.
    sim.crash(None);
    let replayed = Arc::new(Mutex::new(Vec::new()));
    let r2 = replayed.clone();
    let bus = Bus::<String>::builder()
        .pin_threads(false)
        .persist(persistence(&sim).fsync(FsyncPolicy::Batch))
        .subscribe("t", move |_: &mut Context<'_, String>, m: &String| {
            r2.lock().unwrap().push(m.clone());
        })
        .build()
        .unwrap();
    bus.shutdown();
    let replayed = replayed.lock().unwrap();
    assert!(
        replayed.len() >= handled.len() && replayed[..handled.len()] == handled[..],
        "handled {} messages, {} survived power loss",
        handled.len(),
        replayed.len()
    );
}
