//! Async connections (feature `tokio`): every transport, awaited in the tokio reactor.
//!
//! [`AsyncConnection`] wraps a [`Connection`] and waits the way each mechanism allows,
//! without busy polling and without a thread per connection:
//!
//! | transport | what the task waits on |
//! |---|---|
//! | sockets, `pipe:`, `fifo://`, `mq://` | the descriptor, in tokio's reactor (`AsyncFd`) |
//! | `shm://`, `mmap://`, `shm+mpsc://` | the ring's futex words, through one watcher thread per process (`futex_waitv`) |
//! | `queue://` | consumers: the queue's futex doorbell, through the same watcher; producers waiting for a group commit: a 2 ms timer |
//! | `fifo://` accept | a 2 ms timer (each accept opens a new read end) |
//!
//! Shared-memory waits spin for `spin_us` first while the peer runs (as blocking calls do),
//! so a reply that comes within microseconds is taken without a trip through the reactor.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ipckit::Result<()> {
//! use ipckit::aio;
//! let dir = tempfile::tempdir().unwrap();
//! let url = format!("unix://{}/async.sock", dir.path().display());
//! let mut listener = aio::bind(&url)?;
//! let mut client = aio::connect(&url).await?;
//! let mut server = listener.accept().await?;
//! client.send(b"ping").await?;
//! assert_eq!(server.recv().await?, b"ping");
//! server.send_typed(&42u32).await?;
//! assert_eq!(client.recv_typed::<u32>().await?, 42);
//! # Ok(()) }
//! ```

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::connection::Watch;
use crate::endpoint::{Endpoint, ToEndpoint};
use crate::error::{Error, Result};
use crate::transport::{decode, MessageReceiver, MessageSender, Wait};
use crate::{Connection, Listener};

/// Retry period of the transports that have nothing to watch.
const POLL_PERIOD: Duration = Duration::from_millis(2);

/// What a wait is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// A receive may make progress.
    pub recv: bool,
    /// A send that would have blocked may make progress.
    pub send: bool,
}

impl Ready {
    /// Wait for a receive.
    pub const RECV: Ready = Ready {
        recv: true,
        send: false,
    };
    /// Wait for a send.
    pub const SEND: Ready = Ready {
        recv: false,
        send: true,
    };
    /// Wait for either.
    pub const ANY: Ready = Ready {
        recv: true,
        send: true,
    };
}

fn reactor_error(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { op, source }
}

/// Registers a borrowed descriptor with the reactor.
///
/// # Safety
/// The caller keeps the descriptor open, and the same file, for as long as the returned
/// registration lives (in this module: the registration is a field declared before the
/// connection or listener that owns the descriptor, so it is dropped first).
unsafe fn register(fd: BorrowedFd<'_>, interest: Interest) -> Result<AsyncFd<RawFd>> {
    // SAFETY: forwarded to our caller (see above).
    unsafe { AsyncFd::register_with_interest(fd.as_raw_fd(), interest) }.map_err(|e| Error::Io {
        op: "registering with the tokio reactor",
        source: e.into_parts().1,
    })
}

/// How an [`AsyncConnection`] learns that its connection may make progress.
enum Readiness {
    /// One descriptor both ways (a socket, a message queue).
    One(AsyncFd<RawFd>),
    /// A read and a write descriptor (pipes); a one-way end has only one.
    Two {
        rx: Option<AsyncFd<RawFd>>,
        tx: Option<AsyncFd<RawFd>>,
    },
    Shm,
    /// A durable queue: consumers sleep on its doorbell.
    Queue,
}

