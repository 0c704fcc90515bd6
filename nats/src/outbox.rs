//! [`Outbox`]: a JetStream export whose outbox is a persistent bus's own log. Its handler
//! is a builder subscription that returns only once JetStream has acknowledged the
//! message or the export timeout has passed (then the message goes to the export-failure
//! handler), so the log's checkpoint (every handler finished) passes a message only once
//! it is in the stream or given back, and the replay at the next `build()` exports again
//! what was committed locally and neither.

use crate::bridge::connect_client;
use crate::stats::Counters;
use crate::{BridgeError, BridgeOptions, BridgeStats, ExportError};
use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use shardbus::{Codec, Context, Handler};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A JetStream export for a persistent bus that survives a restart of the process: what
/// was committed to the bus's log and neither acknowledged by JetStream nor given to the
/// export-failure handler is exported again by the replay at the next `build()`.
///
/// Connect it before building the bus, and subscribe its [`handler`](Self::handler) in the
/// builder ([`Builder::subscribe`](shardbus::Builder::subscribe): only builder
/// subscriptions get the replay):
///
/// ```no_run
/// # use shardbus::{Bus, Persistence};
/// # use shardbus_nats::{BridgeOptions, Outbox};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let outbox = Outbox::<Vec<u8>>::connect("nats://127.0.0.1:4222",
///     BridgeOptions::default().prefix("app")).await?;
/// let handler = outbox.handler();
/// // build() replays into the handler, which waits on the runtime: off its workers.
/// let bus = tokio::task::spawn_blocking(move || {
///     Bus::<Vec<u8>>::builder()
///         .persist(Persistence::new("bus-data"))
///         .subscribe("events", handler)            // events → app.events, via the log
///         .build()
/// })
/// .await??;
/// let bus = tokio::task::spawn_blocking(move || {
///     bus.publish_durable("events", b"hello".to_vec()).map(|()| bus)
/// })
/// .await??;
/// # drop(bus);
/// # Ok(()) }
/// ```
///
/// The handler publishes each message and **waits on the shard thread** for its
/// acknowledgement (retrying under the same message id): one round trip to the server
/// per message on that shard, which bounds the topic's shard to about one message per
/// round trip.
///
/// What is guaranteed: the log's checkpoint passes a message only once JetStream has
/// acknowledged it or the export timeout ([`BridgeOptions::export_timeout`], 30 s by
/// default) has passed. Past the timeout the handler gives the message to the
/// export-failure handler ([`ExportError::TimedOut`], counted in `export_failed`) and
/// returns; the checkpoint then passes it and no replay exports it again: from there it
/// is that handler's to keep. To ride out longer outages, raise the export timeout (up to
/// `Duration::MAX`, which retries until the server answers, holding the shard that long).
///
/// The shard threads wait on the tokio runtime [`connect`](Self::connect) ran on, which
/// drives the connection. So never block that runtime's worker threads on the bus:
/// `build()` (whose replay runs the handler), [`Bus::publish_durable`](shardbus::Bus::publish_durable),
/// [`Bus::flush`](shardbus::Bus::flush), `shutdown` and the other blocking calls belong on
/// a blocking thread (`tokio::task::spawn_blocking`) or a thread of your own. A worker
/// blocked on a shard that waits on the runtime is a deadlock once every worker is. Use [`Bridge::export`](crate::Bridge::export) with
/// [`Delivery::JetStream`](crate::Delivery::JetStream) where a crash may lose the export's
/// unacknowledged window.
///
/// Duplicates: the replay exports again every record after the last checkpoint, also those
/// acknowledged before the crash, under new message ids (a record's position in the log is
/// not visible to handlers), so the stream may hold them twice: at least once.
///
/// The client's connection runs on the tokio runtime [`connect`](Self::connect) was
/// called on, which must be a multi-thread runtime (the shard threads wait on it, with
/// `Handle::block_on`).
pub struct Outbox<T> {
    inner: Arc<OutboxInner<T>>,
}

struct OutboxInner<T> {
    js: jetstream::Context,
    client: async_nats::Client,
    options: BridgeOptions<T>,
    counters: Arc<Counters>,
    runtime: tokio::runtime::Handle,
}

