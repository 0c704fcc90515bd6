//! [`Bridge`]: one NATS connection serving one bus; [`Link`]: a running export or import.

use crate::export::{Route, StreamSource};
use crate::pattern::{Handoff, PatternActor, PatternSource};
use crate::stats::Counters;
use crate::{BridgeError, BridgeOptions, BridgeStats};
use async_nats::jetstream;
use shardbus::{Bus, Codec, Supervision};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How an export delivers to NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Core NATS: at most once. A message is exported once the client has queued it on
    /// the connection; a server that is down or a subscriber that is slow can lose it.
    Core,
    /// JetStream: at least once. Each message waits for the stream's acknowledgement
    /// (a window of them in flight, [`BridgeOptions::max_in_flight`]); one without an
    /// acknowledgement is sent again with the same message id (`Nats-Msg-Id`), so the
    /// stream's duplicate window drops the copy, until the export timeout, and then goes
    /// back to the export-failure handler. A stream must capture the subjects (see
    /// [`Bridge::ensure_stream`]).
    ///
    /// Order: messages are sent in the topic's order, and so stored while nothing fails.
    /// A retry is sent after the publishes already in the window, so with a window above
    /// one a message that needed a retry is stored behind later messages of the same
    /// subject. Where strict per-key order across a retry matters, set
    /// [`BridgeOptions::max_in_flight`]`(1)` (one round trip per message).
    JetStream,
}

/// What an export takes from the local bus: one topic, or every topic matching a
/// pattern. A `&str` or `String` converts to [`Local::Topic`]; name a pattern with
/// [`Local::pattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Local {
    /// Every message published on this topic.
    Topic(String),
    /// Every message published on every topic matching this pattern (NATS syntax, as
    /// [`Bus::subscribe_pattern`] takes it: `*` one token, a final `>` one or more),
    /// the topics that exist when the export starts and those first published later.
    /// Each topic goes to its own subject: the prefix and the topic's name, or what the
    /// mapping function returns for it.
    Pattern(String),
}

impl Local {
    /// [`Local::Pattern`]: every topic matching `pattern`.
    pub fn pattern(pattern: impl Into<String>) -> Self {
        Local::Pattern(pattern.into())
    }
}

impl From<&str> for Local {
    fn from(topic: &str) -> Self {
        Local::Topic(topic.to_owned())
    }
}

impl From<String> for Local {
    fn from(topic: String) -> Self {
        Local::Topic(topic)
    }
}

/// A bridge between one shardbus [`Bus`] and one NATS server (or cluster): one
/// connection, any number of exports (local topic → NATS subjects) and imports (NATS
/// subject → local topic), each a task on the tokio runtime that
/// [`connect`](Self::connect) ran on.
///
/// Dropping the bridge stops nothing: each [`Link`] runs until it is stopped or dropped,
/// the bus shuts down, or the connection is closed.
pub struct Bridge<T> {
    pub(crate) inner: Arc<Inner<T>>,
}

pub(crate) struct Inner<T> {
    pub(crate) bus: Arc<Bus<T>>,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) options: BridgeOptions<T>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl<T> Bridge<T>
