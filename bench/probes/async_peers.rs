//! The async API beside its peers, on a 2-worker tokio runtime, in one run:
//!
//! 1. async publish, 1 and 4 tasks → 1 consumer, 16-byte messages: `Publisher::publish_async`
//!    into a one-shard bus whose handler counts, against a consumer task awaiting tokio
//!    `mpsc`, `flume`, `kanal` and `async-channel` (all bounded to `--capacity`);
//! 2. request-reply round trip, one request in flight: `Bus::request_async` to an actor that
//!    answers `x + 1` (busy-spin and park shards), against a tokio actor (a task on an
//!    `mpsc` of `(u64, oneshot::Sender<u64>)`), ractor's `call` and kameo's `ask`;
//! 3. a subscriber stream (`MessageStream::recv_async`) against `tokio::sync::broadcast` with
//!    one receiver, a producer thread publishing;
//! 4. where shardbus's own time goes, not peers: the same async publish with
//!    `Fences::Membarrier`, the same bus fed by plain threads through the blocking
//!    `publish`, and the floor of a round trip to another OS thread (a tokio task hands the
//!    request to a busy-polling thread that answers through a tokio oneshot);
//! 5. heap allocations per message on each shardbus path (a counting global allocator, on
//!    all threads, counting only while a run measures: the bus's build and subscriptions are
//!    left out, and so are the stream run's closing `flush` and `close`; spawning the tasks
//!    and the producer thread, and a publisher's first lane, are in).
//!
//! `cargo run --release -p shardbus-bench --example async_peers -- [--messages 2000000]
//! [--requests 100000] [--capacity 4096] [--reps 3]`
//!
//! Every run checks its count exactly (and every answer's value) and the probe prints a
//! `verified` line per table. The repetitions interleave the runners, so that a drift of the
//! machine spreads over all of them. Run it on a quiet machine: it measures time.
//!
//! The stream and broadcast producers share one flow control, so that neither drops: the
//! consumer acknowledges every 256 messages and the producer keeps fewer than `--capacity`
//! messages unacknowledged (yielding its thread while it waits). A broadcast receiver that
//! lags nonetheless counts as a failed run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shardbus::{Bus, Context, Fences, Publisher, Reply, WaitStrategy};
use shardbus_bench::report::Machine;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// The 16-byte message of the throughput rows: (producer, sequence).
type Msg = (u64, u64);

/// Counts heap allocations, on every thread, while `COUNTING` is set.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// every call is forwarded unchanged to `System`, which owns the memory it hands out
// and takes back; the counter only observes the calls.
// SAFETY: by the ownership stated in the lines just above.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // the caller's `layout` contract is passed on to `System`, which owns the
        // returned block until it comes back through `dealloc`.
        // SAFETY: by the ownership stated in the lines just above.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // `ptr` was allocated by `System` (through `alloc` or `realloc` above) with
        // `layout`; the caller owned it and gives it back to `System`.
        // SAFETY: by the ownership stated in the lines just above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // `ptr` is a block `System` handed out with `layout`, owned by the caller,
        // who hands it to `System` to move; the result is owned by the caller again.
        // SAFETY: by the ownership stated in the lines just above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Counts allocations from now until `stop` (when `on`).
struct AllocWindow {
    on: bool,
}

impl AllocWindow {
    fn start(on: bool) -> Self {
        if on {
            ALLOCATIONS.store(0, Ordering::Relaxed);
            COUNTING.store(true, Ordering::SeqCst);
        }
        Self { on }
    }

    fn stop(self) -> u64 {
        if !self.on {
            return 0;
        }
        COUNTING.store(false, Ordering::SeqCst);
        ALLOCATIONS.load(Ordering::Relaxed)
    }
}

struct Args {
    messages: u64,
    requests: u64,
    capacity: usize,
    reps: usize,
}

fn usage(why: &str) -> ! {
    eprintln!(
        "async_peers: {why}\nusage: async_peers [--messages 2000000] [--requests 100000] \
         [--capacity 4096] [--reps 3]"
    );
    std::process::exit(2)
}

fn positive(flag: &str, value: &str) -> u64 {
    value
        .replace('_', "")
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or_else(|| usage(&format!("{flag} takes a positive integer")))
}