impl<T> Outbox<T>
where
    T: Codec + Clone + Send + Sync + 'static,
{
    /// Connects, as [`Bridge::connect`](crate::Bridge::connect) does (same options, same
    /// errors), without a bus yet.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it completes, nothing is left behind.
    pub async fn connect(url: &str, options: BridgeOptions<T>) -> Result<Self, BridgeError> {
        options.validate()?;
        let counters = Arc::new(Counters::default());
        let (client, js) = connect_client(url, &options, Arc::clone(&counters)).await?;
        Ok(Outbox {
            inner: Arc::new(OutboxInner {
                js,
                client,
                options,
                counters,
                runtime: tokio::runtime::Handle::current(),
            }),
        })
    }

    /// A handler exporting every message of the topic it is subscribed to, on the subject
    /// the prefix and the mapping function give. One per subscription.
    pub fn handler(&self) -> OutboxHandler<T> {
        OutboxHandler {
            inner: Arc::clone(&self.inner),
            nonce: crate::export::export_nonce(),
            next: 0,
        }
    }

    /// The counters so far (`exported`, `export_duplicates`, `export_retries`,
    /// `export_failed`, the connection's events).
    pub fn stats(&self) -> BridgeStats {
        self.inner.counters.snapshot()
    }

    /// The JetStream context it publishes with (to create the stream, say).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// The NATS client it uses.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }
}

impl<T> fmt::Debug for Outbox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("stats", &self.inner.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// The handler of an [`Outbox`]: subscribe it in the bus's builder.
pub struct OutboxHandler<T> {
    inner: Arc<OutboxInner<T>>,
    nonce: String,
    next: u64,
}

impl<T> fmt::Debug for OutboxHandler<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxHandler").finish_non_exhaustive()
    }
}

impl<T> OutboxHandler<T>
where
    T: Codec + Clone + Send + Sync + 'static,
{
    fn fail(&self, error: ExportError<T>) {
        Counters::add(&self.inner.counters.export_failed, 1);
        (self.inner.options.on_export_failure)(error);
    }

    /// Publishes and waits for the acknowledgement, retrying until the export timeout.
    fn send(&mut self, subject: String, payload: Bytes, msg: &T) {
        let id = format!("{}-{}", self.nonce, self.next);
        self.next += 1;
        let inner = &self.inner;
        let (ack_timeout, timeout) = (inner.options.ack_timeout, inner.options.export_timeout);
        let first = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let js = &inner.js;
            let result = inner.runtime.block_on(async {
                let ack = tokio::time::timeout(
                    ack_timeout,
                    js.publish_with_headers(subject.clone(), headers, payload.clone()),
                )
                .await
                .map_err(|_| "timed out queueing the publish".to_owned())?
                .map_err(|e| e.to_string())?;
                ack.await.map_err(|e| e.to_string())
            });
            match result {
                Ok(ack) => {
                    Counters::add(&inner.counters.exported, 1);
                    if ack.duplicate {
                        Counters::add(&inner.counters.export_duplicates, 1);
                    }
                    return;
                }
                Err(reason) if first.elapsed() >= timeout => {
                    return self.fail(ExportError::TimedOut {
                        msg: msg.clone(),
                        timeout,
                        attempts,
                        reason,
                    });
                }
                Err(reason) => {
                    tracing::debug!(%reason, %subject, "shardbus-nats: outbox retry");
                    Counters::add(&inner.counters.export_retries, 1);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

impl<T> Handler<T> for OutboxHandler<T>
where
    T: Codec + Clone + Send + Sync + 'static,
{
    fn handle(&mut self, ctx: &mut Context<'_, T>, msg: &T) {
        let options = &self.inner.options;
        let subject = options.subject_for(ctx.topic(), msg);
        if let Err(reason) = crate::subject::check_literal(&subject) {
            let msg = msg.clone();
            return self.fail(ExportError::InvalidSubject {
                msg,
                subject,
                reason,
            });
        }
        let mut buf = Vec::new();
        if let Err(error) = msg.encode(&mut buf) {
            let msg = msg.clone();
            return self.fail(ExportError::Encode { msg, error });
        }
        let max = self.inner.client.server_info().max_payload;
        if buf.len() > max {
            let (msg, size) = (msg.clone(), buf.len());
            return self.fail(ExportError::PayloadTooLarge { msg, size, max });
        }
        self.send(subject, Bytes::from(buf), msg);
    }
}
