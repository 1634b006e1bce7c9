//! A file descriptor that knows how to wait: every read/write/accept goes through
//! [`IoFd::io`], which turns a [`Wait`] into a blocking call, a non-blocking attempt, or
//! attempts separated by `poll(2)` until a deadline.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::transport::Wait;

/// What kind of descriptor: sockets take per-call `MSG_DONTWAIT`; anything else needs the
/// descriptor's `O_NONBLOCK` flag switched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdKind {
    Socket,
    Other,
}

/// Direction to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

impl Dir {
    fn poll_flags(self) -> PollFlags {
        match self {
            Dir::Read => PollFlags::IN,
            Dir::Write => PollFlags::OUT,
        }
    }
}

/// An owned descriptor plus the blocking mode it is currently in.
#[derive(Debug)]
pub(crate) struct IoFd {
    fd: OwnedFd,
    kind: FdKind,
    /// How long a blocking read polls before it sleeps (see `spin_read`).
    read_spin: std::time::Duration,
    /// Whether `O_NONBLOCK` is set on the open file description (non-sockets only).
    nonblocking: bool,
}

impl IoFd {
    /// Wraps `fd`; `nonblocking` must say whether `O_NONBLOCK` is currently set.
    pub(crate) fn new(fd: OwnedFd, kind: FdKind, nonblocking: bool) -> IoFd {
        IoFd {
            fd,
            kind,
            read_spin: std::time::Duration::ZERO,
            nonblocking,
        }
    }

    /// Sets how long blocking reads poll before they sleep.
    pub(crate) fn with_read_spin(mut self, spin: std::time::Duration) -> IoFd {
        self.read_spin = spin;
        self
    }

