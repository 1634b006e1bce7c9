//! [`Mutex<T>`]: plain data in shared memory behind a lock that survives its holder's death.

use std::marker::PhantomData;
use std::ptr;
use std::time::Duration;

use bytemuck::Pod;

use super::raw_mutex::{Acquired, MutexWords};
use super::slots::{self, SlotLiveness};
use crate::error::{Error, Result};
use crate::shm::{Segment, SegmentKind, LOCK_ATTACHED};
use crate::transport::Wait;
use std::sync::atomic::AtomicU32;

/// Process slots per mutex: processes that may have it open at once.
const SLOTS: usize = slots::MAX_SLOTS;
/// Lock bytes of the slots: `LOCK_SLOT + slot`.
const LOCK_SLOT: u64 = LOCK_ATTACHED + 1024;

#[repr(C, align(64))]
struct MutexHeader {
    words: MutexWords,
    _pad: [u32; 14],
    /// Generation of each slot's latest claim.
    slot_gen: [AtomicU32; SLOTS],
}

const HEADER: usize = std::mem::size_of::<MutexHeader>();
#[cfg(not(loom))]
const _: () = assert!(HEADER == 64 + 1024);

fn data_offset<T>() -> usize {
    let align = std::mem::align_of::<T>().max(64);
    HEADER.div_ceil(align) * align
}

/// Why `lock` did not simply succeed. The first two carry the guard: the lock *is* held.
pub enum LockError<G> {
    /// The previous holder died holding the lock; the data may be half-updated. Repair it and
    /// call `make_consistent`, or every later lock reports [`LockError::Poisoned`].
    OwnerDied(G),
    /// A holder died earlier and nobody has marked the data consistent since.
    Poisoned(G),
    /// The lock was not obtained (timeout, would block, …).
    Failed(Error),
}

impl<G> LockError<G> {
    /// The guard, if the lock is held despite the error.
    pub fn into_guard(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) | LockError::Poisoned(g) => Some(g),
            LockError::Failed(_) => None,
        }
    }
}

impl<G> std::fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::Poisoned(_) => f.write_str("Poisoned(..)"),
            LockError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<G> std::fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str(
                "the previous holder died holding the lock; the data may be inconsistent",
            ),
            LockError::Poisoned(_) => f.write_str(
                "the data is poisoned: a holder died and nobody has marked it consistent since",
            ),
            LockError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl<G> std::error::Error for LockError<G> {}

impl<G> From<Error> for LockError<G> {
    fn from(e: Error) -> Self {
        LockError::Failed(e)
    }
}

/// A mutex around a plain `T` in shared memory, named like a segment.
///
/// The guard copies values in and out ([`get`](MutexGuard::get),
/// [`set`](MutexGuard::set), [`update`](MutexGuard::update)); no Rust reference into memory
/// another process can write is handed out.
///
/// ```
/// use ipckit::sync::{LockError, Mutex};
/// use std::time::Duration;
///
/// let name = format!("doc-mutex-{}", std::process::id());
/// let m = Mutex::create(&name, [0u64; 2])?; // removed when dropped
/// let other = Mutex::<[u64; 2]>::open(&name)?; // as another process would
/// {
///     let g = other.lock_timeout(Duration::from_secs(5)).map_err(|e| e.to_string())?;
///     g.update(|v| { v[0] += 1; v[1] += 1 });
/// }
/// match m.lock() {
///     Ok(g) => assert_eq!(g.get(), [1, 1]),
///     Err(LockError::OwnerDied(g)) => { /* repair */ g.make_consistent() }
///     Err(e) => return Err(e.to_string().into()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Mutex<T> {
    seg: Segment,
    token: u32,
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutex")
            .field("segment", &self.seg)
            .field("token", &self.token)
            .finish()
    }
}

impl<T: Pod> Mutex<T> {
    /// Creates a named mutex holding `initial` (mode 0600); fails if the name exists.
    pub fn create(name: &str, initial: T) -> Result<Mutex<T>> {
        Self::create_with_mode(name, initial, 0o600)
    }

