//! Framed message connections over byte streams: pipes, FIFOs, Unix stream sockets, TCP.

use std::os::fd::BorrowedFd;

use crate::error::{Error, Result};
use crate::framing::{FrameReader, FrameWriter};
use crate::sys::IoFd;
use crate::transport::Wait;

/// The descriptors of a stream connection: one bidirectional socket, or separate read and
/// write ends (pipes), either of which may be absent (a FIFO is one-way).
#[derive(Debug)]
enum Fds {
    One(IoFd),
    Split { rx: Option<IoFd>, tx: Option<IoFd> },
}

/// A framed message connection over a byte stream.
#[derive(Debug)]
pub(crate) struct StreamConn {
    fds: Fds,
    reader: FrameReader,
    writer: FrameWriter,
    transport: &'static str,
    max: usize,
}

impl StreamConn {
    /// A connection over one bidirectional descriptor (a stream socket).
    pub(crate) fn duplex(fd: IoFd, max: usize, transport: &'static str) -> StreamConn {
        StreamConn::with(Fds::One(fd), max, transport)
    }

    /// A connection over separate read and write descriptors.
    pub(crate) fn split(
        rx: Option<IoFd>,
        tx: Option<IoFd>,
        max: usize,
        transport: &'static str,
    ) -> StreamConn {
        StreamConn::with(Fds::Split { rx, tx }, max, transport)
    }

    fn with(fds: Fds, max: usize, transport: &'static str) -> StreamConn {
        StreamConn {
            fds,
            reader: FrameReader::new(max),
            writer: FrameWriter::new(max),
            transport,
            max,
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    #[cfg_attr(any(loom, not(feature = "tokio")), allow(dead_code))]
    /// The descriptors to watch for readiness: `(rx, tx)`, the same one twice for a socket.
    pub(crate) fn fds(&self) -> (Option<BorrowedFd<'_>>, Option<BorrowedFd<'_>>, bool) {
        match &self.fds {
            Fds::One(fd) => (Some(fd.fd()), Some(fd.fd()), true),
            Fds::Split { rx, tx } => (rx.as_ref().map(IoFd::fd), tx.as_ref().map(IoFd::fd), false),
        }
    }

    #[inline(always)]
    pub(crate) fn send(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        let fd = match &mut self.fds {
            Fds::One(fd) | Fds::Split { tx: Some(fd), .. } => fd,
            Fds::Split { tx: None, .. } => {
                return Err(Error::Unsupported {
                    op: "send",
                    what: "the reading end of a one-way pipe",
                })
            }
        };
        self.writer.send(fd, msg, wait, self.transport)
    }

    #[cfg_attr(any(loom, not(feature = "tokio")), allow(dead_code))]
    /// Writes what an earlier send left unwritten (its wait ran out part-way).
    pub(crate) fn flush(&mut self, wait: Wait) -> Result<()> {
        match &mut self.fds {
            Fds::One(fd) | Fds::Split { tx: Some(fd), .. } => self.writer.flush_pending(fd, wait),
            Fds::Split { tx: None, .. } => Ok(()),
        }
    }

    #[inline(always)]
    pub(crate) fn recv_into(&mut self, out: &mut Vec<u8>, wait: Wait) -> Result<()> {
        let fd = match &mut self.fds {
            Fds::One(fd) | Fds::Split { rx: Some(fd), .. } => fd,
            Fds::Split { rx: None, .. } => {
                return Err(Error::Unsupported {
                    op: "recv",
                    what: "the writing end of a one-way pipe",
                })
            }
        };
        self.reader.recv(fd, out, wait)
    }
}
