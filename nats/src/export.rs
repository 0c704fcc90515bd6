//! The export task: a stream subscription on the bus, encoded with the bus's codec and
//! published to NATS (core, or JetStream with a window of acknowledgements).

use crate::bridge::{Delivery, Inner};
use crate::stats::Counters;
use crate::ExportError;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::{HeaderMap, Subject};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use shardbus::{Bus, Codec, MessageStream};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// A message on its way to JetStream: kept until acknowledged, so it can be sent again
/// or given back.
struct Pending<T> {
    msg: T,
    subject: Subject,
    payload: Bytes,
    id: String,
    first: Instant,
    attempts: u32,
}

/// The export's subject when it does not depend on the message (no mapping function),
/// with the result of its check. A [`Subject`] shares its bytes: a clone per message
/// is a reference count, not a copy.
type Fixed = Option<Result<Subject, &'static str>>;

/// The payloads of small messages are cut from one shared block of this many bytes
/// (a `Bytes` per message that refers into it), so that encoding allocates once per
/// block rather than once per message.
const BLOCK: usize = 64 * 1024;
/// The most messages an export takes from its stream in one turn of its loop.
const DRAIN: usize = 64;
/// Messages up to this size share blocks; a larger one gets its own buffer.
const SHARED_UP_TO: usize = BLOCK / 16;

/// Encodes messages into payloads without an allocation per message: the codec appends
/// to a scratch vector that is kept, and the bytes are copied into the current block.
/// A block is freed when the last payload cut from it is dropped (sent, or acknowledged
/// and dropped with its `Pending`).
struct Encoder {
    scratch: Vec<u8>,
    block: BytesMut,
}

impl Encoder {
    fn new() -> Self {
        Self {
            scratch: Vec::new(),
            block: BytesMut::new(),
        }
    }

    /// The payload of `msg`, or the codec's error.
    fn encode<T: Codec>(&mut self, msg: &T) -> Result<Bytes, shardbus::EncodeError> {
        self.scratch.clear();
        msg.encode(&mut self.scratch)?;
        let len = self.scratch.len();
        if len > SHARED_UP_TO {
            // Too big to share a block: the scratch vector becomes the payload.
            return Ok(Bytes::from(std::mem::take(&mut self.scratch)));
        }
        if self.block.capacity() < len {
            // The previous block stays alive as long as payloads cut from it do.
            self.block = BytesMut::with_capacity(BLOCK);
        }
        self.block.extend_from_slice(&self.scratch);
        Ok(self.block.split().freeze())
    }
}

type Acked<T> = Pin<Box<dyn Future<Output = (Pending<T>, Result<bool, String>)> + Send>>;

/// Distinguishes the message ids of exports (in this process and others) that share a
/// stream: the process id, the start time and a counter of exports.
pub(crate) fn export_nonce() -> String {
    static EXPORTS: AtomicU64 = AtomicU64::new(0);
    // Relaxed: only uniqueness matters, no memory is published through it.
    let n = EXPORTS.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{t:x}-{n}", std::process::id())
}

/// Where an export's messages come from: a topic's [`MessageStream`], or a pattern
/// export's hand-off ([`crate::pattern`]). Each message comes with its topic's [`Route`],
/// or `None` for the export's own (a topic export's one topic).
pub(crate) trait Source<T>: Send {
    /// The next message, waiting; `None` once the source has ended.
    fn recv(&mut self) -> impl Future<Output = Option<(T, Option<Arc<Route>>)>> + Send;
    /// The next message if one is there now.
    fn try_recv(&mut self) -> Option<(T, Option<Arc<Route>>)>;
    /// Called once the export stops, before it sends what the source still holds: a
    /// source that has producers to end ends them here, so that what follows is final.
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// A topic export's source: the topic's [`MessageStream`] and the bus, so that stopping
/// the export ends the stream's subscription (a stream only ends by itself when the bus
/// shuts down).
pub(crate) struct StreamSource<T> {
    pub(crate) stream: MessageStream<T>,
    pub(crate) bus: Arc<Bus<T>>,
}

impl<T: Clone + Send + Sync + 'static> Source<T> for StreamSource<T> {
    async fn recv(&mut self) -> Option<(T, Option<Arc<Route>>)> {
        self.stream.recv_async().await.map(|msg| (msg, None))
    }