where
    T: Codec + Clone + Send + Sync + 'static,
{
    /// Connects to the server at `url` (`nats://127.0.0.1:4222`, or `host:port`) for
    /// `bus`. [`BridgeError::Connect`] when the server does not answer within the connect
    /// timeout; [`BridgeError::InvalidOption`] or [`BridgeError::InvalidSubject`] for
    /// options out of range. After the first connection the client reconnects on its own
    /// for as long as the bridge lives (counted in [`BridgeStats::disconnects`] and
    /// [`BridgeStats::reconnects`]).
    ///
    /// Must be called inside a tokio runtime: the exports and imports run on it.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it completes, nothing is left behind: the connection attempt is
    /// dropped with it.
    pub async fn connect(
        url: &str,
        bus: Arc<Bus<T>>,
        options: BridgeOptions<T>,
    ) -> Result<Self, BridgeError> {
        options.validate()?;
        let counters = Arc::new(Counters::default());
        let (client, js) = connect_client(url, &options, Arc::clone(&counters)).await?;
        Ok(Bridge {
            inner: Arc::new(Inner {
                bus,
                client,
                js,
                options,
                counters,
                runtime: tokio::runtime::Handle::current(),
            }),
        })
    }

    /// Starts exporting every message published on `local` to NATS, on the subject the
    /// prefix and the mapping function give, with `delivery`'s guarantee.
    ///
    /// A topic export is a stream subscription on the bus ([`Bus::subscribe_stream`],
    /// with [`BridgeOptions::stream_capacity`]): it sees messages published after this
    /// call. While the server is slow or away, the stream fills, then its overflow, then
    /// the bus's dead-letter handler takes what still comes (`StreamFull`, counted in the
    /// bus's stats): the bus never waits for NATS.
    ///
    /// A pattern export ([`Local::Pattern`]) is a pattern subscription on the bus
    /// ([`Bus::subscribe_pattern`]): one actor on each matching topic's shard, existing
    /// topics and later ones, each cloning its messages into one hand-off of
    /// [`BridgeOptions::stream_capacity`] messages shared by all the pattern's topics,
    /// which the export task drains. A message that finds the hand-off full is not
    /// waited for either: it goes to the export-failure handler
    /// ([`ExportError::Overflow`](crate::ExportError::Overflow), counted in
    /// [`BridgeStats::export_overflow`] and `export_failed`); that handler then runs on
    /// the shard thread. Per-topic order is as for a topic export: sent in order, stored in
    /// order unless a JetStream retry reorders (see [`Delivery::JetStream`]).
    /// Stopping the link ends the pattern subscription (on every shard) and sends what
    /// the hand-off holds. An invalid pattern is [`BridgeError::Bus`] with
    /// [`shardbus::Error::InvalidSubject`].
    pub fn export(&self, local: impl Into<Local>, delivery: Delivery) -> Result<Link, BridgeError> {
        let options = &self.inner.options;
        let (prefix, mapped) = (options.prefix.as_str(), options.subject.is_some());
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::clone(&self.inner);
        let task = match local.into() {
            Local::Topic(topic) => {
                let stream = self
                    .inner
                    .bus
                    .subscribe_stream(topic.as_str(), options.stream_capacity)?;
                let route = Route::new(prefix, mapped, &topic);
                let source = StreamSource {
                    stream,
                    bus: Arc::clone(&self.inner.bus),
                };
                self.inner.runtime.spawn(async move {
                    crate::export::run(inner, route, source, delivery, stopped).await;
                })
            }
            Local::Pattern(pattern) => {
                let capacity = options.stream_capacity;
                let (tx, rx) = tokio::sync::mpsc::channel(capacity);
                let shared = Arc::new(Handoff::new(
                    Arc::clone(&self.inner.counters),
                    Arc::clone(&options.on_export_failure),
                    prefix.to_owned(),
                    mapped,
                    capacity,
                ));
                let handoff = Arc::clone(&shared);
                let id =
                    self.inner
                        .bus
                        .subscribe_pattern(&pattern, Supervision::Resume, move || PatternActor {
                            tx: tx.clone(),
                            shared: Arc::clone(&handoff),
                            route: None,
                        })?;
                let _ = shared.pattern.set(id);
                let source = PatternSource {
                    rx,
                    end: Some(crate::pattern::ender(Arc::clone(&self.inner.bus), id)),
                    runtime: self.inner.runtime.clone(),
                };
                // Never used: every message of a pattern comes with its topic's route.
                let route = Route::new(prefix, mapped, &pattern);
                self.inner.runtime.spawn(async move {
                    crate::export::run(inner, route, source, delivery, stopped).await;
                })
            }
        };
        Ok(Link::new(stop, task))
    }

    /// Starts importing core NATS messages on `subject` (wildcards allowed) into the
    /// local `topic`: at most once. Returns once the server has the subscription (a
    /// [`round_trip`](crate::round_trip) on the bridge's connection, waiting at most the
    /// connect timeout): a message published on any connection after that is imported.
    /// Each payload is decoded with the bus's codec (one
    /// that does not decode goes to the dead-letter handler with its raw bytes) and
    /// published with [`Publisher::publish_async`](shardbus::Publisher::publish_async),
    /// which waits while the bus is full; meanwhile the client buffers up to
    /// [`BridgeOptions::subscription_capacity`] messages and then drops, counting a
    /// slow-consumer event. A payload that a persistent bus refuses because it does not
    /// encode for the log goes to the dead-letter handler too
    /// ([`ImportFailure::Encode`](crate::ImportFailure::Encode)); only a closed bus ends the
    /// import.
    ///
    /// Errors: [`BridgeError::InvalidSubject`] for a subject NATS would refuse, a topic
    /// error from the bus ([`BridgeError::Bus`]), [`BridgeError::Nats`] when the client
    /// cannot subscribe or the server does not answer the round trip in time.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it completes, no import runs; a subscription already made is
    /// dropped with it (the client unsubscribes).
    pub async fn import(&self, subject: &str, topic: &str) -> Result<Link, BridgeError> {
        crate::subject::filter(subject)?;
        let topic = self.inner.bus.topic(topic)?;
        let sub = self
            .inner
            .client
            .subscribe(subject.to_owned())
            .await
            .map_err(|e| BridgeError::nats("subscribe", e))?;
        // `subscribe` returns once the client has queued the SUB; a publish elsewhere
        // before the server has it would not be delivered to it.
        crate::round_trip(&self.inner.client, self.inner.options.connect_timeout).await?;
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::clone(&self.inner);
        let task = self.inner.runtime.spawn(async move {
            crate::import::run_core(inner, sub, topic, stopped).await;
        });
        Ok(Link::new(stop, task))
    }

    /// Starts importing from a durable JetStream pull consumer (created if missing) into
    /// the local topic: at least once. A message is acknowledged only once the bus has
    /// taken responsibility for it. The import publishes up to [`BridgeOptions::ack_batch`]
    /// messages (what the consumer has ready), then waits, and acknowledges them once
    /// every subscriber of the topic has handled them ([`Bus::flush`]), and with a
    /// persistent bus also only once their records are committed to the log
    /// ([`Publisher::wait_durable`](shardbus::Publisher::wait_durable), one group commit
    /// for the batch). Both, because the log's replay after a crash reaches only builder
    /// subscriptions: a subscriber added at run time has the message only once it has
    /// handled it. A crash before the acknowledgement means redelivery, never loss; the
    /// consumer's `max_ack_pending` bounds what the server sends ahead.
    ///
    /// A payload that does not decode, or that a persistent bus refuses because it does
    /// not encode for the log, goes to the dead-letter handler
    /// ([`ImportFailure`](crate::ImportFailure)) and is terminated (`AckKind::Term`): not
    /// redelivered; the import goes on. Only a closed bus ends the import.
    ///
    /// Order: one import per consumer. Messages come in stream order and are published
    /// into the bus in that order, so per-subject order holds as long as nothing is
    /// redelivered. A consumer found with deliveries still unacknowledged (its previous
    /// owner crashed) would redeliver those after its ack wait, behind newer messages;
    /// so the import deletes and recreates it to start again at its ack floor (counted in
    /// [`BridgeStats::import_rewinds`]): what the previous owner handled but did not
    /// acknowledge comes again, in order. Stop the previous owner before starting a new
    /// one ([`Link::stop`] acknowledges what it handled); two live imports on one
    /// consumer share its messages and keep no order. `ack_wait` must exceed the time the
    /// bus takes to handle `max_ack_pending` messages, or the server redelivers early.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it completes, no import runs; the durable consumer may have been
    /// created (or rewound) on the server already, which loses nothing: the next import
    /// resumes it.
    pub async fn import_jetstream(&self, spec: JetStreamImport) -> Result<Link, BridgeError> {
        crate::subject::filter(&spec.filter_subject)?;
        let topic = self.inner.bus.topic(spec.topic.as_str())?;
        let messages = crate::import::open_consumer(&self.inner, &spec).await?;
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::clone(&self.inner);
        let task = self.inner.runtime.spawn(async move {
            crate::import::run_jetstream(inner, messages, topic, stopped).await;
        });
        Ok(Link::new(stop, task))
    }

    /// Imports this process's partitions of a partitioned subject space: one
    /// [`import_jetstream`](Self::import_jetstream) per partition `p` of `partitions`,
    /// from the durable consumer `<stream>-p<p>` filtered on `<base>.<p>.*`, into `topic`.
    /// The server maps `<base>.<key>` onto `<base>.<partition>.<key>` (see
    /// [`partition_mapping`](crate::partition_mapping)), so each key stays in one
    /// partition and keeps its order. Moving a partition to another process: stop its
    /// link here and import the same partition there; the durable consumer resumes after
    /// the last acknowledged message.
    ///
    /// # Cancel safety
    ///
    /// As [`import_jetstream`](Self::import_jetstream); the imports started before the
    /// drop are stopped with their [`Link`]s.
    pub async fn import_partitions(
        &self,
        stream: &str,
        base: &str,
        partitions: impl IntoIterator<Item = u32>,
        topic: &str,
        configure: impl Fn(JetStreamImport) -> JetStreamImport,
    ) -> Result<Vec<Link>, BridgeError> {
        let mut links = Vec::new();
        for p in partitions {
            let spec = JetStreamImport::new(
                stream,
                format!("{stream}-p{p}"),
                format!("{base}.{p}.*"),
                topic,
            );
            links.push(self.import_jetstream(configure(spec)).await?);
        }
        Ok(links)
    }

    /// Creates the JetStream stream `name` capturing `subjects` if it does not exist
    /// (file storage, a two-minute duplicate window for the exports' retries).
    ///
    /// # Cancel safety
    ///
    /// Dropped before it completes, the stream may or may not have been created.
    pub async fn ensure_stream(&self, name: &str, subjects: &[&str]) -> Result<(), BridgeError> {
        for s in subjects {
            crate::subject::filter(s)?;
        }
        self.inner
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: name.to_owned(),
                subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
                storage: jetstream::stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| BridgeError::nats("create stream", e))?;
        Ok(())
    }

    /// The counters so far.
    pub fn stats(&self) -> BridgeStats {
        self.inner.counters.snapshot()
    }

    /// The NATS client the bridge uses (for requests of your own, or to flush).
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The JetStream context the bridge uses.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// The server's `max_payload`, as it announced it on connecting.
    pub fn max_payload(&self) -> usize {
        self.inner.client.server_info().max_payload
    }
}

