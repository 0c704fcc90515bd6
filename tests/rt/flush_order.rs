//! What `flush` orders besides messages: a subscription that a handler asked for on its own
//! shard, in a message handled before the flush's answer, is in effect when `flush`
//! returns, even though the shard's round goes on after the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use crate::common::{name_on_shard, PATIENCE};
use shardbus::{Bus, Context, Handler};

/// Marks itself installed in `on_start`.
struct Late {
    installed: Arc<AtomicBool>,
}

impl Handler<u32> for Late {
    fn on_start(&mut self, _: &mut Context<'_, u32>) {
        self.installed.store(true, Ordering::SeqCst);
    }
    fn handle(&mut self, _: &mut Context<'_, u32>, _: &u32) {}
}

/// What one attempt saw: whether `late` was installed when `flush` returned, or `None`
/// when the shard took `setup` before the flush's marker reached its ring (the order this
/// test needs did not happen; it tries again).
fn attempt() -> Option<bool> {
    let bus = Arc::new(
        Bus::<u32>::builder()
            .shards(2)
            .pin_threads(false)
            .build()
            .unwrap(),
    );
    let hold = name_on_shard(&bus, "hold", 0);
    let setup = name_on_shard(&bus, "setup", 0);
    let late = name_on_shard(&bus, "late", 0);
    let gate = name_on_shard(&bus, "gate", 0);
    let kick = name_on_shard(&bus, "kick", 1);

    // `hold` keeps shard 0 inside its intake ring's batch until released.
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    bus.subscribe(hold.as_str(), move |_: &mut Context<'_, u32>, _: &u32| {
        entered_tx.send(()).unwrap();
        release_rx.recv_timeout(PATIENCE).unwrap();
    })
    .unwrap();
    // `setup` subscribes `late`, on its own shard: a request the shard applies itself.
    let installed = Arc::new(AtomicBool::new(false));
    let flag = installed.clone();
    bus.subscribe(
        setup.as_str(),
        move |ctx: &mut Context<'_, u32>, _: &u32| {
            let actor = Late {
                installed: flag.clone(),
            };
            ctx.subscribe(late.as_str(), actor).unwrap();
        },
    )
    .unwrap();
    // `gate` comes through shard 1's lane into shard 0, which the flush does not drain
    // ahead of its answer: it runs after the answer, in the same round, and keeps the
    // round open until the test has looked.
    let (checked, checked_rx) = mpsc::channel::<()>();
    let (gate_tx, gate_report) = mpsc::channel();
    bus.subscribe(gate.as_str(), move |_: &mut Context<'_, u32>, _: &u32| {
        // Waits long only when the order needed did not happen (then flush waits too).
        let after_the_answer = checked_rx.recv_timeout(Duration::from_secs(1)).is_ok();
        gate_tx.send(after_the_answer).unwrap();
    })
    .unwrap();
    let (kicked_tx, kicked) = mpsc::channel();
    bus.subscribe(kick.as_str(), move |ctx: &mut Context<'_, u32>, _: &u32| {
        ctx.publish(gate.as_str(), 0).unwrap();
        kicked_tx.send(()).unwrap();
    })
    .unwrap();

    bus.publish(hold.as_str(), 0).unwrap();
    entered.recv_timeout(PATIENCE).unwrap();
    bus.publish(kick.as_str(), 0).unwrap();
    kicked.recv_timeout(PATIENCE).unwrap();
    // Behind `hold` in shard 0's ring: `setup`, then the flush's marker.
    bus.publish(setup.as_str(), 0).unwrap();
    let (flushed_tx, flushed) = mpsc::channel();
    let b = bus.clone();
    thread::spawn(move || {
        let flushed = b.flush();
        // Gone before the answer, so that the bus is this test's alone again by then.
        drop(b);
        flushed_tx.send(flushed).unwrap();
    });
    // Time for the flush to push its marker (if it has not, the attempt says so).
    thread::sleep(Duration::from_millis(20));
    release.send(()).unwrap();
    flushed.recv_timeout(PATIENCE).unwrap().unwrap();
    let at_flush = installed.load(Ordering::SeqCst);
    let _ = checked.send(());
    let after_the_answer = gate_report.recv_timeout(PATIENCE).unwrap();
    Arc::try_unwrap(bus).ok().unwrap().shutdown();
    after_the_answer.then_some(at_flush)
}

#[test]
fn a_subscription_asked_for_on_the_own_shard_before_a_flush_is_in_effect_when_it_returns() {
    for _ in 0..5 {
        if let Some(installed) = attempt() {
            assert!(installed, "`late` was not installed when flush returned");
            return;
        }
    }
    panic!("the flush's marker never reached the ring behind `setup` in 5 attempts");
}
