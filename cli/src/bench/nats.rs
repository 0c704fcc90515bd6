//! `shardbus bench --nats URL`: the NATS bridge against plain async-nats on the same
//! server. Core: bus → export → NATS → import → bus, against an async-nats publisher →
//! async-nats subscriber, per payload size and subject count: throughput (a run at full
//! speed) and latency (a paced run). JetStream: the bridge's export and import rates with
//! acknowledgements, beside a plain JetStream publisher (the same window of acks in flight)
//! and a plain pull consumer acking each message. Every run checks it received exactly
//! what was sent.

use async_nats::jetstream;
use futures_util::StreamExt;
use shardbus::{Bus, Context};
use shardbus_nats::{Bridge, BridgeOptions, Delivery, JetStreamImport};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

/// The `--nats` options of `shardbus bench`.
#[derive(clap::Args, Debug, Default)]
pub struct NatsArgs {
    /// Run the NATS bridge benchmark against the server at URL (core and JetStream; the
    /// server needs JetStream: `nats-server -js`), with --payload sizes and --reps.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// Messages per throughput run of --nats.
    #[arg(long, default_value_t = 200_000, requires = "nats")]
    pub nats_messages: u64,
    /// Subject counts of --nats, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4", requires = "nats")]
    pub nats_subjects: Vec<usize>,
    /// Messages per paced latency run of --nats.
    #[arg(long, default_value_t = 20_000, requires = "nats")]
    pub nats_latency_messages: u64,
    /// Rate of the paced latency runs of --nats, messages per second.
    #[arg(long, default_value_t = 20_000, requires = "nats")]
    pub nats_rate: u64,
}

/// How long a receiver waits for the next message before it calls the run short.
const STALL: Duration = Duration::from_secs(5);
/// JetStream acknowledgements in flight, for the plain publisher and the bridge's export.
const WINDOW: usize = 256;
/// Shard threads of each bus the bridge runs on: one, as on a 2-core machine that also
/// runs the tokio workers and nats-server (each shard thread is a thread of its own).
const BUS_SHARDS: usize = 1;
/// The export's stream capacity (the default), and the most messages the bridge's
/// producer keeps ahead of the export: the bus never waits for NATS, so a producer that
/// outruns the export fills the stream and then loses messages to the dead-letter
/// handler. The plain publisher is held back the same way by the client's queue.
const AHEAD: u64 = 4096;

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// A payload of `size` bytes (at least 8) stamped with the send time.
fn stamped(size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; size.max(8)];
    let nanos = base().elapsed().as_nanos() as u64;
    buf[..8].copy_from_slice(&nanos.to_le_bytes());
    buf
}

/// Nanoseconds since the stamp in `payload`.
fn age(payload: &[u8]) -> u64 {
    let stamp = payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    (base().elapsed().as_nanos() as u64).saturating_sub(stamp)
}

/// One measured run: messages received, seconds, the latencies (ns) if kept.
struct Run {
    received: u64,
    secs: f64,
    latencies: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.received as f64 / self.secs.max(1e-9)
    }
    fn p99_us(&mut self) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 * 0.99) as usize).min(self.latencies.len() - 1);
        self.latencies[i] as f64 / 1000.0
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the bench's own NATS clients reported besides connecting (a disconnect, a slow
/// consumer, a server error), in order: printed with a run that came up short.
static EVENTS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn events() -> Vec<String> {
    EVENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

async fn client(url: &str) -> Result<async_nats::Client, BoxError> {
    Ok(async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            if !matches!(event, async_nats::Event::Connected) {
                EVENTS
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(event.to_string());
            }
        })
        .connect(url)
        .await?)
}

/// Sends `n` messages over `subjects` with `send`, paced at `rate` per second if given
/// (bursts every millisecond), else as fast as it goes.
async fn pace<F, Fut>(n: u64, rate: Option<u64>, mut send: F) -> Result<(), BoxError>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    let start = Instant::now();
    for i in 0..n {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                if wait > Duration::from_millis(1) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        send(i).await?;
    }
    Ok(())
}

