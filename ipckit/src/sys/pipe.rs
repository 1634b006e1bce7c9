//! Anonymous pipes.

use std::os::fd::OwnedFd;

use rustix::pipe::PipeFlags;

use crate::error::{Error, Result};

/// `pipe2(O_CLOEXEC)`: returns (read end, write end).
pub(crate) fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::os("pipe2", e))
}
