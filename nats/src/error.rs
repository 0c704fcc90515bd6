//! The bridge's errors: [`BridgeError`] for setup and connections, [`ExportError`] for one
//! message that could not be exported (with the message given back).

use shardbus::EncodeError;
use std::fmt;
use std::time::Duration;

/// An error setting up or running the bridge: connecting, creating JetStream streams and
/// consumers, subscribing, or an invalid subject or option.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The server did not accept a connection within the connect timeout.
    #[error("cannot connect to NATS at {url} within {timeout:?}: {reason}")]
    Connect {
        /// The address that was tried.
        url: String,
        /// The connect timeout.
        timeout: Duration,
        /// Why the connection failed (the client's error, or "timed out").
        reason: String,
    },
    /// A subject is not a valid NATS subject (empty, an empty token, whitespace, or a
    /// wildcard where a literal subject is needed).
    #[error("invalid NATS subject {subject:?}: {reason}")]
    InvalidSubject {
        /// The subject as given.
        subject: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An option is out of range (a zero window, a stream capacity that is not a power
    /// of two, ...).
    #[error("invalid bridge option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The local bus refused the subscription behind an export.
    #[error("the local bus refused the export's subscription: {0}")]
    Bus(#[from] shardbus::Error),
    /// A NATS operation (subscribe, a JetStream API call) failed.
    #[error("NATS {operation} failed: {reason}")]
    Nats {
        /// What was being done.
        operation: &'static str,
        /// The client's or server's error.
        reason: String,
    },
}

impl BridgeError {
    pub(crate) fn nats(operation: &'static str, error: impl fmt::Display) -> Self {
        BridgeError::Nats {
            operation,
            reason: error.to_string(),
        }
    }
}

/// One message that an export could not hand to NATS, given back with the reason. An
/// export passes it to the handler set with
/// [`BridgeOptions::on_export_failure`](crate::BridgeOptions::on_export_failure) and
/// counts it in [`BridgeStats::export_failed`](crate::BridgeStats::export_failed).
///
/// `Debug` does not require `T: Debug`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ExportError<T> {
    /// The bus's codec refused the message.
    #[error("the codec cannot encode the message: {error}")]
    Encode {
        /// The message.
        msg: T,
        /// The codec's error.
        error: EncodeError,
    },
    /// The encoded message is larger than the server's `max_payload`.
    #[error("payload of {size} bytes is over the server's max_payload of {max} bytes")]
    PayloadTooLarge {
        /// The message.
        msg: T,
        /// Its encoded size.
        size: usize,
        /// The server's limit.
        max: usize,
    },
    /// The subject the mapping function made is not a valid literal subject.
    #[error("invalid subject {subject:?} for the message: {reason}")]
    InvalidSubject {
        /// The message.
        msg: T,
        /// The subject.
        subject: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server did not take the message (core NATS: the client could not queue it;
    /// JetStream: no acknowledgement) within the export timeout, retries included.
    #[error("not acknowledged within {timeout:?} ({attempts} attempts): {reason}")]
    TimedOut {
        /// The message.
        msg: T,
        /// The export timeout.
        timeout: Duration,
        /// How many times it was sent.
        attempts: u32,
        /// The last error.
        reason: String,
    },
    /// The server refused the message (for JetStream: no stream for the subject, say).
    #[error("the server refused the message: {reason}")]
    Refused {
        /// The message.
        msg: T,
        /// The server's or client's error.
        reason: String,
    },
    /// A pattern export's hand-off from the topics' shards to the export task was full
    /// (the server slower than the topics for longer than the hand-off holds): the shard
    /// does not wait, so the message goes here. Also counted in
    /// [`BridgeStats::export_overflow`](crate::BridgeStats::export_overflow).
    #[error("the pattern export's hand-off of {capacity} messages is full (topic {topic:?})")]
    Overflow {
        /// The message.
        msg: T,
        /// The local topic it was published on.
        topic: String,
        /// The hand-off's capacity.
        capacity: usize,
    },
    /// The export had ended (stopped, or its task aborted) when the message reached it.
    #[error("the export has ended (topic {topic:?})")]
    Ended {
        /// The message.
        msg: T,
        /// The local topic it was published on.
        topic: String,
    },
}

impl<T> ExportError<T> {
    /// The message that was not exported.
    pub fn into_inner(self) -> T {
        match self {
            ExportError::Encode { msg, .. }
            | ExportError::PayloadTooLarge { msg, .. }
            | ExportError::InvalidSubject { msg, .. }
            | ExportError::TimedOut { msg, .. }
            | ExportError::Refused { msg, .. }
            | ExportError::Overflow { msg, .. }
            | ExportError::Ended { msg, .. } => msg,
        }
    }

    /// The message, borrowed.
    pub fn msg(&self) -> &T {
        match self {
            ExportError::Encode { msg, .. }
            | ExportError::PayloadTooLarge { msg, .. }
            | ExportError::InvalidSubject { msg, .. }
            | ExportError::TimedOut { msg, .. }
            | ExportError::Refused { msg, .. }
            | ExportError::Overflow { msg, .. }
            | ExportError::Ended { msg, .. } => msg,
        }
    }
}

impl<T> fmt::Debug for ExportError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            ExportError::Encode { .. } => "Encode",
            ExportError::PayloadTooLarge { .. } => "PayloadTooLarge",
            ExportError::InvalidSubject { .. } => "InvalidSubject",
            ExportError::TimedOut { .. } => "TimedOut",
            ExportError::Refused { .. } => "Refused",
            ExportError::Overflow { .. } => "Overflow",
            ExportError::Ended { .. } => "Ended",
        };
        write!(f, "ExportError::{kind}({self})")
    }
}
