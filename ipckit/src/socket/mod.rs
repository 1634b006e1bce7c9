//! Sockets: Unix stream (`unix://`), Unix datagram (`unix+dgram://`), Unix sequenced-packet
//! (`unix+seqpacket://`), TCP (`tcp://`) and UDP (`udp://`).
//!
//! Stream sockets carry length-prefixed frames ([`crate::framing`]); datagram and
//! sequenced-packet sockets carry one message per datagram, as it is. (One exception: over
//! `unix+seqpacket`, where a 0-byte record reads as the end of the connection, an empty
//! message travels as the 8-byte record `\xFFipckit\x00`, and a message made only of copies
//! of it travels with one copy more.) Socket files are created with the
//! endpoint's mode (0600 by default), a stale socket file left by a dead process is replaced,
//! and a listener removes its socket file when dropped (if it is still the one it created).
//!
//! # Examples
//!
//! The same code runs over every socket scheme:
//!
//! ```
//! use ipckit::{MessageReceiver, MessageSender};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! let d = dir.path().display();
//! for url in [
//!     format!("unix://{d}/stream.sock"),
//!     format!("unix+dgram://{d}/dgram.sock"),
//!     format!("unix+seqpacket://{d}/seq.sock"),
//!     "tcp://127.0.0.1:0".to_string(), // port 0: the OS picks one
//!     "udp://127.0.0.1:0".to_string(),
//! ] {
//!     let mut listener = ipckit::bind(&url)?;
//!     let bound = listener.endpoint().clone(); // with the real port
//!     let mut client = ipckit::connect(&bound)?;
//!     client.send(b"ping")?;
//!     let mut server = listener.accept_timeout(Duration::from_secs(5))?;
//!     assert_eq!(server.recv_timeout(Duration::from_secs(5))?, b"ping");
//!     server.send(b"pong")?; // datagram servers reply to the last sender
//!     assert_eq!(client.recv_timeout(Duration::from_secs(5))?, b"pong");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Datagram sockets (`unix+dgram`, `udp`) cannot tell that the peer died while receiving: use
//! `recv_timeout`. Stream and sequenced-packet sockets report [`crate::Error::Disconnected`].

mod datagram;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

pub(crate) use datagram::{DatagramConn, Peer};

use crate::connection::Inner as Flavor;
use crate::endpoint::{Endpoint, PeerPolicy, Scheme};
use crate::error::{Error, Result};
use crate::stream::StreamConn;
use crate::sys::{self, FdKind, IoFd, SockAddr, SockKind};
use crate::transport::Wait;

fn kind_of(scheme: Scheme) -> SockKind {
    match scheme {
        Scheme::Unix | Scheme::Tcp => SockKind::Stream,
        Scheme::UnixSeqpacket => SockKind::SeqPacket,
        _ => SockKind::Datagram,
    }
}

fn transport_name(scheme: Scheme) -> &'static str {
    scheme.as_str()
}

/// A socket file this process created; removed on drop if it is still the same file.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn record(path: &Path) -> Option<SocketFile> {
        let st = rustix::fs::lstat(path).ok()?;
        Some(SocketFile {
            path: path.to_owned(),
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(st) = rustix::fs::lstat(&self.path) {
            if st.st_dev == self.dev && st.st_ino == self.ino {
                let _ = rustix::fs::unlink(&self.path);
            }
        }
    }
}

