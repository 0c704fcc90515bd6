//! A shard's outgoing side: what its handlers publish.
//!
//! Each shard owns one SPSC lane into every other shard (so shard-to-shard traffic never
//! contends with publishers or with other shards), a local queue for topics of its own,
//! and one overflow queue per target for messages that met a full lane. A shard never
//! blocks on another shard: two shards publishing to each other through full lanes
//! would otherwise deadlock.
//!
//! Subscription changes a handler asks for (`Context::subscribe`, `Context::unsubscribe`)
//! leave through here too, without waiting: for this shard's topics they are kept for the
//! shard to apply once the handler has returned; for another shard's they go into its
//! intake ring, or wait here, in order, while that ring is full.
//!
//! The overflow queues of one shard hold at most `overflow_limit` messages together
//! (`Builder::overflow_limit`): past it, `Context::publish` refuses with the message back
//! (`PublishError::Full`), so actors that publish faster than their targets drain (or a
//! cycle of actors that amplifies) meet back-pressure instead of growing the queue
//! without end. The depth, its peak and the refusals are in the shard's statistics.

use std::collections::VecDeque;

use crate::error::{Error, PublishError, TryPublishError};
use crate::handler::{Handler, SubscriptionId, Supervision};
use crate::inbox::{AckSender, Control, Envelope, Item};
use crate::intern::{TopicCache, TopicId};
use crate::ring::{spsc, PushError};
use crate::route::ShardId;
use crate::shared::Shared;
use crate::supervise::{Factory, Subscriber};
use crate::sync::Arc;
use crate::topic::ToTopic;

pub(crate) struct Outbox<T> {
    shard: ShardId,
    shared: Arc<Shared<T>>,
    /// Topics this shard's handlers have published to by name.
    cache: TopicCache,
    /// `lanes[to]`: this shard's lane into shard `to` (`None` for itself).
    lanes: Vec<Option<spsc::Producer<Envelope<T>>>>,
    /// `overflow[to]`: messages for shard `to` that met a full lane, in order.
    overflow: Vec<VecDeque<Envelope<T>>>,
    /// Messages in all of `overflow`.
    overflow_len: usize,
    /// The most `overflow` may hold together (`Builder::overflow_limit`).
    overflow_limit: usize,
    /// The largest `overflow_len` so far, and the publishes refused at the limit (for
    /// the shard's statistics).
    pub(crate) overflow_peak: usize,
    pub(crate) overflow_refused: u64,
    /// Messages for topics of this shard, handled later in the same loop.
    pub(crate) local: VecDeque<Envelope<T>>,
    /// How many messages were ever queued in `local` (for the persistent log's
    /// checkpoint bookkeeping).
    pub(crate) local_pushed: u64,
    /// Subscription changes handlers asked for on this shard's topics, in order; the shard
    /// applies them once the handler has returned (`Actors::apply_controls`).
    pub(crate) own_controls: Vec<Control<T>>,
    /// Subscription changes for other shards (`(shard, control)`), in order, waiting for
    /// room in that shard's intake ring.
    remote_controls: VecDeque<(usize, Control<T>)>,
    /// The shard is stopping: every publish is refused with `Closed` (see [`close`](Self::close)).
    closed: bool,
}

/// Where [`Outbox::route`] put a message.
enum Route<T> {
    /// Into the local queue or the target's lane.
    Sent,
    /// Not sent: the target's lane is full, or messages already wait in its overflow.
    Full(Envelope<T>),
    /// Not sent: the target shard has closed the lane.
    Closed(Envelope<T>),
}

impl<T> Outbox<T> {
    pub(crate) fn new(
        shard: ShardId,
        shared: Arc<Shared<T>>,
        lanes: Vec<Option<spsc::Producer<Envelope<T>>>>,
        overflow_limit: usize,
    ) -> Self {
        let n = lanes.len();
        Self {
            shard,
            shared,
            cache: TopicCache::default(),
            lanes,
            overflow: (0..n).map(|_| VecDeque::new()).collect(),
            overflow_len: 0,
            overflow_limit,
            overflow_peak: 0,
            overflow_refused: 0,
            local: VecDeque::new(),
            local_pushed: 0,
            own_controls: Vec::new(),
            remote_controls: VecDeque::new(),
            closed: false,
        }
    }

    /// The bus's shared state (keyed publishes hash their key with its router;
    /// partitioned subscriptions register there).
    pub(crate) fn shared(&self) -> &Shared<T> {
        &self.shared
    }

    pub(crate) fn shard(&self) -> ShardId {
        self.shard
    }

    #[inline]
    fn resolve(&mut self, topic: impl ToTopic, msg: T) -> Result<(TopicId, T), T> {
        match topic.id_in(&self.shared.topics, Some(&mut self.cache)) {
            Some(t) => Ok((t, msg)),
            None => Err(msg),
        }
    }

