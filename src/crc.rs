//! CRC32C (Castagnoli) of several buffers at once, for the log's batch encoder.
//!
//! The SSE 4.2 `crc32` instruction has a latency of about 3 cycles and a throughput of one
//! per cycle, so one buffer's CRC is bound by latency: 8 bytes per 3 cycles. The `crc32c`
//! crate interleaves three streams only inside buffers of at least 768 bytes, while a log
//! record is typically a few hundred bytes. [`crc32c_3`] runs three *records* side by side
//! instead, which keeps the unit busy: about a third of the time for three short records.
//! Results are identical to `crc32c::crc32c` (checked by the tests below); without SSE 4.2
//! it simply calls that.

/// The CRC32C of each of `a`, `b`, `c`.
pub(crate) fn crc32c_3(a: &[u8], b: &[u8], c: &[u8]) -> [u32; 3] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("sse4.2") {
            // `crc3_sse42` only reads the slices; its one requirement, SSE 4.2, the CPU
            // was just found to support.
            // SAFETY: the caller owns the three slices, which are only read (as just said).
            return unsafe { crc3_sse42(a, b, c) };
        }
    }
    [crc32c::crc32c(a), crc32c::crc32c(b), crc32c::crc32c(c)]
}

/// Three CRC32C streams in lockstep over the common length (whole 8-byte words), then
/// each remainder on its own.
///
/// # Safety
///
/// The CPU must support SSE 4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
// The intrinsics are safe to call inside this function on recent compilers and `unsafe` on
// the crate's minimum supported one; the blocks below serve the latter.
#[allow(unused_unsafe)]
unsafe fn crc3_sse42(a: &[u8], b: &[u8], c: &[u8]) -> [u32; 3] {
    use std::arch::x86_64::_mm_crc32_u64;
    let n = a.len().min(b.len()).min(c.len()) / 8 * 8;
    let (mut x, mut y, mut z) = (u64::from(!0u32), u64::from(!0u32), u64::from(!0u32));
    let words = a[..n]
        .chunks_exact(8)
        .zip(b[..n].chunks_exact(8))
        .zip(c[..n].chunks_exact(8));
    for ((wa, wb), wc) in words {
        // SAFETY: SSE 4.2 is enabled for this function (its caller checked the CPU).
        unsafe {
            x = _mm_crc32_u64(x, word(wa));
            y = _mm_crc32_u64(y, word(wb));
            z = _mm_crc32_u64(z, word(wc));
        }
    }
    // `finish` needs SSE 4.2, which is enabled for this function (its caller checked the CPU).
    // SAFETY: `finish` touches only its arguments, owned by this call (borrowed slices).
    unsafe { [finish(x, &a[n..]), finish(y, &b[n..]), finish(z, &c[n..])] }
}

/// Continues a CRC32C stream over `rest` and returns the final value.
///
/// # Safety
///
/// The CPU must support SSE 4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[allow(unused_unsafe)]
unsafe fn finish(mut crc: u64, rest: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let words = rest.chunks_exact(8);
    let tail = words.remainder();
    for w in words {
        // SAFETY: SSE 4.2 is enabled for this function (its caller checked the CPU).
        crc = unsafe { _mm_crc32_u64(crc, word(w)) };
    }
    for &byte in tail {
        // The intrinsic needs SSE 4.2, enabled for this function (its caller checked the CPU).
        // SAFETY: it touches only its arguments, values owned by this call.
        crc = u64::from(unsafe { _mm_crc32_u8(crc as u32, byte) });
    }
    !(crc as u32)
}

/// The little-endian word in an 8-byte chunk.
#[inline(always)]
fn word(chunk: &[u8]) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(chunk);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_the_crc32c_crate_on_edge_lengths() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for (la, lb, lc) in [
            (0, 0, 0),
            (1, 0, 9),
            (7, 8, 9),
            (300, 312, 299),
            (1000, 16, 64),
        ] {
            let (a, b, c) = (&data[..la], &data[3..3 + lb], &data[5..5 + lc]);
            assert_eq!(
                crc32c_3(a, b, c),
                [crc32c::crc32c(a), crc32c::crc32c(b), crc32c::crc32c(c)]
            );
        }
        // The standard check value.
        assert_eq!(crc32c_3(b"123456789", b"", b"")[0], 0xE306_9283);
    }

    proptest! {
        #[test]
        fn matches_the_crc32c_crate(
            a in proptest::collection::vec(any::<u8>(), 0..700),
            b in proptest::collection::vec(any::<u8>(), 0..700),
            c in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            prop_assert_eq!(
                crc32c_3(&a, &b, &c),
                [crc32c::crc32c(&a), crc32c::crc32c(&b), crc32c::crc32c(&c)]
            );
        }
    }
}
