//! Signals, safely: no user code ever runs inside a signal handler. Handlers only write a
//! byte to a pipe (through `signal-hook`) or leave the signal to a signalfd; your code reads
//! them later, with the same blocking / `try_` / `_timeout` calls as messages.
//!
//! - [`SignalReceiver`]: receive chosen signals, as calls or as an iterator.
//! - [`send`] and [`queue`]: send a signal, or a real-time signal carrying an integer.
//! - [`RtSignalReceiver`]: receive real-time signals with their payload and sender.
//! - [`ShutdownToken`]: SIGINT/SIGTERM turned into a flag you can poll or wait on.
//! - [`ProcessWatch`]: wait for another process to exit, through a pidfd (no pid reuse race).
//!
//! ```
//! use ipckit::signal::{self, SignalReceiver, SIGUSR2};
//! use std::time::Duration;
//!
//! let mut rx = SignalReceiver::new(&[SIGUSR2])?;
//! signal::send(std::process::id(), SIGUSR2)?;
//! assert_eq!(rx.recv_timeout(Duration::from_secs(5))?, SIGUSR2);
//! # Ok::<(), ipckit::Error>(())
//! ```

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::framing::ByteSource;
use crate::sys::{self, FdKind, IoFd};
use crate::transport::Wait;

pub use crate::sys::{sigrtmin, SignalInfo};
pub use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

/// Sends `sig` to process `pid` (`kill`).
pub fn send(pid: u32, sig: i32) -> Result<()> {
    sys::kill(pid, sig)
}

/// Sends the real-time signal `sig` with an integer payload to `pid` (`sigqueue`); receive
/// it with [`RtSignalReceiver`]. Real-time signals queue: none is lost or merged.
pub fn queue(pid: u32, sig: i32, value: i32) -> Result<()> {
    sys::sigqueue(pid, sig, value)
}

fn hook_error(source: std::io::Error) -> Error {
    Error::Io {
        op: "registering a signal handler",
        source,
    }
}

/// Receives chosen signals. Each signal's handler only writes to a pipe; [`recv`] reads it.
/// Signals of one kind that arrive before they are read may be merged into one, as the OS
/// does.
///
/// [`recv`]: SignalReceiver::recv
#[derive(Debug)]
pub struct SignalReceiver {
    pipes: Vec<(i32, IoFd)>,
    ids: Vec<signal_hook::SigId>,
}

impl SignalReceiver {
    /// Starts receiving `signals` (their default action, such as termination, is replaced
    /// while the receiver lives).
    pub fn new(signals: &[i32]) -> Result<SignalReceiver> {
        let mut rx = SignalReceiver {
            pipes: Vec::new(),
            ids: Vec::new(),
        };
        for &sig in signals {
            let (read, write) = sys::pipe_pair()?;
            let id = signal_hook::low_level::pipe::register(sig, write).map_err(hook_error)?;
            rx.ids.push(id);
            rx.pipes.push((sig, IoFd::new(read, FdKind::Other, false)));
        }
        Ok(rx)
    }

    /// The next signal, waiting as `wait` allows.
    pub fn recv_with(&mut self, wait: Wait) -> Result<i32> {
        loop {
            for (sig, fd) in &mut self.pipes {
                let mut bytes = [std::mem::MaybeUninit::<u8>::uninit(); 64];
                match fd.read_uninit(&mut bytes, Wait::Never) {
                    Ok(_) => return Ok(*sig),
                    Err(Error::WouldBlock) => {}
                    Err(e) => return Err(e),
                }
            }
            if wait == Wait::Never {
                return Err(Error::WouldBlock);
            }
            let fds: Vec<_> = self.pipes.iter().map(|(_, fd)| fd.as_fd()).collect();
            sys::poll_readable(&fds, wait)?;
        }
    }

    /// The next signal, blocking as long as needed.
    pub fn recv(&mut self) -> Result<i32> {
        self.recv_with(Wait::Forever)
    }

    /// A signal that has arrived, or [`Error::WouldBlock`].
    pub fn try_recv(&mut self) -> Result<i32> {
        self.recv_with(Wait::Never)
    }

    /// The next signal, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<i32> {
        self.recv_with(Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }
}

