//! POSIX shared memory, memfd, mappings and the byte-range locks that tell whether a process
//! still holds a segment.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, Mode};
use rustix::io::Errno;
use rustix::shm;

use crate::error::{Error, Result};

/// Where POSIX shared memory objects appear in the file system.
pub const SHM_DIR: &str = "/dev/shm";

/// `shm_open(O_CREAT | O_EXCL | O_RDWR)`; `what` names the object kind in errors.
pub(crate) fn shm_create(name: &str, mode: u32, what: &'static str) -> Result<OwnedFd> {
    let flags = shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR;
    let fd = shm::open(format!("/{name}"), flags, Mode::from_raw_mode(mode))
        .map_err(|e| shm_error(e, name, what))?;
    // shm_open applies the umask: set the mode asked for exactly.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| Error::os("fchmod", e))?;
    Ok(fd)
}

/// `shm_open` of an existing object, read-write or read-only.
pub(crate) fn shm_open(name: &str, writable: bool, what: &'static str) -> Result<OwnedFd> {
    let flags = if writable {
        shm::OFlags::RDWR
    } else {
        shm::OFlags::RDONLY
    };
    shm::open(format!("/{name}"), flags, Mode::empty()).map_err(|e| shm_error(e, name, what))
}

/// `shm_unlink`. A missing name is not an error.
pub(crate) fn shm_unlink(name: &str) -> Result<()> {
    match shm::unlink(format!("/{name}")) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(shm_error(e, name, "shared-memory object")),
    }
}

fn shm_error(e: Errno, name: &str, what: &'static str) -> Error {
    match e {
        Errno::EXIST => Error::AlreadyExists {
            what,
            name: name.to_owned(),
        },
        Errno::NOENT => Error::NotFound {
            path: format!("{SHM_DIR}/{name}").into(),
        },
        Errno::ACCESS | Errno::PERM => Error::PermissionDenied {
            what: format!("{what} {name}"),
        },
        Errno::NAMETOOLONG | Errno::INVAL => Error::InvalidName {
            name: name.to_owned(),
            reason: "the OS refused the name (too long or invalid characters)",
        },
        e => Error::os("shm_open", e),
    }
}

/// `memfd_create(MFD_CLOEXEC)`: an anonymous shared-memory file.
pub(crate) fn memfd(name: &str) -> Result<OwnedFd> {
    rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC).map_err(|e| Error::os("memfd_create", e))
}

/// `ftruncate`: sets the size.
pub(crate) fn set_len(fd: BorrowedFd<'_>, len: u64) -> Result<()> {
    rustix::fs::ftruncate(fd, len).map_err(|e| match e {
        Errno::NOSPC | Errno::FBIG => Error::Io {
            op: "ftruncate (is /dev/shm full? see `df -h /dev/shm`)",
            source: e.into(),
        },
        e => Error::os("ftruncate", e),
    })
}

/// The current size of the file behind `fd`.
pub(crate) fn file_len(fd: BorrowedFd<'_>) -> Result<u64> {
    rustix::fs::fstat(fd)
        .map(|st| st.st_size as u64)
        .map_err(|e| Error::os("fstat", e))
}

/// Time since the object's data last changed (its size included), zero if its clock is ahead.
pub(crate) fn modified_ago(fd: BorrowedFd<'_>) -> Result<std::time::Duration> {
    let st = rustix::fs::fstat(fd).map_err(|e| Error::os("fstat", e))?;
    let modified = std::time::UNIX_EPOCH
        + std::time::Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
    Ok(std::time::SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default())
}

