//! The only layer that talks to the operating system. Mechanism modules call these small,
//! named wrappers; each is named after the OS concept it wraps.

mod cpu;
mod fd;
mod fifo;
mod file;
mod futex;
#[cfg(all(feature = "tokio", not(loom)))]
mod futex_watch;
#[cfg(not(loom))]
mod membarrier;
mod mq;
mod pipe;
mod robust_mutex;
mod shm;
mod signal;
mod socket;

pub use cpu::{allowed_cpus, pin_current_thread, pin_current_thread_to, pin_to_cpu};
pub(crate) use cpu::{prefetch_read, prefetch_write};
pub(crate) use fd::{poll_readable, set_cloexec, Dir, FdKind, IoFd};
pub(crate) use fifo::{expect_fifo, make_fifo, open_fifo, remove_file_if, wait_fifo_data};
#[cfg(test)]
pub(crate) use file::fault;
pub(crate) use file::{
    boot_id, dir_create_all, dir_list, dir_open, dir_owner_mode, effective_uid, fdatasync,
    file_open_or_create, flock_exclusive, fsync, funlock, path_info, pread, pread_full, pwrite_all,
    rename_noreplace, rename_replace, truncate, try_flock_exclusive,
};
pub use futex::{futex_wait, futex_wake, FutexWake};
#[cfg(all(feature = "tokio", not(loom)))]
pub(crate) use futex_watch::watch as futex_watch;
#[cfg(not(loom))]
pub(crate) use membarrier::{heavy_fence, register_light_side};

/// Under loom no process is a light side: every fence stays where it is written.
#[cfg(loom)]
pub(crate) fn register_light_side() -> bool {
    false
}

/// Under loom a full fence (no process is light, see [`register_light_side`]).
#[cfg(loom)]
pub(crate) fn heavy_fence() -> bool {
    crate::loom::fence(crate::loom::Ordering::SeqCst);
    true
}
pub(crate) use mq::{mq_attributes, mq_create, mq_open, mq_receive, mq_send, mq_unlink};
pub use mq::{mq_limits, MqAttributes};
pub(crate) use pipe::{pipe_capacity, pipe_pair, set_pipe_capacity};
pub(crate) use robust_mutex::{Locked, RobustMutex, ROBUST_MUTEX_ALIGN, ROBUST_MUTEX_SIZE};
pub use shm::SHM_DIR;
pub(crate) use shm::{
    fd_of, file_create, file_len, file_open, file_unlink, list_shm, map_shared, memfd,
    modified_ago, ofd_lock, ofd_locked_by_other, set_len, shm_create, shm_open, shm_unlink,
};
pub(crate) use signal::{block_in_thread, kill, parse_siginfo, pidfd, signalfd, sigqueue};
pub use signal::{sigrtmin, SignalInfo};
pub use socket::PeerCredentials;
pub(crate) use socket::*;

/// Counts this process's open file descriptors (entries of `/proc/self/fd`).
pub fn open_fd_count() -> std::io::Result<usize> {
    // The directory handle itself is one entry while it is being read.
    Ok(std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1))
}
