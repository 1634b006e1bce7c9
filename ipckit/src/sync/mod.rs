//! Process-shared synchronization: counting [`Semaphore`]s, a [`Mutex`] that survives its
//! holder's death, and [`Event`]s, named (in /dev/shm, like segments) and built on futexes in
//! shared memory.
//!
//! # Why futexes, not POSIX named semaphores
//! A futex word in shared memory costs one atomic instruction when nobody waits (no system
//! call), takes any timeout, and lets ipckit decide what a crashed peer means. POSIX
//! `sem_open` semaphores would interoperate with C programs that use them, but give no say
//! over robustness; ipckit's semaphores do not interoperate with `sem_open`.
//!
//! # Dead holders
//! Every process that opens a mutex claims a *slot* in it by locking one byte of the
//! segment's file (a lock the kernel drops when the process dies) and bumping the slot's
//! generation. The lock word records the holder's slot and generation, so a waiter can tell
//! a dead holder from a live one without comparing pids, which the OS reuses.

mod event;
mod mutex;
mod raw_mutex;
mod semaphore;
mod slots;

pub use event::Event;
pub use mutex::{LockError, Mutex, MutexGuard};
pub(crate) use raw_mutex::{Acquired, MutexWords};
pub(crate) use semaphore::SemWords;
pub use semaphore::SEM_VALUE_MAX;
pub(crate) use slots::claim as claim_slot;
pub(crate) use slots::SlotLiveness;

use crate::error::Result;
use crate::shm::{Segment, SegmentKind};
use crate::transport::Wait;
use std::time::Duration;

/// A counting semaphore shared between processes by name.
///
/// ```
/// use ipckit::sync::Semaphore;
/// use std::time::Duration;
///
/// let name = format!("doc-sem-{}", std::process::id());
/// let jobs = Semaphore::create(&name, 0)?; // removed when dropped
/// let other = Semaphore::open(&name)?;     // as another process would
/// other.post()?;
/// jobs.wait_timeout(Duration::from_secs(5))?;
/// assert!(jobs.try_wait().is_err());
/// # Ok::<(), ipckit::Error>(())
/// ```
#[derive(Debug)]
pub struct Semaphore {
    seg: Segment,
}

fn sem_words(seg: &Segment) -> &semaphore::SemWords {
    // SAFETY: the segment was created or checked (kind Semaphore, type fingerprint of
    // SemWords, hence its size) to hold a SemWords at the 64-aligned start of its data;
    // SemWords is atomics only; the reference lives as long as the borrow of `seg`.
    unsafe { &*seg.as_ptr().cast::<semaphore::SemWords>() }
}

impl Semaphore {
    /// Creates a named semaphore with `initial` permits (mode 0600); fails if it exists.
    pub fn create(name: &str, initial: u32) -> Result<Semaphore> {
        Self::create_with_mode(name, initial, 0o600)
    }

    /// [`create`](Self::create) with explicit permissions.
    pub fn create_with_mode(name: &str, initial: u32, mode: u32) -> Result<Semaphore> {
        if initial > SEM_VALUE_MAX {
            return Err(crate::Error::Overflow {
                what: "semaphore count",
            });
        }
        let seg = Segment::builder(name)
            .size(std::mem::size_of::<semaphore::SemWords>())
            .typed::<semaphore::SemWords>()
            .kind(SegmentKind::Semaphore)
            .mode(mode)
            .create()?;
        sem_words(&seg)
            .count
            .store(initial, std::sync::atomic::Ordering::Release);
        Ok(Semaphore { seg })
    }

    /// Opens an existing named semaphore.
    pub fn open(name: &str) -> Result<Semaphore> {
        let seg = Segment::builder(name)
            .typed::<semaphore::SemWords>()
            .kind(SegmentKind::Semaphore)
            .open()?;
        Ok(Semaphore { seg })
    }

    /// Adds a permit, waking one waiter.
    pub fn post(&self) -> Result<()> {
        sem_words(&self.seg).release(1)
    }

    /// Takes a permit, blocking as long as needed.
    pub fn wait(&self) -> Result<()> {
        sem_words(&self.seg).acquire(Wait::Forever)
    }

    /// Takes a permit if one is there, or fails with [`crate::Error::WouldBlock`].
    pub fn try_wait(&self) -> Result<()> {
        sem_words(&self.seg).acquire(Wait::Never)
    }

    /// Takes a permit, waiting at most `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        sem_words(&self.seg).acquire(Wait::timeout(timeout))
    }

    /// Permits available now.
    pub fn value(&self) -> u32 {
        sem_words(&self.seg).value()
    }

    /// Keeps the name after this handle is dropped.
    pub fn keep(&mut self) {
        self.seg.keep();
    }
}
