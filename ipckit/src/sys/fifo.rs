//! Named pipes (FIFOs) in the file system.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::error::{Error, Result};

fn file_type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Fifo => "FIFO",
        _ => "special file",
    }
}

/// Checks that `path` is a FIFO (without following a final symlink).
pub(crate) fn expect_fifo(path: &Path) -> Result<()> {
    let st = rustix::fs::lstat(path).map_err(|e| fs_error("lstat", path, e))?;
    let t = FileType::from_raw_mode(st.st_mode);
    if t != FileType::Fifo {
        return Err(Error::WrongFileType {
            path: path.to_owned(),
            expected: "FIFO",
            found: file_type_name(t),
        });
    }
    Ok(())
}

pub(crate) fn fs_error(op: &'static str, path: &Path, e: Errno) -> Error {
    match e {
        Errno::NOENT => Error::NotFound {
            path: path.to_owned(),
        },
        Errno::ACCESS | Errno::PERM => Error::PermissionDenied {
            what: format!("{op} {}", path.display()),
        },
        _ => Error::os(op, e),
    }
}

/// `mkfifo(path, mode)` (then `chmod`, so the umask cannot loosen or tighten `mode`).
/// Returns true if this call created it; an existing FIFO is reused, anything else is an error.
pub(crate) fn make_fifo(path: &Path, mode: u32) -> Result<bool> {
    match rustix::fs::mkfifoat(CWD, path, Mode::from_raw_mode(mode)) {
        Ok(()) => {
            rustix::fs::chmod(path, Mode::from_raw_mode(mode))
                .map_err(|e| fs_error("chmod", path, e))?;
            Ok(true)
        }
        Err(Errno::EXIST) => expect_fifo(path).map(|()| false),
        Err(e) => Err(fs_error("mkfifo", path, e)),
    }
}

/// Opens a FIFO without blocking: for reading this always succeeds; for writing it fails
/// with `ENXIO` (mapped to [`Error::ConnectionRefused`]) while no reader has it open.
/// Refuses anything that is not a FIFO. The descriptor is close-on-exec and non-blocking.
pub(crate) fn open_fifo(path: &Path, write: bool) -> Result<OwnedFd> {
    let access = if write {
        OFlags::WRONLY
    } else {
        OFlags::RDONLY
    };
    let fd = rustix::fs::open(
        path,
        access | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NXIO => Error::ConnectionRefused {
            addr: path.display().to_string(),
            reason: "no process has the FIFO open for reading",
        },
        Errno::LOOP => Error::WrongFileType {
            path: path.to_owned(),
            expected: "FIFO",
            found: "symbolic link",
        },
        Errno::ISDIR => Error::WrongFileType {
            path: path.to_owned(),
            expected: "FIFO",
            found: "directory",
        },
        e => fs_error("open", path, e),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::os("fstat", e))?;
    let t = FileType::from_raw_mode(st.st_mode);
    if t != FileType::Fifo {
        return Err(Error::WrongFileType {
            path: path.to_owned(),
            expected: "FIFO",
            found: file_type_name(t),
        });
    }
    Ok(fd)
}

/// Removes `path` if it is still of type `kind` (so we never delete what someone else put
/// there after us). Errors are ignored: this runs on drop.
pub(crate) fn remove_file_if(path: &Path, kind: FileType) {
    if let Ok(st) = rustix::fs::lstat(path) {
        if FileType::from_raw_mode(st.st_mode) == kind {
            let _ = rustix::fs::unlink(path);
        }
    }
}
