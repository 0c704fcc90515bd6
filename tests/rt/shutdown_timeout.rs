//! The deadline shutdown through the public API (`Bus::shutdown_timeout`): what the
//! deadline leaves undrained is dropped exactly once and counted in the
//! `ShutdownReport`, a shard whose handler never returns is detached and reported, and a
//! drained bus reports nothing left.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{name_on_shard, subscribe_counting, tracked_bus, Ledger, Tracked, PATIENCE};
use shardbus::{Bus, Context, TryPublishError};

/// A handler on shard 0 stalls with a backlog behind it (in the shared inbox and in a
/// publisher's lane). The stall ends deterministically once the deadline has passed:
/// the handler polls `try_publish` to a topic on shard 1, which answers `Closed` only
/// after the coordinator has told the shards to stop, and that happens only at the
/// deadline. Then shard 0 stops and drops what is left.
#[test]
fn shutdown_timeout_drops_what_is_left_exactly_once_and_reports_it() {
    let ledger = Ledger::new(10_000);
    let bus = tracked_bus(2).build().unwrap();
    let stall = name_on_shard(&bus, "stall", 0);
    let probe = bus.topic(&name_on_shard(&bus, "probe", 1)).unwrap();
    subscribe_counting(&bus, probe.name(), &ledger);
    let (entered_tx, entered) = mpsc::channel();
    let probes_accepted = Arc::new(AtomicU64::new(0));
    let (counter, accepted_probes) = (ledger.clone(), probes_accepted.clone());
    let mut first = true;
    bus.subscribe(
        stall.as_str(),
        move |ctx: &mut Context<'_, Tracked>, m: &Tracked| {
            counter.handle(m);
            if !std::mem::take(&mut first) {
                return;
            }
            entered_tx.send(()).unwrap();
            let give_up = Instant::now() + PATIENCE;
            while Instant::now() < give_up {
                match ctx.try_publish(probe, counter.make()) {
                    Ok(()) => {
                        accepted_probes.fetch_add(1, Relaxed);
                    }
                    Err(TryPublishError::Closed(_)) => return,
                    Err(_) => {}
                }
                // A polling interval, not synchronisation: it bounds the probe count.
                thread::sleep(Duration::from_millis(1));
            }
        },
    )
    .unwrap();

    // The first message stalls shard 0; 600 more queue in its shared inbox (more
    // than one pass of the shard takes), then a new publisher registers its lane
    // (behind them in the inbox) and queues 100 messages in it.
    bus.publish(stall.as_str(), ledger.make()).unwrap();
    entered.recv_timeout(PATIENCE).unwrap();
    for _ in 0..600 {
        bus.publish(stall.as_str(), ledger.make()).unwrap();
    }
    let mut late = bus.publisher();
    for _ in 0..100 {
        late.publish(stall.as_str(), ledger.make()).unwrap();
    }
    let report = bus.shutdown_timeout(Duration::from_millis(300));
    drop(late);

    let accepted = 701 + probes_accepted.load(Relaxed);
    let handled = ledger.handled_total();
    assert_eq!(
        report.unjoined, 0,
        "the stall ended within the grace period"
    );
    assert!(handled < accepted, "the deadline left messages undrained");
    assert_eq!(
        report.undrained,
        accepted - handled,
        "undrained = accepted - handled ({accepted} accepted, {handled} handled)"
    );
    assert_eq!(report.stats.dropped(), report.undrained);
    assert_eq!(report.stats.received(), handled);
    assert!((0..ledger.created()).all(|id| ledger.handled(id) <= 1));
    ledger.assert_dropped_once();
}

#[test]
fn shutdown_timeout_detaches_a_shard_whose_handler_never_returns() {
    let ledger = Ledger::new(100);
    let bus = tracked_bus(2).build().unwrap();
    let stuck = name_on_shard(&bus, "stuck", 1);
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let counter = ledger.clone();
    let mut first = true;
    bus.subscribe(
        stuck.as_str(),
        move |_: &mut Context<'_, Tracked>, m: &Tracked| {
            counter.handle(m);
            if std::mem::take(&mut first) {
                entered_tx.send(()).unwrap();
                let _ = release_rx.recv_timeout(PATIENCE);
            }
        },
    )
    .unwrap();
    for _ in 0..10 {
        bus.publish(stuck.as_str(), ledger.make()).unwrap();
    }
    entered.recv_timeout(PATIENCE).unwrap();
    let report = bus.shutdown_timeout(Duration::from_millis(50));
    assert_eq!(report.unjoined, 1, "shard 1 is still in its handler");
    // Released, the detached shard finishes its pass, stops, and drops the rest.
    release.send(()).unwrap();
    ledger.wait_all_dropped();
    ledger.assert_dropped_once();
    assert!(ledger.handled_total() >= 1);
}

