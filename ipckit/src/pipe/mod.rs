//! Pipes: anonymous pipes between a parent and the children it spawns (`pipe:`), and named
//! FIFOs in the file system (`fifo:///path`).
//!
//! Both are byte streams, so messages travel as length-prefixed frames. A pipe is one-way:
//! [`duplex`] makes two so parent and child can talk both ways.
//!
//! # Parent and child
//!
//! ```no_run
//! use std::process::Command;
//! use ipckit::{MessageReceiver, MessageSender};
//!
//! // Parent:
//! let (mut conn, child_end) = ipckit::pipe::duplex()?;
//! let mut cmd = Command::new("my-child");
//! let mut child = child_end.spawn(&mut cmd)?; // passes the fds, closes the parent's copies
//! conn.send(b"hello child")?;
//! let reply = conn.recv()?;
//! child.wait()?;
//!
//! // Child (`my-child`):
//! let mut conn = ipckit::pipe::from_env()?; // or ipckit::connect("pipe:")
//! let msg = conn.recv()?;
//! conn.send(&msg)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The descriptors reach the child through the environment variable [`ENV_VAR`]
//! (`IPCKIT_PIPE_FDS=READ,WRITE`, `-` for a missing end); only they lose close-on-exec in the
//! child, every other descriptor ipckit creates stays close-on-exec. Writing to a pipe whose
//! reader is gone is [`Error::Disconnected`] (Rust programs ignore `SIGPIPE`; a non-Rust
//! `main` that embeds ipckit should do the same).
//!
//! # Throughput and timed calls
//!
//! Blocking calls (`send`, `recv`) and `try_` calls are plain `write`/`read`. A `_timeout`
//! call that has to wait uses `poll(2)`, and from the first `poll` of a pipe on, Linux (5.16
//! and later) wakes its readers on every write, whether they wait or not, for as long as the
//! pipe lives.
//! Measured here with 64-byte messages, in C: 1.4-1.6 M msg/s before any `poll`, 0.94-1.14 M
//! after one. So a stream that wants every message per second should use the blocking
//! calls on its data path; a FIFO listener's `accept` does not poll the FIFO (it counts the
//! bytes there and sleeps on an inotify watch of it), and neither does anything else unless
//! asked to wait with a limit. The async connections (`aio`) register pipes with epoll,
//! which counts as a `poll`. A thread that has waited in a FIFO `accept` keeps one inotify
//! instance (a close-on-exec descriptor, counted against `fs.inotify.max_user_instances`,
//! 128 by default; past it, `accept` sleeps in slices of up to 10 ms instead) until it
//! exits: closing an instance that has held a watch takes the kernel 5-15 ms, removing the
//! watch about 10 us.

mod fifo;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command};

pub use fifo::remove_fifo;
pub(crate) use fifo::{connect_fifo, FifoListener};

use crate::connection::{Connection, Inner};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::stream::StreamConn;
use crate::sys::{self, FdKind, IoFd};

/// The environment variable that carries inherited pipe descriptors: `READ,WRITE`.
pub const ENV_VAR: &str = "IPCKIT_PIPE_FDS";

fn pipe_endpoint() -> Endpoint {
    "pipe:".parse().expect("`pipe:` is a valid URL")
}

fn connection(rx: Option<OwnedFd>, tx: Option<OwnedFd>, ep: Endpoint) -> Connection {
    let spin = ep.read_spin();
    let io = |fd| IoFd::new(fd, FdKind::Other, false).with_read_spin(spin);
    let max = ep.effective_max_message_size();
    Connection::new(
        Inner::Stream(StreamConn::split(rx.map(io), tx.map(io), max, "pipe")),
        ep,
    )
}

/// The child's ends of a pipe pair, to be handed to a child process.
#[derive(Debug)]
pub struct ChildEnd {
    read: Option<OwnedFd>,
    write: Option<OwnedFd>,
}

