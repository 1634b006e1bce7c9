//! Regular files and directories as the durable queue uses them: positioned reads and
//! writes, `fdatasync`, whole-file `flock`s, exclusive publication by rename, directory
//! listings, and the boot id that tells whether the machine restarted.
//!
//! Functions whose failure the caller must report with a path of its own (a segment that
//! could not be synced, a disk that is full) return the bare [`Errno`]; the others return
//! ipckit errors.

use std::io::IoSlice;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, Mode, OFlags, RenameFlags, CWD};
use rustix::io::Errno;

use super::fifo::fs_error;
use crate::error::{Error, Result};

/// Creates `path` and any missing parents with permissions `mode` (existing directories are
/// kept as they are).
pub(crate) fn dir_create_all(path: &Path, mode: u32) -> Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
    {
        Ok(()) => {}
        Err(e) => {
            let errno = Errno::from_io_error(&e).unwrap_or(Errno::IO);
            return Err(match errno {
                Errno::EXIST | Errno::NOTDIR => Error::WrongFileType {
                    path: path.to_owned(),
                    expected: "directory",
                    found: "file",
                },
                e => fs_error("mkdir", path, e),
            });
        }
    }
    let st = rustix::fs::stat(path).map_err(|e| fs_error("stat", path, e))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return Err(Error::WrongFileType {
            path: path.to_owned(),
            expected: "directory",
            found: "file",
        });
    }
    Ok(())
}

/// Owner (uid) and permission bits of the directory at `path` (following symbolic links, so
/// a link is judged by what it points to).
pub(crate) fn dir_owner_mode(path: &Path) -> Result<(u32, u32)> {
    let st = rustix::fs::stat(path).map_err(|e| fs_error("stat", path, e))?;
    Ok((st.st_uid, st.st_mode & 0o7777))
}

/// This process's effective user id.
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Opens a directory for `fsync` (making the names created in it durable).
pub(crate) fn dir_open(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fs_error("open", path, e))
}

