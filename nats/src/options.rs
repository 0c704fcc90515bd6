//! [`BridgeOptions`]: the subject prefix and mapping, the window, the timeouts and the
//! handlers for what cannot be delivered.

use crate::{BridgeError, ExportError};
use bytes::Bytes;
use shardbus::{DecodeError, EncodeError};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The largest [`BridgeOptions::stream_capacity`]: the bus's largest stream subscription
/// (2^30, as [`Bus::subscribe_stream`](shardbus::Bus::subscribe_stream) takes).
pub const MAX_STREAM: usize = 1 << 30;
/// The largest [`BridgeOptions::subscription_capacity`] (2^24 messages).
pub const MAX_SUBSCRIPTION: usize = 1 << 24;
/// The largest [`BridgeOptions::ack_batch`] (2^16 messages; the batch is allocated up front).
pub const MAX_ACK_BATCH: usize = 1 << 16;

/// Maps a local topic and message to the subject after the prefix.
pub(crate) type SubjectFn<T> = Arc<dyn Fn(&str, &T) -> String + Send + Sync>;
pub(crate) type ExportFailureFn<T> = Arc<dyn Fn(ExportError<T>) + Send + Sync>;
type DeadLetterFn = Arc<dyn Fn(ImportDeadLetter) + Send + Sync>;

/// An imported payload that the bus cannot take: it does not decode with the bus's codec,
/// or the bus refused the decoded message because it does not encode for the log. Given
/// to the handler set with [`BridgeOptions::on_dead_letter`] with its raw bytes, and
/// counted in [`BridgeStats::dead_letters`](crate::BridgeStats::dead_letters). The import
/// goes on with the next message (a JetStream message is terminated, so it is not
/// redelivered).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ImportDeadLetter {
    /// The NATS subject it arrived on.
    pub subject: String,
    /// The payload, as received.
    pub payload: Bytes,
    /// Why the bus could not take it.
    pub error: ImportFailure,
}

/// Why an imported payload went to the dead-letter handler: [`ImportDeadLetter::error`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ImportFailure {
    /// The payload does not decode with the bus's codec.
    #[error("does not decode: {0}")]
    Decode(DecodeError),
    /// The payload decoded, but a persistent bus refused the message: its codec cannot
    /// encode it for the log ([`PublishError::Encode`](shardbus::PublishError::Encode)).
    #[error("decodes, but does not encode for the bus's log: {0}")]
    Encode(EncodeError),
}

/// How a [`Bridge`](crate::Bridge) names subjects, how much it keeps in flight, how long
/// it waits, and where what it cannot deliver goes. `BridgeOptions::default()` then the
/// setters; [`Bridge::connect`](crate::Bridge::connect) validates them.
pub struct BridgeOptions<T> {
    pub(crate) prefix: String,
    pub(crate) subject: Option<SubjectFn<T>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) export_timeout: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) stream_capacity: usize,
    pub(crate) ack_batch: usize,
    pub(crate) subscription_capacity: usize,
    pub(crate) on_export_failure: ExportFailureFn<T>,
    pub(crate) on_dead_letter: DeadLetterFn,
}

impl<T> Default for BridgeOptions<T> {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            subject: None,
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 256,
            export_timeout: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(5),
            stream_capacity: 4096,
            ack_batch: 256,
            subscription_capacity: 8192,
            on_export_failure: Arc::new(|e: ExportError<T>| {
                tracing::error!(error = %e, "shardbus-nats: a message was not exported");
            }),
            on_dead_letter: Arc::new(|d: ImportDeadLetter| {
                tracing::error!(subject = %d.subject, error = %d.error, len = d.payload.len(),
                    "shardbus-nats: an imported payload does not decode");
            }),
        }
    }
}