    fn try_recv(&mut self) -> Option<(T, Option<Arc<Route>>)> {
        self.stream.try_recv().map(|msg| (msg, None))
    }

    /// Ends the stream's subscription and waits until every shard has removed it: then
    /// the stream holds all there will be, and what publishers send next goes to the
    /// topic's other subscribers (or the bus's dead-letter handler).
    async fn close(&mut self) {
        let (bus, id) = (Arc::clone(&self.bus), self.stream.subscription());
        // `unsubscribe` waits for the shards: on a blocking thread, not the runtime's. An
        // error means the bus has shut down, which ended the stream already.
        let _ = tokio::task::spawn_blocking(move || bus.unsubscribe(id)).await;
    }
}

/// A local topic as an export sends it: its name (for the mapping function) and, when
/// there is no mapping function, its subject, checked once.
pub(crate) struct Route {
    topic: String,
    fixed: Fixed,
}

impl Route {
    /// The route of `topic` under `prefix`; `mapped`: a mapping function names the
    /// subjects (per message).
    pub(crate) fn new(prefix: &str, mapped: bool, topic: &str) -> Self {
        let fixed = if mapped {
            None
        } else {
            let subject = crate::options::prefixed(prefix, topic.to_owned());
            Some(crate::subject::check_literal(&subject).map(|()| Subject::from(subject)))
        };
        Route {
            topic: topic.to_owned(),
            fixed,
        }
    }

    /// The local topic's name.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }
}

pub(crate) async fn run<T, S>(
    inner: Arc<Inner<T>>,
    own: Route,
    mut source: S,
    delivery: Delivery,
    mut stopped: watch::Receiver<bool>,
) where
    T: Codec + Clone + Send + Sync + 'static,
    S: Source<T>,
{
    let mut out = Outgoing {
        nonce: export_nonce(),
        next_id: 0,
        encoder: Encoder::new(),
        window: FuturesOrdered::new(),
    };
    let max = inner.options.max_in_flight;
    // Made once: a fresh `changed()` per message would register with the watch channel's
    // notifier (a lock) and deregister again every time.
    let mut stop = std::pin::pin!(stopped.changed());
    loop {
        if out.window.len() >= max {
            if let Some(done) = out.window.next().await {
                settle(&inner, &mut out.window, done);
            }
            continue;
        }
        let (msg, route) = tokio::select! {
            biased;
            Some(done) = out.window.next(), if !out.window.is_empty() => {
                settle(&inner, &mut out.window, done);
                continue;
            }
            _ = &mut stop => break,
            msg = source.recv() => match msg {
                Some(msg) => msg,
                None => break, // the bus is shutting down
            },
        };
        let route = route.as_deref().unwrap_or(&own);
        send(&inner, route, msg, delivery, &mut out).await;
        // What the source holds already goes out without another round through the
        // select, up to a bound (then the acknowledgements and the stop get their turn).
        for _ in 1..DRAIN {
            if out.window.len() >= max {
                break;
            }
            let Some((msg, route)) = source.try_recv() else {
                break;
            };
            let route = route.as_deref().unwrap_or(&own);
            send(&inner, route, msg, delivery, &mut out).await;
        }
    }
    // Ending: the source is closed, so what it still holds is finite (its capacity); that
    // goes out too, then the acknowledgements. The drain gets one export timeout: what is
    // still unsent after it (the server is away and core sends wait for room) goes to the
    // export-failure handler rather than holding the stop for a timeout per message.
    source.close().await;
    let timeout = inner.options.export_timeout;
    // A timeout too large to add (`Duration::MAX`: keep trying) has no deadline.
    let deadline = Instant::now().checked_add(timeout);
    while let Some((msg, route)) = source.try_recv() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            fail(
                &inner,
                ExportError::TimedOut {
                    msg,
                    timeout,
                    attempts: 0,
                    reason: "the export stopped before it could send it".to_owned(),
                },
            );
            continue;
        }
        let route = route.as_deref().unwrap_or(&own);
        send(&inner, route, msg, delivery, &mut out).await;
        while out.window.len() >= max {
            if let Some(done) = out.window.next().await {
                settle(&inner, &mut out.window, done);
            }
        }
    }
    while let Some(done) = out.window.next().await {
        settle(&inner, &mut out.window, done);
    }
}

