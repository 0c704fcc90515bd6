//! Error types.
//!
//! Hot-path errors ([`PublishError`], [`TryPublishError`]) give the message back, and
//! their `Debug` does not require `T: Debug`. Setup errors are one [`Error`] enum;
//! storage errors are [`LogError`] (inside [`Error::Log`]), whose distinct
//! [`LogError::Corrupt`] carries the file and byte offset of damage.

use std::fmt;
use std::path::PathBuf;

use crate::codec::EncodeError;
use crate::log::{LogError, Seq};

/// An error from building the bus or from a control operation (subscribe, unsubscribe).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was asked for zero shards.
    #[error("shard count must be at least 1")]
    ZeroShards,
    /// More shards were requested than the runtime supports.
    #[error("shard count {requested} exceeds the maximum of {max}")]
    TooManyShards {
        /// The requested count.
        requested: usize,
        /// The largest count accepted.
        max: usize,
    },
    /// An inbox, lane or stream capacity that is zero, not a power of two, or too large.
    #[error("{what} capacity {capacity} must be a power of two between 2 and {max}")]
    InvalidCapacity {
        /// Which capacity (`"inbox"` or `"lane"`; `"stream"` from
        /// [`Bus::subscribe_stream`](crate::Bus::subscribe_stream)).
        what: &'static str,
        /// The rejected value.
        capacity: usize,
        /// The largest value accepted.
        max: usize,
    },
    /// A partition count ([`Builder::partitions`](crate::Builder::partitions)) of zero or
    /// above [`MAX_PARTITIONS`](crate::MAX_PARTITIONS).
    #[error("partition count {requested} must be between 1 and {max}")]
    InvalidPartitions {
        /// The requested count.
        requested: usize,
        /// The largest count accepted.
        max: usize,
    },
    /// A topic name that is empty or longer than [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN) bytes.
    #[error("invalid topic name (length {len}): topic names are 1..={max} bytes")]
    InvalidTopic {
        /// The byte length of the rejected name.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },
    /// A subscription id that this bus did not hand out.
    #[error("unknown subscription {0:?}")]
    UnknownSubscription(crate::SubscriptionId),
    /// A topic name or pattern that is not a valid subject (see [`Pattern`](crate::Pattern)):
    /// a wildcard token in a name published or subscribed to as a plain topic, an empty
    /// token, whitespace, or a `>` that is not a pattern's last token.
    #[error("invalid subject {name:?}: {reason}")]
    InvalidSubject {
        /// The rejected name or pattern.
        name: String,
        /// What is wrong with it.
        reason: crate::SubjectError,
    },
    /// The bus is shutting down or has shut down.
    #[error("the bus is closed")]
    Closed,
    /// The persistent log failed: bad or damaged files (a distinct
    /// [`LogError::Corrupt`] with the file and byte offset), an I/O error with its path,
    /// an unusable directory.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The bus directory is in use: another bus, in this process or another, holds its
    /// lock ([`Storage::lock_dir`](crate::log::Storage::lock_dir); on the real filesystem
    /// a `flock` on the file `lock` in it). A persistent bus holds it from `build()` until
    /// its shards have stopped; nothing was read or written. Build again once that bus is
    /// shut down or its process has exited.
    #[error(
        "the bus directory {} is in use by another bus (its lock is held)",
        path.display()
    )]
    DirectoryLocked {
        /// The bus directory ([`Persistence::dir`](crate::Persistence::dir)).
        path: PathBuf,
    },
    /// The bus directory was written with another shard count and the bus was built with
    /// [`OnShardCountChange::Error`](crate::OnShardCountChange::Error).
    #[error("the log directory holds {found} shards but the bus was built with {expected}")]
    ShardCountMismatch {
        /// The shard count recorded in the directory.
        found: usize,
        /// The shard count of the bus being built.
        expected: usize,
    },
    /// A record to replay does not decode as the bus's message type (or its topic is not
    /// a valid topic name). Nothing is skipped: the bus does not start.
    #[error("record {seq} in {} does not decode: {source}", path.display())]
    Decode {
        /// The shard log directory.
        path: PathBuf,
        /// The record's sequence number.
        seq: Seq,
        /// What the codec said.
        #[source]
        source: crate::DecodeError,
    },
    /// A core given to [`Builder::cores`](crate::Builder::cores) is not in the process's
    /// CPU affinity mask, so no thread of the process may run on it.
    #[error("core {core} is not in this process's CPU affinity mask {allowed:?}")]
    CoreNotAllowed {
        /// The core refused.
        core: usize,
        /// The cores the process may run on.
        allowed: Vec<usize>,
    },
    /// A core is listed twice in [`Builder::cores`](crate::Builder::cores).
    #[error("core {core} is listed twice in the builder's core set")]
    DuplicateCore {
        /// The core listed twice.
        core: usize,
    },
    /// The bus was built with [`Fences::Membarrier`](crate::Fences::Membarrier) and this
    /// process cannot use `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: another OS, a
    /// kernel before 4.14, or a seccomp filter that refuses the call. Build with
    /// [`Fences::Auto`](crate::Fences::Auto) to fall back to SeqCst fences instead.
    #[error("membarrier is unavailable: {source}")]
    MembarrierUnavailable {
        /// What the kernel said (or `Unsupported` off Linux).
        #[source]
        source: std::io::Error,
    },
    /// A subscription ended before its first message: its actor's `on_start` panicked
    /// (caught and counted in [`PanicSites::on_start`](crate::PanicSites::on_start)) and its
    /// [`Supervision`](crate::Supervision) policy ended it (`Stop`, or `Restart` whose
    /// fresh actor failed to start too). Under `Resume` the actor is kept and subscribing
    /// succeeds.
    #[error("subscription {0:?} ended before its first message: its actor did not start")]
    NotStarted(crate::SubscriptionId),
    /// The rings the configuration asks for need more memory than the machine has (RAM
    /// plus swap, where the OS tells), or their allocation failed: `bytes` is what they
    /// would take, shards × (inbox capacity × inbox slot + (shards − 1) × lane capacity
    /// × lane slot); see [`Builder::capacity`](crate::Builder::capacity). Nothing was
    /// started.
    #[error("the bus's rings need {bytes} bytes, more than this machine can give")]
    OutOfMemory {
        /// The bytes the rings would take.
        bytes: u64,
    },
    /// A shard thread could not be spawned.
    #[error("could not spawn shard thread {shard}: {source}")]
    Spawn {
        /// The shard whose thread failed to start.
        shard: usize,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A blocking call ([`Bus::subscribe`](crate::Bus::subscribe) and its kin,
    /// [`Bus::unsubscribe`](crate::Bus::unsubscribe)) made on a shard thread of the same
    /// bus, from a handler: it would wait for shards, its own among them, that cannot go
    /// on while it waits. Nothing was done. A handler uses the non-blocking forms on its
    /// [`Context`](crate::Context) ([`Context::subscribe`](crate::Context::subscribe),
    /// [`Context::unsubscribe`](crate::Context::unsubscribe)) instead.
    #[error(
        "a blocking bus call from a handler on one of the bus's own shard threads would deadlock"
    )]
    WouldDeadlock,
    /// The shard thread name prefix of [`Builder::thread_name`](crate::Builder::thread_name)
    /// does not fit: the longest name, `"{prefix}-{index}"` for the last shard, must be at
    /// most 15 bytes (Linux's limit; a longer one is cut or refused by the OS), and the
    /// prefix must not contain a NUL byte.
    #[error("shard thread name {name:?} is invalid: at most {max} bytes and no NUL byte")]
    InvalidThreadName {
        /// The longest name the prefix would give (the last shard's).
        name: String,
        /// The longest name accepted, in bytes.
        max: usize,
    },
}

