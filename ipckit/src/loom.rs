//! The atomics of lock-free code, through one door: std's types normally, loom's under
//! `cfg(loom)` so the same protocol code can be model-checked (`RUSTFLAGS="--cfg loom"
//! cargo test -p ipckit --lib --release loom`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Iterations of a short spin before sleeping (one under loom, to keep models small).
pub(crate) const SPINS: usize = if cfg!(loom) { 1 } else { 100 };

/// Hint to the CPU inside a spin loop (a model-checked yield under loom).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Sleeps while `*word == expected` (a process-shared futex), at most `timeout`; under loom,
/// a yield. Returns true if the wait timed out.
#[inline]
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<std::time::Duration>,
) -> crate::Result<bool> {
    #[cfg(loom)]
    {
        let _ = (word, expected, timeout);
        loom::thread::yield_now();
        Ok(false)
    }
    #[cfg(not(loom))]
    {
        crate::sys::futex_wait(word, expected, timeout)
            .map(|w| w == crate::sys::FutexWake::TimedOut)
    }
}

/// Wakes up to `n` sleepers of `word` (nothing to do under loom).
#[inline]
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    #[cfg(loom)]
    let _ = (word, n);
    #[cfg(not(loom))]
    crate::sys::futex_wake(word, n);
}