/// Encodes and checks one message, then publishes it (core) or puts it in the window
/// (JetStream). A message that cannot go goes to the export-failure handler.
#[allow(clippy::too_many_arguments)]
/// An export's sending state: the JetStream message ids' nonce and counter, the payload
/// encoder, and the window of publishes awaiting their acknowledgements.
struct Outgoing<T> {
    nonce: String,
    next_id: u64,
    encoder: Encoder,
    window: FuturesOrdered<Acked<T>>,
}

async fn send<T>(
    inner: &Arc<Inner<T>>,
    route: &Route,
    msg: T,
    delivery: Delivery,
    out: &mut Outgoing<T>,
) where
    T: Codec + Clone + Send + Sync + 'static,
{
    let topic = route.topic.as_str();
    let subject = match &route.fixed {
        // No mapping function: one subject for the topic, checked once.
        Some(Ok(subject)) => subject.clone(),
        Some(Err(reason)) => {
            let (subject, reason) = (inner.options.subject_for(topic, &msg), *reason);
            return fail(
                inner,
                ExportError::InvalidSubject {
                    msg,
                    subject,
                    reason,
                },
            );
        }
        None => {
            let subject = inner.options.subject_for(topic, &msg);
            if let Err(reason) = crate::subject::check_literal(&subject) {
                return fail(
                    inner,
                    ExportError::InvalidSubject {
                        msg,
                        subject,
                        reason,
                    },
                );
            }
            Subject::from(subject)
        }
    };
    let payload = match out.encoder.encode(&msg) {
        Ok(payload) => payload,
        Err(error) => return fail(inner, ExportError::Encode { msg, error }),
    };
    // The limit the server announced, as the client keeps it (one atomic load; the
    // client's `server_info` would clone the whole INFO, strings and all).
    let max = inner.client.max_payload();
    if payload.len() > max {
        let size = payload.len();
        return fail(inner, ExportError::PayloadTooLarge { msg, size, max });
    }
    match delivery {
        Delivery::Core => {
            let timeout = inner.options.export_timeout;
            let mut publish = std::pin::pin!(inner.client.publish(subject, payload));
            // The client's queue has room almost always: one poll takes the message, and
            // the timer of the timeout is set up only when it has to wait. A poll that
            // leaves it pending keeps the future (and the message in it), which the
            // timeout then polls on.
            let published = match publish.as_mut().now_or_never() {
                Some(done) => Ok(done),
                None => tokio::time::timeout(timeout, publish).await,
            };
            match published {
                Ok(Ok(())) => Counters::add(&inner.counters.exported, 1),
                Ok(Err(e)) => fail(
                    inner,
                    ExportError::Refused {
                        msg,
                        reason: e.to_string(),
                    },
                ),
                Err(_) => fail(
                    inner,
                    ExportError::TimedOut {
                        msg,
                        timeout,
                        attempts: 1,
                        reason: "the client's queue stayed full".to_owned(),
                    },
                ),
            }
        }
        Delivery::JetStream => {
            let id = format!("{}-{}", out.nonce, out.next_id);
            out.next_id += 1;
            let pending = Pending {
                msg,
                subject,
                payload,
                id,
                first: Instant::now(),
                attempts: 0,
            };
            push(inner, &mut out.window, pending, false);
        }
    }
}