    /// Routes one message: a topic of this shard to the local queue; another shard's into
    /// this shard's lane to it, unless messages already wait in that lane's overflow (they
    /// go first: per-topic order) or the lane is full.
    #[inline]
    fn route(&mut self, topic: TopicId, msg: T) -> Route<T> {
        let to = topic.shard.0;
        let env = Envelope {
            topic: topic.index,
            msg,
        };
        let Some(lane) = self.lanes[to].as_mut() else {
            self.local.push_back(env);
            self.local_pushed += 1;
            return Route::Sent;
        };
        if !self.overflow[to].is_empty() {
            return Route::Full(env);
        }
        match lane.push(env) {
            Ok(()) => {
                self.shared.inboxes[to].wake();
                Route::Sent
            }
            Err(PushError::Full(env)) => Route::Full(env),
            Err(PushError::Closed(env)) => Route::Closed(env),
        }
    }

    pub(crate) fn publish(&mut self, topic: impl ToTopic, msg: T) -> Result<(), PublishError<T>> {
        if self.closed {
            return Err(PublishError::Closed(msg));
        }
        let (topic, msg) = self
            .resolve(topic, msg)
            .map_err(PublishError::InvalidTopic)?;
        // A message the receiving shard could not log is refused here, with the message.
        let msg = self
            .shared
            .check_encode(msg)
            .map_err(|(msg, error)| PublishError::Encode { msg, error })?;
        match self.route(topic, msg) {
            Route::Sent => Ok(()),
            Route::Full(env) => self.overflow(topic.shard.0, env),
            Route::Closed(env) => Err(PublishError::Closed(env.msg)),
        }
    }

    /// A message for shard `to` that met a full lane: waits, in order, behind what already
    /// waits for that lane, unless the overflow queues are at their limit (then it comes
    /// back, counted as refused).
    #[cold]
    fn overflow(&mut self, to: usize, env: Envelope<T>) -> Result<(), PublishError<T>> {
        if self.overflow_len >= self.overflow_limit {
            self.overflow_refused += 1;
            return Err(PublishError::Full(env.msg));
        }
        self.overflow[to].push_back(env);
        self.overflow_len += 1;
        self.overflow_peak = self.overflow_peak.max(self.overflow_len);
        Ok(())
    }

    pub(crate) fn try_publish(
        &mut self,
        topic: impl ToTopic,
        msg: T,
    ) -> Result<(), TryPublishError<T>> {
        if self.closed {
            return Err(TryPublishError::Closed(msg));
        }
        let (topic, msg) = self
            .resolve(topic, msg)
            .map_err(TryPublishError::InvalidTopic)?;
        let msg = self
            .shared
            .check_encode(msg)
            .map_err(|(msg, error)| TryPublishError::Encode { msg, error })?;
        match self.route(topic, msg) {
            Route::Sent => Ok(()),
            Route::Full(env) => Err(TryPublishError::Full(env.msg)),
            Route::Closed(env) => Err(TryPublishError::Closed(env.msg)),
        }
    }

    /// `Context::subscribe` and its kin: a new subscription of `actor` to `topic`, sent
    /// without waiting (see [`send_control`](Self::send_control)). Returns its id.
    pub(crate) fn subscribe(
        &mut self,
        topic: impl ToTopic,
        actor: Box<dyn Handler<T>>,
        factory: Option<Factory<T>>,
        policy: Supervision,
    ) -> Result<SubscriptionId, Error>
    where
        T: Send + 'static,
    {
        let Some(topic) = topic.id_in(&self.shared.topics, Some(&mut self.cache)) else {
            return Err(crate::subject::name_error(topic.name()));
        };
        if self.shared.is_closing() {
            return Err(Error::Closed);
        }
        let id = SubscriptionId {
            bus: self.shared.topics.bus,
            shard: topic.shard.0 as u32,
            serial: self.shared.next_serial(),
        };
        let sub = Subscriber {
            id,
            actor,
            factory,
            policy,
        };
        let control = Control::Subscribe {
            topic: topic.index,
            sub,
            ack: AckSender::none(),
        };
        self.send_control(topic.shard.0, control);
        Ok(id)
    }

    /// `Context::subscribe_pattern`: sends the pattern to every shard, without waiting.
    pub(crate) fn subscribe_pattern(
        &mut self,
        pattern: crate::subject::Pattern,
        policy: crate::handler::Supervision,
        factory: crate::pattern::SharedFactory<T>,
    ) -> Result<SubscriptionId, Error> {
        if self.shared.is_closing() {
            return Err(Error::Closed);
        }
        let id = SubscriptionId {
            bus: self.shared.topics.bus,
            shard: crate::pattern::PATTERN_SHARD,
            serial: self.shared.next_serial(),
        };
        let sub = crate::pattern::PatternSub {
            id,
            pattern: crate::sync::plain::Arc::new(pattern),
            policy,
            factory,
        };
        for to in 0..self.lanes.len() {
            let ack = AckSender::none();
            let sub = sub.clone();
            self.send_control(to, Control::SubscribePattern { sub, ack });
        }
        Ok(id)
    }

