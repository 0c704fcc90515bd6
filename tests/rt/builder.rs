//! Configuration and validation through the public API: every builder error, every
//! invalid-topic path (resolving, publishing, subscribing), and the smallest valid
//! configuration working end to end.

use std::sync::{Arc, Mutex};

use shardbus::{
    Builder, Bus, Context, Error, Handler, PublishError, Supervision, TryPublishError, MAX_SHARDS,
    MAX_TOPIC_LEN,
};

fn builder() -> Builder<String> {
    Bus::<String>::builder().pin_threads(false)
}

/// The capacity error of `b`, or a panic naming what was built instead.
fn capacity_error(b: Builder<String>) -> (&'static str, usize, usize) {
    match b.build() {
        Err(Error::InvalidCapacity {
            what,
            capacity,
            max,
        }) => (what, capacity, max),
        Err(other) => panic!("expected InvalidCapacity, got {other:?}"),
        Ok(bus) => panic!("expected InvalidCapacity, built {bus:?}"),
    }
}

fn too_long() -> String {
    "x".repeat(MAX_TOPIC_LEN + 1)
}

/// A topic name of exactly `MAX_TOPIC_LEN` bytes, multi-byte characters included.
fn longest() -> String {
    let mut name = "é".repeat(MAX_TOPIC_LEN / 2); // 2 bytes each
    while name.len() < MAX_TOPIC_LEN {
        name.push('z');
    }
    assert_eq!(name.len(), MAX_TOPIC_LEN);
    name
}

fn is_invalid_topic(e: &Error, len: usize) -> bool {
    matches!(e, Error::InvalidTopic { len: l, max } if *l == len && *max == MAX_TOPIC_LEN)
}

#[test]
fn zero_shards_is_rejected() {
    assert!(matches!(
        builder().shards(0).build(),
        Err(Error::ZeroShards)
    ));
}

#[test]
fn too_many_shards_is_rejected_with_the_counts() {
    for requested in [MAX_SHARDS + 1, 4 * MAX_SHARDS, usize::MAX] {
        match builder().shards(requested).build() {
            Err(Error::TooManyShards { requested: r, max }) => {
                assert_eq!(r, requested);
                assert_eq!(max, MAX_SHARDS);
            }
            other => panic!("{requested} shards: expected TooManyShards, got {other:?}"),
        }
    }
}

#[test]
fn inbox_capacity_must_be_a_power_of_two_of_at_least_two() {
    for bad in [0, 1, 3, 5, 6, 7, 12, 1000, 1025, usize::MAX] {
        let (what, capacity, max) = capacity_error(builder().shards(1).capacity(bad));
        assert_eq!((what, capacity), ("inbox", bad), "capacity {bad}");
        assert!(max.is_power_of_two() && max >= 1024, "max {max}");
    }
}

#[test]
fn inbox_capacity_above_the_maximum_is_rejected() {
    let (_, _, max) = capacity_error(builder().shards(1).capacity(3));
    let above = max.checked_mul(2).expect("max fits twice in usize");
    assert_eq!(
        capacity_error(builder().shards(1).capacity(above)),
        ("inbox", above, max)
    );
}

#[test]
fn lane_capacity_must_be_a_power_of_two_of_at_least_two() {
    for bad in [0, 1, 3, 6, 100, usize::MAX] {
        let b = builder().shards(1).capacity(4).lane_capacity(bad);
        assert_eq!(capacity_error(b).0, "lane", "lane capacity {bad}");
        let b = builder().shards(1).capacity(4).lane_capacity(bad);
        assert_eq!(capacity_error(b).1, bad);
    }
}

#[test]
fn the_inbox_capacity_is_checked_before_the_lane_capacity() {
    // The lane capacity defaults to the inbox capacity, so a bad inbox capacity is
    // reported as such, not as a lane error.
    assert_eq!(capacity_error(builder().shards(1).capacity(3)).0, "inbox");
    assert_eq!(
        capacity_error(builder().shards(1).capacity(3).lane_capacity(3)).0,
        "inbox"
    );
}

