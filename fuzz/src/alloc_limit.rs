//! A global allocator that aborts on any single allocation above [`MAX_ALLOCATION`].
//!
//! The scanner must range-check a record's `len` field before it sizes a buffer from it. A
//! bug there allocates what the field says: up to the maximum record size (16 MiB by
//! default, up to 4 GiB when a target picks `u32::MAX`). libFuzzer's own `-malloc_limit_mb`
//! relies on sanitizer malloc hooks, which `--sanitizer none` does not have, and its RSS
//! limit only fires once the pages are touched; so the check is done here, on every
//! allocation the harness or shardbus makes.
//!
//! The bound: the harness never lets a file grow past [`crate::MAX_FILE_LEN`] (256 KiB) and
//! the scanner's read buffer is 64 KiB, so nothing legitimate comes near 1 MiB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

/// The largest single allocation allowed while a target runs.
pub const MAX_ALLOCATION: usize = 1 << 20;

/// [`System`], with the size check in front.
pub struct LimitedAlloc;

#[global_allocator]
static ALLOCATOR: LimitedAlloc = LimitedAlloc;

/// Aborts the process (libFuzzer saves the input as a crash) if `size` is too large.
fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // An allocator must not unwind, so no panic. Writing to stderr with a formatted
        // integer does not allocate (stderr is unbuffered).
        let _ = writeln!(
            std::io::stderr(),
            "shardbus-fuzz: allocation of {size} bytes exceeds the {MAX_ALLOCATION}-byte limit \
             (a buffer sized from an unchecked length field?)"
        );
        std::process::abort();
    }
}

// SAFETY: every method checks the size and then forwards to `System` with the caller's own
// arguments, so `System` upholds the `GlobalAlloc` contract for us.
unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract (non-zero size); passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: `ptr` was allocated by this allocator, that is by `System`, with `layout`
        // (the caller's contract); passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (the caller's contract).
        unsafe { System.dealloc(ptr, layout) }
    }
}
