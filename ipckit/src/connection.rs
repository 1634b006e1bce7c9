//! [`Connection`] and [`Listener`]: the one face every transport shows, chosen by URL.

use std::fmt;
use std::time::Duration;

use crate::endpoint::{Endpoint, Scheme, ToEndpoint};
use crate::error::{Error, Result};
use crate::pipe::FifoListener;
use crate::shm::{ShmConn, ShmListener};
use crate::socket::{DatagramConn, SocketListener};
use crate::stream::StreamConn;
use crate::transport::{MessageReceiver, MessageSender, Wait};

/// How a connection moves bytes. Users never see it.
pub(crate) enum Inner {
    /// Length-prefixed frames on a byte stream.
    Stream(StreamConn),
    /// One message per datagram or packet.
    Datagram(DatagramConn),
    /// Two rings in shared memory.
    Shm(Box<ShmConn>),
    /// A POSIX message queue, one way.
    Mq(crate::mq::MqConn),
    /// A durable queue in a directory, one way.
    Queue(crate::queue::QueueConn),
}

/// What an async wrapper watches to learn that a connection may make progress.
#[cfg(feature = "tokio")]
pub(crate) enum Watch<'a> {
    /// Descriptors for receiving and sending (the same one for a socket: `same`).
    Fds {
        rx: Option<std::os::fd::BorrowedFd<'a>>,
        tx: Option<std::os::fd::BorrowedFd<'a>>,
        same: bool,
    },
    /// Futex words in shared memory.
    Shm,
    /// A durable queue: its consumers' doorbell.
    Queue,
}

/// A pipe connection without descriptors (none is made so).
const NO_PIPE: Error = Error::Unsupported {
    op: "a pipe's capacity",
    what: "a connection without descriptors",
};