#[test]
fn errors_display_their_context() {
    let e = builder().shards(1).capacity(3).build().unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("inbox") && text.contains('3'),
        "unhelpful message: {text}"
    );
    let e = builder().shards(MAX_SHARDS + 1).build().unwrap_err();
    assert!(e.to_string().contains(&(MAX_SHARDS + 1).to_string()));
}

#[test]
fn default_shard_count_is_the_available_parallelism() {
    let bus = builder().build().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(bus.shards(), cores.min(MAX_SHARDS));
    let stats = bus.shutdown();
    assert_eq!(stats.shards.len(), cores.min(MAX_SHARDS));
}

#[test]
fn smallest_valid_configuration_works_end_to_end() {
    // Capacity 2 everywhere: every ring is full after two messages, so publishers
    // wait on the shard all the time.
    let bus = builder()
        .shards(1)
        .capacity(2)
        .lane_capacity(2)
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    bus.subscribe("t", move |_: &mut Context<'_, String>, m: &String| {
        log.lock().unwrap().push(m.clone());
    })
    .unwrap();
    let mut publisher = bus.publisher();
    for i in 0..500 {
        if i % 2 == 0 {
            publisher.publish("t", i.to_string()).unwrap();
        } else {
            bus.publish("t", i.to_string()).unwrap();
        }
    }
    let stats = bus.shutdown();
    let seen = seen.lock().unwrap();
    // Two sources: each one's messages in order, all of them exactly once.
    let numbers: Vec<u32> = seen.iter().map(|m| m.parse().unwrap()).collect();
    let evens: Vec<u32> = numbers.iter().copied().filter(|n| n % 2 == 0).collect();
    let odds: Vec<u32> = numbers.iter().copied().filter(|n| n % 2 == 1).collect();
    assert_eq!(evens, (0..500).step_by(2).collect::<Vec<_>>());
    assert_eq!(odds, (1..500).step_by(2).collect::<Vec<_>>());
    assert_eq!(stats.received(), 500);
    assert_eq!(stats.handled(), 500);
}

#[test]
fn thread_names_carry_the_prefix_and_the_shard_index() {
    let bus = builder().shards(3).thread_name("bt-name").build().unwrap();
    let names = Arc::new(Mutex::new(Vec::new()));
    // One topic per shard.
    let mut topics = Vec::new();
    for i in 0.. {
        let name = format!("t{i}");
        let shard = bus.shard_of(&name).unwrap().index();
        if !topics.iter().any(|(_, s)| *s == shard) {
            topics.push((name, shard));
        }
        if topics.len() == 3 {
            break;
        }
    }
    for (name, _) in &topics {
        let names = names.clone();
        bus.subscribe(
            name.as_str(),
            move |ctx: &mut Context<'_, String>, _: &String| {
                let thread = std::thread::current().name().map(str::to_owned);
                names.lock().unwrap().push((ctx.shard().index(), thread));
            },
        )
        .unwrap();
        bus.publish(name.as_str(), String::new()).unwrap();
    }
    bus.shutdown();
    let mut names = names.lock().unwrap().clone();
    names.sort();
    let expected: Vec<_> = (0..3).map(|i| (i, Some(format!("bt-name-{i}")))).collect();
    assert_eq!(names, expected);
}

#[test]
fn invalid_topics_are_rejected_when_resolving() {
    let bus = builder().shards(2).build().unwrap();
    let long = too_long();
    assert!(is_invalid_topic(&bus.topic("").unwrap_err(), 0));
    assert!(is_invalid_topic(&bus.topic(&long).unwrap_err(), long.len()));
    assert!(is_invalid_topic(&bus.shard_of("").unwrap_err(), 0));
    assert!(is_invalid_topic(
        &bus.shard_of(&long).unwrap_err(),
        long.len()
    ));
    // Multi-byte characters count in bytes: 28 two-byte characters are 56 bytes.
    let wide = "é".repeat(MAX_TOPIC_LEN / 2 + 1);
    assert!(wide.chars().count() <= MAX_TOPIC_LEN && wide.len() > MAX_TOPIC_LEN);
    assert!(is_invalid_topic(&bus.topic(&wide).unwrap_err(), wide.len()));

    let name = longest();
    let topic = bus.topic(&name).unwrap();
    assert_eq!(topic.name(), name);
    assert_eq!(topic.shard(), bus.shard_of(&name).unwrap());
    assert!(topic.shard().index() < 2);
    bus.shutdown();
}

