//! What a request allocates: the number the docs of `Bus::request` and `Bus::request_async`
//! state, counted.
//!
//! A counting global allocator counts the allocations made on the requesting thread (the
//! test's own: a request's one-shot channel is made there, as is its deadline's entry with
//! the timer); what the shard does with the message is measured by `rt_alloc`, and the
//! threads around it (the shard parking, the timer waking) are not the request's cost. Each form warms up (topic caches, the thread handle the
//! blocking wait parks on, the async timer thread), then runs `MEASURED` requests one after
//! another and compares the allocation count with the number per request the docs give.
//!
//! The async form is polled by hand with a waker made once, and its handler hands the
//! `Reply` over through a slot rather than answer at once, so every request takes the same
//! path: first poll publishes and registers its deadline with the timer, the answer comes,
//! the second poll completes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use shardbus::{Bus, Context, Reply};

/// Counts allocations, then defers to the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// The bytes those allocations asked for.
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the requesting thread (the test's own): only its allocations are counted.
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Counts an allocation of `bytes` if the calling thread is the requesting one.
fn count(bytes: usize) {
    // `try_with`: a thread being torn down has no slot any more; it is not counted.
    if COUNTED.try_with(|c| c.get()).unwrap_or(false) {
        // Relaxed: a count read on the thread that made it.
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

// every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees are ours; the counter is a plain atomic that never allocates.
// SAFETY: by the ownership stated in the lines just above.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: forwarded as is; `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes so far.
fn allocations() -> (u64, u64) {
    // Relaxed: see `Counting::alloc`; each answer's receipt orders the handler's work first.
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

/// Allocations and bytes since `before`.
fn since(before: (u64, u64)) -> (u64, u64) {
    let now = allocations();
    (now.0 - before.0, now.1 - before.1)
}

type Req = (u64, Reply<u64>);

const WARMUP: u64 = 200;
const MEASURED: u64 = 1_000;
/// The one-shot channel of a `u64` answer on a 64-bit target, in bytes.
const CHANNEL_BYTES: u64 = 32;
const LONG: Duration = Duration::from_secs(60);

/// A waker that does nothing: the test polls again itself once the answer is sent.
struct Nothing;

impl Wake for Nothing {
    fn wake(self: Arc<Self>) {}
}

#[test]
fn a_request_allocates_its_one_shot_channel_and_nothing_else() {
    COUNTED.with(|c| c.set(true));
    let bus = Bus::<Req>::builder()
        .shards(1)
        .pin_threads(false)
        .build()
        .unwrap();
    bus.subscribe("double", |_: &mut Context<'_, Req>, (n, reply): &Req| {
        reply.send(n * 2).unwrap();
    })
    .unwrap();
    let held: Arc<Mutex<Option<Reply<u64>>>> = Arc::new(Mutex::new(None));
    {
        let held = held.clone();
        bus.subscribe("hold", move |_: &mut Context<'_, Req>, (_, reply): &Req| {
            *held.lock().unwrap() = reply.take();
        })
        .unwrap();
    }

    // Blocking: the one-shot channel, nothing else.
    let blocking = |n: u64| {
        let got = bus.request("double", |reply| (n, reply), LONG).unwrap();
        assert_eq!(got, n * 2);
    };
    (0..WARMUP).for_each(blocking);
    let before = allocations();
    (0..MEASURED).for_each(blocking);
    let blocking_allocs = since(before);

    // Async, polled by hand: publish and register on the first poll, answer, complete.
    let waker = Waker::from(Arc::new(Nothing));
    let asynchronous = |n: u64| {
        let mut cx = TaskContext::from_waker(&waker);
        let mut fut = pin!(bus.request_async("hold", |reply| (n, reply), LONG));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let deadline = Instant::now() + LONG;
        let reply = loop {
            if let Some(reply) = held.lock().unwrap().take() {
                break reply;
            }
            assert!(Instant::now() < deadline, "the handler never ran");
            std::hint::spin_loop();
        };
        reply.send(n * 2).unwrap();
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(got) => assert_eq!(got.unwrap(), n * 2),
            Poll::Pending => panic!("answered, yet pending"),
        }
    };
    (0..WARMUP).for_each(asynchronous);
    let before = allocations();
    (0..MEASURED).for_each(asynchronous);
    let async_allocs = since(before);

    println!("blocking: {blocking_allocs:?}, async: {async_allocs:?} for {MEASURED} requests");
    assert_eq!(
        blocking_allocs.0, MEASURED,
        "a blocking request allocates exactly its one-shot channel"
    );
    assert_eq!(
        async_allocs.0, MEASURED,
        "an async request allocates exactly its one-shot channel (the timer's map keeps its node)"
    );
    // The channel: its state byte, room for the `u64` answer and for the waiting thread's
    // or task's handle (a `Waker`), padded; 64-bit targets.
    #[cfg(target_pointer_width = "64")]
    {
        assert_eq!(blocking_allocs.1, CHANNEL_BYTES * MEASURED);
        assert_eq!(async_allocs.1, CHANNEL_BYTES * MEASURED);
    }
    bus.shutdown();
}