impl Readiness {
    /// # Safety
    /// The result must be dropped before `conn` (it registers `conn`'s descriptors).
    unsafe fn of(conn: &Connection) -> Result<Readiness> {
        let (rx, tx, same) = match conn.watch() {
            Watch::Fds { rx, tx, same } => (rx, tx, same),
            Watch::Shm => return Ok(Readiness::Shm),
            Watch::Queue => return Ok(Readiness::Queue),
        };
        if let (true, Some(fd)) = (same, rx) {
            // SAFETY: forwarded to our caller, who drops the result before `conn`.
            let both = unsafe { register(fd, Interest::READABLE | Interest::WRITABLE)? };
            return Ok(Readiness::One(both));
        }
        let rx = match rx {
            // SAFETY: forwarded to our caller, who drops the result before `conn`.
            Some(fd) => Some(unsafe { register(fd, Interest::READABLE)? }),
            None => None,
        };
        let tx = match tx {
            // SAFETY: as above.
            Some(fd) => Some(unsafe { register(fd, Interest::WRITABLE)? }),
            None => None,
        };
        Ok(Readiness::Two { rx, tx })
    }
}

/// Waits on one registered descriptor for `interest` and clears what it saw: the caller
/// retries its operation until it would block again before it waits again.
async fn fd_ready(fd: &AsyncFd<RawFd>, interest: Interest) -> Result<()> {
    let mut guard = fd
        .ready(interest)
        .await
        .map_err(reactor_error("waiting in the tokio reactor"))?;
    let seen = guard.ready();
    guard.clear_ready_matching(seen);
    Ok(())
}

/// A [`Connection`] whose calls are awaited instead of blocking. Made by [`connect`],
/// [`AsyncListener::accept`] or [`AsyncConnection::new`]; needs a tokio runtime with IO
/// and time enabled.
pub struct AsyncConnection {
    // Declared (so dropped) before `conn`: registrations end before descriptors close.
    ready: Readiness,
    conn: Connection,
    /// Where `send_typed` encodes (reused; kept up to `transport::RETAIN_MAX` bytes).
    encoded: Vec<u8>,
    /// Where `recv_typed` receives (the same).
    received: Vec<u8>,
}

