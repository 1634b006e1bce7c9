//! The lock a node's handles take to publish ([`WriterLock`]): a futex mutex whose release
//! is a plain store, not a locked instruction.
//!
//! A locked instruction waits until every store before it has reached the cache. std's
//! `Mutex` releases with a swap, and a publish's last stores go to lines that subscribers
//! on the other CPU are reading (the write position, the slot), so every publish waited
//! there for those lines to come back: two thirds of the publisher's samples in a
//! one-subscriber stream (`perf annotate`). With the release a store, one binary with a
//! switch, `scripts/ab.py 6 shm,bus-local,bus-fanout-8,line`, 64 B, medians of 6: the
//! one-subscriber stream went from 15.5 M to 22.2 M msg/s, the 8-subscriber fan-out from
//! 31.1 M to 33.3 M deliveries/s; no lock at all (not an option: the handles are shared by
//! threads) did no better, 21.5 M and 36.9 M.
//!
//! The handshake between a release and a thread going to sleep on the lock is the
//! asymmetric one of [`crate::sys`]'s `membarrier`:
//! - release ([`release`]): stores `FREE`, fences (a compiler fence where this process is
//!   a light side, a full fence otherwise), and wakes one sleeper if the sleepers' count is
//!   not zero;
//! - a thread that found the lock held ([`wait_while_held`]) adds itself to the count,
//!   makes the heavy fence and looks at the lock again before it sleeps on it.
//!
//! One of the two sees the other's store, so a release never leaves a thread asleep on a
//! free lock. Where the heavy fence fails, the sleeper does not rely on the handshake and
//! sleeps in short slices. The functions take [`Word`]s, so the loom models at the end run
//! the same code (`RUSTFLAGS="--cfg loom" cargo test -p ipckit --lib --release loom`).

// Under loom only the handshake's functions are used, by the models.
#![cfg_attr(loom, allow(dead_code))]

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use crate::loom::{fence, spin_hint, FutexWord, Ordering, Word, SPINS};

const FREE: u32 = 0;
const HELD: u32 = 1;

/// How long a sleeper whose heavy fence failed sleeps before it looks again.
const UNFENCED_SLICE: Duration = Duration::from_millis(1);

