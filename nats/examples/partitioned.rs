//! Three buses share the partitioned subject space `orders.<key>`: the server maps it onto
//! `orders.<partition>.<key>` (three partitions), a JetStream stream keeps them, and each
//! bus imports its own partition. The output shows which keys each bus owns and that each
//! key's messages arrived in order.
//!
//! ```text
//! cargo run -p shardbus-nats --example partitioned                 # starts its own server
//! cargo run -p shardbus-nats --example partitioned -- nats://127.0.0.1:4222
//! ```
//!
//! A server passed by URL needs JetStream and the mapping that
//! `shardbus_nats::partition_mapping("orders", 3)` prints (this example prints it too).

use shardbus::{Bus, Codec, Context, DecodeError, EncodeError};
use shardbus_nats::server::{NatsServer, ServerConfig};
use shardbus_nats::{Bridge, BridgeOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 3;
const KEYS: u64 = 9;
const PER_KEY: u64 = 100;

/// An order event: the customer key and its sequence number, as `key:seq`.
#[derive(Clone, Debug)]
struct Order {
    key: String,
    seq: u64,
}

impl Codec for Order {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(format!("{}:{}", self.key, self.seq).as_bytes());
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(bytes).map_err(DecodeError::new)?;
        let (key, seq) = text
            .split_once(':')
            .ok_or_else(|| DecodeError::new("not key:seq"))?;
        Ok(Order {
            key: key.to_owned(),
            seq: seq.parse().map_err(DecodeError::new)?,
        })
    }
}

type Seen = Arc<Mutex<BTreeMap<String, Vec<u64>>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "server mapping:\n{}",
        shardbus_nats::partition_mapping("orders", PARTITIONS)
    );
    let (_server, url) = match std::env::args().nth(1) {
        Some(url) => (None, url),
        None => {
            let server =
                NatsServer::start_with(ServerConfig::default().partition("orders", PARTITIONS))?;
            let url = server.url();
            println!("started nats-server at {url}");
            (Some(server), url)
        }
    };

    // Three "processes": a bus each, importing one partition each.
    let mut processes = Vec::new();
    for p in 0..PARTITIONS {
        let seen: Seen = Arc::default();
        let sink = Arc::clone(&seen);
        let bus = Bus::<Order>::builder()
            .shards(2)
            .subscribe("orders", move |_: &mut Context<'_, Order>, o: &Order| {
                sink.lock()
                    .unwrap()
                    .entry(o.key.clone())
                    .or_default()
                    .push(o.seq);
            })
            .build()?;
        let bridge = Bridge::connect(&url, Arc::new(bus), BridgeOptions::default()).await?;
        if p == 0 {
            bridge.ensure_stream("ORDERS", &["orders.*.*"]).await?;
        }
        let links = bridge
            .import_partitions("ORDERS", "orders", [p], "orders", |spec| spec)
            .await?;
        processes.push((bridge, links, seen));
    }

    // Any NATS client publishes `orders.<key>`; the server picks the partition.
    let js = processes[0].0.jetstream().clone();
    for seq in 0..PER_KEY {
        for k in 0..KEYS {
            let order = Order {
                key: format!("customer{k}"),
                seq,
            };
            let mut payload = Vec::new();
            order.encode(&mut payload)?;
            js.publish(format!("orders.{}", order.key), payload.into())
                .await?
                .await?;
        }
    }

    let total = |ps: &[(Bridge<Order>, _, Seen)]| -> usize {
        ps.iter()
            .map(|(_, _, s)| s.lock().unwrap().values().map(Vec::len).sum::<usize>())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while total(&processes) < (KEYS * PER_KEY) as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut all_in_order = true;
    for (p, (bridge, _, seen)) in processes.iter().enumerate() {
        let seen = seen.lock().unwrap();
        let keys: Vec<_> = seen.keys().cloned().collect();
        let count: usize = seen.values().map(Vec::len).sum();
        let ordered = seen.values().all(|s| s.windows(2).all(|w| w[0] < w[1]));
        all_in_order &= ordered;
        println!(
            "bus {p} (partition {p}): {count} messages, keys {keys:?}, per-key order kept: {ordered}, acked {}",
            bridge.stats().import_acked
        );
    }
    let handled = total(&processes);
    println!(
        "{handled} of {} handled; per-key order kept everywhere: {all_in_order}",
        KEYS * PER_KEY
    );
    if handled != (KEYS * PER_KEY) as usize || !all_in_order {
        return Err("not every message was handled in order".into());
    }
    Ok(())
}