async fn plain_core(
    url: &str,
    size: usize,
    subjects: usize,
    n: u64,
    rate: Option<u64>,
) -> Result<Run, BoxError> {
    let publisher = client(url).await?;
    let subscriber = client(url).await?;
    let mut sub = subscriber.subscribe("bench.plain.>").await?;
    // At the server before the publisher (another connection) sends: `flush` alone only
    // writes the SUB to the socket.
    shardbus_nats::round_trip(&subscriber, Duration::from_secs(5)).await?;
    let names: Vec<String> = (0..subjects).map(|s| format!("bench.plain.{s}")).collect();
    let receive = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(n as usize);
        let mut received = 0;
        while received < n {
            match tokio::time::timeout(STALL, sub.next()).await {
                Ok(Some(m)) => {
                    latencies.push(age(&m.payload));
                    received += 1;
                }
                _ => break,
            }
        }
        (received, latencies, Instant::now())
    });
    let start = Instant::now();
    pace(n, rate, |i| {
        let publisher = publisher.clone();
        let subject = names[i as usize % subjects].clone();
        async move { Ok(publisher.publish(subject, stamped(size).into()).await?) }
    })
    .await?;
    publisher.flush().await?;
    let (received, latencies, end) = receive.await?;
    Ok(Run {
        received,
        secs: (end - start).as_secs_f64(),
        latencies,
    })
}

/// A receiving bus, its count so far, and the latencies with the end time once all came.
type Receiving = (
    Arc<Bus<Vec<u8>>>,
    Arc<AtomicU64>,
    mpsc::Receiver<(Vec<u64>, Instant)>,
);

/// A bus whose `in` subscriber records each message's age and says when `n` arrived.
fn receiving_bus(n: u64) -> Result<Receiving, BoxError> {
    let bus = Bus::<Vec<u8>>::builder().shards(BUS_SHARDS).build()?;
    let count = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&count);
    let (done, finished) = mpsc::channel();
    let mut latencies = Vec::with_capacity(n as usize);
    bus.subscribe("in", move |_: &mut Context<'_, Vec<u8>>, m: &Vec<u8>| {
        latencies.push(age(m));
        // Relaxed: a progress count; the latencies go over the channel.
        if seen.fetch_add(1, Ordering::Relaxed) + 1 == n {
            let _ = done.send((std::mem::take(&mut latencies), Instant::now()));
        }
    })?;
    Ok((Arc::new(bus), count, finished))
}

