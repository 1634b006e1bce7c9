//! Anonymous pipes, and the capacity of any pipe (FIFOs too).

use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::pipe::PipeFlags;

use crate::error::{Error, Result};

/// `pipe2(O_CLOEXEC)`: returns (read end, write end).
pub(crate) fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::os("pipe2", e))
}

const PIPE_MAX_SIZE: &str = "/proc/sys/fs/pipe-max-size";

/// `F_SETPIPE_SZ`: makes the buffer of the pipe behind `fd` at least `bytes` long (the
/// kernel rounds up to a power-of-two number of pages) and returns its new size.
pub(crate) fn set_pipe_capacity(fd: BorrowedFd<'_>, bytes: usize) -> Result<usize> {
    rustix::pipe::fcntl_setpipe_size(fd, bytes).map_err(|e| match e {
        // Above fs.pipe-max-size, or over the user's total of pipe pages, without
        // CAP_SYS_RESOURCE.
        Errno::PERM => Error::LimitExceeded {
            limit: "fs.pipe-max-size",
            current: std::fs::read_to_string(PIPE_MAX_SIZE)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            needed: bytes as u64,
            how: format!(
                "ask for less, or raise the limit as root (`sysctl fs.pipe-max-size=N`, {PIPE_MAX_SIZE}); \
                 the per-user total fs.pipe-user-pages-hard can refuse too"
            ),
        },
        Errno::BUSY => Error::os(
            "F_SETPIPE_SZ (the pipe holds more data than the capacity asked for)",
            e,
        ),
        Errno::BADF | Errno::INVAL => Error::Unsupported {
            op: "setting a pipe's capacity",
            what: "a descriptor that is not a pipe",
        },
        e => Error::os("F_SETPIPE_SZ", e),
    })
}

/// `F_GETPIPE_SZ`: the buffer size of the pipe behind `fd`.
pub(crate) fn pipe_capacity(fd: BorrowedFd<'_>) -> Result<usize> {
    rustix::pipe::fcntl_getpipe_size(fd).map_err(|e| match e {
        Errno::BADF | Errno::INVAL => Error::Unsupported {
            op: "reading a pipe's capacity",
            what: "a descriptor that is not a pipe",
        },
        e => Error::os("F_GETPIPE_SZ", e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_pipe_grows_to_the_capacity_asked_for_rounded_up() {
        let (r, w) = pipe_pair().unwrap();
        assert_eq!(pipe_capacity(r.as_fd()).unwrap(), 65536);
        assert_eq!(set_pipe_capacity(w.as_fd(), 300_000).unwrap(), 512 << 10);
        assert_eq!(pipe_capacity(r.as_fd()).unwrap(), 512 << 10);
    }

    #[test]
    fn a_pipe_holding_more_than_asked_for_is_refused() {
        let (_r, w) = pipe_pair().unwrap();
        rustix::io::write(&w, &[1u8; 20_000]).unwrap();
        let e = set_pipe_capacity(w.as_fd(), 4096).unwrap_err();
        assert!(e.to_string().contains("holds more data"), "{e}");
    }

    #[test]
    fn a_file_is_not_a_pipe() {
        let f = tempfile::tempfile().unwrap();
        assert!(matches!(
            set_pipe_capacity(f.as_fd(), 1 << 20),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            pipe_capacity(f.as_fd()),
            Err(Error::Unsupported { .. })
        ));
    }
}