impl<T> fmt::Debug for Bridge<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("options", &self.inner.options)
            .field("stats", &self.inner.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// Connects the client (counting its events into `counters`) and makes the JetStream
/// context, within the connect timeout.
pub(crate) async fn connect_client<T>(
    url: &str,
    options: &BridgeOptions<T>,
    counters: Arc<Counters>,
) -> Result<(async_nats::Client, jetstream::Context), BridgeError> {
    let timeout = options.connect_timeout;
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(timeout)
        .subscription_capacity(options.subscription_capacity)
        .max_reconnects(None)
        .event_callback(move |event| {
            let c = Arc::clone(&counters);
            async move {
                match event {
                    async_nats::Event::Connected => Counters::add(&c.connects, 1),
                    async_nats::Event::Disconnected => Counters::add(&c.disconnects, 1),
                    async_nats::Event::SlowConsumer(_) => Counters::add(&c.slow_consumer_events, 1),
                    other => tracing::warn!(event = %other, "shardbus-nats: client event"),
                }
            }
        })
        .connect(url);
    let failed = |reason: String| BridgeError::Connect {
        url: url.to_owned(),
        timeout,
        reason,
    };
    let client = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(_) => return Err(failed("timed out".to_owned())),
    };
    let js = jetstream::context::ContextBuilder::new()
        .timeout(options.ack_timeout)
        .ack_timeout(options.ack_timeout)
        .build(client.clone());
    Ok((client, js))
}

