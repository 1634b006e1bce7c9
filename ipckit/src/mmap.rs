//! Memory-mapped files shared between processes.
//!
//! A [`MappedFile`] maps a regular file `MAP_SHARED`, read-write or read-only; every process
//! that maps the same file sees the same bytes. Access goes through [`SharedBytes`]
//! (bounds-checked copies and atomics), like shared-memory segments.
//!
//! # When another process truncates the file
//! Touching a mapped page beyond the end of the file raises `SIGBUS`, which would kill the
//! process. Every accessor therefore checks the file's current size (`fstat`) first and
//! returns [`Error::FileShrunk`] instead of touching a page that is gone. What remains is a
//! race no user-space check can close: a truncation *between* the check and the access still
//! raises `SIGBUS`. Keep files that others may truncate out of shared mappings, or give other
//! users no write permission (files are created 0600).
//!
//! ```
//! use ipckit::mmap::MappedFile;
//! use ipckit::shm::SharedBytes;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("counters.bin");
//! let mut file = MappedFile::create(&path, 4096)?;
//! file.write(0, &42u64)?;
//! file.flush()?; // msync: on disk, not only in the page cache
//! let reader = MappedFile::open_read_only(&path)?;
//! assert_eq!(reader.read::<u64>(0)?, 42);
//! assert!(reader.write(0, &1u64).is_err()); // read-only: a typed error, not a crash
//! file.grow(8192)?;
//! assert_eq!(file.len(), 8192);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::region::SharedBytes;
use crate::sys;

/// A file mapped shared into this process.
pub struct MappedFile {
    map: memmap2::MmapRaw,
    fd: OwnedFd,
    path: PathBuf,
    writable: bool,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.len())
            .field("writable", &self.writable)
            .finish()
    }
}

impl MappedFile {
    /// Creates a new file of `len` bytes (mode 0600; fails if it exists) and maps it.
    pub fn create(path: impl AsRef<Path>, len: usize) -> Result<MappedFile> {
        Self::create_with_mode(path, len, 0o600)
    }

    /// [`create`](Self::create) with explicit permissions.
    pub fn create_with_mode(path: impl AsRef<Path>, len: usize, mode: u32) -> Result<MappedFile> {
        let path = path.as_ref();
        let fd = sys::file_create(path, mode & 0o777, "file")?;
        sys::set_len(fd.as_fd(), len as u64)?;
        Self::map(fd, path, true)
    }

    /// Maps an existing file read-write, at its current size.
    pub fn open(path: impl AsRef<Path>) -> Result<MappedFile> {
        let path = path.as_ref();
        Self::map(sys::file_open(path, true, "file")?, path, true)
    }

    /// Maps an existing file read-only: writes and atomics are [`Error::PermissionDenied`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<MappedFile> {
        let path = path.as_ref();
        Self::map(sys::file_open(path, false, "file")?, path, false)
    }

    fn map(fd: OwnedFd, path: &Path, writable: bool) -> Result<MappedFile> {
        let len = sys::file_len(fd.as_fd())? as usize;
        if len == 0 {
            return Err(Error::InvalidName {
                name: path.display().to_string(),
                reason: "an empty file cannot be mapped; create it with a size",
            });
        }
        Ok(MappedFile {
            map: sys::map_shared(&fd, len, writable, false)?,
            fd,
            path: path.to_owned(),
            writable,
        })
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true: empty files cannot be mapped.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Grows the file to `new_len` bytes and maps the new size (other processes see the new
    /// bytes once they remap, e.g. by opening again). Shrinking is refused.
    pub fn grow(&mut self, new_len: usize) -> Result<()> {
        if !self.writable {
            return Err(self.read_only_error());
        }
        if new_len < self.len() {
            return Err(Error::OutOfBounds {
                offset: new_len,
                len: 0,
                size: self.len(),
            });
        }
        sys::set_len(self.fd.as_fd(), new_len as u64)?;
        self.map = sys::map_shared(&self.fd, new_len, true, false)?;
        Ok(())
    }

    /// Writes dirty pages to the file and waits (`msync(MS_SYNC)`).
    pub fn flush(&self) -> Result<()> {
        self.map.flush().map_err(|source| Error::Io {
            op: "msync",
            source,
        })
    }

    /// Flushes `len` bytes from `offset`.
    pub fn flush_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => {}
            _ => {
                return Err(Error::OutOfBounds {
                    offset,
                    len,
                    size: self.len(),
                })
            }
        }
        self.map
            .flush_range(offset, len)
            .map_err(|source| Error::Io {
                op: "msync",
                source,
            })
    }

    /// The file's current size on disk (another process may have changed it).
    pub fn file_len(&self) -> Result<u64> {
        sys::file_len(self.fd.as_fd())
    }

    /// A copy of the open file, for ordinary I/O next to the mapping.
    pub fn file(&self) -> Result<File> {
        rustix::io::fcntl_dupfd_cloexec(&self.fd, 3)
            .map(File::from)
            .map_err(|e| Error::os("dup", e))
    }

    fn read_only_error(&self) -> Error {
        Error::PermissionDenied {
            what: format!("writing {} (mapped read-only)", self.path.display()),
        }
    }
}

// SAFETY: `region` returns the mapping, which lives as long as `self`, and only after checking
// that the file still covers it (see the module docs for the remaining race).
unsafe impl SharedBytes for MappedFile {
    fn region(&self) -> Result<(*mut u8, usize)> {
        let now = self.file_len()?;
        if now < self.len() as u64 {
            return Err(Error::FileShrunk {
                path: self.path.clone(),
                mapped: self.len(),
                now,
            });
        }
        Ok((self.map.as_mut_ptr(), self.len()))
    }

    fn region_mut(&self) -> Result<(*mut u8, usize)> {
        if !self.writable {
            return Err(self.read_only_error());
        }
        self.region()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_by_another_handle_is_an_error_not_sigbus() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let m = MappedFile::create(&path, 8192).unwrap();
        m.write(8000, &7u64).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        assert!(matches!(
            m.read::<u64>(8000),
            Err(Error::FileShrunk { now: 100, .. })
        ));
        assert!(matches!(m.read::<u64>(0), Err(Error::FileShrunk { .. })));
    }

    #[test]
    fn read_only_refuses_writes_and_atomics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        MappedFile::create(&path, 64)
            .unwrap()
            .write(0, &5u32)
            .unwrap();
        let r = MappedFile::open_read_only(&path).unwrap();
        assert_eq!(r.read::<u32>(0).unwrap(), 5);
        assert!(matches!(
            r.write(0, &1u32),
            Err(Error::PermissionDenied { .. })
        ));
        assert!(matches!(
            r.atomic_u32(0),
            Err(Error::PermissionDenied { .. })
        ));
        let mut r = r;
        assert!(r.grow(128).is_err());
    }

    #[test]
    fn create_is_exclusive_and_grow_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut m = MappedFile::create(&path, 64).unwrap();
        assert!(matches!(
            MappedFile::create(&path, 64),
            Err(Error::AlreadyExists { .. })
        ));
        m.write_bytes(0, b"hello").unwrap();
        m.grow(1 << 20).unwrap();
        let mut b = [0u8; 5];
        m.read_bytes(0, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        m.write(1 << 19, &1u8).unwrap();
        m.flush_range(0, 4096).unwrap();
        assert!(m.flush_range(1 << 20, 1).is_err());
        assert!(m.grow(10).is_err());
        assert!(matches!(
            MappedFile::open(dir.path().join("missing")),
            Err(Error::NotFound { .. })
        ));
    }
}
