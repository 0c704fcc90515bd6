//! Request-reply on the bus.

use super::*;

/// Request-reply: publish a message that carries a [`Reply`], wait for its answer.
impl<T> Bus<T> {
    /// Publishes the message `make` builds around a fresh [`Reply`] and blocks until a
    /// handler answers through it ([`Reply::send`]), returning the answer.
    ///
    /// Errors say what happened: [`RequestError::TimedOut`] if no answer came within
    /// `timeout`; [`RequestError::NoReply`] as soon as the `Reply` is dropped unanswered
    /// (the handler panicked or returned without answering, the message was
    /// dead-lettered, or it was dropped at a deadline shutdown), without waiting for the
    /// timeout; [`RequestError::Closed`] with the message back if the bus is closed.
    /// From a handler on one of this bus's shard threads it would hold up that shard
    /// while it waits: [`RequestError::WouldDeadlock`] with the message, nothing
    /// published.
    ///
    /// `timeout` bounds the whole request: the publish waits for room as
    /// [`publish`](Self::publish) does, but a target inbox still full at the timeout gives
    /// the message back in [`RequestError::Full`]. A request costs one heap allocation beyond its
    /// message: the one-shot channel (its state byte, room for `R` and for the waiting
    /// thread's or task's handle: 32 bytes for a `u64` answer on a 64-bit target).
    ///
    /// ```
    /// use shardbus::{Bus, Context, Reply, RequestError};
    /// use std::time::Duration;
    ///
    /// enum Pricing {
    ///     Quote { item: &'static str, reply: Reply<u64> },
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::<Pricing>::builder().shards(2).build()?;
    /// bus.subscribe("pricing", |_: &mut Context<'_, Pricing>, msg: &Pricing| match msg {
    ///     Pricing::Quote { item: "apple", reply } => drop(reply.send(3)),
    ///     Pricing::Quote { .. } => {} // unknown item: no answer; the requester gets NoReply
    /// })?;
    /// let ask = |item| bus.request("pricing", |reply| Pricing::Quote { item, reply }, Duration::from_secs(5));
    /// assert_eq!(ask("apple")?, 3);
    /// assert!(matches!(ask("pear"), Err(RequestError::NoReply)));
    /// # Ok(()) }
    /// ```
    pub fn request<R>(
        &self,
        topic: impl ToTopic,
        make: impl FnOnce(Reply<R>) -> T,
        timeout: Duration,
    ) -> Result<R, RequestError<T>> {
        let deadline = Instant::now().checked_add(timeout);
        let (reply, receiver) = Reply::pair();
        let msg = make(reply);
        if current::is_shard_of(self.id) {
            return Err(RequestError::WouldDeadlock(msg));
        }
        self.publish_until(topic, msg, deadline)?;
        request::wait(receiver, deadline).map_err(unanswered)
    }