/// Binds `fd` to the Unix socket `path`, replacing a stale socket file left by a dead process,
/// then sets its permissions to `mode`.
///
/// The file is created no looser than `mode` (the socket's own mode is set before `bind`,
/// see [`sys::bind_unix_with_mode`]), so there is no window in which the umask's
/// permissions let another user connect; the `chmod` afterwards only restores bits the
/// umask removed.
fn bind_unix_path(fd: &OwnedFd, path: &Path, mode: u32) -> Result<SocketFile> {
    let addr = sys::unix_addr(path)?;
    match sys::bind_unix_with_mode(fd.as_fd(), &addr, mode) {
        Ok(()) => {}
        Err(Error::AddressInUse { addr: text }) => {
            let st = rustix::fs::lstat(path).map_err(|e| Error::os("lstat", e))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
                return Err(Error::WrongFileType {
                    path: path.to_owned(),
                    expected: "socket",
                    found: "non-socket file",
                });
            }
            if sys::unix_path_in_use(path) {
                return Err(Error::AddressInUse { addr: text });
            }
            tracing::debug!(path = %path.display(), "replacing stale socket file");
            let _ = rustix::fs::unlink(path);
            sys::bind_unix_with_mode(fd.as_fd(), &addr, mode)?;
        }
        Err(e) => return Err(e),
    }
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode))
        .map_err(|e| Error::os("chmod", e))?;
    SocketFile::record(path).ok_or(Error::NotFound {
        path: path.to_owned(),
    })
}

/// Resolves the endpoint's socket address (the first, for host names with several).
fn endpoint_addrs(ep: &Endpoint) -> Result<Vec<SockAddr>> {
    match ep.path() {
        Some(p) => Ok(vec![sys::unix_addr(p)?]),
        None => Ok(ep.socket_addrs()?.into_iter().map(sys::inet_addr).collect()),
    }
}

/// Bytes of a Unix socket's send buffer a datagram cannot use (the kernel refuses a datagram
/// longer than the buffer minus 32).
const UNIX_SKB_OVERHEAD: usize = 32;

/// Largest Unix datagram or packet the kernel reliably allocates: its linear part is one
/// kmalloc of at most 4 MiB (a little more fits in page fragments, not counted here).
const UNIX_DATAGRAM_MAX: usize = 4 << 20;

/// Send-buffer size that lets one datagram of `max` bytes through (capped by the kernel).
fn datagram_sndbuf(max: usize) -> usize {
    max.saturating_mul(2).saturating_add(64 << 10).min(64 << 20)
}

fn data_connection(fd: OwnedFd, ep: &Endpoint, peer: Peer, own_path: Option<PathBuf>) -> Flavor {
    let max = ep.effective_max_message_size();
    let scheme = ep.scheme();
    let io = IoFd::new(fd, FdKind::Socket, false).with_read_spin(ep.read_spin());
    match kind_of(scheme) {
        SockKind::Stream => Flavor::Stream(StreamConn::duplex(io, max, transport_name(scheme))),
        kind => {
            let mut send_max = max;
            if scheme != Scheme::Udp {
                sys::request_send_buffer(io.fd(), datagram_sndbuf(max));
                // What the kernel really grants (net.core.wmem_max caps the request), and the
                // largest buffer it allocates for one Unix datagram.
                let granted = sys::send_buffer(io.fd()).saturating_sub(UNIX_SKB_OVERHEAD);
                send_max = max.min(granted).min(UNIX_DATAGRAM_MAX);
            }
            Flavor::Datagram(DatagramConn::new(
                io,
                peer,
                (send_max, max),
                transport_name(scheme),
                kind == SockKind::SeqPacket,
                own_path,
            ))
        }
    }
}

/// A bound socket endpoint.
#[derive(Debug)]
pub(crate) enum SocketListener {
    /// Listening stream or sequenced-packet socket (non-blocking).
    Listening {
        fd: OwnedFd,
        endpoint: Endpoint,
        _file: Option<SocketFile>,
    },
    /// Bound datagram socket: handed out once as a connection that replies to the last sender.
    Datagram {
        fd: Option<OwnedFd>,
        endpoint: Endpoint,
        file: Option<SocketFile>,
    },
}

