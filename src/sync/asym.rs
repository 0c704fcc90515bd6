//! Asymmetric fences: a cheap *light* fence on the hot path (a publisher's push) paired
//! with an expensive *heavy* fence on the rare path (a shard about to park, a lane being
//! closed), together as strong as a `SeqCst` fence on both sides (C++ P1202's
//! `asymmetric_thread_fence_light`/`_heavy`; folly's `asymmetricLightBarrier`).
//!
//! On Linux the heavy fence is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: before it
//! returns, every other running thread of the process has executed a full memory
//! barrier (and a thread not running has passed one in its context switch), so the
//! light side needs only to keep the compiler from reordering: a `compiler_fence`.
//! Argument for the store-buffering pair it serves (publisher: store `tail`, light,
//! load a flag; shard: store the flag, heavy, load `tail`): the barrier the heavy fence
//! forces on the publisher's CPU falls either before the publisher's store (then the
//! flag store, made before the heavy fence, is visible to the later load), or after
//! the store (then the store is drained from the store buffer before the shard's load).
//!
//! The mode is chosen per bus ([`decide`], from `Builder::fences`) before any of its rings
//! exist, and each ring and inbox keeps it (a `bool`, `asym`), so the two sides of a pair
//! always agree and two buses may differ. The process registers for expedited membarrier
//! once, the first time a bus asks for it ([`registration`]); a bus that asks for SeqCst
//! fences never registers it. (Under loom both sides are `fence(SeqCst)`, which is what
//! the models check: `loom.rs`.)
//!
//! # When the heavy fence fails at run time
//!
//! After a successful registration the kernel documents no failure of
//! `MEMBARRIER_CMD_PRIVATE_EXPEDITED`; one could still come from a seccomp filter installed
//! after the bus was built. Then [`heavy`] falls back, for the rest of the process, to
//! `MEMBARRIER_CMD_GLOBAL`: the original membarrier, documented to make *every* thread of
//! *every* process pass a point where its memory accesses match program order before the
//! call returns. That is the same guarantee over a wider set, so the pairing stays sound;
//! it is slower (it waits for a scheduler grace period, milliseconds) and needs no
//! registration.
//!
//! If that fails too, no sound fallback is left: the publisher's side is a compiler
//! fence, and only the kernel can make another CPU execute a barrier. (The mprotect
//! trick, a TLB shootdown by changing a page's protection, forces one only where the
//! shootdown is done by interrupts: not on aarch64, nor on x86 CPUs with broadcast TLB
//! invalidation, which Linux uses from 6.15 on AMD. Signalling every thread, as liburcu's
//! signal flavour does, hangs on a thread that blocks the signal and takes a signal
//! number from the host.) [`heavy`] then returns `false` after a `fence(SeqCst)`, and
//! each caller does what is still sound for it: a shard that is about to park parks with
//! a timeout (`DEGRADED_PARK`) instead of indefinitely, so a wake-up missed by the
//! store-buffering race costs that much latency, never a hang or a message; a lane's close
//! waits [`grace`] before it reads `tail`, so a push whose `closing` load came too early
//! has had its `tail` store leave the store buffer (the memory model does not promise
//! that a store is visible within a bound; every CPU drains its store buffer within
//! nanoseconds while it runs, and at the interrupt or context switch that stops it).
//! Each step down is reported once with `tracing` (warn, then error). The process is
//! never aborted.