impl Iterator for SignalReceiver {
    type Item = i32;
    /// Blocks for the next signal; ends only if reading fails.
    fn next(&mut self) -> Option<i32> {
        self.recv().ok()
    }
}

impl Drop for SignalReceiver {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Receives one real-time signal number with payloads, through a signalfd.
///
/// The signal must be blocked in **every** thread of the process, or the kernel may deliver
/// it to a thread that does not block it, where its default action terminates the process:
/// create the receiver in `main` before starting threads (they inherit the blocked mask).
#[derive(Debug)]
pub struct RtSignalReceiver {
    fd: IoFd,
}

impl RtSignalReceiver {
    /// Blocks `sig` in the calling thread and opens a signalfd for it.
    pub fn new(sig: i32) -> Result<RtSignalReceiver> {
        sys::block_in_thread(sig)?;
        Ok(RtSignalReceiver {
            fd: IoFd::new(sys::signalfd(sig)?, FdKind::Other, true),
        })
    }

    /// The next signal with its payload and sender, waiting as `wait` allows.
    pub fn recv_with(&mut self, wait: Wait) -> Result<SignalInfo> {
        let mut raw = [std::mem::MaybeUninit::<u8>::uninit(); 128];
        let n = self.fd.read_uninit(&mut raw, wait)?;
        if n != raw.len() {
            return Err(Error::Io {
                op: "read(signalfd)",
                source: std::io::Error::other(format!("short read of {n} bytes")),
            });
        }
        let mut buf = [0u8; 128];
        for (b, r) in buf.iter_mut().zip(&raw) {
            // SAFETY: the read initialised all 128 bytes (n == 128, checked above).
            *b = unsafe { r.assume_init() };
        }
        Ok(sys::parse_siginfo(&buf))
    }

    /// The next signal, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<SignalInfo> {
        self.recv_with(Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }
}

/// SIGINT and SIGTERM turned into a cancellation flag: check [`is_shutdown`] in loops, or
/// [`wait_timeout`] for it. Clones share the flag.
///
/// [`is_shutdown`]: ShutdownToken::is_shutdown
/// [`wait_timeout`]: ShutdownToken::wait_timeout
#[derive(Clone, Debug)]
pub struct ShutdownToken {
    flag: Arc<AtomicBool>,
    wake: Arc<std::sync::Mutex<SignalReceiver>>,
}

impl ShutdownToken {
    /// Installs the handlers (they only set the flag and write to a pipe).
    pub fn on_signals() -> Result<ShutdownToken> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register(sig, flag.clone()).map_err(hook_error)?;
        }
        Ok(ShutdownToken {
            flag,
            wake: Arc::new(std::sync::Mutex::new(SignalReceiver::new(&[
                SIGINT, SIGTERM,
            ])?)),
        })
    }

    /// True once SIGINT or SIGTERM arrived (or [`cancel`](Self::cancel) was called).
    pub fn is_shutdown(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Requests shutdown from code, as a signal would.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Waits at most `timeout` for shutdown; returns whether it was requested.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.is_shutdown() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut rx = self.wake.lock().unwrap_or_else(|p| p.into_inner());
            let _ = rx.recv_timeout(left.min(Duration::from_millis(50)));
        }
        true
    }
}

/// Watches another process through a pidfd: exit is seen without polling `/proc` and without
/// the pid-reuse race of `kill(pid, 0)`.
#[derive(Debug)]
pub struct ProcessWatch {
    fd: OwnedFd,
    pid: u32,
}

impl ProcessWatch {
    /// Starts watching `pid` (fails with [`Error::NotFound`] if it does not exist).
    pub fn new(pid: u32) -> Result<ProcessWatch> {
        Ok(ProcessWatch {
            fd: sys::pidfd(pid)?,
            pid,
        })
    }