/// Binds a socket endpoint.
pub(crate) fn bind(ep: &Endpoint) -> Result<(SocketListener, Endpoint)> {
    let kind = kind_of(ep.scheme());
    let addrs = endpoint_addrs(ep)?;
    let addr = &addrs[0];
    let fd = sys::socket_for(addr, kind)?;
    let file = match ep.path() {
        Some(p) => Some(bind_unix_path(&fd, p, ep.options().mode)?),
        None => {
            if kind == SockKind::Stream {
                sys::set_reuseaddr(fd.as_fd())?;
            }
            sys::bind(fd.as_fd(), addr)?;
            None
        }
    };
    // The endpoint as bound: port 0 resolved to the real port, every option kept (the
    // accepted connections take `spin_us` and `peer` from it; only `max_msg` used to be
    // carried over).
    let bound = match sys::to_inet(&sys::local_addr(fd.as_fd())?) {
        Some(a) => format!("{}://{}", ep.scheme(), a)
            .parse::<Endpoint>()?
            .with_options(*ep.options()),
        None => ep.clone(),
    };
    let listener = if kind == SockKind::Datagram {
        SocketListener::Datagram {
            fd: Some(fd),
            endpoint: bound.clone(),
            file,
        }
    } else {
        sys::listen(fd.as_fd())?;
        sys::set_nonblocking(fd.as_fd(), true)?;
        SocketListener::Listening {
            fd,
            endpoint: bound.clone(),
            _file: file,
        }
    };
    Ok((listener, bound))
}

impl SocketListener {
    #[cfg_attr(any(loom, not(feature = "tokio")), allow(dead_code))]
    /// The listening socket, for readiness (`None` for a datagram endpoint, which hands out
    /// its socket at once).
    pub(crate) fn listening_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            SocketListener::Listening { fd, .. } => Some(fd.as_fd()),
            SocketListener::Datagram { .. } => None,
        }
    }

    /// Accepts the next connection. A datagram endpoint hands out its one socket, once.
    pub(crate) fn accept(&mut self, wait: Wait) -> Result<Flavor> {
        match self {
            SocketListener::Listening { fd, endpoint, .. } => {
                let conn = sys::accept(fd.as_fd(), wait)?;
                if endpoint.scheme() == Scheme::Tcp {
                    sys::set_nodelay(conn.as_fd())?;
                }
                Ok(data_connection(conn, endpoint, Peer::Connected, None))
            }
            SocketListener::Datagram { fd, endpoint, file } => match fd.take() {
                Some(fd) => {
                    let path = file.take().map(|mut f| {
                        // Hand the path over without the removal on drop (forgetting the
                        // record with its own path still in it leaked the path's buffer).
                        let p = std::mem::take(&mut f.path);
                        std::mem::forget(f);
                        p
                    });
                    if endpoint.scheme() == Scheme::Udp {
                        sys::request_recv_buffer(fd.as_fd(), 4 << 20);
                    }
                    let peer = match endpoint.options().peer {
                        PeerPolicy::Any => Peer::LastSender(None),
                        PeerPolicy::First => Peer::FirstSender,
                    };
                    Ok(data_connection(fd, endpoint, peer, path))
                }
                None => Err(Error::Unsupported {
                    op: "a second accept",
                    what: "a datagram endpoint (its one connection already receives from every sender)",
                }),
            },
        }
    }
}