#[test]
fn publishing_to_an_invalid_topic_gives_the_message_back() {
    let bus = builder().shards(2).build().unwrap();
    let long = too_long();
    let mut publisher = bus.publisher();
    for bad in ["", long.as_str()] {
        let msg = format!("for {bad:?}");
        match bus.publish(bad, msg.clone()) {
            Err(PublishError::InvalidTopic(back)) => assert_eq!(back, msg),
            other => panic!("Bus::publish: {other:?}"),
        }
        match bus.try_publish(bad, msg.clone()) {
            Err(TryPublishError::InvalidTopic(back)) => assert_eq!(back, msg),
            other => panic!("Bus::try_publish: {other:?}"),
        }
        match publisher.publish(bad, msg.clone()) {
            Err(PublishError::InvalidTopic(back)) => assert_eq!(back, msg),
            other => panic!("Publisher::publish: {other:?}"),
        }
        match publisher.try_publish(bad, msg.clone()) {
            Err(e @ TryPublishError::InvalidTopic(_)) => {
                assert!(!e.is_full() && !e.is_closed());
                assert_eq!(e.into_inner(), msg);
            }
            other => panic!("Publisher::try_publish: {other:?}"),
        }
        let mut batch = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            publisher.publish_batch(bad, &mut batch),
            Err(PublishError::InvalidTopic(()))
        );
        assert_eq!(batch, ["a", "b"], "the batch is left untouched");
        let owned = bad.to_owned();
        assert_eq!(
            bus.publish(&owned, msg.clone()).unwrap_err().into_inner(),
            msg
        );
    }
    // The longest valid name is accepted on every path.
    let name = longest();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    bus.subscribe(
        name.as_str(),
        move |ctx: &mut Context<'_, String>, m: &String| {
            log.lock()
                .unwrap()
                .push((ctx.topic().to_owned(), m.clone()));
        },
    )
    .unwrap();
    bus.publish(name.as_str(), "1".to_owned()).unwrap();
    bus.try_publish(name.as_str(), "2".to_owned()).unwrap();
    let stats = bus.shutdown();
    // Nothing invalid reached a shard.
    assert_eq!(stats.received(), 2);
    assert_eq!(stats.unrouted(), 0);
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        [(name.clone(), "1".to_owned()), (name, "2".to_owned())]
    );
}

struct Nop;

