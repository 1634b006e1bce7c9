//! Consumer groups: one file per group in `groups/`, holding the group's committed offset
//! (the next sequence number it has not acknowledged).
//!
//! ```text
//! groups/NAME, 4096 bytes:  magic "IPCKITQG" | version u32 | 4 zero bytes | committed u64
//! ```
//!
//! The file is mapped shared and an acknowledgement is one atomic store into it: it is in
//! the page cache at once, so it survives the consumer's crash, and costs no system call. A
//! power cut may lose the latest acknowledgements (the kernel writes the page back within
//! seconds, or at [`GroupFile::sync`]); the messages are then delivered again, which
//! at-least-once delivery allows. One consumer holds a group at a time: it keeps an
//! exclusive `flock` on the group's file, which the kernel releases when it dies.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::segment::temp_path;
use crate::error::{Error, Result};
use crate::sys;

/// The directory of group files inside a queue directory.
pub(crate) const GROUPS_DIR: &str = "groups";
const GROUP_SIZE: usize = 4096;
const MAGIC: [u8; 8] = *b"IPCKITQG";
const VERSION: u32 = 1;
const COMMITTED: usize = 16;

/// Longest group name.
pub const MAX_GROUP_NAME: usize = 64;

/// A consumer group name: 1 to 64 ASCII letters, digits, `.`, `_` or `-`, not starting with
/// `.`. It is stored inline so that [`crate::endpoint::Options`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupName {
    len: u8,
    bytes: [u8; MAX_GROUP_NAME],
}

