//! Sockets: creation, addresses, connect/accept with waits, datagram send/receive.

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use super::fd::{poll_one, Dir, FdKind, IoFd};
use crate::error::{Error, Result};
use crate::transport::Wait;

/// A socket address of any family.
pub(crate) type SockAddr = rustix::net::SocketAddrAny;

/// Socket types ipckit uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SockKind {
    Stream,
    Datagram,
    SeqPacket,
}

impl SockKind {
    fn raw(self) -> SocketType {
        match self {
            SockKind::Stream => SocketType::STREAM,
            SockKind::Datagram => SocketType::DGRAM,
            SockKind::SeqPacket => SocketType::SEQPACKET,
        }
    }
}

/// A Unix socket address for `path`.
pub(crate) fn unix_addr(path: &Path) -> Result<SockAddr> {
    rustix::net::SocketAddrUnix::new(path)
        .map(SockAddr::from)
        .map_err(|e| Error::os("socket path", e))
}

/// An IP socket address.
pub(crate) fn inet_addr(addr: SocketAddr) -> SockAddr {
    SockAddr::from(addr)
}

/// Converts back to an IP socket address, if it is one.
pub(crate) fn to_inet(addr: &SockAddr) -> Option<SocketAddr> {
    SocketAddr::try_from(addr.clone()).ok()
}

/// Creates a close-on-exec socket of `kind` in the family of `addr`.
pub(crate) fn socket_for(addr: &SockAddr, kind: SockKind) -> Result<OwnedFd> {
    let family = addr.address_family();
    let family = if family == AddressFamily::UNIX {
        AddressFamily::UNIX
    } else if family == AddressFamily::INET6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    rustix::net::socket_with(family, kind.raw(), SocketFlags::CLOEXEC, None)
        .map_err(|e| Error::os("socket", e))
}

fn addr_text(addr: &SockAddr) -> String {
    if let Ok(u) = rustix::net::SocketAddrUnix::try_from(addr.clone()) {
        if let Some(p) = u.path_bytes() {
            use std::os::unix::ffi::OsStrExt;
            return Path::new(std::ffi::OsStr::from_bytes(p))
                .display()
                .to_string();
        }
    }
    match to_inet(addr) {
        Some(a) => a.to_string(),
        None => format!("{addr:?}"),
    }
}

/// Maps errors of `connect` and `bind` to typed variants.
fn addr_error(op: &'static str, addr: &SockAddr, e: Errno) -> Error {
    match e {
        Errno::CONNREFUSED => Error::ConnectionRefused {
            addr: addr_text(addr),
            reason: "connection refused (nothing bound there)",
        },
        Errno::NOENT => Error::ConnectionRefused {
            addr: addr_text(addr),
            reason: "no such socket file",
        },
        Errno::ADDRINUSE => Error::AddressInUse {
            addr: addr_text(addr),
        },
        Errno::ACCESS | Errno::PERM => Error::PermissionDenied {
            what: format!("{op} {}", addr_text(addr)),
        },
        e => Error::os(op, e),
    }
}

/// Whether some socket is bound to the Unix socket path `path`, from `/proc/net/unix`:
/// reading it has no effect on that socket (a probing `connect` would queue a connection on
/// a live listener). When the table cannot be read, the answer is yes (the safe side).
pub(crate) fn unix_path_in_use(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return true;
    };
    let given = path.as_os_str().as_bytes();
    let absolute = std::fs::canonicalize(path).ok();
    let matches = |p: &str| {
        p.as_bytes() == given
            || absolute
                .as_deref()
                .is_some_and(|a| a.as_os_str().as_bytes() == p.as_bytes())
    };
    table
        .lines()
        .skip(1)
        .any(|line| line.split_whitespace().nth(7).is_some_and(matches))
}

/// `bind(2)`.
pub(crate) fn bind(fd: BorrowedFd<'_>, addr: &SockAddr) -> Result<()> {
    rustix::net::bind(fd, addr).map_err(|e| addr_error("bind", addr, e))
}

/// Binds a Unix socket to an automatic abstract address (`bind` with an empty address).
pub(crate) fn autobind(fd: BorrowedFd<'_>) -> Result<()> {
    rustix::net::bind(fd, &rustix::net::SocketAddrUnix::new_unnamed())
        .map_err(|e| Error::os("bind (autobind)", e))
}

/// `listen(2)` with a generous backlog.
pub(crate) fn listen(fd: BorrowedFd<'_>) -> Result<()> {
    rustix::net::listen(fd, 1024).map_err(|e| Error::os("listen", e))
}

