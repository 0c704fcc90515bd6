//! The import tasks: core NATS subscriptions and durable JetStream consumers, decoded
//! with the bus's codec and published into a local topic.

use crate::bridge::{Inner, JetStreamImport};
use crate::stats::Counters;
use crate::{BridgeError, ImportDeadLetter, ImportFailure};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::AckKind;
use futures_util::{FutureExt, StreamExt};
use shardbus::{Codec, PublishError, Publisher, Topic};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Decodes a payload, or hands it to the dead-letter handler.
fn decode<T: Codec>(inner: &Inner<T>, subject: &str, payload: &bytes::Bytes) -> Option<T> {
    match T::decode(payload) {
        Ok(v) => Some(v),
        Err(error) => {
            dead_letter(inner, subject, payload, ImportFailure::Decode(error));
            None
        }
    }
}

/// Counts a payload the bus cannot take and hands it to the dead-letter handler.
fn dead_letter<T>(inner: &Inner<T>, subject: &str, payload: &bytes::Bytes, error: ImportFailure) {
    Counters::add(&inner.counters.dead_letters, 1);
    (inner.options.on_dead_letter)(ImportDeadLetter {
        subject: subject.to_owned(),
        payload: payload.clone(),
        error,
    });
}

pub(crate) async fn run_core<T>(
    inner: Arc<Inner<T>>,
    mut sub: async_nats::Subscriber,
    topic: Topic,
    mut stopped: watch::Receiver<bool>,
) where
    T: Codec + Clone + Send + Sync + 'static,
{
    let mut publisher = inner.bus.publisher();
    // Made once: a fresh `changed()` per message would register with the watch channel's
    // notifier (a lock) and deregister again every time.
    let mut stop = std::pin::pin!(stopped.changed());
    'run: loop {
        let msg = tokio::select! {
            biased;
            _ = &mut stop => break,
            msg = sub.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        if !import_one(&inner, &mut publisher, topic, msg).await {
            break;
        }
        // What the client has buffered already comes in without another round through
        // the select, up to a bound (then the stop gets its turn).
        for _ in 1..DRAIN {
            match sub.next().now_or_never() {
                Some(Some(msg)) => {
                    if !import_one(&inner, &mut publisher, topic, msg).await {
                        break 'run;
                    }
                }
                Some(None) => break 'run,
                None => break,
            }
        }
    }
    let _ = sub.unsubscribe().await;
}

/// The most messages a core import takes from its subscription in one turn of its loop.
const DRAIN: usize = 64;

/// Decodes one core message and publishes it into the bus: `false` if the bus refused it
/// because it is closed, which ends the import. A message the bus refuses for itself (it
/// does not encode for the log) is a dead letter, and the import goes on.
async fn import_one<T>(
    inner: &Inner<T>,
    publisher: &mut Publisher<T>,
    topic: Topic,
    msg: async_nats::Message,
) -> bool
where
    T: Codec + Send + 'static,
{
    let Some(value) = decode(inner, msg.subject.as_str(), &msg.payload) else {
        return true;
    };
    match publisher.publish_async(topic, value).await {
        Ok(()) => {
            Counters::add(&inner.counters.imported, 1);
            true
        }
        Err(PublishError::Encode { error, .. }) => {
            let subject = msg.subject.as_str();
            dead_letter(inner, subject, &msg.payload, ImportFailure::Encode(error));
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "shardbus-nats: the bus refused an import");
            Counters::add(&inner.counters.import_refused, 1);
            false
        }
    }
}

pub(crate) type Messages = pull::Stream;

/// How often a rewind tries to create the consumer again after deleting it, and the pause
/// between tries.
const REWIND_ATTEMPTS: u32 = 5;
const REWIND_PAUSE: Duration = Duration::from_millis(200);

/// Opens (creating if missing) the durable pull consumer and its message stream.
pub(crate) async fn open_consumer<T>(
    inner: &Inner<T>,
    spec: &JetStreamImport,
) -> Result<Messages, BridgeError> {
    let stream = inner
        .js
        .get_stream(&spec.stream)
        .await
        .map_err(|e| BridgeError::nats("get stream", e))?;
    let config = pull::Config {
        durable_name: Some(spec.durable.clone()),
        filter_subject: spec.filter_subject.clone(),
        ack_policy: AckPolicy::Explicit,
        max_ack_pending: spec.max_ack_pending,
        ack_wait: spec.ack_wait,
        ..Default::default()
    };
    let mut consumer: PullConsumer = stream
        .get_or_create_consumer(&spec.durable, config.clone())
        .await
        .map_err(|e| BridgeError::nats("create consumer", e))?;
    // Taking over: messages delivered to a previous owner and not acknowledged would be
    // redelivered only after the ack wait, behind newer ones, which breaks per-key order.
    // So the consumer is recreated to deliver again from its ack floor, in order (what was
    // acknowledged above the floor comes again: a duplicate, never a loss).
    let info = consumer
        .info()
        .await
        .map_err(|e| BridgeError::nats("consumer info", e))?;
    if info.num_ack_pending > 0 || info.num_waiting > 0 {
        let start_sequence = info.ack_floor.stream_sequence + 1;
        Counters::add(&inner.counters.import_rewinds, 1);
        tracing::info!(durable = %spec.durable, start_sequence, pending = info.num_ack_pending,
            "shardbus-nats: taking over a consumer with unacknowledged deliveries; rewinding");
        stream
            .delete_consumer(&spec.durable)
            .await
            .map_err(|e| BridgeError::nats("delete consumer", e))?;
        // Delete then create is not atomic: the create is retried (a short outage, a
        // leader election) before the error goes back. Should it still fail, the consumer
        // is gone; the next import creates it afresh, which starts at the stream's first
        // message (DeliverPolicy::All): duplicates, never a loss.
        let rewound = pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence },
            ..config
        };
        let mut attempt = 1;
        consumer = loop {
            match stream.create_consumer(rewound.clone()).await {
                Ok(consumer) => break consumer,
                Err(e) if attempt >= REWIND_ATTEMPTS => {
                    return Err(BridgeError::nats("create consumer (rewind)", e));
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, durable = %spec.durable,
                        "shardbus-nats: recreating a rewound consumer failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(REWIND_PAUSE).await;
                }
            }
        };
    }
    consumer
        .stream()
        .max_messages_per_batch(inner.options.ack_batch)
        .heartbeat(Duration::from_secs(1))
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| BridgeError::nats("consume", e))
}