#[test]
fn shutdown_timeout_on_a_drained_bus_reports_nothing_left() {
    let ledger = Ledger::new(1_000);
    let bus = tracked_bus(2).build().unwrap();
    subscribe_counting(&bus, "t", &ledger);
    for _ in 0..1_000 {
        bus.publish("t", ledger.make()).unwrap();
    }
    let report = bus.shutdown_timeout(PATIENCE);
    assert_eq!((report.undrained, report.unjoined), (0, 0));
    assert_eq!(report.stats.handled(), 1_000);
    assert_eq!(ledger.handled_total(), 1_000);
    ledger.assert_dropped_once();
}

/// Many short handlers (about 20 µs of work each) and a deadline of 0 to 5 ms: the
/// deadline falls in the middle of the shards' batches. When `shutdown_timeout`
/// returns, the handlers have stopped (the count they keep does not move afterwards),
/// every shard has stopped (none detached), and the report accounts for every accepted
/// message: handled + undrained = accepted, each message dropped exactly once.
#[test]
fn shutdown_timeout_stops_every_handler_before_it_returns_and_counts_the_rest() {
    const PER_SHARD: u32 = 2_000;
    for millis in [0, 1, 5] {
        let ledger = Ledger::new(2 * PER_SHARD);
        let bus = tracked_bus(2)
            .capacity(4_096)
            .lane_capacity(4_096)
            .build()
            .unwrap();
        let running = Arc::new(AtomicU64::new(0));
        for shard in 0..2 {
            let topic = name_on_shard(&bus, "work", shard);
            let (ledger, running) = (ledger.clone(), running.clone());
            bus.subscribe(
                topic.as_str(),
                move |_: &mut Context<'_, Tracked>, m: &Tracked| {
                    running.fetch_add(1, Relaxed);
                    // Work, not synchronisation: about 20 µs of it.
                    let until = Instant::now() + Duration::from_micros(20);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    ledger.handle(m);
                },
            )
            .unwrap();
        }
        let mut publisher = bus.publisher();
        for i in 0..2 * PER_SHARD {
            let topic = name_on_shard(&bus, "work", (i % 2) as usize);
            if i % 3 == 0 {
                bus.publish(topic.as_str(), ledger.make()).unwrap();
            } else {
                publisher.publish(topic.as_str(), ledger.make()).unwrap();
            }
        }
        let report = bus.shutdown_timeout(Duration::from_millis(millis));
        let started_at_return = running.load(Relaxed);
        let handled_at_return = ledger.handled_total();
        drop(publisher);
        // Waiting longer must change nothing: no handler runs after the return.
        thread::sleep(Duration::from_millis(100));
        assert_eq!(running.load(Relaxed), started_at_return, "{millis} ms");
        assert_eq!(ledger.handled_total(), handled_at_return, "{millis} ms");
        assert_eq!(started_at_return, handled_at_return, "{millis} ms");

        let accepted = u64::from(2 * PER_SHARD);
        assert_eq!(
            (report.unjoined, report.in_call.len()),
            (0, 0),
            "{millis} ms"
        );
        assert_eq!(
            handled_at_return + report.undrained,
            accepted,
            "{millis} ms: handled {handled_at_return} + undrained {} = accepted",
            report.undrained
        );
        assert_eq!(report.stats.handled(), handled_at_return, "{millis} ms");
        assert_eq!(report.stats.dropped(), report.undrained, "{millis} ms");
        assert_eq!(report.stats.dead_letters(), 0, "{millis} ms");
        assert!((0..ledger.created()).all(|id| ledger.handled(id) <= 1));
        ledger.assert_dropped_once();
    }
}

/// One handler that does not return until the test releases it, with 100 messages
/// queued behind it: the report names its shard as in a call, counts the 100 as
/// undrained, and once released the shard starts none of them (it drops them, each
/// exactly once).
#[test]
fn shutdown_timeout_reports_what_waits_behind_a_handler_that_does_not_return() {
    let ledger = Ledger::new(101);
    let bus = tracked_bus(2).build().unwrap();
    let stuck = name_on_shard(&bus, "stuck", 1);
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let counter = ledger.clone();
    let mut first = true;
    bus.subscribe(
        stuck.as_str(),
        move |_: &mut Context<'_, Tracked>, m: &Tracked| {
            counter.handle(m);
            if std::mem::take(&mut first) {
                entered_tx.send(()).unwrap();
                // Bounded so that a failing test does not leave the shard stuck.
                let _ = release_rx.recv_timeout(PATIENCE);
            }
        },
    )
    .unwrap();
    bus.publish(stuck.as_str(), ledger.make()).unwrap();
    entered.recv_timeout(PATIENCE).unwrap();
    for _ in 0..100 {
        bus.publish(stuck.as_str(), ledger.make()).unwrap();
    }
    let report = bus.shutdown_timeout(Duration::from_millis(10));
    let in_call: Vec<usize> = report.in_call.iter().map(|s| s.index()).collect();
    assert_eq!(in_call, vec![1]);
    assert_eq!(report.unjoined, 1);
    assert_eq!(report.undrained, 100, "the 100 behind the call");
    assert_eq!(ledger.handled_total(), 1);

    release.send(()).unwrap();
    ledger.wait_all_dropped();
    assert_eq!(
        ledger.handled_total(),
        1,
        "none of the 100 ran after release"
    );
    ledger.assert_dropped_once();
}