/// Takes the lock if it is free.
#[inline]
pub(crate) fn try_take(state: &impl Word<V = u32>) -> bool {
    state
        .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

/// Frees the lock and wakes one sleeper if there is one. `light`: this process is a light
/// side of `membarrier` (`sys::register_light_side`), whose sleepers make the heavy fence.
#[inline]
pub(crate) fn release(state: &impl FutexWord, sleepers: &impl Word<V = u32>, light: bool) {
    state.store(FREE, Ordering::Release);
    // Orders the store before the look at the sleepers. Under loom no process is light.
    if light {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
    if sleepers.load(Ordering::Relaxed) != 0 {
        state.wake(1);
    }
}

/// Sleeps until the lock is free (or may be: the caller tries to take it again).
/// `heavy_fence` makes the fence that pairs with [`release`]'s and says whether it could.
pub(crate) fn wait_while_held(
    state: &impl FutexWord,
    sleepers: &impl Word<V = u32>,
    heavy_fence: impl FnOnce() -> bool,
) -> crate::Result<()> {
    sleepers.fetch_add(1, Ordering::Relaxed);
    let slice = if heavy_fence() {
        None
    } else {
        Some(UNFENCED_SLICE)
    };
    let r = if state.load(Ordering::Relaxed) == HELD {
        state.wait_while(HELD, slice)
    } else {
        Ok(())
    };
    sleepers.fetch_sub(1, Ordering::Relaxed);
    r
}

/// A mutex for one process's threads whose release is a plain store (module doc).
pub(crate) struct WriterLock<T> {
    state: AtomicU32,
    sleepers: AtomicU32,
    light: bool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock gives one thread at a time access to the value (`lock` returns a guard
// only after `try_take` succeeded, and the guard's drop releases it), as `Mutex<T>` does,
// which is `Sync` for `T: Send`.
unsafe impl<T: Send> Sync for WriterLock<T> {}

impl<T> WriterLock<T> {
    /// `light`: what `sys::register_light_side` said for this process.
    pub(crate) fn new(value: T, light: bool) -> WriterLock<T> {
        WriterLock {
            state: AtomicU32::new(FREE),
            sleepers: AtomicU32::new(0),
            light,
            value: UnsafeCell::new(value),
        }
    }

    /// What `sys::register_light_side` said for this process (given to `new`).
    #[inline]
    pub(crate) fn light(&self) -> bool {
        self.light
    }

    /// Takes the lock, waiting as long as another thread holds it.
    pub(crate) fn lock(&self) -> WriterGuard<'_, T> {
        if !try_take(&self.state) {
            self.lock_contended();
        }
        WriterGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..SPINS {
            spin_hint();
            if self.state.load(Ordering::Relaxed) == FREE && try_take(&self.state) {
                return;
            }
        }
        loop {
            let light = self.light;
            let heavy = || {
                if light {
                    crate::sys::heavy_fence()
                } else {
                    fence(Ordering::SeqCst);
                    true
                }
            };
            // An interrupted or failed sleep only means looking again.
            let _ = wait_while_held(&self.state, &self.sleepers, heavy);
            if try_take(&self.state) {
                return;
            }
        }
    }
}

/// Access to a [`WriterLock`]'s value; releases the lock when dropped.
pub(crate) struct WriterGuard<'a, T> {
    lock: &'a WriterLock<T>,
}

impl<T> Deref for WriterGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard exists only while its thread holds the lock (see `Sync`
        // above), so no other reference to the value is alive.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for WriterGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for WriterGuard<'_, T> {
    fn drop(&mut self) {
        release(&self.lock.state, &self.lock.sleepers, self.lock.light);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Threads that take turns through the lock never see each other's half-done work, and
    /// none sleeps forever on a free lock, with the light release and with the full fence.
    #[test]
    fn threads_take_turns_and_none_is_left_asleep() {
        for light in [crate::sys::register_light_side(), false] {
            let lock = Arc::new(WriterLock::new((0u64, 0u64), light));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let lock = lock.clone();
                    std::thread::spawn(move || {
                        for i in 0..20_000u64 {
                            let mut g = lock.lock();
                            assert_eq!(g.0, g.1, "another thread was inside");
                            g.0 += 1;
                            if i % 1000 == 0 {
                                // Held across a sleep, as a publish that waits for room:
                                // the others go to sleep on the lock.
                                std::thread::sleep(Duration::from_micros(200));
                            }
                            g.1 += 1;
                        }
                    })
                })
                .collect();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            for t in threads {
                while !t.is_finished() {
                    assert!(std::time::Instant::now() < deadline, "a thread hangs");
                    std::thread::sleep(Duration::from_millis(5));
                }
                t.join().expect("no thread panicked");
            }
            assert_eq!(*lock.lock(), (80_000, 80_000));
        }
    }

    /// A guard dropped during a panic frees the lock (no poisoning to step around).
    #[test]
    fn a_panic_inside_frees_the_lock() {
        let lock = Arc::new(WriterLock::new(1u32, false));
        let l2 = lock.clone();
        let r = std::thread::spawn(move || {
            let _g = l2.lock();
            panic!("inside");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(*lock.lock(), 1);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Two threads take the lock in turn through the functions above, with loom's atomics
    //! and its futex model (no timeouts: a wake-up that nobody sends leaves the sleeper
    //! blocked and loom reports the deadlock). The heavy fence is a full fence, as
    //! `membarrier` makes the light side's compiler fence one.

    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::Arc;

    struct Model {
        state: AtomicU32,
        sleepers: AtomicU32,
        value: UnsafeCell<u32>,
    }

    fn locked(m: &Model, f: impl FnOnce(&mut u32)) {
        while !try_take(&m.state) {
            wait_while_held(&m.state, &m.sleepers, || {
                fence(Ordering::SeqCst);
                true
            })
            .expect("the model's futex");
        }
        m.value.with_mut(|v| {
            // SAFETY: loom checks that no other access overlaps this one.
            f(unsafe { &mut *v })
        });
        release(&m.state, &m.sleepers, false);
    }

    #[test]
    fn loom_writer_lock_excludes_and_never_loses_a_wake_up() {
        loom::model(|| {
            let m = Arc::new(Model {
                state: AtomicU32::new(FREE),
                sleepers: AtomicU32::new(0),
                value: UnsafeCell::new(0),
            });
            let m2 = m.clone();
            let t = loom::thread::spawn(move || locked(&m2, |v| *v += 1));
            locked(&m, |v| *v += 10);
            t.join().unwrap();
            locked(&m, |v| assert_eq!(*v, 11));
        });
    }

    /// Two threads wait while a third holds the lock: each release wakes one of them, and
    /// neither is left asleep.
    #[test]
    fn loom_writer_lock_wakes_every_waiter() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(2);
        model.check(|| {
            let m = Arc::new(Model {
                state: AtomicU32::new(FREE),
                sleepers: AtomicU32::new(0),
                value: UnsafeCell::new(0),
            });
            let waiters: Vec<_> = [1, 10]
                .into_iter()
                .map(|add| {
                    let m = m.clone();
                    loom::thread::spawn(move || locked(&m, |v| *v += add))
                })
                .collect();
            locked(&m, |v| *v += 100);
            for w in waiters {
                w.join().unwrap();
            }
            locked(&m, |v| assert_eq!(*v, 111));
        });
    }
}