    /// `Context::unsubscribe`: ends subscription `id`, without waiting.
    pub(crate) fn unsubscribe(&mut self, id: SubscriptionId) -> Result<(), Error> {
        if id.bus == self.shared.topics.bus && crate::pattern::is_pattern(id) {
            if self.shared.is_closing() {
                return Err(Error::Closed);
            }
            // Every shard; one that does not hold it (never did, or already removed it)
            // ignores the request.
            for to in 0..self.lanes.len() {
                let ack = AckSender::none();
                self.send_control(to, Control::UnsubscribePattern { id, ack });
            }
            return Ok(());
        }
        let shard = id.shard as usize;
        if id.bus != self.shared.topics.bus || shard >= self.lanes.len() {
            return Err(Error::UnknownSubscription(id));
        }
        if self.shared.is_closing() {
            return Err(Error::Closed);
        }
        let ack = AckSender::none();
        self.send_control(shard, Control::Unsubscribe { id, ack });
        Ok(())
    }

    /// Sends a control without waiting: this shard's are kept in `own_controls`; another
    /// shard's go into its intake ring now, or, while that ring is full (or earlier ones
    /// still wait), into `remote_controls`, sent in order by later passes.
    fn send_control(&mut self, to: usize, control: Control<T>) {
        if to == self.shard.0 {
            self.own_controls.push(control);
            return;
        }
        self.remote_controls.push_back((to, control));
        self.send_controls();
    }

    /// Sends waiting controls to other shards, in order, until one meets a full ring. A
    /// control for a shard that has closed its intake is dropped: that shard is stopping.
    fn send_controls(&mut self) {
        while let Some((to, control)) = self.remote_controls.pop_front() {
            let inbox = &self.shared.inboxes[to];
            match inbox.ring.push(Item::Control(control)) {
                Ok(()) => inbox.wake(),
                Err(PushError::Full(Item::Control(back))) => {
                    self.remote_controls.push_front((to, back));
                    return;
                }
                // Closed: dropped (a subscriber dropped unstarted; no one waits).
                Err(_) => {}
            }
        }
    }

    /// Whether anything waits to leave this shard: overflowed messages or controls for
    /// other shards. A shard with something pending does not park (no one would wake it
    /// when room frees up) and is not idle.
    pub(crate) fn has_pending(&self) -> bool {
        self.overflow_len > 0 || !self.remote_controls.is_empty()
    }

    /// The number of outgoing lane slots (one per shard, this one's empty).
    pub(crate) fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// Each outgoing lane's next push position (0 for this shard's own slot).
    pub(crate) fn lane_positions(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.lanes
            .iter()
            .map(|l| l.as_ref().map_or(0, spsc::Producer::position))
    }

    /// Whether the shard behind lane `to` has made everything before `position` durable.
    pub(crate) fn lane_durable(&self, to: usize, position: u64) -> bool {
        self.lanes[to]
            .as_ref()
            .is_none_or(|l| l.is_durable(position))
    }

    /// Whether messages wait in the overflow queues.
    pub(crate) fn has_overflow(&self) -> bool {
        self.overflow_len > 0
    }

    /// Messages waiting in the overflow queues.
    pub(crate) fn overflow_len(&self) -> usize {
        self.overflow_len
    }

    /// Forwards overflowed messages as lanes free up. Messages for a shard that has
    /// stopped are dropped and counted in the return value's second field.
    /// Returns (forwarded, dropped).
    pub(crate) fn flush_overflow(&mut self) -> (usize, usize) {
        if !self.remote_controls.is_empty() {
            self.send_controls();
        }
        if self.overflow_len == 0 {
            return (0, 0);
        }
        let (mut sent, mut dropped) = (0, 0);
        for to in 0..self.lanes.len() {
            let Some(lane) = self.lanes[to].as_mut() else {
                continue;
            };
            let queue = &mut self.overflow[to];
            let mut pushed = 0;
            while let Some(env) = queue.pop_front() {
                match lane.push(env) {
                    Ok(()) => pushed += 1,
                    Err(PushError::Full(env)) => {
                        queue.push_front(env);
                        break;
                    }
                    Err(PushError::Closed(_)) => dropped += 1,
                }
            }
            if pushed > 0 {
                self.shared.inboxes[to].wake();
            }
            sent += pushed;
        }
        self.overflow_len -= sent + dropped;
        (sent, dropped)
    }

    /// The shard is stopping and will deliver nothing more: from now on every publish
    /// (an `on_stop` at a forced stop) is refused with `Closed` and its message, rather
    /// than accepted and dropped.
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    /// Drops everything still waiting to be sent; returns the count of messages (controls
    /// are dropped uncounted: the bus is stopping).
    pub(crate) fn discard(&mut self) -> u64 {
        self.own_controls.clear();
        self.remote_controls.clear();
        let n = self.overflow_len + self.local.len();
        self.overflow.iter_mut().for_each(VecDeque::clear);
        self.local.clear();
        self.overflow_len = 0;
        n as u64
    }
}
