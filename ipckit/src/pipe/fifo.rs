//! Named pipes (`fifo:///path`).
//!
//! The side that binds creates the FIFO (0600 unless `?mode=` says otherwise; an existing FIFO
//! is reused, any other file is [`Error::WrongFileType`]) and opens it for reading, so writers
//! can connect from then on; each `accept` waits for the next writer and hands over the read
//! end. Drop a connection before the next `accept`: two read ends would share one pipe. The side that connects writes; connecting fails with
//! [`Error::ConnectionRefused`] while nobody reads (use `connect_timeout` to wait). One writer
//! at a time: frames from concurrent writers may interleave.
//!
//! ```
//! use ipckit::{MessageReceiver, MessageSender};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! let url = format!("fifo://{}/jobs.fifo", dir.path().display());
//! let mut reader = ipckit::bind(&url)?; // mkfifo, mode 0600
//! let mut writer = ipckit::connect(&url)?;
//! writer.send(b"job 1")?;
//! let mut conn = reader.accept_timeout(Duration::from_secs(5))?;
//! assert_eq!(conn.recv_timeout(Duration::from_secs(5))?, b"job 1");
//! drop(writer);
//! assert!(matches!(conn.recv_timeout(Duration::from_secs(5)), Err(ipckit::Error::Disconnected)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use crate::connection::Inner;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::stream::StreamConn;
use crate::sys::{self, FdKind, IoFd};
use crate::transport::Wait;

/// The reading side of a FIFO: creates it (mode 0600 unless the URL says otherwise) and
/// accepts one writer at a time.
#[derive(Debug)]
pub(crate) struct FifoListener {
    path: PathBuf,
    created: bool,
    max: usize,
    spin: std::time::Duration,
    /// The URL's `capacity=`, set on each read end opened.
    capacity: Option<usize>,
    /// The read end the next `accept` hands out. Opened at bind so writers can connect before
    /// the first accept (like a socket's backlog), and again right after each accept.
    pending: Option<IoFd>,
}

impl FifoListener {
    pub(crate) fn bind(ep: &Endpoint) -> Result<FifoListener> {
        let path = ep.path().expect("fifo endpoints have a path").to_owned();
        let created = sys::make_fifo(&path, ep.options().mode)?;
        let mut listener = FifoListener {
            path,
            created,
            max: ep.effective_max_message_size(),
            spin: ep.read_spin(),
            capacity: ep.options().pipe_capacity,
            pending: None,
        };
        listener.pending = Some(listener.open_reader()?);
        Ok(listener)
    }

    fn open_reader(&self) -> Result<IoFd> {
        let fd = sys::open_fifo(&self.path, false)?;
        if let Some(bytes) = self.capacity {
            sys::set_pipe_capacity(fd.as_fd(), bytes)?;
        }
        Ok(IoFd::new(fd, FdKind::Other, true).with_read_spin(self.spin))
    }

    /// Opens the FIFO for reading and waits until a writer has sent something.
    pub(crate) fn accept(&mut self, wait: Wait) -> Result<Inner> {
        let io = match self.pending.take() {
            Some(io) => io,
            None => self.open_reader()?,
        };
        // Not `poll`: a FIFO polled once makes every later write wake the reader, whether
        // it waits or not (`sys::wait_fifo_data`).
        if let Err(e) = sys::wait_fifo_data(io.fd(), wait) {
            self.pending = Some(io);
            return Err(e);
        }
        // Open the next read end now, so the next writer can connect before the next accept
        // (nothing reads it until then).
        self.pending = self.open_reader().ok();
        Ok(Inner::Stream(StreamConn::split(
            Some(io),
            None,
            self.max,
            "fifo",
        )))
    }
}

impl Drop for FifoListener {
    fn drop(&mut self) {
        if self.created {
            sys::remove_file_if(&self.path, FileType::Fifo);
        }
    }
}

/// Opens a FIFO for writing. Fails with [`Error::ConnectionRefused`] if no reader has it open,
/// [`Error::NotFound`] if it does not exist, [`Error::WrongFileType`] if it is not a FIFO.
pub(crate) fn connect_fifo(ep: &Endpoint) -> Result<Inner> {
    let path = ep.path().expect("fifo endpoints have a path");
    let fd = sys::open_fifo(path, true)?;
    if let Some(bytes) = ep.options().pipe_capacity {
        sys::set_pipe_capacity(fd.as_fd(), bytes)?;
    }
    let io = IoFd::new(fd, FdKind::Other, true).with_read_spin(ep.read_spin());
    Ok(Inner::Stream(StreamConn::split(
        None,
        Some(io),
        ep.effective_max_message_size(),
        "fifo",
    )))
}

/// Removes the FIFO at `path`. Refuses to remove anything that is not a FIFO.
pub fn remove_fifo(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    sys::expect_fifo(path)?;
    std::fs::remove_file(path).map_err(|source| Error::Io {
        op: "unlink",
        source,
    })
}
