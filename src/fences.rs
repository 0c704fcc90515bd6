//! How a bus orders a publisher's push with a shard going to sleep and with a lane being
//! closed: the option ([`Fences`]) and what a bus got ([`FenceMode`]).

/// How a bus orders a publisher's push with the rare events that must see it (a shard
/// about to park, a lane being closed), set with
/// [`Builder::fences`](crate::Builder::fences). Default [`Fences::SeqCst`].
///
/// Both modes are equally correct; they differ in who pays:
///
/// - **membarrier**: a push costs only a compiler fence, and the rare side calls
///   `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (Linux 4.14+). That needs the process
///   to be registered for it, once and for good; from then on each such call interrupts
///   (an inter-processor interrupt) every CPU that is running a thread of this process at
///   that moment: the application's threads too, not only the bus's, and also those of a
///   bus built with [`Fences::SeqCst`]. A call is made when a shard of a membarrier bus
///   is about to park (at most once per idle period, after its spin and yield back-off)
///   and when one of its lanes is closed (at shutdown). Each costs the interrupted
///   threads a few microseconds (more in a virtual machine, where the interrupt is a VM
///   exit); idle CPUs and other processes are not touched.
/// - **SeqCst fences**: a push pays a `fence(SeqCst)` (an `mfence` or locked
///   instruction on x86, tens of cycles), the rare side the same; nothing reaches
///   other threads.
///
/// **Why SeqCst is the default.** Measured side by side (`docs/benchmarks.md`, "Fences"):
/// at saturation, one producer to one shard, membarrier moves 1.2× to 1.5× the messages
/// a second of SeqCst fences; at light load (a message every 10 µs, 100 µs, 1 ms) the same
/// latency costs the serving shard about 3×, 2× and 1.8× the CPU with membarrier, because
/// the heavy fence on its way to sleep takes long enough that it rarely sleeps, and its
/// interrupts reach the application's threads. A bus that runs saturated and owns its
/// cores asks for [`Fences::Membarrier`] (or [`Fences::Auto`]); the default keeps a bus
/// frugal when idle and out of the rest of the process.
///
/// The environment variable `SHARDBUS_NO_MEMBARRIER`, set (to anything) when a bus is
/// built, overrides this option for that bus: it gets SeqCst fences, and a bus that
/// asked for [`Fences::Membarrier`] builds without error. It is meant for operators who
/// cannot change the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Fences {
    /// Membarrier where the kernel offers it (the first such bus registers the process),
    /// SeqCst fences where not (another OS, a kernel before 4.14, a seccomp filter that
    /// refuses the call). [`Bus::fence_mode`](crate::Bus::fence_mode) says which.
    Auto,
    /// Membarrier, or `build()` fails with
    /// [`Error::MembarrierUnavailable`](crate::Error::MembarrierUnavailable).
    Membarrier,
    /// SeqCst fences on both sides; the process is not registered for membarrier by this
    /// bus. The default.
    #[default]
    SeqCst,
}

/// The fences a bus was built with ([`Bus::fence_mode`](crate::Bus::fence_mode)); see
/// [`Fences`] for what each costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FenceMode {
    /// A compiler fence per push; `membarrier(2)` on the rare side.
    Membarrier,
    /// A `fence(SeqCst)` on both sides.
    SeqCst,
}

impl FenceMode {
    /// A short name: `"membarrier"` or `"seqcst-fence"` (as benchmark reports print it).
    pub fn as_str(self) -> &'static str {
        match self {
            FenceMode::Membarrier => "membarrier",
            FenceMode::SeqCst => "seqcst-fence",
        }
    }
}

impl std::fmt::Display for FenceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
