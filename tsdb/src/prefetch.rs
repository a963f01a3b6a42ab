//! Hints that bring memory into the cache ahead of its use. A batch write or a scan touches
//! many series once each, in an order known in advance; a cache miss on each series' data
//! costs about as much as the work done on it, and the CPU cannot see that far ahead alone.

/// Asks the CPU to fetch the cache line holding `addr`. A prefetch is only a hint: it reads
/// nothing into the program and never faults, whatever the address (stale, dangling or the
/// dangling pointer of an empty box), so any address may be passed.
#[inline(always)]
#[allow(unsafe_code)]
pub fn line<T>(addr: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of every x86-64 CPU, and a prefetch never faults (above).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(addr.cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Cache lines are 64 bytes on every CPU this runs on.
const LINE: usize = 64;

/// Asks the CPU to fetch `bytes`, at most its first `max_lines` cache lines.
#[inline(always)]
pub(crate) fn lines(bytes: &[u8], max_lines: usize) {
    let start = bytes.as_ptr();
    for k in 0..span_lines(start as usize, bytes.len()).min(max_lines) {
        line(start.wrapping_add(k * LINE));
    }
}

/// The cache lines that `len` bytes from `addr` touch (one for an empty span: its address
/// is still read by whoever asks, as an empty box's is).
#[inline(always)]
fn span_lines(addr: usize, len: usize) -> usize {
    let last = addr.saturating_add(len.max(1) - 1);
    last / LINE - addr / LINE + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_touches_the_lines_it_starts_and_ends_in_and_those_between() {
        assert_eq!(span_lines(0, 0), 1);
        assert_eq!(span_lines(64, 64), 1);
        assert_eq!(span_lines(60, 4), 1);
        assert_eq!(span_lines(60, 5), 2);
        assert_eq!(span_lines(60, 100), 3);
        assert_eq!(span_lines(usize::MAX - 1, 10), 1, "no overflow at the top");
        // Any address may be hinted, the empty box's dangling one included.
        let empty: Box<[u8]> = Box::default();
        lines(&empty, 12);
        lines(&vec![7u8; 1_000], 12);
        line(std::ptr::null::<u8>());
    }
}