/// A message connection over any transport: what [`connect`] and [`Listener::accept`] return.
///
/// It implements [`MessageSender`] and [`MessageReceiver`] (and so [`crate::TypedSender`] and
/// [`crate::TypedReceiver`]). One-way transports (a FIFO, a one-way pipe) return
/// [`Error::Unsupported`] for the missing direction.
pub struct Connection {
    inner: Inner,
    endpoint: Endpoint,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint.to_string())
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn new(inner: Inner, endpoint: Endpoint) -> Connection {
        Connection { inner, endpoint }
    }

    /// What to watch for readiness.
    #[cfg(feature = "tokio")]
    pub(crate) fn watch(&self) -> Watch<'_> {
        match &self.inner {
            Inner::Stream(s) => {
                let (rx, tx, same) = s.fds();
                Watch::Fds { rx, tx, same }
            }
            Inner::Datagram(d) => Watch::Fds {
                rx: Some(d.fd()),
                tx: Some(d.fd()),
                same: true,
            },
            Inner::Mq(q) => Watch::Fds {
                rx: Some(q.fd()),
                tx: Some(q.fd()),
                same: true,
            },
            Inner::Shm(_) => Watch::Shm,
            Inner::Queue(_) => Watch::Queue,
        }
    }

    /// Finishes writing a message whose send returned with part of it still queued in
    /// this process (stream transports only; a no-op elsewhere).
    #[cfg(feature = "tokio")]
    pub(crate) fn flush_with(&mut self, wait: Wait) -> Result<()> {
        match &mut self.inner {
            Inner::Stream(s) => s.flush(wait),
            _ => Ok(()),
        }
    }

    /// The shared-memory connection behind this one, for the async waits.
    #[cfg(feature = "tokio")]
    pub(crate) fn shm_mut(&mut self) -> Option<&mut ShmConn> {
        match &mut self.inner {
            Inner::Shm(c) => Some(c),
            _ => None,
        }
    }

    /// The endpoint this connection belongs to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The mechanism.
    pub fn scheme(&self) -> Scheme {
        self.endpoint.scheme()
    }

    /// Who is at the other end of a `unix://` or `unix+seqpacket://` connection, as the kernel
    /// recorded it when the connection was made (`SO_PEERCRED`): on an accepted connection
    /// the process that connected, on a connecting one the process that listens. `None` for
    /// the other transports, which have no such record (`unix+dgram://` included: its peer is
    /// whoever sent last).
    ///
    /// A server that should only serve some users checks `uid` here; the kernel fills the
    /// record in, so an unprivileged peer cannot forge it.
    pub fn peer_credentials(&self) -> Result<Option<crate::sys::PeerCredentials>> {
        match (&self.inner, self.scheme()) {
            (Inner::Stream(s), Scheme::Unix) => match s.fds() {
                (Some(fd), _, _) => crate::sys::peer_credentials(fd).map(Some),
                _ => Ok(None),
            },
            (Inner::Datagram(d), Scheme::UnixSeqpacket) => {
                crate::sys::peer_credentials(d.fd()).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Sets the buffer the kernel keeps for the pipes of a `pipe:` or `fifo://` connection
    /// (`F_SETPIPE_SZ`; the URL's `capacity=` does it on connect and accept): how much a
    /// sender writes before it waits for the reader. The default, 16 pages (64 KiB), holds 11
    /// frames of 4 KiB (a 4,100-byte frame takes 1.5 pages on average). A larger one lets a
    /// bursty sender run further ahead and costs unswappable kernel memory per pipe; at 1 MiB
    /// it made 4 KiB pipe streams 8 % faster here (524 k against 484 k messages/s, medians of
    /// 10 interleaved runs; docs/BENCHMARKS.md). The kernel rounds `bytes` up to a
    /// power-of-two number of pages; the size it set is returned (both pipes of a two-way
    /// `pipe:` get it).
    ///
    /// Errors: [`Error::LimitExceeded`] above `/proc/sys/fs/pipe-max-size` (1 MiB by
    /// default) for a process without `CAP_SYS_RESOURCE`; [`Error::Io`] if the pipe holds more
    /// than `bytes` now; [`Error::Unsupported`] on other transports, or when a `pipe:` end is
    /// not a pipe (standard input from a terminal or file).
    ///
    /// ```
    /// let (mut conn, _child_end) = ipckit::pipe::duplex()?;
    /// assert_eq!(conn.set_pipe_capacity(256 * 1024)?, 256 * 1024);
    /// assert_eq!(conn.pipe_capacity()?, 256 * 1024);
    /// # Ok::<(), ipckit::Error>(())
    /// ```
    pub fn set_pipe_capacity(&mut self, bytes: usize) -> Result<usize> {
        let mut set = None;
        for fd in self.pipe_fds()?.into_iter().flatten() {
            set = Some(crate::sys::set_pipe_capacity(fd, bytes)?);
        }
        set.ok_or(NO_PIPE)
    }

    /// The buffer size of the pipe of a `pipe:` or `fifo://` connection (the receiving one of
    /// a two-way `pipe:`); see [`set_pipe_capacity`](Self::set_pipe_capacity).
    pub fn pipe_capacity(&self) -> Result<usize> {
        match self.pipe_fds()? {
            [Some(fd), _] | [None, Some(fd)] => crate::sys::pipe_capacity(fd),
            [None, None] => Err(NO_PIPE),
        }
    }

    /// The receiving and sending descriptors of a pipe or FIFO connection (one, if both
    /// directions share it).
    fn pipe_fds(&self) -> Result<[Option<std::os::fd::BorrowedFd<'_>>; 2]> {
        match (&self.inner, self.scheme()) {
            (Inner::Stream(s), Scheme::Pipe | Scheme::Fifo) => {
                let (rx, tx, shared) = s.fds();
                Ok([rx, if shared { None } else { tx }])
            }
            _ => Err(Error::Unsupported {
                op: "a pipe's capacity",
                what: "a transport other than pipe: and fifo://",
            }),
        }
    }

    /// The shared-memory end of an `shm://` connection, for its zero-copy calls and counters;
    /// `None` for other transports.
    pub fn as_shm(&mut self) -> Option<&mut ShmConn> {
        match &mut self.inner {
            Inner::Shm(c) => Some(c),
            _ => None,
        }
    }

    /// The consumer behind the bound end of a `queue://` connection, to acknowledge
    /// ([`ack_delivered`](crate::queue::Consumer::ack_delivered)) without waiting for the
    /// next `recv`, which otherwise acknowledges what the previous one delivered; `None` for
    /// other transports and for the producing end.
    pub fn as_queue_consumer(&mut self) -> Option<&mut crate::queue::Consumer> {
        match &mut self.inner {
            Inner::Queue(q) => q.consumer(),
            _ => None,
        }
    }
}

impl MessageSender for Connection {
    #[inline(always)]
    fn send_with(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        match &mut self.inner {
            Inner::Stream(s) => s.send(msg, wait),
            Inner::Datagram(d) => d.send(msg, wait),
            Inner::Shm(c) => c.send(msg, wait),
            Inner::Mq(q) => q.send(msg, wait),
            Inner::Queue(q) => q.send(msg, wait),
        }
    }

    fn max_message_size(&self) -> usize {
        match &self.inner {
            Inner::Stream(s) => s.max(),
            Inner::Datagram(d) => d.send_max(),
            Inner::Shm(c) => c.max_message_size(),
            Inner::Mq(q) => q.max(),
            Inner::Queue(q) => q.max(),
        }
    }
}

impl MessageReceiver for Connection {
    #[inline(always)]
    fn recv_into_with(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<()> {
        match &mut self.inner {
            Inner::Stream(s) => s.recv_into(buf, wait),
            Inner::Datagram(d) => d.recv_into(buf, wait, false),
            Inner::Shm(c) => c.recv_into(buf, wait),
            Inner::Mq(q) => q.recv_into(buf, wait),
            Inner::Queue(q) => q.recv_into(buf, wait),
        }
    }

    fn recv_with(&mut self, wait: Wait) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        match &mut self.inner {
            Inner::Stream(s) => s.recv_into(&mut v, wait)?,
            // Peek at the size first so the vector is allocated to fit, not to the maximum.
            Inner::Datagram(d) => d.recv_into(&mut v, wait, true)?,
            Inner::Shm(c) => c.recv_into(&mut v, wait)?,
            Inner::Mq(q) => q.recv_into(&mut v, wait)?,
            Inner::Queue(q) => q.recv_into(&mut v, wait)?,
        }
        Ok(v)
    }

    fn recv_sized_with(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<()> {
        match &mut self.inner {
            // A datagram receive otherwise reserves the largest datagram allowed: kept when
            // that is at most what a reused buffer may keep, else the size is peeked at first.
            Inner::Datagram(d) => {
                let max = d.recv_max();
                let exact = max > crate::transport::RETAIN_MAX && buf.capacity() < max;
                d.recv_into(buf, wait, exact)
            }
            _ => self.recv_into_with(buf, wait),
        }
    }

    fn max_message_size(&self) -> usize {
        match &self.inner {
            Inner::Datagram(d) => d.recv_max(),
            _ => MessageSender::max_message_size(self),
        }
    }
}

enum ListenerInner {
    Socket(SocketListener),
    Fifo(FifoListener),
    Shm(ShmListener),
    /// `pipe:` (the inherited pipe or stdio) and `shm+mpsc://` (the receiving end): one
    /// connection, handed out once.
    Once(Option<Connection>, &'static str),
}

/// A bound endpoint that hands out [`Connection`]s: what [`bind`] returns.
///
/// - Stream and sequenced-packet sockets: each `accept` is a new client.
/// - FIFO: each `accept` waits for the next writer (it completes when a writer has opened the
///   FIFO and sent its first message, or opened and closed it).
/// - Datagram sockets, `pipe:` and `shm+mpsc://`: the first `accept` returns the one
///   connection at once (a bound datagram connection replies to whoever sent last; an MPSC
///   receiver takes from every sender); later ones are [`Error::Unsupported`].
/// - `shm://` and `mmap://`: each `accept` takes the next client from the backlog.
/// - `queue://`: the first `accept` returns the consumer of the URL's group at once.
pub struct Listener {
    inner: ListenerInner,
    endpoint: Endpoint,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("endpoint", &self.endpoint.to_string())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// The endpoint as bound (for `tcp://…:0` and `udp://…:0`, with the port the OS chose).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The socket to watch for incoming connections, if there is one.
    #[cfg(feature = "tokio")]
    pub(crate) fn watch_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match &self.inner {
            ListenerInner::Socket(s) => s.listening_fd(),
            _ => None,
        }
    }

    /// The shared-memory listener behind this one, for async accepts.
    #[cfg(feature = "tokio")]
    pub(crate) fn shm_listener(&mut self) -> Option<&mut ShmListener> {
        match &mut self.inner {
            ListenerInner::Shm(l) => Some(l),
            _ => None,
        }
    }

    /// The core accept, waiting as `wait` allows.
    pub fn accept_with(&mut self, wait: Wait) -> Result<Connection> {
        let inner = match &mut self.inner {
            ListenerInner::Socket(s) => s.accept(wait)?,
            ListenerInner::Fifo(f) => f.accept(wait)?,
            ListenerInner::Shm(l) => l.accept(wait)?,
            ListenerInner::Once(conn, what) => {
                return conn.take().ok_or(Error::Unsupported {
                    op: "a second accept",
                    what,
                })
            }
        };
        Ok(Connection::new(inner, self.endpoint.clone()))
    }

    /// Accepts, blocking as long as needed.
    pub fn accept(&mut self) -> Result<Connection> {
        self.accept_with(Wait::Forever)
    }

    /// Accepts without blocking, or fails with [`Error::WouldBlock`].
    pub fn try_accept(&mut self) -> Result<Connection> {
        self.accept_with(Wait::Never)
    }

    /// Accepts, waiting at most `timeout`.
    pub fn accept_timeout(&mut self, timeout: Duration) -> Result<Connection> {
        self.accept_with(Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }
}

/// Binds an endpoint: creates the socket, FIFO or other named object, ready to accept.
///
/// ```
/// use ipckit::{MessageReceiver, MessageSender};
/// let dir = tempfile::tempdir()?;
/// let url = format!("unix://{}/demo.sock", dir.path().display());
/// let mut listener = ipckit::bind(&url)?;
/// let mut client = ipckit::connect(&url)?;
/// let mut server = listener.accept()?;
/// client.send(b"ping")?;
/// assert_eq!(server.recv()?, b"ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn bind(url: impl ToEndpoint) -> Result<Listener> {
    let ep = url.to_endpoint()?;
    let (inner, endpoint) = match ep.scheme() {
        Scheme::Pipe => (
            ListenerInner::Once(
                Some(crate::pipe::inherited_or_stdio(&ep)?),
                "pipe: (it has one connection)",
            ),
            ep,
        ),
        Scheme::Mq => (
            ListenerInner::Once(
                Some(Connection::new(crate::mq::bind(&ep)?, ep.clone())),
                "mq:// (its receiving end takes from every sender)",
            ),
            ep,
        ),
        Scheme::Queue => (
            ListenerInner::Once(
                Some(Connection::new(crate::queue::bind(&ep)?, ep.clone())),
                "queue:// (its consuming end reads as the URL's group)",
            ),
            ep,
        ),
        Scheme::ShmMpsc => (
            ListenerInner::Once(
                Some(Connection::new(crate::shm::bind_mpsc(&ep)?, ep.clone())),
                "shm+mpsc:// (its receiving end takes from every sender)",
            ),
            ep,
        ),
        Scheme::Fifo => (ListenerInner::Fifo(FifoListener::bind(&ep)?), ep),
        Scheme::Shm | Scheme::Mmap => (ListenerInner::Shm(ShmListener::bind(&ep)?), ep),
        _ => {
            let (s, bound) = crate::socket::bind(&ep)?;
            (ListenerInner::Socket(s), bound)
        }
    };
    Ok(Listener { inner, endpoint })
}

/// Connects to an endpoint. Fails at once with [`Error::ConnectionRefused`] if nobody is
/// there; use [`connect_timeout`] to wait for the other side to appear.
pub fn connect(url: impl ToEndpoint) -> Result<Connection> {
    connect_with(url, Wait::Forever)
}

/// Connects, retrying while nobody is there yet, for at most `timeout`.
pub fn connect_timeout(url: impl ToEndpoint, timeout: Duration) -> Result<Connection> {
    connect_with(url, Wait::timeout(timeout))
}

/// The core connect. With [`Wait::Until`], retries every few milliseconds while the peer is
/// absent (no socket file, connection refused, FIFO without reader) until the deadline.
pub fn connect_with(url: impl ToEndpoint, wait: Wait) -> Result<Connection> {
    let ep = url.to_endpoint()?;
    loop {
        let attempt = match ep.scheme() {
            Scheme::Pipe => crate::pipe::inherited_or_stdio(&ep),
            Scheme::Fifo => crate::pipe::connect_fifo(&ep).map(|i| Connection::new(i, ep.clone())),
            Scheme::ShmMpsc => {
                crate::shm::connect_mpsc(&ep).map(|i| Connection::new(i, ep.clone()))
            }
            Scheme::Mq => crate::mq::connect(&ep).map(|i| Connection::new(i, ep.clone())),
            Scheme::Queue => crate::queue::connect(&ep).map(|i| Connection::new(i, ep.clone())),
            Scheme::Shm | Scheme::Mmap => {
                crate::shm::connect_channel(&ep, wait).map(|i| Connection::new(i, ep.clone()))
            }
            _ => crate::socket::connect(&ep, wait).map(|i| Connection::new(i, ep.clone())),
        };
        match attempt {
            Err(e @ (Error::ConnectionRefused { .. } | Error::NotFound { .. }))
                if matches!(wait, Wait::Until(_)) =>
            {
                if wait.remaining() == Some(Duration::ZERO) {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            other => return other,
        }
    }
}
