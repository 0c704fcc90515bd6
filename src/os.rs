//! Operating-system calls that `std` does not expose. The log's module forbids `unsafe`;
//! the few system calls it needs live here, each behind a safe function.

use std::fs::File;
use std::io;

/// Reserves disk blocks for the first `len` bytes of `file` without changing its length
/// (`fallocate(2)` with `FALLOC_FL_KEEP_SIZE`). Its contents and length stay as they were;
/// later writes below `len` find their blocks allocated. Where the call is missing (another
/// OS) this does nothing; where the filesystem refuses it, the error says so.
#[cfg(target_os = "linux")]
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // `file` owns the descriptor and keeps it open throughout; `fallocate` takes
    // it and three integers and touches no memory of ours.
    // SAFETY: by the ownership stated in the lines just above.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reserves disk blocks ahead of appends: not available on this OS, so nothing is done.
#[cfg(not(target_os = "linux"))]
pub(crate) fn preallocate(_file: &File, _len: u64) -> io::Result<()> {
    Ok(())
}

/// Takes an exclusive, non-blocking `flock(2)` on `file` (`LOCK_EX | LOCK_NB`). The lock
/// belongs to the open file description: it is released when the last descriptor of it is
/// closed (dropping `file`, or the process exiting, however it exits), and a second open of
/// the same file, in this process or another, cannot take it meanwhile. A lock held
/// elsewhere is `io::ErrorKind::WouldBlock`.
///
/// `std::fs::File::lock` does the same from Rust 1.89 on; the crate still builds with 1.80.
#[cfg(unix)]
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        // `file` owns the descriptor and keeps it open throughout; `flock` takes it
        // and an integer and touches no memory of ours.
        // SAFETY: by the ownership stated in the lines just above.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // A signal before the call completed: try again (it does not block).
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The machine's memory, RAM plus swap, in bytes (`MemTotal` + `SwapTotal` of
/// `/proc/meminfo`): more than this can never be in use at once, so `build()` refuses rings
/// that need more before it allocates them. `None` where it cannot be read.
#[cfg(target_os = "linux")]
pub(crate) fn memory_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |field: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(field))?;
        line[field.len()..]
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    };
    let total = kib("MemTotal:")?.checked_add(kib("SwapTotal:").unwrap_or(0))?;
    total.checked_mul(1024)
}

/// The machine's memory: not read on this OS (a failed allocation is still an error).
#[cfg(not(target_os = "linux"))]
pub(crate) fn memory_total() -> Option<u64> {
    None
}