/// Connects to a socket endpoint once (no retry while nobody listens).
pub(crate) fn connect(ep: &Endpoint, wait: Wait) -> Result<Flavor> {
    let kind = kind_of(ep.scheme());
    let mut last_err = None;
    for addr in endpoint_addrs(ep)? {
        let fd = sys::socket_for(&addr, kind)?;
        if ep.path().is_some() && kind == SockKind::Datagram {
            // A datagram client needs an address for replies to reach it. An automatic one
            // (the kernel's abstract autobind) leaves no file behind, even when the client is
            // killed, and costs the server no path lookup per reply; being connected, the
            // socket takes datagrams from its server only.
            sys::autobind(fd.as_fd())?;
        }
        let timed = matches!(wait, Wait::Until(_) | Wait::Never);
        if timed {
            sys::set_nonblocking(fd.as_fd(), true)?;
        }
        let r = sys::connect(fd.as_fd(), &addr, if timed { wait } else { Wait::Forever });
        if timed {
            sys::set_nonblocking(fd.as_fd(), false)?;
        }
        match r {
            Ok(()) => {
                if ep.scheme() == Scheme::Tcp {
                    sys::set_nodelay(fd.as_fd())?;
                }
                return Ok(data_connection(fd, ep, Peer::Connected, None));
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or(Error::ConnectionRefused {
        addr: ep.to_string(),
        reason: "no address to connect to",
    }))
}

#[cfg(test)]
mod tests {
    use crate::{Connection, Error, MessageReceiver, MessageSender};
    use std::time::Duration;

    /// A connected `unix+seqpacket` client and server (the directory holds the socket file).
    fn seqpacket_pair() -> (tempfile::TempDir, Connection, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("unix+seqpacket://{}/s", dir.path().display());
        let mut l = crate::bind(&url).unwrap();
        let c = crate::connect(&url).unwrap();
        let s = l.accept_timeout(Duration::from_secs(5)).unwrap();
        (dir, c, s)
    }

    #[test]
    fn seqpacket_empty_records_between_others_survive_a_close() {
        let (_dir, mut c, mut s) = seqpacket_pair();
        for m in [&b"a"[..], b"", b"", b"b"] {
            c.send(m).unwrap();
        }
        drop(c);
        let t = Duration::from_secs(5);
        assert_eq!(s.recv_timeout(t).unwrap(), b"a");
        assert_eq!(s.recv_timeout(t).unwrap(), b"");
        assert_eq!(s.recv_timeout(t).unwrap(), b"");
        assert_eq!(s.recv_timeout(t).unwrap(), b"b");
        assert!(matches!(s.recv_timeout(t), Err(Error::Disconnected)));
    }

    #[test]
    fn seqpacket_an_empty_message_just_before_a_close_is_delivered() {
        let (_dir, mut c, mut s) = seqpacket_pair();
        c.send(b"").unwrap();
        drop(c);
        let t = Duration::from_secs(5);
        assert_eq!(s.recv_timeout(t).unwrap(), b"");
        assert!(matches!(s.recv_timeout(t), Err(Error::Disconnected)));
    }

    /// What another program at the other end sees and may send: the empty message is the
    /// marker record, messages of markers carry one more; its empty records still read as
    /// empty messages while it is connected.
    #[test]
    fn seqpacket_empty_messages_travel_as_a_marker() {
        use super::datagram::SEQPACKET_EMPTY as M;
        use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketType};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut l = crate::bind(format!("unix+seqpacket://{}?max_msg=16", path.display())).unwrap();
        let raw = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        let t = Duration::from_secs(5);
        rustix::net::sockopt::set_socket_timeout(
            &raw,
            rustix::net::sockopt::Timeout::Recv,
            Some(t),
        )
        .unwrap();
        rustix::net::connect(&raw, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        let mut s = l.accept_timeout(t).unwrap();
        let two = [M, M].concat();
        let sent: [&[u8]; 4] = [b"", &M, b"x", &[&M[..], b"x"].concat()];
        for msg in sent {
            s.send(msg).unwrap();
        }
        let mut buf = [0u8; 64];
        let mut wire = Vec::new();
        for _ in 0..sent.len() {
            let (n, _) = rustix::net::recv(&raw, &mut buf, RecvFlags::empty()).unwrap();
            wire.push(buf[..n].to_vec());
        }
        assert_eq!(wire, [&M[..], &two, b"x", &[&M[..], b"x"].concat()]);
        // A message of markers alone needs room for one more (the maximum is 16 bytes).
        assert!(matches!(
            s.send(&two),
            Err(Error::MessageTooLarge {
                size: 16,
                max: 8,
                ..
            })
        ));
        for record in [&M[..], &two, b"", b"y", &[b'z'; 20]] {
            rustix::net::send(&raw, record, SendFlags::empty()).unwrap();
        }
        assert_eq!(s.recv_timeout(t).unwrap(), b"");
        assert_eq!(s.recv_timeout(t).unwrap(), M);
        assert_eq!(s.recv_timeout(t).unwrap(), b"");
        assert_eq!(s.recv_timeout(t).unwrap(), b"y");
        assert!(matches!(
            s.recv_timeout(t),
            Err(Error::IncomingTooLarge { size: 20, max: 16 })
        ));
        drop(raw);
        assert!(matches!(s.recv_timeout(t), Err(Error::Disconnected)));
    }
}