impl ChildEnd {
    /// Prepares `cmd` so the child inherits these descriptors and finds them with
    /// [`from_env`]. Keep `self` alive until the child is spawned, then drop it (the parent's
    /// copies of the child's ends must be closed, or the parent never sees end-of-file).
    /// [`ChildEnd::spawn`] does all of that.
    pub fn configure(&self, cmd: &mut Command) {
        crate::inherit::pass_fds(
            cmd,
            ENV_VAR,
            &[
                self.read.as_ref().map(|f| f.as_raw_fd()),
                self.write.as_ref().map(|f| f.as_raw_fd()),
            ],
        );
    }

    /// Configures `cmd`, spawns it, and closes the parent's copies of the child's ends.
    pub fn spawn(self, cmd: &mut Command) -> Result<Child> {
        self.configure(cmd);
        let child = cmd.spawn().map_err(|source| Error::Io {
            op: "spawn",
            source,
        })?;
        drop(self);
        Ok(child)
    }
}

/// Two pipes: the parent's [`Connection`] sends to and receives from the child.
pub fn duplex() -> Result<(Connection, ChildEnd)> {
    let (child_read, parent_write) = sys::pipe_pair()?;
    let (parent_read, child_write) = sys::pipe_pair()?;
    Ok((
        connection(Some(parent_read), Some(parent_write), pipe_endpoint()),
        ChildEnd {
            read: Some(child_read),
            write: Some(child_write),
        },
    ))
}

/// One pipe from parent to child: the parent's [`Connection`] only sends.
pub fn to_child() -> Result<(Connection, ChildEnd)> {
    let (child_read, parent_write) = sys::pipe_pair()?;
    Ok((
        connection(None, Some(parent_write), pipe_endpoint()),
        ChildEnd {
            read: Some(child_read),
            write: None,
        },
    ))
}

/// One pipe from child to parent: the parent's [`Connection`] only receives.
pub fn from_child() -> Result<(Connection, ChildEnd)> {
    let (parent_read, child_write) = sys::pipe_pair()?;
    Ok((
        connection(Some(parent_read), None, pipe_endpoint()),
        ChildEnd {
            read: None,
            write: Some(child_write),
        },
    ))
}

/// The pipe the parent passed with [`ChildEnd`], as a [`Connection`]. Can be taken once per
/// process.
pub fn from_env() -> Result<Connection> {
    from_env_with(pipe_endpoint())
}

fn from_env_with(ep: Endpoint) -> Result<Connection> {
    let mut fds = crate::inherit::take_fds(ENV_VAR, 2, crate::inherit::Expect::Pipe)?;
    let tx = fds.pop().flatten();
    let rx = fds.pop().flatten();
    with_url_capacity(connection(rx, tx, ep))
}

/// Applies the URL's `capacity=`, if any.
fn with_url_capacity(mut conn: Connection) -> Result<Connection> {
    if let Some(bytes) = conn.endpoint().options().pipe_capacity {
        conn.set_pipe_capacity(bytes)?;
    }
    Ok(conn)
}

/// Standard input and output as a framed message connection (copies of descriptors 0 and 1,
/// which stay open). `ipckit send pipe: hi | ipckit recv pipe:` uses this.
pub fn stdio() -> Result<Connection> {
    stdio_with(pipe_endpoint())
}

fn stdio_with(ep: Endpoint) -> Result<Connection> {
    let dup = |fd: BorrowedFd<'_>| {
        rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(|e| Error::os("dup", e))
    };
    let rx = dup(std::io::stdin().as_fd())?;
    let tx = dup(std::io::stdout().as_fd())?;
    with_url_capacity(connection(Some(rx), Some(tx), ep))
}

/// `pipe:`: the inherited pipe if [`ENV_VAR`] is set, else stdin/stdout.
pub(crate) fn inherited_or_stdio(ep: &Endpoint) -> Result<Connection> {
    if std::env::var_os(ENV_VAR).is_some() {
        from_env_with(ep.clone())
    } else {
        stdio_with(ep.clone())
    }
}