use std::io;
use std::sync::atomic::{compiler_fence, fence, AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::fences::{FenceMode, Fences};

/// The environment variable that, set when a bus is built, gives it SeqCst fences
/// whatever its builder asked for.
pub(crate) const ENV_OVERRIDE: &str = "SHARDBUS_NO_MEMBARRIER";

/// Decides a new bus's fences: SeqCst when asked for or overridden by [`ENV_OVERRIDE`];
/// else membarrier if the process is (or now becomes) registered; else SeqCst for
/// [`Fences::Auto`], the reason for [`Fences::Membarrier`]. Called by `Builder::build`
/// before it makes any ring.
pub(crate) fn decide(requested: Fences) -> Result<FenceMode, io::Error> {
    if requested == Fences::SeqCst || std::env::var_os(ENV_OVERRIDE).is_some() {
        return Ok(FenceMode::SeqCst);
    }
    match registration() {
        Ok(()) => Ok(FenceMode::Membarrier),
        Err(why) if requested == Fences::Membarrier => Err(why.to_io()),
        Err(why) => {
            tracing::debug!(reason = %why.to_io(), "membarrier unavailable; SeqCst fences");
            Ok(FenceMode::SeqCst)
        }
    }
}

/// The hot path's side.
#[inline(always)]
pub(crate) fn light(asym: bool) {
    if asym {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The rare path's side. `true` when it is as strong as a `SeqCst` fence paired with
/// [`light`]; `false` only in a membarrier bus whose heavy fences the kernel has stopped
/// serving (see the module docs for what the caller then does).
#[must_use]
pub(crate) fn heavy(asym: bool) -> bool {
    fence(Ordering::SeqCst);
    if asym {
        HEAVY.run(sys_membarrier)
    } else {
        true
    }
}

/// After a [`heavy`] that returned `false`, before a lane's close reads `tail`: lets a
/// racing push's `tail` store leave its CPU's store buffer (module docs).
pub(crate) fn grace() {
    std::thread::sleep(std::time::Duration::from_millis(1));
}

/// Why the process is not registered for expedited membarrier. `Clone`, unlike
/// `io::Error`, so that the one outcome can be kept and reported to every bus.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unavailable {
    /// Not Linux.
    #[cfg(not(target_os = "linux"))]
    NotLinux,
    /// `MEMBARRIER_CMD_QUERY` failed with this `errno` (no such system call, or a seccomp
    /// filter refused it).
    Query(i32),
    /// The kernel does not offer `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (before 4.14).
    NotOffered,
    /// The registration failed with this `errno`.
    Register(i32),
}

impl Unavailable {
    fn to_io(self) -> io::Error {
        let (errno, what) = match self {
            #[cfg(not(target_os = "linux"))]
            Unavailable::NotLinux => {
                return io::Error::new(io::ErrorKind::Unsupported, "membarrier(2) is Linux-only")
            }
            Unavailable::NotOffered => {
                return io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel does not offer MEMBARRIER_CMD_PRIVATE_EXPEDITED",
                )
            }
            Unavailable::Query(errno) => (errno, "MEMBARRIER_CMD_QUERY"),
            Unavailable::Register(errno) => (errno, "MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED"),
        };
        let os = io::Error::from_raw_os_error(errno);
        io::Error::new(os.kind(), format!("membarrier({what}): {os}"))
    }
}

/// Registers the process for expedited membarrier, the first time it is called (a
/// registration cannot be undone); later calls return the first outcome.
fn registration() -> Result<(), Unavailable> {
    static REGISTRATION: OnceLock<Result<(), Unavailable>> = OnceLock::new();
    *REGISTRATION.get_or_init(register)
}

#[cfg(target_os = "linux")]
const CMD_QUERY: libc::c_long = 0;
#[cfg(target_os = "linux")]
const CMD_GLOBAL: libc::c_long = 1;
#[cfg(target_os = "linux")]
const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
#[cfg(target_os = "linux")]
const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// `membarrier(cmd, 0, 0)`: 0 or a non-negative bit set on success, -1 with `errno`.
#[cfg(target_os = "linux")]
fn sys_membarrier(cmd: libc::c_long) -> Result<libc::c_long, i32> {
    // `membarrier` takes three integers and touches no memory of ours.
    // SAFETY: by the argument stated in the line just above.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) };
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

#[cfg(target_os = "linux")]
fn register() -> Result<(), Unavailable> {
    let offered = sys_membarrier(CMD_QUERY).map_err(Unavailable::Query)?;
    if offered & CMD_PRIVATE_EXPEDITED == 0 {
        return Err(Unavailable::NotOffered);
    }
    sys_membarrier(CMD_REGISTER_PRIVATE_EXPEDITED).map_err(Unavailable::Register)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn register() -> Result<(), Unavailable> {
    Err(Unavailable::NotLinux)
}

/// Never called: without registration no bus is in membarrier mode.
#[cfg(not(target_os = "linux"))]
fn sys_membarrier(_cmd: i64) -> Result<i64, i32> {
    Err(0)
}

#[cfg(target_os = "linux")]
type Cmd = libc::c_long;
#[cfg(not(target_os = "linux"))]
type Cmd = i64;

/// The heavy fence's command for the rest of the process.
static HEAVY: HeavyPath = HeavyPath::new();

/// [`HeavyPath::step`]: `MEMBARRIER_CMD_PRIVATE_EXPEDITED`, the normal case.
const STEP_PRIVATE: u8 = 0;
/// [`HeavyPath::step`]: `MEMBARRIER_CMD_GLOBAL`, after the private command failed.
const STEP_GLOBAL: u8 = 1;
/// [`HeavyPath::step`]: no membarrier command works; heavy fences return `false`.
const STEP_NONE: u8 = 2;

/// Which membarrier command the heavy fence uses; only ever steps down.
struct HeavyPath {
    /// Written by whichever heavy fence first sees the current command fail; read by
    /// every heavy fence. Relaxed: it only chooses the command; what makes the fence is
    /// the command's success, which each call checks for itself.
    step: AtomicU8,
}

impl HeavyPath {
    const fn new() -> Self {
        Self {
            step: AtomicU8::new(STEP_PRIVATE),
        }
    }

    /// One heavy fence through `sys` (the system call, or a test's stand-in): `true` once
    /// a command succeeded, `false` if none is left.
    fn run(&self, sys: impl Fn(Cmd) -> Result<Cmd, i32>) -> bool {
        loop {
            let step = self.step.load(Ordering::Relaxed);
            let cmd = match step {
                STEP_PRIVATE => cmd_private(),
                STEP_GLOBAL => cmd_global(),
                _ => {
                    debug_assert_eq!(step, STEP_NONE);
                    return false;
                }
            };
            let errno = match sys(cmd) {
                Ok(_) => return true,
                Err(errno) => errno,
            };
            // Step down once, whoever gets here first; the others retry with the new step.
            // Relaxed: as the field says.
            if self
                .step
                .compare_exchange(step, step + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                let os = io::Error::from_raw_os_error(errno);
                if step == STEP_PRIVATE {
                    tracing::warn!(
                        error = %os,
                        "membarrier(PRIVATE_EXPEDITED) failed after registration; \
                         heavy fences use membarrier(GLOBAL) from now on"
                    );
                } else {
                    tracing::error!(
                        error = %os,
                        "membarrier(GLOBAL) failed too; shards park with a timeout and \
                         lane closes wait a grace period from now on"
                    );
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn cmd_private() -> Cmd {
    CMD_PRIVATE_EXPEDITED
}
#[cfg(target_os = "linux")]
fn cmd_global() -> Cmd {
    CMD_GLOBAL
}
#[cfg(not(target_os = "linux"))]
fn cmd_private() -> Cmd {
    8
}
#[cfg(not(target_os = "linux"))]
fn cmd_global() -> Cmd {
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// The run-time fallback: private expedited while it works; on its failure global
    /// (for this call and every later one); on that one's failure `false` from then on,
    /// without further system calls.
    #[test]
    fn heavy_steps_down_private_then_global_then_none() {
        let path = HeavyPath::new();
        let calls = RefCell::new(Vec::new());
        let fail = RefCell::new(Vec::<Cmd>::new());
        let sys = |cmd: Cmd| {
            calls.borrow_mut().push(cmd);
            if fail.borrow().contains(&cmd) {
                Err(libc_eperm())
            } else {
                Ok(0)
            }
        };
        assert!(path.run(sys));
        assert_eq!(*calls.borrow(), [cmd_private()]);

        fail.borrow_mut().push(cmd_private());
        assert!(path.run(sys));
        assert!(path.run(sys));
        assert_eq!(
            *calls.borrow(),
            [cmd_private(), cmd_private(), cmd_global(), cmd_global()]
        );

        fail.borrow_mut().push(cmd_global());
        assert!(!path.run(sys));
        assert!(!path.run(sys));
        assert_eq!(calls.borrow().len(), 5, "no call once none is left");
    }

    fn libc_eperm() -> i32 {
        1
    }

    /// Set in the child process of [`degraded_heavy_fences_lose_nothing`].
    const DEGRADED_CHILD: &str = "SHARDBUS_TEST_DEGRADED_CHILD";

    /// When no membarrier command works any more (forced here; a seccomp filter installed
    /// after `build()` would do it), a membarrier bus neither aborts nor loses a message:
    /// the close race keeps every accepted push, and parked shards still get every
    /// message. Runs in a child process (this test binary, re-executed), since the step
    /// down is for the whole process. Where membarrier is unavailable there is nothing
    /// to step down from, and the test checks only that `Membarrier` is refused.
    #[test]
    fn degraded_heavy_fences_lose_nothing() {
        if std::env::var_os(ENV_OVERRIDE).is_some() || decide(Fences::Membarrier).is_err() {
            assert!(decide(Fences::SeqCst).is_ok());
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sync::asym::tests::degraded_child", "--ignored"])
            .args(["--nocapture", "--test-threads=1"])
            .env(DEGRADED_CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child: {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run in a child process by degraded_heavy_fences_lose_nothing"]
    fn degraded_child() {
        use std::sync::mpsc;
        use std::time::Duration;

        use crate::{Bus, Context};

        assert!(
            std::env::var_os(DEGRADED_CHILD).is_some(),
            "run through degraded_heavy_fences_lose_nothing"
        );
        HEAVY.step.store(STEP_NONE, Ordering::Relaxed);
        assert!(!heavy(true), "no membarrier command left");
        assert!(heavy(false), "SeqCst fences are unaffected");

        crate::ring::spsc::tests::close_race_rounds(true, 100);

        let bus = Bus::<u32>::builder()
            .shards(2)
            .pin_threads(false)
            .fences(Fences::Membarrier)
            .build()
            .unwrap();
        assert_eq!(bus.fence_mode(), FenceMode::Membarrier);
        let (tx, rx) = mpsc::channel();
        let topics: Vec<String> = (0..2)
            .map(|shard| {
                (0..)
                    .map(|i| format!("d{i}"))
                    .find(|t| bus.shard_of(t).unwrap().index() == shard)
                    .unwrap()
            })
            .collect();
        for topic in &topics {
            let tx = tx.clone();
            bus.subscribe(topic.as_str(), move |_: &mut Context<'_, u32>, m: &u32| {
                tx.send(*m).unwrap();
            })
            .unwrap();
        }
        // One message at a time, each after its shard has had time to go idle and park.
        let mut publisher = bus.publisher();
        for i in 0..100u32 {
            let topic = topics[i as usize % 2].as_str();
            if i % 2 == 0 {
                publisher.publish(topic, i).unwrap();
            } else {
                bus.publish(topic, i).unwrap();
            }
            assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(i));
            std::thread::sleep(Duration::from_micros(200));
        }
        // The shutdown closes the publisher's lanes (each close waits its grace period).
        let stats = bus.shutdown();
        assert_eq!(stats.handled(), 100);
        drop(publisher);
    }

    /// `SeqCst` never registers and never fails; `Auto` gives what `Membarrier` gives, or
    /// SeqCst where `Membarrier` is refused.
    #[test]
    fn decide_per_request() {
        if std::env::var_os(ENV_OVERRIDE).is_some() {
            return;
        }
        assert_eq!(decide(Fences::SeqCst).unwrap(), FenceMode::SeqCst);
        match decide(Fences::Membarrier) {
            Ok(mode) => {
                assert_eq!(mode, FenceMode::Membarrier);
                assert_eq!(decide(Fences::Auto).unwrap(), FenceMode::Membarrier);
            }
            Err(_) => assert_eq!(decide(Fences::Auto).unwrap(), FenceMode::SeqCst),
        }
    }
}