    /// [`create`](Self::create) with explicit permissions.
    pub fn create_with_mode(name: &str, initial: T, mode: u32) -> Result<Mutex<T>> {
        let seg = Segment::builder(name)
            .size(data_offset::<T>() + std::mem::size_of::<T>())
            .typed::<Mutex<T>>()
            .kind(SegmentKind::Mutex)
            .mode(mode)
            .create()?;
        // SAFETY: the fresh segment holds data_offset + size_of::<T>() bytes, suitably
        // aligned (data_offset is a multiple of align_of::<T>() and the data area is
        // 64-aligned); nobody else knows it before `create` returns.
        unsafe { ptr::write(seg.as_ptr().add(data_offset::<T>()).cast::<T>(), initial) };
        Self::with_segment(seg)
    }

    /// Opens an existing named mutex of the same `T`.
    pub fn open(name: &str) -> Result<Mutex<T>> {
        let seg = Segment::builder(name)
            .typed::<Mutex<T>>()
            .kind(SegmentKind::Mutex)
            .open()?;
        Self::with_segment(seg)
    }

    /// Claims a process slot: lock its byte, bump its generation.
    fn with_segment(seg: Segment) -> Result<Mutex<T>> {
        let token =
            slots::claim(seg.fd(), &header(&seg).slot_gen, LOCK_SLOT)?.ok_or(Error::Overflow {
                what: "processes holding this mutex (255 at most)",
            })?;
        Ok(Mutex {
            token,
            seg,
            _t: PhantomData,
        })
    }

    /// Locks, waiting as `wait` allows.
    pub fn lock_with(&self, wait: Wait) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        let live = SlotLiveness {
            fd: self.seg.fd(),
            gens: &header(&self.seg).slot_gen,
            lock_base: LOCK_SLOT,
            me: self.token,
        };
        let how = header(&self.seg).words.lock(&live, wait)?;
        let guard = MutexGuard { m: self };
        match how {
            Acquired::Clean => Ok(guard),
            Acquired::OwnerDied => Err(LockError::OwnerDied(guard)),
            Acquired::Poisoned => Err(LockError::Poisoned(guard)),
        }
    }

    /// Locks, blocking as long as needed.
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.lock_with(Wait::Forever)
    }

    /// Locks if free now, or fails with `Failed(WouldBlock)`.
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.lock_with(Wait::Never)
    }

    /// Locks, waiting at most `timeout`.
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.lock_with(Wait::timeout(timeout))
    }

    /// Keeps the name after this handle is dropped.
    pub fn keep(&mut self) {
        self.seg.keep();
    }
}

fn header(seg: &Segment) -> &MutexHeader {
    // SAFETY: the segment was created or checked (kind Mutex, fingerprint of Mutex<T>, so
    // this layout) to start with a MutexHeader at its 64-aligned data start; the header is
    // atomics only (and padding); the borrow is tied to `seg`.
    unsafe { &*seg.as_ptr().cast::<MutexHeader>() }
}

/// The lock, held. Unlocks on drop.
pub struct MutexGuard<'a, T: Pod> {
    m: &'a Mutex<T>,
}

impl<T: Pod> MutexGuard<'_, T> {
    fn data(&self) -> *mut T {
        // SAFETY: see `create_with_mode`: the data lies inside the segment, aligned.
        unsafe { self.m.seg.as_ptr().add(data_offset::<T>()).cast::<T>() }
    }

    /// A copy of the protected value.
    pub fn get(&self) -> T {
        // SAFETY: in bounds and aligned (see `data`); `T: Pod` is valid for any bits; a
        // volatile copy through a raw pointer, no reference formed.
        unsafe { ptr::read_volatile(self.data()) }
    }

    /// Replaces the protected value.
    pub fn set(&self, value: T) {
        // SAFETY: as for `get`.
        unsafe { ptr::write_volatile(self.data(), value) }
    }

    /// Copies the value out, lets `f` change it, copies it back; returns what `f` returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut v = self.get();
        let r = f(&mut v);
        self.set(v);
        r
    }

    /// Marks the data consistent after a holder died (once you have repaired it).
    pub fn make_consistent(&self) {
        header(&self.m.seg).words.make_consistent();
    }
}

impl<T: Pod> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        header(&self.m.seg).words.unlock();
    }
}