fn args() -> Args {
    let mut args = Args {
        messages: 2_000_000,
        requests: 100_000,
        capacity: 4096,
        reps: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let n = positive(&flag, &value);
        match flag.as_str() {
            "--messages" => args.messages = n,
            "--requests" => args.requests = n,
            "--capacity" => args.capacity = n as usize,
            "--reps" => args.reps = n as usize,
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if !args.capacity.is_power_of_two() || args.capacity < 512 {
        usage("--capacity must be a power of two, at least 512");
    }
    args
}

/// Task `i` of `tasks`'s share of `0..n`.
fn share(n: u64, tasks: usize, i: usize) -> Range<u64> {
    let (tasks, i) = (tasks as u64, i as u64);
    n * i / tasks..n * (i + 1) / tasks
}

/// One throughput run: how long, how many arrived, allocations while it ran.
struct Run {
    elapsed: Duration,
    received: u64,
    allocations: u64,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---- 1. async publish, `tasks` → 1 consumer -------------------------------------------------

fn publish_shardbus(rt: &Runtime, tasks: usize, n: u64, cap: usize, allocs: bool) -> Run {
    publish_shardbus_with(rt, tasks, n, cap, allocs, Fences::default())
}

fn publish_shardbus_with(
    rt: &Runtime,
    tasks: usize,
    n: u64,
    cap: usize,
    allocs: bool,
    fences: Fences,
) -> Run {
    let bus = Bus::<Msg>::builder()
        .shards(1)
        .capacity(cap)
        .lane_capacity(cap)
        .fences(fences)
        .build()
        .expect("bus builds");
    let counted = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let (count, last) = (counted.clone(), done.clone());
    bus.subscribe("bench", move |_: &mut Context<'_, Msg>, m: &Msg| {
        black_box(m);
        if count.fetch_add(1, Ordering::Relaxed) + 1 == n {
            last.notify_one();
        }
    })
    .expect("subscribes");
    let topic = bus.topic("bench").expect("topic");
    let publishers: Vec<Publisher<Msg>> = (0..tasks).map(|_| bus.publisher()).collect();
    let window = AllocWindow::start(allocs);
    let start = Instant::now();
    rt.block_on(async {
        let producers: Vec<_> = publishers
            .into_iter()
            .enumerate()
            .map(|(i, mut publisher)| {
                tokio::spawn(async move {
                    for seq in share(n, tasks, i) {
                        publisher
                            .publish_async(topic, (i as u64, seq))
                            .await
                            .expect("published");
                    }
                    publisher
                })
            })
            .collect();
        let mut keep = Vec::new();
        for p in producers {
            keep.push(p.await.expect("producer task"));
        }
        done.notified().await;
        drop(keep);
    });
    let elapsed = start.elapsed();
    let allocations = window.stop();
    let handled = bus.shutdown().handled();
    assert_eq!(handled, n, "shardbus handled");
    Run {
        elapsed,
        received: counted.load(Ordering::Relaxed),
        allocations,
    }
}

/// Where the async publish's time goes: the same bus fed by `tasks` plain threads calling the
/// blocking `Publisher::publish` (no runtime, no future), to the same counting handler.
fn publish_sync_floor(tasks: usize, n: u64, cap: usize) -> Run {
    let bus = Bus::<Msg>::builder()
        .shards(1)
        .capacity(cap)
        .lane_capacity(cap)
        .build()
        .expect("bus builds");
    let counted = Arc::new(AtomicU64::new(0));
    let count = counted.clone();
    bus.subscribe("bench", move |_: &mut Context<'_, Msg>, m: &Msg| {
        black_box(m);
        count.fetch_add(1, Ordering::Relaxed);
    })
    .expect("subscribes");
    let topic = bus.topic("bench").expect("topic");
    let start = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..tasks {
            let mut publisher = bus.publisher();
            scope.spawn(move || {
                for seq in share(n, tasks, i) {
                    publisher
                        .publish(topic, (i as u64, seq))
                        .expect("published");
                }
            });
        }
    });
    bus.flush().expect("flushed");
    let elapsed = start.elapsed();
    assert_eq!(bus.shutdown().handled(), n, "shardbus handled");
    Run {
        elapsed,
        received: counted.load(Ordering::Relaxed),
        allocations: 0,
    }
}