    /// [`request`](Self::request) as a future: publishes the message `make` builds around
    /// a fresh [`Reply`] when first polled, then completes with the answer, or with the
    /// same errors as `request` (`TimedOut`, `NoReply` as soon as the `Reply` is dropped
    /// unanswered, `Closed` with the message, `WouldDeadlock` if polled on one of this
    /// bus's shard threads). The future is `Send` when `T`, `R`, the topic and `make` are.
    ///
    /// The timeout runs from the first poll. The future needs no particular runtime: the
    /// answer wakes it through the one-shot channel, and the deadline through a timer
    /// thread of the library's own (one per process, `sb-timer`, started by the first
    /// async request that waits; it sleeps until the earliest pending deadline). So a
    /// request times out the same way under tokio, async-std, smol or a plain `block_on`,
    /// as the blocking form does, and a tokio program can still wrap it in
    /// `tokio::time::timeout` for a deadline of its own. While the target's inbox is full
    /// the publish yields to the executor and tries again (it never blocks the polling
    /// thread), and never past the timeout: [`RequestError::Full`] gives the message back.
    /// Allocations: the one-shot channel, as for `request`; the
    /// timer's entry for the deadline goes into an ordered map that keeps its storage, so
    /// requests one after another allocate nothing more, and many pending at once add a
    /// node per eleven or so deadlines as the map grows.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before its first poll publishes nothing (and `make` is never
    /// called). Dropping it later leaves the message published: it is handled as usual,
    /// and its handler's [`Reply::send`] gives the answer back; the deadline is
    /// deregistered.
    ///
    /// ```
    /// use shardbus::{Bus, Context, Reply};
    /// use std::time::Duration;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::<(u32, Reply<u32>)>::builder().shards(1).build()?;
    /// bus.subscribe("inc", |_: &mut Context<'_, (u32, Reply<u32>)>, (n, reply): &(u32, Reply<u32>)| {
    ///     let _ = reply.send(n + 1);
    /// })?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// let answer = rt.block_on(bus.request_async("inc", |reply| (1, reply), Duration::from_secs(5)))?;
    /// assert_eq!(answer, 2);
    /// # Ok(()) }
    /// ```
    pub async fn request_async<R>(
        &self,
        topic: impl ToTopic,
        make: impl FnOnce(Reply<R>) -> T,
        timeout: Duration,
    ) -> Result<R, RequestError<T>> {
        let deadline = Instant::now().checked_add(timeout);
        let (reply, receiver) = Reply::pair();
        let msg = make(reply);
        if current::is_shard_of(self.id) {
            return Err(RequestError::WouldDeadlock(msg));
        }
        self.publish_until_async(topic, msg, deadline).await?;
        request::WaitReply::new(receiver, deadline)
            .await
            .map_err(unanswered)
    }

    /// [`publish_until`](Self::publish_until) for [`request_async`](Self::request_async):
    /// while the inbox is full it yields to the executor (the task is woken again at once)
    /// instead of pausing the thread, so no worker thread blocks; the deadline bounds it.
    async fn publish_until_async(
        &self,
        topic: impl ToTopic,
        mut msg: T,
        deadline: Option<Instant>,
    ) -> Result<(), RequestError<T>> {
        loop {
            match self.try_request_push(&topic, msg, deadline)? {
                None => return Ok(()),
                Some(back) => msg = back,
            }
            crate::sync::YieldNow::new().await;
        }
    }

    /// A request's publish: waits for room as [`publish`](Self::publish) does, but only
    /// until `deadline`; a target still full then gives the message back in
    /// [`RequestError::Full`]. Never called on one of this bus's shard threads (the
    /// requests refuse that first).
    fn publish_until(
        &self,
        topic: impl ToTopic,
        mut msg: T,
        deadline: Option<Instant>,
    ) -> Result<(), RequestError<T>> {
        let backoff = Backoff::new();
        loop {
            match self.try_request_push(&topic, msg, deadline)? {
                None => return Ok(()),
                Some(back) => msg = back,
            }
            publisher_pause(&backoff);
        }
    }

    /// One try of a request's publish: `None` once pushed, `Some(msg)` back to try again
    /// (the inbox was full and `deadline` has not passed), or the request's error.
    fn try_request_push(
        &self,
        topic: &impl ToTopic,
        msg: T,
        deadline: Option<Instant>,
    ) -> Result<Option<T>, RequestError<T>> {
        match push_shared(&self.shared, topic, msg, false) {
            Ok(()) => Ok(None),
            Err(TryPublishError::Full(back)) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    Err(RequestError::Full(back))
                } else {
                    Ok(Some(back))
                }
            }
            Err(TryPublishError::Closed(m)) => Err(RequestError::Closed(m)),
            Err(TryPublishError::InvalidTopic(m)) => Err(RequestError::InvalidTopic(m)),
            Err(TryPublishError::Encode { msg, error }) => Err(RequestError::Encode { msg, error }),
        }
    }
}

/// A request's error from why its wait ended unanswered.
fn unanswered<T>(why: request::Unanswered) -> RequestError<T> {
    match why {
        request::Unanswered::TimedOut => RequestError::TimedOut,
        request::Unanswered::NoReply => RequestError::NoReply,
    }
}
