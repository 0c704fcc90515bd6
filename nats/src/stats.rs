//! The bridge's counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a bridge has done so far: a snapshot from [`Bridge::stats`](crate::Bridge::stats).
/// Every message that enters the bridge and does not come out the other side is in one
/// of the failure counters: nothing is dropped silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStats {
    /// Messages an export handed to NATS (core: queued on the connection; JetStream:
    /// acknowledged by the stream, duplicates included).
    pub exported: u64,
    /// JetStream exports the server acknowledged as duplicates (a retry after a lost
    /// acknowledgement, recognised by its message id within the stream's duplicate window).
    pub export_duplicates: u64,
    /// JetStream publishes sent again after a failed or missing acknowledgement.
    pub export_retries: u64,
    /// Messages an export gave up on and passed to the export-failure handler.
    pub export_failed: u64,
    /// The most JetStream acknowledgements an export has had in flight at once (at most
    /// the window, [`BridgeOptions::max_in_flight`](crate::BridgeOptions::max_in_flight)).
    pub export_in_flight_max: u64,
    /// Messages a pattern export's shards could not hand to its task because the
    /// hand-off was full (each also in `export_failed`, given to the export-failure
    /// handler as [`ExportError::Overflow`](crate::ExportError::Overflow)).
    pub export_overflow: u64,
    /// Messages an import published into the local bus.
    pub imported: u64,
    /// JetStream messages an import acknowledged (after the bus took responsibility).
    pub import_acked: u64,
    /// JetStream messages delivered to an import more than once (the server's count).
    pub import_redelivered: u64,
    /// JetStream imports that took over a consumer with deliveries still unacknowledged
    /// (a previous owner crashed or was not stopped) and rewound it to its ack floor, so
    /// that those messages come again in order (see
    /// [`Bridge::import_jetstream`](crate::Bridge::import_jetstream)).
    pub import_rewinds: u64,
    /// Imported payloads the codec could not decode, passed to the dead-letter handler
    /// (JetStream: then terminated, so that they are not redelivered).
    pub dead_letters: u64,
    /// Imports that the local bus refused (it was closing): JetStream messages stay
    /// unacknowledged and are redelivered elsewhere or later; core NATS ones are lost and
    /// counted here.
    pub import_refused: u64,
    /// The client's slow-consumer events: a core NATS subscription whose buffer was full,
    /// so the client dropped a message for it (core NATS is at most once). The client
    /// reports one event per dropped message through an event queue of its own (128
    /// events), which drops events when it is full: a lower bound of the messages
    /// dropped, never zero when some were.
    pub slow_consumer_events: u64,
    /// Times the connection to the server was lost.
    pub disconnects: u64,
    /// Times the connection was (re)established after the first.
    pub reconnects: u64,
}

/// The live counters behind [`BridgeStats`]. Every counter is only ever added to and read
/// for a report: `Relaxed` is enough (no other memory is published through them).
#[derive(Default)]
pub(crate) struct Counters {
    pub exported: AtomicU64,
    pub export_duplicates: AtomicU64,
    pub export_retries: AtomicU64,
    pub export_failed: AtomicU64,
    pub export_in_flight_max: AtomicU64,
    pub export_overflow: AtomicU64,
    pub imported: AtomicU64,
    pub import_acked: AtomicU64,
    pub import_redelivered: AtomicU64,
    pub import_rewinds: AtomicU64,
    pub dead_letters: AtomicU64,
    pub import_refused: AtomicU64,
    pub slow_consumer_events: AtomicU64,
    pub disconnects: AtomicU64,
    pub connects: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        // Relaxed: a statistic, see the type's docs.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BridgeStats {
        // Relaxed: a statistic, see the type's docs.
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BridgeStats {
            exported: get(&self.exported),
            export_duplicates: get(&self.export_duplicates),
            export_retries: get(&self.export_retries),
            export_failed: get(&self.export_failed),
            export_in_flight_max: get(&self.export_in_flight_max),
            export_overflow: get(&self.export_overflow),
            imported: get(&self.imported),
            import_acked: get(&self.import_acked),
            import_redelivered: get(&self.import_redelivered),
            import_rewinds: get(&self.import_rewinds),
            dead_letters: get(&self.dead_letters),
            import_refused: get(&self.import_refused),
            slow_consumer_events: get(&self.slow_consumer_events),
            disconnects: get(&self.disconnects),
            reconnects: get(&self.connects).saturating_sub(1),
        }
    }
}