impl std::fmt::Debug for AsyncConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConnection")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl AsyncConnection {
    /// Wraps a connection, registering its descriptors with the current runtime.
    pub fn new(conn: Connection) -> Result<AsyncConnection> {
        // SAFETY: `ready` is declared before `conn` in the struct, so it is dropped first;
        // `into_inner` drops it explicitly before handing `conn` out.
        let ready = unsafe { Readiness::of(&conn)? };
        Ok(AsyncConnection {
            ready,
            conn,
            encoded: Vec::new(),
            received: Vec::new(),
        })
    }

    /// The connection, for its synchronous calls (`try_` calls never block).
    pub fn get_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The connection.
    pub fn get_ref(&self) -> &Connection {
        &self.conn
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        self.conn.endpoint()
    }

    /// Waits until a receive or a send (as `what` says) may make progress. Spurious
    /// returns are possible: retry the `try_` call, and wait again if it would block.
    /// Returns [`Error::Disconnected`] when a shared-memory peer is gone.
    pub async fn ready(&mut self, what: Ready) -> Result<()> {
        match &self.ready {
            Readiness::One(fd) => {
                let mut interest = None::<Interest>;
                for (on, i) in [
                    (what.recv, Interest::READABLE),
                    (what.send, Interest::WRITABLE),
                ] {
                    if on {
                        interest = Some(interest.map_or(i, |x| x | i));
                    }
                }
                match interest {
                    Some(i) => fd_ready(fd, i).await,
                    None => std::future::pending().await,
                }
            }
            Readiness::Two { rx, tx } => {
                let on_rx = async {
                    match (what.recv, rx) {
                        (true, Some(fd)) => fd_ready(fd, Interest::READABLE).await,
                        _ => std::future::pending().await,
                    }
                };
                let on_tx = async {
                    match (what.send, tx) {
                        (true, Some(fd)) => fd_ready(fd, Interest::WRITABLE).await,
                        _ => std::future::pending().await,
                    }
                };
                // A direction the connection lacks: the retried call reports Unsupported.
                if (what.recv && rx.is_none()) || (what.send && tx.is_none()) {
                    return Ok(());
                }
                tokio::select! {
                    r = on_rx => r,
                    r = on_tx => r,
                }
            }
            Readiness::Shm => match self.conn.shm_mut() {
                Some(shm) => shm.wait_async(what.recv, what.send).await,
                None => Ok(()),
            },
            Readiness::Queue => {
                match self.conn.as_queue_consumer() {
                    Some(c) if what.recv => c.wait_async().await,
                    // A producer waits only for a group commit's fdatasync.
                    _ => tokio::time::sleep(POLL_PERIOD).await,
                }
                Ok(())
            }
        }
    }

    /// Sends one message without blocking, or [`Error::WouldBlock`]. On a stream transport
    /// a message the socket took only part of is kept in this process and `Ok` returned;
    /// [`try_flush`](Self::try_flush) (or the next send) writes the rest.
    pub fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.conn.send_with(msg, Wait::Never)
    }

    /// Writes what a send left queued in this process, without blocking:
    /// [`Error::WouldBlock`] while some remains.
    pub fn try_flush(&mut self) -> Result<()> {
        self.conn.flush_with(Wait::Never)
    }

    /// Waits until everything sent has been handed to the OS (see [`try_send`](Self::try_send)).
    pub async fn flush(&mut self) -> Result<()> {
        self.when_ready(Ready::SEND, |c| c.flush_with(Wait::Never))
            .await
    }

    /// Runs `op` (a call that must not block) until it stops reporting
    /// [`Error::WouldBlock`], awaiting `what` between tries.
    async fn when_ready<T>(
        &mut self,
        what: Ready,
        mut op: impl FnMut(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        loop {
            match op(&mut self.conn) {
                Err(Error::WouldBlock) => self.ready(what).await?,
                r => return r,
            }
        }
    }

    /// Receives one message without blocking, or [`Error::WouldBlock`].
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        self.conn.recv_into_with(buf, Wait::Never)
    }

    /// Sends one message, waiting while the transport is full. Not cancel-safe on stream
    /// transports: a send dropped half-way leaves a partial frame that the next send
    /// completes first, so call it again with the same message or drop the connection.
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.when_ready(Ready::SEND, |c| c.send_with(msg, Wait::Never))
            .await?;
        self.flush().await
    }

    /// Receives one message into `buf` (its allocation is reused). Cancel-safe: a receive
    /// dropped while waiting loses nothing; a partly received frame is kept for the next.
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        self.when_ready(Ready::RECV, |c| c.recv_into_with(buf, Wait::Never))
            .await
    }

    /// Receives one message as an owned vector (of the message's size: a datagram is
    /// measured first, where a receive into a buffer reserves the largest one allowed).
    pub async fn recv(&mut self) -> Result<Vec<u8>> {
        self.when_ready(Ready::RECV, |c| c.recv_with(Wait::Never))
            .await
    }

    /// [`send`](Self::send) with a time limit ([`Error::Timeout`]).
    pub async fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        with_timeout(timeout, self.send(msg)).await
    }

    /// [`recv_into`](Self::recv_into) with a time limit ([`Error::Timeout`]).
    pub async fn recv_into_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<()> {
        with_timeout(timeout, self.recv_into(buf)).await
    }

    /// [`recv`](Self::recv) with a time limit ([`Error::Timeout`]).
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        with_timeout(timeout, self.recv()).await
    }

    /// Sends `value` encoded with postcard.
    pub async fn send_typed<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let mut bytes = std::mem::take(&mut self.encoded);
        bytes.clear();
        crate::transport::encode_append(value, &mut bytes)?;
        let sent = self.send(&bytes).await;
        if bytes.capacity() <= crate::transport::RETAIN_MAX {
            self.encoded = bytes;
        }
        sent
    }

    /// Receives one message and decodes it as `T` ([`Error::Decode`] if it is not one).
    pub async fn recv_typed<T: DeserializeOwned>(&mut self) -> Result<T> {
        let mut buf = std::mem::take(&mut self.received);
        let got = self
            .when_ready(Ready::RECV, |c| c.recv_sized_with(&mut buf, Wait::Never))
            .await;
        let value = got.and_then(|()| decode(&buf));
        if buf.capacity() <= crate::transport::RETAIN_MAX {
            self.received = buf;
        }
        value
    }

    /// Unwraps the connection (its registrations end).
    pub fn into_inner(self) -> Connection {
        let AsyncConnection { ready, conn, .. } = self;
        drop(ready);
        conn
    }
}

