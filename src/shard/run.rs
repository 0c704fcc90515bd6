//! Run dispatch: a lane's messages are handed to their subscribers by runs, not one by
//! one.
//!
//! A run is a stretch of consecutive messages of one input to one topic. Its subscribers
//! are looked up once, when it starts; a topic with one subscriber (the common case) gets
//! a direct loop: the handler is called for each message with no lookup, no
//! `catch_unwind` and no counter update per message. The handler reads the message where
//! the input holds it (a lane's slot), so a message is not moved on its way to the
//! handler. One `catch_unwind` covers the whole drain of the input. A panic in a handler
//! (or in a message's `Drop`) unwinds out of the drain with the failed message still at
//! the input's front (`live` says whether it is still there); the input moves past it
//! ([`Source::after_unwind`]), and after the message is dead-lettered and the supervision
//! policy applied exactly as for a lone message (`handle_caught`), the drain resumes with
//! the next message, in order. Topics with several subscribers, or none, go through
//! [`Actors::dispatch`] one message at a time, as before.

use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::dispatch::handle_caught;
use super::*;
use crate::shutdown::ShutdownFlags;
use crate::stats::PanicSite;
use crate::supervise::{Caught, Guarded};

/// An input a shard drains by runs: a lane ([`spsc::Consumer::pop_batch_in_place`]) or a
/// shard-to-shard lane ([`Each`]).
pub(super) trait Source<T> {
    /// Hands `f` up to `max` messages in place, each as a pointer to where it lies.
    ///
    /// # Safety
    ///
    /// When `f` returns it has moved the message out or dropped it, exactly once. When it
    /// unwinds, [`after_unwind`](Self::after_unwind) is called before the next `pop`.
    unsafe fn pop(&mut self, max: usize, f: impl FnMut(*mut Envelope<T>)) -> usize;

    /// After `f` unwound: moves past the message it was handed and returns it if `live`.
    ///
    /// # Safety
    ///
    /// Once per unwind of `pop`'s `f`, `live` true exactly when `f` had neither moved the
    /// message out nor dropped it.
    unsafe fn after_unwind(&mut self, live: bool) -> Option<Envelope<T>>;
}

impl<T> Source<T> for spsc::Consumer<Envelope<T>> {
    #[inline(always)]
    unsafe fn pop(&mut self, max: usize, f: impl FnMut(*mut Envelope<T>)) -> usize {
        // SAFETY: the caller's contract is the ring's.
        unsafe { self.pop_batch_in_place(max, f) }
    }

    unsafe fn after_unwind(&mut self, live: bool) -> Option<Envelope<T>> {
        // SAFETY: the caller's contract is the ring's.
        unsafe { self.front_after_unwind(live) }
    }
}

/// A shard-to-shard lane, drained with `pop_each` (it publishes its position per value,
/// before the value is handed on): each message is moved into `held`, which outlives a
/// panic of its handler.
pub(super) struct Each<'a, T> {
    lane: &'a mut spsc::Consumer<Envelope<T>>,
    held: MaybeUninit<Envelope<T>>,
}

impl<'a, T> Each<'a, T> {
    pub(super) fn new(lane: &'a mut spsc::Consumer<Envelope<T>>) -> Self {
        Self {
            lane,
            held: MaybeUninit::uninit(),
        }
    }
}

impl<T> Source<T> for Each<'_, T> {
    #[inline(always)]
    unsafe fn pop(&mut self, max: usize, mut f: impl FnMut(*mut Envelope<T>)) -> usize {
        let held = &mut self.held;
        self.lane.pop_each(max, |env| f(held.write(env)))
    }

    unsafe fn after_unwind(&mut self, live: bool) -> Option<Envelope<T>> {
        // `held` was written by the `pop` whose `f` unwound, and by the caller's contract
        // still holds the message exactly when `live`; this is its one move out.
        // SAFETY: `held` is this drain's own, as just said.
        live.then(|| unsafe { self.held.assume_init_read() })
    }
}

