//! Request-reply through the public API: `Bus::request` from std threads and
//! `Bus::request_async` on a tokio multi-thread runtime.
//!
//! Each wait on another thread or task is bounded by `WATCHDOG`, a hang detector rather than
//! a timing assertion. The `NoReply` cases give the request a timeout (60 s) far longer than
//! the watchdog (10 s): a `NoReply` that came only at the request's timeout fails the test.
//! The timeouts that are meant to pass are short; the handler holds the `Reply` until the
//! test has seen the timeout, so no test depends on a sleep being long enough.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::thread;
use std::time::Duration;

use shardbus::{Bus, Context, Handler, Reply, RequestError};

/// Bounds every wait on another thread or task.
const WATCHDOG: Duration = Duration::from_secs(10);
/// A request timeout that must never be reached in the tests that expect another outcome.
const LONG: Duration = Duration::from_secs(60);
/// A request timeout that is meant to pass.
const SHORT: Duration = Duration::from_millis(100);

/// A request: a number and the handle to answer it with.
type Req = (u64, Reply<u64>);

fn bus(shards: usize) -> Bus<Req> {
    Bus::<Req>::builder()
        .shards(shards)
        .pin_threads(false)
        .build()
        .unwrap()
}

/// A bus whose topic `"double"` answers `n * 2` and `"square"` answers `n * n`.
fn service(shards: usize) -> Bus<Req> {
    let bus = bus(shards);
    bus.subscribe("double", |_: &mut Context<'_, Req>, (n, reply): &Req| {
        reply.send(n * 2).unwrap();
    })
    .unwrap();
    bus.subscribe("square", |_: &mut Context<'_, Req>, (n, reply): &Req| {
        reply.send(n * n).unwrap();
    })
    .unwrap();
    bus
}

/// Runs `f` on a thread of its own and waits for its result for at most `WATCHDOG`.
fn within_watchdog<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(WATCHDOG)
        .unwrap_or_else(|_| panic!("{what}: no outcome within {WATCHDOG:?}"))
}

/// Runs `fut` as a task of its own and waits for it for at most `WATCHDOG`. The watchdog
/// waits on the task's handle, so its expiry never polls the request itself (a request
/// that nothing wakes fails here rather than complete when the watchdog polls it).
async fn watch_task<R: Send + 'static>(
    what: &str,
    fut: impl std::future::Future<Output = R> + Send + 'static,
) -> R {
    tokio::time::timeout(WATCHDOG, tokio::spawn(fut))
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {WATCHDOG:?}"))
        .unwrap()
}