impl Handler<String> for Nop {
    fn handle(&mut self, _: &mut Context<'_, String>, _: &String) {}
}

#[test]
fn subscribing_to_an_empty_topic_is_rejected() {
    let bus = builder().shards(2).build().unwrap();
    let e = bus
        .subscribe("", |_: &mut Context<'_, String>, _: &String| {})
        .unwrap_err();
    assert!(is_invalid_topic(&e, 0), "{e:?}");
    let e = bus.subscribe("", Nop).unwrap_err();
    assert!(is_invalid_topic(&e, 0), "{e:?}");
    let e = bus
        .subscribe_supervised("", Supervision::Restart, || Nop)
        .unwrap_err();
    assert!(is_invalid_topic(&e, 0), "{e:?}");
    let stats = bus.shutdown();
    assert_eq!(stats.received(), 0);
}

/// `Error::InvalidTopic::len` is documented as "the byte length of the rejected name";
/// subscribing must report it like `Bus::topic` does.
#[test]
fn subscribing_to_a_too_long_topic_reports_its_length() {
    let bus = builder().shards(2).build().unwrap();
    let long = too_long();
    let from_topic = bus.topic(&long).unwrap_err();
    assert!(is_invalid_topic(&from_topic, long.len()), "{from_topic:?}");
    let e = bus
        .subscribe(long.as_str(), |_: &mut Context<'_, String>, _: &String| {})
        .unwrap_err();
    assert!(is_invalid_topic(&e, long.len()), "subscribe: {e:?}");
    let e = bus.subscribe(long.as_str(), Nop).unwrap_err();
    assert!(is_invalid_topic(&e, long.len()), "subscribe: {e:?}");
    let e = bus
        .subscribe_supervised(long.as_str(), Supervision::Stop, || Nop)
        .unwrap_err();
    assert!(
        is_invalid_topic(&e, long.len()),
        "subscribe_supervised: {e:?}"
    );
    bus.shutdown();
}

/// `Builder::subscribe` takes what `Bus::subscribe` takes: a name as `&str`, `String` or
/// `&String`, or a `Topic` handle (here one of another bus, with another shard count,
/// which the new bus resolves again by its name).
#[test]
fn builder_subscribe_takes_every_topic_form() {
    let other = builder().shards(3).build().unwrap();
    let handle = other.topic("by-handle").unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = |seen: &Arc<Mutex<Vec<String>>>| {
        let seen = Arc::clone(seen);
        move |ctx: &mut Context<'_, String>, m: &String| {
            seen.lock().unwrap().push(format!("{}={m}", ctx.topic()));
        }
    };
    let owned = String::from("by-string");
    let bus = builder()
        .shards(1)
        .subscribe("by-str", record(&seen))
        .subscribe(owned.clone(), record(&seen))
        .subscribe(&owned, record(&seen))
        .subscribe(handle, record(&seen))
        .build()
        .unwrap();
    for topic in ["by-str", "by-string", "by-handle"] {
        bus.publish(topic, "m".to_string()).unwrap();
    }
    bus.shutdown();
    other.shutdown();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["by-str=m", "by-string=m", "by-string=m", "by-handle=m"]
    );
}

/// The bytes `build()` says the rings of `b` would take, refusing them.
fn out_of_memory(b: Builder<String>) -> u64 {
    match b.build() {
        Err(Error::OutOfMemory { bytes }) => bytes,
        Err(other) => panic!("expected OutOfMemory, got {other:?}"),
        Ok(bus) => panic!("expected OutOfMemory, built {bus:?}"),
    }
}

#[test]
fn rings_larger_than_the_machine_are_refused_with_out_of_memory_not_an_abort() {
    // 64 shards: terabytes at the largest capacities, more than any machine has, so
    // the test refuses (and allocates nothing) everywhere.
    const SHARDS: u64 = 64;
    let max = 1usize << 30;
    let half = max / 2;
    let rings = |capacity: usize, lane: usize| {
        out_of_memory(
            builder()
                .shards(SHARDS as usize)
                .capacity(capacity)
                .lane_capacity(lane),
        )
    };
    let both = rings(max, max);
    // The documented formula: shards × (capacity × inbox slot + (shards − 1) × lane
    // capacity × lane slot). Halving one capacity takes away exactly half its term.
    let inbox_term = both - rings(half, max);
    let lane_term = both - rings(max, half);
    assert_eq!(inbox_term % (SHARDS * half as u64), 0);
    assert_eq!(lane_term % (SHARDS * (SHARDS - 1) * half as u64), 0);
    let inbox_slot = inbox_term / (SHARDS * half as u64);
    let lane_slot = lane_term / (SHARDS * (SHARDS - 1) * half as u64);
    // A lane slot holds a message and its topic index; an inbox slot that and a stamp.
    let msg = std::mem::size_of::<String>() as u64;
    assert!(lane_slot >= msg + 4 && inbox_slot >= lane_slot + 8);
    assert_eq!(
        both,
        SHARDS * max as u64 * inbox_slot + SHARDS * (SHARDS - 1) * max as u64 * lane_slot
    );
    // The default capacity with a huge lane capacity alone, and the largest inbox
    // capacity alone: refused the same way.
    assert_eq!(
        rings(1024, max),
        SHARDS * 1024 * inbox_slot + SHARDS * (SHARDS - 1) * max as u64 * lane_slot
    );
    assert_eq!(
        rings(max, 1024),
        SHARDS * max as u64 * inbox_slot + SHARDS * (SHARDS - 1) * 1024 * lane_slot
    );
    // A bus that fits is built as before.
    builder().shards(2).capacity(2).build().unwrap().shutdown();
}
