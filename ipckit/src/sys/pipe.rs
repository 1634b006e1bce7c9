//! Anonymous pipes.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::FileType;
use rustix::pipe::PipeFlags;

use crate::error::{Error, Result};

/// `pipe2(O_CLOEXEC)`: returns (read end, write end).
pub(crate) fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::os("pipe2", e))
}

/// Checks that `fd` is open and is a pipe or FIFO.
pub(crate) fn check_is_pipe(fd: BorrowedFd<'_>) -> Result<()> {
    let st = rustix::fs::fstat(fd.as_fd()).map_err(|e| Error::os("fstat", e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Fifo {
        return Err(Error::NoInheritedPipe("the inherited descriptor is not a pipe"));
    }
    Ok(())
}
