//! Named pipes (`fifo:///path`).

use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use crate::connection::Inner;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::stream::StreamConn;
use crate::sys::{self, Dir, FdKind, IoFd};
use crate::transport::Wait;

/// The reading side of a FIFO: creates it (mode 0600 unless the URL says otherwise) and
/// accepts one writer at a time.
#[derive(Debug)]
pub(crate) struct FifoListener {
    path: PathBuf,
    created: bool,
    max: usize,
}

impl FifoListener {
    pub(crate) fn bind(ep: &Endpoint) -> Result<FifoListener> {
        let path = ep.path().expect("fifo endpoints have a path").to_owned();
        let created = sys::make_fifo(&path, ep.options().mode)?;
        Ok(FifoListener {
            path,
            created,
            max: ep.effective_max_message_size(),
        })
    }

    /// Opens the FIFO for reading and waits until a writer has sent something (or opened and
    /// closed it).
    pub(crate) fn accept(&mut self, wait: Wait) -> Result<Inner> {
        let fd = sys::open_fifo(&self.path, false)?;
        let io = IoFd::new(fd, FdKind::Other, true);
        io.wait_ready(Dir::Read, wait)?;
        Ok(Inner::Stream(StreamConn::split(Some(io), None, self.max, "fifo")))
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
    let io = IoFd::new(fd, FdKind::Other, true);
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
