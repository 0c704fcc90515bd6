//! shardbus: a lock-free, sharded actor runtime for in-process messaging.
//!
//! Topics are hashed (ahash, fixed keys) onto shard threads, one per core, pinned.
//! Each shard drains lock-free rings, runs the actors subscribed to its topics and
//! supervises them. Nothing on the publish → handle path takes a lock or allocates.
//!
//! # Lifecycle
//!
//! Build, subscribe, publish, shut down:
//!
//! ```
//! use shardbus::{Bus, Context};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::<String>::builder().shards(2).build()?;
//!
//! let seen = Arc::new(AtomicUsize::new(0));
//! let counter = seen.clone();
//! bus.subscribe("greetings", move |ctx: &mut Context<'_, String>, msg: &String| {
//!     assert_eq!(ctx.topic(), "greetings");
//!     assert!(msg.starts_with("hello"));
//!     counter.fetch_add(1, Ordering::Relaxed);
//! })?;
//!
//! bus.publish("greetings", "hello, world".to_string())?;
//! let mut publisher = bus.publisher(); // private lanes, for a producer thread
//! publisher.publish("greetings", "hello again".to_string())?;
//!
//! let stats = bus.shutdown(); // drains everything accepted
//! assert_eq!(stats.handled(), 2);
//! assert_eq!(seen.load(Ordering::Relaxed), 2);
//! # Ok(()) }
//! ```
//!
//! Actors publish to other topics (on any shard) through their [`Context`]; a
//! [`Handler`] implementation owns its state and gets `on_start`/`on_stop`; a panic in
//! a handler is caught, counted, sent to the dead-letter handler and handled by the
//! subscription's [`Supervision`] policy.
//!
//! # Guarantees
//!
//! - Messages from one [`Publisher`] (or one thread using [`Bus::publish`], or one
//!   actor) to one topic are handled in publish order, by every subscriber.
//! - Every accepted message is handled, or dead-lettered, or (after a deadline
//!   shutdown) dropped and counted; each is dropped exactly once. A publish that is not
//!   accepted gives the message back in its error.
//! - [`Bus::subscribe`] returns after the subscription is live.
//! - A graceful [`Bus::shutdown`] also handles what actors publish from `on_stop`; no
//!   handler runs after [`Bus::shutdown_timeout`] returns, except the call in progress on
//!   a shard it reports in [`ShutdownReport::in_call`].

//!
//! # Persistence
//!
//! [`Builder::persist`] makes a bus write every message to its shard's log (module
//! [`log`]) before any handler sees it, with group commit; [`Bus::publish_durable`]
//! returns once the record is synced; `build()` replays what the handlers had not
//! finished to the builder's subscriptions ([`Builder::subscribe`]) before any new
//! message, with [`Context::is_replay`] set. See [`Persistence`] and
//! `docs/persistence.md` for the format and what each fsync policy promises.
//!
//! A publish that the log could not take is refused with the message back: one that its
//! [`Codec`] cannot encode ([`PublishError::Encode`]; see [`Codec::CAN_FAIL`]), and a
//! durable one whose record would exceed the maximum record size
//! ([`DurableError::TooLarge`]). A directory holds one bus at a time: a second bus on it
//! fails to build with [`Error::DirectoryLocked`].

#![warn(missing_docs)]
// The rings become public (undocumented, hidden) only for the loom models.
#![cfg_attr(shardbus_loom, allow(missing_docs))]
#![deny(clippy::undocumented_unsafe_blocks)]

mod builder;
mod bus;
mod codec;
mod crc;
mod error;
mod handler;
mod inbox;
mod intern;
pub mod log;
mod os;
mod outbox;
mod persist;
mod publisher;
mod ring;
mod route;
mod shard;
mod shared;
mod shutdown;
mod stats;
mod supervise;
mod sync;
mod topic;
mod wait;

pub use builder::{Builder, MAX_SHARDS};
pub use bus::{Bus, ShutdownReport, STOP_GRACE};
#[cfg(feature = "serde")]
pub use codec::SerdeCodec;
pub use codec::{Codec, DecodeError, EncodeError};
pub use error::{DurableError, Error, PublishError, TryPublishError};
pub use handler::{Context, DeadLetter, DeadLetterReason, Handler, SubscriptionId, Supervision};
pub use log::{FsyncPolicy, LogError, RetentionLimit};
pub use persist::{OnShardCountChange, Persistence, DEFAULT_RETENTION_BYTES};
pub use publisher::Publisher;
pub use route::{ShardId, MAX_TOPIC_LEN};
pub use stats::{HandlerTime, ShardStats, Stats};
pub use topic::{ToTopic, Topic};
pub use wait::WaitStrategy;

#[doc(hidden)]
pub use sync::__fence_mode;

/// The rings themselves, exposed only to the loom models (`loom-tests/`), which check
/// their real code.
#[cfg(shardbus_loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::ring::{mpsc, spsc, PushError};
}

// The README's example, compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
mod readme_doctests {}
