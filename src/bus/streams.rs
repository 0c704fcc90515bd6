//! Subscriber streams on the bus.

use super::*;

/// Subscriber streams.
impl<T: Clone + Send + 'static> Bus<T> {
    /// Subscribes a stream to a topic: its messages (clones, one per message) go to the
    /// returned [`MessageStream`](crate::MessageStream), for a consumer outside the bus:
    /// async ([`recv_async`](crate::MessageStream::recv_async), or as a
    /// [`futures_core::Stream`]) or on a thread ([`recv`](crate::MessageStream::recv),
    /// [`try_recv`](crate::MessageStream::try_recv)). Returns once the subscription is
    /// installed, as [`subscribe`](Self::subscribe) does, with the same ordering
    /// promises: the stream gets the topic's messages in order.
    ///
    /// The stream's actor runs on the topic's shard like any subscriber, and never makes
    /// the shard wait: it puts each message into a channel of `capacity` messages to the
    /// consumer; while that is full, into an overflow of `capacity` more on the shard side
    /// (counted in [`ShardStats::stream_overflow`](crate::ShardStats::stream_overflow) and
    /// its peak), which the consumer takes from, in order, once it has emptied the
    /// channel. A message that finds both full goes to the dead-letter handler
    /// ([`DeadLetterReason::StreamFull`](crate::DeadLetterReason::StreamFull)); the
    /// topic's other subscribers get it as usual.
    ///
    /// At shutdown the stream yields what it holds, then `None`. Dropping the stream
    /// ends the subscription (see [`MessageStream`](crate::MessageStream)).
    ///
    /// `capacity` is a power of two from 2 to 2^30 ([`Error::InvalidCapacity`]
    /// otherwise). From a handler on one of this bus's shard threads,
    /// [`Error::WouldDeadlock`], as [`subscribe`](Self::subscribe).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = shardbus::Bus::<u64>::builder().shards(2).build()?;
    /// let mut ticks = bus.subscribe_stream("ticks", 64)?;
    /// for i in 0..3 {
    ///     bus.publish("ticks", i)?;
    /// }
    /// bus.shutdown();
    /// let got: Vec<u64> = std::iter::from_fn(|| ticks.recv()).collect();
    /// assert_eq!(got, [0, 1, 2]);
    /// # Ok(()) }
    /// ```
    pub fn subscribe_stream(
        &self,
        topic: impl ToTopic,
        capacity: usize,
    ) -> Result<crate::MessageStream<T>, Error> {
        if capacity < 2 || !capacity.is_power_of_two() || capacity > crate::ring::MAX_CAPACITY {
            return Err(Error::InvalidCapacity {
                what: "stream",
                capacity,
                max: crate::ring::MAX_CAPACITY,
            });
        }
        let (actor, receiver) = crate::stream::actor(Arc::clone(&self.shared), capacity);
        let id = self.install(topic, Box::new(actor), None, Supervision::Resume)?;
        Ok(crate::MessageStream::new(
            receiver,
            Arc::clone(&self.shared),
            id.shard as usize,
            id,
        ))
    }
}