    pub(crate) fn kind(&self) -> FdKind {
        self.kind
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    #[cold]
    fn set_nonblocking(&mut self, on: bool) -> Result<()> {
        if self.kind == FdKind::Other && self.nonblocking != on {
            let flags = rustix::fs::fcntl_getfl(&self.fd).map_err(|e| Error::os("fcntl", e))?;
            let flags = if on {
                flags | OFlags::NONBLOCK
            } else {
                flags - OFlags::NONBLOCK
            };
            rustix::fs::fcntl_setfl(&self.fd, flags).map_err(|e| Error::os("fcntl", e))?;
            self.nonblocking = on;
        }
        Ok(())
    }

    /// Runs `op` until it stops reporting `EAGAIN`/`EINTR`, waiting as `wait` allows.
    ///
    /// `op` gets the descriptor and `dontwait`: true when it must not block (sockets pass
    /// `MSG_DONTWAIT`; other descriptors are already in non-blocking mode then). With
    /// [`Wait::Forever`] the call is a plain blocking system call: no `poll`, no extra system
    /// call on the fast path.
    ///
    /// Inlined, as is every step above it from `Connection::send_with`/`recv_into_with` on a
    /// stream or datagram connection: a call frame that is live across the system call costs
    /// about 15 ns a message on this project's machine (the return predictor after a system
    /// call, `scripts/call-depth.c`), and the seven such frames of a pipe receive cost
    /// 64-byte streams a quarter of their rate (docs/BENCHMARKS.md).
    #[inline(always)]
    pub(crate) fn io<T>(
        &mut self,
        dir: Dir,
        wait: Wait,
        mut op: impl FnMut(BorrowedFd<'_>, bool) -> rustix::io::Result<T>,
    ) -> Result<std::result::Result<T, Errno>> {
        // `matches!`, not `==`: the derived comparison looks at a deadline's `Instant` too.
        let dontwait = !matches!(wait, Wait::Forever);
        if self.kind == FdKind::Other && self.nonblocking != dontwait {
            self.set_nonblocking(dontwait)?;
        }
        if dir == Dir::Read && !dontwait && !self.read_spin.is_zero() {
            if let Some(r) = self.spin_read(&mut op) {
                return Ok(r);
            }
        }
        loop {
            match op(self.fd.as_fd(), dontwait) {
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) if dontwait => {
                    if matches!(wait, Wait::Never) {
                        return Err(Error::WouldBlock);
                    }
                    poll_one(self.fd.as_fd(), dir.poll_flags(), wait)?;
                }
                r => return Ok(r),
            }
        }
    }

    /// Before a blocking read, polls for up to `read_spin` (a few microseconds): a reply
    /// that comes that soon is taken without putting this thread to sleep and without making
    /// the sender pay for waking an idle CPU, which on virtual machines costs more than the
    /// message itself. Returns the read's outcome if data came, `None` to go on blocking.
    /// Called only with a budget.
    fn spin_read<T>(
        &mut self,
        op: &mut impl FnMut(BorrowedFd<'_>, bool) -> rustix::io::Result<T>,
    ) -> Option<std::result::Result<T, Errno>> {
        let budget = self.read_spin;
        let start = std::time::Instant::now();
        let mut round = 0u32;
        loop {
            match self.kind {
                // One non-blocking attempt per round: no extra system call when data is there.
                FdKind::Socket => match op(self.fd.as_fd(), true) {
                    Err(Errno::AGAIN | Errno::INTR) => {}
                    r => return Some(r),
                },
                // The descriptor stays blocking (switching it costs two system calls): ask
                // how many bytes are there. Not `poll`: a pipe polled once makes every later
                // write wake its readers (`sys::wait_fifo_data`). A descriptor that cannot
                // say blocks at once; with its writer gone nothing is there, so the read
                // that follows the budget sees the end.
                FdKind::Other => match rustix::io::ioctl_fionread(&self.fd) {
                    Ok(1..) => return None,
                    Ok(0) => {}
                    Err(_) => return None,
                },
            }
            round += 1;
            if start.elapsed() >= budget {
                return None;
            }
            if round % 8 == 0 {
                // Let a peer that shares this CPU run.
                std::thread::yield_now();
            } else {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// Polls one descriptor for `flags` until ready or `wait` runs out. Returns the revents.
pub(crate) fn poll_one(fd: BorrowedFd<'_>, flags: PollFlags, wait: Wait) -> Result<PollFlags> {
    loop {
        let timeout = wait.remaining().map(|d| {
            Timespec::try_from(d).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        let mut fds = [PollFd::new(&fd, flags)];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => {
                if wait == Wait::Forever {
                    continue;
                }
                return Err(wait.expired());
            }
            Ok(_) => return Ok(fds[0].revents()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::os("poll", e)),
        }
    }
}

/// Sets or clears close-on-exec.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let flags = if on {
        rustix::io::FdFlags::CLOEXEC
    } else {
        rustix::io::FdFlags::empty()
    };
    rustix::io::fcntl_setfd(fd, flags).map_err(|e| Error::os("fcntl(F_SETFD)", e))
}

impl crate::framing::ByteSource for IoFd {
    #[inline(always)]
    fn read_uninit(&mut self, buf: &mut [std::mem::MaybeUninit<u8>], wait: Wait) -> Result<usize> {
        let kind = self.kind;
        let r = self.io(Dir::Read, wait, |fd, dontwait| match kind {
            FdKind::Socket => {
                let flags = if dontwait {
                    rustix::net::RecvFlags::DONTWAIT
                } else {
                    rustix::net::RecvFlags::empty()
                };
                rustix::net::recv(fd, &mut *buf, flags).map(|((init, _), _)| init.len())
            }
            FdKind::Other => rustix::io::read(fd, &mut *buf).map(|(init, _)| init.len()),
        })?;
        r.map_err(|e| Error::os("read", e))
    }

    /// Pipes and FIFOs: `readv` there took 64-byte streams from 1.12 M to 1.27 M msg/s
    /// (12 interleaved runs). Sockets keep one `recv` into the read-ahead buffer: `recvmsg`
    /// with two buffers took Unix-socket 64-byte streams from 813 k to 742 k msg/s.
    fn reads_head_and_body(&self) -> bool {
        self.kind == FdKind::Other
    }

    /// Pipes and FIFOs: see [`crate::framing::ByteSource::reads_next_header`].
    fn reads_next_header(&self) -> bool {
        self.kind == FdKind::Other
    }

    fn read_head_body(
        &mut self,
        head: &mut [u8; crate::framing::HEADER_LEN],
        body: &mut [u8],
        wait: Wait,
    ) -> Result<usize> {
        debug_assert_eq!(
            self.kind,
            FdKind::Other,
            "sockets read through `read_uninit`"
        );
        let r = self.io(Dir::Read, wait, |fd, _| {
            let mut bufs = [
                std::io::IoSliceMut::new(&mut head[..]),
                std::io::IoSliceMut::new(&mut *body),
            ];
            rustix::io::readv(fd, &mut bufs)
        })?;
        r.map_err(|e| Error::os("read", e))
    }
}

impl crate::framing::ByteSink for IoFd {
    #[inline(always)]
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>], wait: Wait) -> Result<usize> {
        let kind = self.kind;
        let r = self.io(Dir::Write, wait, |fd, dontwait| match kind {
            FdKind::Socket if bufs.len() == 1 => {
                let mut flags = rustix::net::SendFlags::NOSIGNAL;
                if dontwait {
                    flags |= rustix::net::SendFlags::DONTWAIT;
                }
                rustix::net::send(fd, &bufs[0], flags)
            }
            FdKind::Other if bufs.len() == 1 => rustix::io::write(fd, &bufs[0]),
            FdKind::Socket => {
                let mut flags = rustix::net::SendFlags::NOSIGNAL;
                if dontwait {
                    flags |= rustix::net::SendFlags::DONTWAIT;
                }
                rustix::net::sendmsg(
                    fd,
                    bufs,
                    &mut rustix::net::SendAncillaryBuffer::default(),
                    flags,
                )
            }
            FdKind::Other => rustix::io::writev(fd, bufs),
        })?;
        r.map_err(|e| Error::os("write", e))
    }
}

impl AsFd for IoFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Polls several descriptors for readability until one is ready or `wait` runs out.
pub(crate) fn poll_readable(fds: &[BorrowedFd<'_>], wait: Wait) -> Result<()> {
    loop {
        let mut set: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(fd, PollFlags::IN))
            .collect();
        let timeout = wait.remaining().map(|d| {
            Timespec::try_from(d).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        match rustix::event::poll(&mut set, timeout.as_ref()) {
            Ok(0) if wait == Wait::Forever => continue,
            Ok(0) => return Err(wait.expired()),
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::os("poll", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A pipe read that spins first takes a message that comes during the spin, one that
    /// comes after it (blocking), and the end once the writer is gone.
    #[test]
    fn a_spinning_pipe_read_takes_data_and_the_end() {
        let (rx, tx) = rustix::pipe::pipe().unwrap();
        let mut io = IoFd::new(rx, FdKind::Other, false).with_read_spin(Duration::from_millis(5));
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(500));
            rustix::io::write(&tx, b"in the spin").unwrap();
            std::thread::sleep(Duration::from_millis(30));
            rustix::io::write(&tx, b"after it").unwrap();
        });
        let mut buf = [0u8; 32];
        let mut read = |io: &mut IoFd| {
            io.io(Dir::Read, Wait::Forever, |fd, _| {
                rustix::io::read(fd, &mut buf)
            })
            .unwrap()
            .unwrap()
        };
        assert_eq!(read(&mut io), 11);
        let t0 = Instant::now();
        assert_eq!(read(&mut io), 8);
        assert!(
            t0.elapsed() >= Duration::from_millis(5),
            "waited past the spin"
        );
        writer.join().unwrap();
        assert_eq!(read(&mut io), 0, "the writer is gone");
    }
}