impl GroupName {
    /// Checks and wraps a name.
    pub fn new(name: &str) -> Result<GroupName> {
        let bad = |reason| {
            Err(Error::InvalidName {
                name: name.to_owned(),
                reason,
            })
        };
        if name.is_empty() || name.len() > MAX_GROUP_NAME {
            return bad("a group name has 1 to 64 bytes");
        }
        if name.starts_with('.') {
            return bad("a group name does not start with '.'");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return bad("a group name has only ASCII letters, digits, '.', '_' and '-'");
        }
        let mut bytes = [0u8; MAX_GROUP_NAME];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(GroupName {
            len: name.len() as u8,
            bytes,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("checked ASCII")
    }
}

impl Default for GroupName {
    /// The group `default`.
    fn default() -> Self {
        GroupName::new("default").expect("a valid name")
    }
}

impl std::fmt::Debug for GroupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for GroupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for GroupName {
    type Err = Error;
    fn from_str(s: &str) -> Result<GroupName> {
        GroupName::new(s)
    }
}

/// Path of a group's file.
pub(crate) fn group_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(GROUPS_DIR).join(name)
}

fn page(committed: u64) -> Vec<u8> {
    let mut p = vec![0u8; GROUP_SIZE];
    p[0..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&VERSION.to_le_bytes());
    p[COMMITTED..COMMITTED + 8].copy_from_slice(&committed.to_le_bytes());
    p
}

fn check(path: &Path, head: &[u8]) -> Result<u64> {
    let corrupt = |reason: &str| Error::CorruptRecord {
        file: path.to_owned(),
        offset: 0,
        reason: reason.to_owned(),
    };
    if head.len() < COMMITTED + 8 {
        return Err(corrupt("group file is too short"));
    }
    if head[0..8] != MAGIC {
        return Err(corrupt("not an ipckit queue group file (bad magic)"));
    }
    if head[8..12] != VERSION.to_le_bytes() {
        return Err(corrupt("unknown group file version"));
    }
    Ok(u64::from_le_bytes(
        head[COMMITTED..COMMITTED + 8].try_into().expect("8 bytes"),
    ))
}

/// Reads a group's committed offset without opening it for consuming (retention, `stat`).
pub(crate) fn read_committed(path: &Path) -> Result<u64> {
    let fd = sys::file_open(path, false, "queue group file")?;
    let mut head = [0u8; COMMITTED + 8];
    let n = sys::pread_full(fd.as_fd(), &mut head, 0)?;
    check(path, &head[..n])
}

/// The names of the groups of the queue in `dir`.
pub(crate) fn list_groups(dir: &Path) -> Result<Vec<String>> {
    let gdir = dir.join(GROUPS_DIR);
    let mut names: Vec<String> = match sys::dir_list(&gdir) {
        Ok(v) => v,
        Err(Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    names.retain(|n| GroupName::new(n).is_ok());
    names.sort();
    Ok(names)
}

/// A group's file, held (locked) by this consumer and mapped.
pub(crate) struct GroupFile {
    map: memmap2::MmapRaw,
    fd: OwnedFd,
    pub(crate) path: PathBuf,
}

impl std::fmt::Debug for GroupFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupFile")
            .field("path", &self.path)
            .field("committed", &self.committed())
            .finish()
    }
}

impl GroupFile {
    /// Opens the group `name`, creating it with `initial` as its committed offset if it does
    /// not exist, and takes it: [`Error::AddressInUse`] if another consumer holds it.
    pub(crate) fn take(dir: &Path, name: &str, initial: u64, mode: u32) -> Result<GroupFile> {
        let path = group_path(dir, name);
        let fd = loop {
            match sys::file_open(&path, true, "queue group file") {
                Ok(fd) => break fd,
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            // Publish a complete file under the name, or lose the race to another creator.
            let tmp = temp_path(&dir.join(GROUPS_DIR), "group");
            let made = sys::file_create(&tmp, mode, "queue group file").and_then(|fd| {
                sys::pwrite_all(fd.as_fd(), &page(initial), &[], 0)
                    .map_err(|e| super::segment::write_error(&tmp, e))?;
                sys::rename_noreplace(&tmp, &path)
            });
            let _ = sys::file_unlink(&tmp);
            match made {
                Ok(()) | Err(Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        };
        if !sys::try_flock_exclusive(fd.as_fd())? {
            return Err(Error::AddressInUse {
                addr: format!(
                    "queue://{}?group={name} (another consumer holds this group)",
                    dir.display()
                ),
            });
        }
        if sys::file_len(fd.as_fd())? < GROUP_SIZE as u64 {
            let mut head = [0u8; COMMITTED + 8];
            let n = sys::pread_full(fd.as_fd(), &mut head, 0)?;
            check(&path, &head[..n])?;
            return Err(Error::CorruptRecord {
                file: path,
                offset: 0,
                reason: "group file is too short".to_owned(),
            });
        }
        let map = sys::map_shared(&fd, GROUP_SIZE, true, false)?;
        let g = GroupFile { map, fd, path };
        let mut head = [0u8; COMMITTED + 8];
        // SAFETY: the mapping is GROUP_SIZE bytes, more than `head`; the copy goes into our
        // own buffer through a raw pointer.
        unsafe { std::ptr::copy_nonoverlapping(g.map.as_mut_ptr(), head.as_mut_ptr(), head.len()) };
        check(&g.path, &head)?;
        Ok(g)
    }

    fn word(&self) -> &AtomicU64 {
        // SAFETY: offset 16 is 8-aligned inside the page-aligned GROUP_SIZE-byte mapping,
        // which lives as long as `&self`; an atomic tolerates other processes' access.
        unsafe { &*self.map.as_mut_ptr().add(COMMITTED).cast::<AtomicU64>() }
    }

    /// The committed offset: the first sequence number not acknowledged.
    pub(crate) fn committed(&self) -> u64 {
        self.word().load(Ordering::Acquire)
    }

    /// Sets the committed offset.
    pub(crate) fn commit(&self, next: u64) {
        self.word().store(next, Ordering::Release);
    }

    /// Writes the committed offset to disk (`fdatasync`).
    pub(crate) fn sync(&self) -> Result<()> {
        sys::fdatasync(self.fd.as_fd()).map_err(|e| super::segment::sync_error(&self.path, e))
    }
}

impl Drop for GroupFile {
    fn drop(&mut self) {
        sys::funlock(self.fd.as_fd());
    }
}
