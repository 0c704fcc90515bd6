//! A shard's pattern subscriptions: which patterns it holds, which of its topics each
//! matches, and the instances it made for them.
//!
//! Matching runs once per (shard, topic) and once per (shard, pattern), never per
//! message: when the shard learns new topic names (a message's index beyond its table,
//! a subscription, a logged pass's drain), [`Actors::catch_up_patterns`] matches the new
//! names against every pattern; when a pattern arrives, the shard first learns every
//! name the registry holds for it, then matches the pattern against all of them. A match
//! installs an ordinary subscriber (built by the pattern's factory) on the topic, so
//! dispatch does not know patterns exist.

use super::*;
use crate::pattern::PatternSub;
use crate::stats::PanicSite;
use crate::supervise::drop_guarded;

/// The shard's patterns and how far its topic table has been matched against them.
pub(crate) struct Patterns<T> {
    list: Vec<Entry<T>>,
    /// Topic indices below this have been matched against every pattern in `list`.
    matched: usize,
}

struct Entry<T> {
    sub: PatternSub<T>,
    /// The instances made on this shard (one per matching topic), by subscription id.
    instances: Vec<SubscriptionId>,
}

impl<T> Default for Patterns<T> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            matched: 0,
        }
    }
}

impl<T> Patterns<T> {
    /// Drops every pattern's shared factory (at the shard's exit), its `Drop` guarded.
    pub(super) fn retire(&mut self, c: &mut LocalCounters) {
        for entry in self.list.drain(..) {
            if drop_guarded(entry.sub).is_err() {
                c.panicked(PanicSite::Drop);
            }
        }
    }
}

impl<T: Send + 'static> Actors<T> {
    /// Matches the topics the shard learned since the last call against its patterns.
    /// One compare when there is nothing new.
    #[inline]
    pub(super) fn catch_up_patterns(&mut self, names: &mut Names) {
        if self.patterns.matched < names.keys.len() {
            self.match_new_topics(names);
        }
    }

    #[cold]
    #[inline(never)]
    fn match_new_topics(&mut self, names: &mut Names) {
        let (from, to) = (self.patterns.matched, names.keys.len());
        self.patterns.matched = to;
        for index in from..to {
            for p in 0..self.patterns.list.len() {
                self.match_one(names, p, index as u32);
            }
        }
    }

    /// Installs an instance of pattern `p` on topic `index` if the pattern matches it.
    fn match_one(&mut self, names: &mut Names, p: usize, index: u32) {
        #[cfg(test)]
        tests::MATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entry = &self.patterns.list[p];
        if !entry.sub.pattern.matches(names.key(index).as_str()) {
            return;
        }
        // The factory is user code: a panic is counted, and this topic gets no instance.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry.sub.make()));
        let Ok(actor) = made else {
            self.counters.panicked(PanicSite::Factory);
            return;
        };
        let id = SubscriptionId {
            bus: self.shared.topics.bus,
            shard: self.id.0 as u32,
            serial: self.shared.next_serial(),
        };
        let sub = Subscriber {
            id,
            actor,
            factory: Some(entry.sub.instance_factory()),
            policy: entry.sub.policy,
        };
        self.patterns.list[p].instances.push(id);
        // Its `on_start` runs now, supervised as a plain subscriber's.
        self.install(names, index, sub);
    }

    /// Adds a pattern: learns every topic of this shard the registry holds (topics that
    /// exist before the pattern), then matches the pattern against all of them.
    pub(super) fn subscribe_pattern(&mut self, names: &mut Names, sub: PatternSub<T>) {
        let topics = &self.shared.topics;
        let keys = &mut names.keys;
        topics.names_since(names.shard, keys.len(), |key| keys.push(key));
        // The patterns already here see the new names first.
        self.catch_up_patterns(names);
        self.patterns.list.push(Entry {
            sub,
            instances: Vec::new(),
        });
        let p = self.patterns.list.len() - 1;
        for index in 0..names.keys.len() {
            self.match_one(names, p, index as u32);
        }
    }

    /// Removes a pattern and every instance of it on this shard (each one's `on_stop`
    /// runs). Returns whether the shard held it.
    pub(super) fn unsubscribe_pattern(&mut self, names: &mut Names, id: SubscriptionId) -> bool {
        let Some(p) = self.patterns.list.iter().position(|e| e.sub.id == id) else {
            return false;
        };
        let entry = self.patterns.list.remove(p);
        for instance in entry.instances {
            // An instance that its supervision already stopped is not found: nothing to do.
            let ack = AckSender::none();
            let _ = self.control(names, Control::Unsubscribe { id: instance, ack });
        }
        if drop_guarded(entry.sub).is_err() {
            self.counters.panicked(PanicSite::Drop);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;

    use crate::{Bus, Context, Supervision};

    /// Every (pattern, topic) match attempt of every shard (only this test makes patterns
    /// among the crate's unit tests).
    pub(super) static MATCHES: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn matching_runs_once_per_shard_topic_and_pattern_never_per_message() {
        let bus = Bus::<u64>::builder().shards(2).build().unwrap();
        // Two topics the bus knows before the patterns (one on each shard, or both on one).
        bus.publish("m.old.0", 0).unwrap();
        bus.publish("m.old.1", 0).unwrap();
        bus.flush().unwrap();
        let got = Arc::new(AtomicU64::new(0));
        for pattern in ["m.*.0", "m.>", "x.*"] {
            let got = got.clone();
            bus.subscribe_pattern(pattern, Supervision::Resume, move || {
                let got = got.clone();
                move |_: &mut Context<'_, u64>, m: &u64| {
                    got.fetch_add(*m, Relaxed);
                }
            })
            .unwrap();
        }
        // Each pattern met each of the two old topics once, on the topic's shard.
        assert_eq!(MATCHES.load(Relaxed), 3 * 2);
        // 1,000 messages to 4 topics, 2 of them new: each new topic meets each pattern once.
        for i in 0..1000 {
            let topic = ["m.old.0", "m.old.1", "m.new.0", "m.new.1"][i % 4];
            bus.publish(topic, 1).unwrap();
        }
        bus.flush().unwrap();
        assert_eq!(MATCHES.load(Relaxed), 3 * 4);
        // `m.*.0` and `m.>` match `*.0` (2 actors each); `m.>` alone matches `*.1`.
        assert_eq!(got.load(Relaxed), 250 * 2 + 250 + 250 * 2 + 250);
        bus.shutdown();
    }
}