/// The error of a blocking publish: the bus is closed, the topic is invalid, or the
/// message does not encode; from a handler ([`Context::publish`](crate::Context::publish)),
/// also its shard's overflow queue is full. The message is given back.
#[derive(PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum PublishError<T> {
    /// The bus is shutting down or has shut down; the message was not accepted.
    Closed(T),
    /// The topic name is empty or longer than [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN).
    /// Also a name that is not a plain subject (see [`Pattern`](crate::Pattern)): a `*`
    /// or `>` token, an empty token, whitespace ([`Bus::topic`](crate::Bus::topic) says
    /// which, with [`Error::InvalidSubject`](crate::Error::InvalidSubject)).
    InvalidTopic(T),
    /// Persistent bus: the message's [`Codec`](crate::Codec) cannot encode it, so it could
    /// never be logged; it was not accepted (see [`Codec::CAN_FAIL`](crate::Codec::CAN_FAIL)).
    Encode {
        /// The message.
        msg: T,
        /// What the codec said.
        error: EncodeError,
    },
    /// The target's inbox (or lane) is full and the call was made on a shard thread of the
    /// same bus, from a handler: waiting for room would wait for shards, its own among
    /// them, that cannot drain while it waits. The message was not accepted. A handler
    /// publishes with [`Context::publish`](crate::Context::publish), which never waits.
    WouldDeadlock(T),
    /// [`Context::publish`](crate::Context::publish) only: the target shard's lane is full
    /// and the publishing shard's overflow queue holds
    /// [`overflow_limit`](crate::Builder::overflow_limit) messages already; the message
    /// was not accepted. Counted in [`ShardStats::overflow_refused`](crate::ShardStats).
    /// (A blocking publish from outside the bus waits instead.)
    Full(T),
}