pub(crate) async fn run_jetstream<T>(
    inner: Arc<Inner<T>>,
    mut messages: Messages,
    topic: Topic,
    mut stopped: watch::Receiver<bool>,
) where
    T: Codec + Clone + Send + Sync + 'static,
{
    let mut publisher = inner.bus.publisher();
    let persistent = inner.bus.is_persistent();
    let mut batch = Vec::with_capacity(inner.options.ack_batch);
    let mut taken = Vec::with_capacity(inner.options.ack_batch);
    'run: loop {
        let first = tokio::select! {
            _ = stopped.changed() => break,
            msg = messages.next() => msg,
        };
        match first {
            None => break,
            Some(Err(e)) => {
                // Missed heartbeats, a lost connection: the client goes on pulling.
                tracing::debug!(error = %e, "shardbus-nats: JetStream consume error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Some(Ok(m)) => batch.push(m),
        }
        while batch.len() < inner.options.ack_batch {
            match messages.next().now_or_never() {
                Some(Some(Ok(m))) => batch.push(m),
                _ => break,
            }
        }
        for m in batch.drain(..) {
            if m.info().is_ok_and(|i| i.delivered > 1) {
                Counters::add(&inner.counters.import_redelivered, 1);
            }
            let Some(value) = decode(&inner, m.subject.as_str(), &m.payload) else {
                // Never redelivered: the dead-letter handler has it.
                let _ = m.ack_with(AckKind::Term).await;
                continue;
            };
            match publisher.publish_async(topic, value).await {
                Ok(()) => {
                    Counters::add(&inner.counters.imported, 1);
                    taken.push(m);
                }
                Err(PublishError::Encode { error, .. }) => {
                    let failure = ImportFailure::Encode(error);
                    dead_letter(&inner, m.subject.as_str(), &m.payload, failure);
                    // Never redelivered: the dead-letter handler has it.
                    let _ = m.ack_with(AckKind::Term).await;
                }
                Err(e) => {
                    // Not acknowledged: redelivered after the ack wait.
                    tracing::warn!(error = %e, "shardbus-nats: the bus refused an import");
                    Counters::add(&inner.counters.import_refused, 1);
                    break 'run;
                }
            }
        }
        publisher = confirm_and_ack(&inner, publisher, persistent, &mut taken).await;
    }
    confirm_and_ack(&inner, publisher, persistent, &mut taken).await;
    // The acknowledgements are queued on the connection: out to the server before the
    // stop returns, so a clean stop leaves none pending.
    if let Err(e) = inner.client.flush().await {
        tracing::warn!(error = %e, "shardbus-nats: could not flush the final acknowledgements");
    }
}

/// Waits until the bus has taken responsibility for everything this import published so
/// far, then acknowledges `taken`: once every subscriber has handled it
/// ([`Bus::flush`](shardbus::Bus::flush)), and on a persistent bus also once it is
/// committed to the log ([`Publisher::wait_durable`]) before that. If the bus cannot say
/// (it failed or is closing with a failed log), acknowledges nothing: the server
/// redelivers.
async fn confirm_and_ack<T>(
    inner: &Arc<Inner<T>>,
    publisher: Publisher<T>,
    persistent: bool,
    taken: &mut Vec<async_nats::jetstream::Message>,
) -> Publisher<T>
where
    T: Send + Sync + 'static,
{
    if taken.is_empty() {
        return publisher;
    }
    let bus = Arc::clone(&inner.bus);
    let confirmed = tokio::task::spawn_blocking(move || {
        let mut publisher = publisher;
        // Committed (a persistent bus: the replay after a crash gives the records to the
        // builder's subscriptions), and handled by every subscriber (also those subscribed
        // at run time, which the replay does not reach).
        let durable = !persistent || publisher.wait_durable().is_ok();
        let ok = durable && bus.flush().is_ok();
        (publisher, ok)
    })
    .await;
    let (publisher, ok) = match confirmed {
        Ok(done) => done,
        // The blocking task panicked (it does not): a fresh publisher, nothing acked.
        Err(_) => (inner.bus.publisher(), false),
    };
    if !ok {
        tracing::warn!("shardbus-nats: the bus could not confirm the imports; not acknowledged");
        taken.clear();
        return publisher;
    }
    for m in taken.drain(..) {
        if m.ack().await.is_ok() {
            Counters::add(&inner.counters.import_acked, 1);
        }
    }
    publisher
}
