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
//! Every other piece of user code a shard thread runs is contained the same way: a panic
//! in `on_start`, `on_stop`, a supervision factory, the dead-letter handler, the `Drop` of
//! a message or an actor, or (persistent buses) the codec's `encode` or `decode` is
//! caught, counted by where it happened ([`ShardStats::panic_sites`]), reported where
//! there is a message to report (a message whose `encode` panicked is dead-lettered with
//! [`DeadLetterReason::EncodePanicked`]), and the shard goes on; a panic in `decode` at
//! replay fails `build()` with [`Error::Decode`]. Nothing of it panics a caller's thread,
//! and `shutdown()` still returns.
//!
//! # Guarantees
//!
//! - Messages from one [`Publisher`] (or one thread using [`Bus::publish`], or one
//!   actor) to one topic are handled in publish order, by every subscriber.
//! - Every accepted message is handled, or dead-lettered, or (after a deadline
//!   shutdown) dropped and counted; each is dropped exactly once. A publish that is not
//!   accepted gives the message back in its error.
//! - [`Bus::subscribe`] returns after the subscription is live.
//!   ([`Bus::subscribe_supervised`] returns [`Error::NotStarted`] instead if the actor's
//!   `on_start` panicked and its policy ended the subscription there.)
//! - A graceful [`Bus::shutdown`] also handles what actors publish from `on_stop`; no
//!   handler runs after [`Bus::shutdown_timeout`] returns, except the call in progress on
//!   a shard it reports in [`ShutdownReport::in_call`].
//! - A message whose publish returned before [`Bus::subscribe`] was called does not reach
//!   that subscriber, and one whose publish returned before [`Bus::unsubscribe`] does,
//!   through [`Bus::publish`] and a [`Publisher`] alike.
//!
//! # Async publishing
//!
//! [`Publisher::publish_async`], [`Bus::publish_async`] and their durable forms
//! ([`Publisher::publish_durable_async`], [`Bus::publish_durable_async`]) return futures
//! that wait for room in a full lane or inbox (or for the commit) without blocking the
//! thread; any executor runs them (std `Waker`, no runtime dependency). With room, they
//! cost what the blocking publish costs. Each method's docs say what cancelling does.
//!
//! # Ending a bus
//!
//! [`Bus::shutdown`] takes the bus by value. A bus shared in an `Arc` is ended through
//! `&self` with [`Bus::close`] (drains, stops, returns the final statistics; later
//! publishes get `Closed` with their message back). [`Bus::flush`] waits, without
//! shutting down, until every message published before the call is handled (for tests
//! and benchmarks). [`Bus::shutdown_background`] closes intake and returns at once,
//! leaving the drain to a background thread: for threads that must not block. A bus that
//! is just dropped drains on the dropping thread for a bounded time (see [`Bus`],
//! "Drop").
//!
//! # Calling the bus from a handler
//!
//! A handler runs on its shard's thread, and a shard does nothing else while it runs. So a
//! handler uses the forms on its [`Context`] that never wait: [`Context::publish`] (what
//! does not fit waits in the shard's overflow queue), and [`Context::subscribe`],
//! [`Context::subscribe_supervised`] and
//! [`Context::unsubscribe`], which send the change and return the id at once (the
//! [`Context`] docs say when it takes effect). A blocking [`Bus`] call made on a shard
//! thread of the same bus that would wait for the shards is refused instead of hanging:
//! [`Bus::subscribe`] and its kin and [`Bus::unsubscribe`] return
//! [`Error::WouldDeadlock`]; [`Bus::publish`] (and [`Publisher::publish`]) publishes while
//! there is room and returns [`PublishError::WouldDeadlock`] with the message rather than
//! wait for room; [`Bus::publish_durable`] returns [`DurableError::WouldDeadlock`] with the
//! message. A handler may call into another bus: those calls block as usual.
//!
//! # Streams: consuming outside the bus
//!
//! [`Bus::subscribe_stream`] subscribes a [`MessageStream`]: the topic's messages (clones)
//! for a consumer outside the bus, as a `futures_core::Stream`, with
//! [`MessageStream::recv_async`] in async code or [`MessageStream::recv`] on a thread. The
//! shard never waits for a slow consumer: what the stream's channel and overflow cannot
//! hold goes to the dead-letter handler ([`DeadLetterReason::StreamFull`]).
//!
//! # Subjects and patterns
//!
//! Topic names are subjects, `.`-separated tokens. [`Bus::subscribe_pattern`] (and its
//! [`Builder`] and [`Context`] forms) subscribes a [`Pattern`] in NATS syntax (`*` one
//! token, a final `>` one or more): every matching topic, existing or first published
//! later, gets an actor from the pattern's factory on the topic's own shard, so per-topic
//! order and the per-message cost are a plain subscriber's. A shard matches a topic
//! against its patterns once, when it first learns the topic or the pattern. A name
//! published to must be a plain subject: no `*` or `>` token, no empty token, no
//! whitespace or control character (`InvalidTopic`, with the message back).
//!
//! # Keyed partitions: one hot topic on every shard
//!
//! A topic lives on one shard. [`Bus::subscribe_partitioned`] spreads one over all of them:
//! a factory builds one actor instance per partition (the bus's fixed count,
//! [`Builder::partitions`]), and [`Bus::publish_keyed`] (and its kin on [`Publisher`] and
//! [`Context`], in every form) sends each message to its key's partition: same key, same
//! instance, publish order. Each instance is supervised and counted on its own
//! ([`PartitionedSubscription::stats`]); a persistent bus replays each record to its
//! partition, also after a shard-count change. [`Bus::partitioned_topic`] resolves one
//! once ([`PartitionedTopic`]).
//!
//! # Request-reply
//!
//! A message can carry a [`Reply`], a one-shot handle for its answer. [`Bus::request`]
//! builds the message around a fresh handle, publishes it and blocks until a handler
//! answers with [`Reply::send`]; [`Bus::request_async`] is the same as a future, for any
//! executor. Either gives up after its timeout ([`RequestError::TimedOut`]), and learns at
//! once, not at the timeout, when the handle is dropped unanswered (a handler that
//! panicked, a dead-lettered message, one dropped at shutdown: [`RequestError::NoReply`]).
//! A request allocates one small one-shot channel. The async form's deadline is served by
//! a timer thread of the library's own (one per process, started on first use), because
//! the library depends on no runtime; see [`Bus::request_async`].
//!
//! ```
//! use shardbus::{Bus, Context, Reply};
//! use std::time::Duration;
//!
//! enum Msg {
//!     Add(u32, u32, Reply<u32>),
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::<Msg>::builder().shards(1).build()?;
//! bus.subscribe("adder", |_: &mut Context<'_, Msg>, Msg::Add(a, b, reply): &Msg| {
//!     let _ = reply.send(a + b);
//! })?;
//! let sum = bus.request("adder", |reply| Msg::Add(2, 3, reply), Duration::from_secs(5))?;
//! assert_eq!(sum, 5);
//! # Ok(()) }
//! ```
//!
//! # In the host process
//!
//! A bus shares its process with the application, and two of its defaults reach beyond
//! its own threads.
//!
//! **Pinning.** Each shard thread is pinned to a core of its own: by default the free
//! cores of the process's affinity mask in ascending order, skipping cores that another
//! live bus of the process holds and, while whole physical cores remain, the SMT siblings
//! of held cores; shards beyond the free cores run unpinned, never two on one core. A
//! core is free again when the shard thread on it ends. [`Builder::cores`] gives the set
//! instead (validated against the mask), [`Builder::pin_threads`]`(false)` pins nothing;
//! [`ShardStats::core`] shows where each shard ended up. With a spinning
//! [`WaitStrategy`], give the bus no more shards than cores it may keep busy.
//!
//! **Fences.** By default ([`Fences::SeqCst`]) a publish pays a `fence(SeqCst)` and nothing
//! the bus does reaches other threads. [`Fences::Membarrier`] (or [`Fences::Auto`]: where
//! the kernel offers it) makes a publish pay only a compiler fence, by registering the
//! process for `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (once; it cannot be undone).
//! The price is paid by the whole process: each time a shard of such a bus is about to
//! park, and each time one of its lanes closes, every CPU running a thread of the process
//! at that moment (the application's threads too) takes an inter-processor interrupt, a
//! few microseconds each (more in a virtual machine), and a lightly loaded shard rarely
//! gets to sleep. Measured (`docs/benchmarks.md`, "Fences"): membarrier moves about 1.3×
//! the messages a second at saturation, and costs the serving shard 1.8–3× the CPU at
//! light load for the same latency; hence the default. [`Bus::fence_mode`] says what a
//! bus got, and the environment variable `SHARDBUS_NO_MEMBARRIER`, set at `build()`,
//! forces SeqCst fences as an operator's override. Where membarrier is unavailable,
//! `Auto` falls back to SeqCst fences; a heavy fence that fails at run time falls back
//! too, and never aborts the process.

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
//!
//! # Beyond one process
//!
//! The companion crate `shardbus-nats` (in the repository's `nats/`) bridges a bus to a
//! NATS server: local topics exported to subjects and subjects imported into topics, with
//! the bus's [`Codec`] on the wire, over core NATS or JetStream, and partitioned scale-out
//! across processes with per-key order; see `docs/scale-out.md`.
//!
//! # Features
//!
//! None is on by default.
//!
//! - `serde`: `Serialize`/`Deserialize` on the public plain-data types: [`Stats`],
//!   [`ShardStats`], [`HandlerTime`], [`ShutdownReport`], [`Supervision`],
//!   [`WaitStrategy`], [`FsyncPolicy`], [`RetentionLimit`], [`OnShardCountChange`],
//!   [`log::Seq`], [`log::IoOp`], [`log::CorruptReason`].
//! - `postcard` (implies `serde`): `PostcardCodec`, a [`Codec`] for serde message types in
//!   the [postcard](https://docs.rs/postcard) format.
//! - `test-util`: the log's engine and the `SimStorage` test double (simulated power loss,
//!   injected faults) for tests, benchmarks and fuzzing. Not a stable API.
//! - `metrics`: each shard's counters, gauges and log timings through the `metrics`
//!   facade (below).
//!
//! # Metrics and traces
//!
//! With the `metrics` cargo feature, every shard exports its counters and gauges (the
//! values of [`ShardStats`]: received, handled, unrouted, dead letters, panics, restarts,
//! stopped subscriptions, dropped, queue depth and high water) and, on a persistent bus,
//! the bytes appended to its log, the log's size and a histogram of its `fdatasync` times,
//! through the [`metrics`](https://docs.rs/metrics) facade, labelled `bus`
//! ([`Builder::metrics_label`]) and `shard`. The shard sends what changed once per 64 busy
//! passes, when it goes idle and when it stops, never per message; once `shutdown` has
//! returned the exported counters equal the final [`Stats`]. Install the recorder of your
//! exporter before building the bus: the shards register their series at `build()`.
//!
//! Rare events are reported through [`tracing`](https://docs.rs/tracing), never per
//! message: spans around each shard thread, recovery, resharding, replay and shutdown, and
//! events for supervision restarts and stops, a failed log, messages dropped by a deadline
//! shutdown, and the shutdown's outcome. `docs/operations.md` lists every series, span and
//! event, and what the export costs.

