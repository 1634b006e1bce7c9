//! The atomics of lock-free code, through one door: std's types normally, loom's under
//! `cfg(loom)` so the same protocol code can be model-checked (`RUSTFLAGS="--cfg loom"
//! cargo test -p ipckit --lib --release loom`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Hint to the CPU inside a spin loop (a model-checked yield under loom).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