/// `connect(2)`, waiting as `wait` allows for a connection in progress (TCP).
pub(crate) fn connect(fd: BorrowedFd<'_>, addr: &SockAddr, wait: Wait) -> Result<()> {
    match rustix::net::connect(fd, addr) {
        Ok(()) => Ok(()),
        Err(Errno::INPROGRESS | Errno::INTR) => {
            poll_one(fd, rustix::event::PollFlags::OUT, wait)?;
            match rustix::net::sockopt::socket_error(fd) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(addr_error("connect", addr, e)),
                Err(e) => Err(Error::os("getsockopt(SO_ERROR)", e)),
            }
        }
        Err(e) => Err(addr_error("connect", addr, e)),
    }
}

/// `accept4(SOCK_CLOEXEC)` on a non-blocking listening socket, waiting as `wait` allows.
/// The accepted socket is blocking.
pub(crate) fn accept(listener: BorrowedFd<'_>, wait: Wait) -> Result<OwnedFd> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(fd) => return Ok(fd),
            Err(Errno::INTR | Errno::CONNABORTED) => continue,
            Err(Errno::AGAIN) => {
                if wait == Wait::Never {
                    return Err(Error::WouldBlock);
                }
                poll_one(listener, rustix::event::PollFlags::IN, wait)?;
            }
            Err(e) => return Err(Error::os("accept", e)),
        }
    }
}

/// Sets `O_NONBLOCK` on a socket (listeners only; data sockets use `MSG_DONTWAIT`).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    rustix::io::ioctl_fionbio(fd, on).map_err(|e| Error::os("ioctl(FIONBIO)", e))
}

/// `TCP_NODELAY`.
pub(crate) fn set_nodelay(fd: BorrowedFd<'_>) -> Result<()> {
    rustix::net::sockopt::set_tcp_nodelay(fd, true)
        .map_err(|e| Error::os("setsockopt(TCP_NODELAY)", e))
}

/// `SO_REUSEADDR`.
pub(crate) fn set_reuseaddr(fd: BorrowedFd<'_>) -> Result<()> {
    rustix::net::sockopt::set_socket_reuseaddr(fd, true)
        .map_err(|e| Error::os("setsockopt(SO_REUSEADDR)", e))
}

/// Asks for a send buffer of `bytes` (the kernel caps it at `net.core.wmem_max`). Failure is
/// not an error: the buffer stays at its default.
pub(crate) fn request_send_buffer(fd: BorrowedFd<'_>, bytes: usize) {
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, bytes);
}

/// Asks for a receive buffer of `bytes` (capped at `net.core.rmem_max`).
pub(crate) fn request_recv_buffer(fd: BorrowedFd<'_>, bytes: usize) {
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(fd, bytes);
}

/// The send buffer size.
pub(crate) fn send_buffer(fd: BorrowedFd<'_>) -> usize {
    rustix::net::sockopt::socket_send_buffer_size(fd).unwrap_or(0)
}

/// `getsockname(2)`.
pub(crate) fn local_addr(fd: BorrowedFd<'_>) -> Result<SockAddr> {
    rustix::net::getsockname(fd).map_err(|e| Error::os("getsockname", e))
}

/// True if the peer of a connection-oriented socket has shut down its side (`POLLRDHUP`).
pub(crate) fn peer_hung_up(fd: BorrowedFd<'_>) -> bool {
    use rustix::event::PollFlags;
    matches!(
        poll_one(fd, PollFlags::RDHUP, Wait::Never),
        Ok(f) if f.intersects(PollFlags::RDHUP | PollFlags::HUP)
    )
}

/// Bytes waiting to be read (`FIONREAD`); for a sequenced-packet socket, the size of the
/// next record, or 0 when nothing is queued.
pub(crate) fn pending_bytes(fd: BorrowedFd<'_>) -> u64 {
    rustix::io::ioctl_fionread(fd).unwrap_or(0)
}

/// Sends one datagram (to `to`, or to the connected peer), waiting as `wait` allows.
#[inline(always)]
pub(crate) fn send_datagram(
    sock: &mut IoFd,
    msg: &[u8],
    to: Option<&SockAddr>,
    wait: Wait,
) -> Result<std::result::Result<usize, Errno>> {
    debug_assert_eq!(sock.kind(), FdKind::Socket);
    sock.io(Dir::Write, wait, |fd, dontwait| {
        let mut flags = SendFlags::NOSIGNAL;
        if dontwait {
            flags |= SendFlags::DONTWAIT;
        }
        match to {
            Some(addr) => rustix::net::sendto(fd, msg, flags, addr),
            None => rustix::net::send(fd, msg, flags),
        }
    })
}

/// What one datagram receive produced.
pub(crate) struct Received {
    /// The datagram's real length (may exceed what was stored when truncated).
    pub(crate) len: usize,
    /// The sender, when asked for.
    pub(crate) from: Option<SockAddr>,
}