fn publish_tokio_mpsc(rt: &Runtime, tasks: usize, n: u64, cap: usize) -> Run {
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(cap);
        let start = Instant::now();
        let consumer = tokio::spawn(async move {
            let mut got = 0u64;
            while let Some(m) = rx.recv().await {
                black_box(m);
                got += 1;
            }
            got
        });
        for i in 0..tasks {
            let tx = tx.clone();
            tokio::spawn(async move {
                for seq in share(n, tasks, i) {
                    tx.send((i as u64, seq)).await.expect("open");
                }
            });
        }
        drop(tx);
        let received = consumer.await.expect("consumer task");
        Run {
            elapsed: start.elapsed(),
            received,
            allocations: 0,
        }
    })
}

fn publish_flume(rt: &Runtime, tasks: usize, n: u64, cap: usize) -> Run {
    rt.block_on(async {
        let (tx, rx) = flume::bounded::<Msg>(cap);
        let start = Instant::now();
        let consumer = tokio::spawn(async move {
            let mut got = 0u64;
            while let Ok(m) = rx.recv_async().await {
                black_box(m);
                got += 1;
            }
            got
        });
        for i in 0..tasks {
            let tx = tx.clone();
            tokio::spawn(async move {
                for seq in share(n, tasks, i) {
                    tx.send_async((i as u64, seq)).await.expect("open");
                }
            });
        }
        drop(tx);
        let received = consumer.await.expect("consumer task");
        Run {
            elapsed: start.elapsed(),
            received,
            allocations: 0,
        }
    })
}

fn publish_kanal(rt: &Runtime, tasks: usize, n: u64, cap: usize) -> Run {
    rt.block_on(async {
        let (tx, rx) = kanal::bounded_async::<Msg>(cap);
        let start = Instant::now();
        let consumer = tokio::spawn(async move {
            let mut got = 0u64;
            while let Ok(m) = rx.recv().await {
                black_box(m);
                got += 1;
            }
            got
        });
        for i in 0..tasks {
            let tx = tx.clone();
            tokio::spawn(async move {
                for seq in share(n, tasks, i) {
                    tx.send((i as u64, seq)).await.expect("open");
                }
            });
        }
        drop(tx);
        let received = consumer.await.expect("consumer task");
        Run {
            elapsed: start.elapsed(),
            received,
            allocations: 0,
        }
    })
}

fn publish_async_channel(rt: &Runtime, tasks: usize, n: u64, cap: usize) -> Run {
    rt.block_on(async {
        let (tx, rx) = async_channel::bounded::<Msg>(cap);
        let start = Instant::now();
        let consumer = tokio::spawn(async move {
            let mut got = 0u64;
            while let Ok(m) = rx.recv().await {
                black_box(m);
                got += 1;
            }
            got
        });
        for i in 0..tasks {
            let tx = tx.clone();
            tokio::spawn(async move {
                for seq in share(n, tasks, i) {
                    tx.send((i as u64, seq)).await.expect("open");
                }
            });
        }
        drop(tx);
        let received = consumer.await.expect("consumer task");
        Run {
            elapsed: start.elapsed(),
            received,
            allocations: 0,
        }
    })
}

// ---- 2. request-reply round trip ------------------------------------------------------------

/// One latency run: the round trips' histogram (ns), answers checked, allocations.
struct Latency {
    hist: Histogram<u64>,
    answered: u64,
    allocations: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// Unrecorded requests before the measured ones.
fn warmup(r: u64) -> u64 {
    (r / 10).clamp(100, 10_000)
}

/// Runs `warmup` then `r` measured round trips of `ask` (which must answer `x + 1`) on a
/// tokio task.
fn round_trips<F, Fut>(rt: &Runtime, r: u64, allocs: bool, ask: F) -> Latency
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let task = async move {
        for x in 0..warmup(r) {
            assert_eq!(ask(x).await, x + 1, "warm-up answer");
        }
        let mut hist = histogram();
        let mut answered = 0;
        let window = AllocWindow::start(allocs);
        for x in 0..r {
            let t0 = Instant::now();
            let answer = ask(x).await;
            let ns = t0.elapsed().as_nanos() as u64;
            assert_eq!(answer, x + 1, "answer");
            answered += 1;
            hist.saturating_record(ns.max(1));
        }
        let allocations = window.stop();
        Latency {
            hist,
            answered,
            allocations,
        }
    };
    rt.block_on(rt.spawn(task)).expect("requester task")
}