impl<T> BridgeOptions<T> {
    /// The subject prefix: an export of topic `orders` goes to `<prefix>.orders` (or
    /// `<prefix>.` followed by what the mapping function returns). Empty (the default):
    /// no prefix. Imports name their subjects in full.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The mapping function: the subject (after the prefix) that a message published on a
    /// local topic is exported to. The default is the topic's name. It sees the message,
    /// so a key can go into the subject (`orders.<customer>`), which is what the server's
    /// partitioning maps on (see `docs/scale-out.md`). A subject it returns that is not a
    /// valid literal subject fails that message's export with
    /// [`ExportError::InvalidSubject`].
    pub fn subject_fn(mut self, f: impl Fn(&str, &T) -> String + Send + Sync + 'static) -> Self {
        self.subject = Some(Arc::new(f));
        self
    }

    /// How long [`Bridge::connect`](crate::Bridge::connect) waits for the server before
    /// [`BridgeError::Connect`]. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The window of a JetStream export: at most this many publishes awaiting their
    /// acknowledgement at once; the export waits for the oldest before it sends more.
    /// Default 256.
    ///
    /// A publish that is retried goes behind the others in the window, so above one a
    /// retry can store a message after later ones of its subject. `1` keeps strict
    /// per-subject (per-key) order across retries, at one round trip per message.
    pub fn max_in_flight(mut self, window: usize) -> Self {
        self.max_in_flight = window;
        self
    }

    /// How long an export keeps trying one message (JetStream: retries after a missing
    /// acknowledgement; core: waiting for room in the client's queue while the server is
    /// unreachable) before it gives the message to the export-failure handler. Default 30 s.
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = timeout;
        self
    }

    /// How long a JetStream publish waits for its acknowledgement before it is sent again
    /// (with the same message id, so the stream drops the duplicate). Default 5 s.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// The capacity of the local stream subscription behind each export (a power of two,
    /// at least 2): what the bus holds for an export that waits on the server before the
    /// overflow and then the bus's dead-letter handler take over (counted in the bus's
    /// stats). For a pattern export, the capacity of its one hand-off from all its
    /// topics' shards to the export task (then [`ExportError::Overflow`]). Default 4096;
    /// at most [`MAX_STREAM`](crate::MAX_STREAM) (2^30).
    pub fn stream_capacity(mut self, capacity: usize) -> Self {
        self.stream_capacity = capacity;
        self
    }

    /// The most JetStream messages an import publishes into the bus before it waits for
    /// them to be handled (or committed) and acknowledges them together. Default 256; from 1
    /// to [`MAX_ACK_BATCH`](crate::MAX_ACK_BATCH) (2^16).
    pub fn ack_batch(mut self, batch: usize) -> Self {
        self.ack_batch = batch;
        self
    }

    /// The buffer of each core NATS import subscription in the client, in messages; when
    /// it is full (the bus is slower than the subject), the client drops for it and the
    /// bridge counts a slow-consumer event. Default 8192; from 1 to
    /// [`MAX_SUBSCRIPTION`](crate::MAX_SUBSCRIPTION) (2^24).
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity;
        self
    }

    /// Where a message goes that an export cannot deliver, with the reason: given back.
    /// The default logs it (at `error`) and drops it.
    pub fn on_export_failure(mut self, f: impl Fn(ExportError<T>) + Send + Sync + 'static) -> Self {
        self.on_export_failure = Arc::new(f);
        self
    }

    /// Where an imported payload goes that does not decode, with its raw bytes. The
    /// default logs it (at `error`).
    pub fn on_dead_letter(mut self, f: impl Fn(ImportDeadLetter) + Send + Sync + 'static) -> Self {
        self.on_dead_letter = Arc::new(f);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BridgeError> {
        let invalid = |option, reason: &str| {
            Err(BridgeError::InvalidOption {
                option,
                reason: reason.to_owned(),
            })
        };
        if !self.prefix.is_empty() {
            crate::subject::literal(&self.prefix)?;
        }
        if self.max_in_flight == 0 {
            return invalid("max_in_flight", "must be at least 1");
        }
        if self.ack_batch == 0 || self.ack_batch > MAX_ACK_BATCH {
            return invalid("ack_batch", &format!("must be from 1 to {MAX_ACK_BATCH}"));
        }
        if self.subscription_capacity == 0 || self.subscription_capacity > MAX_SUBSCRIPTION {
            let reason = format!("must be from 1 to {MAX_SUBSCRIPTION}");
            return invalid("subscription_capacity", &reason);
        }
        if self.stream_capacity < 2
            || !self.stream_capacity.is_power_of_two()
            || self.stream_capacity > MAX_STREAM
        {
            let reason = format!("must be a power of two from 2 to {MAX_STREAM}");
            return invalid("stream_capacity", &reason);
        }
        if self.connect_timeout.is_zero() || self.ack_timeout.is_zero() {
            return invalid("timeouts", "must not be zero");
        }
        Ok(())
    }

    /// The full subject a message on `topic` is exported to.
    pub(crate) fn subject_for(&self, topic: &str, msg: &T) -> String {
        match &self.subject {
            Some(f) => self.prefixed(f(topic, msg)),
            None => self.subject_for_topic(topic),
        }
    }

    /// The full subject of `topic` without a mapping function.
    pub(crate) fn subject_for_topic(&self, topic: &str) -> String {
        self.prefixed(topic.to_owned())
    }

    fn prefixed(&self, tail: String) -> String {
        prefixed(&self.prefix, tail)
    }
}