/// The error of a non-blocking publish. The message is given back.
#[derive(PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum TryPublishError<T> {
    /// The target inbox is full right now.
    Full(T),
    /// The bus is shutting down or has shut down; the message was not accepted.
    Closed(T),
    /// The topic name is empty or longer than [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN).
    /// Also a name that is not a plain subject (see [`Pattern`](crate::Pattern)): a `*`
    /// or `>` token, an empty token, whitespace ([`Bus::topic`](crate::Bus::topic) says
    /// which, with [`Error::InvalidSubject`](crate::Error::InvalidSubject)).
    InvalidTopic(T),
    /// Persistent bus: the message's [`Codec`](crate::Codec) cannot encode it; it was not
    /// accepted. See [`PublishError::Encode`].
    Encode {
        /// The message.
        msg: T,
        /// What the codec said.
        error: EncodeError,
    },
}

/// The error of [`Bus::publish_durable`](crate::Bus::publish_durable) and
/// [`Publisher::publish_durable`](crate::Publisher::publish_durable). Every variant but
/// `Unconfirmed` gives the message back: it was not accepted.
#[derive(PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum DurableError<T> {
    /// The bus is shutting down or has shut down, or the target shard's log has failed
    /// (see [`Bus::log_error`](crate::Bus::log_error)) and its intake is closed.
    Closed(T),
    /// The topic name is empty or longer than [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN).
    /// Also a name that is not a plain subject (see [`Pattern`](crate::Pattern)): a `*`
    /// or `>` token, an empty token, whitespace ([`Bus::topic`](crate::Bus::topic) says
    /// which, with [`Error::InvalidSubject`](crate::Error::InvalidSubject)).
    InvalidTopic(T),
    /// The bus was built without [`Builder::persist`](crate::Builder::persist).
    NotPersistent(T),
    /// The message's [`Codec`](crate::Codec) cannot encode it, so it could never be
    /// logged.
    Encode {
        /// The message.
        msg: T,
        /// What the codec said.
        error: EncodeError,
    },
    /// The message's record would be larger than the bus's
    /// [`max_record_size`](crate::Persistence::max_record_size), so it could never be
    /// logged (a plain `publish` of it is dead-lettered instead, with
    /// [`DeadLetterReason::NotLogged`](crate::DeadLetterReason::NotLogged)).
    TooLarge {
        /// The message.
        msg: T,
        /// The size its record would have: 26 bytes of framing, the topic, the encoded
        /// payload (see [`MIN_RECORD_LEN`](crate::log::MIN_RECORD_LEN)).
        size: u64,
        /// The largest record the log takes.
        max: u32,
    },
    /// The message was accepted, but the shard stopped before confirming its record
    /// durable: its log failed (an fsync error poisons it), or a deadline shutdown
    /// dropped it. The record may or may not be in the log; if it is, it is replayed at
    /// the next start. It was not handled in this process.
    Unconfirmed,
    /// The call was made on a shard thread of the same bus, from a handler: the shards
    /// confirm a record only between handlers, so it would wait for itself (or for a shard
    /// waiting for it). The message was not accepted.
    WouldDeadlock(T),
}