/// Runs `fut` for at most `timeout`; running out is [`Error::Timeout`].
pub(crate) async fn with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            after: Some(timeout),
        }),
    }
}

/// Connects to `url` (see [`crate::connect`]) and registers the connection with the
/// current runtime. The connect itself runs on tokio's blocking pool: it is brief for
/// every transport, but may wait for a shared-memory listener's backlog.
pub async fn connect(url: impl ToEndpoint) -> Result<AsyncConnection> {
    let ep = url.to_endpoint()?;
    connect_on_pool(move || crate::connect(ep)).await
}

/// [`connect`], retrying while nobody listens yet, for at most `timeout`.
pub async fn connect_timeout(url: impl ToEndpoint, timeout: Duration) -> Result<AsyncConnection> {
    let ep = url.to_endpoint()?;
    connect_on_pool(move || crate::connect_timeout(ep, timeout)).await
}

/// Runs a blocking connect on tokio's blocking pool and registers the result.
async fn connect_on_pool(
    connect: impl FnOnce() -> Result<Connection> + Send + 'static,
) -> Result<AsyncConnection> {
    let conn = tokio::task::spawn_blocking(connect)
        .await
        .map_err(|e| Error::Io {
            op: "connecting on the blocking pool",
            source: std::io::Error::other(e),
        })??;
    AsyncConnection::new(conn)
}

/// Binds `url` (see [`crate::bind`]) for async accepts.
pub fn bind(url: impl ToEndpoint) -> Result<AsyncListener> {
    AsyncListener::new(crate::bind(url)?)
}

/// A [`Listener`] whose accepts are awaited.
pub struct AsyncListener {
    // Dropped before `listener`.
    ready: Option<AsyncFd<RawFd>>,
    listener: Listener,
}

impl std::fmt::Debug for AsyncListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncListener")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl AsyncListener {
    /// Wraps a listener, registering its socket (if it has one) with the current runtime.
    pub fn new(listener: Listener) -> Result<AsyncListener> {
        let ready = match listener.watch_fd() {
            // SAFETY: `ready` is declared before `listener`, so it is dropped first.
            Some(fd) => Some(unsafe { register(fd, Interest::READABLE)? }),
            None => None,
        };
        Ok(AsyncListener { ready, listener })
    }

    /// The endpoint as bound.
    pub fn endpoint(&self) -> &Endpoint {
        self.listener.endpoint()
    }

    /// Accepts the next connection.
    pub async fn accept(&mut self) -> Result<AsyncConnection> {
        loop {
            if let Some(shm) = self.listener.shm_listener() {
                let inner = shm.accept_async().await?;
                let conn = Connection::new(inner, self.listener.endpoint().clone());
                return AsyncConnection::new(conn);
            }
            match self.listener.try_accept() {
                Err(Error::WouldBlock) => match &self.ready {
                    Some(fd) => fd_ready(fd, Interest::READABLE).await?,
                    // A FIFO: its next writer shows up on a descriptor opened per accept.
                    None => tokio::time::sleep(POLL_PERIOD).await,
                },
                Ok(conn) => return AsyncConnection::new(conn),
                Err(e) => return Err(e),
            }
        }
    }

    /// [`accept`](Self::accept) with a time limit.
    pub async fn accept_timeout(&mut self, timeout: Duration) -> Result<AsyncConnection> {
        with_timeout(timeout, self.accept()).await
    }
}