/// A durable JetStream consumer to import from: [`Bridge::import_jetstream`].
#[derive(Debug, Clone)]
pub struct JetStreamImport {
    pub(crate) stream: String,
    pub(crate) durable: String,
    pub(crate) filter_subject: String,
    pub(crate) topic: String,
    pub(crate) max_ack_pending: i64,
    pub(crate) ack_wait: Duration,
}

impl JetStreamImport {
    /// Imports from the durable consumer `durable` of `stream` (created with an explicit
    /// ack policy if missing), filtered on `filter_subject`, into the local `topic`.
    pub fn new(
        stream: impl Into<String>,
        durable: impl Into<String>,
        filter_subject: impl Into<String>,
        topic: impl Into<String>,
    ) -> Self {
        Self {
            stream: stream.into(),
            durable: durable.into(),
            filter_subject: filter_subject.into(),
            topic: topic.into(),
            max_ack_pending: 1024,
            ack_wait: Duration::from_secs(30),
        }
    }

    /// The most messages the server sends ahead unacknowledged (the import's
    /// back-pressure towards the server). Default 1024. Applies when the consumer is
    /// created.
    pub fn max_ack_pending(mut self, n: i64) -> Self {
        self.max_ack_pending = n;
        self
    }

    /// How long the server waits for an acknowledgement before it redelivers (after a
    /// crash of the importing process, say). Default 30 s. Applies when the consumer is
    /// created.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }
}

/// A running export or import. [`stop`](Self::stop) ends it cleanly; dropping it asks it
/// to stop without waiting; [`abort`](Self::abort) ends it at once, as a crash would (a
/// JetStream import's unacknowledged messages are then redelivered after the consumer's
/// ack wait).
#[derive(Debug)]
#[must_use = "dropping a Link stops its export or import"]
pub struct Link {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Link {
    fn new(stop: watch::Sender<bool>, task: JoinHandle<()>) -> Self {
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops and waits for the task to end. An export first ends its subscription on
    /// the bus (waiting for the shards; messages published after that go to the topic's
    /// other subscribers, or the bus's dead-letter handler), then sends what its stream
    /// or hand-off holds and waits for the acknowledgements in flight. That final drain
    /// is bounded whatever publishers keep doing: it sends for at most one export timeout
    /// (what is left then goes to the export-failure handler as
    /// [`ExportError::TimedOut`](crate::ExportError::TimedOut)), and each acknowledgement
    /// waited for is bounded by the export timeout too. An import acknowledges what the
    /// bus has taken and flushes the acknowledgements to the server.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it completes, the task has been asked to stop and finishes on its
    /// own.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Ends the task at once, acknowledging nothing more. An export's messages not yet
    /// sent (in its stream, or a pattern export's hand-off) are dropped with it; a
    /// pattern export's subscription is ended from a blocking thread (and by the first
    /// of its actors that finds the task gone).
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Whether the task has ended (stopped, or its bus or connection closed).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
