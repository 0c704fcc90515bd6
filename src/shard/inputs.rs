//! The shard's inputs: the shared intake ring, the publishers' lanes and the other
//! shards' lanes, and the durable-publish confirmation over them.

use super::*;

/// The shard's inputs, in the order a pass drains them.
pub(super) struct Inputs<T> {
    pub(super) ring: mpsc::Consumer,
    /// Publishers' private lanes into this shard.
    pub(super) lanes: Vec<spsc::Consumer<Envelope<T>>>,
    /// Other shards' lanes into this shard.
    pub(super) peers: Vec<spsc::Consumer<Envelope<T>>>,
    /// Persistent buses: the last position stored into the inbox's `durable` mark.
    pub(super) ring_durable: u64,
    /// Pipelined commit: per lane (and per peer), the last batch ticket it was popped
    /// into; its popped values are durable once that ticket is done.
    pub(super) lane_tickets: Vec<u64>,
    pub(super) peer_tickets: Vec<u64>,
}

/// Persistent buses: declares everything popped from the external inputs so far
/// durable, for `publish_durable` waiters. Called after the commit that made it so.
pub(super) fn confirm_durable<T>(inputs: &mut Inputs<T>, inbox: &crate::inbox::Inbox<T>) {
    let head = inputs.ring.head();
    if head != inputs.ring_durable {
        inputs.ring_durable = head;
        // Release: the commit happens before a waiter's Acquire load that sees it.
        inbox.durable.store(head, Ordering::Release);
    }
    for lane in inputs.lanes.iter_mut().chain(inputs.peers.iter_mut()) {
        lane.publish_durable();
    }
    inbox.log.wait.wake();
}

impl<T> Inputs<T> {
    /// Closes the external intake: the shared ring and every publisher lane (later
    /// publishes get `Closed` with their message back). The shard-to-shard lanes stay
    /// open.
    pub(super) fn close_external(&mut self, ring: &mpsc::Ring<Item<T>>) {
        self.ring.close(ring);
        for lane in &mut self.lanes {
            lane.close();
        }
    }
}
