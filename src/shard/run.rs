//! Run dispatch: a lane's messages are handed to their subscribers by runs, not one by
//! one.
//!
//! A run is a stretch of consecutive messages of one input to one topic. Its subscribers
//! are looked up once, when it starts; a topic with one subscriber (the common case) gets
//! a direct loop: one `Context` for the run, and for each message the handler called
//! with no lookup, no `catch_unwind` and no counter update. The handler reads the message
//! where the input holds it (a lane's slot), so a message is not moved on its way to the
//! handler. One `catch_unwind` covers the whole drain of the input. The drain counts each
//! message it takes (moves out, or drops in place after its handler returned); a panic in
//! a handler (or in a message's `Drop`) unwinds out of the drain with the failed message
//! not counted, still at the input's front (or gone: [`Progress::dropping`]). The input
//! moves past it and gives it back ([`Source::after_unwind`]), and after the message is
//! dead-lettered and the supervision policy applied exactly as for a lone message
//! (`handle_caught`), the drain resumes with the next message, in order. Topics with several subscribers, or none, go through [`Actors::dispatch`] one
//! message at a time, as before.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::dispatch::handle_caught;
use super::*;
use crate::shutdown::ShutdownFlags;
use crate::stats::{PanicSite, ShardCounters};
use crate::supervise::{Caught, Guarded};
use crate::Handler;

/// An input a shard drains by runs: a lane ([`spsc::Consumer::pop_batch_in_place`]) or a
/// shard-to-shard lane ([`Each`]).
pub(super) trait Source<T> {
    /// Hands `f` up to `max` messages in place: `f(first, len)` gets `len` messages that
    /// lie one after the other from `first`. `taken` is set to 0, then advanced by `f`
    /// after each message it takes. Returns how many were handed on.
    ///
    /// # Safety
    ///
    /// When `f` returns, it has taken (moved out or dropped) every message it was handed,
    /// each exactly once, and counted them in `taken`. When it unwinds, it has taken
    /// exactly the messages `taken` counts, or those and the next, which it was dropping,
    /// and [`after_unwind`](Self::after_unwind) is called before the next `pop`.
    unsafe fn pop(
        &mut self,
        max: usize,
        taken: &Cell<usize>,
        f: impl FnMut(*mut Envelope<T>, usize),
    ) -> usize;

    /// After `f` unwound having counted `taken` messages: moves past the first message it
    /// was handed and did not count, and returns it if `live` (`None` if it had counted
    /// all, or with `live` false: `f` was dropping it).
    ///
    /// # Safety
    ///
    /// Once per unwind of `pop`, with the count `taken` held when it unwound, and `live`
    /// false exactly when `f` unwound out of the drop of the next message.
    unsafe fn after_unwind(&mut self, taken: usize, live: bool) -> Option<Envelope<T>>;
}

impl<T> Source<T> for spsc::Consumer<Envelope<T>> {
    #[inline(always)]
    unsafe fn pop(
        &mut self,
        max: usize,
        taken: &Cell<usize>,
        f: impl FnMut(*mut Envelope<T>, usize),
    ) -> usize {
        // SAFETY: the caller's contract is the ring's.
        unsafe { self.pop_batch_in_place(max, taken, f) }
    }

    unsafe fn after_unwind(&mut self, _taken: usize, live: bool) -> Option<Envelope<T>> {
        // SAFETY: the caller's contract is the ring's (the ring read the count itself).
        unsafe { self.front_after_unwind(live) }
    }
}

/// A shard-to-shard lane, drained with `pop_each` (it publishes its position per value,
/// before the value is handed on): each message is moved into `held`, which outlives a
/// panic of its handler.
pub(super) struct Each<'a, T> {
    lane: &'a mut spsc::Consumer<Envelope<T>>,
    held: MaybeUninit<Envelope<T>>,
    /// Messages moved into `held` by the last `pop`.
    handed: usize,
}

impl<'a, T> Each<'a, T> {
    pub(super) fn new(lane: &'a mut spsc::Consumer<Envelope<T>>) -> Self {
        Self {
            lane,
            held: MaybeUninit::uninit(),
            handed: 0,
        }
    }
}