/// Puts a JetStream publish of `pending` into the window: the send (after a short pause
/// for a retry) and then its acknowledgement, resolved as a whole.
fn push<T>(
    inner: &Arc<Inner<T>>,
    window: &mut FuturesOrdered<Acked<T>>,
    mut pending: Pending<T>,
    retry: bool,
) where
    T: Send + Sync + 'static,
{
    pending.attempts += 1;
    let js = inner.js.clone();
    let ack_timeout = inner.options.ack_timeout;
    window.push_back(Box::pin(async move {
        if retry {
            // A failed publish (no stream yet, no connection) must not spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", pending.id.as_str());
        let sent = tokio::time::timeout(
            ack_timeout,
            js.publish_with_headers(pending.subject.clone(), headers, pending.payload.clone()),
        )
        .await;
        let result = match sent {
            Ok(Ok(ack)) => wait_ack(ack).await,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out queueing the publish".to_owned()),
        };
        (pending, result)
    }));
    let len = window.len() as u64;
    // Relaxed: a statistic (see `Counters`).
    inner
        .counters
        .export_in_flight_max
        .fetch_max(len, Ordering::Relaxed);
}

/// The acknowledgement: `Ok(duplicate)`.
async fn wait_ack(ack: PublishAckFuture) -> Result<bool, String> {
    ack.await.map(|a| a.duplicate).map_err(|e| e.to_string())
}

/// Counts an acknowledgement, or sends the message again, or gives it up.
fn settle<T>(
    inner: &Arc<Inner<T>>,
    window: &mut FuturesOrdered<Acked<T>>,
    (pending, result): (Pending<T>, Result<bool, String>),
) where
    T: Send + Sync + 'static,
{
    match result {
        Ok(duplicate) => {
            Counters::add(&inner.counters.exported, 1);
            if duplicate {
                Counters::add(&inner.counters.export_duplicates, 1);
            }
        }
        Err(reason) => {
            let timeout = inner.options.export_timeout;
            if pending.first.elapsed() < timeout {
                tracing::debug!(%reason, subject = %pending.subject, "shardbus-nats: export retry");
                Counters::add(&inner.counters.export_retries, 1);
                push(inner, window, pending, true);
            } else {
                fail(
                    inner,
                    ExportError::TimedOut {
                        msg: pending.msg,
                        timeout,
                        attempts: pending.attempts,
                        reason,
                    },
                );
            }
        }
    }
}

fn fail<T>(inner: &Inner<T>, error: ExportError<T>) {
    Counters::add(&inner.counters.export_failed, 1);
    (inner.options.on_export_failure)(error);
}

#[cfg(test)]
mod tests {
    use super::{Encoder, BLOCK, SHARED_UP_TO};

    /// A message of `len` bytes, each its index plus `seed` (mod 256).
    fn message(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_add(seed)).collect()
    }

    /// Payloads cut from shared blocks stay exactly what was encoded, across block
    /// boundaries and after the encoder has moved on; large ones get their own buffer.
    #[test]
    fn payloads_are_exact_and_independent() {
        let mut encoder = Encoder::new();
        let sizes = [
            0,
            1,
            16,
            255,
            256,
            SHARED_UP_TO,
            SHARED_UP_TO + 1,
            3 * BLOCK,
        ];
        let mut kept = Vec::new();
        // Enough messages to fill several blocks.
        for round in 0..((4 * BLOCK) / 256) {
            for (k, &len) in sizes.iter().enumerate() {
                let msg = message(len, (round + k) as u8);
                let payload = encoder.encode(&msg).expect("a byte vector always encodes");
                assert_eq!(payload.len(), len);
                kept.push((msg, payload));
            }
        }
        assert_eq!(kept.len(), sizes.len() * ((4 * BLOCK) / 256));
        for (msg, payload) in &kept {
            assert_eq!(&payload[..], &msg[..]);
        }
    }
}