type Request = (u64, Reply<u64>);

fn request_shardbus(rt: &Runtime, wait: WaitStrategy, r: u64, allocs: bool) -> Latency {
    let bus = Arc::new(
        Bus::<Request>::builder()
            .shards(1)
            .wait_strategy(wait)
            .build()
            .expect("bus builds"),
    );
    bus.subscribe(
        "inc",
        |_: &mut Context<'_, Request>, (x, reply): &Request| {
            let _ = reply.send(x + 1);
        },
    )
    .expect("subscribes");
    let topic = bus.topic("inc").expect("topic");
    let requester = bus.clone();
    let out = round_trips(rt, r, allocs, move |x| {
        let bus = requester.clone();
        async move {
            bus.request_async(topic, |reply| (x, reply), Duration::from_secs(5))
                .await
                .map_err(|_| "request failed")
                .expect("answered")
        }
    });
    if let Some(bus) = Arc::into_inner(bus) {
        bus.shutdown();
    }
    out
}

fn request_tokio_actor(rt: &Runtime, r: u64, cap: usize) -> Latency {
    use tokio::sync::{mpsc, oneshot};
    let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(cap);
    rt.spawn(async move {
        while let Some((x, reply)) = rx.recv().await {
            let _ = reply.send(x + 1);
        }
    });
    round_trips(rt, r, false, move |x| {
        let tx = tx.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            tx.send((x, reply)).await.expect("actor runs");
            answer.await.expect("answered")
        }
    })
}

/// The floor of a round trip that crosses to another OS thread, as a shard's does: a tokio
/// task hands `(x, oneshot sender)` to a plain thread that busy-polls a channel and answers
/// `x + 1` through the oneshot, waking the task. No bus, no dispatch.
fn request_thread_floor(rt: &Runtime, r: u64) -> Latency {
    use tokio::sync::oneshot;
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, oneshot::Sender<u64>)>(1);
    let server = std::thread::spawn(move || loop {
        match rx.try_recv() {
            Ok((x, reply)) => {
                let _ = reply.send(x + 1);
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
        }
    });
    let out = round_trips(rt, r, false, move |x| {
        let tx = tx.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            tx.send((x, reply)).expect("server runs");
            answer.await.expect("answered")
        }
    });
    server.join().expect("server thread");
    out
}

mod ractor_peer {
    use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

    pub struct Inc;

    pub struct Ask(pub u64, pub RpcReplyPort<u64>);

    impl Actor for Inc {
        type Msg = Ask;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ActorRef<Self::Msg>,
            _: (),
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            Ask(x, reply): Ask,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            let _ = reply.send(x + 1);
            Ok(())
        }
    }
}

fn request_ractor(rt: &Runtime, r: u64) -> Latency {
    use ractor::{rpc::CallResult, Actor};
    let (actor, handle) = rt
        .block_on(Actor::spawn(None, ractor_peer::Inc, ()))
        .expect("ractor actor spawns");
    let asker = actor.clone();
    let out = round_trips(rt, r, false, move |x| {
        let actor = asker.clone();
        async move {
            match actor.call(|reply| ractor_peer::Ask(x, reply), None).await {
                Ok(CallResult::Success(v)) => v,
                _ => panic!("ractor call failed"),
            }
        }
    });
    actor.stop(None);
    let _ = rt.block_on(handle);
    out
}

mod kameo_peer {
    use kameo::message::{Context, Message};
    use kameo::Actor;

    #[derive(Actor)]
    pub struct Inc;

    impl Message<u64> for Inc {
        type Reply = u64;

        async fn handle(&mut self, x: u64, _: &mut Context<Self, Self::Reply>) -> u64 {
            x + 1
        }
    }
}