/// After a deadline nothing more is delivered, so what `on_stop` publishes then is
/// refused with the very message (`Closed`), to its own shard and to another, rather
/// than accepted and lost. Here the shard is held in a handler past the deadline, so it
/// stops by the forced path; its `on_stop` runs once the handler is released.
#[test]
fn on_stop_after_a_deadline_gets_its_publishes_back() {
    struct Farewell {
        targets: Vec<String>,
        outcome: mpsc::Sender<Vec<Option<u32>>>,
    }
    impl shardbus::Handler<u32> for Farewell {
        fn handle(&mut self, _: &mut Context<'_, u32>, _: &u32) {}
        fn on_stop(&mut self, ctx: &mut Context<'_, u32>) {
            let back = (0..self.targets.len() as u32)
                .map(
                    |m| match ctx.publish(self.targets[m as usize].as_str(), m) {
                        Err(e) if e.is_closed() => Some(e.into_inner()),
                        _ => None,
                    },
                )
                .collect();
            self.outcome.send(back).unwrap();
        }
    }
    let bus = Bus::<u32>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    let (held, leaving) = (
        name_on_shard(&bus, "held", 1),
        name_on_shard(&bus, "leaving", 1),
    );
    let targets = vec![
        name_on_shard(&bus, "same", 1),
        name_on_shard(&bus, "other", 0),
    ];
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    bus.subscribe(held.as_str(), move |_: &mut Context<'_, u32>, _: &u32| {
        entered_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(PATIENCE);
    })
    .unwrap();
    let (outcome_tx, outcome) = mpsc::channel();
    bus.subscribe(
        leaving.as_str(),
        Farewell {
            targets,
            outcome: outcome_tx,
        },
    )
    .unwrap();
    bus.publish(held.as_str(), 0).unwrap();
    entered.recv_timeout(PATIENCE).unwrap();
    let report = bus.shutdown_timeout(Duration::ZERO);
    assert_eq!(report.unjoined, 1);
    release.send(()).unwrap();
    assert_eq!(
        outcome.recv_timeout(PATIENCE).unwrap(),
        vec![Some(0), Some(1)],
        "both publishes came back"
    );
}

/// As above, with the 50 messages behind the call in the lane from another shard, in the
/// very batch the stuck call came from: the report counts exactly the 50 (not the one in
/// the call), and none of them runs after release.
#[test]
fn shutdown_timeout_counts_what_waits_in_a_lane_behind_a_stuck_call() {
    let ledger = Ledger::new(100);
    let bus = tracked_bus(2).build().unwrap();
    let (hold, fan, stuck) = (
        name_on_shard(&bus, "hold", 1),
        name_on_shard(&bus, "fan", 0),
        name_on_shard(&bus, "stuck", 1),
    );
    // `hold` keeps shard 1 busy until `fan` (shard 0) has sent all 51 messages, so that
    // shard 1 then takes them from the lane in one batch.
    let (go, go_rx) = mpsc::channel::<()>();
    let counter = ledger.clone();
    bus.subscribe(
        hold.as_str(),
        move |_: &mut Context<'_, Tracked>, m: &Tracked| {
            counter.handle(m);
            let _ = go_rx.recv_timeout(PATIENCE);
        },
    )
    .unwrap();
    let (counter, target) = (ledger.clone(), stuck.clone());
    bus.subscribe(
        fan.as_str(),
        move |ctx: &mut Context<'_, Tracked>, m: &Tracked| {
            counter.handle(m);
            for _ in 0..51 {
                ctx.publish(target.as_str(), counter.make()).unwrap();
            }
            go.send(()).unwrap();
        },
    )
    .unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let counter = ledger.clone();
    let mut first = true;
    bus.subscribe(
        stuck.as_str(),
        move |_: &mut Context<'_, Tracked>, m: &Tracked| {
            counter.handle(m);
            if std::mem::take(&mut first) {
                entered_tx.send(()).unwrap();
                let _ = release_rx.recv_timeout(PATIENCE);
            }
        },
    )
    .unwrap();
    bus.publish(hold.as_str(), ledger.make()).unwrap();
    bus.publish(fan.as_str(), ledger.make()).unwrap();
    entered.recv_timeout(PATIENCE).unwrap();
    let report = bus.shutdown_timeout(Duration::from_millis(10));
    let in_call: Vec<usize> = report.in_call.iter().map(|s| s.index()).collect();
    assert_eq!(in_call, vec![1]);
    assert_eq!(
        report.undrained, 50,
        "the 50 behind the call, not the call's own"
    );
    assert_eq!(ledger.handled_total(), 3, "hold, fan, and the stuck call");

    release.send(()).unwrap();
    ledger.wait_all_dropped();
    assert_eq!(
        ledger.handled_total(),
        3,
        "none of the 50 ran after release"
    );
    ledger.assert_dropped_once();
}
