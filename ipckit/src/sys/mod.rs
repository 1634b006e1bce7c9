//! The only layer that talks to the operating system. Mechanism modules call these small,
//! named wrappers; each is named after the OS concept it wraps.

mod cpu;
mod fd;
mod fifo;
mod pipe;
mod socket;

pub use cpu::{allowed_cpus, pin_current_thread, pin_to_cpu};
pub(crate) use fd::{set_cloexec, Dir, FdKind, IoFd};
pub(crate) use fifo::{expect_fifo, make_fifo, open_fifo, remove_file_if};
pub(crate) use pipe::{check_is_pipe, pipe_pair};
pub(crate) use socket::*;

/// Counts this process's open file descriptors (entries of `/proc/self/fd`).
pub fn open_fd_count() -> std::io::Result<usize> {
    // The directory handle itself is one entry while it is being read.
    Ok(std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1))
}