fn request_kameo(rt: &Runtime, r: u64) -> Latency {
    use kameo::actor::Spawn;
    let actor = rt.block_on(async { kameo_peer::Inc::spawn(kameo_peer::Inc) });
    let asker = actor.clone();
    let out = round_trips(rt, r, false, move |x| {
        let actor = asker.clone();
        async move { actor.ask(x).await.expect("kameo answered") }
    });
    rt.block_on(async {
        let _ = actor.stop_gracefully().await;
        actor.wait_for_shutdown().await;
    });
    out
}

// ---- 3. subscriber stream vs tokio broadcast -------------------------------------------------

/// The producer's side of the shared flow control: at most `window - 1` unacknowledged.
fn wait_for_window(acked: &AtomicU64, sent: u64, window: u64) {
    while sent - acked.load(Ordering::Acquire) >= window {
        std::thread::yield_now();
    }
}

/// Acknowledges every 256 messages.
fn ack(acked: &AtomicU64, got: u64) {
    if got.is_multiple_of(256) {
        acked.store(got, Ordering::Release);
    }
}

fn stream_shardbus(rt: &Runtime, n: u64, cap: usize, allocs: bool) -> Run {
    let bus = Arc::new(
        Bus::<Msg>::builder()
            .shards(1)
            .capacity(cap)
            .lane_capacity(cap)
            .build()
            .expect("bus builds"),
    );
    let mut stream = bus.subscribe_stream("ticks", cap).expect("stream");
    let topic = bus.topic("ticks").expect("topic");
    let acked = Arc::new(AtomicU64::new(0));
    let mut publisher = bus.publisher();
    let window = AllocWindow::start(allocs);
    let start = Instant::now();
    let consumer = {
        let acked = acked.clone();
        rt.spawn(async move {
            let mut got = 0u64;
            let mut end = None;
            while let Some(m) = stream.recv_async().await {
                black_box(m);
                got += 1;
                ack(&acked, got);
                if got == n {
                    end = Some(Instant::now());
                    if allocs {
                        // The run's measure ends here; the flush and close after it are
                        // not per message.
                        COUNTING.store(false, Ordering::SeqCst);
                    }
                }
            }
            (got, end)
        })
    };
    let producer = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            for seq in 0..n {
                wait_for_window(&acked, seq, cap as u64);
                publisher.publish(topic, (0, seq)).expect("published");
            }
            drop(publisher);
            // Every message is in the stream once flushed; closing ends it after them.
            bus.flush().expect("flushed");
            bus.close().expect("closed");
        })
    };
    producer.join().expect("producer thread");
    let (received, end) = rt.block_on(consumer).expect("consumer task");
    let allocations = window.stop();
    let stats = bus.stats();
    assert_eq!(stats.dead_letters(), 0, "dead letters");
    assert_eq!(stats.stream_dead_letters(), 0, "stream dead letters");
    Run {
        elapsed: end.map_or(start.elapsed(), |e| e - start),
        received,
        allocations,
    }
}

fn stream_broadcast(rt: &Runtime, n: u64, cap: usize) -> Run {
    let (tx, mut rx) = tokio::sync::broadcast::channel::<Msg>(cap);
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let consumer = {
        let acked = acked.clone();
        rt.spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let mut got = 0u64;
            let mut end = None;
            loop {
                match rx.recv().await {
                    Ok(m) => {
                        black_box(m);
                        got += 1;
                        ack(&acked, got);
                        if got == n {
                            end = Some(Instant::now());
                        }
                    }
                    Err(RecvError::Lagged(k)) => panic!("broadcast receiver lagged by {k}"),
                    Err(RecvError::Closed) => break,
                }
            }
            (got, end)
        })
    };
    let producer = std::thread::spawn(move || {
        for seq in 0..n {
            wait_for_window(&acked, seq, cap as u64);
            tx.send((0, seq)).expect("a receiver");
        }
    });
    producer.join().expect("producer thread");
    let (received, end) = rt.block_on(consumer).expect("consumer task");
    Run {
        elapsed: end.map_or(start.elapsed(), |e| e - start),
        received,
        allocations: 0,
    }
}

