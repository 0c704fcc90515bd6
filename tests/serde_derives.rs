//! The `serde` feature: the public plain-data types serialize and deserialize, and a
//! round trip through JSON gives back the same value.
#![cfg(feature = "serde")]

use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use shardbus::log::{FsyncPolicy, RetentionLimit, Seq};
use shardbus::{
    Bus, Context, OnShardCountChange, ShutdownReport, Stats, Supervision, WaitStrategy,
};

fn round_trip<T>(value: &T) -> T
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).expect("serializes");
    let back: T = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(&back, value, "{json}");
    back
}

/// Statistics of a real run (two shards, counted messages, a dead letter) survive JSON.
#[test]
fn stats_and_the_shutdown_report_round_trip_through_json() {
    let bus = Bus::<u32>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    bus.subscribe("a", |_: &mut Context<'_, u32>, _: &u32| {})
        .unwrap();
    for i in 0..5 {
        bus.publish("a", i).unwrap();
    }
    bus.publish("nobody", 9).unwrap(); // a dead letter
    let report: ShutdownReport = bus.shutdown_timeout(Duration::from_secs(30));
    let stats: Stats = round_trip(&report.stats);
    assert_eq!(stats.handled(), 5);
    assert_eq!(stats.shards.len(), 2);
    assert_eq!(stats.shards.iter().map(|s| s.dead_letters).sum::<u64>(), 1);
    let back = round_trip(&report);
    assert_eq!((back.undrained, back.unjoined), (0, 0));

    // The JSON names the fields (a stable shape for a monitoring pipeline).
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["shards"][0]["shard"], 0);
    assert_eq!(json["shards"][1]["shard"], 1);
    let handled: u64 = (0..2)
        .map(|i| json["shards"][i]["handled"].as_u64().unwrap())
        .sum();
    assert_eq!(handled, 5);
}

#[test]
fn configuration_enums_and_ids_round_trip_through_json() {
    round_trip(&FsyncPolicy::Batch);
    round_trip(&FsyncPolicy::Interval(Duration::from_millis(5)));
    round_trip(&RetentionLimit::default());
    round_trip(&Supervision::Restart);
    round_trip(&WaitStrategy::default());
    round_trip(&OnShardCountChange::default());
    assert_eq!(round_trip(&Seq(42)), Seq(42));
    assert!(serde_json::from_str::<FsyncPolicy>("\"NoSuchPolicy\"").is_err());
}
