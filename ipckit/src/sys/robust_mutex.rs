//! Process-shared robust mutexes: a `pthread_mutex_t` with `PTHREAD_PROCESS_SHARED` and
//! `PTHREAD_MUTEX_ROBUST`, placed in a file mapping that every process of a queue shares.
//!
//! Uncontended, locking and unlocking are one atomic instruction each (no system call). When
//! a holder dies, the kernel (walking the dead thread's robust list) marks the mutex, and the
//! next locker is told so ([`Locked::OwnerDied`]) and must call
//! [`RobustMutex::mark_consistent`] after repairing what the dead holder left. rustix has no
//! pthread API, so this is the one place that uses libc for it.

use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::transport::Wait;

/// Bytes a mutex occupies.
pub(crate) const ROBUST_MUTEX_SIZE: usize = size_of::<libc::pthread_mutex_t>();
/// Alignment a mutex needs.
pub(crate) const ROBUST_MUTEX_ALIGN: usize = align_of::<libc::pthread_mutex_t>();

/// How a lock was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The previous holder unlocked it.
    Clean,
    /// The previous holder died holding it: repair, then [`RobustMutex::mark_consistent`].
    OwnerDied,
}

/// A robust, process-shared mutex in shared memory. It does not own the memory: the owner of
/// the mapping keeps it mapped for as long as this handle lives.
#[derive(Debug)]
pub(crate) struct RobustMutex {
    ptr: NonNull<libc::pthread_mutex_t>,
}

// SAFETY: a process-shared pthread mutex may be locked and unlocked from any thread; the
// handle is only a pointer to it.
unsafe impl Send for RobustMutex {}

fn check(op: &'static str, r: libc::c_int) -> Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(Error::os(op, rustix::io::Errno::from_raw_os_error(r)))
    }
}

impl RobustMutex {
    /// Wraps the mutex at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be aligned to [`ROBUST_MUTEX_ALIGN`] and point to [`ROBUST_MUTEX_SIZE`]
    /// writable bytes of a shared mapping that stays mapped while the handle lives, holding
    /// a mutex set up by [`init`](Self::init) (or about to be, by this handle).
    pub(crate) unsafe fn from_ptr(ptr: *mut u8) -> RobustMutex {
        RobustMutex {
            // SAFETY: the caller guarantees a valid, aligned, non-null pointer.
            ptr: unsafe { NonNull::new_unchecked(ptr.cast()) },
        }
    }

    /// Initialises the mutex: robust, process-shared, unlocked. Only on memory no other
    /// process uses yet (a file that is not yet published under its final name).
    pub(crate) fn init(&self) -> Result<()> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is a local initialised by pthread_mutexattr_init before any other
        // use and destroyed at the end; `self.ptr` is valid, aligned, writable memory (the
        // constructor's contract) that nobody else uses yet.
        unsafe {
            check(
                "pthread_mutexattr_init",
                libc::pthread_mutexattr_init(attr.as_mut_ptr()),
            )?;
            let a = attr.as_mut_ptr();
            let r = check(
                "pthread_mutexattr_setpshared",
                libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED),
            )
            .and_then(|()| {
                check(
                    "pthread_mutexattr_setrobust",
                    libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST),
                )
            })
            .and_then(|()| {
                check(
                    "pthread_mutex_init",
                    libc::pthread_mutex_init(self.ptr.as_ptr(), a),
                )
            });
            libc::pthread_mutexattr_destroy(a);
            r
        }
    }

    /// Locks, waiting as `wait` allows ([`Error::WouldBlock`] / [`Error::Timeout`] when it
    /// runs out). A mutex left unrecoverable (a holder died and its successor unlocked without
    /// repairing) is [`Error::Corrupted`].
    pub(crate) fn lock(&self, wait: Wait) -> Result<Locked> {
        let p = self.ptr.as_ptr();
        let r = match wait {
            // SAFETY: `p` points to an initialised process-shared mutex in a live mapping.
            Wait::Forever => unsafe { libc::pthread_mutex_lock(p) },
            // SAFETY: as above.
            Wait::Never => unsafe { libc::pthread_mutex_trylock(p) },
            Wait::Until(_) => {
                let left = wait.remaining().unwrap_or_default();
                let at = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    + left;
                let ts = libc::timespec {
                    tv_sec: at.as_secs() as libc::time_t,
                    tv_nsec: at.subsec_nanos() as _,
                };
                // SAFETY: as above; `ts` outlives the call.
                unsafe { libc::pthread_mutex_timedlock(p, &ts) }
            }
        };
        match r {
            0 => Ok(Locked::Clean),
            libc::EOWNERDEAD => Ok(Locked::OwnerDied),
            libc::EBUSY => Err(Error::WouldBlock),
            libc::ETIMEDOUT => Err(wait.expired()),
            libc::ENOTRECOVERABLE => Err(Error::Corrupted(
                "a process-shared lock is unrecoverable: a holder died and its successor did \
                 not repair the state"
                    .to_owned(),
            )),
            e => Err(Error::os(
                "pthread_mutex_lock",
                rustix::io::Errno::from_raw_os_error(e),
            )),
        }
    }

    /// After [`Locked::OwnerDied`] and a repair: makes the mutex usable again.
    pub(crate) fn mark_consistent(&self) -> Result<()> {
        // SAFETY: the mutex is valid and held by this thread (the caller just locked it).
        check("pthread_mutex_consistent", unsafe {
            libc::pthread_mutex_consistent(self.ptr.as_ptr())
        })
    }

    /// Unlocks. Only the thread that locked may unlock.
    pub(crate) fn unlock(&self) {
        // SAFETY: the mutex is valid and held by this thread (the caller's contract, kept by
        // the guards that call this).
        unsafe { libc::pthread_mutex_unlock(self.ptr.as_ptr()) };
    }
}
