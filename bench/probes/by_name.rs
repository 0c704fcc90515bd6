//! The publish-by-name probe: 1 producer → 1 shard, one topic, 16 B messages whose
//! consumer only adds them to a checksum (checked against the expected sum at the end), in
//! three forms side by side: `Publisher::publish("name", ..)`, `Publisher::publish(&topic,
//! ..)` with a pre-resolved [`Topic`](shardbus::Topic) handle, and std `sync_channel` (the
//! same capacity) as the peer. Prints per form the median over the repetitions of the
//! throughput and its ratio to the handle form and to `sync_channel`.
//!
//! `cargo run --release -p shardbus-bench --example by_name -- [--messages 10000000] [--reps 5]
//! [--capacity 4096]`
//!
//! It measures time: run it on a quiet machine. Under callgrind (`--reps 1`), the producer
//! loops are the functions `by_name`, `by_handle` and `by_sync_channel`: their inclusive
//! instruction counts divided by the messages compare the publish paths. With `--capacity`
//! at least `--messages` no producer ever waits for room, and the counts are the publish
//! paths alone, independent of when the OS runs the consumer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use shardbus::{Bus, Context, Handler, Publisher, Topic};

const TOPIC: &str = "by-name.probe";

type Msg = [u64; 2];

/// Adds every message to a checksum; reports it when dropped (at shutdown).
struct Sum {
    sum: u64,
    count: u64,
    out: Arc<(AtomicU64, AtomicU64)>,
}

impl Handler<Msg> for Sum {
    fn handle(&mut self, _: &mut Context<'_, Msg>, msg: &Msg) {
        self.sum = self.sum.wrapping_add(msg[0] ^ msg[1]);
        self.count += 1;
    }
}

impl Drop for Sum {
    fn drop(&mut self) {
        self.out.0.store(self.sum, Ordering::Relaxed);
        self.out.1.store(self.count, Ordering::Relaxed);
    }
}

fn msg(i: u64) -> Msg {
    [i, i.rotate_left(17)]
}

fn expected(n: u64) -> u64 {
    (0..n).fold(0u64, |s, i| {
        let m = msg(i);
        s.wrapping_add(m[0] ^ m[1])
    })
}

#[inline(never)]
fn by_name(publisher: &mut Publisher<Msg>, n: u64) {
    for i in 0..n {
        let _ = publisher.publish(TOPIC, msg(i));
    }
}

#[inline(never)]
fn by_handle(publisher: &mut Publisher<Msg>, topic: &Topic, n: u64) {
    for i in 0..n {
        let _ = publisher.publish(topic, msg(i));
    }
}

#[inline(never)]
fn by_sync_channel(tx: &mpsc::SyncSender<Msg>, n: u64) {
    for i in 0..n {
        let _ = tx.send(msg(i));
    }
}

/// One run of a shardbus form: the time from the first publish until the shard has
/// handled the last message (shutdown drains), and the verified checksum.
fn shardbus_run(n: u64, named: bool, capacity: usize) -> Duration {
    let bus = Bus::<Msg>::builder()
        .shards(1)
        .capacity(capacity)
        .build()
        .expect("bus");
    let out = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let sink = Sum {
        sum: 0,
        count: 0,
        out: out.clone(),
    };
    bus.subscribe(TOPIC, sink).expect("subscribe");
    let topic = bus.topic(TOPIC).expect("topic");
    let mut publisher = bus.publisher();
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        if named {
            by_name(&mut publisher, n);
        } else {
            by_handle(&mut publisher, &topic, n);
        }
    });
    producer.join().expect("producer");
    let stats = bus.shutdown();
    let took = start.elapsed();
    assert_eq!(stats.received(), n, "every message received");
    assert_eq!(out.1.load(Ordering::Relaxed), n, "every message handled");
    assert_eq!(out.0.load(Ordering::Relaxed), expected(n), "checksum");
    took
}

fn sync_channel_run(n: u64, capacity: usize) -> Duration {
    let (tx, rx) = mpsc::sync_channel::<Msg>(capacity);
    let consumer = std::thread::spawn(move || {
        let (mut sum, mut count) = (0u64, 0u64);
        for m in rx {
            sum = sum.wrapping_add(m[0] ^ m[1]);
            count += 1;
        }
        (sum, count)
    });
    let start = Instant::now();
    by_sync_channel(&tx, n);
    drop(tx);
    let (sum, count) = consumer.join().expect("consumer");
    let took = start.elapsed();
    assert_eq!((sum, count), (expected(n), n), "checksum and count");
    took
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut messages: u64 = 10_000_000;
    let mut reps: usize = 5;
    let mut capacity: usize = 4096;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| {
            eprintln!("by_name: {arg} needs a value");
            std::process::exit(2)
        });
        let parsed = value.parse::<u64>().unwrap_or_else(|_| {
            eprintln!("by_name: bad number {value:?}");
            std::process::exit(2)
        });
        match arg.as_str() {
            "--messages" => messages = parsed.max(1),
            "--reps" => reps = (parsed as usize).max(1),
            "--capacity" => capacity = (parsed as usize).max(2).next_power_of_two(),
            other => {
                eprintln!("by_name: unknown option {other} (--messages N, --reps N, --capacity N)");
                std::process::exit(2)
            }
        }
    }
    let (mut name, mut handle, mut channel) = (Vec::new(), Vec::new(), Vec::new());
    let rate = |d: Duration| messages as f64 / d.as_secs_f64() / 1e6;
    // Interleaved, so that a drift of the machine spreads over all three.
    for _ in 0..reps {
        name.push(rate(shardbus_run(messages, true, capacity)));
        handle.push(rate(shardbus_run(messages, false, capacity)));
        channel.push(rate(sync_channel_run(messages, capacity)));
    }
    let (name, handle, channel) = (median(name), median(handle), median(channel));
    println!(
        "1 producer -> 1 consumer, 1 topic, 16 B, checksum consumer, capacity {capacity}, \
         {messages} msgs, median of {reps}"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>14}",
        "form", "M msgs/s", "/ handle", "/ sync_channel"
    );
    for (form, m) in [
        ("shardbus publish(\"name\")", name),
        ("shardbus publish(&topic)", handle),
        ("std sync_channel", channel),
    ] {
        println!(
            "{form:<34} {m:>10.2} {:>10.2} {:>14.2}",
            m / handle,
            m / channel
        );
    }
}