/// Waits (without blocking the runtime) until `count` reaches `n` or stops moving.
async fn wait_count(count: impl Fn() -> u64, n: u64) -> u64 {
    let mut last = (count(), Instant::now());
    loop {
        let now = count();
        if now >= n {
            return now;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > STALL {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn options() -> BridgeOptions<Vec<u8>> {
    BridgeOptions::default()
        .stream_capacity(AHEAD as usize)
        .subscription_capacity(1 << 20)
        .max_in_flight(WINDOW)
}

/// Waits (a millisecond at a time) while `sent` is `AHEAD` or more past what `exported`
/// says left for NATS. Looks every 64 messages. Gives up when the export has not moved
/// for `STALL` (the server is gone): the run then comes out short and says so.
async fn hold_back(sent: u64, exported: impl Fn() -> u64) {
    if !sent.is_multiple_of(64) {
        return;
    }
    let mut last = (exported(), Instant::now());
    while sent.saturating_sub(last.0) + 64 > AHEAD {
        if last.1.elapsed() > STALL {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = exported();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
}

async fn bridge_core(
    url: &str,
    size: usize,
    subjects: usize,
    n: u64,
    rate: Option<u64>,
) -> Result<Run, BoxError> {
    let source = Arc::new(Bus::<Vec<u8>>::builder().shards(BUS_SHARDS).build()?);
    let (sink, count, finished) = receiving_bus(n)?;
    let out = Bridge::connect(url, Arc::clone(&source), options().prefix("bench.bridge")).await?;
    let inn = Bridge::connect(url, Arc::clone(&sink), options()).await?;
    // Returns once the server has the subscription.
    let _import = inn.import("bench.bridge.>", "in").await?;
    let topics: Vec<String> = (0..subjects).map(|s| format!("t{s}")).collect();
    let _exports = topics
        .iter()
        .map(|t| out.export(t.as_str(), Delivery::Core))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let mut publisher = source.publisher();
    let out = &out;
    pace(n, rate, |i| {
        let r = publisher
            .publish(topics[i as usize % subjects].as_str(), stamped(size))
            .map_err(|e| BoxError::from(e.to_string()));
        async move {
            hold_back(i + 1, || out.stats().exported).await;
            r
        }
    })
    .await?;
    let received = wait_count(|| count.load(Ordering::Relaxed), n).await;
    let (latencies, end) = match finished.try_recv() {
        Ok(done) => done,
        Err(_) => (Vec::new(), Instant::now()),
    };
    Ok(Run {
        received,
        secs: (end - start).as_secs_f64(),
        latencies,
    })
}

async fn fresh_stream(js: &jetstream::Context, name: &str, subjects: &str) -> Result<(), BoxError> {
    let _ = js.delete_stream(name).await;
    js.create_stream(jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// Plain JetStream: publish `n` with `WINDOW` acks in flight, then a pull consumer acking each.
async fn plain_js(url: &str, size: usize, n: u64) -> Result<(Run, Run), BoxError> {
    let c = client(url).await?;
    let js = jetstream::new(c);
    fresh_stream(&js, "BENCHPLAIN", "bench.jsplain.>").await?;
    let start = Instant::now();
    let mut window = VecDeque::with_capacity(WINDOW);
    let mut acked = 0;
    for _ in 0..n {
        if window.len() >= WINDOW {
            let ack: jetstream::context::PublishAckFuture = window.pop_front().expect("full");
            acked += u64::from(ack.await.is_ok());
        }
        window.push_back(js.publish("bench.jsplain.0", stamped(size).into()).await?);
    }
    for ack in window {
        acked += u64::from(ack.await.is_ok());
    }
    let publish = Run {
        received: acked,
        secs: start.elapsed().as_secs_f64(),
        latencies: Vec::new(),
    };
    let stream = js.get_stream("BENCHPLAIN").await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("plain".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let start = Instant::now();
    let mut received = 0;
    while received < n {
        match tokio::time::timeout(STALL, messages.next()).await {
            Ok(Some(Ok(m))) => {
                m.ack().await?;
                received += 1;
            }
            _ => break,
        }
    }
    let consume = Run {
        received,
        secs: start.elapsed().as_secs_f64(),
        latencies: Vec::new(),
    };
    js.delete_stream("BENCHPLAIN").await?;
    Ok((publish, consume))
}

/// The bridge: a JetStream export of `n` messages published on the bus, then an import.
async fn bridge_js(url: &str, size: usize, n: u64) -> Result<(Run, Run), BoxError> {
    let source = Arc::new(Bus::<Vec<u8>>::builder().shards(BUS_SHARDS).build()?);
    let out = Bridge::connect(url, Arc::clone(&source), options().prefix("bench.jsb")).await?;
    fresh_stream(out.jetstream(), "BENCHBRIDGE", "bench.jsb.>").await?;
    let _export = out.export("t0", Delivery::JetStream)?;
    let start = Instant::now();
    let mut publisher = source.publisher();
    for i in 0..n {
        publisher
            .publish("t0", stamped(size))
            .map_err(|e| e.to_string())?;
        hold_back(i + 1, || out.stats().exported).await;
    }
    let exported = wait_count(|| out.stats().exported, n).await;
    let export = Run {
        received: exported,
        secs: start.elapsed().as_secs_f64(),
        latencies: Vec::new(),
    };
    let (sink, _count, _finished) = receiving_bus(n)?;
    let inn = Bridge::connect(url, sink, options()).await?;
    let start = Instant::now();
    let _import = inn
        .import_jetstream(JetStreamImport::new(
            "BENCHBRIDGE",
            "bridge",
            "bench.jsb.>",
            "in",
        ))
        .await?;
    let imported = wait_count(|| inn.stats().import_acked, n).await;
    let import = Run {
        received: imported,
        secs: start.elapsed().as_secs_f64(),
        latencies: Vec::new(),
    };
    out.jetstream().delete_stream("BENCHBRIDGE").await?;
    Ok((export, import))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the whole `--nats` benchmark and prints its two tables; `Ok(true)` if every run
/// received exactly what was sent.
pub fn run(args: &NatsArgs, url: &str, payloads: &[usize], reps: usize) -> Result<bool, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut exact = true;
        let n = args.nats_messages;
        let lat_n = args.nats_latency_messages;
        let rate = Some(args.nats_rate);
        let machine = shardbus_bench::report::Machine::detect();
        println!("{}, {} cores, {}", machine.cpu, machine.cores, machine.date);
        println!("NATS bridge vs plain async-nats at {url}: {n} messages per throughput run, {lat_n} at {} msg/s per latency run, median of {reps}", args.nats_rate);
        println!();
        println!("| payload | subjects | plain msg/s | bridge msg/s | bridge/plain | plain p99 µs | bridge p99 µs | bridge/plain p99 | exact |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|:---:|");
        for &size in payloads {
            for &subjects in &args.nats_subjects {
                let (mut pr, mut br, mut pl, mut bl) = (vec![], vec![], vec![], vec![]);
                let mut ok = true;
                for _ in 0..reps {
                    let p = plain_core(url, size, subjects, n, None).await?;
                    let b = bridge_core(url, size, subjects, n, None).await?;
                    let mut pp = plain_core(url, size, subjects, lat_n, rate).await?;
                    let mut bp = bridge_core(url, size, subjects, lat_n, rate).await?;
                    for (name, run, sent) in [("plain", &p, n), ("bridge", &b, n), ("plain paced", &pp, lat_n), ("bridge paced", &bp, lat_n)] {
                        if run.received != sent {
                            ok = false;
                            eprintln!("{size} B, {subjects} subjects, {name}: received {} of {sent}; the bench's NATS clients reported: {:?}", run.received, events());
                        }
                    }
                    pr.push(p.rate());
                    br.push(b.rate());
                    pl.push(pp.p99_us());
                    bl.push(bp.p99_us());
                }
                exact &= ok;
                let (pr, br, pl, bl) = (median(pr), median(br), median(pl), median(bl));
                println!(
                    "| {size} B | {subjects} | {pr:.0} | {br:.0} | {:.2}× | {pl:.0} | {bl:.0} | {:.2}× | {} |",
                    br / pr,
                    bl / pl,
                    if ok { "yes" } else { "NO" }
                );
            }
        }
        println!();
        println!("| payload | plain JetStream publish msg/s | bridge export msg/s | plain pull+ack msg/s | bridge import msg/s | exact |");
        println!("|---:|---:|---:|---:|---:|:---:|");
        for &size in payloads {
            let (mut pp, mut be, mut pc, mut bi) = (vec![], vec![], vec![], vec![]);
            let mut ok = true;
            for _ in 0..reps {
                let (publish, consume) = plain_js(url, size, n).await?;
                let (export, import) = bridge_js(url, size, n).await?;
                for (name, run) in [("plain publish", &publish), ("plain consume", &consume), ("bridge export", &export), ("bridge import", &import)] {
                    if run.received != n {
                        ok = false;
                        eprintln!("{size} B, JetStream {name}: received {} of {n}", run.received);
                    }
                }
                pp.push(publish.rate());
                pc.push(consume.rate());
                be.push(export.rate());
                bi.push(import.rate());
            }
            exact &= ok;
            println!(
                "| {size} B | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
                median(pp),
                median(be),
                median(pc),
                median(bi),
                if ok { "yes" } else { "NO" }
            );
        }
        Ok(exact)
    })
}