impl<T> Source<T> for Each<'_, T> {
    #[inline(always)]
    unsafe fn pop(
        &mut self,
        max: usize,
        taken: &Cell<usize>,
        mut f: impl FnMut(*mut Envelope<T>, usize),
    ) -> usize {
        taken.set(0);
        self.handed = 0;
        let (held, handed) = (&mut self.held, &mut self.handed);
        self.lane.pop_each(max, |env| {
            *handed += 1;
            f(held.write(env), 1);
        })
    }

    unsafe fn after_unwind(&mut self, taken: usize, live: bool) -> Option<Envelope<T>> {
        // `held` was written by the `pop` that unwound, with its last message, which `f`
        // had neither moved out nor dropped exactly when fewer were counted than handed
        // and `live` (by the caller's contract); this is its one move out.
        // SAFETY: `held` is this drain's own, as just said.
        (taken < self.handed && live).then(|| unsafe { self.held.assume_init_read() })
    }
}

/// How far a `pop`'s `f` got: read after it unwinds.
struct Progress {
    /// The messages of the `pop` taken so far, counted as each is: before the move out of
    /// a message that is not handled directly, after a direct handler returned and its
    /// message was dropped in place.
    taken: Cell<usize>,
    /// Set while a direct run drops a message its handler has returned from (messages
    /// with drop glue only): a panic then came from the message's `Drop`, and the message
    /// is gone.
    dropping: Cell<bool>,
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
        // Messages of this drain's earlier `pop`s (one, unless a handler panicked).
        let mut popped = 0;
        let progress = Progress {
            taken: Cell::new(0),
            dropping: Cell::new(false),
        };
        // The shard counts received messages from 1: message `received + k` is timed when
        // it is 1 modulo SAMPLE_EVERY, as `dispatch` does.
        let next = SAMPLE_EVERY - (self.counters.received + SAMPLE_EVERY - 1) % SAMPLE_EVERY;
        let mut tally = Tally {
            counted: 0,
            sample_in: next,
        };
        loop {
            // AssertUnwindSafe: after a panic the failed message is at the input's front
            // (or gone, if its `Drop` panicked), and nothing else is left half-changed
            // (counters are updated around the call; a run's state lives in
            // `drain_stretch`'s frame, which the unwind leaves).
            let caught = catch_unwind(AssertUnwindSafe(|| {
                // `drain_stretch` takes every message of its stretch exactly once, counting
                // each in `taken` as it does, and unwinds only from a handler's `handle`
                // (its message not counted, whole) or a message's `Drop` (not counted,
                // `dropping` set): the contract of `pop`, met below on unwind.
                // SAFETY: as just said.
                unsafe {
                    source.pop(max - popped, &progress.taken, |first, len| {
                        self.drain_stretch(names, flags, &mut tally, popped, &progress, first, len);
                    })
                }
            }));
            match caught {
                Ok(n) => {
                    popped += n;
                    break;
                }
                Err(payload) => {
                    // Right after the unwind, with the count and the flag it left.
                    let taken = progress.taken.get();
                    let dropped = progress.dropping.replace(false);
                    // SAFETY: the contract of `pop`, as said above.
                    let env = unsafe { source.after_unwind(taken, !dropped) };
                    // The failed message counts as popped (and, through the tally, as
                    // received and handled, as `dispatch` counts it).
                    popped += taken + usize::from(env.is_some() || dropped);
                    self.add_tally(&mut tally, popped);
                    self.after_panic(names, env, payload);
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

    /// Takes the `len` messages that lie one after the other from `first`, by runs: a
    /// topic with one subscriber gets a direct loop for as long as the messages are of
    /// it; any other message goes to [`step_other`](Self::step_other).
    ///
    /// # Safety
    ///
    /// The messages were handed in place by the drain's source, the first of them after
    /// the `popped + taken` messages before it. Each is taken exactly once, in order, and
    /// counted as [`Progress::taken`] says. A panic in a direct handler unwinds with its
    /// message not counted and whole, a panic in its `Drop` with it not counted and
    /// `dropping` set.
    // The drain's state is passed piece by piece: borrowed separately, each stays in a
    // register or on the drain's frame in the inlined loop.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn drain_stretch(
        &mut self,
        names: &mut Names,
        flags: &ShutdownFlags,
        tally: &mut Tally,
        popped: usize,
        progress: &Progress,
        first: *mut Envelope<T>,
        len: usize,
    ) {
        let taken = &progress.taken;
        let base = taken.get();
        let mut i = 0;
        while i < len {
            // SAFETY: `i < len`: within the stretch.
            let env = unsafe { first.add(i) };
            if flags.shard_is_abandoned() {
                // Counted as dropped by `abandon`, not as a direct message.
                tally.counted += 1;
                i += 1;
                taken.set(base + i);
                // The source handed the message in place and nothing has moved it; this is
                // its one move out.
                // SAFETY: the drain owns the message, as just said.
                self.abandon(unsafe { env.read() });
                continue;
            }
            // The drain owns the message at `env` (handed in place, not yet taken).
            // SAFETY: a read of its topic field only.
            let topic = unsafe { (*env).topic };
            if names.learn(topic, &self.shared.topics) {
                // A topic first seen: the shard's patterns are matched against it before
                // its subscribers are looked up (inside the first-sight branch).
                self.catch_up_patterns(names);
            }
            let Actors {
                subs,
                out,
                shared,
                id,
                ..
            } = &mut *self;
            let Some(sub) = subs.get_mut(topic as usize).and_then(|subs| {
                if subs.len() == 1 {
                    subs.first_mut()
                } else {
                    None
                }
            }) else {
                i += 1;
                taken.set(base + i);
                // As above: the one move out of the message.
                // SAFETY: the drain owns the message, as just said.
                self.step_other(names, tally, popped + base + i, unsafe { env.read() });
                continue;
            };
            // A direct run: one `Context` for all its messages.
            let mut ctx = Context {
                topic: names.key(topic),
                subscription: &sub.id,
                out,
                replay: false,
            };
            let actor = &mut *sub.actor;
            loop {
                // The source handed the message in place and nothing has moved or dropped
                // it; the shared borrow ends with the call.
                // SAFETY: the drain owns the message, as just said; `i < len`.
                let msg = unsafe { &(*first.add(i)).msg };
                tally.sample_in -= 1;
                if tally.sample_in == 0 {
                    tally.sample_in = SAMPLE_EVERY;
                    timed_handle(&shared.counters[id.0], actor, &mut ctx, msg);
                } else {
                    actor.handle(&mut ctx, msg);
                }
                if std::mem::needs_drop::<Envelope<T>>() {
                    // Flagged: a panic in the message's `Drop` leaves it gone, not whole.
                    progress.dropping.set(true);
                    // The handler has returned and nothing else holds the message: its one
                    // drop.
                    // SAFETY: the drain owns the message, as just said; `i < len`.
                    unsafe { first.add(i).drop_in_place() };
                    progress.dropping.set(false);
                }
                i += 1;
                taken.set(base + i);
                // The run goes on while the next message is of the same topic (and no
                // forced stop came).
                if i == len || flags.shard_is_abandoned() {
                    break;
                }
                // A read of the next message's topic field, as above.
                // SAFETY: the drain owns the message; `i < len` was just checked.
                if unsafe { (*first.add(i)).topic } != topic {
                    break;
                }
            }
        }
    }

    /// A message of a topic with several subscribers or none: one message at a time,
    /// each call guarded ([`Actors::dispatch`]). `popped`: the drain's messages so far,
    /// this one included.
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

    /// After a panic unwound out of a drain: only a direct call can panic there (every
    /// other call is guarded on its own), so it was the lone subscriber of the message's
    /// topic, in its `handle` if the input gave the message back (`env`), else in the
    /// message's `Drop`. Handled as [`Actors::dispatch`] handles a panic of a lone
    /// subscriber.
    #[cold]
    #[inline(never)]
    fn after_panic(
        &mut self,
        names: &Names,
        env: Option<Envelope<T>>,
        payload: Box<dyn std::any::Any + Send>,
    ) {
        let Some(env) = env else {
            // In the message's `Drop`, after its handler returned: the message is gone
            // and the handler was fine; only counted, as `handle_caught` does.
            self.counters.panicked(PanicSite::Drop);
            return;
        };
        let topic = env.topic;
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
        let mut slot = std::mem::ManuallyDrop::new(env);
        // The slot is a local that only the guard uses from here on, and never drops.
        // SAFETY: `slot` holds the message, which the guard takes over (as just said).
        let mut env = unsafe { Guarded::new(&mut slot) };
        let caught = Caught::Call(payload);
        let verdict = handle_caught(
            shared, id, where_is, c, sub, &mut ctx, &mut env, caught, true,
        );
        if verdict == Verdict::Remove {
            subs.clear();
        }
    }
}

/// A direct handler call, timed: one in [`SAMPLE_EVERY`] messages.
#[cold]
#[inline(never)]
fn timed_handle<T: 'static>(
    counters: &ShardCounters,
    actor: &mut dyn Handler<T>,
    ctx: &mut Context<'_, T>,
    msg: &T,
) {
    let start = std::time::Instant::now();
    actor.handle(ctx, msg);
    let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    counters.record_handler_ns(ns);
}
