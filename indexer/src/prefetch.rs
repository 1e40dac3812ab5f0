//! A hint to the CPU to start loading a cache line that the code will
//! read soon. Loops that read rows scattered over gigabytes (a sorted
//! arena's rows, a hash table's slots) miss the cache on nearly every row;
//! asked for a few rows ahead, the misses overlap instead of each waiting
//! its turn.

/// Asks for the cache line holding `at`. Reads nothing the program sees and
/// cannot fault; a no-op where the target has no prefetch instruction.
#[inline]
pub(crate) fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch only hints: it dereferences nothing and
        // cannot fault. The pointer comes from a live reference anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((at as *const T).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}