/// The names in a directory (without `.` and `..`), in no particular order.
pub(crate) fn dir_list(path: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(path).map_err(|e| io_path_error("read_dir", path, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_path_error("read_dir", path, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

fn io_path_error(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    match Errno::from_io_error(&e) {
        Some(errno) => fs_error(op, path, errno),
        None => Error::Io { op, source: e },
    }
}

/// Opens a regular file read-write, creating it with exactly `mode` if it does not exist.
pub(crate) fn file_open_or_create(path: &Path, mode: u32) -> Result<OwnedFd> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    rustix::fs::open(path, flags, Mode::from_raw_mode(mode)).map_err(|e| match e {
        Errno::LOOP => Error::WrongFileType {
            path: path.to_owned(),
            expected: "regular file",
            found: "symbolic link",
        },
        e => fs_error("open", path, e),
    })
}

/// `fdatasync(2)`: the file's data (and the size, when it changed) are on disk when it returns.
pub(crate) fn fdatasync(fd: BorrowedFd<'_>) -> std::result::Result<(), Errno> {
    #[cfg(test)]
    fault::take(fault::Op::Sync)?;
    loop {
        match rustix::fs::fdatasync(fd) {
            Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

/// `fsync(2)`, for directories (so that a new name survives a power cut).
pub(crate) fn fsync(fd: BorrowedFd<'_>) -> std::result::Result<(), Errno> {
    loop {
        match rustix::fs::fsync(fd) {
            Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

/// An exclusive `flock` on the whole file, blocking until it is granted. The kernel drops it
/// when the last descriptor of this open file description closes (or the process dies).
pub(crate) fn flock_exclusive(fd: BorrowedFd<'_>) -> Result<()> {
    loop {
        match rustix::fs::flock(fd, FlockOperation::LockExclusive) {
            Ok(()) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::os("flock(LOCK_EX)", e)),
        }
    }
}

/// An exclusive `flock` if nobody else holds one: false if another open file description does.
pub(crate) fn try_flock_exclusive(fd: BorrowedFd<'_>) -> Result<bool> {
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(Error::os("flock(LOCK_EX|LOCK_NB)", e)),
    }
}

/// Releases a `flock`.
pub(crate) fn funlock(fd: BorrowedFd<'_>) {
    let _ = rustix::fs::flock(fd, FlockOperation::Unlock);
}

/// Writes `head` then `body` at `offset` in one `pwritev`, continued after short writes. On
/// an error some bytes may have been written; the caller truncates them away.
pub(crate) fn pwrite_all(
    fd: BorrowedFd<'_>,
    head: &[u8],
    body: &[u8],
    mut offset: u64,
) -> std::result::Result<(), Errno> {
    #[cfg(test)]
    fault::take(fault::Op::Write)?;
    #[cfg(test)]
    if let Err(e) = fault::take(fault::Op::TornWrite) {
        // A device error in the middle of the record: part of it reaches the file.
        let part = [IoSlice::new(head), IoSlice::new(&body[..body.len() / 2])];
        let _ = rustix::io::pwritev(fd, &part, offset);
        return Err(e);
    }
    let total = head.len() + body.len();
    let mut done = 0usize;
    while done < total {
        let r = if done < head.len() {
            let slices = [IoSlice::new(&head[done..]), IoSlice::new(body)];
            rustix::io::pwritev(fd, &slices, offset)
        } else {
            rustix::io::pwrite(fd, &body[done - head.len()..], offset)
        };
        match r {
            Ok(0) => return Err(Errno::NOSPC),
            Ok(n) => {
                done += n;
                offset += n as u64;
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads at `offset` until `buf` is full or the file ends; returns the bytes read.
pub(crate) fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::os("pread", e)),
        }
    }
    Ok(done)
}

/// One `pread` at `offset` (retried after `EINTR`); returns the bytes read, 0 at the end.
pub(crate) fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Result<usize> {
    loop {
        match rustix::io::pread(fd, &mut *buf, offset) {
            Err(Errno::INTR) => continue,
            r => return r.map_err(|e| Error::os("pread", e)),
        }
    }
}

/// `ftruncate(2)`.
pub(crate) fn truncate(fd: BorrowedFd<'_>, len: u64) -> std::result::Result<(), Errno> {
    #[cfg(test)]
    fault::take(fault::Op::Truncate)?;
    rustix::fs::ftruncate(fd, len)
}

/// Renames `from` to `to`, failing with [`Error::AlreadyExists`] if `to` exists
/// (`renameat2(RENAME_NOREPLACE)`): how a file is published complete under its final name.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(|e| match e {
        Errno::EXIST => Error::AlreadyExists {
            what: "file",
            name: to.display().to_string(),
        },
        e => fs_error("rename", to, e),
    })
}

/// Renames `from` to `to`, replacing `to` atomically if it exists.
pub(crate) fn rename_replace(from: &Path, to: &Path) -> Result<()> {
    rustix::fs::rename(from, to).map_err(|e| fs_error("rename", to, e))
}

/// Size and modification time of a file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileInfo {
    pub(crate) len: u64,
    pub(crate) modified: SystemTime,
}

fn info_of(st: &rustix::fs::Stat) -> FileInfo {
    let secs = Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
    FileInfo {
        len: st.st_size.max(0) as u64,
        modified: SystemTime::UNIX_EPOCH + secs,
    }
}

/// Size and modification time of the file at `path`, or `None` if there is none.
pub(crate) fn path_info(path: &Path) -> Result<Option<FileInfo>> {
    match rustix::fs::stat(path) {
        Ok(st) => Ok(Some(info_of(&st))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(fs_error("stat", path, e)),
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or an empty string if it cannot be
/// read: state kept in files that is only valid until the machine restarts records it.
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Fault injection for unit tests: the next matching call on this thread fails with the
/// given error instead of reaching the kernel (or, for [`fault::Op::TornWrite`], after
/// writing part of its bytes).
#[cfg(test)]
pub(crate) mod fault {
    use std::cell::RefCell;

    use rustix::io::Errno;

    /// Which call fails.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Op {
        /// `pwrite_all`, before writing anything.
        Write,
        /// `pwrite_all`, after writing the header and half the body.
        TornWrite,
        /// `fdatasync`.
        Sync,
        /// `ftruncate`.
        Truncate,
    }

    /// What the failing call does: return an error, or first run a function (on the calling
    /// thread, at the moment of the call) that returns it.
    enum Fault {
        Errno(Errno),
        Call(Box<dyn FnOnce() -> Errno>),
    }

    thread_local! {
        static PENDING: RefCell<Vec<(Op, Fault)>> = const { RefCell::new(Vec::new()) };
    }

    /// Makes the next `op` on this thread fail with `errno`.
    pub(crate) fn inject(op: Op, errno: Errno) {
        PENDING.with(|p| p.borrow_mut().push((op, Fault::Errno(errno))));
    }

    /// Makes the next `op` on this thread call `f` (for example to wait until another thread
    /// got somewhere) and fail with the error it returns.
    pub(crate) fn inject_with(op: Op, f: impl FnOnce() -> Errno + 'static) {
        PENDING.with(|p| p.borrow_mut().push((op, Fault::Call(Box::new(f)))));
    }

    pub(super) fn take(op: Op) -> Result<(), Errno> {
        let fault = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            p.iter().position(|(o, _)| *o == op).map(|i| p.remove(i).1)
        });
        match fault {
            None => Ok(()),
            Some(Fault::Errno(e)) => Err(e),
            Some(Fault::Call(f)) => Err(f()),
        }
    }
}
