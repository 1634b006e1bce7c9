//! Futexes on words in shared memory (process-shared: no `FUTEX_PRIVATE_FLAG`).

use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

use crate::error::{Error, Result};

/// Why a futex wait returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FutexWake {
    /// Woken, or the word no longer held the expected value, or a signal: re-check the state.
    Recheck,
    /// The timeout passed.
    TimedOut,
}

/// `FUTEX_WAIT`: sleeps while `*word == expected`, at most `timeout`.
pub fn futex_wait(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<FutexWake> {
    let ts = timeout.map(|d| {
        futex::Timespec::try_from(d).unwrap_or(futex::Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        })
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(FutexWake::Recheck),
        Err(Errno::TIMEDOUT) => Ok(FutexWake::TimedOut),
        Err(e) => Err(Error::os("futex(FUTEX_WAIT)", e)),
    }
}

/// `FUTEX_WAKE`: wakes up to `n` waiters (`u32::MAX`: all); returns how many were woken.
pub fn futex_wake(word: &std::sync::atomic::AtomicU32, n: u32) -> usize {
    // The kernel reads the count as a signed int: u32::MAX would be -1 and wake just one.
    futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32)).unwrap_or(0)
}
