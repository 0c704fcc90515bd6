//! Shared pieces: the server (or the skip), the message type, a collecting bus, and
//! bounded waits.

use shardbus::{Bus, Codec, Context, DecodeError, EncodeError};
use shardbus_nats::server::{NatsServer, ServerConfig};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server, or `None` (a loud skip) when the binary is missing outside CI.
pub fn server_with(config: ServerConfig) -> Option<NatsServer> {
    match NatsServer::start_with(config) {
        Ok(server) => Some(server),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::env::var("CI").as_deref() != Ok("true") =>
        {
            eprintln!(
                "\n!!!!!!!! SKIPPED: no nats-server binary ({e}); install it \
                 (apt-get install nats-server) or set NATS_SERVER. Under CI=true this fails. !!!!!!!!\n"
            );
            None
        }
        Err(e) => panic!("cannot start nats-server: {e}"),
    }
}

pub fn server() -> Option<NatsServer> {
    server_with(ServerConfig::default())
}

/// The test message: a key, a sequence number per key, and padding to size it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Order {
    pub key: String,
    pub seq: u64,
    pub pad: usize,
}

impl Order {
    pub fn new(key: impl Into<String>, seq: u64) -> Self {
        Order {
            key: key.into(),
            seq,
            pad: 0,
        }
    }
}

/// `key:seq:` then `pad` bytes of `x`.
impl Codec for Order {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(format!("{}:{}:", self.key, self.seq).as_bytes());
        out.resize(out.len() + self.pad, b'x');
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(bytes).map_err(DecodeError::new)?;
        let mut parts = text.splitn(3, ':');
        let (Some(key), Some(seq), Some(pad)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(DecodeError::new("not key:seq:pad"));
        };
        if key.is_empty() || pad.bytes().any(|b| b != b'x') {
            return Err(DecodeError::new("bad key or padding"));
        }
        let seq = seq.parse().map_err(DecodeError::new)?;
        Ok(Order {
            key: key.to_owned(),
            seq,
            pad: pad.len(),
        })
    }
}

pub type Seen = Arc<Mutex<Vec<Order>>>;

/// A bus whose `topic` subscriber records every message it handles, in order.
pub fn collecting_bus(topic: &str) -> (Arc<Bus<Order>>, Seen) {
    let bus = Bus::<Order>::builder().shards(2).build().expect("bus");
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    bus.subscribe(topic, move |_: &mut Context<'_, Order>, o: &Order| {
        sink.lock().unwrap().push(o.clone());
    })
    .expect("subscribe");
    (Arc::new(bus), seen)
}

pub fn plain_bus() -> Arc<Bus<Order>> {
    Arc::new(Bus::<Order>::builder().shards(2).build().expect("bus"))
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `f` under a watchdog: a hang fails the test instead of stalling the suite.
pub async fn bounded<F: Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("the test did not finish within its watchdog")
}

/// Per key, the sequence numbers in the order they were seen.
pub fn by_key(seen: &[Order]) -> HashMap<String, Vec<u64>> {
    let mut map: HashMap<String, Vec<u64>> = HashMap::new();
    for o in seen {
        map.entry(o.key.clone()).or_default().push(o.seq);
    }
    map
}

/// Asserts each key's sequence is strictly increasing.
pub fn assert_per_key_order(seen: &[Order]) {
    for (key, seqs) in by_key(seen) {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "key {key}: out of order or repeated: {seqs:?}"
        );
    }
}

/// `keys` keys × `per_key` sequence numbers, interleaved by sequence.
pub fn orders(keys: usize, per_key: u64) -> Vec<Order> {
    (0..per_key)
        .flat_map(|seq| (0..keys).map(move |k| Order::new(format!("k{k}"), seq)))
        .collect()
}