impl<T> DurableError<T> {
    /// Takes the message back, if it was not accepted.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = shardbus::Bus::<String>::builder().shards(1).build()?; // memory-only
    /// let err = bus.publish_durable("orders", "o-1".to_string()).unwrap_err();
    /// assert!(err.is_not_persistent());
    /// assert_eq!(err.into_inner().as_deref(), Some("o-1"));
    /// # Ok(()) }
    /// ```
    pub fn into_inner(self) -> Option<T> {
        match self {
            Self::Closed(t)
            | Self::InvalidTopic(t)
            | Self::NotPersistent(t)
            | Self::WouldDeadlock(t) => Some(t),
            Self::Encode { msg, .. } | Self::TooLarge { msg, .. } => Some(msg),
            Self::Unconfirmed => None,
        }
    }

    /// Whether the bus was closed (or the shard's log had failed) and the message was not
    /// accepted.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed(_))
    }

    /// Whether the topic name was invalid.
    pub fn is_invalid_topic(&self) -> bool {
        matches!(self, Self::InvalidTopic(_))
    }

    /// Whether the bus has no persistence.
    pub fn is_not_persistent(&self) -> bool {
        matches!(self, Self::NotPersistent(_))
    }

    /// Whether the message was accepted but never confirmed durable.
    pub fn is_unconfirmed(&self) -> bool {
        matches!(self, Self::Unconfirmed)
    }

    /// Whether the message did not encode, and what its codec said.
    pub fn encode_error(&self) -> Option<&EncodeError> {
        match self {
            Self::Encode { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the message's record would exceed the maximum record size.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }

    /// Whether the call was refused because it was made from a handler on one of the
    /// bus's own shard threads.
    pub fn is_would_deadlock(&self) -> bool {
        matches!(self, Self::WouldDeadlock(_))
    }
}

impl<T> fmt::Debug for DurableError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed(_) => f.write_str("Closed(..)"),
            Self::InvalidTopic(_) => f.write_str("InvalidTopic(..)"),
            Self::NotPersistent(_) => f.write_str("NotPersistent(..)"),
            Self::Encode { error, .. } => debug_encode(f, error),
            Self::TooLarge { size, max, .. } => f
                .debug_struct("TooLarge")
                .field("size", size)
                .field("max", max)
                .finish_non_exhaustive(),
            Self::Unconfirmed => f.write_str("Unconfirmed"),
            Self::WouldDeadlock(_) => f.write_str("WouldDeadlock(..)"),
        }
    }
}

impl<T> fmt::Display for DurableError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed(_) => f.write_str("publishing on a closed bus or a failed shard log"),
            Self::InvalidTopic(_) => f.write_str("invalid topic name"),
            Self::NotPersistent(_) => f.write_str("durable publish on a memory-only bus"),
            Self::Encode { error, .. } => write!(f, "the message does not encode: {error}"),
            Self::TooLarge { size, max, .. } => write!(
                f,
                "the message's record of {size} bytes exceeds the maximum record size of {max} bytes"
            ),
            Self::Unconfirmed => {
                f.write_str("the shard stopped before confirming the record durable")
            }
            Self::WouldDeadlock(_) => f.write_str(
                "a durable publish from a handler on one of the bus's own shards would deadlock",
            ),
        }
    }
}

impl<T> std::error::Error for DurableError<T> {}

