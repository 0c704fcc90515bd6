//! The parking shard's spin-before-park budget (`Builder::spin_before_park`): whatever the
//! budget, from parking at the first empty pass to spinning long, a message published to a
//! shard that has gone idle (parked or polling) is delivered, in order, exactly once.

use shardbus::{Bus, Context};

use crate::common::Log;

#[test]
fn every_spin_budget_delivers_what_arrives_while_the_shard_idles() {
    for budget in [0, 1, 11, 10_000] {
        let bus = Bus::<u32>::builder()
            .shards(1)
            .pin_threads(false)
            .spin_before_park(budget)
            .build()
            .unwrap();
        let log = Log::new();
        let sink = log.clone();
        bus.subscribe("idle", move |_: &mut Context<'_, u32>, m: &u32| {
            sink.push(*m)
        })
        .unwrap();
        let mut publisher = bus.publisher();
        for m in 0..40u32 {
            if m.is_multiple_of(2) {
                publisher.publish("idle", m).unwrap();
            } else {
                bus.publish("idle", m).unwrap();
            }
            // Waits until the message is handled: the shard then idles (polls, then
            // parks) before the next one arrives.
            log.wait_len(m as usize + 1);
            if m % 8 == 7 {
                // Long enough for any budget to run out and the shard to park.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let stats = bus.shutdown();
        assert_eq!(
            log.snapshot(),
            (0..40).collect::<Vec<_>>(),
            "budget {budget}"
        );
        assert_eq!(stats.handled(), 40, "budget {budget}");
    }
}
