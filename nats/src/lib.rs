//! A bridge between [shardbus] topics and [NATS](https://nats.io) subjects, on
//! the official client, `async-nats`.
//!
//! - **Export** a local topic (or every topic matching a pattern) to NATS: every message published on it is encoded with the
//!   bus's [`Codec`](shardbus::Codec) and published on `<prefix>.<subject>`, where the
//!   subject comes from the mapping function ([`BridgeOptions::subject_fn`]; the topic's
//!   name by default). [`Delivery::Core`] is at most once; [`Delivery::JetStream`] is at
//!   least once, with a bounded window of acknowledgements in flight and retries under
//!   the same message id. A retry goes behind the rest of the window, so it can reorder a
//!   subject: [`BridgeOptions::max_in_flight`]`(1)` where strict per-key order across a
//!   retry matters.
//! - **Import** a NATS subject into a local topic: core NATS
//!   ([`Bridge::import`], at most once; in place at the server when it returns, see
//!   [`round_trip`]) or a durable JetStream consumer ([`Bridge::import_jetstream`], at
//!   least once), acknowledged only once the bus has taken responsibility for the message.
//! - **Partitioned scale-out**: the server maps `<base>.<key>` onto
//!   `<base>.<partition>.<key>` ([`partition_mapping`]) and each process imports its own
//!   partitions ([`Bridge::import_partitions`]), so per-key order survives across
//!   machines as it does across shards. See `docs/scale-out.md` in the repository.
//!
//! Nothing is dropped silently: what an export cannot deliver goes back to
//! [`BridgeOptions::on_export_failure`] with the message; what an import cannot decode
//! goes to [`BridgeOptions::on_dead_letter`] with the raw bytes; both are counted in
//! [`BridgeStats`], as are the client's slow-consumer events.
//!
//! ```no_run
//! use shardbus::Bus;
//! use shardbus_nats::{Bridge, BridgeOptions, Delivery};
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Arc::new(Bus::<Vec<u8>>::builder().shards(2).build()?);
//! let bridge = Bridge::connect("nats://127.0.0.1:4222", Arc::clone(&bus),
//!     BridgeOptions::default().prefix("app")).await?;
//! let _out = bridge.export("events", Delivery::Core)?;      // events → app.events
//! let _in = bridge.import("partners.>", "inbound").await?;  // partners.> → inbound
//! # Ok(()) }
//! ```
//!
//! - **Outbox**: for a persistent bus, [`Outbox`] is a JetStream export whose outbox is
//!   the bus's own log: its handler, a builder subscription, returns only once JetStream
//!   acknowledged the message or the export timeout passed (the message then goes to
//!   [`BridgeOptions::on_export_failure`]), so the log's checkpoint passes a message only
//!   once it is in the stream or given back, and the replay after a crash exports the
//!   rest again (one round trip per message on the topic's shard). Raise
//!   [`BridgeOptions::export_timeout`] to wait longer. Build and use the bus off the
//!   runtime's workers (`spawn_blocking`): its shards wait on that runtime.
//!
//! - **Pattern exports**: [`Local::Pattern`] exports every local topic matching a
//!   NATS-syntax pattern (`orders.>`), existing and later ones, each to its own subject,
//!   through a pattern subscription on the bus and one bounded hand-off to the export
//!   task (its overflow given back as [`ExportError::Overflow`]).
//!
//! The bridge's tasks run on the tokio runtime that [`Bridge::connect`] was called on.
//! What is not there yet: queue-group imports.

mod bridge;
mod error;
mod export;
mod import;
mod options;
mod outbox;
mod pattern;
mod round_trip;
pub mod server;
mod stats;
mod subject;

pub use bridge::{Bridge, Delivery, JetStreamImport, Link, Local};
pub use error::{BridgeError, ExportError};
pub use options::{
    BridgeOptions, ImportDeadLetter, ImportFailure, MAX_ACK_BATCH, MAX_STREAM, MAX_SUBSCRIPTION,
};
pub use outbox::{Outbox, OutboxHandler};
pub use round_trip::round_trip;
pub use server::partition_mapping;
pub use stats::BridgeStats;
