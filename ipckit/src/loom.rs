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

// Under loom every futex is this one queue: a sleeper waits on the condition variable and
// every wake notifies it. A waiter checks its word under the lock and a waker takes the
// lock after its store, as the kernel's bucket lock orders them, so a wake-up is never lost
// by the model itself.
#[cfg(loom)]
loom::lazy_static! {
    static ref FUTEX: (loom::sync::Mutex<()>, loom::sync::Condvar) =
        (loom::sync::Mutex::new(()), loom::sync::Condvar::new());
}

/// Sleeps while `*word == expected` (a process-shared futex), at most `timeout`. Returns
/// true if the wait timed out.
///
/// Under loom the sleep has no timeout: the sleeper is woken only by a wake (and never
/// reports a time-out), so a protocol that loses a wake-up and counts on its time slice to
/// recover leaves the sleeper blocked, and loom reports the deadlock.
#[inline]
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<std::time::Duration>,
) -> crate::Result<bool> {
    #[cfg(loom)]
    {
        let _ = timeout;
        let (lock, queue) = &*FUTEX;
        let guard = lock.lock().unwrap();
        if word.load(Ordering::Relaxed) == expected {
            drop(queue.wait(guard).unwrap());
        }
        Ok(false)
    }
    #[cfg(not(loom))]
    {
        crate::sys::futex_wait(word, expected, timeout)
            .map(|w| w == crate::sys::FutexWake::TimedOut)
    }
}

/// Wakes up to `n` sleepers of `word` (under loom: every sleeper, which may look again).
#[inline]
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    #[cfg(loom)]
    {
        let _ = (word, n);
        let (lock, queue) = &*FUTEX;
        let _guard = lock.lock().unwrap();
        queue.notify_all();
    }
    #[cfg(not(loom))]
    crate::sys::futex_wake(word, n);
}

/// An atomic word of a protocol that runs both over shared memory (std's atomics over the
/// mapping) and in loom models (loom's atomics): the protocol's functions take `impl Word`,
/// so the library and the models run the same code.
pub(crate) trait Word {
    type V: Copy + Eq;
    fn load(&self, order: Ordering) -> Self::V;
    fn store(&self, v: Self::V, order: Ordering);
    fn swap(&self, v: Self::V, order: Ordering) -> Self::V;
    fn fetch_add(&self, v: Self::V, order: Ordering) -> Self::V;
    fn fetch_sub(&self, v: Self::V, order: Ordering) -> Self::V;
    fn fetch_or(&self, v: Self::V, order: Ordering) -> Self::V;
    fn compare_exchange(
        &self,
        current: Self::V,
        new: Self::V,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Self::V, Self::V>;
}

macro_rules! word {
    ($atomic:ty, $v:ty) => {
        impl Word for $atomic {
            type V = $v;
            #[inline]
            fn load(&self, order: Ordering) -> $v {
                <$atomic>::load(self, order)
            }
            #[inline]
            fn store(&self, v: $v, order: Ordering) {
                <$atomic>::store(self, v, order)
            }
            #[inline]
            fn swap(&self, v: $v, order: Ordering) -> $v {
                <$atomic>::swap(self, v, order)
            }
            #[inline]
            fn fetch_add(&self, v: $v, order: Ordering) -> $v {
                <$atomic>::fetch_add(self, v, order)
            }
            #[inline]
            fn fetch_sub(&self, v: $v, order: Ordering) -> $v {
                <$atomic>::fetch_sub(self, v, order)
            }
            #[inline]
            fn fetch_or(&self, v: $v, order: Ordering) -> $v {
                <$atomic>::fetch_or(self, v, order)
            }
            #[inline]
            fn compare_exchange(
                &self,
                current: $v,
                new: $v,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$v, $v> {
                <$atomic>::compare_exchange(self, current, new, success, failure)
            }
        }
    };
}

word!(std::sync::atomic::AtomicU32, u32);
word!(std::sync::atomic::AtomicU64, u64);
#[cfg(loom)]
word!(loom::sync::atomic::AtomicU32, u32);
#[cfg(loom)]
word!(loom::sync::atomic::AtomicU64, u64);

/// A 32-bit [`Word`] that is also a futex: the kernel's (std's atomics in shared memory) or
/// the model's ([`futex_wait`]/[`futex_wake`] above, under loom).
pub(crate) trait FutexWord: Word<V = u32> {
    /// Sleeps while the word is `expected`, at most `timeout` (no limit under loom).
    fn wait_while(&self, expected: u32, timeout: Option<std::time::Duration>) -> crate::Result<()>;
    /// Wakes up to `n` sleepers.
    fn wake(&self, n: u32);
}

impl FutexWord for std::sync::atomic::AtomicU32 {
    #[inline]
    fn wait_while(&self, expected: u32, timeout: Option<std::time::Duration>) -> crate::Result<()> {
        crate::sys::futex_wait(self, expected, timeout).map(drop)
    }
    #[inline]
    fn wake(&self, n: u32) {
        crate::sys::futex_wake(self, n);
    }
}

#[cfg(loom)]
impl FutexWord for loom::sync::atomic::AtomicU32 {
    fn wait_while(&self, expected: u32, timeout: Option<std::time::Duration>) -> crate::Result<()> {
        futex_wait(self, expected, timeout).map(drop)
    }
    fn wake(&self, n: u32) {
        futex_wake(self, n)
    }
}