/// Maps `len` bytes of `fd` shared between processes. The mapping is only ever accessed
/// through raw pointers. `populate` maps every page now (`MAP_POPULATE`) rather than on first
/// touch.
pub(crate) fn map_shared(
    fd: &OwnedFd,
    len: usize,
    writable: bool,
    populate: bool,
) -> Result<memmap2::MmapRaw> {
    let file = File::from(
        // Through rustix, so that running out of descriptors is `TooManyOpenFiles`.
        rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(|e| Error::os("dup", e))?,
    );
    let mut opts = memmap2::MmapOptions::new();
    opts.len(len);
    if populate {
        opts.populate();
    }
    let map = if writable {
        opts.map_raw(&file)
    } else {
        opts.map_raw_read_only(&file)
    };
    map.map_err(|source| Error::Io { op: "mmap", source })
}

/// A byte-range lock on an open file description (`F_OFD_SETLK`): released by the kernel when
/// the last descriptor of that description closes, which includes the death of the process.
/// Returns false if another description holds a conflicting lock.
pub(crate) fn ofd_lock(fd: BorrowedFd<'_>, start: u64, len: u64, exclusive: bool) -> Result<bool> {
    let mut fl = flock_for(start, len, exclusive);
    // SAFETY: `fd` is a valid open descriptor for the duration of the call and `fl` is a
    // properly initialised `struct flock` that outlives it.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if r == 0 {
        return Ok(true);
    }
    match Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) {
        Errno::AGAIN | Errno::ACCESS => Ok(false),
        e => Err(Error::os("fcntl(F_OFD_SETLK)", e)),
    }
}

/// Whether another open file description holds a lock on the range (`F_OFD_GETLK`).
pub(crate) fn ofd_locked_by_other(fd: BorrowedFd<'_>, start: u64, len: u64) -> Result<bool> {
    let mut fl = flock_for(start, len, true);
    // SAFETY: as for `ofd_lock`; F_OFD_GETLK only writes into `fl`.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(Error::os(
            "fcntl(F_OFD_GETLK)",
            Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
        ));
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

fn flock_for(start: u64, len: u64, exclusive: bool) -> libc::flock {
    // SAFETY: `struct flock` is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    fl
}

/// Names of the shared-memory objects whose names start with `prefix`.
pub(crate) fn list_shm(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Borrows a descriptor (helper for callers holding `OwnedFd`).
pub(crate) fn fd_of(fd: &OwnedFd) -> BorrowedFd<'_> {
    fd.as_fd()
}

/// Creates a regular file exclusively (`O_CREAT | O_EXCL`), mode exactly `mode`: the
/// backing of file-mapped channels and segments.
pub(crate) fn file_create(
    path: &std::path::Path,
    mode: u32,
    what: &'static str,
) -> Result<OwnedFd> {
    use rustix::fs::OFlags;
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fd = rustix::fs::open(path, flags, Mode::from_raw_mode(mode))
        .map_err(|e| file_error(e, path, what))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| Error::os("fchmod", e))?;
    Ok(fd)
}

/// Opens an existing regular file, read-write or read-only, refusing symlinks.
pub(crate) fn file_open(
    path: &std::path::Path,
    writable: bool,
    what: &'static str,
) -> Result<OwnedFd> {
    use rustix::fs::OFlags;
    let access = if writable {
        OFlags::RDWR
    } else {
        OFlags::RDONLY
    };
    rustix::fs::open(
        path,
        access | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| file_error(e, path, what))
}

/// Removes a file. A missing file is not an error.
pub(crate) fn file_unlink(path: &std::path::Path) -> Result<()> {
    match rustix::fs::unlink(path) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(file_error(e, path, "file")),
    }
}

fn file_error(e: Errno, path: &std::path::Path, what: &'static str) -> Error {
    match e {
        Errno::EXIST => Error::AlreadyExists {
            what,
            name: path.display().to_string(),
        },
        Errno::LOOP => Error::WrongFileType {
            path: path.to_owned(),
            expected: "regular file",
            found: "symbolic link",
        },
        Errno::ISDIR => Error::WrongFileType {
            path: path.to_owned(),
            expected: "regular file",
            found: "directory",
        },
        e => super::fifo::fs_error("open", path, e),
    }
}
