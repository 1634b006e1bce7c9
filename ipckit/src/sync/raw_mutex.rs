//! The lock word of a process-shared mutex that survives a holder's death.
//!
//! `word` is 0 when free, else the holder's *token* with bit 31 set when someone sleeps.
//! A token names a process slot and the generation of that slot's claim (see
//! [`Liveness`]): a holder is dead when the slot's lock (released by the kernel when the
//! process dies) is free, or when the slot was claimed again since (a newer generation), so
//! a reused pid or slot never passes for the old holder. A locker that finds the holder dead
//! takes the lock over and marks the data poisoned.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::loom::{futex_wait, futex_wake, spin_hint, AtomicU32, Ordering};
use crate::transport::Wait;

/// Set in the lock word while somebody sleeps waiting for it.
pub(crate) const CONTENDED: u32 = 1 << 31;

/// `state` values.
const CONSISTENT: u32 = 0;
const POISONED: u32 = 1;

/// How long a sleeper sleeps before it re-checks the holder's liveness.
const SLICE: Duration = Duration::from_millis(20);

/// How a lock was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// From a live holder (or free): the data is consistent.
    Clean,
    /// From a holder that died: the data may be half-updated.
    OwnerDied,
    /// A holder died earlier and nobody has marked the data consistent since.
    Poisoned,
}

/// Who may hold the lock, and whether a holder is alive.
pub(crate) trait Liveness {
    /// This handle's token (never 0, bit 31 clear).
    fn token(&self) -> u32;
    /// Whether the holder with `token` is still alive.
    fn alive(&self, token: u32) -> bool;
}

/// The words of the mutex in shared memory.
#[repr(C)]
pub(crate) struct MutexWords {
    pub(crate) word: AtomicU32,
    pub(crate) state: AtomicU32,
}

impl MutexWords {
    #[cfg(any(loom, test))]
    pub(crate) fn new() -> MutexWords {
        MutexWords {
            word: AtomicU32::new(0),
            state: AtomicU32::new(CONSISTENT),
        }
    }

    fn acquired(&self) -> Acquired {
        if self.state.load(Ordering::Acquire) == CONSISTENT {
            Acquired::Clean
        } else {
            Acquired::Poisoned
        }
    }

    /// Takes the lock, waiting as `wait` allows.
    pub(crate) fn lock(&self, live: &impl Liveness, wait: Wait) -> Result<Acquired> {
        let me = live.token();
        if self
            .word
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(self.acquired());
        }
        for _ in 0..crate::loom::SPINS {
            spin_hint();
            if self.word.load(Ordering::Relaxed) == 0
                && self
                    .word
                    .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok(self.acquired());
            }
        }
        // Check the holder's liveness before the first sleep and after every timed-out one.
        let mut check = true;
        loop {
            let cur = self.word.load(Ordering::Acquire);
            if cur == 0 {
                // Others may still sleep: keep the contended bit so our unlock wakes them.
                if self
                    .word
                    .compare_exchange(0, me | CONTENDED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(self.acquired());
                }
                continue;
            }
            if check && !live.alive(cur & !CONTENDED) {
                if self
                    .word
                    .compare_exchange(
                        cur,
                        me | (cur & CONTENDED),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    self.state.store(POISONED, Ordering::Release);
                    return Ok(Acquired::OwnerDied);
                }
                continue;
            }
            check = false;
            if wait == Wait::Never {
                return Err(Error::WouldBlock);
            }
            if cur & CONTENDED == 0
                && self
                    .word
                    .compare_exchange(cur, cur | CONTENDED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let slice = wait.slice(SLICE)?;
            if futex_wait(&self.word, cur | CONTENDED, Some(slice))? {
                check = true;
            }
        }
    }

    /// Releases the lock, waking one sleeper if any.
    pub(crate) fn unlock(&self) {
        if self.word.swap(0, Ordering::Release) & CONTENDED != 0 {
            futex_wake(&self.word, 1);
        }
    }

    /// Marks the protected data consistent again after a holder died.
    pub(crate) fn make_consistent(&self) {
        self.state.store(CONSISTENT, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Fake {
        me: u32,
        dead: Cell<Option<u32>>,
    }
    impl Liveness for Fake {
        fn token(&self) -> u32 {
            self.me
        }
        fn alive(&self, t: u32) -> bool {
            self.dead.get() != Some(t)
        }
    }

    #[test]
    fn dead_holder_is_taken_over_and_poisons_until_consistent() {
        let m = MutexWords::new();
        let a = Fake {
            me: 1,
            dead: Cell::new(None),
        };
        let b = Fake {
            me: 2,
            dead: Cell::new(None),
        };
        assert_eq!(m.lock(&a, Wait::Never).unwrap(), Acquired::Clean);
        assert!(matches!(m.lock(&b, Wait::Never), Err(Error::WouldBlock)));
        assert!(matches!(
            m.lock(&b, Wait::timeout(Duration::from_millis(30))),
            Err(Error::Timeout { .. })
        ));
        b.dead.set(Some(1)); // `a` dies holding the lock
        assert_eq!(m.lock(&b, Wait::Never).unwrap(), Acquired::OwnerDied);
        m.unlock();
        assert_eq!(m.lock(&a, Wait::Never).unwrap(), Acquired::Poisoned);
        m.make_consistent();
        m.unlock();
        assert_eq!(m.lock(&a, Wait::Never).unwrap(), Acquired::Clean);
        m.unlock();
        assert_eq!(m.word.load(Ordering::Relaxed), 0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    struct Token(u32);
    impl Liveness for Token {
        fn token(&self) -> u32 {
            self.0
        }
        fn alive(&self, _: u32) -> bool {
            true
        }
    }

    /// Mutual exclusion: loom reports any unsynchronised access to the protected cell.
    #[test]
    fn lock_excludes_and_hands_over() {
        loom::model(|| {
            let m = Arc::new((MutexWords::new(), UnsafeCell::new(0u32)));
            let threads: Vec<_> = (1..=2)
                .map(|t| {
                    let m = m.clone();
                    loom::thread::spawn(move || {
                        let who = Token(t);
                        assert_eq!(m.0.lock(&who, Wait::Forever).unwrap(), Acquired::Clean);
                        // SAFETY: loom checks that the lock orders these accesses.
                        m.1.with_mut(|v| unsafe { *v += 1 });
                        m.0.unlock();
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            // SAFETY: both threads are joined.
            assert_eq!(m.1.with(|v| unsafe { *v }), 2);
        });
    }
}