/// The run under way in a drain.
struct Run<T> {
    /// The run's topic index; `u32::MAX` before the first message (no topic has that
    /// index: the registry would run out of memory first).
    topic: u32,
    /// `topic` when it has exactly one subscriber (the direct loop, through `direct`),
    /// else `u32::MAX`: one compare per message decides both "same run" and "direct".
    direct_topic: u32,
    /// The topic's lone subscriber, looked up once per run; a placeholder unless
    /// `direct_topic == topic`.
    direct: Direct<T>,
}

/// What a direct run calls, found once per run.
struct Direct<T> {
    /// The lone subscriber, `Actors::subs[topic][0]`. Valid for the run: a subscriber
    /// is removed, replaced or moved (its topic's `Vec` grown) only by supervision after a
    /// panic (which ends the run, `after_panic`) or by a subscription change (applied
    /// between drains, never during one); the outer `Vec` moving does not move it.
    sub: *mut Subscriber<T>,
    /// The topic's name in `Names::keys`. Valid for the run: `keys` grows only when a
    /// run starts (`switch_run`), and every run looks its pointer up anew.
    key: *const TopicKey,
}

impl<T> Run<T> {
    /// No run yet: the next message starts one.
    fn none() -> Self {
        Self {
            topic: u32::MAX,
            direct_topic: u32::MAX,
            direct: Direct {
                sub: std::ptr::null_mut(),
                key: std::ptr::null(),
            },
        }
    }
}

/// Per-drain counts, added to the shard's counters once the drain ends (or a panic
/// interrupts it).
struct Tally {
    /// Messages of this drain already in the shard's counters: added by [`add_tally`]
    /// or counted where they went (`dispatch`, `abandon`). Every other popped message was
    /// handled by a direct run (received and handled), so no count is kept per message.
    ///
    /// [`add_tally`]: Actors::add_tally
    counted: usize,
    /// Messages until the next timed handler call (one in
    /// [`SAMPLE_EVERY`](crate::stats::SAMPLE_EVERY)).
    sample_in: u64,
}