#![warn(missing_docs)]
// The rings become public (undocumented, hidden) only for the loom models.
#![cfg_attr(shardbus_loom, allow(missing_docs, unnameable_types))]
#![deny(clippy::undocumented_unsafe_blocks)]
// No type outside the documented API is reachable from it (a `pub` type in a private module
// handed out by a public item); the one exception, the sealed `ToTopic`'s supertrait, says so.
#![warn(unnameable_types)]

mod builder;
mod bus;
mod codec;
mod cores;
mod crc;
mod error;
mod fences;
mod handler;
mod inbox;
mod intern;
pub mod log;
mod metrics;
mod os;
mod outbox;
mod partition;
mod pattern;
mod persist;
mod publisher;
mod request;
mod ring;
mod route;
mod shard;
mod shared;
mod shutdown;
mod stats;
mod stream;
mod subject;
mod supervise;
mod sync;
mod topic;
mod wait;

pub use builder::{Builder, MAX_SHARDS};
pub use bus::{Bus, ShutdownReport, STOP_GRACE};
#[cfg(feature = "postcard")]
pub use codec::PostcardCodec;
pub use codec::{Codec, DecodeError, EncodeError};
pub use error::RequestError;
pub use error::{DurableError, Error, PublishError, TryPublishError};
pub use fences::{FenceMode, Fences};
pub use handler::{Context, DeadLetter, DeadLetterReason, Handler, SubscriptionId, Supervision};
pub use log::{FsyncPolicy, LogError, RetentionLimit};
pub use partition::{
    PartitionStats, PartitionedSubscription, PartitionedTopic, DEFAULT_PARTITIONS, MAX_PARTITIONS,
};
pub use persist::{OnShardCountChange, Persistence, DEFAULT_RETENTION_BYTES};
pub use publisher::Publisher;
pub use request::Reply;
pub use route::MAX_PARTITIONED_TOPIC_LEN;
pub use route::{ShardId, MAX_TOPIC_LEN};
pub use stats::{HandlerTime, PanicSites, ShardStats, Stats};
pub use stream::{MessageStream, RecvFuture};
pub use subject::{Pattern, SubjectError};
pub use topic::{ToTopic, Topic};
pub use wait::WaitStrategy;

#[doc(hidden)]
pub use cores::{__cores_in_use, __plan_cores};
#[doc(hidden)]
pub use sync::{__fence_mode, __fence_mode_for};

/// The rings themselves, exposed only to the loom models (`loom-tests/`), which check
/// their real code.
#[cfg(shardbus_loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::inbox::DurableMark;
    pub use crate::ring::{mpsc, spsc, PushError};
    /// A subscriber stream's two ends and their wake-up handshake (`stream.rs`).
    pub mod stream {
        pub use crate::stream::{channel, Popped, Receiver, SendError, Sender, Sent};
    }
}

// The README's example, compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
mod readme_doctests {}