impl<T> PublishError<T> {
    /// Takes the message back.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = shardbus::Bus::<String>::builder().shards(1).build()?;
    /// let err = bus.publish("", "o-1".to_string()).unwrap_err(); // an empty topic name
    /// assert!(err.is_invalid_topic());
    /// assert_eq!(err.into_inner(), "o-1");
    /// # Ok(()) }
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            Self::Closed(t) | Self::InvalidTopic(t) | Self::Encode { msg: t, .. } => t,
            Self::WouldDeadlock(t) => t,
            Self::Full(t) => t,
        }
    }

    /// Whether the publish was refused because it would have waited for room on one of
    /// the bus's own shard threads.
    pub fn is_would_deadlock(&self) -> bool {
        matches!(self, Self::WouldDeadlock(_))
    }

    /// Whether the bus was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed(_))
    }

    /// Whether a handler's publish met a full lane and a full overflow queue
    /// ([`PublishError::Full`]).
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }

    /// Whether the topic name was invalid.
    pub fn is_invalid_topic(&self) -> bool {
        matches!(self, Self::InvalidTopic(_))
    }

    /// Whether the message did not encode, and what its codec said.
    pub fn encode_error(&self) -> Option<&EncodeError> {
        match self {
            Self::Encode { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl<T> TryPublishError<T> {
    /// Takes the message back.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = shardbus::Bus::<u32>::builder().shards(1).build()?;
    /// let err = bus.try_publish("", 7).unwrap_err(); // an empty topic name
    /// assert!(err.is_invalid_topic() && !err.is_full());
    /// assert_eq!(err.into_inner(), 7);
    /// # Ok(()) }
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(t) | Self::Closed(t) | Self::InvalidTopic(t) => t,
            Self::Encode { msg, .. } => msg,
        }
    }

    /// Whether the inbox was full.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }

    /// Whether the bus was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed(_))
    }

    /// Whether the topic name was invalid.
    pub fn is_invalid_topic(&self) -> bool {
        matches!(self, Self::InvalidTopic(_))
    }

    /// Whether the message did not encode, and what its codec said.
    pub fn encode_error(&self) -> Option<&EncodeError> {
        match self {
            Self::Encode { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl<T> From<PublishError<T>> for TryPublishError<T> {
    fn from(e: PublishError<T>) -> Self {
        match e {
            PublishError::Closed(t) => Self::Closed(t),
            PublishError::InvalidTopic(t) => Self::InvalidTopic(t),
            PublishError::Encode { msg, error } => Self::Encode { msg, error },
            // It was refused because the target had no room.
            PublishError::WouldDeadlock(t) => Self::Full(t),
            PublishError::Full(t) => Self::Full(t),
        }
    }
}

/// `Debug` of an `Encode { msg, error }` variant without `T: Debug`.
pub(crate) fn debug_encode(f: &mut fmt::Formatter<'_>, error: &EncodeError) -> fmt::Result {
    f.debug_struct("Encode")
        .field("error", error)
        .finish_non_exhaustive()
}

impl<T> fmt::Debug for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed(_) => f.write_str("Closed(..)"),
            Self::InvalidTopic(_) => f.write_str("InvalidTopic(..)"),
            Self::Encode { error, .. } => debug_encode(f, error),
            Self::WouldDeadlock(_) => f.write_str("WouldDeadlock(..)"),
            Self::Full(_) => f.write_str("Full(..)"),
        }
    }
}

impl<T> fmt::Debug for TryPublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Closed(_) => f.write_str("Closed(..)"),
            Self::InvalidTopic(_) => f.write_str("InvalidTopic(..)"),
            Self::Encode { error, .. } => debug_encode(f, error),
        }
    }
}

impl<T> fmt::Display for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed(_) => f.write_str("publishing on a closed bus"),
            Self::InvalidTopic(_) => f.write_str("invalid topic name"),
            Self::Encode { error, .. } => write!(f, "the message does not encode: {error}"),
            Self::WouldDeadlock(_) => f.write_str(
                "publishing from a handler into a full inbox of the same bus would deadlock",
            ),
            Self::Full(_) => f.write_str("the lane and the shard's overflow queue are full"),
        }
    }
}

impl<T> fmt::Display for TryPublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("publishing into a full inbox"),
            Self::Closed(_) => f.write_str("publishing on a closed bus"),
            Self::InvalidTopic(_) => f.write_str("invalid topic name"),
            Self::Encode { error, .. } => write!(f, "the message does not encode: {error}"),
        }
    }
}

impl<T> std::error::Error for PublishError<T> {}
impl<T> std::error::Error for TryPublishError<T> {}

pub use crate::request::RequestError;