impl<T: Send + 'static> Actors<T> {
    /// Drains up to `max` messages of `source`, by runs. Returns how many it popped.
    #[inline]
    pub(super) fn drain_runs(
        &mut self,
        names: &mut Names,
        flags: &ShutdownFlags,
        source: &mut impl Source<T>,
        max: usize,
    ) -> usize {
        let mut popped = 0;
        // Whether the message being handled is still at the input's front, for an unwind:
        // set before a direct run's handler is called, cleared before a message is moved
        // out or dropped (see the contract below).
        let mut live = false;
        let mut run = Run::none();
        // The shard counts received messages from 1: message `received + k` is timed when
        // it is 1 modulo SAMPLE_EVERY, as `dispatch` does.
        let next = SAMPLE_EVERY - (self.counters.received + SAMPLE_EVERY - 1) % SAMPLE_EVERY;
        let mut tally = Tally {
            counted: 0,
            sample_in: next,
        };
        loop {
            // AssertUnwindSafe: after a panic the failed message is at the input's front
            // (or gone, if its `Drop` panicked), and the run is ended below; nothing else is
            // left half-changed (counters are updated around the call).
            let caught = catch_unwind(AssertUnwindSafe(|| {
                // `step` moves out or drops every message it is handed before it returns
                // (`direct_call`, or a `ptr::read`), and `live` is false from the moment
                // it moves or drops one (a message without drop glue is never dropped, so
                // `live` stays set after its handler returns, until the next step sets it
                // again or clears it): the contract of `pop`, met below on unwind.
                // SAFETY: as just said.
                unsafe {
                    source.pop(max - popped, |env| {
                        popped += 1;
                        self.step(names, flags, &mut run, &mut live, &mut tally, popped, env);
                    })
                }
            }));
            match caught {
                Ok(_) => break,
                Err(payload) => {
                    // Right after the unwind, with `live` as the handler left it.
                    // SAFETY: the contract of `pop`, as said above.
                    let env = unsafe { source.after_unwind(std::mem::take(&mut live)) };
                    self.add_tally(&mut tally, popped);
                    self.after_panic(names, run.topic, env, payload);
                    // The subscriber may be gone or replaced: the next message starts a
                    // new run.
                    run = Run::none();
                    if popped == max {
                        break;
                    }
                }
            }
        }
        self.add_tally(&mut tally, popped);
        popped
    }

    /// Adds the direct messages among the drain's first `popped` to the counters.
    #[inline(always)]
    fn add_tally(&mut self, tally: &mut Tally, popped: usize) {
        let direct = (popped - tally.counted) as u64;
        tally.counted = popped;
        let c = &mut self.counters;
        c.received += direct;
        c.handled += direct;
    }

    /// One message of a drain, handed in place: moved out or dropped before this returns.
    // The drain's state is passed piece by piece: borrowed separately, each stays in a
    // register or on the drain's frame in the inlined loop.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn step(
        &mut self,
        names: &mut Names,
        flags: &ShutdownFlags,
        run: &mut Run<T>,
        live: &mut bool,
        tally: &mut Tally,
        popped: usize,
        env: *mut Envelope<T>,
    ) {
        if flags.shard_is_abandoned() {
            // Counted as dropped by `abandon`, not as a direct message.
            tally.counted += 1;
            *live = false;
            // The input handed the message in place and nothing has moved it; this is its
            // one move out (`live` is false from here).
            // SAFETY: the drain owns the message, as just said.
            self.abandon(unsafe { env.read() });
            return;
        }
        // The drain owns the message at `env` (handed in place, not yet moved).
        // SAFETY: a read of its topic field only.
        let topic = unsafe { (*env).topic };
        if topic != run.direct_topic && !self.switch_run(names, run, topic) {
            *live = false;
            // As above: the one move out of the message.
            // SAFETY: the drain owns the message, as just said.
            self.step_other(names, tally, popped, unsafe { env.read() });
            return;
        }
        tally.sample_in -= 1;
        if tally.sample_in == 0 {
            tally.sample_in = SAMPLE_EVERY;
            self.timed_call(&run.direct, live, env);
            return;
        }
        self.direct_call(&run.direct, live, env);
    }

    /// A message of `topic` where the run is not a direct run of it: starts a run of
    /// `topic` unless it is the run under way (a topic with several subscribers or none).
    /// Returns whether the run is now direct. Updates `run` in place: under many topics
    /// nearly every message starts a run, and this is what it costs.
    #[inline(always)]
    fn switch_run(&mut self, names: &mut Names, run: &mut Run<T>, topic: u32) -> bool {
        if topic == run.topic {
            return false;
        }
        if names.learn(topic, &self.shared.topics) {
            // A topic first seen: the shard's patterns are matched against it before its
            // subscribers are looked up (inside the first-sight branch: nothing per message).
            self.catch_up_patterns(names);
        }
        run.topic = topic;
        match self.subs.get_mut(topic as usize) {
            Some(subs) if subs.len() == 1 => {
                run.direct_topic = topic;
                run.direct.sub = &mut subs[0] as *mut Subscriber<T>;
                run.direct.key = names.key(topic) as *const TopicKey;
                true
            }
            _ => {
                run.direct_topic = u32::MAX;
                false
            }
        }
    }

    /// [`step`](Self::step) for a message of a topic with several subscribers or none:
    /// one message at a time, each call guarded ([`Actors::dispatch`]).
    #[inline(never)]
    fn step_other(
        &mut self,
        names: &mut Names,
        tally: &mut Tally,
        popped: usize,
        env: Envelope<T>,
    ) {
        // The direct messages before this one first: `dispatch` samples by the received
        // count. This one it counts itself.
        self.add_tally(tally, popped - 1);
        tally.counted += 1;
        self.dispatch(names, env, false);
        tally.sample_in -= 1;
        if tally.sample_in == 0 {
            tally.sample_in = SAMPLE_EVERY;
        }
    }

    /// Calls the run's lone subscriber on the message at `env`, then drops it in place. A
    /// panic unwinds to the drain's `catch_unwind` with `live` set if it came from
    /// `handle` (the message is still at the input's front).
    #[inline(always)]
    fn direct_call(&mut self, direct: &Direct<T>, live: &mut bool, env: *mut Envelope<T>) {
        // `direct` was set by `switch_run` for the run under way, whose subscriber and
        // name stay where they are until the run ends (see `Direct`), and only this
        // thread touches them; nothing else borrows the subscriber during its call.
        // SAFETY: the shard owns both, as just said.
        let (sub, topic) = unsafe { (&mut *direct.sub, &*direct.key) };
        let mut ctx = Context {
            topic,
            subscription: &sub.id,
            out: &mut self.out,
            replay: false,
        };
        *live = true;
        // The input handed the message in place and nothing has moved or dropped it; the
        // shared borrow ends with the call.
        // SAFETY: the drain owns the message, as just said.
        sub.actor.handle(&mut ctx, unsafe { &(*env).msg });
        // A message with no drop glue has nothing to drop, and nothing of it can panic:
        // `live` may stay set (the next message's step sets or clears it before anything
        // else can unwind, so it never speaks for a message already handed on).
        if std::mem::needs_drop::<Envelope<T>>() {
            // Cleared first, so a panic in the message's `Drop` leaves it counted as gone.
            *live = false;
            // The handler has returned and nothing else holds the message: its one drop.
            // SAFETY: the drain owns the message, as just said.
            unsafe { env.drop_in_place() };
        }
    }

    /// [`direct_call`](Self::direct_call), timed: one in `SAMPLE_EVERY` direct messages.
    #[cold]
    #[inline(never)]
    fn timed_call(&mut self, direct: &Direct<T>, live: &mut bool, env: *mut Envelope<T>) {
        let start = std::time::Instant::now();
        self.direct_call(direct, live, env);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.shared.counters[self.id.0].record_handler_ns(ns);
    }

    /// After a panic unwound out of a drain: only a direct call can panic there (every
    /// other call is guarded on its own), so it was `topic`'s lone subscriber, in its
    /// `handle` if the input gave the message back (`env`), else in the message's `Drop`.
    /// Handled as [`Actors::dispatch`] handles a panic of a lone subscriber.
    #[cold]
    #[inline(never)]
    fn after_panic(
        &mut self,
        names: &Names,
        topic: u32,
        env: Option<Envelope<T>>,
        payload: Box<dyn std::any::Any + Send>,
    ) {
        let Some(env) = env else {
            // In the message's `Drop`, after its handler returned: the message is gone
            // and the handler was fine; only counted, as `handle_caught` does.
            self.counters.panicked(PanicSite::Drop);
            return;
        };
        let Some(subs) = self.subs.get_mut(topic as usize) else {
            return;
        };
        let Some(sub) = subs.first_mut() else {
            return;
        };
        let sub_id = sub.id;
        let mut ctx = Context {
            topic: names.key(topic),
            subscription: &sub_id,
            out: &mut self.out,
            replay: false,
        };
        let c = &mut self.counters;
        let (shared, id, where_is) = (&self.shared, self.id, &mut self.where_is);
        let mut env = Guarded::new(env);
        let caught = Caught::Call(payload);
        let verdict = handle_caught(
            shared, id, where_is, c, sub, &mut ctx, &mut env, caught, true,
        );
        if verdict == Verdict::Remove {
            subs.clear();
        }
    }
}
