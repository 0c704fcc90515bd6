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
    // SAFETY: `file` owns the descriptor and keeps it open throughout; `fallocate` takes
    // it and three integers and touches no memory of ours.
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