    /// The watched process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True once the process has exited.
    pub fn has_exited(&self) -> Result<bool> {
        match sys::poll_readable(&[self.fd.as_fd()], Wait::Never) {
            Ok(_) => Ok(true),
            Err(Error::WouldBlock) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits at most `timeout` for the process to exit; returns whether it did.
    pub fn wait_exit_timeout(&self, timeout: Duration) -> Result<bool> {
        match sys::poll_readable(&[self.fd.as_fd()], Wait::timeout(timeout)) {
            Ok(_) => Ok(true),
            Err(Error::Timeout { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Signals awaited in the tokio reactor (feature `tokio`): [`recv`](AsyncSignals::recv)
/// is the async form of the [`SignalReceiver`] iterator. No code of ours runs in the
/// handlers but a write to a pipe; the task wakes on the pipe.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipckit::Result<()> {
/// use ipckit::signal::{self, AsyncSignals};
/// let mut signals = AsyncSignals::new(&[libc::SIGUSR2])?;
/// signal::send(std::process::id(), libc::SIGUSR2)?;
/// assert_eq!(signals.recv().await?, libc::SIGUSR2);
/// # Ok(()) }
/// ```
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub struct AsyncSignals {
    // Dropped before `rx`, which owns the descriptors.
    ready: Vec<tokio::io::unix::AsyncFd<std::os::fd::RawFd>>,
    rx: SignalReceiver,
}

#[cfg(feature = "tokio")]
fn register_readable(
    fd: std::os::fd::BorrowedFd<'_>,
) -> Result<tokio::io::unix::AsyncFd<std::os::fd::RawFd>> {
    use std::os::fd::AsRawFd;
    // SAFETY: every caller drops the registration before the owner of `fd` closes it: it
    // is a field declared before that owner, or a local of a method of that owner.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            fd.as_raw_fd(),
            tokio::io::Interest::READABLE,
        )
    }
    .map_err(|e| Error::Io {
        op: "registering with the tokio reactor",
        source: e.into_parts().1,
    })
}

#[cfg(feature = "tokio")]
impl AsyncSignals {
    /// Starts receiving `signals`, registered with the current runtime.
    pub fn new(signals: &[i32]) -> Result<AsyncSignals> {
        let rx = SignalReceiver::new(signals)?;
        let ready = rx
            .pipes
            .iter()
            .map(|(_, fd)| register_readable(fd.as_fd()))
            .collect::<Result<Vec<_>>>()?;
        Ok(AsyncSignals { ready, rx })
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Result<i32> {
        loop {
            match self.rx.try_recv() {
                Err(Error::WouldBlock) => {}
                r => return r,
            }
            // Wait until any signal's pipe is readable, then read it above.
            std::future::poll_fn(|cx| {
                for fd in &self.ready {
                    if let std::task::Poll::Ready(r) = fd.poll_read_ready(cx) {
                        if let Ok(mut guard) = r {
                            guard.clear_ready();
                        }
                        return std::task::Poll::Ready(());
                    }
                }
                std::task::Poll::Pending
            })
            .await;
        }
    }
}

#[cfg(feature = "tokio")]
impl ShutdownToken {
    /// Completes when shutdown is requested (SIGINT, SIGTERM or [`cancel`](Self::cancel)).
    /// Checks the flag every 50 ms as well as on each signal, so a `cancel` from code is
    /// seen within that time.
    pub async fn cancelled(&self) {
        while !self.is_shutdown() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(feature = "tokio")]
impl ProcessWatch {
    /// Completes when the process exits (the pidfd becomes readable, in the reactor).
    pub async fn exited(&self) -> Result<()> {
        let ready = register_readable(self.fd.as_fd())?;
        let r = ready
            .readable()
            .await
            .map(drop)
            .map_err(|source| Error::Io {
                op: "waiting for a process to exit",
                source,
            });
        drop(ready);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_signal_arrives_and_times_out_otherwise() {
        let mut rx = SignalReceiver::new(&[SIGUSR1]).unwrap();
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(20)),
            Err(Error::Timeout { .. })
        ));
        send(std::process::id(), SIGUSR1).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), SIGUSR1);
    }

    #[test]
    fn process_watch_sees_a_child_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.1")
            .spawn()
            .unwrap();
        let w = ProcessWatch::new(child.id()).unwrap();
        assert!(!w.has_exited().unwrap());
        assert!(w.wait_exit_timeout(Duration::from_secs(10)).unwrap());
        child.wait().unwrap();
        assert!(matches!(
            send(u32::MAX / 2, SIGUSR1),
            Err(Error::NotFound { .. }) | Err(Error::InvalidName { .. })
        ));
    }
}
