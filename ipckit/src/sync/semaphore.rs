//! Counting semaphores on a futex in shared memory.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::loom::{futex_wait, futex_wake, spin_hint, AtomicU32, Ordering};
use crate::transport::Wait;

/// Largest count a semaphore holds; `post` beyond it is [`Error::Overflow`].
pub const SEM_VALUE_MAX: u32 = i32::MAX as u32;

/// How long a sleeper sleeps before it re-checks (a poster that died between its increment
/// and its wake cannot strand anyone for longer).
const SLICE: Duration = Duration::from_millis(50);

/// The words of a semaphore, as laid out in shared memory.
///
/// `count` is the number of permits (and the futex word); `sleepers` counts processes asleep
/// in `wait`, so `post` only makes a system call when somebody sleeps. Any value a crashed or
/// hostile process leaves is still a valid state: at worst permits appear or vanish, or a
/// post makes an unneeded wake-up.
#[repr(C, align(64))]
pub(crate) struct SemWords {
    pub(crate) count: AtomicU32,
    pub(crate) sleepers: AtomicU32,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<SemWords>() == 64);

impl SemWords {
    #[cfg(any(loom, test))]
    pub(crate) fn new(count: u32) -> SemWords {
        SemWords {
            count: AtomicU32::new(count),
            sleepers: AtomicU32::new(0),
        }
    }

    /// Takes a permit if one is there (one compare-and-swap, no system call).
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        let mut v = self.count.load(Ordering::Relaxed);
        while v > 0 {
            match self
                .count
                .compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Adds `n` permits and wakes as many sleepers.
    #[inline]
    pub(crate) fn release(&self, n: u32) -> Result<()> {
        let mut v = self.count.load(Ordering::Relaxed);
        loop {
            let new = v
                .checked_add(n)
                .filter(|c| *c <= SEM_VALUE_MAX)
                .ok_or(Error::Overflow {
                    what: "semaphore count",
                })?;
            // SeqCst: pairs with the sleeper's SeqCst increment of `sleepers`.
            match self
                .count
                .compare_exchange_weak(v, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            futex_wake(&self.count, n);
        }
        Ok(())
    }

    /// Takes a permit, waiting as `wait` allows.
    pub(crate) fn acquire(&self, wait: Wait) -> Result<()> {
        if self.try_acquire() {
            return Ok(());
        }
        if wait == Wait::Never {
            return Err(Error::WouldBlock);
        }
        for _ in 0..crate::loom::SPINS {
            spin_hint();
            if self.try_acquire() {
                return Ok(());
            }
        }
        let deadline = match wait {
            Wait::Until(t) => Some(t),
            _ => None,
        };
        loop {
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let got = self.try_acquire();
            let slept = if got {
                Ok(false)
            } else {
                let slice = match deadline {
                    Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
                    None => SLICE,
                };
                futex_wait(&self.count, 0, Some(slice))
            };
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
            slept?;
            if got || self.try_acquire() {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(wait.expired());
            }
        }
    }

    pub(crate) fn value(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted() {
        let s = SemWords::new(2);
        assert!(s.try_acquire() && s.try_acquire() && !s.try_acquire());
        assert!(matches!(s.acquire(Wait::Never), Err(Error::WouldBlock)));
        let t0 = Instant::now();
        assert!(matches!(
            s.acquire(Wait::timeout(Duration::from_millis(30))),
            Err(Error::Timeout { .. })
        ));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        s.release(1).unwrap();
        assert_eq!(s.value(), 1);
        s.acquire(Wait::Forever).unwrap();
        assert!(matches!(
            s.release(SEM_VALUE_MAX + 1),
            Err(Error::Overflow { .. })
        ));
    }

    #[test]
    fn a_post_wakes_a_sleeper() {
        let s = std::sync::Arc::new(SemWords::new(0));
        let s2 = s.clone();
        let h = std::thread::spawn(move || s2.acquire(Wait::timeout(Duration::from_secs(10))));
        while s.sleepers.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        s.release(1).unwrap();
        h.join().unwrap().unwrap();
        assert_eq!(s.value(), 0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Posts and takes racing across threads: every permit posted is either taken exactly
    /// once or still counted; none is lost or made up.
    #[test]
    fn no_permit_lost_or_duplicated() {
        loom::model(|| {
            let s = Arc::new(SemWords::new(1));
            let takers: Vec<_> = (0..2)
                .map(|_| {
                    let s = s.clone();
                    loom::thread::spawn(move || u32::from(s.try_acquire()))
                })
                .collect();
            s.release(1).unwrap();
            let taken: u32 = takers.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(taken + s.value(), 2);
        });
    }
}