/// `<prefix>.<tail>`, or `tail` for an empty prefix.
pub(crate) fn prefixed(prefix: &str, tail: String) -> String {
    if prefix.is_empty() {
        tail
    } else {
        format!("{prefix}.{tail}")
    }
}

impl<T> fmt::Debug for BridgeOptions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeOptions")
            .field("prefix", &self.prefix)
            .field("subject_fn", &self.subject.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("export_timeout", &self.export_timeout)
            .field("ack_timeout", &self.ack_timeout)
            .field("stream_capacity", &self.stream_capacity)
            .field("ack_batch", &self.ack_batch)
            .field("subscription_capacity", &self.subscription_capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::{BridgeOptions, MAX_ACK_BATCH, MAX_STREAM, MAX_SUBSCRIPTION};
    use crate::BridgeError;

    /// The option `validate` refuses, or `None` if it accepts.
    fn refused(options: BridgeOptions<Vec<u8>>) -> Option<&'static str> {
        match options.validate() {
            Ok(()) => None,
            Err(BridgeError::InvalidOption { option, .. }) => Some(option),
            Err(e) => panic!("not an InvalidOption: {e}"),
        }
    }

    /// Values that would panic or abort later (a channel too large for tokio, an
    /// allocation of the whole batch up front) are refused with a typed error; the bounds
    /// themselves are accepted.
    #[test]
    fn upper_bounds_are_typed_errors() {
        let o = BridgeOptions::<Vec<u8>>::default;
        assert_eq!(refused(o()), None);
        assert_eq!(refused(o().stream_capacity(MAX_STREAM)), None);
        assert_eq!(
            refused(o().stream_capacity(MAX_STREAM * 2)),
            Some("stream_capacity")
        );
        assert_eq!(
            refused(o().stream_capacity(1 << 62)),
            Some("stream_capacity")
        );
        assert_eq!(refused(o().subscription_capacity(MAX_SUBSCRIPTION)), None);
        assert_eq!(
            refused(o().subscription_capacity(MAX_SUBSCRIPTION + 1)),
            Some("subscription_capacity")
        );
        assert_eq!(
            refused(o().subscription_capacity(usize::MAX)),
            Some("subscription_capacity")
        );
        assert_eq!(refused(o().ack_batch(MAX_ACK_BATCH)), None);
        assert_eq!(refused(o().ack_batch(MAX_ACK_BATCH + 1)), Some("ack_batch"));
        assert_eq!(refused(o().ack_batch(usize::MAX)), Some("ack_batch"));
        assert_eq!(refused(o().ack_batch(0)), Some("ack_batch"));
    }
}