/// Receives one datagram into `out`'s spare capacity (at most `cap` bytes are stored), with
/// `MSG_TRUNC` so an oversized datagram is detected. `peek` leaves it queued.
#[inline(always)]
pub(crate) fn recv_datagram(
    sock: &mut IoFd,
    out: &mut Vec<u8>,
    cap: usize,
    want_from: bool,
    peek: bool,
    wait: Wait,
) -> Result<std::result::Result<Received, Errno>> {
    out.clear();
    out.reserve(cap);
    let r = sock.io(Dir::Read, wait, |fd, dontwait| {
        let mut flags = RecvFlags::TRUNC;
        if dontwait {
            flags |= RecvFlags::DONTWAIT;
        }
        if peek {
            flags |= RecvFlags::PEEK;
        }
        let spare = &mut out.spare_capacity_mut()[..cap];
        if want_from {
            rustix::net::recvfrom(fd, spare, flags)
                .map(|((init, _), len, from)| (init.len(), len, from))
        } else {
            rustix::net::recv(fd, spare, flags).map(|((init, _), len)| (init.len(), len, None))
        }
    })?;
    Ok(r.map(|(stored, len, from)| {
        // SAFETY:
        // - the kernel initialised `stored` bytes of the spare capacity, and
        //   `stored <= cap <= capacity - len` because the slice passed had `cap` elements.
        unsafe { out.set_len(stored) };
        Received { len, from }
    }))
}

/// Who is at the other end of a connected Unix stream or sequenced-packet socket, as the
/// kernel recorded it when the connection was made (`SO_PEERCRED`): for the accepting side,
/// the process that called `connect`; for the connecting side, the process that called
/// `listen`. The kernel fills it in; the peer cannot choose it (except a privileged peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// The peer's process id, as seen from this process's pid namespace: 0 when the peer
    /// lives in a pid namespace this one cannot see into.
    pub pid: u32,
    /// The peer's effective user id (at connect/listen time).
    pub uid: u32,
    /// The peer's effective group id (at connect/listen time).
    pub gid: u32,
}

/// `getsockopt(SO_PEERCRED)`.
///
/// Through libc rather than `rustix::net::sockopt::socket_peercred`: rustix returns a
/// `UCred` whose `pid` is a non-zero type, but the kernel reports pid 0 for a peer in a pid
/// namespace we cannot see (and for sockets without a peer), which that type cannot hold.
pub(crate) fn peer_credentials(fd: BorrowedFd<'_>) -> Result<PeerCredentials> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY:
    // - `fd` is a live descriptor for the duration of the call (borrowed);
    // - `cred` is a writable `ucred` of `len` bytes, the size the kernel writes for
    //   `SO_PEERCRED`, and `len` is a valid in/out length.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(Error::os(
            "getsockopt(SO_PEERCRED)",
            Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO),
        ));
    }
    Ok(PeerCredentials {
        pid: u32::try_from(cred.pid).unwrap_or(0),
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Binds a Unix socket to a path so that the file never has looser permissions than
/// `mode`, whatever the umask.
///
/// Linux creates the socket file with the socket inode's mode masked by the umask
/// (`unix_bind`: `S_IFSOCK | (inode->i_mode & ~umask)`), and a fresh socket inode is 0777 —
/// so a plain `bind` makes a file that other users may connect to until a later `chmod`.
/// Setting the socket inode's mode with `fchmod` *before* `bind` makes the file appear
/// with `mode & ~umask`, never looser than `mode`; the caller then `chmod`s it to exactly
/// `mode` (which only widens it to what was asked, if the umask removed bits). `fchmod` on
/// the descriptor touches only this socket: unlike changing the umask, it is safe with other
/// threads creating files at the same time.
pub(crate) fn bind_unix_with_mode(fd: BorrowedFd<'_>, addr: &SockAddr, mode: u32) -> Result<()> {
    rustix::fs::fchmod(fd, rustix::fs::Mode::from_raw_mode(mode & 0o777))
        .map_err(|e| Error::os("fchmod (socket, before bind)", e))?;
    bind(fd, addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn umask() -> u32 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    }

    /// The file `bind` creates already has the requested mode (minus the umask), before
    /// any `chmod`: there is no moment at which it is 0777 & ~umask.
    #[test]
    fn socket_file_is_created_with_the_mode_not_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o640, 0o000] {
            let path = dir.path().join(format!("s{mode:o}"));
            let addr = unix_addr(&path).unwrap();
            let fd = socket_for(&addr, SockKind::Stream).unwrap();
            bind_unix_with_mode(fd.as_fd(), &addr, mode).unwrap();
            let st = rustix::fs::lstat(&path).unwrap();
            assert_eq!(st.st_mode & 0o777, mode & !umask(), "mode {mode:o}");
        }
    }

    #[test]
    fn peer_credentials_of_a_socketpair_are_ours() {
        let (a, _b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let c = peer_credentials(a.as_fd()).unwrap();
        assert_eq!(c.pid, std::process::id());
        assert_eq!(c.uid, rustix::process::geteuid().as_raw());
        assert_eq!(c.gid, rustix::process::getegid().as_raw());
    }
}