#[test]
fn blocking_requests_from_many_threads_each_get_their_own_answer() {
    let bus = Arc::new(service(2));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let bus = bus.clone();
            thread::spawn(move || {
                (0..100u64)
                    .map(|i| {
                        let n = t * 1000 + i;
                        let topic = if i % 2 == 0 { "double" } else { "square" };
                        let got = bus.request(topic, |reply| (n, reply), LONG).unwrap();
                        (n, got)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut answered = 0;
    for t in threads {
        for (n, got) in t.join().unwrap() {
            let want = if (n % 1000) % 2 == 0 { n * 2 } else { n * n };
            assert_eq!(got, want, "request {n}");
            answered += 1;
        }
    }
    assert_eq!(answered, 400);
    let bus = Arc::try_unwrap(bus).unwrap();
    assert_eq!(bus.shutdown().handled(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_requests_from_many_tasks_each_get_their_own_answer() {
    let bus = Arc::new(service(2));
    let tasks: Vec<_> = (0..500u64)
        .map(|n| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let got = bus.request_async("double", |reply| (n, reply), LONG).await;
                (n, got.unwrap())
            })
        })
        .collect();
    let mut seen = vec![false; 500];
    for task in tasks {
        let (n, got) = tokio::time::timeout(WATCHDOG, task)
            .await
            .expect("watchdog")
            .unwrap();
        assert_eq!(got, n * 2);
        assert!(!seen[n as usize], "request {n} answered twice");
        seen[n as usize] = true;
    }
    assert!(seen.iter().all(|&s| s));
    let bus = Arc::try_unwrap(bus).unwrap();
    assert_eq!(bus.shutdown().handled(), 500);
}

/// A bus whose `"hold"` handler takes each `Reply` out and hands it to the test.
fn holding_bus() -> (Bus<Req>, mpsc::Receiver<(u64, Reply<u64>)>) {
    let bus = bus(1);
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    bus.subscribe("hold", move |_: &mut Context<'_, Req>, (n, reply): &Req| {
        let taken = reply.take().expect("a fresh reply");
        tx.lock().unwrap().send((*n, taken)).unwrap();
    })
    .unwrap();
    (bus, rx)
}

#[test]
fn a_blocking_request_times_out_while_the_handler_holds_its_reply() {
    let (bus, held) = holding_bus();
    let got = bus.request("hold", |reply| (7, reply), SHORT);
    assert!(matches!(got, Err(RequestError::TimedOut)), "{got:?}");
    // The handler got the request and still holds its reply: answering it now finds the
    // requester gone and gives the value back.
    let (n, reply) = held.recv_timeout(WATCHDOG).expect("the handler ran");
    assert_eq!(n, 7);
    assert!(reply.is_closed());
    assert_eq!(reply.send(14), Err(14));

    // A held reply answered from another thread before the timeout is delivered.
    let bus = Arc::new(bus);
    let requester = {
        let bus = bus.clone();
        thread::spawn(move || bus.request("hold", |reply| (8, reply), LONG))
    };
    let (n, reply) = held.recv_timeout(WATCHDOG).expect("the handler ran");
    assert_eq!(n, 8);
    assert_eq!(reply.send(16), Ok(()));
    assert_eq!(requester.join().unwrap().unwrap(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_request_times_out_while_the_handler_holds_its_reply() {
    let (bus, held) = holding_bus();
    let bus = Arc::new(bus);
    let b = bus.clone();
    let got = watch_task("the request's own timeout", async move {
        b.request_async("hold", |reply| (9, reply), SHORT).await
    })
    .await;
    assert!(matches!(got, Err(RequestError::TimedOut)), "{got:?}");
    let (n, reply) = held.recv_timeout(WATCHDOG).expect("the handler ran");
    assert_eq!(n, 9);
    assert_eq!(reply.send(18), Err(18), "the requester is gone");
}

#[test]
fn a_panicking_handler_gives_no_reply_at_once() {
    let bus = Arc::new(bus(2));
    let dead = Arc::new(AtomicUsize::new(0));
    bus.subscribe("boom", |_: &mut Context<'_, Req>, (n, _): &Req| {
        panic!("handler fails on {n}");
    })
    .unwrap();
    for n in 0..3 {
        let b = bus.clone();
        let got = within_watchdog("request to a panicking handler", move || {
            b.request("boom", |reply| (n, reply), LONG)
        });
        assert!(matches!(got, Err(RequestError::NoReply)), "{got:?}");
        dead.fetch_add(1, Relaxed);
    }
    assert_eq!(dead.load(Relaxed), 3);
    let stats = Arc::try_unwrap(bus).unwrap().shutdown();
    assert_eq!(stats.panics(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_request_to_a_panicking_handler_gives_no_reply_at_once() {
    let bus = bus(1);
    bus.subscribe("boom", |_: &mut Context<'_, Req>, _: &Req| {
        panic!("handler fails");
    })
    .unwrap();
    let bus = Arc::new(bus);
    let b = bus.clone();
    let got = watch_task("NoReply before the request's own timeout", async move {
        b.request_async("boom", |reply| (1, reply), LONG).await
    })
    .await;
    assert!(matches!(got, Err(RequestError::NoReply)), "{got:?}");
}

#[test]
fn a_request_without_a_subscriber_is_dead_lettered_and_gives_no_reply_at_once() {
    let dead = Arc::new(AtomicUsize::new(0));
    let bus = {
        let dead = dead.clone();
        Bus::<Req>::builder()
            .shards(1)
            .pin_threads(false)
            .dead_letter(move |_| {
                dead.fetch_add(1, Relaxed);
            })
            .build()
            .unwrap()
    };
    let bus = Arc::new(bus);
    let b = bus.clone();
    let got = within_watchdog("request to nobody", move || {
        b.request("nobody", |reply| (1, reply), LONG)
    });
    assert!(matches!(got, Err(RequestError::NoReply)), "{got:?}");
    assert_eq!(dead.load(Relaxed), 1);
}

/// Keeps every `Reply` it is sent, unanswered, until it is stopped.
struct Hoarder {
    kept: Vec<Reply<u64>>,
    count: Arc<AtomicUsize>,
}

impl Handler<Req> for Hoarder {
    fn handle(&mut self, _: &mut Context<'_, Req>, (_, reply): &Req) {
        self.kept.push(reply.take().expect("a fresh reply"));
        self.count.fetch_add(1, Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pending_at_shutdown_all_end_with_an_error() {
    let bus = Arc::new(bus(2));
    let kept = Arc::new(AtomicUsize::new(0));
    bus.subscribe(
        "later",
        Hoarder {
            kept: Vec::new(),
            count: kept.clone(),
        },
    )
    .unwrap();
    let blocking: Vec<_> = (0..8u64)
        .map(|n| {
            let bus = bus.clone();
            thread::spawn(move || bus.request("later", |reply| (n, reply), LONG))
        })
        .collect();
    let tasks: Vec<_> = (0..8u64)
        .map(|n| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.request_async("later", |reply| (n, reply), LONG).await })
        })
        .collect();
    // Every request has reached the actor, which holds its reply.
    let start = std::time::Instant::now();
    while kept.load(Relaxed) < 16 {
        assert!(
            start.elapsed() < WATCHDOG,
            "requests stuck before the actor"
        );
        tokio::task::yield_now().await;
        thread::yield_now();
    }
    // Closing stops the actor; its state, with every reply, is dropped.
    let closer = {
        let bus = bus.clone();
        tokio::task::spawn_blocking(move || bus.close().unwrap())
    };
    let stats = tokio::time::timeout(WATCHDOG, closer)
        .await
        .expect("close returns")
        .unwrap();
    assert_eq!(stats.handled(), 16);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let outcomes: Vec<_> = blocking.into_iter().map(|t| t.join().unwrap()).collect();
        tx.send(outcomes).unwrap();
    });
    let outcomes = rx.recv_timeout(WATCHDOG).expect("blocking requests end");
    assert_eq!(outcomes.len(), 8);
    for got in outcomes {
        assert!(matches!(got, Err(RequestError::NoReply)), "{got:?}");
    }
    for task in tasks {
        let got = tokio::time::timeout(WATCHDOG, task)
            .await
            .expect("async requests end")
            .unwrap();
        assert!(matches!(got, Err(RequestError::NoReply)), "{got:?}");
    }
    // After the close: refused at once, with the message (and its reply) back.
    let got = bus.request("later", |reply| (99, reply), LONG);
    let Err(RequestError::Closed((n, reply))) = got else {
        panic!("expected Closed, got {got:?}");
    };
    assert_eq!(n, 99);
    assert!(reply.is_closed());
    let got = bus.request_async("later", |reply| (100, reply), LONG).await;
    assert!(
        matches!(got, Err(RequestError::Closed((100, _)))),
        "{got:?}"
    );
}

#[test]
fn a_request_with_an_invalid_topic_gives_the_message_back() {
    let bus = service(1);
    let got = bus.request("", |reply| (5, reply), LONG);
    assert!(
        matches!(got, Err(RequestError::InvalidTopic((5, _)))),
        "{got:?}"
    );
}

/// A bus that its handlers reach through a `Weak` (a strong one would keep it alive).
type Slot = Arc<OnceLock<Weak<Bus<Req>>>>;

#[test]
fn a_request_from_a_handler_of_the_same_bus_would_deadlock() {
    let bus = Arc::new(
        Bus::<Req>::builder()
            .shards(2)
            .pin_threads(false)
            .drop_timeout(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let slot: Slot = Arc::new(OnceLock::new());
    slot.set(Arc::downgrade(&bus)).unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    {
        let answered = answered.clone();
        bus.subscribe(
            "double",
            move |_: &mut Context<'_, Req>, (n, reply): &Req| {
                answered.fetch_add(1, Relaxed);
                let _ = reply.send(n * 2);
            },
        )
        .unwrap();
    }
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    bus.subscribe("ask", move |_: &mut Context<'_, Req>, (n, outer): &Req| {
        let bus = slot.get().and_then(Weak::upgrade).expect("bus alive");
        let blocking = bus.request("double", |reply| (*n, reply), LONG);
        // The async form, polled here: refused on its first poll.
        let mut fut = pin!(bus.request_async("double", |reply| (n + 1, reply), LONG));
        let polled = fut
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()));
        let outcome = match polled {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        };
        tx.lock().unwrap().send((blocking, outcome)).unwrap();
        let _ = outer.send(0);
    })
    .unwrap();
    let ask = within_watchdog_bus(&bus, 5);
    assert_eq!(ask, 0);
    let (blocking, polled) = rx.recv_timeout(WATCHDOG).expect("the handler reported");
    let Err(RequestError::WouldDeadlock((5, _))) = blocking else {
        panic!("blocking: expected WouldDeadlock with the message, got {blocking:?}");
    };
    let Some(Err(RequestError::WouldDeadlock((6, _)))) = polled else {
        panic!("async: expected WouldDeadlock on the first poll, got {polled:?}");
    };
    // Nothing was published to "double" by the refused requests.
    bus.flush().unwrap();
    assert_eq!(answered.load(Relaxed), 0);
}

/// `bus.request("ask", n)` from a thread of its own, bounded by the watchdog.
fn within_watchdog_bus(bus: &Arc<Bus<Req>>, n: u64) -> u64 {
    let bus = bus.clone();
    within_watchdog("request to a handler that requests", move || {
        bus.request("ask", |reply| (n, reply), LONG)
    })
    .unwrap()
}

/// A message that is a request or not.
enum Slow {
    Plain(u64),
    Ask(u64, Reply<u64>),
}

#[test]
fn a_request_into_an_inbox_that_stays_full_gives_the_message_back_at_its_timeout() {
    let bus = Arc::new(
        Bus::<Slow>::builder()
            .shards(1)
            .capacity(2)
            .pin_threads(false)
            .build()
            .unwrap(),
    );
    // The handler waits at the gate on its first message, so the inbox fills behind it.
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let gate_rx = Mutex::new(gate_rx);
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let handled = Arc::new(AtomicUsize::new(0));
    {
        let handled = handled.clone();
        bus.subscribe("slow", move |_: &mut Context<'_, Slow>, msg: &Slow| {
            if let Slow::Plain(0) = msg {
                entered_tx.lock().unwrap().send(()).unwrap();
                gate_rx.lock().unwrap().recv_timeout(WATCHDOG).unwrap();
            }
            if let Slow::Ask(n, reply) = msg {
                let _ = reply.send(*n);
            }
            handled.fetch_add(1, Relaxed);
        })
        .unwrap();
    }
    bus.publish("slow", Slow::Plain(0)).unwrap();
    entered_rx.recv_timeout(WATCHDOG).expect("the handler ran");
    let mut queued = 0;
    loop {
        match bus.try_publish("slow", Slow::Plain(100 + queued)) {
            Ok(()) => queued += 1,
            Err(e) => {
                assert!(e.is_full(), "{e:?}");
                break;
            }
        }
    }
    assert!(queued >= 1, "the inbox took {queued} messages");
    let b = bus.clone();
    let got = within_watchdog("request into a full inbox", move || {
        b.request("slow", |reply| Slow::Ask(7, reply), SHORT)
    });
    let Err(RequestError::Full(Slow::Ask(7, reply))) = got else {
        panic!("expected Full with the message, got {got:?}");
    };
    assert!(reply.is_closed());
    gate_tx.send(()).unwrap();
    bus.flush().unwrap();
    assert_eq!(handled.load(Relaxed), 1 + queued as usize);
}
