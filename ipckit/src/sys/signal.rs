//! Signals: sending (`kill`, `sigqueue`), a signalfd for real-time signals with payloads, and
//! pidfds to watch another process exit.

use std::os::fd::{FromRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags};

use crate::error::{Error, Result};

fn pid_of(pid: u32) -> Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| Error::InvalidName {
            name: pid.to_string(),
            reason: "not a process id",
        })
}

fn signal_error(op: &'static str, pid: u32, e: Errno) -> Error {
    match e {
        Errno::SRCH => Error::NotFound {
            path: format!("/proc/{pid}").into(),
        },
        Errno::PERM => Error::PermissionDenied {
            what: format!("{op} to process {pid}"),
        },
        e => Error::os(op, e),
    }
}

/// `kill(pid, sig)`.
pub(crate) fn kill(pid: u32, sig: i32) -> Result<()> {
    // SAFETY: `sig` is passed to the kernel as a number; the kernel validates it (EINVAL).
    let signal = unsafe { rustix::process::Signal::from_raw_unchecked(sig) };
    rustix::process::kill_process(pid_of(pid)?, signal).map_err(|e| signal_error("kill", pid, e))
}

/// `sigqueue(pid, sig, value)`: a signal carrying an integer.
pub(crate) fn sigqueue(pid: u32, sig: i32, value: i32) -> Result<()> {
    let pid_t = pid_of(pid)?.as_raw_nonzero().get();
    let val = libc::sigval {
        sival_ptr: value as isize as *mut libc::c_void,
    };
    // SAFETY: plain system call wrapper with valid arguments.
    if unsafe { libc::sigqueue(pid_t, sig, val) } != 0 {
        let e = Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO);
        return Err(signal_error("sigqueue", pid, e));
    }
    Ok(())
}

fn sigset_of(sig: i32) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it and sigaddset only sets a
    // bit (it fails, harmlessly, for an invalid signal number).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        set
    }
}

/// Blocks `sig` in the calling thread (threads spawned afterwards inherit the mask).
pub(crate) fn block_in_thread(sig: i32) -> Result<()> {
    let set = sigset_of(sig);
    // SAFETY: `set` is initialised; the old mask is not asked for.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(Error::Io {
            op: "pthread_sigmask",
            source: std::io::Error::from_raw_os_error(r),
        });
    }
    Ok(())
}

/// A non-blocking, close-on-exec signalfd for `sig`.
pub(crate) fn signalfd(sig: i32) -> Result<OwnedFd> {
    let set = sigset_of(sig);
    // SAFETY: `set` is initialised; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::Io {
            op: "signalfd",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What a signalfd read delivers: the signal, the sender's pid, the integer payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalInfo {
    /// Signal number.
    pub signal: i32,
    /// Process that sent it.
    pub pid: u32,
    /// The `sigqueue` payload (0 for `kill`).
    pub value: i32,
}

/// Parses a `struct signalfd_siginfo` (128 bytes).
pub(crate) fn parse_siginfo(b: &[u8; 128]) -> SignalInfo {
    let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    SignalInfo {
        signal: u32_at(0) as i32,
        pid: u32_at(12),
        value: u32_at(44) as i32,
    }
}

/// `pidfd_open(pid)`: a descriptor that polls readable once the process has exited.
pub(crate) fn pidfd(pid: u32) -> Result<OwnedFd> {
    rustix::process::pidfd_open(pid_of(pid)?, PidfdFlags::empty())
        .map_err(|e| signal_error("pidfd_open", pid, e))
}

/// The first real-time signal number.
pub fn sigrtmin() -> i32 {
    libc::SIGRTMIN()
}
