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

mod fifo;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) use fifo::{connect_fifo, FifoListener};
pub use fifo::remove_fifo;

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
    let io = |fd| IoFd::new(fd, FdKind::Other, false);
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
    fn env_value(&self) -> String {
        let show = |fd: &Option<OwnedFd>| match fd {
            Some(fd) => fd.as_raw_fd().to_string(),
            None => "-".to_owned(),
        };
        format!("{},{}", show(&self.read), show(&self.write))
    }

    /// Prepares `cmd` so the child inherits these descriptors and finds them with
    /// [`from_env`]. Keep `self` alive until the child is spawned, then drop it (the parent's
    /// copies of the child's ends must be closed, or the parent never sees end-of-file).
    /// [`ChildEnd::spawn`] does all of that.
    pub fn configure(&self, cmd: &mut Command) {
        cmd.env(ENV_VAR, self.env_value());
        let fds: [Option<RawFd>; 2] = [
            self.read.as_ref().map(|f| f.as_raw_fd()),
            self.write.as_ref().map(|f| f.as_raw_fd()),
        ];
        let hook = move || {
            for fd in fds.into_iter().flatten() {
                // SAFETY:
                // - runs in the forked child before exec; `fd` is open there because the
                //   parent keeps `self` (which owns it) alive until `spawn` returns.
                // - the borrow lasts only for this call.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            Ok(())
        };
        // SAFETY:
        // - the hook only calls fcntl(2), which is async-signal-safe, allocates nothing and
        //   takes no locks, as code between fork and exec must.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, hook);
        }
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

static TAKEN: AtomicBool = AtomicBool::new(false);

fn parse_fd(s: &str) -> Result<Option<RawFd>> {
    if s == "-" {
        return Ok(None);
    }
    match s.parse::<RawFd>() {
        Ok(fd) if fd >= 0 => Ok(Some(fd)),
        _ => Err(Error::NoInheritedPipe(
            "IPCKIT_PIPE_FDS must be READ,WRITE with descriptor numbers or '-'",
        )),
    }
}

/// Takes ownership of an inherited descriptor after checking it is an open pipe.
fn adopt(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_GETFD on any integer is harmless: it only reports whether it is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::NoInheritedPipe(
            "a descriptor named in IPCKIT_PIPE_FDS is not open",
        ));
    }
    // SAFETY:
    // - `fd` is open (checked above) and, by the IPCKIT_PIPE_FDS protocol, was passed to this
    //   process for ipckit to own; `TAKEN` ensures it is adopted once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(e) = sys::check_is_pipe(owned.as_fd()) {
        // Not ours after all: give the number back without closing it.
        let _ = owned.into_raw_fd();
        return Err(e);
    }
    sys::set_cloexec(owned.as_fd(), true)?;
    Ok(owned)
}

/// The pipe the parent passed with [`ChildEnd`], as a [`Connection`]. Can be taken once per
/// process.
pub fn from_env() -> Result<Connection> {
    from_env_with(pipe_endpoint())
}

fn from_env_with(ep: Endpoint) -> Result<Connection> {
    let value = std::env::var(ENV_VAR).map_err(|_| {
        Error::NoInheritedPipe("IPCKIT_PIPE_FDS is not set: this process was not given a pipe")
    })?;
    let (r, w) = value.split_once(',').ok_or(Error::NoInheritedPipe(
        "IPCKIT_PIPE_FDS must be READ,WRITE with descriptor numbers or '-'",
    ))?;
    let (r, w) = (parse_fd(r)?, parse_fd(w)?);
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Error::NoInheritedPipe("already taken by an earlier call"));
    }
    let rx = r.map(adopt).transpose()?;
    let tx = w.map(adopt).transpose()?;
    Ok(connection(rx, tx, ep))
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
    Ok(connection(Some(rx), Some(tx), ep))
}

/// `pipe:`: the inherited pipe if [`ENV_VAR`] is set, else stdin/stdout.
pub(crate) fn inherited_or_stdio(ep: &Endpoint) -> Result<Connection> {
    if std::env::var_os(ENV_VAR).is_some() {
        from_env_with(ep.clone())
    } else {
        stdio_with(ep.clone())
    }
}