// ---- tables ----------------------------------------------------------------------------------

fn median<T: Copy + PartialOrd>(values: &[T]) -> T {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn min_max<T: Copy + PartialOrd>(values: &[T]) -> (T, T) {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    (v[0], v[v.len() - 1])
}

/// A throughput runner's repetitions, M msgs/s.
struct Rates {
    name: &'static str,
    rates: Vec<f64>,
}

impl Rates {
    fn push(&mut self, run: &Run, n: u64) {
        assert_eq!(
            run.received, n,
            "{}: received {} of {n}",
            self.name, run.received
        );
        self.rates.push(n as f64 / run.elapsed.as_secs_f64() / 1e6);
    }

    fn median(&self) -> f64 {
        median(&self.rates)
    }

    fn cell(&self) -> String {
        let (lo, hi) = min_max(&self.rates);
        format!("{:.2} ({lo:.2}–{hi:.2})", self.median())
    }
}

/// Prints a throughput table: shardbus first, then its peers, then the ratio to the best.
fn rate_table(title: &str, rows: &[Rates], n: u64, reps: usize) {
    println!("\n{title}, {n} msgs × {reps} runs; M msgs/s, median (min–max)");
    println!("| runner | M msgs/s |");
    println!("|---|---:|");
    for r in rows {
        println!("| {} | {} |", r.name, r.cell());
    }
    let best = rows[1..]
        .iter()
        .max_by(|a, b| a.median().total_cmp(&b.median()))
        .expect("a peer");
    println!(
        "{} / best peer ({}): {:.2}x",
        rows[0].name,
        best.name,
        rows[0].median() / best.median()
    );
    println!(
        "verified: every run received exactly {n} messages ({} runners × {reps} runs)",
        rows.len()
    );
}

/// A latency runner's repetitions: p50, p99, p99.9 per run.
struct Quantiles {
    name: &'static str,
    runs: Vec<[u64; 3]>,
}

impl Quantiles {
    fn push(&mut self, l: &Latency, r: u64) {
        assert_eq!(
            l.answered, r,
            "{}: answered {} of {r}",
            self.name, l.answered
        );
        let q = |q| l.hist.value_at_quantile(q);
        self.runs.push([q(0.5), q(0.99), q(0.999)]);
    }

    fn cell(&self, i: usize) -> String {
        let v: Vec<u64> = self.runs.iter().map(|q| q[i]).collect();
        let (lo, hi) = min_max(&v);
        format!("{} ({lo}–{hi})", median(&v))
    }
}

fn main() {
    let args = args();
    let (n, r, cap, reps) = (args.messages, args.requests, args.capacity, args.reps);
    let rt = runtime();
    let m = Machine::detect();
    println!(
        "`cargo run --release -p shardbus-bench --example async_peers -- --messages {n} \
         --requests {r} --capacity {cap} --reps {reps}`"
    );
    println!(
        "{} | {} cores | {} | fences {} | tokio 2 workers | {reps} runs each, interleaved",
        m.date, m.cores, m.cpu, m.fences
    );

    let names = ["shardbus", "tokio mpsc", "flume", "kanal", "async-channel"];
    let rates = |name| Rates {
        name,
        rates: Vec::new(),
    };
    let mut publish: Vec<Vec<Rates>> = [1, 4]
        .iter()
        .map(|_| names.iter().map(|&name| rates(name)).collect())
        .collect();
    let mut stream = vec![rates("shardbus stream"), rates("tokio broadcast")];
    // Not peers: where shardbus's own time goes (same bus, other paths).
    let mut floors: Vec<Vec<Rates>> = [1, 4]
        .iter()
        .map(|_| {
            vec![
                rates("shardbus publish_async, Fences::Membarrier"),
                rates("shardbus blocking publish from threads (no runtime)"),
            ]
        })
        .collect();
    let lat = |name| Quantiles {
        name,
        runs: Vec::new(),
    };
    let mut request = vec![
        lat("shardbus request_async, busy-spin"),
        lat("shardbus request_async, park"),
        lat("tokio actor (mpsc + oneshot)"),
        lat("ractor call"),
        lat("kameo ask"),
    ];
    let mut request_floor = vec![lat("floor: tokio task → spinning thread → oneshot")];
    for rep in 1..=reps {
        for (t, &tasks) in [1, 4].iter().enumerate() {
            eprintln!("rep {rep}/{reps}: async publish, {tasks} task(s)");
            let row = &mut publish[t];
            row[0].push(&publish_shardbus(&rt, tasks, n, cap, false), n);
            row[1].push(&publish_tokio_mpsc(&rt, tasks, n, cap), n);
            row[2].push(&publish_flume(&rt, tasks, n, cap), n);
            row[3].push(&publish_kanal(&rt, tasks, n, cap), n);
            row[4].push(&publish_async_channel(&rt, tasks, n, cap), n);
            let floor = &mut floors[t];
            let membarrier = publish_shardbus_with(&rt, tasks, n, cap, false, Fences::Membarrier);
            floor[0].push(&membarrier, n);
            floor[1].push(&publish_sync_floor(tasks, n, cap), n);
        }
        eprintln!("rep {rep}/{reps}: request-reply");
        request[0].push(&request_shardbus(&rt, WaitStrategy::BusySpin, r, false), r);
        request[1].push(&request_shardbus(&rt, WaitStrategy::Park, r, false), r);
        request[2].push(&request_tokio_actor(&rt, r, cap), r);
        request[3].push(&request_ractor(&rt, r), r);
        request[4].push(&request_kameo(&rt, r), r);
        request_floor[0].push(&request_thread_floor(&rt, r), r);
        eprintln!("rep {rep}/{reps}: stream");
        stream[0].push(&stream_shardbus(&rt, n, cap, false), n);
        stream[1].push(&stream_broadcast(&rt, n, cap), n);
    }

    for (t, tasks) in [1, 4].iter().enumerate() {
        rate_table(
            &format!("### async publish: {tasks} task(s) → 1 consumer, 16 B, capacity {cap}"),
            &publish[t],
            n,
            reps,
        );
    }

    println!("\n### request-reply round trip, one in flight, {r} requests × {reps} runs; ns, median (min–max)");
    println!("| runner | p50 | p99 | p99.9 |");
    println!("|---|---:|---:|---:|");
    for q in &request {
        println!(
            "| {} | {} | {} | {} |",
            q.name,
            q.cell(0),
            q.cell(1),
            q.cell(2)
        );
    }
    for q in &request_floor {
        println!(
            "| {} | {} | {} | {} |",
            q.name,
            q.cell(0),
            q.cell(1),
            q.cell(2)
        );
    }
    println!(
        "verified: every run had {r} answers, each x + 1 ({} runners × {reps} runs)",
        request.len() + request_floor.len()
    );
    for (t, tasks) in [1, 4].iter().enumerate() {
        println!("\n### where the async publish's time goes: {tasks} task(s)/thread(s) → 1 shard");
        println!("| runner | M msgs/s |");
        println!("|---|---:|");
        for row in &floors[t] {
            println!("| {} | {} |", row.name, row.cell());
        }
    }

    rate_table(
        &format!(
            "### stream: 1 producer thread → 1 consumer task, 16 B, capacity {cap}, window {cap}"
        ),
        &stream,
        n,
        reps,
    );

    eprintln!("allocations");
    let allocs = [
        (
            "publish_async, 1 task",
            publish_shardbus(&rt, 1, n, cap, true).allocations,
            n,
        ),
        (
            "publish_async, 4 tasks",
            publish_shardbus(&rt, 4, n, cap, true).allocations,
            n,
        ),
        (
            "subscriber stream",
            stream_shardbus(&rt, n, cap, true).allocations,
            n,
        ),
        (
            "request_async, park",
            request_shardbus(&rt, WaitStrategy::Park, r, true).allocations,
            r,
        ),
    ];
    println!("\n### heap allocations while measuring (all threads; bus build and subscriptions excluded)");
    println!("| path | allocations | messages | per message |");
    println!("|---|---:|---:|---:|");
    for (path, count, msgs) in allocs {
        println!(
            "| {path} | {count} | {msgs} | {:.4} |",
            count as f64 / msgs as f64
        );
    }
}
